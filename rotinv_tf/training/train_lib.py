"""The training program as a library: data in, model built and compiled, `fit` (`loop.fit` on
several workers) with checkpoints and TensorBoard, SavedModel out. `rotinv_tf.train` is its
command-line face."""
import dataclasses
import hashlib
import os
import shutil
import sys
import tempfile
import time
from typing import Sequence, TextIO

import keras
import tensorflow as tf

from data_pipeline import input_fn
from data_pipeline.errors import DataError
from data_pipeline.outputs import check_output_dir
from data_pipeline.preprocessing import Normalization
from rotinv_tf import config as configs
from rotinv_tf.config import Config
from rotinv_tf.models.autoencoder import RotationInvariantAutoencoder
from rotinv_tf.models.networks import image_size_problems
from rotinv_tf.models.spatial_vae import SpatialVAE
from rotinv_tf.serving.export import export_saved_model
from rotinv_tf.training import loop, optimizers
from rotinv_tf.training.callbacks import (AverageMovingStatistics, CpuBudget, EpochBackup,
                                          EvalSummaries, StepDecay, StepSummaries, Throughput,
                                          restore_backup)
from rotinv_tf.training.distribution import is_chief, make_strategy, wait_for_all_workers
from rotinv_tf.training.resolve import particle_stack, resolve


@dataclasses.dataclass
class TrainResult:
    """What a run produced: Keras history (epochs run now), the export, where logs live, time."""

    history: dict
    export_path: str | None  # None on a worker that is not the chief (the chief exports)
    model_dir: str
    log_dir: str
    seconds: float
    weights_digest: str


class WorkerLostError(RuntimeError):
    """A multi-worker run stopped because a worker could no longer be reached."""


def weights_digest(model: keras.Model) -> str:
    """SHA-256 of the model's weights in order: equal on every worker of a synchronous run."""
    digest = hashlib.sha256()
    for variable in model.weights:
        digest.update(keras.ops.convert_to_numpy(variable).tobytes())
    return digest.hexdigest()


def data_description(config: Config) -> str:
    """One line on the run's metadata: a particle stack's angles and CTF, or the data set."""
    stack = particle_stack(config)
    return stack.describe() if stack is not None else f"{config.data.dataset}: no CTF values"


def build_model(config: Config, image_size: int,
                normalization: Normalization | None = None) -> keras.Model:
    """The model `config.model` names, with its settings, compiled with the configured
    optimizers (`normalization`, the data's, is needed by a CTF correction). `config` is
    resolved (`resolve`); the autoencoder takes an `auto` left as data with angles and without
    CTF values."""
    schedule = config.schedule

    def adam(learning_rate: float, beta_1: float = schedule.adam_beta_1,
             weight_decay: float = schedule.weight_decay) -> keras.optimizers.Optimizer:
        optimizer = optimizers.adam(learning_rate, beta_1, weight_decay)
        if config.runtime.mixed_precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    common = {"angle_distribution": config.data.angle_distribution,
              "angle_scale": config.data.angle_scale, "seed": config.runtime.seed}
    jit_compile = config.runtime.jit_compile
    if config.model.name == "spatial_vae":
        model = SpatialVAE(image_size, **common,
                           **dataclasses.asdict(config.model.spatial_vae))
        model.compile(optimizer=adam(schedule.learning_rate, **SpatialVAE.ADAM),
                      jit_compile=jit_compile)
        model.optimizer.build(model.trainable_variables)  # so a restored backup finds its slots
        return model
    raw_zero = 0.0 if normalization is None else float(normalization.normalize(0.0))
    model = RotationInvariantAutoencoder(image_size, **common, raw_zero=raw_zero,
                                         **dataclasses.asdict(config.model.autoencoder))
    if model.uses_ctf and normalization is None:
        raise ValueError("a CTF correction needs the data's normalization")
    model.compile(adam(schedule.learning_rate), adam(schedule.critic_learning_rate),
                  jit_compile=jit_compile)
    return model


def optimizers_of(model: keras.Model) -> list:
    """The model's optimizers, generator's first."""
    if isinstance(model, RotationInvariantAutoencoder):
        return [model.generator_optimizer, model.critic_optimizer]
    return [model.optimizer]


def fit_verbosity(stream: TextIO) -> int:
    """Keras fit's `verbose` for output to `stream`: the progress bar (1) on a terminal, one line
    per epoch (2) otherwise, since a log file gets the bar's every redraw on one endless line."""
    isatty = getattr(stream, "isatty", None)
    return 1 if isatty is not None and isatty() else 2


