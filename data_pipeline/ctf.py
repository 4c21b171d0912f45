"""The microscope's contrast transfer function (CTF), with RELION's conventions, in TensorFlow.

One implementation for the simulator (which writes CTF-modulated particles) and the model (whose
forward model modulates its CTF-free reconstruction, `rotinv_tf.models.autoencoder`).

RELION's CTF (`src/ctf.h`, `CTF::getCTF`), at spatial frequency k = (kx, ky) in 1/Å, kx along image
columns and ky along rows:

    Δf(k) = (U + V)/2 + (U - V)/2 · cos 2(atan2(ky, kx) - angle)     (U, V: defocus in Å, underfocus
    γ(k)  = π λ Δf k² - π/2 Cs λ³ k⁴                                  positive; angle in degrees)
    CTF   = sin(γ + asin A) = sqrt(1 - A²) sin γ + A cos γ            (A: amplitude contrast)

so U is the defocus along the direction `angle` (from the column axis towards the row axis) and the
CTF is positive at low frequency: particles keep their polarity. λ is the relativistic electron
wavelength at the voltage (kV), Cs is in mm. `tests/test_ctf.py` checks this against
`relion_project --ctf` (fixture `tests/data/relion_ctf/`).

Modes of `apply_ctf`: `model` multiplies a spectrum by the CTF (the microscope's forward model);
`phase_flip` by its sign (undoes the contrast reversals, the classical correction).
"""
import dataclasses
import math

import numpy as np
import tensorflow as tf

MODES = ("model", "phase_flip")
# A particle's CTF values as data sets carry them: RELION's rlnDefocusU, rlnDefocusV (Å) and
# rlnDefocusAngle (degrees).
CTF_FEATURES = ("defocus_u", "defocus_v", "defocus_angle")


def electron_wavelength(voltage_kv: float) -> float:
    """Relativistic electron wavelength in Å at an accelerating voltage in kV (RELION's formula)."""
    volts = voltage_kv * 1e3
    return 12.2643247 / math.sqrt(volts * (1 + volts * 0.978466e-6))


@dataclasses.dataclass(frozen=True)
class Optics:
    """A RELION optics group's CTF values: voltage (kV), spherical aberration Cs (mm), amplitude
    contrast (fraction) and the image pixel size (Å)."""

    voltage: float = 300.0
    spherical_aberration: float = 2.7
    amplitude_contrast: float = 0.1
    pixel_size: float = 1.0

    def __post_init__(self):
        if not (self.voltage > 0 and self.pixel_size > 0 and self.spherical_aberration >= 0
                and 0 <= self.amplitude_contrast <= 1):
            raise ValueError(f"invalid optics {self}: need voltage > 0, pixel_size > 0, Cs >= 0 "
                             f"and 0 <= amplitude_contrast <= 1")


def _frequencies(size: int, pixel_size: float, dtype) -> tuple[np.ndarray, np.ndarray]:
    """(ky [size, 1], kx [1, size // 2 + 1]) in 1/Å on an `rfft2` grid of a size x size image."""
    ky = np.fft.fftfreq(size, d=pixel_size)[:, None]
    kx = np.fft.rfftfreq(size, d=pixel_size)[None, :]
    return ky.astype(dtype), kx.astype(dtype)


def ctf_grid(defocus_u: tf.Tensor, defocus_v: tf.Tensor, defocus_angle: tf.Tensor, size: int,
             optics: Optics, dtype=tf.float32) -> tf.Tensor:
    """CTFs [B, size, size // 2 + 1] on the `rfft2` grid of size x size images, one per particle
    (defocus_u, defocus_v in Å and defocus_angle in degrees, each [B])."""
    np_dtype = dtype.as_numpy_dtype
    ky, kx = _frequencies(size, optics.pixel_size, np_dtype)
    k2 = ky**2 + kx**2
    direction = np.arctan2(ky, kx)
    u, v, angle = (tf.cast(x, dtype)[:, None, None]
                   for x in (defocus_u, defocus_v, defocus_angle))
    defocus = 0.5 * (u + v) + 0.5 * (u - v) * tf.cos(2.0 * (direction - angle * (math.pi / 180)))
    wavelength = electron_wavelength(optics.voltage)
    cs = optics.spherical_aberration * 1e7
    gamma = math.pi * wavelength * defocus * k2 - 0.5 * math.pi * cs * wavelength**3 * k2**2
    return tf.sin(gamma + math.asin(optics.amplitude_contrast))


def apply_ctf(images: tf.Tensor, defocus_u: tf.Tensor, defocus_v: tf.Tensor,
              defocus_angle: tf.Tensor, optics: Optics, mode: str = "model",
              pad_factor: int = 1) -> tf.Tensor:
    """Images [B, N, N] or [B, N, N, C] filtered by each particle's CTF (`mode` in `MODES`).

    `pad_factor` > 1 zero-pads to that many times the size first, so the CTF's spread does not wrap
    around the box (what a microscope does); 1 filters on the box itself (what `relion_project`
    does)."""
    if mode not in MODES:
        raise ValueError(f"unknown CTF mode {mode!r}; expected one of {MODES}")
    images = tf.convert_to_tensor(images)
    channels = images.shape.rank == 4
    planes = tf.transpose(images, [0, 3, 1, 2]) if channels else images  # FFT on the last axes
    size = images.shape[1]
    padded = pad_factor * size
    real_dtype = tf.float64 if images.dtype == tf.float64 else tf.float32
    ctf = ctf_grid(defocus_u, defocus_v, defocus_angle, padded, optics, real_dtype)
    if mode == "phase_flip":
        ctf = tf.where(ctf < 0, -tf.ones_like(ctf), tf.ones_like(ctf))
    if channels:
        ctf = ctf[:, None]
    pad = [[0, 0]] * (planes.shape.rank - 2) + [[0, padded - size]] * 2
    spectrum = tf.signal.rfft2d(tf.pad(tf.cast(planes, real_dtype), pad))
    filtered = tf.signal.irfft2d(spectrum * tf.cast(ctf, spectrum.dtype),
                                 fft_length=[padded, padded])[..., :size, :size]
    filtered = tf.transpose(filtered, [0, 2, 3, 1]) if channels else filtered
    return tf.cast(filtered, images.dtype)


def rotated_defocus_angle(defocus_angle: tf.Tensor, rotation: tf.Tensor) -> tf.Tensor:
    """The astigmatism angle (degrees) of a particle's image after `rotation.rotate` turned it by
    `rotation` radians (counter-clockwise as displayed, i.e. from the row axis towards the column
    axis, the opposite of RELION's angle): angle - rotation in degrees."""
    return tf.cast(defocus_angle, tf.float32) - tf.cast(rotation, tf.float32) * (180 / math.pi)
