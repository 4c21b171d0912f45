"""5HDB-style particle simulator: the embedded default dataset, needing no download.

A molecule of Gaussian pseudo-atoms (the built-in hinged model, a user's PDB/mmCIF atomic model, or
a user's MRC density map) is projected along the viewing axis z onto an N x N grid, each pseudo-atom
integrated analytically over every pixel (no aliasing). Per image: a conformation, an in-plane
rotation θ, optionally a shift and a CTF, then Gaussian noise at a target SNR.

Geometry, shared with `data_pipeline.rotation`: 3D x runs along image columns and 3D y along image
rows (down the displayed image, row 0 at the top): RELION's hand, whose psi=0 image of an MRC map
`[z, y, x]` is the map summed over z (checked against RELION in tests/test_relion.py). The
molecule's origin sits at the image centre ((N-1)/2, (N-1)/2); RELION's, in an even box, is half a
pixel further along both axes (N/2). The canonical `image` is the clean, unrotated, unshifted,
CTF-free projection; `observed` is the projection of the molecule rotated by θ counter-clockwise as
displayed (so its clean part equals `rotate(image, θ)` up to interpolation), shifted by `shift`
pixels (x = columns, y = rows, down positive), multiplied by the CTF in Fourier space, plus noise.

Images are identified by a global id. Image `i` has conformation `i % num_conformations` and view
`(i // num_conformations) % num_views`, and all its random choices come from a generator seeded with
`(seed, i)`, so any split or chunk of a data
set is bit-identical however it is generated. The `train` split holds the ids of the first
`num_conformations - test_conformations` conformations, `test` the rest (as in 5HDB, where the
held-out conformations are unseen during training).

Heterogeneity beyond 5HDB's discrete states: with `continuous_conformations` each image's hinge
position is drawn uniformly within its conformation's bin (bin k of K covers [k/K, (k+1)/K] of the
hinge range), so conformations form a continuum whose per-image truth is `hinge`; with
`num_views` > 1 the molecule is seen along several directions (view 0 along z, view v >= 1 tilted
by `view_tilt` about the in-plane axis at azimuth π (v - 1) / (num_views - 1)). The defaults keep
one view and discrete conformations, and their images are unchanged.
"""
import dataclasses
import hashlib
import math
from typing import Iterator

import mrcfile
import numpy as np

from data_pipeline import ctf
from data_pipeline.errors import DataError
from data_pipeline.settings import SimulationConfig  # noqa: F401 (the settings it simulates)

SPLITS = ("train", "test")
# Fraction of the box width spanned by the molecule's diameter when the pixel size is automatic.
FILL_FRACTION = 0.65
# Pseudo-atoms are never rendered narrower than this many pixels (std), so projections stay
# band-limited (less than 1% of a blob's amplitude lies beyond Nyquist).
MIN_SIGMA_PIXELS = 1.0
BUILTIN_SEED = 5
ATOM_SIGMA_ANGSTROM = 1.0  # std of one real atom's pseudo-atom
DENSITY_THRESHOLD = 1e-3  # projected density below this fraction of the maximum is solvent


@dataclasses.dataclass(frozen=True)
class PseudoAtomicModel:
    """Gaussian pseudo-atoms in Å, centred on the origin, optionally with a hinged domain.

    `hinge_mask` marks the atoms that turn about `hinge_axis` through `hinge_point`, by an angle
    running linearly over `hinge_range` (radians) as the conformation parameter goes from 0 to 1.
    """

    coords: np.ndarray
    weights: np.ndarray
    sigma: float
    hinge_mask: np.ndarray | None = None
    hinge_point: np.ndarray | None = None
    hinge_axis: np.ndarray | None = None
    hinge_range: tuple[float, float] = (0.0, 0.0)

    def conformation(self, t: float) -> np.ndarray:
        """Atom coordinates [A, 3] at conformation parameter t in [0, 1]."""
        if self.hinge_mask is None:
            return self.coords
        lo, hi = self.hinge_range
        moved = self.coords[self.hinge_mask] - self.hinge_point
        rotation = _axis_angle_matrix(self.hinge_axis, lo + t * (hi - lo))
        coords = self.coords.copy()
        coords[self.hinge_mask] = moved @ rotation.T + self.hinge_point
        return coords


