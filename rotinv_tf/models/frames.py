"""The autoencoder's frame (`frame=`): where each training particle's canonical image and angle
come from, one class per mode, chosen once by name (`make_frame`).

- `SupervisedFrame` (the paper's): the data's canonical images, or angles, define the frame; it
  holds no state.
- `LearnedFrame`, for stacks whose angles nobody knows: a `TemplateFrame` learns the canonical frame
  by online EM during training (`rotinv_tf.pose.template_frame`), and its frame angles and offsets
  stand in for the missing ones; it serves its grades, features and class templates.

A frame sees the particles as the CTF correction shows them to the encoder: a `View`, (images,
turn of the images from the batch's `image`) -> the encoder's view (`ctf_corrections`). A step
calls `update` (the frame's own explicit step: the learned frame's EM step) and then
`training_inputs`; `encode` is what a frame serves.
"""
import math
from typing import TYPE_CHECKING, Callable, NamedTuple

import keras
import tensorflow as tf

from data_pipeline.angles import wrap_angle
from data_pipeline.rotation import recentred, rotate, rotated_offsets, sample_angles
from rotinv_tf.models import replicas
from rotinv_tf.pose.frame_features import FrameFeatures
from rotinv_tf.pose.template_frame import OFFSET, TemplateFrame

if TYPE_CHECKING:  # the config names the frames (FRAMES): no import of it at run time
    from rotinv_tf.config import AutoencoderConfig

View = Callable[[tf.Tensor, tf.Tensor | None], tf.Tensor]
NetworkEncode = Callable[[tf.Tensor], dict]  # encoder view -> {"latent", "angle"}


class Inputs(NamedTuple):
    """One step's inputs: the canonical images (before the CTF correction's target), what the
    encoder sees, the angles it must predict, and the turn (radians) of `canonical` from the
    batch's `image`, whose CTF turns with it (None: not turned)."""

    canonical: tf.Tensor
    observed: tf.Tensor
    angles: tf.Tensor
    turn: tf.Tensor | None


class Pose(NamedTuple):
    """What a learned frame's step found: the particles as it saw them, their frame angles [B]
    and offsets [B, 2] (before the step's update)."""

    view: tf.Tensor
    angles: tf.Tensor
    offsets: tf.Tensor


def quarter_turned(images: tf.Tensor, angles: tf.Tensor, seed: keras.random.SeedGenerator
                   ) -> tuple[tf.Tensor, tf.Tensor]:
    """Each image turned by its own random k·90° (exact pixel moves), its angle by kπ/2."""
    turns = replicas.draw(lambda n: keras.random.randint([n], 0, 4, seed=seed),
                          tf.shape(angles)[0])
    all_turns = tf.stack([tf.image.rot90(images, k) for k in range(4)], axis=1)
    return (tf.gather(all_turns, turns, axis=1, batch_dims=1),
            wrap_angle(angles + tf.cast(turns, tf.float32) * (math.pi / 2)))


