"""`RotationInvariantAutoencoder`: the paper's model, trained by overriding `keras.Model.train_step`.

The encoder sees a rotated image rot(x, θ) and predicts a latent whose slot 0 is the angle θ̂;
the decoder gets the latent with that slot zeroed and must return the canonical x. A WGAN-GP critic
judges decoder outputs against real canonical images. Losses, optimizers and metric trackers are
owned by the model, as in the keras-io WGAN-GP example.

Two frames (`frame=`): `supervised`, the paper's, where the data's canonical images (or angles)
define the frame; `learned`, for stacks whose angles nobody knows, where the model's
`TemplateFrame` learns the canonical frame by online EM during training and its frame angles stand
in for the missing ones (`rotinv_tf.pose.template_frame`).

CTF correction (`ctf_correction=`, for data carrying each particle's CTF, `data_pipeline.ctf.
CTF_FEATURES`, whose `defocus_angle` is the astigmatism angle of `image`): with `phase_flip` and
`model` the encoder sees phase-flipped particles; with `phase_flip` the decoder reconstructs the
phase-flipped canonical image; with `model` (cryoDRGN's forward model) it returns the CTF-free
canonical image, and the loss and the critic see it modulated by the particle's CTF (its
astigmatism turned with the frame). The CTF acts on raw pixel values, so it is applied about
`raw_zero`, the normalised value of raw 0.
A phase-flipped particle still shows its defocus (the CTF's zeros), which the encoder would pass
into the latent; `defocus_decorrelation_weight` > 0 penalises the R² of the best linear read-out
of the particles' defocus features (`defocus_features`) from the content latents (a linear
adversary, in closed form: `losses.linear_readout_r2`), so that no linear probe finds defocus in
the latent. Its covariances are running averages over batches (`defocus_momentum`): one batch's
read-out is mostly chance (31 latents, 64 particles), and chasing it costs the latent its content.
"""
import math

import keras
import tensorflow as tf

