"""Training with the CTF: the forward model's plumbing, which correction a run takes, and a CTF
stack with its STAR file (no angles) trained, exported and canonicalized with the CTF in the
model."""
import math
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import ctf, simulated_stack
from data_pipeline.errors import DataError
from data_pipeline.formats.star import StarBlock, read_star, write_star
from data_pipeline.rotation import rotate
from data_pipeline.settings import SimulationConfig
from rotinv_tf.models import ctf_corrections, losses
from rotinv_tf.models.frames import Inputs
from rotinv_tf.models.autoencoder import RotationInvariantAutoencoder
from rotinv_tf.training import resolve, train_lib
from rotinv_tf import config as configs
from rotinv_tf.config import Config
from rotinv_tf.serving.inference import canonicalize_particles
from rotinv_tf.serving.saved_model import load_serving_model

SIZE, COUNT = 16, 64
OPTICS = ctf.Optics(pixel_size=3.0)


@pytest.fixture(scope="module")
def ctf_stack(tmp_path_factory) -> dict:
    """A simulated CTF stack, its STAR file, and a copy of that without rlnAnglePsi."""
    root = str(tmp_path_factory.mktemp("ctf_stack"))
    config = SimulationConfig(image_size=SIZE, ctf=True, snr=2.0, num_conformations=1,
                              test_conformations=0, images_per_conformation=COUNT, seed=1)
    simulated_stack.write_stack(root, config, COUNT)
    blocks = read_star(os.path.join(root, simulated_stack.STAR))
    table = blocks["particles"]
    i = table.columns.index("rlnAnglePsi")
    blocks["particles"] = StarBlock(table.columns[:i] + table.columns[i + 1:],
                                    [row[:i] + row[i + 1:] for row in table.rows])
    write_star(os.path.join(root, "noangles.star"), blocks)
    return {"root": root, "stack": os.path.join(root, simulated_stack.PARTICLES),
            "star": os.path.join(root, simulated_stack.STAR),
            "noangles": os.path.join(root, "noangles.star")}


def _config(stack: dict, star: str, tmp_path, **changes) -> Config:
    return Config().replace(**{
        **dict(name="ctf", dataset="particle_stack", stack=stack["stack"], star=star,
               data_dir=str(tmp_path / "tfds"), epochs=1, batch_size=16, latent_dim=4, filters=4,
               critic_filters=2, model_dir=str(tmp_path / "run"),
               export_dir=str(tmp_path / "saved")),
        **changes})


def _blobs(count: int) -> np.ndarray:
    """Smooth asymmetric test images [count, SIZE, SIZE, 1]."""
    y, x = np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2
    image = np.exp(-((x - 3) ** 2 + y**2) / 6) + 0.6 * np.exp(-(x**2 + (y + 4) ** 2) / 3)
    return np.repeat(image[None, ..., None], count, axis=0).astype(np.float32)


@pytest.mark.parametrize("correction", ["model", "phase_flip"])
def test_forward_model_turns_the_astigmatism_with_the_frame(correction):
    """A learned frame derotates `image` by θ: the target's CTF is the particle's turned by -θ.
    With `model`, the forward model of the true CTF-free canonical image matches the target;
    with `phase_flip`, the target is the flipped particle derotated."""
    model = RotationInvariantAutoencoder(SIZE, latent_dim=4, filters=4, critic_filters=2,
                                         ctf_correction=correction, raw_zero=0.0)
    truth = _blobs(3)
    u, v = np.full(3, 20000.0, np.float32), np.full(3, 6000.0, np.float32)
    astigmatism = np.array([10.0, 50.0, -30.0], np.float32)
    theta = np.array([0.7, -1.4, 2.0], np.float32)
    particle_ctf = ctf.particle_ctf(u, v, astigmatism, OPTICS)
    particle = ctf.apply_ctf(rotate(truth, theta), particle_ctf, pad_factor=2)
    batch = {"image": particle, **particle_ctf}
    canonical = rotate(particle, -theta)
    target, forward = model.correction.target(particle_ctf, canonical, -theta)
    inside = (np.hypot(*np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2) < SIZE / 3)[None, ..., None]

    def errors(a, b) -> np.ndarray:  # per image, away from the corners rotation empties
        return np.abs(np.asarray(a) - np.asarray(b)).max(axis=(1, 2, 3), where=inside,
                                                          initial=0.0)

    scale = np.abs(target.numpy()).max()
    if correction == "model":
        error = errors(forward(truth), target)
        assert error.max() < 0.15 * scale  # bilinear rotations of CTF fringes on 16 pixels
        unturned = model.correction.filtered(truth, particle_ctf, None, "model")
        assert (errors(unturned, target) > 2 * error).all()
    else:
        flipped = rotate(ctf.apply_ctf(particle, particle_ctf, "phase_flip", pad_factor=1),
                         -theta)
        error = errors(target, flipped)
        # The flip acts on the box itself (PADDING), so on 16 pixels its ripples wrap around.
        assert error.max() < 0.2 * scale
        unturned = model.correction.filtered(canonical, particle_ctf, None, "phase_flip")
        assert (errors(unturned, flipped) > 1.25 * error).all()


