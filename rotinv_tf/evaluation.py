"""Test-set metrics and figures for exported models: the numbers of the paper's Table 1 and the
pictures of its Figs. 2 and 3.

Models are evaluated as SavedModels through `rotinv_tf.serving.saved_model`, so no training code is
needed and ours and the baseline are treated alike. The data are the batches of
`data_pipeline.input_fn.eval_input` (normalised, with fixed, seeded angles): a model is fed the
raw-unit `observed` images, and its `canonical_image` is normalised again and compared with the
normalised ground truth `image`, the scale on which clean images lie in [0, 1] and on which the
paper reports MSE. Several models are evaluated in one pass (`evaluate_models`), so a baseline
sees exactly the same inputs.

Metrics (all computed in `compute_metrics`):
- `avg_mse`, `median_mse`, `worst_mse`, `worst_index`: per-image mean squared error between the
  canonical ground truth and the decoder output, and the split index of the worst image;
- `angle_mae_deg`, `angle_rmse_deg`: predicted minus true angle, wrapped to (-180, 180] degrees;
  `angle_mse_rad2`: the same error's mean square in radians², the paper's angle figure.

Trivial baseline: `MeanImageModel` answers every input with the mean training image and angle 0.
`evaluate` scores it beside every model, so a report says how much of a model's score is just
"output the average molecule". An oracle, `nearest_reference_metrics`, is told the true angle and
answers the nearest training image.

Frame alignment: a model whose canonical frame is learned without supervision (spatial-VAE) may
return the ground truth turned by a constant angle ψ, which the metrics above would count as
error. With `observed = rotate(image, θ)` and a model frame `canonical = rotate(image, ψ)`, the
model predicts θ̂ = θ − ψ; so `estimate_frame_rotation` takes ψ as the circular mean of θ − θ̂,
and `evaluate_models(..., frame_rotations=[ψ, ...])` scores `rotate(canonical, −ψ)` and θ̂ + ψ
instead (metrics then carry `frame_rotation_deg`). Apply it to every model compared, alike.
Particles without known frames (a learned frame, a class or view each) are scored by
`frame_aligned_errors_deg` (one ψ per group) and `psi_error_summary`, the benchmarks' psi error.

Probes, what a latent carries that it should not (defocus) or should (conformation): `probe_r2`
(a held-out linear read-out) and `knn_r2` (a held-out nearest-neighbour one).
"""
import csv
import dataclasses
import json
import math
import os
import shutil
import tempfile
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

from data_pipeline.angles import to_degrees
from data_pipeline.errors import DataError
from data_pipeline.preprocessing import Normalization
from data_pipeline.rotation import inscribed_disc, rotate
from rotinv_tf.serving.saved_model import ServingModel

METRICS_FILE = "metrics.json"
BASELINE_METRICS_FILE = "baseline_metrics.json"
TRIVIAL_METRICS_FILE = "mean_image_metrics.json"
PER_IMAGE_FILE = "per_image.csv"
FIGURES = ("examples.png", "worst_case.png", "angles.png", "mse_histogram.png")
REPORT_FILES = (METRICS_FILE, BASELINE_METRICS_FILE, TRIVIAL_METRICS_FILE,
                PER_IMAGE_FILE) + FIGURES
CSV_COLUMNS = ("index", "true_angle_deg", "predicted_angle_deg", "angle_error_deg", "mse")
# Images kept per model for the example figure: an evenly spread sample of the split.
EXAMPLE_POOL_SIZE = 64


class MeanImageModel:
    """The trivial baseline, with the `ServingModel` interface `evaluate_models` uses: every input
    gets `image` (the mean training image, raw units [H, W, 1]) and angle 0."""

    path = "mean training image"

    def __init__(self, image: np.ndarray):
        self.image = np.asarray(image, np.float32)
        self.image_size = self.image.shape[0]

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        count = len(images)
        return {"canonical_image": np.broadcast_to(self.image, (count, *self.image.shape)),
                "angle": np.zeros(count, np.float32)}


