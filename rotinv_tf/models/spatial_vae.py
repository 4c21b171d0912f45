"""spatial-VAE (Bepler et al., NeurIPS 2019): the baseline our rotation-invariant model must beat.

An inference MLP maps an observed image to a Gaussian posterior over a rotation θ, a translation t
(in units of the image half-width) and unstructured content latents z. The generator is an MLP over
pixel coordinates in [-1, 1]²: it renders pixel p as g(R(θ) p + t, z), so rotation and translation
are explicit and the canonical image is the render at θ = 0, t = 0. Training maximises the ELBO of
the observed (rotated) image.

Coordinates are (x, y) with x growing to the right and y growing *up* (row 0 at y = +1), as in the
reference implementation. Sampling the canonical field at R(θ) p shows it rotated by -θ, so the
project's angle (`data_pipeline/angles.py`) is -θ: see `model_to_project_angle`.
"""
from collections.abc import Mapping
import math

import keras
import tensorflow as tf

from data_pipeline.angles import wrap_angle
from data_pipeline.rotation import rotate, sample_angles
from data_pipeline.settings import ANGLE_DISTRIBUTIONS, raise_problems
from rotinv_tf.config import SpatialVAEConfig
from rotinv_tf.models import replicas

METRIC_NAMES = ("loss", "reconstruction_nll", "kl_latent", "kl_rotation", "kl_translation",
                "reconstruction_mse", "angle_error_deg")
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_kl(mean: tf.Tensor, log_std: tf.Tensor, prior_std: float = 1.0) -> tf.Tensor:
    """Elementwise KL(N(mean, exp(log_std)²) || N(0, prior_std²)) in nats."""
    return (math.log(prior_std) - log_std
            + 0.5 * (tf.exp(2.0 * log_std) + tf.square(mean)) / prior_std ** 2 - 0.5)


def model_to_project_angle(theta: tf.Tensor) -> tf.Tensor:
    """The project's angle (`data_pipeline.angles`, wrapped to (-π, π]) of a generator rotation θ.

    The generator samples the canonical field at R(θ) p, which displays the canonical image
    rotated by -θ.
    """
    return wrap_angle(-tf.convert_to_tensor(theta, tf.float32))


def torch_dense(units: int, fan_in: int, **kwargs) -> keras.layers.Dense:
    """A Dense layer initialised as PyTorch's `nn.Linear` (the reference's): kernel and bias
    U(±1/√fan_in). Keras' default (Glorot kernel, zero bias) makes every layer pass through the
    origin, so the coordinate generator starts as a constant plus an odd function of the pixel
    position, with first-layer weights ~0.1 instead of ~0.7 (low spatial frequencies only): on
    rotated MNIST it stalled at blank outputs."""
    bound = 1.0 / math.sqrt(fan_in)
    return keras.layers.Dense(
        units, kernel_initializer=keras.initializers.RandomUniform(-bound, bound),
        bias_initializer=keras.initializers.RandomUniform(-bound, bound), **kwargs)