def _axis_angle_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """Rotation matrix by `angle` about the unit vector `axis` (Rodrigues)."""
    x, y, z = axis / np.linalg.norm(axis)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * (k @ k)


def _ellipsoid_atoms(rng: np.random.Generator, count: int, centre, radii) -> np.ndarray:
    """`count` points uniform inside an axis-aligned ellipsoid."""
    direction = rng.standard_normal((count, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    radius = rng.random((count, 1)) ** (1 / 3)
    return np.asarray(centre) + direction * radius * np.asarray(radii)


def builtin_model() -> PseudoAtomicModel:
    """The embedded molecule: four domains, 300 pseudo-atoms, an arm swinging ±40° on a hinge.

    A core body, a shoulder and a small knob on opposite sides, and an arm whose hinge axis is
    mostly along the viewing axis, so the motion shows in projection. Deterministic (fixed seed)
    and clearly asymmetric, so every user gets the same molecule with a well-defined canonical pose.
    """
    rng = np.random.default_rng(BUILTIN_SEED)
    # (centre, radii, atoms, density) per domain, in Å.
    domains = [((0.0, -6.0, 0.0), (17.0, 10.0, 10.0), 140, 1.0),   # core
               ((-13.0, 10.0, 2.0), (8.0, 7.0, 7.0), 60, 1.3),     # shoulder
               ((-7.0, -20.0, 3.0), (5.0, 5.0, 5.0), 30, 1.6),     # knob
               ((15.0, 15.0, 0.0), (5.0, 12.0, 6.0), 70, 0.9)]     # arm (hinged)
    coords = np.concatenate([_ellipsoid_atoms(rng, n, c, r) for c, r, n, _ in domains])
    weights = np.concatenate([np.full(n, d) for _, _, n, d in domains])
    hinge_mask = np.zeros(len(coords), bool)
    hinge_mask[-domains[-1][2]:] = True
    hinge_point = np.array([13.0, 3.0, 0.0])
    model = PseudoAtomicModel(coords, weights, 3.0, hinge_mask, hinge_point,
                              np.array([0.2, -0.3, 1.0]), (-math.radians(40), math.radians(40)))
    # Centre the molecule's mass at the middle conformation; the frame stays fixed as the arm moves.
    centre = np.average(model.conformation(0.5), axis=0, weights=weights)
    return dataclasses.replace(model, coords=coords - centre, hinge_point=hinge_point - centre)


def view_rotations(num_views: int, tilt: float) -> np.ndarray:
    """[V, 3, 3]: view 0 the identity, view v >= 1 a turn by `tilt` about the in-plane axis at
    azimuth π (v - 1) / (V - 1)."""
    rotations = [np.eye(3)]
    for v in range(1, num_views):
        azimuth = math.pi * (v - 1) / (num_views - 1)
        axis = np.array([math.cos(azimuth), math.sin(azimuth), 0.0])
        rotations.append(_axis_angle_matrix(axis, tilt))
    return np.stack(rotations)


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split())


def load_atomic_model(path: str) -> PseudoAtomicModel:
    """A PDB/mmCIF model (first model, waters skipped) as pseudo-atoms weighted by atomic number.

    Needs the optional `gemmi` package (extra `structures`).
    """
    try:
        import gemmi  # pylint: disable=import-outside-toplevel
    except ImportError as e:
        raise DataError(path, "reading atomic models needs gemmi: pip install "
                              "'rotinv_tf[structures]'") from e
    try:
        structure = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError, OSError) as e:
        raise DataError(path, f"cannot read atomic model: {_one_line(e)}") from e
    coords, weights = [], []
    if len(structure) > 0:
        for chain in structure[0]:
            for residue in chain:
                if residue.is_water():
                    continue
                for atom in residue:
                    coords.append(atom.pos.tolist())
                    weights.append(atom.element.atomic_number)
    weights = np.asarray(weights, np.float64)
    if not weights.sum() > 0:
        raise DataError(path, "no atoms in the atomic model")
    coords = np.asarray(coords, np.float64)
    coords -= np.average(coords, axis=0, weights=weights)
    return PseudoAtomicModel(coords, weights, ATOM_SIGMA_ANGSTROM)