def nearest_reference_metrics(batches: Iterable[Mapping], references: np.ndarray) -> dict:
    """`compute_metrics` of an oracle given the *true* angle: each `observed` image turned back by
    its true angle and answered with the nearest of `references` [K, H, W] (normalised; least
    squares within the inscribed disc) and the true angle. What a model that only recognises
    which of the references it sees, and is told the pose, would score."""
    size = references.shape[-1]
    disc = inscribed_disc(size).reshape(-1)
    flat = references.reshape(len(references), -1)
    masked = flat[:, disc].astype(np.float64)
    indices, angles, mse = [], [], []
    for batch in batches:
        derotated = np.asarray(rotate(batch["observed"], -batch["angle"]))
        probe = derotated.reshape(len(derotated), -1)[:, disc].astype(np.float64)
        distance = ((probe ** 2).sum(1)[:, None] - 2 * probe @ masked.T
                    + (masked ** 2).sum(1)[None, :])
        chosen = flat[np.argmin(distance, axis=1)].reshape(-1, size, size, 1)
        mse.append(per_image_mse(batch["image"], chosen))
        indices.append(batch["index"])
        angles.append(batch["angle"])
    angles = np.concatenate(angles)
    return compute_metrics(np.concatenate(indices), angles, angles, np.concatenate(mse))


def angle_error_deg(true_angle: np.ndarray, predicted_angle: np.ndarray) -> np.ndarray:
    """Predicted minus true angle (both radians), in degrees wrapped to (-180, 180]."""
    return to_degrees(np.asarray(predicted_angle, np.float64) - np.asarray(true_angle, np.float64))