class SupervisedFrame:
    """The data's frame: the batch's `observed`/`angle` (turned further by random quarter turns
    when `augment_quarter_turns`), or its `image` rotated here by angles drawn from
    `angle_distribution`/`angle_scale`."""

    name = "supervised"
    served = "defined by the canonical images or angles it was trained with"  # for output files
    layers: dict[str, keras.layers.Layer] = {}
    start_particles = 0
    finish_particles = 0

    def __init__(self, image_size: int, settings: "AutoencoderConfig", angle_distribution: str,
                 angle_scale: float, xla_compatible: Callable[[], bool]):
        self.augment = settings.augment_quarter_turns
        self.angle_distribution = angle_distribution
        self.angle_scale = angle_scale
        self.xla_compatible = xla_compatible

    def update(self, batch: dict, view: View, seed: keras.random.SeedGenerator) -> None:
        """No state to update."""
        return None

    def training_inputs(self, batch: dict, view: View, pose: None,
                        seed: keras.random.SeedGenerator) -> Inputs:
        return self._inputs(batch, view, seed, self.augment)

    def evaluation_inputs(self, batch: dict, view: View,
                          seed: keras.random.SeedGenerator) -> Inputs:
        return self._inputs(batch, view, seed, False)

    def _inputs(self, batch: dict, view: View, seed: keras.random.SeedGenerator,
                augment: bool) -> Inputs:
        images = batch["image"]
        if "observed" in batch and "angle" in batch:
            observed, angles = batch["observed"], batch["angle"]
            if augment:
                observed, angles = quarter_turned(observed, angles, seed)
        else:
            angles = replicas.draw(lambda n: sample_angles(
                n, self.angle_distribution, self.angle_scale, seed), tf.shape(images)[0])
            observed = rotate(images, angles, xla_compatible=self.xla_compatible())
        return Inputs(images, view(observed, angles), angles, None)

    def encode(self, images: tf.Tensor, network_encode: NetworkEncode) -> dict:
        """The network's latent and angle of the encoder's view `images`."""
        return network_encode(images)

    def start(self, images: tf.Tensor, seed: int = 0) -> None:
        raise ValueError("only a learned frame has templates to start")

    def finish(self, images: tf.Tensor, chunk: int = 256) -> dict[int, float]:
        raise ValueError("only a learned frame is finished after training")