def load_density_map(path: str, max_grid: int = 96) -> PseudoAtomicModel:
    """An MRC volume summed along z, centred on its centre of mass, as 2D pseudo-atoms.

    Each projected voxel above `DENSITY_THRESHOLD` of the maximum becomes a pseudo-atom (after
    binning the projection to at most `max_grid` pixels a side, which bounds the cost per image).
    """
    try:
        with mrcfile.open(path, permissive=True) as mrc:
            data = None if mrc.data is None else np.asarray(mrc.data, np.float64)
            voxel = float(mrc.voxel_size.x)
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read density map: {_one_line(e)}") from e
    if data is None:
        raise DataError(path, "not an MRC file")
    volume = data
    if volume.ndim != 3 or min(volume.shape) < 2:
        raise DataError(path, f"expected a 3D density map, got shape {volume.shape}")
    if not voxel > 0:
        raise DataError(path, "the MRC header has no voxel size")
    if not np.isfinite(volume).all():
        raise DataError(path, "the density map has non-finite values")
    projection = volume.sum(axis=0)  # MRC data is [z, y, x]; row index runs along +y
    factor = max(1, math.ceil(max(projection.shape) / max_grid))
    rows, cols = (s // factor * factor for s in projection.shape)
    projection = projection[:rows, :cols].reshape(
        rows // factor, factor, cols // factor, factor).sum(axis=(1, 3))
    voxel *= factor
    if not projection.max() > 0:
        raise DataError(path, "the density map has no positive density")
    ys, xs = np.nonzero(projection > DENSITY_THRESHOLD * projection.max())
    weights = projection[ys, xs]
    coords = np.stack([xs * voxel, ys * voxel, np.zeros(len(xs))], axis=1)
    coords -= np.average(coords, axis=0, weights=weights)
    return PseudoAtomicModel(coords, weights, voxel / 2)


def load_model(config: SimulationConfig) -> PseudoAtomicModel:
    """The molecule a config asks for: a user's atomic model or density map, else the built-in."""
    if config.atomic_model:
        return load_atomic_model(config.atomic_model)
    if config.density_map:
        return load_density_map(config.density_map)
    return builtin_model()


def model_fingerprint(config: SimulationConfig) -> str | None:
    """A short hash of the user's model file (None for the built-in model), to name versions."""
    path = config.atomic_model or config.density_map
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return hashlib.sha1(f.read()).hexdigest()[:8]
    except OSError as e:
        raise DataError(path, f"cannot read: {e.strerror}") from e


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function, elementwise (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7)."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (
        -1.453152027 + t * 1.061405429))))
    return np.copysign(1.0 - poly * np.exp(-x * x), x)