def per_image_mse(truth: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Mean squared error of each image of a batch [B, ...], in float64."""
    truth = np.asarray(truth, np.float64)
    squared = np.square(np.asarray(output, np.float64) - truth)
    return squared.reshape(len(truth), -1).mean(axis=1)


def compute_metrics(index: np.ndarray, true_angle: np.ndarray, predicted_angle: np.ndarray,
                    mse: np.ndarray) -> dict:
    """The summary numbers of one evaluation, from its per-image arrays (angles in radians)."""
    mse = np.asarray(mse, np.float64)
    if mse.size == 0:
        raise ValueError("no images to compute metrics on")
    errors = angle_error_deg(true_angle, predicted_angle)
    worst = int(np.argmax(mse))  # the first of equally bad images
    return {
        "avg_mse": float(mse.mean()),
        "median_mse": float(np.median(mse)),
        "worst_mse": float(mse[worst]),
        "worst_index": int(np.asarray(index)[worst]),
        "angle_mae_deg": float(np.abs(errors).mean()),
        "angle_rmse_deg": float(np.sqrt(np.square(errors).mean())),
        "angle_mse_rad2": float(np.square(np.radians(errors)).mean()),
        "num_images": int(mse.size),
    }


@dataclasses.dataclass
class Example:
    """One test image as the figures show it: normalised [H, W] arrays, angles in radians."""

    index: int
    true_angle: float
    predicted_angle: float
    mse: float
    image: np.ndarray
    observed: np.ndarray
    output: np.ndarray


@dataclasses.dataclass
class EvaluationResult:
    """One model on one split: per-image arrays (in split order), metrics and kept images."""

    saved_model: str
    index: np.ndarray
    true_angle: np.ndarray  # radians
    predicted_angle: np.ndarray  # radians
    mse: np.ndarray
    metrics: dict
    examples: dict[int, Example]  # an evenly spread sample of the split, by index
    worst: Example

    @property
    def angle_error_deg(self) -> np.ndarray:
        return angle_error_deg(self.true_angle, self.predicted_angle)


class _Accumulator:
    """Per-image results of one model, gathered batch by batch.

    Images are kept only for the worst image so far and for the example pool: the indices that are
    multiples of a stride, doubled whenever more than `pool_size` are kept. That is an evenly spread
    sample of the split whatever its length, and the same sample for every model on the same data.
    """

    def __init__(self, path: str, pool_size: int):
        self.path = path
        self.pool_size = pool_size
        self.stride = 1
        self.pool: dict[int, Example] = {}
        self.worst: Example | None = None
        self.columns: dict[str, list[np.ndarray]] = {
            "index": [], "true_angle": [], "predicted_angle": [], "mse": []}

    def add(self, batch: Mapping[str, np.ndarray], output: np.ndarray,
            predicted_angle: np.ndarray) -> None:
        mse = per_image_mse(batch["image"], output)
        for key, value in (("index", batch["index"]), ("true_angle", batch["angle"]),
                           ("predicted_angle", predicted_angle), ("mse", mse)):
            self.columns[key].append(np.asarray(value).reshape(-1))

        def example(i: int) -> Example:
            return Example(int(batch["index"][i]), float(batch["angle"][i]),
                           float(predicted_angle[i]), float(mse[i]),
                           batch["image"][i, ..., 0].copy(), batch["observed"][i, ..., 0].copy(),
                           output[i, ..., 0].copy())

        worst = int(np.argmax(mse))
        if self.worst is None or mse[worst] > self.worst.mse:
            self.worst = example(worst)
        for i, index in enumerate(batch["index"]):
            if index % self.stride == 0:
                self.pool[int(index)] = example(i)
        while len(self.pool) > self.pool_size:
            self.stride *= 2
            self.pool = {k: v for k, v in self.pool.items() if k % self.stride == 0}

    def result(self) -> EvaluationResult:
        if self.worst is None:
            raise DataError(self.path, "the evaluation data has no images")
        arrays = {key: np.concatenate(parts) for key, parts in self.columns.items()}
        arrays["index"] = arrays["index"].astype(np.int64)
        for key in ("true_angle", "predicted_angle"):
            arrays[key] = arrays[key].astype(np.float64)
        metrics = compute_metrics(**arrays)
        return EvaluationResult(saved_model=self.path, metrics=metrics, examples=self.pool,
                                worst=self.worst, **arrays)


def estimate_frame_rotation(true_angle: np.ndarray, predicted_angle: np.ndarray) -> float:
    """ψ in radians, (-π, π]: the circular mean of true minus predicted angle, i.e. the constant
    rotation from the ground-truth frame to a model's canonical frame (module docstring)."""
    difference = np.asarray(true_angle, np.float64) - np.asarray(predicted_angle, np.float64)
    if difference.size == 0:
        raise ValueError("no angles to estimate a frame rotation from")
    return float(np.arctan2(np.sin(difference).mean(), np.cos(difference).mean()))


def least_absolute_frame_rotation(true_angle: np.ndarray, predicted_angle: np.ndarray,
                                  step_deg: float = 0.25) -> float:
    """ψ in radians, (-π, π]: the rotation on a `step_deg` grid that minimises the mean absolute
    error of predicted + ψ. Where many particles are 180° off, the circular mean
    (`estimate_frame_rotation`) shrinks (by 1 - 2 × the flipped share) and points anywhere; this
    one follows the unflipped majority."""
    difference = np.exp(1j * (np.asarray(true_angle, np.float64)
                              - np.asarray(predicted_angle, np.float64)))
    if difference.size == 0:
        raise ValueError("no angles to estimate a frame rotation from")
    offsets = np.radians(np.arange(0.0, 360.0, step_deg))
    errors = np.abs(np.angle(difference[None] * np.exp(-1j * offsets)[:, None])).mean(axis=1)
    return float(np.angle(np.exp(1j * offsets[errors.argmin()])))


def frame_aligned_errors_deg(true_angle: np.ndarray, predicted_angle: np.ndarray,
                             groups: np.ndarray | None = None,
                             estimate: Callable[[np.ndarray, np.ndarray], float]
                             = estimate_frame_rotation) -> np.ndarray:
    """|angle error| in degrees of each particle after its group's predicted angles are turned by
    the group's own ψ (`estimate(true, predicted)` over the group; one group when `groups` is
    None): the pose error of a model whose frame is arbitrary, one frame per view or class."""
    true = np.asarray(true_angle, np.float64)
    predicted = np.asarray(predicted_angle, np.float64)
    if true.shape != predicted.shape:
        raise ValueError(f"{true.size} true angles but {predicted.size} predicted ones")
    groups = np.zeros(len(true), int) if groups is None else np.asarray(groups)
    errors = np.empty(len(true))
    for group in np.unique(groups):
        members = groups == group
        psi = estimate(true[members], predicted[members])
        errors[members] = np.abs(angle_error_deg(true[members], predicted[members] + psi))
    return errors


def psi_error_summary(errors_deg: np.ndarray) -> dict:
    """Mean, median and share (%) above 15° of absolute angle errors in degrees."""
    errors = np.asarray(errors_deg, np.float64)
    if errors.size == 0:
        raise ValueError("no angle errors to summarise")
    return {"psi_mae_deg": float(np.mean(errors)), "psi_median_deg": float(np.median(errors)),
            "psi_over_15_percent": float(100 * np.mean(errors > 15))}


def probe_r2(features: np.ndarray, target: np.ndarray, folds: int = 5, ridge: float = 1e-3
             ) -> float:
    """Cross-validated R² of a ridge-regularised linear probe predicting `target` from
    `features` (contiguous folds over a shuffled order; 1 - SSE / SST over held-out rows)."""
    order = np.random.default_rng(0).permutation(len(target))
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1)[order]
    y = np.asarray(target, np.float64)[order]
    predicted = np.empty_like(y)
    for held in np.array_split(np.arange(len(y)), folds):
        fit = np.setdiff1d(np.arange(len(y)), held)
        mean, std = x[fit, :-1].mean(0), x[fit, :-1].std(0) + 1e-12
        xs = x.copy()
        xs[:, :-1] = (x[:, :-1] - mean) / std
        gram = xs[fit].T @ xs[fit] + ridge * len(fit) * np.eye(xs.shape[1])
        weights = np.linalg.solve(gram, xs[fit].T @ y[fit])
        predicted[held] = xs[held] @ weights
    return float(1 - np.square(y - predicted).sum() / np.square(y - y.mean()).sum())


