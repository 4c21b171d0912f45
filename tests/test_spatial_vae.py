"""Tests of the spatial-VAE baseline: contract shapes, KL terms, the angle convention, training."""
import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline.angles import wrap_angle
from data_pipeline.rotation import rotate
from rotinv_tf.models.spatial_vae import SpatialVAE, model_to_project_angle

METRICS = {"loss", "reconstruction_nll", "kl_latent", "kl_rotation", "kl_translation",
           "reconstruction_mse", "angle_error_deg"}


def small_model(image_size: int = 16, **kwargs) -> SpatialVAE:
    kwargs.setdefault("hidden_units", 32)
    kwargs.setdefault("standardize", kwargs.get("likelihood", "gaussian") == "gaussian")
    return SpatialVAE(image_size, **kwargs)


def blob_images(count: int, size: int, seed: int = 0) -> np.ndarray:
    """`count` canonical images in [0, 1]: one asymmetric layout of three Gaussian blobs, with
    jittered positions and brightness."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1.0, 1.0, size)
    y, x = np.meshgrid(-axis, axis, indexing="ij")
    layout = [(0.4, 0.0, 0.25, 1.0), (-0.3, 0.3, 0.15, 0.8), (-0.2, -0.4, 0.1, 0.6)]
    images = np.zeros((count, size, size, 1), np.float32)
    for image in images:
        for cx, cy, width, height in layout:
            cx, cy = np.array([cx, cy]) + rng.normal(0.0, 0.03, size=2)
            height *= rng.uniform(0.8, 1.0)
            image[..., 0] += height * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * width ** 2))
    return np.clip(images, 0.0, 1.0)


def normal_kl(mean, std, prior_std):
    """KL(N(mean, std²) || N(0, prior_std²)), written with variance ratios."""
    ratio = (std / prior_std) ** 2
    return 0.5 * (ratio + (mean / prior_std) ** 2 - 1.0 - np.log(ratio))


@pytest.mark.parametrize("image_size", [28, 40])
def test_contract_shapes_for_batches_of_one_and_five(image_size):
    model = small_model(image_size, latent_dim=3)
    canonicalize = tf.function(
        model.canonicalize,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 1], tf.float32)])
    encode = tf.function(
        model.encode,
        input_signature=[tf.TensorSpec([None, image_size, image_size, 1], tf.float32)])
    for batch in (1, 5):
        images = tf.random.uniform([batch, image_size, image_size, 1])
        out = canonicalize(images)
        assert out["canonical_image"].shape == (batch, image_size, image_size, 1)
        assert out["angle"].shape == (batch,)
        assert out["latent"].shape == (batch, 3)
        codes = encode(images)
        assert codes["latent"].shape == (batch, 3)
        assert codes["angle"].shape == (batch,)
        canonical, angle = model(images)
        np.testing.assert_allclose(canonical, out["canonical_image"], atol=1e-5)
        np.testing.assert_allclose(angle, codes["angle"], atol=1e-6)


def test_images_of_the_wrong_size_are_rejected():
    with pytest.raises(ValueError, match="expected images"):
        small_model(16).canonicalize(tf.zeros([2, 20, 20, 1]))


def test_odd_image_size_works():
    out = small_model(27).canonicalize(tf.zeros([2, 27, 27, 1]))
    assert out["canonical_image"].shape == (2, 27, 27, 1)


@pytest.mark.parametrize("mean_penalty", [False, True])
def test_kl_terms_match_their_analytic_values(mean_penalty):
    model = small_model(latent_dim=2, rotation_prior_std_deg=45.0,
                        translation_prior_std=0.3, rotation_kl_mean_penalty=mean_penalty)
    rot_mean, rot_std = np.array([0.5, -1.0]), np.array([0.2, 1.5])
    t_mean, t_std = np.array([[0.1, -0.2], [0.0, 0.4]]), np.array([[0.05, 0.3], [0.3, 0.01]])
    z_mean, z_std = np.array([[1.0, -2.0], [0.0, 0.5]]), np.array([[0.5, 1.0], [2.0, 0.1]])
    posterior = {"rotation_mean": rot_mean, "rotation_log_std": np.log(rot_std),
                 "translation_mean": t_mean, "translation_log_std": np.log(t_std),
                 "latent_mean": z_mean, "latent_log_std": np.log(z_std)}
    posterior = {key: tf.constant(value, tf.float32) for key, value in posterior.items()}
    kl = model.kl_divergences(posterior)
    expected_rotation = normal_kl(rot_mean if mean_penalty else 0.0, rot_std, math.pi / 4)
    np.testing.assert_allclose(kl["rotation"], expected_rotation, rtol=1e-5)
    np.testing.assert_allclose(kl["translation"], normal_kl(t_mean, t_std, 0.3).sum(1), rtol=1e-5)
    np.testing.assert_allclose(kl["latent"], normal_kl(z_mean, z_std, 1.0).sum(1), rtol=1e-5)


def test_disabled_pose_latents_have_no_kl():
    model = small_model(infer_rotation=False, translation_prior_std=0.0)
    posterior = model.infer(tf.random.uniform([3, 16, 16, 1]))
    kl = model.kl_divergences(posterior)
    np.testing.assert_array_equal(kl["rotation"], np.zeros(3))
    np.testing.assert_array_equal(kl["translation"], np.zeros(3))
    np.testing.assert_array_equal(model.encode(tf.zeros([3, 16, 16, 1]))["angle"], np.zeros(3))


@pytest.mark.parametrize("image_size", [15, 16])
def test_zero_pose_coordinate_grid_is_the_identity(image_size):
    model = small_model(image_size)
    axis = np.linspace(-1.0, 1.0, image_size)
    expected = np.stack(np.meshgrid(axis, -axis, indexing="xy"), axis=-1).reshape(-1, 2)
    grid = model.transform_coordinates(tf.zeros([2]), tf.zeros([2, 2]))
    np.testing.assert_allclose(grid, np.broadcast_to(expected, (2,) + expected.shape), atol=1e-6)
    np.testing.assert_allclose(grid[0, 0], [-1.0, 1.0])  # row 0, column 0 is the top left
    shifted = model.transform_coordinates(tf.zeros([1]), tf.constant([[0.25, -0.5]]))
    np.testing.assert_allclose(shifted[0], expected + [0.25, -0.5], atol=1e-6)


def _disc_errors(model, rendered, reference, theta):
    """Max |rendered - rotate(reference, ±converted θ)| inside the inscribed disc, for the right
    and the wrong sign."""
    size = model.image_size
    axis = np.linspace(-1.0, 1.0, size)
    disc = (axis[None, :] ** 2 + axis[:, None] ** 2 < 0.8)[None, :, :, None]
    angle = model_to_project_angle(theta)
    right = np.abs(rotate(reference, angle) - rendered)[np.broadcast_to(disc, rendered.shape)]
    wrong = np.abs(rotate(reference, -angle) - rendered)[np.broadcast_to(disc, rendered.shape)]
    return right.max(), wrong.max()


def test_project_angle_of_generator_rotation_matches_rotate():
    model = small_model(40)
    theta = tf.constant([0.7, -2.0, 2.5])

    def field(coordinates):
        """A fixed generator: an off-centre, anisotropic Gaussian blob."""
        x, y = coordinates[..., 0], coordinates[..., 1]
        values = tf.exp(-((x - 0.35) ** 2 / 0.03 + (y - 0.15) ** 2 / 0.08))
        return tf.reshape(values, [-1, 40, 40, 1])

    rendered = field(model.transform_coordinates(theta, tf.zeros([3, 2])))
    reference = field(model.transform_coordinates(tf.zeros([3]), tf.zeros([3, 2])))
    right, wrong = _disc_errors(model, rendered, reference, theta)
    assert right < 0.05
    assert wrong > 0.5


def test_model_generator_renders_rotations_in_the_project_convention():
    model = small_model(40, latent_dim=2)
    theta = tf.constant([1.0, -2.2])
    latent = tf.constant([[1.5, -0.5], [-1.0, 2.0]])
    rendered = model.render(latent, theta, tf.zeros([2, 2]))
    reference = model.render(latent, tf.zeros([2]), tf.zeros([2, 2]))
    right, wrong = _disc_errors(model, rendered, reference, theta)
    assert right < 0.2 * wrong


def test_layers_start_as_pytorch_linear_layers():
    """The reference's init (kernel and bias U(±1/√fan_in)), not Keras' (Glorot, zero bias)."""
    model = small_model(16, hidden_units=200, latent_dim=2)
    for layer, fan_in in [(model.encoder_hidden[0], 256), (model.encoder_posterior, 200),
                          (model.generator_coordinates, 2), (model.generator_hidden[0], 200),
                          (model.generator_output, 200)]:
        bound = 1.0 / math.sqrt(fan_in)
        kernel, bias = layer.get_weights()
        assert np.abs(kernel).max() <= bound and np.abs(bias).max() <= bound
        assert np.abs(kernel).max() > 0.8 * bound, layer.name
        assert np.all(bias != 0), layer.name


def test_initial_generator_is_not_an_odd_function_of_position():
    """With zero biases every layer maps 0 to 0 and tanh is odd, so the generator started as
    f(-p) = 2b - f(p): the image and its 180° rotation summed to a constant (rotated MNIST then
    stalled at blank outputs)."""
    keras.utils.set_random_seed(0)
    model = small_model(16, hidden_units=64, latent_dim=2)
    latent, zeros = tf.zeros([1, 2]), tf.zeros([1])
    upright = model.render(latent, zeros, tf.zeros([1, 2]))
    turned = model.render(latent, zeros + math.pi, tf.zeros([1, 2]))
    spread = np.std(upright)
    assert spread > 0.01
    assert np.std(upright + turned) > 0.01 * spread  # zero biases: ~1e-8


def test_encode_angle_is_the_converted_posterior_mean():
    model = small_model()
    images = tf.random.uniform([4, 16, 16, 1])
    theta = model.infer(images)["rotation_mean"]
    np.testing.assert_allclose(model.encode(images)["angle"], wrap_angle(-theta), atol=1e-6)


def test_training_decreases_the_loss_and_reports_the_shared_metric_names():
    images = blob_images(64, 20)
    # The canonical frame anchored as on MNIST (rotations and prior 45°, the KL on the rotation's
    # mean), with no content latent to carry the orientation instead: only then is the canonical
    # image the upright one that `reconstruction_mse` compares with.
    keras.utils.set_random_seed(0)
    model = small_model(20, hidden_units=64, seed=1, latent_dim=0, angle_distribution="normal",
                        angle_scale=math.pi / 4, rotation_prior_std_deg=45.0,
                        rotation_kl_mean_penalty=True)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    train = tf.data.Dataset.from_tensor_slices({"image": images}).shuffle(64, seed=0).batch(32)
    history = model.fit(train.repeat(), steps_per_epoch=50, epochs=6, shuffle=False,
                        verbose=0).history
    assert set(history) == METRICS
    # The unit-variance Gaussian NLL carries a constant H*W*log(2π)/2; compare what is above it.
    excess = np.array(history["loss"]) - 20 * 20 * 0.5 * math.log(2.0 * math.pi)
    assert excess[-1] < 0.6 * excess[0], excess
    assert history["reconstruction_mse"][-1] < history["reconstruction_mse"][0]

    angles = np.linspace(-3.0, 3.0, 64, dtype=np.float32)
    observed = rotate(images, angles).numpy()
    evaluation = tf.data.Dataset.from_tensor_slices(
        {"image": images, "observed": observed, "angle": angles}).batch(32)
    results = model.evaluate(evaluation, verbose=0, return_dict=True)
    assert set(results) == METRICS
    assert all(np.isfinite(value) for value in results.values())


def test_bernoulli_canonical_images_are_probabilities():
    model = small_model(likelihood="bernoulli")
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = blob_images(8, 16)
    logs = model.train_on_batch({"image": images}, return_dict=True)
    assert np.isfinite(logs["loss"])
    canonical = model.canonicalize(images)["canonical_image"].numpy()
    assert canonical.min() >= 0.0 and canonical.max() <= 1.0


def test_mixed_float16_training_with_a_loss_scale_optimizer():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = small_model()
        model.compile(optimizer=keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam(1e-3)))
        images = blob_images(8, 16)
        logs = model.train_on_batch({"image": images}, return_dict=True)
        out = model.canonicalize(images)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.isfinite(logs["loss"])
    assert out["canonical_image"].dtype == tf.float32 and out["latent"].dtype == tf.float32


def test_a_stack_without_angles_trains_and_an_angle_without_observed_is_rejected():
    model = small_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    images = np.random.default_rng(0).random((2, 16, 16, 1)).astype(np.float32)
    logs = model.train_on_batch({"image": images, "observed": images}, return_dict=True)
    assert np.isfinite(logs["loss"]) and np.isnan(logs["angle_error_deg"])
    with pytest.raises(ValueError, match="must carry 'observed' too"):
        model.test_on_batch({"image": images, "angle": np.zeros(2, np.float32)})


def test_its_settings_rebuild_the_same_model():
    model = small_model(latent_dim=4, rotation_prior_std_deg=45.0, likelihood="bernoulli",
                        translation_prior_std=0.1, angle_distribution="normal",
                        angle_scale=math.pi / 4)
    rebuilt = SpatialVAE(16, **dataclasses.asdict(model.settings))
    assert rebuilt.settings == model.settings
    rebuilt.set_weights(model.get_weights())
    images = tf.random.uniform([3, 16, 16, 1])
    np.testing.assert_allclose(rebuilt(images)[0], model(images)[0], atol=1e-6)


def test_standardized_model_sees_each_image_in_its_own_units():
    """Bepler's --normalize: an image and any brighter, shifted copy a·x + b give the same ELBO,
    and the copy's canonical image is a·(the image's) + b."""
    images = blob_images(4, 16) + np.random.default_rng(0).normal(0, 0.4, (4, 16, 16, 1))
    images = images.astype(np.float32)
    first, second = small_model(seed=3), small_model(seed=3)
    second.set_weights(first.get_weights())
    terms = first._elbo_terms(images)
    shifted = second._elbo_terms(5.0 * images + 2.0)
    assert float(shifted["loss"]) == pytest.approx(float(terms["loss"]), rel=1e-4)
    np.testing.assert_allclose(first.canonicalize(5.0 * images + 2.0)["canonical_image"],
                               5.0 * first.canonicalize(images)["canonical_image"] + 2.0,
                               rtol=1e-4, atol=1e-4)
    plain = small_model(seed=3, standardize=False)
    plain.set_weights(first.get_weights())
    assert float(plain._elbo_terms(5.0 * images + 2.0)["loss"]) > 2 * float(terms["loss"])


@pytest.mark.parametrize("kwargs", [
    {"image_size": 16, "likelihood": "bernoulli", "standardize": True},
    {"image_size": 0}, {"image_size": 1}, {"image_size": 28.0}, {"image_size": True},
    {"image_size": 16, "latent_dim": -1}, {"image_size": 16, "hidden_units": 0},
    {"image_size": 16, "num_hidden_layers": 0},
    {"image_size": 16, "rotation_prior_std_deg": -1.0},
    {"image_size": 16, "rotation_prior_std_deg": 0.0},
    {"image_size": 16, "rotation_prior_std_deg": float("nan")},
    {"image_size": 16, "translation_prior_std": -0.1},
    {"image_size": 16, "likelihood": "poisson"}, {"image_size": 16, "angle_distribution": "cauchy"},
    {"image_size": 16, "angle_scale": -1.0},
    {"image_size": 16, "latent_dim": 0, "infer_rotation": False, "translation_prior_std": 0.0},
])
def test_bad_constructor_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        SpatialVAE(**kwargs)