def test_linear_readout_r2_finds_a_feature_hidden_in_a_low_variance_direction():
    """z₁,₂ = s ± εf: each latent barely correlates with f, yet z₁ - z₂ reads it out exactly
    (R² 1); latents independent of f give R² 0."""
    rng = np.random.default_rng(0)
    feature, content, other = rng.normal(size=(3, 4000)).astype(np.float32)
    hidden = np.stack([content + 0.05 * feature, content - 0.05 * feature], axis=1)
    latent_covariance, cross = losses.batch_covariances(hidden, feature[:, None])
    correlations = cross[:, 0] / np.sqrt(np.diag(latent_covariance))
    assert np.abs(correlations).max() < 0.1
    np.testing.assert_allclose(losses.linear_readout_r2(latent_covariance, cross, ridge=1e-6),
                               1.0, atol=1e-2)
    independent = np.stack([content, other], axis=1)
    assert float(losses.linear_readout_r2(*losses.batch_covariances(
        independent, feature[:, None]))) < 1e-2
    scaled = losses.linear_readout_r2(*losses.batch_covariances(
        np.stack([content, 0.5 * content + 0.5 * feature], axis=1), 3.0 * feature[:, None] + 1))
    np.testing.assert_allclose(scaled, 1.0, atol=1e-2)  # z₂ - z₁ / 2 = f / 2