class SpatialVAE(keras.Model):
    """spatial-VAE with the project's model contract (`canonicalize`, `encode`, batch dicts).

    Args:
      image_size: side of the square images (H = W).
      angle_distribution, angle_scale: how training images without `observed`/`angle` are rotated
        on the device ('uniform' on [-scale, scale) or 'normal' N(0, scale²), radians).
      seed: seeds the model's `keras.random.SeedGenerator` (augmentation angles and posterior
        samples), which is saved with the model.
      **settings: the fields of `SpatialVAEConfig` (its defaults for those not given):
        latent_dim: number of unstructured content latents z (2 in the reference scripts).
        hidden_units, num_hidden_layers: width and depth (tanh) of the inference and generator
          MLPs.
        rotation_prior_std_deg: std of the N(0, s²) prior on θ (180 particles, 45 MNIST).
        translation_prior_std: std of the N(0, s²) prior on t, in image half-widths; 0 turns
          translation inference off.
        infer_rotation: whether θ is latent (otherwise fixed at 0).
        likelihood: 'gaussian' (unit variance, for standardised particles) or 'bernoulli'
          (images in [0, 1], the generator then outputs logits).
        standardize: Bepler et al.'s `--normalize` (gaussian likelihood only): each image is
          standardised (its own mean 0, std 1) before inference and as the likelihood's target,
          so the unit-variance noise model fits noisy particles (at SNR 0.1 the noise std is
          ~0.95 of a standardised image). The canonical image is mapped back with the input
          image's own mean and std. Without it, a unit variance on images scaled to [0, 1]
          (noise std ≈ 0.43 at SNR 0.1) under-weights the reconstruction ~5x (Table 1's
          baseline collapsed to a blob).
        rotation_kl_mean_penalty: False (Bepler et al.'s particle script) leaves the posterior
          mean of θ unpenalised, since the canonical pose is arbitrary; True uses the full KL to
          N(0, s²), as their MNIST script.
    """

    # Bepler et al.'s optimizer: `torch.optim.Adam(params, lr=lr)`, PyTorch's defaults.
    ADAM = {"beta_1": 0.9, "weight_decay": 0.0}

    def __init__(self, image_size: int, angle_distribution: str = "uniform",
                 angle_scale: float = math.pi, seed: int = 0, name: str | None = None,
                 **settings):
        self.settings = SpatialVAEConfig(**settings)
        problems = self.settings.problems()
        if not (type(image_size) is int and image_size >= 2):
            problems.append(f"image_size must be an integer >= 2, got {image_size!r}")
        if angle_distribution not in ANGLE_DISTRIBUTIONS:
            problems.append(f"unknown angle distribution {angle_distribution!r}; "
                            f"expected one of {ANGLE_DISTRIBUTIONS}")
        if not (math.isfinite(angle_scale) and angle_scale >= 0):
            problems.append(f"angle_scale must be a finite number >= 0, got {angle_scale!r}")
        raise_problems(problems)
        super().__init__(name=name)
        s = self.settings
        self.image_size = image_size
        self.latent_dim = latent_dim = s.latent_dim
        self.angle_distribution = angle_distribution
        self.angle_scale = float(angle_scale)
        self.rotation_prior_std = math.radians(s.rotation_prior_std_deg)
        self.rotates = rotates = s.infer_rotation
        self.translates = translates = s.translation_prior_std > 0
        hidden_units, num_hidden_layers = s.hidden_units, s.num_hidden_layers
        self.seed_generator = keras.random.SeedGenerator(seed)
        self._posterior_dim = int(rotates) + 2 * int(translates) + latent_dim

        self.encoder_hidden = [
            torch_dense(hidden_units, fan_in, activation="tanh", name=f"encoder_hidden_{i}")
            for i, fan_in in enumerate([image_size * image_size]
                                       + [hidden_units] * (num_hidden_layers - 1))]
        # Posterior parameters and pixel outputs stay float32 under mixed precision.
        self.encoder_posterior = torch_dense(2 * self._posterior_dim, hidden_units,
                                             dtype="float32", name="encoder_posterior")
        self.generator_coordinates = torch_dense(hidden_units, 2, name="generator_coordinates")
        self.generator_latent = (torch_dense(hidden_units, latent_dim, use_bias=False,
                                             name="generator_latent") if latent_dim else None)
        self.generator_hidden = [
            torch_dense(hidden_units, hidden_units, activation="tanh",
                        name=f"generator_hidden_{i}")
            for i in range(num_hidden_layers - 1)]
        self.generator_output = torch_dense(1, hidden_units, dtype="float32",
                                            name="generator_output")
        # Build every layer now: the weights exist before `fit`, and Keras never has to trace
        # `call` on a batch dict to build the model.
        width = image_size * image_size
        for layer in self.encoder_hidden:
            layer.build((None, width))
            width = hidden_units
        self.encoder_posterior.build((None, width))
        self.generator_coordinates.build((None, 2))
        if self.generator_latent is not None:
            self.generator_latent.build((None, latent_dim))
        for layer in self.generator_hidden:
            layer.build((None, hidden_units))
        self.generator_output.build((None, hidden_units))
        self.built = True
        # `rotate` (ImageProjectiveTransformV3) has no XLA kernel, so jit_compile='auto' must
        # resolve to False on GPU machines too.
        self.supports_jit = False

        self._trackers = {name: keras.metrics.Mean(name=name) for name in METRIC_NAMES}

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        """The Mean trackers, so Keras resets them every epoch and `fit` reports them."""
        return list(self._trackers.values())

    # --- geometry and generator -----------------------------------------------------------
    def coordinate_grid(self) -> tf.Tensor:
        """Pixel coordinates [H*W, 2] in row-major order: x = -1..1 left to right, y = 1..-1 top
        to bottom, so the image centre is (0, 0) and one unit is a half-width."""
        axis = tf.linspace(-1.0, 1.0, self.image_size)
        y, x = tf.meshgrid(-axis, axis, indexing="ij")
        return tf.stack([tf.reshape(x, [-1]), tf.reshape(y, [-1])], axis=1)

    def transform_coordinates(self, theta: tf.Tensor, translation: tf.Tensor) -> tf.Tensor:
        """Coordinates [B, H*W, 2] the generator reads: R(θ) p + t for every grid point p."""
        theta = tf.convert_to_tensor(theta, tf.float32)
        translation = tf.convert_to_tensor(translation, tf.float32)
        cos, sin = tf.cos(theta)[:, None, None], tf.sin(theta)[:, None, None]
        grid = self.coordinate_grid()[None]
        x, y = grid[..., 0:1], grid[..., 1:2]
        rotated = tf.concat([cos * x - sin * y, sin * x + cos * y], axis=-1)
        return rotated + translation[:, None, :]

    def generator_logits(self, coordinates: tf.Tensor, latent: tf.Tensor) -> tf.Tensor:
        """Raw generator output [B, H, W, 1] (mean, or logits for 'bernoulli') at `coordinates`
        [B, H*W, 2], conditioned on `latent` [B, latent_dim]."""
        hidden = self.generator_coordinates(coordinates)
        if self.generator_latent is not None:
            hidden = hidden + self.generator_latent(tf.cast(latent, tf.float32))[:, None, :]
        hidden = tf.tanh(hidden)
        for layer in self.generator_hidden:
            hidden = layer(hidden)
        output = self.generator_output(hidden)
        return tf.reshape(output, [-1, self.image_size, self.image_size, 1])

    def render(self, latent: tf.Tensor, theta: tf.Tensor, translation: tf.Tensor) -> tf.Tensor:
        """Images [B, H, W, 1] (pixel means) for content `latent`, generator rotation `theta` [B]
        and `translation` [B, 2]."""
        output = self.generator_logits(self.transform_coordinates(theta, translation), latent)
        return tf.sigmoid(output) if self.settings.likelihood == "bernoulli" else output

    # --- inference ------------------------------------------------------------------------
    def infer(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """Posterior means and log-stds: `rotation_*` [B] (radians, generator convention),
        `translation_*` [B, 2] (half-widths), `latent_*` [B, latent_dim]. Quantities that are not
        inferred have mean 0 and log-std 0 and are never used."""
        images = tf.convert_to_tensor(images, tf.float32)
        expected = [self.image_size, self.image_size, 1]
        if not images.shape[1:].is_compatible_with(expected):
            raise ValueError(f"expected images [batch, {self.image_size}, {self.image_size}, 1], "
                             f"got shape {images.shape}")
        hidden = tf.reshape(self._model_units(images)[0], [-1, self.image_size * self.image_size])
        for layer in self.encoder_hidden:
            hidden = layer(hidden)
        mean, log_std = tf.split(self.encoder_posterior(hidden), 2, axis=-1)
        zeros = tf.zeros_like(mean[:, :1])
        posterior = {}
        start = 0
        if self.rotates:
            posterior["rotation_mean"], posterior["rotation_log_std"] = mean[:, 0], log_std[:, 0]
            start = 1
        else:
            posterior["rotation_mean"] = posterior["rotation_log_std"] = zeros[:, 0]
        if self.translates:
            # The network predicts a unit-scale latent; t is that latent times the prior std.
            scale = self.settings.translation_prior_std
            posterior["translation_mean"] = mean[:, start:start + 2] * scale
            posterior["translation_log_std"] = log_std[:, start:start + 2] + math.log(scale)
            start += 2
        else:
            zeros_2d = tf.tile(zeros, [1, 2])
            posterior["translation_mean"] = posterior["translation_log_std"] = zeros_2d
        posterior["latent_mean"], posterior["latent_log_std"] = mean[:, start:], log_std[:, start:]
        return posterior

    def _model_units(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        """(images in the model's units, per-image mean, per-image std): standardised per image
        with `standardize`, else as given (mean 0, std 1)."""
        if not self.settings.standardize:
            return images, tf.zeros_like(images[:, :1, :1]), tf.ones_like(images[:, :1, :1])
        mean, variance = tf.nn.moments(images, axes=[1, 2, 3], keepdims=True)
        std = tf.sqrt(variance + 1e-12)
        return (images - mean) / std, mean, std

    def kl_divergences(self, posterior: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """Per-image KL terms [B] of `posterior` (as returned by `infer`) from the priors."""
        latent = tf.reduce_sum(
            gaussian_kl(posterior["latent_mean"], posterior["latent_log_std"]), axis=-1)
        zeros = tf.zeros_like(latent)
        rotation = zeros
        if self.rotates:
            mean = posterior["rotation_mean"]
            if not self.settings.rotation_kl_mean_penalty:
                mean = tf.zeros_like(mean)
            rotation = gaussian_kl(mean, posterior["rotation_log_std"],
                                   self.rotation_prior_std)
        translation = zeros
        if self.translates:
            translation = tf.reduce_sum(gaussian_kl(
                posterior["translation_mean"], posterior["translation_log_std"],
                self.settings.translation_prior_std), axis=-1)
        return {"latent": latent, "rotation": rotation, "translation": translation}

    # --- model contract -------------------------------------------------------------------
    def encode(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """`latent` [B, latent_dim] (posterior mean z) and `angle` [B] (project convention)."""
        posterior = self.infer(images)
        return {"latent": posterior["latent_mean"],
                "angle": model_to_project_angle(posterior["rotation_mean"])}

    def canonicalize(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The canonical image (posterior mean z rendered at θ = 0, t = 0), the angle with
        `images ≈ rotate(canonical_image, angle)` (up to the inferred shift) and the latent."""
        return self._canonicalize_posterior(self.infer(images), images)

    def _canonicalize_posterior(self, posterior: Mapping[str, tf.Tensor],
                                images: tf.Tensor) -> dict[str, tf.Tensor]:
        """The canonical image of `posterior` (inferred from `images`), in the units of `images`."""
        latent = posterior["latent_mean"]
        zeros = tf.zeros_like(posterior["rotation_mean"])
        _, mean, std = self._model_units(images)
        canonical = self.render(latent, zeros, tf.stack([zeros, zeros], axis=1)) * std + mean
        return {"canonical_image": canonical,
                "angle": model_to_project_angle(posterior["rotation_mean"]),
                "latent": latent}

    def call(self, images: tf.Tensor, training: bool | None = None) -> tuple[tf.Tensor, tf.Tensor]:
        """(canonical_image [B, H, W, 1], angle [B]) of normalised `images` [B, H, W, 1]."""
        canonical = self.canonicalize(images)
        return canonical["canonical_image"], canonical["angle"]

    # --- training -------------------------------------------------------------------------
    def _unpack_batch(self, data: object) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor | None]:
        """(image, observed, angle) of a batch dict, rotating `image` here when the batch does
        not carry `observed` and `angle`; angle None for a particle stack without angles."""
        data, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        if not isinstance(data, Mapping) or "image" not in data:
            raise ValueError("SpatialVAE expects batch dicts with an 'image' key, "
                             f"got {type(data).__name__}")
        if "angle" in data and "observed" not in data:
            raise ValueError("a batch carrying 'angle' must carry 'observed' too")
        image = tf.convert_to_tensor(data["image"], tf.float32)
        if "observed" in data:
            angle = (tf.reshape(tf.convert_to_tensor(data["angle"], tf.float32), [-1])
                     if "angle" in data else None)
            return image, tf.convert_to_tensor(data["observed"], tf.float32), angle
        angle = replicas.draw(lambda n: sample_angles(
            n, self.angle_distribution, self.angle_scale, self.seed_generator), tf.shape(image)[0])
        return image, rotate(image, angle), angle

    def _sample(self, mean: tf.Tensor, log_std: tf.Tensor) -> tf.Tensor:
        """Reparameterised sample mean + std * ε."""
        noise = replicas.draw(lambda n: keras.random.normal(
            tf.concat([[n], tf.shape(mean)[1:]], 0), seed=self.seed_generator), tf.shape(mean)[0])
        return mean + tf.exp(log_std) * noise

    def _elbo_terms(self, observed: tf.Tensor) -> dict:
        """Batch means of -ELBO (`loss`) and its terms for `observed`, and the `posterior`."""
        posterior = self.infer(observed)
        theta = (self._sample(posterior["rotation_mean"], posterior["rotation_log_std"])
                 if self.rotates else posterior["rotation_mean"])
        translation = (self._sample(posterior["translation_mean"], posterior["translation_log_std"])
                       if self.translates else posterior["translation_mean"])
        latent = self._sample(posterior["latent_mean"], posterior["latent_log_std"])
        output = self.generator_logits(self.transform_coordinates(theta, translation), latent)
        observed = self._model_units(observed)[0]
        if self.settings.likelihood == "bernoulli":
            pixel_nll = tf.nn.sigmoid_cross_entropy_with_logits(labels=observed, logits=output)
        else:
            pixel_nll = 0.5 * tf.square(output - observed) + _HALF_LOG_2PI
        nll = tf.reduce_sum(pixel_nll, axis=[1, 2, 3])
        kl = self.kl_divergences(posterior)
        terms = {"reconstruction_nll": tf.reduce_mean(nll),
                 "kl_latent": tf.reduce_mean(kl["latent"]),
                 "kl_rotation": tf.reduce_mean(kl["rotation"]),
                 "kl_translation": tf.reduce_mean(kl["translation"])}
        terms["loss"] = (terms["reconstruction_nll"] + terms["kl_latent"] + terms["kl_rotation"]
                         + terms["kl_translation"])
        return {**terms, "posterior": posterior}

    def _update_metrics(self, terms: Mapping, image: tf.Tensor, observed: tf.Tensor,
                        angle: tf.Tensor | None) -> dict[str, tf.Tensor]:
        """Updates the trackers with `terms` (of `_elbo_terms` on `observed`) and the canonical-pose
        metrics shared with the main model (`reconstruction_mse` against the canonical image,
        `angle_error_deg`: NaN when the angles are unknown)."""
        canonical = self._canonicalize_posterior(
            {key: tf.stop_gradient(value) for key, value in terms["posterior"].items()}, observed)
        values = dict(terms)
        values["reconstruction_mse"] = tf.reduce_mean(
            tf.square(canonical["canonical_image"] - image))
        values["angle_error_deg"] = tf.constant(math.nan) if angle is None else tf.reduce_mean(
            tf.abs(wrap_angle(canonical["angle"] - angle))) * (180.0 / math.pi)
        for name, tracker in self._trackers.items():
            tracker.update_state(values[name])
        return {name: tracker.result() for name, tracker in self._trackers.items()}

    def train_step(self, data: object) -> dict[str, tf.Tensor]:
        """One Adam step on -ELBO of the observed images."""
        image, observed, angle = self._unpack_batch(data)
        terms = replicas.minimize(self.optimizer, lambda: self._elbo_terms(observed),
                                  self.trainable_weights)
        return self._update_metrics(terms, image, observed, angle)

    def test_step(self, data: object) -> dict[str, tf.Tensor]:
        """The same metrics as `train_step`, without the update."""
        image, observed, angle = self._unpack_batch(data)
        return self._update_metrics(self._elbo_terms(observed), image, observed, angle)
