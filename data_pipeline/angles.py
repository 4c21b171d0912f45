"""The project's angle convention, stated here once (everything else points to this module).

An in-plane angle θ is in radians, counter-clockwise positive as the image is displayed (row 0 at
the top), about the centre ((W-1)/2, (H-1)/2), so `rotate(x, π/2)` equals `np.rot90(x)`
(`data_pipeline.rotation.rotate`). A data set's `angle` is the rotation that maps its canonical
`image` to its `observed` one:

    observed = rotate(image, angle)

and a model's predicted angle means the same of its `canonical_image`. Reports and files give θ in
degrees wrapped to (-180, 180]; RELION's `rlnAnglePsi` is θ in degrees with the same sign
(`formats/star.py`, checked against `relion_project` in tests/test_relion.py).
"""
import math

import numpy as np
import tensorflow as tf


def wrap_angle(angles: tf.Tensor) -> tf.Tensor:
    """Wraps angles (radians) to (-π, π]."""
    return -(tf.math.floormod(-angles + math.pi, 2.0 * math.pi) - math.pi)


def wrap_degrees(degrees: np.ndarray | float) -> np.ndarray | float:
    """Wraps angles in degrees to (-180, 180] (numpy twin of `wrap_angle`, for files and
    reports)."""
    return 180.0 - np.mod(180.0 - np.asarray(degrees, np.float64), 360.0)


def to_degrees(angle: np.ndarray | float) -> np.ndarray | float:
    """Radians -> degrees wrapped to (-180, 180], the way reports and files give angles."""
    return wrap_degrees(np.degrees(np.asarray(angle, np.float64)))