def knn_r2(features: np.ndarray, target: np.ndarray, folds: int = 5, neighbours: int = 10
           ) -> float:
    """Cross-validated R² of a nonlinear read-out: each held-out row's `target` predicted as the
    mean over its `neighbours` nearest training rows in the standardised `features` (folds as in
    `probe_r2`)."""
    order = np.random.default_rng(0).permutation(len(target))
    x = np.asarray(features, np.float64)[order]
    y = np.asarray(target, np.float64)[order]
    predicted = np.empty_like(y)
    for held in np.array_split(np.arange(len(y)), folds):
        fit = np.setdiff1d(np.arange(len(y)), held)
        mean, std = x[fit].mean(0), x[fit].std(0) + 1e-12
        a, b = (x[held] - mean) / std, (x[fit] - mean) / std
        distances = (a**2).sum(1)[:, None] - 2 * a @ b.T + (b**2).sum(1)[None, :]
        nearest = np.argpartition(distances, neighbours, axis=1)[:, :neighbours]
        predicted[held] = y[fit][nearest].mean(axis=1)
    return float(1 - np.square(y - predicted).sum() / np.square(y - y.mean()).sum())


def evaluate_models(models: Sequence[ServingModel], batches: Iterable[Mapping],
                    normalization: Normalization, pool_size: int = EXAMPLE_POOL_SIZE,
                    frame_rotations: Sequence[float] | None = None) -> list[EvaluationResult]:
    """Evaluates several loaded models in one pass, so all see exactly the same inputs.

    `batches` are `eval_input` batches (normalised `image`, `observed`, `angle` in radians,
    `index`); `normalization` is the one `eval_input` returned. `frame_rotations` (one ψ in
    radians per model, see `estimate_frame_rotation`) scores each model in the ground-truth
    frame: its normalised output turned by −ψ (fill 0, as `eval_input` rotates) and its angle + ψ.
    """
    if frame_rotations is not None and len(frame_rotations) != len(models):
        raise ValueError(f"{len(frame_rotations)} frame rotations for {len(models)} models")
    accumulators = [_Accumulator(model.path, pool_size) for model in models]
    for batch in batches:
        batch = {key: np.asarray(value) for key, value in batch.items()}
        size = batch["image"].shape[1:3]
        raw_observed = np.asarray(normalization.denormalize(batch["observed"]))
        for i, (model, accumulator) in enumerate(zip(models, accumulators)):
            if size != (model.image_size, model.image_size):
                raise DataError(model.path, f"the model takes {model.image_size}x"
                                f"{model.image_size} images but the data are "
                                f"{size[0]}x{size[1]}")
            served = model.predict(raw_observed)
            output = np.asarray(normalization.normalize(served["canonical_image"]))
            angle = np.asarray(served["angle"], np.float64)
            if frame_rotations is not None:
                psi = float(frame_rotations[i])
                output = np.asarray(rotate(output, np.full(len(output), -psi, np.float32)))
                angle = angle + psi
            accumulator.add(batch, output, angle)
    results = [accumulator.result() for accumulator in accumulators]
    if frame_rotations is not None:
        for result, psi in zip(results, frame_rotations):
            result.metrics["frame_rotation_deg"] = math.degrees(psi)
    return results