def _datasets(config: Config, global_batch: int):
    """Training and validation pipelines: every data set is validated on its `validation` split,
    so the test split is left for `evaluate`. A particle stack is streamed from its memory map
    (not cached in RAM).

    Several workers shard by data: each reads the same seeded pipeline and keeps its share of
    every global batch (sharding by file fails for a data set of fewer files than workers)."""
    data = config.data
    options = data.load_options()
    train_data, normalization = input_fn.train_input(
        data.dataset, global_batch, data_dir=data.data_dir, seed=config.runtime.seed, **options)
    eval_data, _ = input_fn.eval_input(
        data.dataset, global_batch, split="validation",
        data_dir=data.data_dir, angle_seed=data.eval_angle_seed,
        angle_distribution=data.angle_distribution, angle_scale=data.angle_scale, **options)
    sharding = tf.data.Options()
    sharding.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (train_data.with_options(sharding), eval_data.with_options(sharding), normalization)


def check_run(config: Config) -> None:
    """DataError for what would otherwise fail only once the run has started: a run or export
    folder that cannot be written, or a particle stack whose box the autoencoder cannot take."""
    runtime = config.runtime
    check_output_dir(runtime.run_dir)
    check_output_dir(os.path.join(runtime.export_dir, runtime.name))
    stack = particle_stack(config)
    if stack is not None and config.model.name == "autoencoder":
        problems = image_size_problems(config.model.autoencoder.architecture, stack.height)
        if problems:
            raise DataError(stack.path, f"box of {stack.height}x{stack.width} pixels: "
                                        + "; ".join(problems))


def record_config(config: Config) -> list[str]:
    """Writes `config.json` into the run's folder; returns how it differs from the one a previous
    run left there (empty for a new run or the same config)."""
    path = os.path.join(config.runtime.run_dir, configs.CONFIG_FILE)
    changes = configs.differences(configs.load(path), config) if os.path.isfile(path) else []
    os.makedirs(config.runtime.run_dir, exist_ok=True)
    configs.save(config, config.runtime.run_dir)
    return changes


