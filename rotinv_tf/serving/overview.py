"""A picture of a `canonicalize` run a user can look at: `<stem>_overview.png` beside the STAR.

Three panels: the class averages (a model with classes), a strip of the first particles above
their canonical images, and every particle's (up to `MAX_POINTS`) served features on their first
two principal axes, coloured by class. Gathered batch by batch (`Overview.add`), so a stream of a
million particles keeps only what the picture shows.
"""
import os

import numpy as np
from matplotlib.figure import Figure

from data_pipeline.atomic import atomic_path

STRIP = 8  # particles shown with their canonical images
MAX_POINTS = 20000  # particles whose features are plotted


def overview_path(star_path: str) -> str:
    """The picture beside the STAR file `star_path`."""
    return os.path.splitext(os.path.abspath(star_path))[0] + "_overview.png"


def _principal_axes(features: np.ndarray) -> np.ndarray:
    """Features [n, F] on their first two principal axes [n, 2] (zeros where there are fewer)."""
    centred = features - features.mean(axis=0)
    if len(centred) < 2 or not np.any(centred):
        return np.zeros((len(features), 2))
    axes = np.linalg.svd(centred, full_matrices=False)[2][:2]
    projected = centred @ axes.T
    return np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))


class Overview:
    """What the picture shows, gathered from the stream."""

    def __init__(self):
        self.particles: list[np.ndarray] = []
        self.canonical: list[np.ndarray] = []
        self.features: list[np.ndarray] = []
        self.classes: list[np.ndarray] = []
        self.count = 0

    def add(self, particles: np.ndarray, canonical: np.ndarray, features: np.ndarray,
            classes: np.ndarray) -> None:
        """One batch: particles and canonical images [B, N, N], features [B, F], classes [B]
        (0-based; zeros without classes)."""
        shown = max(0, STRIP - sum(len(p) for p in self.particles))
        if shown:
            self.particles.append(particles[:shown])
            self.canonical.append(canonical[:shown])
        kept = max(0, MAX_POINTS - self.count)
        self.features.append(np.asarray(features, np.float64)[:kept])
        self.classes.append(np.asarray(classes)[:kept])
        self.count += min(kept, len(features))

    def write(self, path: str, averages: np.ndarray | None) -> None:
        """Writes the PNG at `path` (atomically); `averages` [K, N, N] or None."""
        particles = np.concatenate(self.particles)
        canonical = np.concatenate(self.canonical)
        classes = np.concatenate(self.classes)
        points = _principal_axes(np.concatenate(self.features))
        rows = 3 if averages is not None else 2
        columns = max(len(particles), 1 if averages is None else len(averages))
        figure = Figure(figsize=(1.3 * columns, 1.4 * rows + 3.6), layout="constrained")
        grid = figure.add_gridspec(rows + 1, columns, height_ratios=[1] * rows + [2.6])

        def show(row: int, column: int, image: np.ndarray, title: str) -> None:
            axis = figure.add_subplot(grid[row, column])
            axis.imshow(image, cmap="gray")
            axis.set_axis_off()
            axis.set_title(title, fontsize=7)

        row = 0
        if averages is not None:
            for k, average in enumerate(averages):
                show(0, k, average, f"class {k + 1}")
            row = 1
        for i, (particle, image) in enumerate(zip(particles, canonical)):
            show(row, i, particle, f"particle {i + 1}")
            show(row + 1, i, image, "canonical")
        axis = figure.add_subplot(grid[rows, :])
        for k in np.unique(classes):
            mine = classes == k
            axis.scatter(points[mine, 0], points[mine, 1], s=3, label=f"class {k + 1}")
        if averages is not None:
            axis.legend(fontsize=7, markerscale=3)
        axis.set_xlabel("features: principal axis 1", fontsize=8)
        axis.set_ylabel("axis 2", fontsize=8)
        axis.set_title(f"{len(points)} particles' served features, coloured by class",
                       fontsize=8)
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
