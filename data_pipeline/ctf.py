"""The microscope's contrast transfer function (CTF), with RELION's conventions, in TensorFlow.

One implementation for the simulator (which writes CTF-modulated particles) and the model (whose
forward model modulates its CTF-free reconstruction, `rotinv_tf.models.autoencoder`).

Every particle carries its whole CTF (`CTF_FEATURES`, RELION's units): defocus U, V (Å, underfocus
positive), the astigmatism angle (degrees), the phase shift φ (degrees, rlnPhaseShift: a phase
plate), and its optics group's voltage (kV), spherical aberration Cs (mm), amplitude contrast A
(fraction) and pixel size p (Å). RELION's CTF (`src/ctf.h`, `CTF::getCTF`:
-sin(K1 Δf k² + K2 k⁴ - K5 - K3) with Δf negative for underfocus, K5 = φ and K3 = asin A), at
spatial frequency k = (kx, ky) = fftfreq / p in 1/Å, kx along image columns and ky along rows:

    Δf(k) = (U + V)/2 + (U - V)/2 · cos 2(atan2(ky, kx) - angle)
    γ(k)  = π λ Δf k² - π/2 Cs λ³ k⁴
    CTF   = sin(γ + asin A + φ)

so U is the defocus along the direction `angle` (from the column axis towards the row axis) and,
without phase shift, the CTF is positive at low frequency: particles keep their polarity. λ is the
relativistic electron wavelength at the voltage (`electron_wavelength`). `tests/test_ctf.py`
checks this against `relion_project --ctf` (fixtures `tests/data/relion_ctf/`, one optics group,
and `tests/data/relion_ctf_groups/`, two groups and phase shifts).

Modes of `apply_ctf`: `model` multiplies a spectrum by the CTF (the microscope's forward model);
`phase_flip` by its sign (undoes the contrast reversals, the classical correction).
"""
import dataclasses
import math
from typing import Mapping

import numpy as np
import tensorflow as tf

MODES = ("model", "phase_flip")
# A particle's CTF as data sets carry it, each [B], in RELION's units (module docstring):
# rlnDefocusU, rlnDefocusV (Å), rlnDefocusAngle, rlnPhaseShift (degrees), and its optics group's
# rlnVoltage (kV), rlnSphericalAberration (mm), rlnAmplitudeContrast, rlnImagePixelSize (Å).
CTF_FEATURES = ("defocus_u", "defocus_v", "defocus_angle", "phase_shift", "voltage",
                "spherical_aberration", "amplitude_contrast", "pixel_size")


def electron_wavelength(voltage_kv: float | np.ndarray | tf.Tensor
                        ) -> float | np.ndarray | tf.Tensor:
    """Relativistic electron wavelength in Å at an accelerating voltage in kV (RELION's formula),
    elementwise for an array or a tensor."""
    volts = voltage_kv * 1e3
    return 12.2643247 / (volts * (1 + volts * 0.978466e-6)) ** 0.5


@dataclasses.dataclass(frozen=True)
class Optics:
    """A RELION optics group's CTF values: voltage (kV), spherical aberration Cs (mm), amplitude
    contrast (fraction) and the image pixel size (Å). The one place these values are checked."""

    voltage: float = 300.0
    spherical_aberration: float = 2.7
    amplitude_contrast: float = 0.1
    pixel_size: float = 1.0

    def __post_init__(self):
        if not (self.voltage > 0 and self.pixel_size > 0 and self.spherical_aberration >= 0
                and 0 <= self.amplitude_contrast <= 1):
            raise ValueError(f"invalid optics {self}: need voltage > 0, pixel_size > 0, Cs >= 0 "
                             f"and 0 <= amplitude_contrast <= 1")


def particle_ctf(defocus_u: np.ndarray, defocus_v: np.ndarray, defocus_angle: np.ndarray,
                 optics: Optics, phase_shift: np.ndarray | float = 0.0) -> dict[str, np.ndarray]:
    """The per-particle CTF (float32 [B] arrays keyed by `CTF_FEATURES`) of particles imaged in
    one optics group."""
    values = dict(defocus_u=defocus_u, defocus_v=defocus_v, defocus_angle=defocus_angle,
                  phase_shift=phase_shift, **dataclasses.asdict(optics))
    count = len(np.atleast_1d(defocus_u))
    return {name: np.broadcast_to(np.asarray(values[name], np.float32), (count,)).copy()
            for name in CTF_FEATURES}


def ctf_grid(particle_ctf: Mapping[str, tf.Tensor], size: int, dtype=tf.float32) -> tf.Tensor:
    """CTFs [B, size, size // 2 + 1] on the `rfft2` grid of size x size images, one per particle
    (`particle_ctf`: the `CTF_FEATURES`, each [B])."""
    np_dtype = dtype.as_numpy_dtype
    ky = np.fft.fftfreq(size)[:, None].astype(np_dtype)  # cycles per pixel
    kx = np.fft.rfftfreq(size)[None, :].astype(np_dtype)
    direction = np.arctan2(ky, kx)
    c = {name: tf.cast(particle_ctf[name], dtype)[:, None, None] for name in CTF_FEATURES}
    k2 = (ky**2 + kx**2) / c["pixel_size"]**2  # 1/Å²
    u, v = c["defocus_u"], c["defocus_v"]
    angle = c["defocus_angle"] * (math.pi / 180)
    defocus = 0.5 * (u + v) + 0.5 * (u - v) * tf.cos(2.0 * (direction - angle))
    wavelength = electron_wavelength(c["voltage"])
    cs = c["spherical_aberration"] * 1e7  # Å
    gamma = math.pi * wavelength * defocus * k2 - 0.5 * math.pi * cs * wavelength**3 * k2**2
    return tf.sin(gamma + tf.asin(c["amplitude_contrast"]) + c["phase_shift"] * (math.pi / 180))


def apply_ctf(images: tf.Tensor, particle_ctf: Mapping[str, tf.Tensor], mode: str = "model",
              pad_factor: int = 1) -> tf.Tensor:
    """Images [B, N, N] or [B, N, N, C] filtered by each particle's CTF (`particle_ctf`: the
    `CTF_FEATURES`, each [B]; `mode` in `MODES`).

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
    ctf = ctf_grid(particle_ctf, padded, real_dtype)
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
