"""Feature scores of `benchmarks.poses`, NumPy only: k-means ARI, and the cross-validated Spearman ρ
between a hinge angle and the best linear direction of features (psi errors are
`rotinv_tf.evaluation`'s).

- `kmeans` + `adjusted_rand_index`: do features cluster by (conformation bin, view)?
- `linear_spearman`: within each view, a least-squares fit of the hinge angle on the features on
  all folds but one, Spearman ρ of its prediction on the held-out fold; |ρ| averaged over folds
  and views (a continuum of conformations should lie along some direction of a good latent).
"""
import numpy as np


def kmeans(features: np.ndarray, k: int, seed: int = 0, restarts: int = 10,
           iterations: int = 100) -> np.ndarray:
    """Labels [B] of Lloyd's k-means (k-means++ starts), the best of `restarts` by inertia."""
    x = np.asarray(features, np.float64)
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(restarts):
        centres = x[[rng.integers(len(x))]]
        for _ in range(1, k):
            distance = ((x[:, None] - centres[None]) ** 2).sum(-1).min(1)
            centres = np.vstack([centres, x[rng.choice(len(x), p=distance / distance.sum())]])
        for _ in range(iterations):
            labels = ((x[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            moved = np.array([x[labels == j].mean(0) if np.any(labels == j) else centres[j]
                              for j in range(k)])
            if np.allclose(moved, centres):
                break
            centres = moved
        inertia = ((x - centres[labels]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def adjusted_rand_index(truth: np.ndarray, labels: np.ndarray) -> float:
    """Hubert and Arabie's adjusted Rand index: 1 for identical partitions, ~0 for chance."""
    _, a = np.unique(truth, return_inverse=True)
    _, b = np.unique(labels, return_inverse=True)
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)
    pairs = lambda n: n * (n - 1) / 2  # noqa: E731
    index, rows, cols = pairs(table).sum(), pairs(table.sum(1)).sum(), pairs(table.sum(0)).sum()
    expected = rows * cols / pairs(len(a))
    maximum = (rows + cols) / 2
    return float((index - expected) / (maximum - expected)) if maximum != expected else 1.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (no ties expected: continuous values)."""
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def linear_spearman(features: np.ndarray, hinge: np.ndarray, groups: np.ndarray,
                    folds: int = 5, seed: int = 0) -> float:
    """Mean over groups and folds of |Spearman ρ| between the held-out hinge and its least-squares
    prediction from the features (module docstring)."""
    x = np.asarray(features, np.float64)
    rng = np.random.default_rng(seed)
    rhos = []
    for group in np.unique(groups):
        members = np.flatnonzero(groups == group)
        fold = rng.permutation(len(members)) % folds
        design = np.hstack([x[members], np.ones((len(members), 1))])
        for f in range(folds):
            fit, held = fold != f, fold == f
            weights = np.linalg.lstsq(design[fit], hinge[members][fit], rcond=None)[0]
            rhos.append(abs(spearman(design[held] @ weights, hinge[members][held])))
    return float(np.mean(rhos))
