"""The one polar-EM core: in-plane alignment of particles to K templates over angle and offset.

Model (RELION 2D's, white noise): particle x = T_k turned by θ and moved by an offset d, plus
Gaussian noise of per-pixel variance σ². Templates are held on the polar grid of
`data_pipeline.polar` (radii from `min_radius` to the box edge), where a turn by θ rolls the angle
axis, so the correlation with every turned template is one FFT along the rings.

Offsets (`data_pipeline.rotation`'s convention: pixels, x along the columns, y down the rows) are
searched on `shift_grid`: the points of a square lattice of `shift_step` pixels within a disc of
radius `max_shift` (RELION's GUI defaults: 5 px, 1 px). Rather than move every particle to every
offset, the K templates are moved (K x S images, once per step) and re-sampled on the polar grid;
a template moved by e and then turned by θ is the template turned and moved by R(θ) e, so the
image-frame offset of grid point (e, θ) is `rotated_offsets(e, θ)`. Correlations are chunked over
particles by the caller where batches are large (`classical`).

The posterior over (class k, offset e, angle θ) is the softmax of
(corr - |T_{k,e}|²/2) / σ² + log p(k) + log p(e): `log p(k)` the class masses, `log p(e)` a
Gaussian of width `SHIFT_PRIOR_WIDTH` x `max_shift`, centred on the box centre. Why Gaussian and not
uniform: the offsets, like the frame angle, are defined only up to a move of every template; a
prior that favours small offsets anchors the templates on the box centre (where the polar grid and
the rotations are centred) instead of letting them drift, and at low SNR it keeps noise from pulling
particles to the edge of the search (RELION's 2D classification also puts a Gaussian prior on
offsets).

M step (`statistics`, `em_step`): each particle is moved back by its posterior-mean offset
(`recentred`, sub-pixel), and its posterior over (class, angle), summed over offsets, averages it
into the templates, as RELION's soft assignments; σ² is the posterior-expected residual per pixel.
`em_step(state, statistics, rate)` moves the class masses, weighted sums and σ² towards the batch's
by `rate`: 1 is batch EM (classical alignment), a momentum is online EM (the template frame).
With `max_shift` 0 there is one offset, (0, 0), no move, and the templates are never re-sampled.

Its moves are gathers (`translate`'s `xla_compatible` path), so a train step that holds a frame
compiles with XLA.

What a particle's offset is, served and written (`peak_offsets`): where its centre is, its
template's centre of mass turned and moved as the particle, by the most probable offset refined
between lattice points.
"""
import dataclasses
import math

import numpy as np
import tensorflow as tf

from data_pipeline.polar import PolarResampler, default_radii
from data_pipeline.rotation import inscribed_disc, recentred, rotated_offsets, translate

MIN_NOISE_VARIANCE = 1e-6  # per pixel, relative to unit-variance particles (noiseless data)
SHIFT_PRIOR_WIDTH = 0.5  # σ of the offset prior, as a share of the search range (docstring)
# The search reaches at most this share of the box width: further, a moved template leaves
# much of the polar grid's disc.
MAX_SHIFT_SHARE = 0.2


def shift_problems(max_shift: float, shift_step: float, image_size: int | None = None
                   ) -> list[str]:
    """What makes an offset search unusable (the config checks these before a run)."""
    found = []
    if not max_shift >= 0:
        found.append(f"frame_max_shift must be >= 0, got {max_shift}")
    if not shift_step > 0:
        found.append(f"frame_shift_step must be > 0, got {shift_step}")
    if image_size is not None and max_shift > MAX_SHIFT_SHARE * image_size:
        found.append(f"frame_max_shift {max_shift} must be at most {MAX_SHIFT_SHARE:g} of the "
                     f"{image_size}-px box")
    return found