def _pixel_integrals(centres: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """[..., size]: the mass of a unit 1D Gaussian at `centres` (pixels from the image centre)
    falling in each pixel."""
    edges = np.arange(size + 1, dtype=np.float32) - size / 2
    cdf = _erf((edges - centres[..., None]) / np.float32(sigma * math.sqrt(2)))
    return 0.5 * np.diff(cdf, axis=-1)


def render(xy: np.ndarray, weights: np.ndarray, sigma: float, size: int) -> np.ndarray:
    """Projections [B, size, size] of pseudo-atoms at `xy` [B, A, 2] (pixels from the centre,
    x along columns, y along rows), each a Gaussian of std `sigma` pixels integrated over pixels."""
    xy = xy.astype(np.float32)
    gx = _pixel_integrals(xy[..., 0], sigma, size)
    gy = _pixel_integrals(xy[..., 1], sigma, size) * weights.astype(np.float32)[:, None]
    return np.matmul(np.swapaxes(gy, 1, 2), gx)


class Simulator:
    """A configured simulation: the molecule, its conformations and canonical images.

    `simulate(ids)` renders any images by global id; `split_ids` and `iter_split` give the
    conformation splits.
    """

    def __init__(self, config: SimulationConfig):
        self.config = config
        self._model = load_model(config)
        count = config.num_conformations
        self._positions = np.array([0.5]) if count == 1 else np.linspace(0.0, 1.0, count)
        self._views = view_rotations(config.num_views, config.view_tilt)  # [V, 3, 3]
        # The box fits the whole hinge range in every view, whatever the number of conformations.
        span = self._coords(np.linspace(0.0, 1.0, 21), self._views)
        radius = np.linalg.norm(span[..., :2], axis=-1).max() + 2 * self._model.sigma
        self.pixel_size = float(config.pixel_size or
                                2 * radius / (FILL_FRACTION * config.image_size))
        # Image plane in pixels: 3D x along columns, 3D y along rows, as RELION projects.
        self._xy = self._coords(self._positions, self._views)[..., :2] / self.pixel_size
        self._weights = self._model.weights
        self._sigma = max(self._model.sigma / self.pixel_size, MIN_SIGMA_PIXELS)
        self.canonical = render(self._xy[0], self._weights, self._sigma, config.image_size)

    def _coords(self, positions: np.ndarray, views: np.ndarray) -> np.ndarray:
        """Atom coordinates [V, P, A, 3] (Å) at hinge positions [P] in [0, 1], seen in views
        [V, 3, 3]."""
        coords = np.stack([self._model.conformation(t) for t in positions])
        return np.einsum("vij,paj->vpai", views, coords)

    def hinge_angle(self, position: np.ndarray) -> np.ndarray:
        """Hinge angles (radians) at positions in [0, 1] along the hinge range (0: rigid model)."""
        if self._model.hinge_mask is None:
            return np.zeros_like(position, np.float64)
        lo, hi = self._model.hinge_range
        return lo + np.asarray(position, np.float64) * (hi - lo)

    def split_ids(self, split: str) -> np.ndarray:
        """Global ids of a split's images, in order (conformations interleaved)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        config = self.config
        ids = np.arange(config.num_conformations * config.images_per_conformation)
        in_train = ids % config.num_conformations < config.num_train_conformations
        return ids[in_train if split == "train" else ~in_train]

    def _draw(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Per-image random choices; image i's come from a generator seeded (seed, i) alone."""
        config = self.config
        size = config.image_size
        angle, shift, defocus = np.empty(len(ids)), np.empty((len(ids), 2)), np.empty(len(ids))
        noise = np.empty((len(ids), size, size), np.float32)
        within_bin = np.empty(len(ids))
        for row, image_id in enumerate(ids):
            rng = np.random.default_rng([config.seed, int(image_id)])
            uniform, normal = rng.random(), rng.standard_normal()
            if config.angle_distribution == "uniform":
                angle[row] = math.pi - 2 * math.pi * uniform  # (-π, π]
            else:
                angle[row] = -((math.pi - normal * config.angle_std) % (2 * math.pi) - math.pi)
            shift[row] = rng.uniform(-config.max_shift, config.max_shift, 2)
            defocus[row] = config.defocus_min + rng.random() * (
                config.defocus_max - config.defocus_min)
            noise[row] = rng.standard_normal((size, size), np.float32)
            # Drawn last, so the earlier draws are those of discrete conformations.
            within_bin[row] = rng.random() if config.continuous_conformations else 0.0
        if not config.ctf:
            defocus[:] = 0.0
        return dict(angle=angle, shift=shift, defocus=defocus, noise=noise, within_bin=within_bin)

    def project(self, conformation: np.ndarray, angle: np.ndarray,
                shift: np.ndarray | None = None, view: np.ndarray | None = None,
                position: np.ndarray | None = None) -> np.ndarray:
        """Clean projections [B, N, N] of conformations [B] in views [B] (default 0) turned by
        `angle` [B] (as a dataset's `angle`: `rotate(image, angle)` up to interpolation), shifted
        by `shift` [B, 2] pixels. `position` [B] in [0, 1]: hinge positions replacing the
        conformations' own (continuous conformations)."""
        view = np.zeros(len(angle), np.int64) if view is None else view
        if position is None:
            x, y = self._xy[view, conformation, :, 0], self._xy[view, conformation, :, 1]
        else:
            xy = np.stack([self._coords([t], self._views[[v]])[0, 0, :, :2]
                           for t, v in zip(position, view)]) / self.pixel_size
            x, y = xy[..., 0], xy[..., 1]
        cos = np.cos(angle)[:, None]
        sin = np.sin(angle)[:, None]
        # CCW as displayed, with y pointing down the rows: the rotation `rotate` applies.
        xy = np.stack([cos * x + sin * y, -sin * x + cos * y], axis=-1)
        if shift is not None:
            xy += shift[:, None, :]
        return render(xy, self._weights, self._sigma, self.config.image_size)

    @property
    def optics(self) -> ctf.Optics:
        """The microscope of the CTF (`data_pipeline.ctf`)."""
        c = self.config
        return ctf.Optics(c.voltage, c.spherical_aberration, c.amplitude_contrast, self.pixel_size)

    def apply_ctf(self, images: np.ndarray, defocus_um: np.ndarray) -> np.ndarray:
        """Images [B, N, N] through the CTF at each defocus (µm, no astigmatism), on a box padded
        to 2N so the CTF's spread does not wrap around."""
        defocus = np.asarray(defocus_um, np.float64) * 1e4
        particles = ctf.particle_ctf(defocus, defocus, np.zeros_like(defocus), self.optics)
        filtered = ctf.apply_ctf(images.astype(np.float64), particles, pad_factor=2)
        return filtered.numpy().astype(np.float32)

    def simulate(self, ids: np.ndarray) -> dict[str, np.ndarray]:
        """Images with the given global ids.

        Returns image (clean, unrotated, in the image's view and hinge position), observed
        [B, N, N] float32; angle [B] float32 (radians, observed = rotate(image, angle));
        conformation [B] int64; view [B] int64; hinge [B] float32 (the hinge angle, radians);
        shift [B, 2] float32 (pixels, x then y); defocus [B] float32 (µm, 0 without CTF);
        id [B] int64.
        """
        config = self.config
        ids = np.asarray(ids, np.int64)
        draws = self._draw(ids)
        conformation = ids % config.num_conformations
        view = (ids // config.num_conformations) % config.num_views
        if config.continuous_conformations:
            position = (conformation + draws["within_bin"]) / config.num_conformations
        else:
            position = None
        clean = self.project(conformation, draws["angle"], draws["shift"], view, position)
        if position is None and config.num_views == 1:
            image = self.canonical[conformation]
        else:
            image = self.project(conformation, np.zeros(len(ids)), None, view, position)
        if config.ctf:
            clean = self.apply_ctf(clean, draws["defocus"])
        noise_std = np.sqrt(clean.var(axis=(1, 2), dtype=np.float64) / config.snr)
        observed = clean + draws["noise"] * noise_std.astype(np.float32)[:, None, None]
        hinge = self.hinge_angle(self._positions[conformation] if position is None else position)
        return dict(image=image, observed=observed.astype(np.float32),
                    angle=draws["angle"].astype(np.float32), conformation=conformation,
                    view=view, hinge=hinge.astype(np.float32),
                    shift=draws["shift"].astype(np.float32),
                    defocus=draws["defocus"].astype(np.float32), id=ids)

    def iter_split(self, split: str, chunk_size: int = 1000) -> Iterator[dict[str, np.ndarray]]:
        """A split in chunks of at most `chunk_size` images, each also carrying `index` (position
        in the split)."""
        ids = self.split_ids(split)
        for start in range(0, len(ids), chunk_size):
            chunk = self.simulate(ids[start:start + chunk_size])
            chunk["index"] = np.arange(start, start + len(chunk["id"]), dtype=np.int64)
            yield chunk


def simulate_split(config: SimulationConfig, split: str) -> dict[str, np.ndarray]:
    """A whole split as one dict of arrays (see `Simulator.simulate`, plus `index`)."""
    simulator = Simulator(config)
    chunks = list(simulator.iter_split(split))
    if not chunks:  # a split with no conformations
        empty = simulator.simulate(np.empty(0, np.int64))
        return dict(empty, index=np.empty(0, np.int64))
    return {key: np.concatenate([c[key] for c in chunks]) for key in chunks[0]}