def test_defocus_penalty_is_a_running_readout_r2_in_the_loss():
    """Under a CTF correction the generator loss adds weight x the linear read-out R² of the
    defocus features (defocus and its square) from running covariances; a training step moves
    them `defocus_momentum` of the way to the batch's, an evaluation step leaves them."""
    defocus = tf.constant([1e4, 2e4, 3e4, 2e4, 1.5e4, 2.5e4])
    features = ctf_corrections.defocus_features(defocus[:4])
    np.testing.assert_allclose(features[:, 0], [-np.sqrt(2), 0, np.sqrt(2), 0], rtol=1e-5)
    np.testing.assert_allclose(features[:, 1], [2, 0, 2, 0], rtol=1e-5)
    model = RotationInvariantAutoencoder(SIZE, latent_dim=4, filters=4, critic_filters=2,
                                         ctf_correction="model",
                                         defocus_decorrelation_weight=3.0, defocus_momentum=0.2)
    model.compile(keras.optimizers.Adam(), keras.optimizers.Adam())
    images = _blobs(6) * np.linspace(0.5, 1.5, 6)[:, None, None, None].astype(np.float32)
    m = model.settings.defocus_momentum

    def batch(training: bool) -> list:
        latent = model._network_encode(images, training=training)["latent"]
        return [np.asarray(c) for c in losses.batch_covariances(
            latent, ctf_corrections.defocus_features(defocus))]

    expected = losses.linear_readout_r2(*(m * c for c in batch(False)))
    values = ctf.particle_ctf(defocus, defocus, np.zeros(6, np.float32), OPTICS)
    inputs = Inputs(images, images, np.zeros(6, np.float32), None)
    out = model._generator_losses(images, inputs, training=False, values=values)
    assert float(out["defocus_penalty"]) > 0.01
    np.testing.assert_allclose(out["defocus_penalty"], expected, rtol=1e-3)
    np.testing.assert_allclose(out["loss"] - out["reconstruction_loss"] - out["angle_loss"]
                               - 0.01 * out["adversarial_loss"], 3.0 * out["defocus_penalty"],
                               rtol=1e-4, atol=1e-6)
    for variable in model.correction.covariances:
        np.testing.assert_allclose(variable, 0.0)
    train_batch = batch(True)
    out = model._generator_losses(images, inputs, training=True, values=values)
    for variable in model.correction.covariances:  # the loss leaves the state to the step
        np.testing.assert_allclose(variable, 0.0)
    model.correction.update(out["correction_state"])
    for variable, value in zip(model.correction.covariances, train_batch):
        np.testing.assert_allclose(variable, m * value, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("correction", ["model", "phase_flip"])
def test_learned_frame_training_step_phase_flips_once(ctf_stack, correction, monkeypatch):
    """The EM template and the encoder see the same phase-flipped particles (quarter turns
    included), flipped once per step; the phase_flip target is the one other flip."""
    model = RotationInvariantAutoencoder(SIZE, latent_dim=4, filters=4, critic_filters=2,
                                         frame="learned", frame_angles=32,
                                         augment_quarter_turns=True,
                                         ctf_correction=correction,
                                         frame_max_shift=0.0)  # centred: no re-centring move
    # Smooth particles: an astigmatic CTF at an oblique angle breaks the Hermitian symmetry of
    # the Nyquist line, which is all the two orders differ in.
    particles = _blobs(6)
    u = np.linspace(1e4, 3e4, 6).astype(np.float32)
    batch = {"image": tf.constant(particles, tf.float32), **ctf.particle_ctf(
        u, u * 0.8, np.linspace(-60, 60, 6), OPTICS)}
    calls = []
    filtered = model.correction.filtered
    monkeypatch.setattr(model.correction, "filtered", lambda *args: calls.append(args[-1])
                        or filtered(*args))
    values = ctf_corrections.particle_ctf(batch)
    view = model.correction.view(values)
    pose = model.frame.update(batch, view, model.seed_generator)
    _, observed, angles, turn = model.frame.training_inputs(batch, view, pose,
                                                            model.seed_generator)
    assert calls == ["phase_flip"]
    model.correction.target(values, observed, turn)
    assert calls == ["phase_flip"] * (2 if correction == "phase_flip" else 1)
    # The encoder's view is the particle turned by its quarter turn k = (angle - θ) / (π/2),
    # then flipped with its astigmatism turned alike: what flipping after the turn gives.
    theta = -np.asarray(turn)
    quarter = np.round(np.asarray(angles - theta) / (math.pi / 2)).astype(int) % 4
    assert len(set(quarter)) > 1
    turned = np.stack([np.rot90(p, k) for p, k in zip(particles, quarter)]).astype(np.float32)
    expected = filtered(turned, {k: batch[k] for k in ctf.CTF_FEATURES},
                        quarter * (math.pi / 2), "phase_flip")
    np.testing.assert_allclose(observed, expected, atol=1e-3)


def test_the_config_offers_every_registered_correction_and_no_other():
    stack = Config().replace(dataset="particle_stack", stack="p.mrcs")
    for name, correction in ctf_corrections.CORRECTIONS.items():
        assert correction.name == name
        stack.replace(ctf_correction=name).check()
    with pytest.raises(ValueError, match="ctf_correction"):
        stack.replace(ctf_correction="unregistered").check()


def test_which_ctf_correction_a_run_takes(ctf_stack, tmp_path):
    def resolved(config: Config) -> tuple[str, str]:
        ours = resolve.resolve(config).model.autoencoder
        return ours.frame, ours.ctf_correction

    assert resolved(_config(ctf_stack, ctf_stack["noangles"], tmp_path)) == ("learned", "model")
    assert resolved(_config(ctf_stack, ctf_stack["star"], tmp_path)) == ("supervised", "model")
    assert resolved(_config(ctf_stack, None, tmp_path)) == ("learned", "none")
    assert resolved(_config(ctf_stack, ctf_stack["noangles"], tmp_path, frame="supervised",
                            ctf_correction="phase_flip")) == ("supervised", "phase_flip")
    with pytest.raises(ValueError, match="ctf_correction 'phase_flip' needs a particle stack"):
        resolve.resolve(_config(ctf_stack, None, tmp_path, ctf_correction="phase_flip"))
    with pytest.raises(ValueError, match="not of spatial_vae"):
        _config(ctf_stack, ctf_stack["star"], tmp_path, model="spatial_vae",
                ctf_correction="model").check()
    assert resolved(_config(ctf_stack, ctf_stack["noangles"], tmp_path,
                            model="spatial_vae")) == ("supervised", "none")
    assert resolved(Config().replace(dataset="simulated_particles")) == ("supervised", "none")


def test_ctf_stack_without_angles_trains_exports_and_canonicalizes(ctf_stack, tmp_path):
    config = _config(ctf_stack, ctf_stack["noangles"], tmp_path, frame_angles=32)
    result = train_lib.train(config, verbose=0)
    assert all(math.isfinite(v[-1]) for v in result.history.values())
    saved = configs.load(os.path.join(result.model_dir, configs.CONFIG_FILE))
    assert saved == resolve.resolve(config) != config  # config.json: what `auto` became
    assert (saved.model.autoencoder.frame, saved.model.autoencoder.ctf_correction) == (
        "learned", "model")
    model = load_serving_model(result.export_path)
    assert model.metadata["ctf_correction"] == "model"
    loaded = tf.saved_model.load(result.export_path)
    for name in ("serving_default", "encode"):
        inputs = loaded.signatures[name].structured_input_signature[1]
        assert set(inputs) == {"images", *ctf.CTF_FEATURES}
    with pytest.raises(ValueError, match="needs each particle's defocus_u"):
        model.predict(np.zeros((2, SIZE, SIZE), np.float32))

    summary = canonicalize_particles(result.export_path, ctf_stack["noangles"],
                                     str(tmp_path / "c.mrcs"), str(tmp_path / "c.star"))
    text = open(summary.star).read()
    assert "CTF correction model: canonical images are CTF-free" in text
    written = read_star(summary.star)["particles"]
    original = read_star(ctf_stack["noangles"])["particles"]
    assert written.column("rlnDefocusU") == original.column("rlnDefocusU")
    with pytest.raises(DataError, match="the model corrects the CTF .* the input has no CTF"):
        canonicalize_particles(result.export_path, ctf_stack["stack"],
                               str(tmp_path / "d.mrcs"), str(tmp_path / "d.star"))
    assert not os.path.exists(tmp_path / "d.mrcs") and not os.path.exists(tmp_path / "d.star")


def test_a_run_reads_its_stack_metadata_once_per_version(ctf_stack, tmp_path):
    star = str(tmp_path / "copy.star")
    shutil.copy(ctf_stack["noangles"], star)
    config = _config(ctf_stack, star, tmp_path)
    first = resolve.particle_stack(config)
    assert resolve.particle_stack(config) is first  # checks, resolution and report share one read
    with open(star, "a") as f:
        f.write("\n")
    assert resolve.particle_stack(config) is not first  # a changed file is read again


@pytest.mark.parametrize("correction", ["phase_flip", "model"])
def test_the_encoder_and_the_frame_see_white_noise_flipped_without_losing_any(correction):
    """The phase flip is unitary on the box: every particle's noise keeps its energy, whatever
    its defocus (padded and cropped, high defocus lost more of it, and the frame's likelihood
    followed the defocus)."""
    model = RotationInvariantAutoencoder(SIZE, latent_dim=4, filters=4, critic_filters=2,
                                         ctf_correction=correction, raw_zero=0.0)
    noise = np.random.default_rng(0).standard_normal((4, SIZE, SIZE, 1)).astype(np.float32)
    u = np.array([5000.0, 15000.0, 30000.0, 50000.0], np.float32)
    # Without astigmatism: at an oblique angle it breaks the Hermitian symmetry of the Nyquist
    # lines (an eighth of a 16-px box's spectrum), which the real image cannot keep.
    values = ctf.particle_ctf(u, u, np.zeros(4), OPTICS)
    seen = model.correction.view(values)(tf.constant(noise), None).numpy()
    np.testing.assert_allclose(np.square(seen).sum(axis=(1, 2, 3)),
                               np.square(noise).sum(axis=(1, 2, 3)), rtol=1e-4)
    assert not np.allclose(seen, noise, atol=0.1)  # flipped, not left as it was
