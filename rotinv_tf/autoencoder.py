"""`RotationInvariantAutoencoder`: the paper's model, trained by overriding `keras.Model.train_step`.

The encoder sees a rotated image rot(x, θ) and predicts a latent whose slot 0 is the angle θ̂;
the decoder gets the latent with that slot zeroed and must return the canonical x. A WGAN-GP critic
judges decoder outputs against real canonical images. Losses, optimizers and metric trackers are
owned by the model, as in the keras-io WGAN-GP example.

Two frames (`frame=`): `supervised`, the paper's, where the data's canonical images (or angles)
define the frame; `learned`, for stacks whose angles nobody knows, where the model's
`TemplateFrame` learns the canonical frame by online EM during training and its frame angles stand
in for the missing ones (`rotinv_tf.pose.template_frame`).
"""
import math

import keras
import tensorflow as tf

from data_pipeline.angles import wrap_angle
from data_pipeline.rotation import rotate, sample_angles
from rotinv_tf import losses, replicas
from data_pipeline.settings import raise_problems
from rotinv_tf.config import AutoencoderConfig
from rotinv_tf.networks import build_critic, build_decoder, build_encoder
from rotinv_tf.pose.template_frame import TemplateFrame

_GENERATOR_METRICS = ("loss", "angle_loss", "reconstruction_loss", "adversarial_loss",
                      "angle_error_deg", "reconstruction_mse")
_CRITIC_METRICS = ("critic_loss", "wasserstein_distance", "gradient_penalty")