# Report files.


def metrics_record(result: EvaluationResult, context: Mapping | None = None) -> dict:
    """What `metrics.json` holds: the metrics, the model path and the run's `context`."""
    return {**result.metrics, "saved_model": result.saved_model, **(context or {})}


def _write_per_image(path: str, result: EvaluationResult) -> None:
    """One row per image; angles in degrees wrapped to (-180, 180] (models may predict any
    multiple of a turn)."""
    errors = result.angle_error_deg
    true, predicted = to_degrees(result.true_angle), to_degrees(result.predicted_angle)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_COLUMNS)
        for i, index in enumerate(result.index):
            writer.writerow([int(index), f"{true[i]:.6f}", f"{predicted[i]:.6f}",
                             f"{errors[i]:.6f}", repr(float(result.mse[i]))])


def _show(axis, image: np.ndarray, title: str = "", clean: bool = True) -> None:
    """Clean images on the fixed [0, 1] scale, so outputs compare by eye; noisy input autoscaled."""
    limits = {"vmin": 0.0, "vmax": 1.0} if clean else {}
    axis.imshow(image, cmap="gray", interpolation="nearest", **limits)
    axis.set_xticks([])
    axis.set_yticks([])
    if title:
        axis.set_title(title, fontsize=8)


def select_examples(result: EvaluationResult, rows: int) -> list[int]:
    """Indices of `rows` kept images whose true angles spread over the range, in angle order."""
    kept = sorted(result.examples.values(), key=lambda e: (e.true_angle, e.index))
    if len(kept) <= rows:
        return [e.index for e in kept]
    positions = np.unique(np.round(np.linspace(0, len(kept) - 1, rows)).astype(int))
    return [kept[p].index for p in positions]


def _examples_figure(path: str, result: EvaluationResult, baseline: EvaluationResult | None,
                     rows: int) -> None:
    chosen = select_examples(result, rows)
    columns = ["ground truth", "input"] + (["baseline"] if baseline else []) + ["ours"]
    figure = Figure(figsize=(1.6 * len(columns), 1.6 * len(chosen) + 0.4), layout="constrained")
    axes = figure.subplots(len(chosen), len(columns), squeeze=False)
    for row, index in enumerate(chosen):
        ours = result.examples[index]
        angle = f"θ={math.degrees(ours.true_angle):.0f}°"
        panels = [(ours.image, "", True), (ours.observed, angle, False)]
        if baseline:
            other = baseline.examples[index]
            panels.append((other.output, f"MSE {other.mse:.4f}", True))
        panels.append((ours.output, f"MSE {ours.mse:.4f}", True))
        for column, (image, label, clean) in enumerate(panels):
            axis = axes[row, column]
            _show(axis, image, columns[column] if row == 0 else "", clean)
            axis.set_xlabel(label, fontsize=7)
        axes[row, 0].set_ylabel(f"#{index}", fontsize=8)
    figure.savefig(path, dpi=100)


def _worst_case_figure(path: str, result: EvaluationResult,
                       baseline: EvaluationResult | None) -> None:
    shown = [("ours", result)] + ([("baseline", baseline)] if baseline else [])
    figure = Figure(figsize=(5.0, 1.9 * len(shown) + 0.3), layout="constrained")
    axes = figure.subplots(len(shown), 3, squeeze=False)
    for row, (name, evaluated) in enumerate(shown):
        worst = evaluated.worst
        _show(axes[row, 0], worst.image, "ground truth")
        _show(axes[row, 1], worst.observed,
              f"input, θ={math.degrees(worst.true_angle):.0f}°", clean=False)
        _show(axes[row, 2], worst.output, f"{name}: MSE {worst.mse:.4f}")
        axes[row, 0].set_ylabel(f"worst #{worst.index}", fontsize=8)
    figure.savefig(path, dpi=100)


