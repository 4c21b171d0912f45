"""Class outputs of `canonicalize` for a model that classifies (a learned frame's grades,
`rotinv_tf.pose.template_frame.CLASS_OUTPUTS`), laid out as RELION's 2D classification writes them,
so its tools read them and users select classes as they do after a RELION run.

- Per particle, in the STAR file (`COLUMNS`): `rlnClassNumber` (1-based, the most probable
  class), `rlnMaxValueProbDistribution` (the assignment probability: its class's probability
  times 1 - its flip probability, so 180°-ambiguous particles rank lowest),
  `rlnLogLikeliContribution` (the log marginal likelihood up to a constant shared by all
  particles: low = junk) and `rlnRotinvFlipProbability` (the posterior mass near the particle's
  angle + 180°; RELION keeps this column of ours, with a warning, through its tools).
- `<stem>_classes.mrcs` beside the STAR file: the class averages, each class's particles turned
  into the frame by their written angle (and shift) and averaged, in input units, as RELION's class
  averages are; class k at position k, an empty or unkept class a zero image.
- `<stem>_model.star`: RELION's `data_model_general` and `data_model_classes` (`rlnReferenceImage`
  = `000001@<classes.mrcs>`, `rlnClassDistribution` and `rlnParticleNumber`: the share and count
  of the written particles in each class). A STAR file named `<x>_data.star` gets `<x>_model.star`
  and `<x>_classes.mrcs`, so RELION's Select job, which finds `_data.star` beside `_model.star`,
  pairs them.
- `<stem>_particles.star`: the same rows for the input's own particles (their names and optics,
  as read), as RELION's 2D classification `_data.star` holds them: what a selection of classes is
  trained or canonicalized again from (the main STAR's rows name the canonical images).
- Comment lines at the top of the STAR files: what the columns mean, per class its particles and
  the share flagged as 180°-ambiguous (flip probability > `FLIP_FLAG`), and, for a class whose
  average correlates > `NEAR_SYMMETRIC` with its own 180° turn, a line saying its angles may be
  180° off (a template close to its own turn gives its particles two nearly equal angles; issue 30).
"""
import os
from typing import Sequence

import numpy as np
import tensorflow as tf

from data_pipeline.formats import star
from data_pipeline.formats.mrc import StackWriter
from data_pipeline.particle_star import relion_path
from data_pipeline.rotation import inscribed_disc, recentred, rotate
from rotinv_tf.pose.template_frame import FLIP_WINDOW_DEGREES, NEAR_SYMMETRIC

FLIP_COLUMN = "rlnRotinvFlipProbability"
COLUMNS = (star.CLASS_NUMBER, star.MAX_PROBABILITY, star.LOG_LIKELIHOOD, FLIP_COLUMN)
FLIP_FLAG = 0.3  # flip probability above which a particle is flagged 180°-ambiguous


def class_paths(star_path: str) -> tuple[str, str, str]:
    """(class averages stack, model STAR, particles STAR) beside the STAR file `star_path`
    (module docstring)."""
    stem = os.path.splitext(os.path.abspath(star_path))[0].removesuffix("_data")
    return stem + "_classes.mrcs", stem + "_model.star", stem + "_particles.star"


def parse_selection(text: str) -> tuple[int, ...]:
    """`1,3` -> (1, 3): 1-based class numbers; ValueError for anything else."""
    try:
        numbers = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise ValueError(f"classes must be comma-separated numbers, e.g. 1,3; got {text!r}") \
            from None
    if not numbers or numbers[0] < 1:
        raise ValueError(f"classes are numbered from 1; got {text!r}")
    return numbers


