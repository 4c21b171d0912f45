"""The autoencoder's CTF correction (`ctf_correction=`, for data carrying each particle's CTF,
`data_pipeline.ctf.CTF_FEATURES`, whose `defocus_angle` is the astigmatism angle of `image`): one
class per mode, chosen once by name (`make_correction`).

- `NoCorrection` (`none`): the particles as they are.
- `PhaseFlip` (`phase_flip`): the encoder sees phase-flipped particles and the decoder
  reconstructs the phase-flipped canonical image.
- `ForwardModel` (`model`, cryoDRGN's): the encoder sees phase-flipped particles; the decoder
  returns the CTF-free canonical image, and the loss and the critic see it modulated by the
  particle's CTF (its astigmatism turned with the frame).

The CTF acts on raw pixel values, so it is applied about `raw_zero`, the normalised value of raw 0.
A phase-flipped particle still shows its defocus (the CTF's zeros), which the encoder would pass
into the latent: under either correction `defocus_decorrelation_weight` > 0 penalises the R² of the
best linear read-out of the particles' defocus features (`defocus_features`) from the content
latents (a linear adversary, in closed form: `losses.linear_readout_r2`), so that no linear probe
finds defocus in the latent. Its covariances are running averages over batches
(`defocus_momentum`), the correction's state, updated after the generator's step (`update`): one
batch's read-out is mostly chance (31 latents, 64 particles), and chasing it costs the latent its
content.
"""
from typing import TYPE_CHECKING, Callable, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from data_pipeline import ctf
from rotinv_tf.models import losses

if TYPE_CHECKING:  # the config names the corrections (CORRECTIONS): no import of it at run time
    from rotinv_tf.config import AutoencoderConfig

Forward = Callable[[tf.Tensor], tf.Tensor]  # a decoder output -> what the target holds
# `ctf.apply_ctf`'s padding per mode. The phase flip acts on the box itself: so it is unitary (the
# flip is its own inverse) and the noise stays white with the variance it had. Padded 2x and
# cropped, each flipped box kept a share of its noise that fell with its defocus, and the frame's
# log-likelihood followed the defocus (correlation 0.94 with defocus U on the as-picked
# relion_project stack of seed 0; on the box: 0.03) and the served latent read it more (R² 0.30
# vs 0.19); psi stayed as it was (benchmarks/README.md, "stacks as a picker leaves them"). The
# forward model pads, as a microscope's CTF spreads a particle beyond its box.
PADDING = {"phase_flip": 1, "model": 2}


class Penalty(NamedTuple):
    """A correction's term of the generator loss: its weighted loss, its metrics, and the state
    that `update` keeps after the step (None: none)."""

    loss: tf.Tensor | float
    metrics: dict
    state: object


def particle_ctf(batch: dict) -> dict | None:
    """The batch's per-particle CTF values, or None when it has none."""
    if not all(name in batch for name in ctf.CTF_FEATURES):
        return None
    return {name: batch[name] for name in ctf.CTF_FEATURES}


def observed_particle_ctf(batch: dict) -> dict | None:
    """The CTF of a batch's `observed` particles (its CTF values are those of `image`, and
    observed = rotate(image, angle)); None when it has none."""
    values = particle_ctf(batch)
    if values is None:
        return None
    return {**values, "defocus_angle": ctf.rotated_defocus_angle(values["defocus_angle"],
                                                                 batch["angle"])}


def defocus_features(defocus: tf.Tensor) -> tf.Tensor:
    """[B, 2] features of each particle's defocus ([B] Å) that the latent should not follow:
    the defocus and its square, standardised over the batch (the square so that a latent
    following |defocus - mean| is penalised too)."""
    defocus = tf.cast(defocus, tf.float32)
    centred = defocus - tf.reduce_mean(defocus)
    scaled = centred * tf.math.rsqrt(tf.reduce_mean(tf.square(centred)) + 1e-8)
    return tf.stack([scaled, tf.square(scaled)], axis=1)


class NoCorrection:
    """The particles as they are; takes no CTF values and holds no state."""

    name = "none"
    takes_ctf = False
    metrics: tuple[str, ...] = ()
    served = "the CTF was not corrected"  # what the canonical images are, for output files

    def __init__(self, image_size: int, raw_zero: float, settings: "AutoencoderConfig",
                 add_weight: Callable[..., keras.Variable]):
        pass

    def view(self, values: dict | None) -> Callable[[tf.Tensor, tf.Tensor | None], tf.Tensor]:
        """(images, turn) -> what the encoder and the frame see of particles with CTF `values`
        turned by `turn` radians (None: not turned)."""
        return lambda images, turn: images

    def target(self, values: dict | None, canonical: tf.Tensor,
               turn: tf.Tensor | None) -> tuple[tf.Tensor, Forward]:
        """(reconstruction target, forward model of a decoder output) for the `canonical`
        images, turned by `turn` from the particles whose CTF `values` are."""
        return canonical, lambda decoded: decoded

    def penalty(self, latent: tf.Tensor, values: dict | None) -> Penalty:
        """Its term of the generator loss on the content latents of particles of CTF `values`."""
        return Penalty(0.0, {}, None)

    def update(self, state: object) -> None:
        """Keeps a training step's `Penalty.state` (outside the gradient tape)."""

    @classmethod
    def refinement_pair(cls, values: dict | None, images: np.ndarray, served: dict
                        ) -> tuple[np.ndarray, np.ndarray]:
        """Serving: (particles, references) that refinement compares, alike in their CTF, from
        raw particle `images` of CTF `values` and what a SavedModel `served` for them: a learned
        frame's class template (`reference`), else the canonical images."""
        return images, served.get("reference", served["canonical_image"])