def shift_grid(max_shift: float, shift_step: float) -> np.ndarray:
    """Offsets [S, 2] (x, y) pixels: the lattice points of step `shift_step` within `max_shift`
    of (0, 0), (0, 0) first."""
    found = shift_problems(max_shift, shift_step)
    if found:
        raise ValueError("; ".join(found))
    reach = int(math.floor(max_shift / shift_step + 1e-9))
    steps = np.arange(-reach, reach + 1) * shift_step
    x, y = np.meshgrid(steps, steps)
    points = np.stack([x.ravel(), y.ravel()], axis=1)
    points = points[np.hypot(points[:, 0], points[:, 1]) <= max_shift + 1e-9]
    return points[np.argsort(np.hypot(points[:, 0], points[:, 1]), kind="stable")].astype(
        np.float32)


def _lattice_neighbours(points: np.ndarray, step: float) -> np.ndarray:
    """[S, 2 axes, 2 sides] int32: the index of each lattice point's neighbour one `step` below
    and above along x and y, or its own index where the neighbour is off the grid."""
    where = {tuple(np.round(p / step).astype(int)): i for i, p in enumerate(points)}
    table = np.empty((len(points), 2, 2), np.int32)
    for i, p in enumerate(np.round(points / step).astype(int)):
        for axis in (0, 1):
            for side, move in enumerate((-1, 1)):
                q = p.copy()
                q[axis] += move
                table[i, axis, side] = where.get(tuple(q), i)
    return table


@dataclasses.dataclass(frozen=True)
class EMState:
    """Templates [K, R, A] (polar), class masses [K] (their sum the mean posterior mass per
    particle, 1) and the per-pixel noise variance σ² (scalar)."""

    templates: tf.Tensor
    class_mass: tf.Tensor
    noise: tf.Tensor


@dataclasses.dataclass(frozen=True)
class Statistics:
    """A batch's sufficient statistics, per particle: class masses [K], posterior-weighted sums of
    the aligned particles [K, R, A], and the expected residual per pixel (scalar)."""

    mass: tf.Tensor
    sums: tf.Tensor
    residual: tf.Tensor

    def __add__(self, other: "Statistics") -> "Statistics":
        return Statistics(self.mass + other.mass, self.sums + other.sums,
                          self.residual + other.residual)

    def scaled(self, factor: float | tf.Tensor) -> "Statistics":
        return Statistics(self.mass * factor, self.sums * factor, self.residual * factor)


def posterior(logits: tf.Tensor) -> tf.Tensor:
    """Logits [B, ...] -> each particle's posterior over all of its cells (softmax)."""
    flat = tf.nn.softmax(tf.reshape(logits, [tf.shape(logits)[0], -1]))
    return tf.reshape(flat, tf.shape(logits))


def parabola_vertex(left: tf.Tensor, centre: tf.Tensor, right: tf.Tensor) -> tf.Tensor:
    """Where a parabola through values at -1, 0 and +1 peaks, within ±0.5 (0 where it does not
    curve down): how peaks on a grid are refined between grid points."""
    curvature = left - 2 * centre + right
    vertex = tf.where(curvature < 0, 0.5 * (left - right) / tf.minimum(curvature, -1e-12), 0.0)
    return tf.clip_by_value(vertex, -0.5, 0.5)


def _noise(state: EMState) -> tf.Tensor:
    """σ², kept off 0 (noiseless data)."""
    return tf.maximum(state.noise, MIN_NOISE_VARIANCE)


def _log_class_prior(state: EMState) -> tf.Tensor:
    """log p(k) [K]: the class masses, normalised."""
    return tf.math.log(tf.maximum(state.class_mass / tf.reduce_sum(state.class_mass), 1e-12))


