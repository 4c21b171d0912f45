"""`RotationInvariantAutoencoder`: the paper's model, trained by overriding `keras.Model.train_step`.

The encoder sees a rotated image rot(x, θ) and predicts a latent whose slot 0 is the angle θ̂;
the decoder gets the latent with that slot zeroed and must return the canonical x. A WGAN-GP critic
judges decoder outputs against real canonical images. Losses, optimizers and metric trackers are
owned by the model, as in the keras-io WGAN-GP example.

The frame (`frame=`: `supervised`, the paper's, or `learned`, a `TemplateFrame` learning the
canonical frame of a stack without angles) is a `frames` object and the CTF correction
(`ctf_correction=`: `none`, `phase_flip` or `model`) a `ctf_corrections` object, each chosen once
by name; each owns its inputs, its state and its update, and what it serves. A training step reads
top to bottom (`train_step`): the batch as the correction shows it to the encoder, the frame's
explicit step, the generator's step, the correction's state update (outside the gradient tape),
the critic's step on its schedule.
"""
import math

import keras
import tensorflow as tf

from data_pipeline.settings import raise_problems
from rotinv_tf.config import AutoencoderConfig
from rotinv_tf.models import losses, replicas
from rotinv_tf.models.ctf_corrections import make_correction, particle_ctf
from rotinv_tf.models.frames import Inputs, make_frame
from rotinv_tf.models.networks import build_networks

_GENERATOR_METRICS = ("loss", "angle_loss", "reconstruction_loss", "adversarial_loss",
                      "angle_error_deg", "reconstruction_mse")
_CRITIC_METRICS = ("critic_loss", "wasserstein_distance", "gradient_penalty")


