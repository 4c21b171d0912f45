"""Table 1's scores: a data set's seeded evaluation inputs and each model's numbers on them (raw
and in the ground truth's frame), the trivial baselines, and the split statistics."""
import numpy as np
import tensorflow as tf

from benchmarks.table1.plan import DATA, MEAN_IMAGE, NEAREST_CANONICAL, Schedule, test_parts
from data_pipeline import datasets, input_fn
from data_pipeline.preprocessing import mean_image
from data_pipeline.simulator import Simulator, SimulationConfig
from rotinv_tf import evaluation

# The numbers aggregated over seeds, per test part and frame.
SCORES = ("avg_mse", "worst_mse", "median_mse", "angle_mae_deg", "angle_rmse_deg",
          "angle_mse_rad2")


def split_sizes(key: str, schedule: Schedule, options: dict, data_dir: str | None) -> dict:
    """Image counts of a data set's train and validation splits and of its test parts."""
    spec = DATA[key]
    sizes = {split: datasets.num_examples(spec.dataset, split, data_dir, **options)
             for split in ("train", "validation")}
    sizes["test"] = sum(datasets.num_examples(spec.dataset, split, data_dir, **part_options)
                        for part_options, split in test_parts(key, schedule, options).values())
    return sizes


def split_statistics(images: dict) -> dict:
    """split -> {"images", "distinct_canonical"}, from split -> canonical images [N, H, W(, 1)]:
    how many distinct targets each split holds (discrete conformations: one per conformation;
    continuous ones: one per particle)."""
    return {split: {"images": int(len(stack)),
                    "distinct_canonical": int(len(np.unique(np.reshape(stack, (len(stack), -1)),
                                                            axis=0)))}
            for split, stack in images.items()}


def hinge_intervals(key: str, schedule: Schedule, options: dict) -> dict:
    """split -> [lo, hi] hinge angle (degrees) of the simulated particles; {} for other data."""
    if DATA[key].dataset == "mnist":
        return {}
    config = SimulationConfig(**options["simulation"])
    edge = config.num_train_conformations / config.num_conformations
    lo, mid, hi = np.degrees(Simulator(config).hinge_angle(np.array([0.0, edge, 1.0])))
    seen = [round(float(lo), 1), round(float(mid), 1)]
    intervals = {"train": seen, "validation": seen}
    for part, (_, split) in test_parts(key, schedule, options).items():
        intervals[part] = seen if split == "train" else [round(float(mid), 1), round(float(hi), 1)]
    return intervals


def _images(dataset: tf.data.Dataset) -> np.ndarray:
    return np.concatenate([batch[..., 0] for batch in
                           dataset.map(lambda e: e["image"]).batch(1024).as_numpy_iterator()])


def metric_row(metrics: dict) -> dict:
    """The Table 1 numbers of one evaluation."""
    row = {key: metrics[key] for key in SCORES + ("num_images",)}
    if "frame_rotation_deg" in metrics:
        row["frame_rotation_deg"] = metrics["frame_rotation_deg"]
    return row


def nearest_canonical_row(batches, references: np.ndarray) -> dict:
    """The oracle baseline's Table 1 numbers (`evaluation.nearest_reference_metrics`): each test
    particle turned back by its *true* angle and answered with the nearest of the training
    canonical `references` [K, H, W] (normalised), with the true angle."""
    row = metric_row(evaluation.nearest_reference_metrics(batches, references))
    return {"raw": row, "aligned": {**row, "frame_rotation_deg": 0.0}}


class Scorer:
    """A data set's evaluation inputs, all on the training split's normalisation: validation (for
    ψ) and each test part, with the fixed seeded angles."""

    def __init__(self, key: str, schedule: Schedule, options: dict, data_dir: str | None,
                 eval_angle_seed: int):
        self.key, self.options, self.data_dir = key, options, data_dir
        self.eval_angle_seed = eval_angle_seed
        self.train, self.normalization = datasets.load(DATA[key].dataset, "train", data_dir,
                                                       **options)
        self.parts = test_parts(key, schedule, options)

    def batches(self, options: dict, split: str) -> tf.data.Dataset:
        spec = DATA[self.key]
        return input_fn.eval_input(
            spec.dataset, 256, split=split, data_dir=self.data_dir,
            angle_seed=self.eval_angle_seed, angle_distribution=spec.angle_distribution,
            angle_scale=spec.angle_scale, normalization=self.normalization, **options)[0]

    def frame_rotations(self, models: list) -> list[float]:
        """ψ of each model (radians), fitted on the validation split."""
        fitted = evaluation.evaluate_models(
            models, self.batches(self.options, "validation").as_numpy_iterator(),
            self.normalization)
        return [evaluation.estimate_frame_rotation(r.true_angle, r.predicted_angle)
                for r in fitted]

    def score(self, models: list, psi: list[float]) -> tuple[list[dict], dict]:
        """Per model {part: {"raw": row, "aligned": row}}, and part -> (raw, aligned) lists of
        `EvaluationResult` (for the figures)."""
        rows: list[dict] = [{} for _ in models]
        results = {}
        for part, (options, split) in self.parts.items():
            raw = evaluation.evaluate_models(models, self.batches(options, split)
                                             .as_numpy_iterator(), self.normalization)
            aligned = evaluation.evaluate_models(models, self.batches(options, split)
                                                 .as_numpy_iterator(), self.normalization,
                                                 frame_rotations=psi)
            for row, r, a in zip(rows, raw, aligned):
                row[part] = {"raw": metric_row(r.metrics), "aligned": metric_row(a.metrics)}
            results[part] = (raw, aligned)
        return rows, results

    def mean_image_model(self) -> evaluation.MeanImageModel:
        return evaluation.MeanImageModel(mean_image(self.train.map(lambda e: e["image"])))

    def baselines(self, schedule: Schedule) -> dict:
        """The baselines unit: the mean image's and the oracle's rows per part (seed-free), and
        the split statistics."""
        # The mean image has no frame: turning it by a ψ fitted to its constant angle only blurs.
        (mean_rows,), _ = self.score([self.mean_image_model()], [0.0])
        train_images = _images(self.train)
        references = np.unique(np.asarray(self.normalization.normalize(train_images), np.float32),
                               axis=0)
        oracle = {part: nearest_canonical_row(self.batches(options, split).as_numpy_iterator(),
                                              references)
                  for part, (options, split) in self.parts.items()}
        dataset = DATA[self.key].dataset
        images = {"train": train_images, "validation": _images(datasets.load(
            dataset, "validation", self.data_dir, **self.options)[0])}
        for part, (options, split) in self.parts.items():
            images[part] = _images(datasets.load(dataset, split, self.data_dir, **options)[0])
        return {"units": [{"dataset": self.key, "method": MEAN_IMAGE, "seed": None,
                           "parts": mean_rows},
                          {"dataset": self.key, "method": NEAREST_CANONICAL, "seed": None,
                           "parts": oracle}],
                "splits": split_statistics(images),
                "hinge_deg": hinge_intervals(self.key, schedule, self.options)}