def _angles_figure(path: str, results: Sequence[tuple[str, EvaluationResult]]) -> None:
    figure = Figure(figsize=(4.5, 4.5), layout="constrained")
    axis = figure.subplots()
    for name, evaluated in results:
        mae = evaluated.metrics["angle_mae_deg"]
        axis.scatter(to_degrees(evaluated.true_angle), to_degrees(evaluated.predicted_angle),
                     s=4, alpha=0.5, label=f"{name} (MAE {mae:.1f}°)")
    axis.plot([-180, 180], [-180, 180], color="black", linewidth=0.8)
    ticks = np.arange(-180, 181, 90)
    axis.set_xticks(ticks)
    axis.set_yticks(ticks)
    axis.set_xlim(-185, 185)
    axis.set_ylim(-185, 185)
    axis.set_xlabel("true angle (°)")
    axis.set_ylabel("predicted angle (°)")
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)


def _mse_histogram(path: str, results: Sequence[tuple[str, EvaluationResult]]) -> None:
    figure = Figure(figsize=(5.0, 3.5), layout="constrained")
    axis = figure.subplots()
    everything = np.concatenate([evaluated.mse for _, evaluated in results])
    low, high = float(everything.min()), float(everything.max())
    bins = np.linspace(low, max(high, low + 1e-12), 50)
    for name, evaluated in results:
        axis.hist(evaluated.mse, bins=bins, alpha=0.6,
                  label=f"{name} (avg {evaluated.metrics['avg_mse']:.4f})")
    axis.set_xlabel("per-image MSE")
    axis.set_ylabel("images")
    axis.legend(fontsize=8)
    figure.savefig(path, dpi=100)


def _write_all(folder: str, result: EvaluationResult, baseline: EvaluationResult | None,
               trivial: EvaluationResult | None, context: Mapping | None,
               example_rows: int) -> None:
    def dump(name: str, evaluated: EvaluationResult) -> None:
        with open(os.path.join(folder, name), "w") as f:
            json.dump(metrics_record(evaluated, context), f, indent=2)
            f.write("\n")

    dump(METRICS_FILE, result)
    if baseline:
        dump(BASELINE_METRICS_FILE, baseline)
    if trivial:
        dump(TRIVIAL_METRICS_FILE, trivial)
    _write_per_image(os.path.join(folder, PER_IMAGE_FILE), result)
    named = [("ours", result)] + ([("baseline", baseline)] if baseline else [])
    _examples_figure(os.path.join(folder, "examples.png"), result, baseline, example_rows)
    _worst_case_figure(os.path.join(folder, "worst_case.png"), result, baseline)
    _angles_figure(os.path.join(folder, "angles.png"), named)
    _mse_histogram(os.path.join(folder, "mse_histogram.png"), named)


def write_report(output_dir: str, result: EvaluationResult,
                 baseline: EvaluationResult | None = None, context: Mapping | None = None,
                 example_rows: int = 6, trivial: EvaluationResult | None = None) -> list[str]:
    """Writes metrics.json, per_image.csv and the figures (and baseline_metrics.json,
    mean_image_metrics.json for `trivial`, the `MeanImageModel`) into `output_dir`; returns the
    paths written.

    `context` (dataset, split, angle seed...) is added to each metrics file. `baseline` and
    `trivial` must have been evaluated on the same data (see `evaluate_models`). Everything is written into a
    temporary folder first: a new `output_dir` appears only complete, and an existing one gets
    the files only once all were written (report files of an earlier run that this run does not
    write, such as a stale baseline_metrics.json, are removed); a failure leaves it as it was.
    """
    for other in (baseline, trivial):
        if other is not None and not np.array_equal(other.index, result.index):
            raise ValueError(f"{other.saved_model} was evaluated on different images")
    output_dir = os.path.abspath(output_dir)
    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(output_dir) + ".", suffix=".tmp",
                           dir=parent)
    try:
        _write_all(tmp, result, baseline, trivial, context, example_rows)
        written = sorted(os.listdir(tmp))
        if not os.path.exists(output_dir):
            os.replace(tmp, output_dir)
        else:
            for name in REPORT_FILES:
                if name not in written and os.path.isfile(os.path.join(output_dir, name)):
                    os.remove(os.path.join(output_dir, name))
            for name in written:
                os.replace(os.path.join(tmp, name), os.path.join(output_dir, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [os.path.join(output_dir, name) for name in written]