class RotationInvariantAutoencoder(keras.Model):
    """Encoder + decoder + critic, with the paper's losses and its generator:critic schedule."""

    def __init__(self, image_size: int, angle_distribution: str = "uniform",
                 angle_scale: float = math.pi, seed: int = 0, raw_zero: float = 0.0,
                 name: str | None = None, **settings):
        """`settings`: the fields of `AutoencoderConfig` (its defaults for those not given).
        `angle_distribution`, `angle_scale` (radians): how training images without angles are
        rotated on the device; `seed`: the model's random draws.

        `augment_quarter_turns`: data that carries `observed`/`angle` (full-circle rotations) is
        turned further by a random multiple of 90° on each training step (θ becomes θ + kπ/2), so
        each noisy particle is seen in four poses. Quarter turns move pixels exactly: unlike a
        bilinear rotation they neither smooth the noise nor fill in corners, so training inputs
        keep the statistics of the data the model is evaluated on.

        `critic_filters`: the critic's width, apart from the encoder's and decoder's `filters`.
        Its pull on the decoder is a small part of the reconstruction's (`losses.
        reconstruction_loss`) and its gradient penalty (a double backward pass) is the dearest
        part of a step, so a narrow critic saves time where it costs least.

        Loss weights and the 4:1 schedule (`generator_steps_per_critic_step` = g: the critic is
        updated on steps 1, 1 + g, 1 + 2g, ...) are settings too, as in the keras-io WGAN-GP
        example.

        `frame="learned"`: each training `image` is an observed particle of unknown angle
        (`frames.LearnedFrame`).

        `architecture`: the networks (`rotinv_tf.models.networks.build_networks`): `paper`
        (the authors' MLP encoder, DCGAN decoder and 2/4/8-channel critic; widths ignored) or `conv`.

        `ctf_correction` (`ctf_corrections`) other than `none` needs `raw_zero`, the data's
        normalised value of raw 0 (the optics come with each batch's particles); with one,
        `defocus_decorrelation_weight` weighs the defocus penalty.

        An `auto` frame or CTF correction is resolved from the data before training
        (`rotinv_tf.training.resolve`); a model made with one takes data with angles and without
        CTF values (`AutoencoderConfig.resolved`), and keeps the resolved settings."""
        self.settings = AutoencoderConfig(**settings).resolved()
        raise_problems(self.settings.problems())
        super().__init__(name=name)
        s = self.settings
        self.image_size = image_size
        self.angle_distribution = angle_distribution
        self.angle_scale = float(angle_scale)
        self.raw_zero = float(raw_zero)
        xla_compatible = lambda: self.jit_compile is True  # noqa: E731  (known once compiled)
        self.frame = make_frame(image_size, s, angle_distribution, self.angle_scale,
                                xla_compatible)
        for attribute, layer in self.frame.layers.items():  # tracked and checkpointed by name
            setattr(self, attribute, layer)
        self.encoder, self.decoder, self.critic = build_networks(
            s.architecture, image_size, s.latent_dim, s.filters, s.critic_filters)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.correction = make_correction(image_size, self.raw_zero, s, self.add_weight)
        self.generator_metrics = _GENERATOR_METRICS + self.correction.metrics
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in self.generator_metrics + _CRITIC_METRICS}
        self.built = True  # the functional sub-networks own all the weights, already built

    @property
    def uses_ctf(self) -> bool:
        """Whether the model takes each particle's CTF."""
        return self.correction.takes_ctf

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

    def encode(self, images: tf.Tensor, training: bool = False,
               particle_ctf: dict | None = None) -> dict:
        """Normalised images -> {"latent": content latents, "angle": θ̂ in radians}.

        `particle_ctf` (`data_pipeline.ctf.CTF_FEATURES`, each [B]) is needed by a model with a
        CTF correction. In the learned frame the angle is the frame's own (the EM template's
        posterior mean), which the network's θ̂ only approximates
        (benchmarks/results/learned_frame.md), and the latent is the encoder's of the particle
        turned into that frame, rotation-invariant up to the frame angle's error: the encoder's
        latent of the particle as observed is not (on benchmarks/poses.py's three-view stack it
        predicts the cos and sin of the true psi linearly with R² 0.87-0.96, issue 15). A learned
        frame also returns "features", what it serves to cluster and order particles by
        (`rotinv_tf.pose.frame_features`: their frame's turned particle and class), and
        "reference", the template of each particle's most probable class as an image
        (`TemplateFrame.images`, in the units and CTF state the frame sees), what its angle is
        refined against (`rotinv_tf.serving.inference`), and the frame's grades of its class
        and angle (`template_frame.CLASS_OUTPUTS`: class probabilities, assignment probability,
        log-likelihood, flip probability) and its offset ("offset" [B, 2] pixels, x along the
        columns, y down the rows: `data_pipeline.rotation`), and "network_angle", the encoder's
        own θ̂ of the particle as observed, re-centred (what training teaches it to predict: the
        frame angle), served
        beside the frame's so that tables can say which produced an angle."""
        view = self.correction.view(particle_ctf)(images, None)
        return self.frame.encode(view, lambda x: self._network_encode(x, training))

    def start_frame(self, batch: dict, seed: int = 0) -> None:
        """Before training: a learned frame's templates start from the `batch`'s particles as the
        frame sees them (`frames.LearnedFrame.start`)."""
        self.frame.start(self._seen(batch), seed=seed)

    def finish_frame(self, batch: dict, chunk: int = 256) -> dict[int, float]:
        """After training: a learned frame settles near-symmetric classes' orientation and fits
        its features on the `batch`'s particles (`frames.LearnedFrame.finish`, whose result it
        returns)."""
        return self.frame.finish(self._seen(batch), chunk)

    def _seen(self, batch: dict) -> tf.Tensor:
        """The batch's particles as the encoder and the frame see them."""
        return self.correction.view(particle_ctf(batch))(batch["image"], None)

    def decode(self, content: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Content latents -> canonical images; the angle slot is fed as 0."""
        zeros = tf.zeros_like(content[:, :1])
        return self.decoder(tf.concat([zeros, content], axis=1), training=training)

    def canonicalize(self, images: tf.Tensor, particle_ctf: dict | None = None) -> dict:
        """Normalised images -> {"canonical_image", "angle", "latent"} (and "features",
        "reference" and the frame's grades in a learned frame, `encode`; `particle_ctf` as in
        `encode`); the canonical image is
        CTF-free with `ctf_correction="model"`."""
        encoded = self.encode(images, particle_ctf=particle_ctf)
        return {"canonical_image": self.decode(encoded["latent"]), **encoded}

    def call(self, images: tf.Tensor, training: bool = False):
        encoded = self._network_encode(images, training=training)
        return self.decode(encoded["latent"], training=training), encoded["angle"]

    # Training.

    def _generator_losses(self, target: tf.Tensor, inputs: Inputs, training: bool,
                          forward=lambda decoded: decoded, values: dict | None = None) -> dict:
        """Losses of the encoder/decoder on `inputs` (`frames.Inputs`): `forward` maps the
        decoder's output to what `target` holds (the CTF with `ctf_correction="model"`); the
        correction adds its penalty on the particles of CTF `values` ("correction_state": what
        its `update` keeps)."""
        encoded = self._network_encode(inputs.observed, training=training)
        reconstructions = forward(self.decode(encoded["latent"], training=training))
        out = {
            "angle_loss": losses.angle_loss(inputs.angles, encoded["angle"], self.wrap_angles),
            "reconstruction_loss": losses.reconstruction_loss(
                target, reconstructions, self.settings.reconstruction_norm),
            "adversarial_loss": -tf.reduce_mean(self.critic(reconstructions, training=training)),
        }
        s = self.settings
        penalty = self.correction.penalty(encoded["latent"], values)
        out["loss"] = (s.angle_weight * out["angle_loss"]
                       + s.reconstruction_weight * out["reconstruction_loss"]
                       + s.adversarial_weight * out["adversarial_loss"]) + penalty.loss
        out.update(penalty.metrics)
        out["correction_state"] = penalty.state
        out["angle_error_deg"] = tf.reduce_mean(tf.abs(losses.angle_difference(
            inputs.angles, encoded["angle"], self.wrap_angles))) * (180.0 / math.pi)
        out["reconstruction_mse"] = tf.reduce_mean(tf.square(target - reconstructions))
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
        # The batch as the CTF correction shows it to the encoder (and the frame).
        values = particle_ctf(batch)
        view = self.correction.view(values)
        # The frame's explicit step (the learned frame's EM step), then the step's inputs.
        pose = self.frame.update(batch, view, self.seed_generator)
        inputs = self.frame.training_inputs(batch, view, pose, self.seed_generator)
        target, forward = self.correction.target(values, inputs.canonical, inputs.turn)
        # The generator's step, then the correction's state (its running statistics), outside
        # the gradient tape.
        out = replicas.minimize(
            self.generator_optimizer,
            lambda: self._generator_losses(target, inputs, training=True, forward=forward,
                                           values=values),
            self.generator_variables)
        self.correction.update(out["correction_state"])
        # The critic's step on steps 1, 1 + g, 1 + 2g, ... (the generator optimizer has just
        # counted this step, so the first step already trains it), on this step's outputs.
        step = self.generator_optimizer.iterations - 1
        replicas.run_if(step % self.settings.generator_steps_per_critic_step == 0,
                        self._critic_update, target, tf.stop_gradient(out["reconstructions"]))
        for name in self.generator_metrics:
            self.trackers[name].update_state(out[name])
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, batch: dict) -> dict:
        values = particle_ctf(batch)
        inputs = self.frame.evaluation_inputs(batch, self.correction.view(values),
                                              self.seed_generator)
        target, forward = self.correction.target(values, inputs.canonical, inputs.turn)
        out = self._generator_losses(target, inputs, training=False, forward=forward,
                                     values=values)
        fake = out["reconstructions"]
        out["wasserstein_distance"] = (tf.reduce_mean(self.critic(target))
                                       - tf.reduce_mean(self.critic(fake)))
        for name in self.generator_metrics + ("wasserstein_distance",):
            self.trackers[name].update_state(out[name])
        return {name: self.trackers[name].result()
                for name in self.generator_metrics + ("wasserstein_distance",)}