class PolarEM:
    """The core for one box size, polar grid and offset search (module docstring)."""

    def __init__(self, image_size: int, num_angles: int, min_radius: float,
                 max_shift: float = 0.0, shift_step: float = 1.0):
        if num_angles < 8:
            raise ValueError(f"num_angles must be >= 8, got {num_angles}")
        if not 0 <= min_radius <= image_size / 2 - 1:
            raise ValueError(f"min_radius {min_radius} leaves no ring in a {image_size}-px box")
        found = shift_problems(max_shift, shift_step, image_size)
        if found:
            raise ValueError("; ".join(found))
        radii = default_radii(image_size, min_radius=min_radius)
        self.image_size = image_size
        self.resampler = PolarResampler(image_size, num_angles, radii)
        self.num_angles = num_angles
        # The harmonics a ring of the pixel grid can carry (about π r cycles at radius r).
        self.harmonics = min(num_angles // 2 + 1, int(math.pi * radii[-1]) + 2)
        spacing = radii[1] - radii[0] if len(radii) > 1 else 1.0
        # Each ring's share of the disc (r Δr Δφ per sample): sums over the polar grid
        # approximate sums over pixels.
        self.area = tf.constant(radii * spacing * 2 * math.pi / num_angles, tf.float32)
        self.disc_area = float(np.sum(radii * spacing * 2 * math.pi))
        harmonic = np.arange(self.harmonics)
        # Each harmonic f >= 1 stands for itself and -f (Parseval, real signal).
        self.multiplicity = tf.constant(
            np.where((harmonic == 0) | (2 * harmonic == num_angles), 1.0, 2.0), tf.float32)
        self.max_shift, self.shift_step = float(max_shift), float(shift_step)
        offsets = shift_grid(max_shift, shift_step)
        self.offsets = tf.constant(offsets)  # [S, 2]
        self._neighbours = tf.constant(_lattice_neighbours(offsets, shift_step))
        sigma = SHIFT_PRIOR_WIDTH * max(max_shift, shift_step)
        log_prior = -np.sum(offsets ** 2, axis=1) / (2 * sigma ** 2)
        self.log_shift_prior = tf.constant(log_prior - np.log(np.exp(log_prior).sum()),
                                           tf.float32)
        self._disc = tf.constant(inscribed_disc(image_size, radii[-1] + 0.5)[None, :, :, None])
        phi = 2 * np.pi * np.arange(num_angles) / num_angles  # grid points' (x, y down)
        self._positions = tf.constant(np.stack(
            [radii[:, None] * np.cos(phi), -radii[:, None] * np.sin(phi)], -1), tf.float32)

    @property
    def num_shifts(self) -> int:
        return int(self.offsets.shape[0])

    def polar(self, images: tf.Tensor) -> tf.Tensor:
        """Images [B, N, N, 1] -> polar images [B, R, A] (float32)."""
        return self.resampler(tf.cast(images, tf.float32))

    def spectra(self, polar: tf.Tensor) -> tf.Tensor:
        """Polar images [..., R, A] -> their rings' angular spectra [..., R, F] (complex64)."""
        return tf.signal.rfft(polar)[..., :self.harmonics]

    def power(self, spectra: tf.Tensor) -> tf.Tensor:
        """Spectra [..., R, F] -> the energy each coefficient stands for [..., R, F]: summed, the
        disc's Σ of the squared polar image (the dropped harmonics being zero)."""
        return (tf.abs(spectra) ** 2 * self.area[:, tf.newaxis] * self.multiplicity
                / self.num_angles)

    def energy(self, spectra: tf.Tensor) -> tf.Tensor:
        """Σ over the disc of the squared polar image, [...]."""
        return tf.reduce_sum(self.power(spectra), axis=[-2, -1])

    def references(self, templates: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Templates [K, R, A] -> (spectra of each moved by each grid offset [K, S, R, F], their
        energies [K, S]). With offsets, each template goes back onto the pixel grid (beyond its
        disc, and what comes in as it moves, its outermost ring's mean: the background stays
        level whatever the particles' units), is moved (`translate`) and re-sampled."""
        if self.num_shifts == 1 and self.max_shift == 0:
            spectra = self.spectra(templates)[:, tf.newaxis]
        else:
            edge = tf.reduce_mean(templates[:, -1], axis=1)  # [K]
            images = tf.where(self._disc, self.resampler.to_image(templates),
                              edge[:, None, None, None])  # [K, N, N, 1]
            count, shifts = tf.shape(images)[0], self.num_shifts
            moved = translate(tf.repeat(images, shifts, axis=0), tf.tile(self.offsets, [count, 1]),
                              tf.repeat(edge, shifts), xla_compatible=True)
            spectra = tf.reshape(self.spectra(self.polar(moved)),
                                 [count, shifts, len(self.resampler.radii), self.harmonics])
        return spectra, self.energy(spectra)

    def correlation_spectra(self, spectra: tf.Tensor, references: tf.Tensor) -> tf.Tensor:
        """The angular spectra [B, K, S, F] of `correlation`."""
        weighted = spectra * tf.cast(self.area[:, tf.newaxis], tf.complex64)
        return tf.einsum("brf,ksrf->bksf", weighted, tf.math.conj(references))

    def correlation(self, spectra: tf.Tensor, references: tf.Tensor, upsampling: int = 1
                    ) -> tf.Tensor:
        """corr[b, k, s, a]: the pixel inner product of particle b (`spectra` [B, R, F]) with
        template k moved by offset s (`references` [K, S, R, F]) and turned by a/U bins,
        [B, K, S, U·A]: U = `upsampling` interpolates between the templates' bins (band-limited:
        the spectrum zero-padded)."""
        return self.angular(self.correlation_spectra(spectra, references), upsampling)

    def angular(self, spectrum: tf.Tensor, upsampling: int = 1) -> tf.Tensor:
        """Correlation spectra [..., F] -> correlations over U·A angles [..., U·A]."""
        return tf.signal.irfft(spectrum, [self.num_angles * upsampling]) * upsampling

    def fine_logits(self, spectrum: tf.Tensor, logits: tf.Tensor, reference_energy: tf.Tensor,
                    state: EMState, upsampling: int) -> tf.Tensor:
        """`logits` on a grid `upsampling` times finer in angle, [B, K, U·A], at each particle's
        most probable offset per class (from the templates' bins: `logits` [B, K, S, A]; from
        their correlation spectra `spectrum` [B, K, S, F]). Without offsets, all the logits."""
        best = tf.argmax(tf.reduce_max(logits, axis=3), axis=2, output_type=tf.int32)  # [B, K]
        correlation = self.angular(tf.gather(spectrum, best, batch_dims=2), upsampling)
        energy = tf.gather(tf.broadcast_to(reference_energy, tf.shape(logits)[:3]), best,
                           batch_dims=2)
        prior = _log_class_prior(state)[tf.newaxis] + tf.gather(self.log_shift_prior, best)
        return ((correlation - energy[..., tf.newaxis] / 2) / _noise(state)
                + prior[..., tf.newaxis])

    def logits(self, correlation: tf.Tensor, reference_energy: tf.Tensor, state: EMState
               ) -> tf.Tensor:
        """log p(x, k, s, a) [B, K, S, A'] up to a per-particle constant (module docstring):
        under white noise of variance σ², log p(x | k, s, a) is (corr - |T_{k,s}|²/2) / σ²
        - |x|²/(2σ²) + a constant."""
        return ((correlation - reference_energy[..., tf.newaxis] / 2) / _noise(state)
                + _log_class_prior(state)[:, tf.newaxis, tf.newaxis]
                + self.log_shift_prior[:, tf.newaxis])

    def offset_means(self, weights: tf.Tensor) -> tf.Tensor:
        """Posterior weights [B, K, S, A'] -> each particle's posterior-mean image-frame offset
        [B, 2] (grid offset e turned by the angle a: `rotated_offsets`)."""
        cells = int(weights.shape[-1])
        phi = tf.constant(2 * np.pi * np.arange(cells) / cells, tf.float32)
        by_shift_angle = tf.reduce_sum(weights, axis=1)  # [B, S, A']
        turned = rotated_offsets(self.offsets[:, tf.newaxis, :], phi[tf.newaxis, :])  # [S, A', 2]
        return tf.einsum("bsa,sac->bc", by_shift_angle, turned)

    def peak_offsets(self, spectrum: tf.Tensor, reference_energy: tf.Tensor, state: EMState,
                     classes: tf.Tensor, angles: tf.Tensor) -> tf.Tensor:
        """Where each particle's centre is [B, 2] (image frame): its template's centre of mass
        (`centres_of_mass`) moved by the most probable offset at its class `classes` [B] and
        angle `angles` [B] (radians, off the grid: the correlation spectra `spectrum`
        [B, K, S, F] summed there), the best lattice point refined between lattice points by a
        parabola through it and its two neighbours on each axis, all turned by the angle. A
        posterior sharper than the lattice leaves its mean on the lattice points (the angles'
        lesson, `template_frame`): on tests/data/relion_origins (SNR ~1, 1 px steps) the
        posterior mean missed by 0.58 px RMS, this by 0.52 px without the centre of mass and
        0.30 px with it. Zeros without an offset search."""
        if self.max_shift == 0:
            return tf.zeros([tf.shape(classes)[0], 2])
        within = tf.gather(spectrum, classes, batch_dims=1)  # [B, S, F]
        turn = tf.exp(tf.complex(0.0, tf.cast(tf.range(self.harmonics), tf.float32)
                                 * angles[:, tf.newaxis]))  # [B, F]
        correlation = tf.reduce_sum(tf.math.real(within * turn[:, tf.newaxis]) * self.multiplicity,
                                    axis=2) / self.num_angles  # [B, S]
        scores = ((correlation - tf.gather(reference_energy, classes) / 2) / _noise(state)
                  + self.log_shift_prior)
        best = tf.argmax(scores, axis=1, output_type=tf.int32)
        around = tf.gather(self._neighbours, best)  # [B, 2 axes, 2 sides]
        step = parabola_vertex(tf.gather(scores, around[:, :, 0], batch_dims=1),  # [B, 2]
                               tf.gather(scores, best, batch_dims=1)[:, tf.newaxis],
                               tf.gather(scores, around[:, :, 1], batch_dims=1))
        grid = tf.gather(self.offsets, best) + step * self.shift_step
        centre = tf.gather(self.centres_of_mass(state.templates), classes)
        return rotated_offsets(grid + centre, angles)

    def centres_of_mass(self, templates: tf.Tensor) -> tf.Tensor:
        """Each template's centre of mass [K, 2] (pixels from the box centre, x along the
        columns, y down the rows), of its absolute difference from its outermost ring's mean
        (either contrast). Where the frame puts a particle's centre: the likelihood does not
        tell a template moved by t from particles moved by -R(θ) t, so EM leaves the templates
        off the box centre by a fraction of a pixel (0.3-0.4 px on tests/data/relion_origins,
        on every particle, turned by its angle); RELION 2D centres its class averages on their
        centre of mass likewise (`--center_classes`)."""
        edge = tf.reduce_mean(templates[:, -1], axis=1)  # [K]
        weights = tf.abs(templates - edge[:, None, None]) * self.area[:, None]  # [K, R, A]
        total = tf.maximum(tf.reduce_sum(weights, axis=[1, 2]), 1e-30)
        return tf.einsum("kra,rac->kc", weights, self._positions) / total[:, None]

    def recentred(self, images: tf.Tensor, offsets: tf.Tensor) -> tf.Tensor:
        """Images [B, N, N, 1] moved back by their offsets [B, 2] (`rotation.recentred`; as they
        are without an offset search)."""
        return images if self.max_shift == 0 else recentred(images, offsets, xla_compatible=True)

    def statistics(self, images: tf.Tensor, state: EMState,
                   references: tuple[tf.Tensor, tf.Tensor] | None = None
                   ) -> tuple[Statistics, tf.Tensor]:
        """E step on a batch of images [B, N, N, 1] against `state` (its `references`, when a
        caller going through chunks made them once): (its `Statistics`, the posterior
        [B, K, S, A])."""
        spectra = self.spectra(self.polar(images))
        references, energy = references or self.references(state.templates)
        correlation = self.correlation(spectra, references)
        return self.statistics_of(images, spectra, correlation, energy, state)

    def statistics_of(self, images: tf.Tensor, spectra: tf.Tensor, correlation: tf.Tensor,
                      reference_energy: tf.Tensor, state: EMState
                      ) -> tuple[Statistics, tf.Tensor]:
        """`statistics`, from the batch's spectra and its correlations on the templates' bins
        where they are at hand."""
        weights = posterior(self.logits(correlation, reference_energy, state))
        # E_w ||x - T_{k,s,a}||² per particle.
        residual = (self.energy(spectra)
                    - 2.0 * tf.reduce_sum(weights * correlation, axis=[1, 2, 3])
                    + tf.reduce_sum(tf.reduce_sum(weights, axis=3) * reference_energy,
                                    axis=[1, 2]))
        if self.max_shift:
            spectra = self.spectra(self.polar(self.recentred(images,
                                                             self.offset_means(weights))))
        aligned = self.aligned_sums(spectra, tf.reduce_sum(weights, axis=2))
        count = tf.cast(tf.shape(images)[0], tf.float32)
        return Statistics(mass=tf.reduce_sum(weights, axis=[0, 2, 3]) / count,
                          sums=aligned / count,
                          residual=tf.reduce_mean(residual) / self.disc_area), weights

    def aligned_sums(self, spectra: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        """Σ_b Σ_a w_b(k, a) P_b(r, · + a): the (centred) particles' spectra [B, R, F] turned
        back by their posterior over (class, angle bin) [B, K, A] and summed, [K, R, A]."""
        rolls = tf.signal.rfft(weights)[..., :self.harmonics]  # [B, K, F]
        summed = tf.einsum("brf,bkf->krf", spectra, tf.math.conj(rolls))
        return tf.signal.irfft(summed, [self.num_angles])

    def em_step(self, state: EMState, statistics: Statistics, rate: float | tf.Tensor
                ) -> EMState:
        """M step: class masses, weighted sums and σ² move towards the batch's by `rate` (1:
        batch EM); each template is its sum over its mass."""
        mass = (1 - rate) * state.class_mass + rate * statistics.mass
        sums = (1 - rate) * state.class_mass[:, None, None] * state.templates + rate * (
            statistics.sums)
        return EMState(templates=sums / tf.maximum(mass, 1e-12)[:, None, None],
                       class_mass=mass,
                       noise=(1 - rate) * state.noise + rate * statistics.residual)

    def start(self, images: tf.Tensor, classes: tf.Tensor, angle_bins: tf.Tensor,
              num_classes: int) -> EMState:
        """A state from hard assignments: each template the mean of the particles [B, N, N, 1]
        given it (`classes` [B]), each turned back by its `angle_bins` [B]; σ² the particles'
        per-pixel variance about their mean."""
        polar = self.polar(images)
        weights = tf.reshape(tf.one_hot(classes * self.num_angles + angle_bins,
                                         num_classes * self.num_angles),
                             [-1, num_classes, self.num_angles])
        count = tf.cast(tf.shape(images)[0], tf.float32)
        mass = tf.reduce_sum(weights, axis=[0, 2]) / count
        sums = self.aligned_sums(self.spectra(polar), weights) / count
        centred = polar - tf.reduce_mean(polar, axis=0, keepdims=True)
        noise = tf.reduce_sum(tf.reduce_mean(tf.square(centred), axis=0)
                              * self.area[:, tf.newaxis]) / self.disc_area
        return EMState(templates=sums / tf.maximum(mass, 1e-12)[:, None, None],
                       class_mass=mass, noise=noise)