from data_pipeline import ctf
from data_pipeline.angles import wrap_angle
from data_pipeline.rotation import recentred, rotate, rotated_offsets, sample_angles
from data_pipeline.settings import raise_problems
from rotinv_tf.config import AutoencoderConfig
from rotinv_tf.models import losses, replicas
from rotinv_tf.models.networks import build_networks
from rotinv_tf.pose.frame_features import FrameFeatures
from rotinv_tf.pose.template_frame import OFFSET, TemplateFrame

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

        `frame="learned"`: each training `image` is an observed particle of unknown angle; the
        frame angle θ of the model's `TemplateFrame` (`frame_angles` polar bins, EM momentum
        `frame_momentum`, `frame_classes` templates: one per view of a stack holding several;
        offsets d searched within `frame_max_shift` pixels in `frame_shift_step` steps) makes
        the particle moved by -d and turned by -θ its canonical image, θ its angle and d its
        offset.

        `architecture`: the networks (`rotinv_tf.models.networks.build_networks`): `paper`
        (the authors' MLP encoder, DCGAN decoder and 2/4/8-channel critic; widths ignored) or `conv`.

        `ctf_correction` (module docstring) other than `none` needs `raw_zero`, the data's
        normalised value of raw 0 (the optics come with each batch's particles); with one,
        `defocus_decorrelation_weight` weighs the defocus penalty (module docstring).

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
        self.template_frame = (TemplateFrame(image_size, s.frame_angles, s.frame_momentum,
                                             s.frame_classes, s.frame_max_shift,
                                             s.frame_shift_step)
                               if self.frame == "learned" else None)
        self.frame_features = (FrameFeatures(image_size, s.frame_classes, s.feature_axes,
                                             s.feature_mask_radius, s.feature_class_weight)
                               if self.frame == "learned" else None)
        self.encoder, self.decoder, self.critic = build_networks(
            s.architecture, image_size, s.latent_dim, s.filters, s.critic_filters)
        self.seed_generator = keras.random.SeedGenerator(seed)
        if self.uses_ctf:
            content = s.latent_dim - 1
            self.defocus_covariances = [self.add_weight(
                shape=shape, initializer="zeros", trainable=False, aggregation="mean",
                name=name) for shape, name in (((content, content), "latent_covariance"),
                                               ((content, 2), "defocus_covariance"))]
        self.generator_metrics = _GENERATOR_METRICS + (
            ("defocus_penalty",) if self.uses_ctf else ())
        self.trackers = {name: keras.metrics.Mean(name=name)
                         for name in self.generator_metrics + _CRITIC_METRICS}
        self.built = True  # the functional sub-networks own all the weights, already built

    @property
    def frame(self) -> str:
        """supervised or learned (module docstring)."""
        return self.settings.frame

    @property
    def ctf_correction(self) -> str:
        """none, phase_flip or model (module docstring)."""
        return self.settings.ctf_correction

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

    @property
    def uses_ctf(self) -> bool:
        return self.ctf_correction != "none"

    def _ctf_filtered(self, images: tf.Tensor, particle_ctf: dict, turn, mode: str) -> tf.Tensor:
        """Normalised images through their particles' CTF (`mode` of `ctf.apply_ctf`), the images
        being the particles turned by `turn` radians (their astigmatism turns with them)."""
        if turn is not None:
            particle_ctf = {**particle_ctf, "defocus_angle": ctf.rotated_defocus_angle(
                particle_ctf["defocus_angle"], turn)}
        images = tf.ensure_shape(images, [None, self.image_size, self.image_size, 1])
        filtered = ctf.apply_ctf(images - self.raw_zero, particle_ctf, mode, pad_factor=2)
        return filtered + self.raw_zero

    def _encoder_view(self, images: tf.Tensor, particle_ctf: dict | None, turn=None) -> tf.Tensor:
        """What the encoder and the frame see: the particles, phase-flipped under a CTF
        correction."""
        if not self.uses_ctf:
            return images
        if particle_ctf is None:
            raise ValueError(f"a model with ctf_correction {self.ctf_correction!r} needs each "
                             f"particle's {', '.join(ctf.CTF_FEATURES)}")
        return self._ctf_filtered(images, particle_ctf, turn, "phase_flip")

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
        images = self._encoder_view(images, particle_ctf)
        if self.frame != "learned":
            return self._network_encode(images, training)
        framed, angle, assessment = self._framed(images)
        classes = assessment["class_probabilities"]
        encoded = self._network_encode(framed, training)
        encoded["network_angle"] = self._network_encode(
            self._centred(images, assessment.get(OFFSET)), training)["angle"]
        encoded["angle"] = angle
        encoded["features"] = self.frame_features.features(framed, classes)
        encoded["reference"] = tf.gather(self.template_frame.images(),
                                         tf.argmax(classes, axis=1, output_type=tf.int32))
        return {**encoded, **assessment}

    def _framed(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, dict]:
        """Learned frame: (the particles as the frame sees them, re-centred by their offsets and
        turned into it, their frame angles [B], the frame's grades of each and, with an offset
        search, its offset (`TemplateFrame.assessment`: class probabilities [B, K], ...,
        offset [B, 2]))."""
        weights, assessment = self.template_frame.assessment(images)
        angle = self.template_frame.angles(weights)[0]
        return self._derotated(images, angle, assessment.get(OFFSET)), angle, assessment

    def finish_frame(self, batch: dict, chunk: int = 256) -> dict[int, float]:
        """Learned frame, after training, on the `batch`'s particles: splits by orientation the
        classes whose particles took both of a near-symmetric template's orientations
        (`TemplateFrame.break_symmetry`, whose result it returns), then fits `frame_features`
        in the frame that leaves."""
        images = self._encoder_view(batch["image"], _particle_ctf(batch))
        turned = self.template_frame.break_symmetry(images)
        framed = [self._framed(images[i:i + chunk])[0]
                  for i in range(0, int(tf.shape(images)[0]), chunk)]
        self.frame_features.fit(tf.concat(framed, 0).numpy())
        return turned

    def start_frame(self, batch: dict, seed: int = 0) -> None:
        """Learned frame: its templates start from classical alignment of the `batch`'s particles
        as the frame sees them (`TemplateFrame.start_classical`), before training."""
        if self.frame != "learned":
            raise ValueError("only a learned frame has templates to start")
        self.template_frame.start_classical(
            self._encoder_view(batch["image"], _particle_ctf(batch)), seed=seed)

    def _derotated(self, images: tf.Tensor, angles: tf.Tensor, offsets: tf.Tensor | None = None
                   ) -> tf.Tensor:
        """Images moved back by their `offsets` [B, 2] pixels (`_centred`) and turned by
        -`angles` about each one's mean, so the edges and corners a move or rotation leaves
        empty take the background's level rather than 0 (the stack's minimum after
        normalisation)."""
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = self._centred(images, offsets)
        return rotate(images - mean, -angles, xla_compatible=self.jit_compile is True) + mean

    def _centred(self, images: tf.Tensor, offsets: tf.Tensor | None) -> tf.Tensor:
        """Images moved back by their `offsets` [B, 2] pixels (the particle to the box centre),
        the edge taking each one's mean; as they are without a learned frame's offset search
        (or `offsets` None)."""
        if offsets is None or not self.settings.frame_max_shift:
            return images
        return recentred(images, offsets, xla_compatible=self.jit_compile is True)

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

    def _rotated_inputs(self, batch: dict, training: bool):
        """(canonical x, observed rot(x, θ) as the encoder sees it (`_encoder_view`), θ, turn of
        x from the batch's `image`, None for none): from the batch (turned by random quarter
        turns when augmenting a training step), or rotated here on the device."""
        if self.frame == "learned":
            return self._framed_inputs(batch, training)
        images = batch["image"]
        if "observed" in batch and "angle" in batch:
            observed, angles = batch["observed"], batch["angle"]
            if training and self.settings.augment_quarter_turns:
                (observed,), angles = self._quarter_turned((observed,), angles)
        else:
            angles = replicas.draw(lambda n: sample_angles(
                n, self.angle_distribution, self.angle_scale, self.seed_generator),
                tf.shape(images)[0])
            observed = rotate(images, angles, xla_compatible=self.jit_compile is True)
        return images, self._encoder_view(observed, _particle_ctf(batch), angles), angles, None

    def _framed_inputs(self, batch: dict, training: bool):
        """Learned frame: the particle `image` at frame angle θ and offset d, re-centred (moved
        by -d), is `observed`, with canonical image that turned by -θ: the network sees centred
        particles. Training steps also take the EM step, whose view of the particles is also the
        encoder's (phase-flipped once: a quarter turn moves pixels exactly, so turning the
        flipped particle is flipping the turned one); evaluation batches
        (observed = rotate(image, angle)) get angle + θ, re-centred by d turned by the angle."""
        images = batch["image"]
        framed = self._encoder_view(images, _particle_ctf(batch))
        if training:
            theta, offsets = tf.nest.map_structure(
                tf.stop_gradient, self.template_frame.update(framed, self.seed_generator))
            observed, angles = self._centred(framed, offsets), theta
            if self.settings.augment_quarter_turns:
                (observed,), angles = self._quarter_turned((observed,), angles)
        else:
            weights, offsets = self.template_frame.posterior(framed)
            theta = self.template_frame.angles(weights)[0]
            observed = self._centred(
                self._encoder_view(batch["observed"], _particle_ctf(batch), batch["angle"]),
                rotated_offsets(offsets, batch["angle"]))
            angles = wrap_angle(batch["angle"] + theta)
        return self._derotated(images, theta, offsets), observed, angles, -theta

    def _quarter_turned(self, images: tuple, angles: tf.Tensor):
        """Each row of `images` (tensors alike in shape) turned by its own random k·90° (exact
        pixel moves), its angle by kπ/2."""
        turns = replicas.draw(lambda n: keras.random.randint(
            [n], 0, 4, seed=self.seed_generator), tf.shape(angles)[0])

        def turned(x: tf.Tensor) -> tf.Tensor:
            all_turns = tf.stack([tf.image.rot90(x, k) for k in range(4)], axis=1)
            return tf.gather(all_turns, turns, axis=1, batch_dims=1)

        return (tuple(turned(x) for x in images),
                wrap_angle(angles + tf.cast(turns, tf.float32) * (math.pi / 2)))

    def _ctf_target(self, batch: dict, images, turn):
        """(reconstruction target, forward model of a decoder output) for the canonical `images`
        (turned by `turn` from the batch's `image`, whose CTF the batch carries; None: not
        turned)."""
        if not self.uses_ctf:
            return images, lambda decoded: decoded
        particle_ctf = _particle_ctf(batch)
        if self.ctf_correction == "phase_flip":
            target = self._ctf_filtered(images, particle_ctf, turn, "phase_flip")
            return target, lambda decoded: decoded
        return images, lambda decoded: self._ctf_filtered(decoded, particle_ctf, turn, "model")

    def _defocus(self, batch: dict):
        """Each particle's mean defocus (Å) under a CTF correction, else None."""
        if not self.uses_ctf:
            return None
        return 0.5 * (tf.cast(batch["defocus_u"], tf.float32)
                      + tf.cast(batch["defocus_v"], tf.float32))

    def _generator_losses(self, images, observed, angles, training: bool,
                          forward=lambda decoded: decoded, defocus=None) -> dict:
        """Losses of the encoder/decoder: `forward` maps the decoder's output to what `images`
        hold (the CTF with `ctf_correction="model"`); `defocus` ([B] Å, under a CTF correction)
        adds the defocus penalty."""
        encoded = self._network_encode(observed, training=training)
        reconstructions = forward(self.decode(encoded["latent"], training=training))
        out = {
            "angle_loss": losses.angle_loss(angles, encoded["angle"], self.wrap_angles),
            "reconstruction_loss": losses.reconstruction_loss(
                images, reconstructions, self.settings.reconstruction_norm),
            "adversarial_loss": -tf.reduce_mean(self.critic(reconstructions, training=training)),
        }
        s = self.settings
        out["loss"] = (s.angle_weight * out["angle_loss"]
                       + s.reconstruction_weight * out["reconstruction_loss"]
                       + s.adversarial_weight * out["adversarial_loss"])
        if defocus is not None:
            out["defocus_penalty"] = self._defocus_penalty(encoded["latent"], defocus, training)
            out["loss"] += s.defocus_decorrelation_weight * out["defocus_penalty"]
        out["angle_error_deg"] = tf.reduce_mean(tf.abs(losses.angle_difference(
            angles, encoded["angle"], self.wrap_angles))) * (180.0 / math.pi)
        out["reconstruction_mse"] = tf.reduce_mean(tf.square(images - reconstructions))
        out["reconstructions"] = reconstructions
        return out

    def _defocus_penalty(self, latent: tf.Tensor, defocus: tf.Tensor, training: bool):
        """The linear read-out R² of the defocus features from the content latents, from running
        covariances in which this batch's weigh `defocus_momentum` (the gradient flows through
        this batch's part only); a training step keeps the new running values."""
        batch = losses.batch_covariances(latent, defocus_features(defocus))
        running = []
        for variable, value in zip(self.defocus_covariances, batch):
            previous = tf.stop_gradient(tf.convert_to_tensor(variable))
            running.append(previous + self.settings.defocus_momentum * (value - previous))
            if training:
                variable.assign(tf.stop_gradient(running[-1]))
        return losses.linear_readout_r2(*running)

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
        images, observed, angles, turn = self._rotated_inputs(batch, training=True)
        images, forward = self._ctf_target(batch, images, turn)
        out = replicas.minimize(
            self.generator_optimizer,
            lambda: self._generator_losses(images, observed, angles, training=True,
                                           forward=forward, defocus=self._defocus(batch)),
            self.generator_variables)
        # The generator optimizer has just counted this step: update the critic on steps
        # 1, 1 + g, 1 + 2g, ... so the first step already trains it.
        step = self.generator_optimizer.iterations - 1
        replicas.run_if(step % self.settings.generator_steps_per_critic_step == 0,
                        self._critic_update, images, tf.stop_gradient(out["reconstructions"]))
        for name in self.generator_metrics:
            self.trackers[name].update_state(out[name])
        return {m.name: m.result() for m in self.metrics}

    def test_step(self, batch: dict) -> dict:
        images, observed, angles, turn = self._rotated_inputs(batch, training=False)
        images, forward = self._ctf_target(batch, images, turn)
        out = self._generator_losses(images, observed, angles, training=False, forward=forward,
                                     defocus=self._defocus(batch))
        fake = out["reconstructions"]
        out["wasserstein_distance"] = (tf.reduce_mean(self.critic(images))
                                       - tf.reduce_mean(self.critic(fake)))
        for name in self.generator_metrics + ("wasserstein_distance",):
            self.trackers[name].update_state(out[name])
        return {name: self.trackers[name].result()
                for name in self.generator_metrics + ("wasserstein_distance",)}


def defocus_features(defocus: tf.Tensor) -> tf.Tensor:
    """[B, 2] features of each particle's defocus ([B] Å) that the latent should not follow:
    the defocus and its square, standardised over the batch (the square so that a latent
    following |defocus - mean| is penalised too)."""
    defocus = tf.cast(defocus, tf.float32)
    centred = defocus - tf.reduce_mean(defocus)
    scaled = centred * tf.math.rsqrt(tf.reduce_mean(tf.square(centred)) + 1e-8)
    return tf.stack([scaled, tf.square(scaled)], axis=1)


def observed_particle_ctf(batch: dict) -> dict | None:
    """The CTF of a batch's `observed` particles (its CTF values are those of `image`, and
    observed = rotate(image, angle)); None when it has none."""
    particle_ctf = _particle_ctf(batch)
    if particle_ctf is None:
        return None
    return {**particle_ctf, "defocus_angle": ctf.rotated_defocus_angle(
        particle_ctf["defocus_angle"], batch["angle"])}


def _particle_ctf(batch: dict) -> dict | None:
    """The batch's per-particle CTF values, or None when it has none."""
    if not all(name in batch for name in ctf.CTF_FEATURES):
        return None
    return {name: batch[name] for name in ctf.CTF_FEATURES}
