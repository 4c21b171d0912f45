"""Training with the CTF: the forward model's plumbing, which correction a run takes, and a CTF
stack with its STAR file (no angles) trained, exported and canonicalized with the CTF in the
model."""
import math
import os

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import ctf, simulated_stack
from data_pipeline.errors import DataError
from data_pipeline.formats.star import StarBlock, read_star, write_star
from data_pipeline.rotation import rotate
from data_pipeline.settings import SimulationConfig
from rotinv_tf.training import train_lib
from rotinv_tf.models.autoencoder import RotationInvariantAutoencoder
from rotinv_tf.config import Config, resolved_frame
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
                                         ctf_correction=correction,
                                         optics={"pixel_size": 3.0}, raw_zero=0.0)
    truth = _blobs(3)
    u, v = np.full(3, 20000.0, np.float32), np.full(3, 6000.0, np.float32)
    astigmatism = np.array([10.0, 50.0, -30.0], np.float32)
    theta = np.array([0.7, -1.4, 2.0], np.float32)
    particle = ctf.apply_ctf(rotate(truth, theta), u, v, astigmatism, OPTICS, pad_factor=2)
    batch = {"image": particle, "defocus_u": u, "defocus_v": v, "defocus_angle": astigmatism}
    canonical = rotate(particle, -theta)
    _, target, forward = model._ctf_views(batch, canonical, particle, theta, -theta)
    inside = (np.hypot(*np.mgrid[:SIZE, :SIZE] - (SIZE - 1) / 2) < SIZE / 3)[None, ..., None]

    def errors(a, b) -> np.ndarray:  # per image, away from the corners rotation empties
        return np.abs(np.asarray(a) - np.asarray(b)).max(axis=(1, 2, 3), where=inside,
                                                          initial=0.0)

    scale = np.abs(target.numpy()).max()
    if correction == "model":
        error = errors(forward(truth), target)
        assert error.max() < 0.15 * scale  # bilinear rotations of CTF fringes on 16 pixels
        unturned = model._ctf_filtered(truth, batch, None, "model")
        assert (errors(unturned, target) > 2 * error).all()
    else:
        flipped = rotate(ctf.apply_ctf(particle, u, v, astigmatism, OPTICS, "phase_flip",
                                       pad_factor=2), -theta)
        assert errors(target, flipped).max() < 0.15 * scale


def test_which_ctf_correction_a_run_takes(ctf_stack, tmp_path):
    assert train_lib.resolved_ctf(_config(ctf_stack, ctf_stack["noangles"], tmp_path))[0] == "model"
    assert resolved_frame(_config(ctf_stack, ctf_stack["noangles"], tmp_path)) == "learned"
    no_ctf = _config(ctf_stack, None, tmp_path)
    assert train_lib.resolved_ctf(no_ctf)[0] == "none"
    with pytest.raises(ValueError, match="ctf_correction 'phase_flip' needs a particle stack"):
        train_lib.resolved_ctf(_config(ctf_stack, None, tmp_path, ctf_correction="phase_flip"))
    with pytest.raises(ValueError, match="not of spatial_vae"):
        _config(ctf_stack, ctf_stack["star"], tmp_path, model="spatial_vae",
                ctf_correction="model").check()
    simulated = Config().replace(dataset="simulated_particles")
    assert train_lib.resolved_ctf(simulated)[0] == "none"


def test_ctf_stack_without_angles_trains_exports_and_canonicalizes(ctf_stack, tmp_path):
    config = _config(ctf_stack, ctf_stack["noangles"], tmp_path, frame_angles=32)
    result = train_lib.train(config, verbose=0)
    assert all(math.isfinite(v[-1]) for v in result.history.values())
    model = load_serving_model(result.export_path)
    assert model.metadata["ctf_correction"] == "model"
    assert model.metadata["optics"]["voltage"] == 300.0
    loaded = tf.saved_model.load(result.export_path)
    for name in ("serving_default", "encode"):
        inputs = loaded.signatures[name].structured_input_signature[1]
        assert set(inputs) == {"images", "defocus_u", "defocus_v", "defocus_angle"}
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