def recentred_particles(particles: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Particles [B, N, N] moved back by their `offsets` [B, 2] pixels (`rotation.recentred`)."""
    return recentred(tf.constant(particles[..., None], tf.float32), offsets).numpy()[..., 0]


def turned_into_frame(images: np.ndarray, angles: np.ndarray,
                      shifts: np.ndarray | None) -> np.ndarray:
    """Particles [B, N, N] moved back by their `shifts` [B, 2] (pixels, `data_pipeline.rotation`'s
    offsets; None: none) and turned by -`angles` about their means (edges and corners take each
    one's mean, not 0), [B, N, N]."""
    if shifts is not None:
        images = recentred_particles(images, shifts)
    mean = images.mean(axis=(1, 2), keepdims=True)
    turned = rotate(tf.constant((images - mean)[..., None], tf.float32),
                    -tf.constant(angles, tf.float32))
    return turned.numpy()[..., 0] + mean


def turn_correlation(image: np.ndarray) -> float:
    """Pearson correlation of `image` [N, N] with itself turned by 180° (about the rotation
    centre, `data_pipeline.rotation`), over the disc of radius N/2 - 1; 1 for a symmetric image."""
    size = image.shape[0]
    disc = inscribed_disc(size, size / 2 - 1)
    a, b = image[disc], image[::-1, ::-1][disc]
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


class ClassSummary:
    """Gathers, batch by batch, what the class outputs need: per class its particles, flagged
    ones and the sum of its written particles turned into the frame; then writes them."""

    def __init__(self, num_classes: int, image_size: int,
                 selection: Sequence[int] | None = None):
        """`selection`: the 1-based classes kept (None: all), each <= `num_classes`."""
        self.num_classes = num_classes
        self.kept = np.ones(num_classes, bool)
        if selection is not None:
            self.kept[:] = False
            self.kept[np.asarray(selection) - 1] = True
        self.selection = selection
        self.counts = np.zeros(num_classes, np.int64)  # every particle, kept or not
        self.flagged = np.zeros(num_classes, np.int64)
        self.sums = np.zeros((num_classes, image_size, image_size))

    def add(self, grades: dict[str, np.ndarray], images: np.ndarray, angles: np.ndarray,
            shifts: np.ndarray | None) -> tuple[np.ndarray, dict[str, list[str]]]:
        """One batch: (which particles are kept [B] bool, their `COLUMNS` values as strings)."""
        classes = np.argmax(grades["class_probabilities"], axis=1)
        flip = np.asarray(grades["flip_probability"], np.float64)
        np.add.at(self.counts, classes, 1)
        np.add.at(self.flagged, classes, flip > FLIP_FLAG)
        kept = self.kept[classes]
        if kept.any():
            np.add.at(self.sums, classes[kept], turned_into_frame(
                images[kept], angles[kept], None if shifts is None else shifts[kept]))
        values = {star.CLASS_NUMBER: [str(k + 1) for k in classes[kept]],
                  star.MAX_PROBABILITY: [f"{p:.6f}" for p in
                                         grades["assignment_probability"][kept]],
                  star.LOG_LIKELIHOOD: [f"{v:.6f}" for v in grades["log_likelihood"][kept]],
                  FLIP_COLUMN: [f"{p:.6f}" for p in flip[kept]]}
        return kept, values

    @property
    def written(self) -> np.ndarray:
        """Particles written per class [K] (0 for an unkept class)."""
        return np.where(self.kept, self.counts, 0)

    def averages(self) -> np.ndarray:
        """Class averages [K, N, N] (zeros for an empty or unkept class)."""
        return self.sums / np.maximum(self.written, 1)[:, None, None]

    def comments(self) -> list[str]:
        """The STAR file's comment lines on the classes (module docstring)."""
        total = int(self.counts.sum())
        lines = [f"rotinv_tf: {star.CLASS_NUMBER} is the learned frame's most probable class, "
                 f"{star.MAX_PROBABILITY} the probability that its class and orientation are "
                 f"right (class probability x (1 - {FLIP_COLUMN}): lowest for 180-deg-ambiguous "
                 f"particles), {star.LOG_LIKELIHOOD} the log marginal likelihood up to a "
                 f"constant shared by all particles (low = junk), {FLIP_COLUMN} the class's "
                 f"posterior mass within {FLIP_WINDOW_DEGREES:g} deg of the best angle + 180"]
        if self.selection is not None:
            lines.append(f"rotinv_tf: kept classes {','.join(map(str, self.selection))} "
                         f"(--select_classes): {int(self.written.sum())} of {total} particles")
        averages = self.averages()
        for k in range(self.num_classes):
            count = int(self.counts[k])
            flagged = self.flagged[k] / max(count, 1)
            lines.append(f"rotinv_tf: class {k + 1}: {count} particles "
                         f"({100 * count / max(total, 1):.1f}%), {100 * flagged:.1f}% flagged "
                         f"180-deg ambiguous ({FLIP_COLUMN} > {FLIP_FLAG:g})"
                         f"{'' if self.kept[k] else ', not kept'}")
            if self.written[k] and (turn := turn_correlation(averages[k])) > NEAR_SYMMETRIC:
                lines.append(f"rotinv_tf: class {k + 1}'s average correlates {turn:.2f} with its "
                             f"own 180-deg turn (> {NEAR_SYMMETRIC:g}): its particles' "
                             f"{star.ANGLE_PSI} may be 180 deg off; select on "
                             f"{star.MAX_PROBABILITY} or {FLIP_COLUMN}, or drop the class")
        return lines

    def write(self, star_path: str, pixel_size: float) -> tuple[str, str]:
        """Writes the class averages and the model STAR beside `star_path`; their paths."""
        classes_path, model_path, _ = class_paths(star_path)
        size = self.sums.shape[1]
        with StackWriter(classes_path, self.num_classes, size, size, pixel_size) as writer:
            writer.write(0, self.averages().astype(np.float32))
        general = star.StarBlock(
            columns=["rlnReferenceDimensionality", "rlnDataDimensionality",
                     "rlnOriginalImageSize", "rlnPixelSize", "rlnNrClasses"],
            rows=[["2", "2", str(size), f"{pixel_size:.6f}", str(self.num_classes)]], loop=False)
        written = self.written
        name = relion_path(classes_path)
        table = star.StarBlock(
            columns=[star.REFERENCE_IMAGE, star.CLASS_DISTRIBUTION, star.PARTICLE_COUNT],
            rows=[[star.image_name(k + 1, name), f"{written[k] / max(written.sum(), 1):.6f}",
                   str(int(written[k]))] for k in range(self.num_classes)])
        star.write_star(model_path, {"model_general": general, "model_classes": table},
                        comments=[f"rotinv_tf: class averages of {relion_path(star_path)}"])
        return classes_path, model_path