def train(config: Config, verbose: int | None = None,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Trains (resuming from the run's `model_dir` if a checkpoint is there), then exports a
    SavedModel. `verbose`: Keras fit verbosity (None: `fit_verbosity(sys.stdout)`); `callbacks`
    run after the run's own, before the export (e.g. one that restores the best epoch's weights).

    With several workers, all run this with the same config: the chief builds a data set that is
    not there yet while the others wait, and alone writes checkpoints, logs, config.json and the
    SavedModel; the others write theirs (saving may synchronise the workers) to a temporary
    folder they delete. Every worker resumes from the chief's checkpoint. A lost worker stops the
    others with `WorkerLostError`; restarting all of them resumes from the last epoch's
    checkpoint. `check_run` and `resolve` fail first, before any data is built or anything
    written; the run trains with, and saves, the resolved config.
    """
    config.check()
    check_run(config)
    config = resolve(config)
    runtime = config.runtime
    keras.utils.set_random_seed(runtime.seed)
    keras.mixed_precision.set_global_policy(runtime.mixed_precision)
    strategy = make_strategy(runtime.strategy, runtime.cluster, runtime.slurm_port)
    chief = is_chief(strategy)
    scratch = None if chief else tempfile.mkdtemp(prefix="rotinv_worker_")
    try:
        try:
            if chief:
                changes = record_config(config)
                if changes:
                    print(f"Resuming {runtime.run_dir} with a different config:\n  "
                          + "\n  ".join(changes), flush=True)
                train_data, eval_data, normalization = _datasets(config, config.schedule.batch_size)
            wait_for_all_workers(strategy)
            if not chief:
                train_data, eval_data, normalization = _datasets(config, config.schedule.batch_size)
            return _fit_and_export(config, strategy, train_data, eval_data, normalization,
                                   scratch, verbose, callbacks)
        except tf.errors.UnavailableError as e:
            if runtime.strategy != "multi_worker":
                raise
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WorkerLostError(
                f"a worker was lost ({first_line}); restart every worker with the same command "
                f"to resume from {os.path.join(runtime.run_dir, 'checkpoints')}") from e
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def one_iterator(train_data: tf.data.Dataset, steps_per_epoch: int | None
                 ) -> tuple[tf.data.Dataset, int | None]:
    """(data, steps per epoch) for `fit` to read every epoch from one iterator: a data set of
    known length is repeated and an epoch is its length (unless `steps_per_epoch` says); each
    repetition is reshuffled as a fresh iterator would be. Without steps, Keras (3.15) makes two
    iterators at each epoch boundary and drops the first, whose prefetch has already started
    filling the shuffle buffer: on a busy 2-core machine that cost 1-10 s per epoch (of 5-10 s
    epochs of 1,000 particles; issue 15). The dropped iterator also drew a shuffle seed, so epochs
    after the first now see the seeded shuffle's next orders rather than every other one."""
    count = int(train_data.cardinality())
    if steps_per_epoch or count <= 0:
        return train_data, steps_per_epoch or None
    return train_data.repeat(), count


def _start_frame(config: Config, model: keras.Model, train_data: tf.data.Dataset) -> None:
    """A frame that starts from particles (a learned frame with several templates) starts from
    the first `frame.start_particles` training particles (a resumed run's checkpoint then
    replaces what it learned)."""
    count = model.frame.start_particles if isinstance(model, RotationInvariantAutoencoder) else 0
    if count:
        batch = next(iter(train_data.unbatch().batch(count).take(1)))
        model.start_frame(batch, seed=config.runtime.seed)


def _finish_frame(model: keras.Model, train_data: tf.data.Dataset) -> None:
    """A frame finished after training (a learned frame: near-symmetric classes' orientation,
    the features it serves; `RotationInvariantAutoencoder.finish_frame`) on
    `frame.finish_particles` training particles."""
    count = model.frame.finish_particles if isinstance(model, RotationInvariantAutoencoder) else 0
    if count:
        model.finish_frame(next(iter(train_data.unbatch().batch(count).take(1))))


def _fit_and_export(config: Config, strategy: tf.distribute.Strategy,
                    train_data: tf.data.Dataset, eval_data: tf.data.Dataset,
                    normalization, scratch: str | None, verbose: int | None,
                    extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """`train` once the data is there. Checkpoints, logs and the SavedModel go to the run's
    folders, or under `scratch` on a worker that is not the chief."""
    schedule, runtime = config.schedule, config.runtime
    write_dir = scratch or runtime.run_dir
    image_size = int(train_data.element_spec["image"].shape[1])
    with strategy.scope():
        model = build_model(config, image_size, normalization)
    _start_frame(config, model, train_data)
    initial_epoch = restore_backup(model, os.path.join(runtime.run_dir, "checkpoints"))
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    log_dir = os.path.join(write_dir, "logs")
    summary_batch = next(iter(eval_data.unbatch().batch(256).take(1)))
    callbacks = [AverageMovingStatistics(strategy)] if multi_worker else []
    callbacks += [
        Throughput(schedule.batch_size),
        StepDecay(optimizers_of(model), [schedule.learning_rate, schedule.critic_learning_rate],
                  schedule.lr_decay_epoch, schedule.lr_decay_factor),
        EpochBackup(os.path.join(write_dir, "checkpoints")),
        EvalSummaries(log_dir, summary_batch),
        StepSummaries(log_dir, runtime.log_every_steps),
        keras.callbacks.TensorBoard(log_dir, update_freq="epoch"),
    ]
    if schedule.max_train_cpu_seconds:
        callbacks.append(CpuBudget(schedule.max_train_cpu_seconds))
    callbacks += list(extra_callbacks)
    epochs_data, steps_per_epoch = one_iterator(train_data, schedule.steps_per_epoch)
    arguments = {"epochs": schedule.epochs, "steps_per_epoch": steps_per_epoch,
                 "initial_epoch": initial_epoch, "validation_data": eval_data,
                 "callbacks": callbacks,
                 "verbose": fit_verbosity(sys.stdout) if verbose is None else verbose}
    start = time.perf_counter()
    if multi_worker:  # Keras fit cannot run there (see `loop`)
        history = loop.fit(model, strategy, epochs_data, **arguments)
    else:
        history = model.fit(epochs_data, shuffle=False, **arguments)
    seconds = time.perf_counter() - start
    _finish_frame(model, train_data)
    export_path = export_saved_model(
        model, normalization, image_size,
        os.path.join(scratch, "saved_models") if scratch else runtime.export_dir, runtime.name,
        config_json=config.to_json())
    return TrainResult(history=history.history, export_path=None if scratch else export_path,
                       model_dir=runtime.run_dir, log_dir=os.path.join(runtime.run_dir, "logs"),
                       seconds=seconds, weights_digest=weights_digest(model))