class RotationInvariantAutoencoder(keras.Model):
    """Encoder + decoder + critic, with the paper's losses and its generator:critic schedule."""

    def __init__(self, image_size: int, angle_distribution: str = "uniform",
                 angle_scale: float = math.pi, seed: int = 0, name: str | None = None,
                 **settings):
        """`settings`: the fields of `AutoencoderConfig` (its defaults for those not given).
        `angle_distribution`, `angle_scale` (radians): how training images without angles are
        rotated on the device; `seed`: the model's random draws.

        `augment_quarter_turns`: data that carries `observed`/`angle` (full-circle rotations) is
        turned further by a random multiple of 90° on each training step (θ becomes θ + kπ/2), so
        each noisy particle is seen in four poses. Quarter turns move pixels exactly: unlike a
        bilinear rotation they neither smooth the noise nor fill in corners, so training inputs
        keep the statistics of the data the model is evaluated on.

        `critic_filters`: the critic's width, apart from the encoder's and decoder's `filters`.
        Its adversarial term has a small weight and its gradient penalty (a double backward
        pass) is the dearest part of a step, so a narrow critic saves time where it costs least.

        Loss weights and the 4:1 schedule (`generator_steps_per_critic_step` = g: the critic is
        updated on steps 1, 1 + g, 1 + 2g, ...) are settings too, as in the keras-io WGAN-GP
        example.

        `frame="learned"`: each training `image` is an observed particle of unknown angle; the
        frame angle θ of the model's `TemplateFrame` (`frame_angles` polar bins, EM momentum
        `frame_momentum`, `frame_classes` templates: one per view of a stack holding several)
        makes `rotate(image, -θ)` its canonical image and θ its angle. (`auto` is resolved from
        the data by `training.build_model`; a model made with it trains `supervised`.)"""
        self.settings = AutoencoderConfig(**settings)
        raise_problems(self.settings.problems())
        super().__init__(name=name)
        s = self.settings
        self.image_size = image_size
        self.angle_distribution = angle_distribution
        self.angle_scale = float(angle_scale)
        self.template_frame = (TemplateFrame(image_size, s.frame_angles, s.frame_momentum,
                                             s.frame_classes)
                               if self.frame == "learned" else None)
        self.encoder = build_encoder(image_size, s.latent_dim, s.filters)
        self.decoder = build_decoder(image_size, s.latent_dim, s.filters)
        self.critic = build_critic(image_size, s.critic_filters)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in _GENERATOR_METRICS + _CRITIC_METRICS}
        self.built = True  # the functional sub-networks own all the weights, already built

    @property
    def frame(self) -> str:
        """supervised or learned (module docstring)."""
        return "learned" if self.settings.frame == "learned" else "supervised"

    @property
    def wrap_angles(self) -> bool:
        """Angle differences wrap around the circle when training angles can reach ±π."""
        return self.angle_distribution == "normal" or self.angle_scale >= math.pi - 1e-6

    def compile(self, generator_optimizer: keras.optimizers.Optimizer,
                critic_optimizer: keras.optimizers.Optimizer, **kwargs) -> None:
        """Sets the two optimizers (and builds them, so a restored run finds their slots)."""
        # Keras' own `optimizer` slot holds the generator's, so no unused default optimizer is made.
        super().compile(optimizer=generator_optimizer, **kwargs)
        self.generator_optimizer = generator_optimizer
        self.critic_optimizer = critic_optimizer
        self.generator_optimizer.build(self.generator_variables)
        self.critic_optimizer.build(self.critic.trainable_variables)

    @property
    def generator_variables(self) -> list:
        return self.encoder.trainable_variables + self.decoder.trainable_variables

    @property
    def metrics(self) -> list:
        return list(self.trackers.values())

    # Inference: the model contract shared with the baseline (docs/architecture.md).

    def _network_encode(self, images: tf.Tensor, training: bool) -> dict:
        """The encoder's content latents and its predicted angle θ̂ (what the losses train)."""
        latent = self.encoder(images, training=training)
        return {"latent": latent[:, 1:], "angle": latent[:, 0]}

    def encode(self, images: tf.Tensor, training: bool = False) -> dict:
        """Normalised images -> {"latent": content latents, "angle": θ̂ in radians}.

        In the learned frame the angle is the frame's own (the EM template's posterior mean),
        which the network's θ̂ only approximates (benchmarks/results/learned_frame.md)."""
        encoded = self._network_encode(images, training)
        if self.frame == "learned":
            encoded["angle"] = self.template_frame.assign(images)[0]
        return encoded

    def decode(self, content: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Content latents -> canonical images; the angle slot is fed as 0."""
        zeros = tf.zeros_like(content[:, :1])
        return self.decoder(tf.concat([zeros, content], axis=1), training=training)

    def canonicalize(self, images: tf.Tensor) -> dict:
        """Normalised images -> {"canonical_image", "angle", "latent"}."""
        encoded = self.encode(images)
        return {"canonical_image": self.decode(encoded["latent"]), **encoded}

    def call(self, images: tf.Tensor, training: bool = False):
        encoded = self._network_encode(images, training=training)
        return self.decode(encoded["latent"], training=training), encoded["angle"]

    # Training.

    def _rotated_inputs(self, batch: dict, training: bool):
        """(canonical x, observed rot(x, θ), θ): from the batch (turned by random quarter turns
        when augmenting a training step), or rotated here on the device."""
        if self.frame == "learned":
            return self._framed_inputs(batch, training)
        images = batch["image"]
        if "observed" in batch and "angle" in batch:
            if training and self.settings.augment_quarter_turns:
                return (images, *self._quarter_turned(batch["observed"], batch["angle"]))
            return images, batch["observed"], batch["angle"]
        angles = replicas.draw(lambda n: sample_angles(
            n, self.angle_distribution, self.angle_scale, self.seed_generator),
            tf.shape(images)[0])
        return images, rotate(images, angles, xla_compatible=self.jit_compile is True), angles

    def _framed_inputs(self, batch: dict, training: bool):
        """Learned frame: the particle `image` at frame angle θ is `observed` itself, with
        canonical image rotate(image, -θ). Training steps also take the EM step; evaluation
        batches (observed = rotate(image, angle)) get angle + θ."""
        images = batch["image"]
        if training:
            theta = tf.stop_gradient(self.template_frame.update(images, self.seed_generator))
            observed, angles = images, theta
            if self.settings.augment_quarter_turns:
                observed, angles = self._quarter_turned(observed, angles)
        else:
            theta = self.template_frame.assign(images)[0]
            observed, angles = batch["observed"], wrap_angle(batch["angle"] + theta)
        # Derotated about each particle's mean, so the corners a rotation leaves empty take the
        # background's level rather than 0 (the stack's minimum after normalisation).
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        canonical = rotate(images - mean, -theta, xla_compatible=self.jit_compile is True) + mean
        return canonical, observed, angles

    def _quarter_turned(self, observed: tf.Tensor, angles: tf.Tensor):
        """Each image turned by its own random k·90° (exact pixel moves), its angle by kπ/2."""
        turns = replicas.draw(lambda n: keras.random.randint(
            [n], 0, 4, seed=self.seed_generator), tf.shape(observed)[0])
        all_turns = tf.stack([tf.image.rot90(observed, k) for k in range(4)], axis=1)
        turned = tf.gather(all_turns, turns, axis=1, batch_dims=1)
        return turned, wrap_angle(angles + tf.cast(turns, tf.float32) * (math.pi / 2))

    def _generator_losses(self, images, observed, angles, training: bool) -> dict:
        encoded = self._network_encode(observed, training=training)
        reconstructions = self.decode(encoded["latent"], training=training)
        out = {
            "angle_loss": losses.angle_loss(angles, encoded["angle"], self.wrap_angles),
            "reconstruction_loss": losses.reconstruction_loss(images, reconstructions),
            "adversarial_loss": -tf.reduce_mean(self.critic(reconstructions, training=training)),
        }
        s = self.settings
        out["loss"] = (s.angle_weight * out["angle_loss"]
                       + s.reconstruction_weight * out["reconstruction_loss"]
                       + s.adversarial_weight * out["adversarial_loss"])
        out["angle_error_deg"] = tf.reduce_mean(tf.abs(losses.angle_difference(
            angles, encoded["angle"], self.wrap_angles))) * (180.0 / math.pi)
        out["reconstruction_mse"] = tf.reduce_mean(tf.square(images - reconstructions))
        out["reconstructions"] = reconstructions
        return out

    def _critic_losses(self, real, fake) -> dict:
        alpha = replicas.draw(
            lambda n: keras.random.uniform([n, 1, 1, 1], seed=self.seed_generator),
            tf.shape(real)[0])
        distance = (tf.reduce_mean(self.critic(real, training=True))
                    - tf.reduce_mean(self.critic(fake, training=True)))
        penalty = losses.gradient_penalty(lambda x: self.critic(x, training=True), real, fake,
                                          alpha)
        return {"critic_loss": -distance + self.settings.gp_weight * penalty,
                "wasserstein_distance": distance, "gradient_penalty": penalty}

    def _critic_update(self, real, fake) -> tf.Tensor:
        out = replicas.minimize(self.critic_optimizer, lambda: self._critic_losses(real, fake),
                                self.critic.trainable_variables, key="critic_loss")
        for name in _CRITIC_METRICS:
            self.trackers[name].update_state(out[name])
        return tf.constant(True)

    def train_step(self, batch: dict) -> dict:
        images, observed, angles = self._rotated_inputs(batch, training=True)
        out = replicas.minimize(
            self.generator_optimizer,
            lambda: self._generator_losses(images, observed, angles, training=True),
            self.generator_variables)
        # The generator optimizer has just counted this step: update the critic on steps
        # 1, 1 + g, 1 + 2g, ... so the first step already trains it.
        step = self.generator_optimizer.iterations - 1
        replicas.run_if(step % self.settings.generator_steps_per_critic_step == 0,
                        self._critic_update, images, tf.stop_gradient(out["reconstructions"]))
        for name in _GENERATOR_METRICS:
            self.trackers[name].update_state(out[name])
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, batch: dict) -> dict:
        images, observed, angles = self._rotated_inputs(batch, training=False)
        out = self._generator_losses(images, observed, angles, training=False)
        fake = out["reconstructions"]
        out["wasserstein_distance"] = (tf.reduce_mean(self.critic(images))
                                       - tf.reduce_mean(self.critic(fake)))
        for name in _GENERATOR_METRICS + ("wasserstein_distance",):
            self.trackers[name].update_state(out[name])
        return {name: self.trackers[name].result()
                for name in _GENERATOR_METRICS + ("wasserstein_distance",)}
