"""Table 1's runtime estimate, printed before a run and written into the table: training images
over measured throughputs, validation and test passes, fixed costs."""
from benchmarks.table1.plan import METHODS, Run, Schedule, steps_per_epoch

# Training images/s on this project's idle 2-core machine, measured: ours with the authors'
# networks (--architecture=paper) ~2,000 at 28x28 and ~1,000 at 40x40 (its critic at 40x40 is the
# dearest part); spatial-VAE with the original's 2x500 MLP ~46 at 40x40 (its generator runs once
# per pixel) and ~90 at 28x28. `estimate_seconds` uses these, rounded down.
ASSUMED_IMAGES_PER_SECOND = {
    ("simulated_5hdb", "ours"): 900.0, ("rotated_mnist", "ours"): 1800.0,
    ("simulated_5hdb", "spatial_vae"): 46.0, ("rotated_mnist", "spatial_vae"): 90.0,
}
# Evaluating an image (validation each epoch, the test passes) costs about a third of a training
# step's. Fixed costs, rounded up: per trained unit (tracing, export, loading) 30 s; per data set
# (building it, the baselines unit, the figures) 120 s: simulating the 20,000 continuous particles
# takes ~60 s, each particle being projected in its own conformation.
EVAL_SPEEDUP = 3.0
SECONDS_PER_RUN = 30.0
SECONDS_PER_DATASET = 120.0


def assumed_rate(key: str, method: str) -> float:
    """Training images/s of `method` on data set `key` (the ablation trains as ours)."""
    return ASSUMED_IMAGES_PER_SECOND[(key, "spatial_vae" if method == "spatial_vae" else "ours")]


def minutes(seconds: float) -> str:
    """A duration as the table gives it."""
    return f"{seconds / 60:.1f} min"


def unit_seconds(run: Run, rate: float, sizes: dict) -> float:
    """Expected wall time of one trained unit at `rate` training images/s: its training, each
    epoch's validation, ψ's fit on validation and the raw and aligned test passes."""
    trained = run.epochs * steps_per_epoch(run, sizes["train"]) * run.batch_size
    evaluated = (run.epochs + 1) * sizes["validation"] + 2 * sizes["test"]
    return trained / rate + evaluated / (EVAL_SPEEDUP * rate) + SECONDS_PER_RUN


def estimate_seconds(schedule: Schedule, sizes: dict, num_seeds: int) -> float:
    """Expected wall time of every unit of the data sets in `sizes` (data set key -> {"train",
    "validation", "test"} image counts, test summed over the parts) on the idle 2-core machine."""
    total = 0.0
    for key, size in sizes.items():
        total += SECONDS_PER_DATASET
        for method in METHODS:
            total += num_seeds * unit_seconds(schedule.runs[(key, method)],
                                              assumed_rate(key, method), size)
    return total