class LearnedFrame:
    """The frame of a `TemplateFrame` (`frame_angles` polar bins, EM momentum `frame_momentum`,
    `frame_classes` templates, offsets d within `frame_max_shift` pixels in `frame_shift_step`
    steps): the particle moved by -d and turned by -θ is its canonical image, θ its angle and d
    its offset; the network sees the particle re-centred. Serves `FrameFeatures` too. Particles
    come with their angles only in evaluation (`angle_distribution`, `angle_scale` unused)."""

    name = "learned"
    served = "learned from the particles without angles (an arbitrary rotation of any other frame)"

    def __init__(self, image_size: int, settings: "AutoencoderConfig", angle_distribution: str,
                 angle_scale: float, xla_compatible: Callable[[], bool]):
        s = settings
        self.template_frame = TemplateFrame(image_size, s.frame_angles, s.frame_momentum,
                                            s.frame_classes, s.frame_max_shift,
                                            s.frame_shift_step)
        self.frame_features = FrameFeatures(image_size, s.frame_classes, s.feature_axes,
                                            s.feature_mask_radius, s.feature_class_weight)
        # The model tracks (and checkpoints) these under their names.
        self.layers = {"template_frame": self.template_frame,
                       "frame_features": self.frame_features}
        self.augment = s.augment_quarter_turns
        self.shifts = bool(s.frame_max_shift)
        # Several templates start from classical alignment (`start`) of this many particles.
        self.start_particles = s.frame_start_particles if s.frame_classes > 1 else 0
        self.finish_particles = s.feature_fit_particles
        self.xla_compatible = xla_compatible

    def update(self, batch: dict, view: View, seed: keras.random.SeedGenerator) -> Pose:
        """One EM step on the batch's particles as the encoder sees them (flipped once under a
        CTF correction: a quarter turn moves pixels exactly, so turning the flipped particle is
        flipping the turned one)."""
        framed = view(batch["image"], None)
        angles, offsets = tf.nest.map_structure(
            tf.stop_gradient, self.template_frame.update(framed, seed))
        return Pose(framed, angles, offsets)

    def training_inputs(self, batch: dict, view: View, pose: Pose,
                        seed: keras.random.SeedGenerator) -> Inputs:
        """The particle at frame angle θ and offset d, re-centred, is `observed`; the canonical
        image is that turned by -θ."""
        observed, angles = self._centred(pose.view, pose.offsets), pose.angles
        if self.augment:
            observed, angles = quarter_turned(observed, angles, seed)
        return Inputs(self._derotated(batch["image"], pose.angles, pose.offsets), observed,
                      angles, -pose.angles)

    def evaluation_inputs(self, batch: dict, view: View,
                          seed: keras.random.SeedGenerator) -> Inputs:
        """Evaluation batches (observed = rotate(image, angle)) get angle + θ, re-centred by d
        turned by the angle; the frame is not updated."""
        weights, offsets = self.template_frame.posterior(view(batch["image"], None))
        theta = self.template_frame.angles(weights)[0]
        observed = self._centred(view(batch["observed"], batch["angle"]),
                                 rotated_offsets(offsets, batch["angle"]))
        return Inputs(self._derotated(batch["image"], theta, offsets), observed,
                      wrap_angle(batch["angle"] + theta), -theta)

    def encode(self, images: tf.Tensor, network_encode: NetworkEncode) -> dict:
        """The frame's angle (its EM templates' posterior mean) and the encoder's latent of the
        particle turned into the frame, with the served extras (`RotationInvariantAutoencoder.
        encode`): features, reference, the frame's grades and offset, network_angle."""
        framed, angle, assessment = self._framed(images)
        classes = assessment["class_probabilities"]
        encoded = network_encode(framed)
        encoded["network_angle"] = network_encode(
            self._centred(images, assessment.get(OFFSET)))["angle"]
        encoded["angle"] = angle
        encoded["features"] = self.frame_features.features(framed, classes)
        encoded["reference"] = tf.gather(self.template_frame.images(),
                                         tf.argmax(classes, axis=1, output_type=tf.int32))
        return {**encoded, **assessment}

    def start(self, images: tf.Tensor, seed: int = 0) -> None:
        """Its templates start from classical alignment of the particles as it sees them
        (`TemplateFrame.start_classical`), before training."""
        self.template_frame.start_classical(images, seed=seed)

    def finish(self, images: tf.Tensor, chunk: int = 256) -> dict[int, float]:
        """After training, on particles as it sees them: splits by orientation the classes whose
        particles took both of a near-symmetric template's orientations
        (`TemplateFrame.break_symmetry`, whose result it returns), then fits the features in the
        frame that leaves."""
        turned = self.template_frame.break_symmetry(images)
        framed = [self._framed(images[i:i + chunk])[0]
                  for i in range(0, int(tf.shape(images)[0]), chunk)]
        self.frame_features.fit(tf.concat(framed, 0).numpy())
        return turned

    def _framed(self, images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, dict]:
        """(the particles re-centred by their offsets and turned into the frame, their frame
        angles [B], the frame's grades and offsets, `TemplateFrame.assessment`)."""
        weights, assessment = self.template_frame.assessment(images)
        angle = self.template_frame.angles(weights)[0]
        return self._derotated(images, angle, assessment.get(OFFSET)), angle, assessment

    def _derotated(self, images: tf.Tensor, angles: tf.Tensor,
                   offsets: tf.Tensor | None = None) -> tf.Tensor:
        """Images moved back by their `offsets` and turned by -`angles` about each one's mean,
        so the edges and corners a move or rotation leaves empty take the background's level
        rather than 0 (the stack's minimum after normalisation)."""
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        images = self._centred(images, offsets)
        return rotate(images - mean, -angles, xla_compatible=self.xla_compatible()) + mean

    def _centred(self, images: tf.Tensor, offsets: tf.Tensor | None) -> tf.Tensor:
        """Images moved back by their `offsets` [B, 2] pixels (the particle to the box centre),
        the edge taking each one's mean; as they are without an offset search."""
        if offsets is None or not self.shifts:
            return images
        return recentred(images, offsets, xla_compatible=self.xla_compatible())


FRAMES = {"supervised": SupervisedFrame, "learned": LearnedFrame}


def make_frame(image_size: int, settings: "AutoencoderConfig", angle_distribution: str,
               angle_scale: float, xla_compatible: Callable[[], bool]
               ) -> SupervisedFrame | LearnedFrame:
    """The frame `settings.frame` names (resolved: no `auto`); `angle_distribution`,
    `angle_scale` (radians): how training images without angles are rotated; `xla_compatible`:
    whether the model's steps are compiled by XLA."""
    return FRAMES[settings.frame](image_size, settings, angle_distribution, angle_scale,
                                  xla_compatible)