class PhaseFlip(NoCorrection):
    """Phase-flipped particles in, phase-flipped canonical images out; the defocus penalty."""

    name = "phase_flip"
    takes_ctf = True
    metrics = ("defocus_penalty",)
    served = "canonical images are phase-flipped (their CTF amplitude remains)"

    def __init__(self, image_size: int, raw_zero: float, settings: "AutoencoderConfig",
                 add_weight: Callable[..., keras.Variable]):
        self.image_size = image_size
        self.raw_zero = raw_zero
        self.weight = settings.defocus_decorrelation_weight
        self.momentum = settings.defocus_momentum
        content = settings.latent_dim - 1
        # Running covariances of the content latents and the defocus features, the model's own
        # weights (so its checkpoints keep them).
        self.covariances = [add_weight(
            shape=shape, initializer="zeros", trainable=False, aggregation="mean",
            name=name) for shape, name in (((content, content), "latent_covariance"),
                                           ((content, 2), "defocus_covariance"))]

    def filtered(self, images: tf.Tensor, values: dict, turn: tf.Tensor | None,
                 mode: str) -> tf.Tensor:
        """Normalised images through their particles' CTF (`mode` of `ctf.apply_ctf`), the images
        being the particles turned by `turn` radians (their astigmatism turns with them)."""
        if turn is not None:
            values = {**values, "defocus_angle": ctf.rotated_defocus_angle(
                values["defocus_angle"], turn)}
        images = tf.ensure_shape(images, [None, self.image_size, self.image_size, 1])
        return ctf.apply_ctf(images - self.raw_zero, values, mode,
                             pad_factor=PADDING[mode]) + self.raw_zero

    def view(self, values: dict | None) -> Callable[[tf.Tensor, tf.Tensor | None], tf.Tensor]:
        if values is None:
            raise ValueError(f"a model with ctf_correction {self.name!r} needs each "
                             f"particle's {', '.join(ctf.CTF_FEATURES)}")
        return lambda images, turn: self.filtered(images, values, turn, "phase_flip")

    def target(self, values: dict | None, canonical: tf.Tensor,
               turn: tf.Tensor | None) -> tuple[tf.Tensor, Forward]:
        return self.filtered(canonical, values, turn, "phase_flip"), lambda decoded: decoded

    def penalty(self, latent: tf.Tensor, values: dict | None) -> Penalty:
        """The linear read-out R² of the defocus features (of each particle's mean defocus) from
        the content latents, from running covariances in which this batch's weigh the momentum
        (the gradient flows through this batch's part only); their new values are the state."""
        defocus = 0.5 * (tf.cast(values["defocus_u"], tf.float32)
                         + tf.cast(values["defocus_v"], tf.float32))
        batch = losses.batch_covariances(latent, defocus_features(defocus))
        running = []
        for variable, value in zip(self.covariances, batch):
            previous = tf.stop_gradient(tf.convert_to_tensor(variable))
            running.append(previous + self.momentum * (value - previous))
        r2 = losses.linear_readout_r2(*running)
        return Penalty(self.weight * r2, {"defocus_penalty": r2},
                       [tf.stop_gradient(value) for value in running])

    def update(self, state: list) -> None:
        for variable, value in zip(self.covariances, state):
            variable.assign(value)

    @classmethod
    def refinement_pair(cls, values: dict | None, images: np.ndarray, served: dict
                        ) -> tuple[np.ndarray, np.ndarray]:
        """The particles phase-flipped, as the references are (a learned frame's template is
        an average of particles as the frame sees them: flipped)."""
        flipped = ctf.apply_ctf(images.astype(np.float32), values, "phase_flip",
                                pad_factor=PADDING["phase_flip"])
        return flipped.numpy(), served.get("reference", served["canonical_image"])


class ForwardModel(PhaseFlip):
    """Phase-flipped particles in, CTF-free canonical images out, seen by the loss and the critic
    through each particle's CTF; the defocus penalty."""

    name = "model"
    served = "canonical images are CTF-free (the CTF was in the model's forward model)"

    def target(self, values: dict | None, canonical: tf.Tensor,
               turn: tf.Tensor | None) -> tuple[tf.Tensor, Forward]:
        return canonical, lambda decoded: self.filtered(decoded, values, turn, "model")

    @classmethod
    def refinement_pair(cls, values: dict | None, images: np.ndarray, served: dict
                        ) -> tuple[np.ndarray, np.ndarray]:
        """A learned frame's (flipped) template against flipped particles; otherwise the
        particles against their CTF-free canonical images through each one's CTF (its
        astigmatism turned into the canonical frame by the served angle)."""
        if "reference" in served:
            return super().refinement_pair(values, images, served)
        turned = {**values, "defocus_angle": ctf.rotated_defocus_angle(
            values["defocus_angle"], -served["angle"])}
        return images, ctf.apply_ctf(served["canonical_image"], turned, "model",
                                     pad_factor=PADDING["model"]).numpy()


CORRECTIONS = {c.name: c for c in (NoCorrection, PhaseFlip, ForwardModel)}


def make_correction(image_size: int, raw_zero: float, settings: "AutoencoderConfig",
                    add_weight: Callable[..., keras.Variable]) -> NoCorrection:
    """The correction `settings.ctf_correction` names (resolved: no `auto`); `add_weight`
    makes its state the model's weights."""
    return CORRECTIONS[settings.ctf_correction](image_size, raw_zero, settings, add_weight)
