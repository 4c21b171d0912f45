"""The training program as a library: data in, model built and compiled, `fit` with checkpoints
and TensorBoard, SavedModel out. `rotinv_tf.train` is its command-line face."""
import dataclasses
import hashlib
import math
import os
import shutil
import sys
import tempfile
import time
from typing import TextIO

import keras
import tensorflow as tf

from data_pipeline import input_fn
from data_pipeline.datasets.particle_stack import DEFAULT_HOLDOUT_FRACTION
from data_pipeline.datasets.particle_stack import ParticleStack, StackCtf
from data_pipeline.preprocessing import Normalization
from rotinv_tf.autoencoder import CTF_CORRECTIONS, FRAMES, RotationInvariantAutoencoder
from rotinv_tf.callbacks import (AverageMovingStatistics, EvalSummaries, StepDecay, TensorBoard,
                                 Throughput, WorkerBackup)
from rotinv_tf.distribution import (CLUSTERS, DEFAULT_SLURM_PORT, is_chief, make_strategy,
                                    wait_for_all_workers)
from rotinv_tf.export import export_saved_model
from rotinv_tf.networks import ARCHITECTURES
from rotinv_tf.optimizers import AUTHORS_BETA_1, adam

MODELS = ("autoencoder", "spatial_vae")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs; `rotinv_tf.options` fills it from flags."""

    name: str = "quickstart"
    dataset: str = "simulated_particles"
    dataset_options: dict = dataclasses.field(default_factory=dict)
    data_dir: str | None = None
    model: str = "autoencoder"
    epochs: int = 10
    batch_size: int = 256
    steps_per_epoch: int | None = None
    learning_rate: float = 1e-4
    critic_learning_rate: float = 1e-4
    lr_decay_epoch: int = 200
    lr_decay_factor: float = 0.1
    weight_decay: float = 1e-5  # PyTorch's: L2 added to the gradient (rotinv_tf.optimizers)
    adam_beta_1: float = AUTHORS_BETA_1
    generator_steps_per_critic_step: int = 4
    critic_steps_per_generator_step: int = 1
    gp_weight: float = 10.0
    adversarial_weight: float = 1.0  # the paper's (losses.reconstruction_loss says why)
    angle_weight: float = 1.0
    reconstruction_weight: float = 1.0
    latent_dim: int = 32
    filters: int = 32
    critic_filters: int = 16
    architecture: str = "default"  # rotinv_tf.networks.ARCHITECTURES
    angle_distribution: str = "uniform"
    angle_scale: float = math.pi
    augment_quarter_turns: bool = False
    frame: str = "auto"
    frame_angles: int = 128
    frame_momentum: float = 0.1
    frame_classes: int = 1
    ctf_correction: str = "auto"
    svae_latent_dim: int = 2
    svae_hidden_units: int = 500
    svae_num_hidden_layers: int = 2
    svae_rotation_prior_std: float = math.pi
    svae_translation_prior_std: float = 0.0
    svae_likelihood: str = "gaussian"
    svae_standardize: bool = True  # Bepler's --normalize (gaussian likelihood only)
    svae_rotation_kl_mean_penalty: bool = False  # Bepler's MNIST script: True
    model_dir: str = "runs/quickstart"
    export_dir: str = "saved_models"
    seed: int = 0
    jit_compile: bool = False
    mixed_precision: str = "float32"
    strategy: str = "default"
    cluster: str = "tf_config"
    slurm_port: int = DEFAULT_SLURM_PORT
    eval_angle_seed: int = 1234
    log_every_steps: int = 25
    verbose: int | None = None  # Keras fit verbosity; None: `fit_verbosity(sys.stdout)`

    def validate(self) -> None:
        """Raises ValueError with a one-line message for settings that cannot run."""
        checks = [
            (self.model in MODELS, f"unknown model {self.model!r}; expected one of {MODELS}"),
            (self.epochs >= 0, f"epochs must be >= 0, got {self.epochs}"),
            (self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}"),
            (self.mixed_precision in PRECISIONS,
             f"unknown mixed_precision {self.mixed_precision!r}; expected one of {PRECISIONS}"),
            (self.learning_rate > 0 and self.critic_learning_rate > 0,
             "learning rates must be > 0"),
            (self.architecture in ARCHITECTURES,
             f"unknown architecture {self.architecture!r}; expected one of {ARCHITECTURES}"),
            (self.frame in ("auto",) + FRAMES,
             f"unknown frame {self.frame!r}; expected auto or one of {FRAMES}"),
            (self.frame != "learned" or self.model == "autoencoder",
             "frame 'learned' is a frame of the autoencoder, not of spatial_vae"),
            (self.ctf_correction in ("auto",) + CTF_CORRECTIONS,
             f"unknown ctf_correction {self.ctf_correction!r}; expected auto or one of "
             f"{CTF_CORRECTIONS}"),
            (self.ctf_correction in ("auto", "none") or self.model == "autoencoder",
             "a CTF correction is a feature of the autoencoder, not of spatial_vae"),
            (self.model != "spatial_vae" or not self.svae_standardize
             or self.svae_likelihood == "gaussian",
             "svae_standardize needs the gaussian likelihood (bernoulli takes images in [0, 1])"),
            (self.cluster in CLUSTERS,
             f"unknown cluster {self.cluster!r}; expected one of {CLUSTERS}"),
            # The EM template is updated from each replica's own batch, not from the global
            # batch, so replicas' templates would drift apart.
            (self.strategy == "default" or resolved_frame(self) != "learned",
             f"frame 'learned' cannot train with strategy {self.strategy} (its EM template is "
             f"not synchronised across replicas); train it with the default strategy, or give "
             f"the stack a STAR file"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


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


def _particle_stack(config: TrainConfig) -> ParticleStack | None:
    """The run's particle stack with its metadata (None for other data sets)."""
    if config.dataset != "particle_stack" or not config.dataset_options.get("stack"):
        return None
    options = config.dataset_options
    return ParticleStack(options["stack"], options.get("star"),
                         options.get("holdout_fraction", DEFAULT_HOLDOUT_FRACTION))


def resolved_frame(config: TrainConfig) -> str:
    """The frame a run trains in: `learned` for a particle stack without angles (no STAR file,
    or one without rlnAnglePsi), `supervised` (the paper's) for everything else, unless the
    config names one."""
    if config.frame != "auto":
        return config.frame
    options = config.dataset_options
    if config.dataset != "particle_stack":
        unknown_angles = False
    elif not options.get("star"):
        unknown_angles = True
    elif not (os.path.isfile(options["star"]) and os.path.isfile(options.get("stack") or "")):
        unknown_angles = False  # loading the data reports the missing file
    else:
        unknown_angles = _particle_stack(config).angles is None
    return "learned" if unknown_angles and config.model == "autoencoder" else "supervised"


def data_description(config: TrainConfig) -> str:
    """One line on the run's metadata: a particle stack's angles and CTF, or the data set."""
    stack = _particle_stack(config)
    return stack.describe() if stack is not None else f"{config.dataset}: no CTF values"


def resolved_ctf(config: TrainConfig) -> tuple[str, StackCtf | None]:
    """The CTF correction a run trains with, and the stack's CTF: `model` for a particle stack
    whose metadata has CTF values, `none` otherwise, unless the config names one (which needs
    CTF values)."""
    stack = _particle_stack(config)
    stack_ctf = stack.ctf if stack is not None else None
    if config.ctf_correction == "auto":
        use = "model" if stack_ctf is not None and config.model == "autoencoder" else "none"
        return use, stack_ctf
    if config.ctf_correction != "none" and stack_ctf is None:
        raise ValueError(f"ctf_correction {config.ctf_correction!r} needs a particle stack whose "
                         f"STAR/.cs file has CTF values")
    return config.ctf_correction, stack_ctf


def build_model(config: TrainConfig, image_size: int,
                normalization: Normalization | None = None) -> keras.Model:
    """The model named by `config.model`, compiled with the configured optimizers and losses
    (`normalization`, the data's, is needed by a CTF correction)."""
    def optimizer(learning_rate, beta_1=config.adam_beta_1, weight_decay=config.weight_decay):
        made = adam(learning_rate, beta_1, weight_decay)
        if config.mixed_precision == "mixed_float16":
            made = keras.optimizers.LossScaleOptimizer(made)
        return made

    if config.model == "spatial_vae":
        from rotinv_tf.spatial_vae import SpatialVAE
        model = SpatialVAE(image_size=image_size, latent_dim=config.svae_latent_dim,
                           hidden_units=config.svae_hidden_units,
                           num_hidden_layers=config.svae_num_hidden_layers,
                           rotation_prior_std=config.svae_rotation_prior_std,
                           translation_prior_std=config.svae_translation_prior_std,
                           likelihood=config.svae_likelihood,
                           standardize=config.svae_standardize,
                           rotation_kl_mean_penalty=config.svae_rotation_kl_mean_penalty,
                           angle_distribution=config.angle_distribution,
                           angle_scale=config.angle_scale, seed=config.seed)
        model.compile(optimizer=optimizer(config.learning_rate, **SpatialVAE.ADAM),
                      jit_compile=config.jit_compile)
        return model
    model = RotationInvariantAutoencoder(
        image_size, config.latent_dim, filters=config.filters,
        critic_filters=config.critic_filters, angle_distribution=config.angle_distribution,
        angle_scale=config.angle_scale, seed=config.seed,
        augment_quarter_turns=config.augment_quarter_turns, frame=resolved_frame(config),
        frame_angles=config.frame_angles, frame_momentum=config.frame_momentum,
        frame_classes=config.frame_classes, architecture=config.architecture,
        **_ctf_arguments(config, normalization))
    model.compile(
        generator_optimizer=optimizer(config.learning_rate),
        critic_optimizer=optimizer(config.critic_learning_rate),
        angle_weight=config.angle_weight, reconstruction_weight=config.reconstruction_weight,
        adversarial_weight=config.adversarial_weight, gp_weight=config.gp_weight,
        generator_steps_per_critic_step=config.generator_steps_per_critic_step,
        critic_steps_per_generator_step=config.critic_steps_per_generator_step,
        jit_compile=config.jit_compile)
    return model


def _ctf_arguments(config: TrainConfig, normalization: Normalization | None) -> dict:
    """The autoencoder's CTF arguments: the correction, the optics, and raw 0 normalised."""
    correction, stack_ctf = resolved_ctf(config)
    if correction == "none":
        return {}
    if normalization is None:
        raise ValueError("a CTF correction needs the data's normalization")
    return {"ctf_correction": correction, "optics": dataclasses.asdict(stack_ctf.optics),
            "raw_zero": float(normalization.normalize(0.0))}


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


def _datasets(config: TrainConfig, global_batch: int):
    """Training and validation pipelines: every data set is validated on its `validation` split,
    so the test split is left for `evaluate`. A particle stack is streamed from its memory map
    (not cached in RAM).

    Several workers shard by data: each reads the same seeded pipeline and keeps its share of
    every global batch (sharding by file fails for a data set of fewer files than workers)."""
    options = dict(config.dataset_options)
    stack = config.dataset == "particle_stack"
    train_data, normalization = input_fn.train_input(
        config.dataset, global_batch, data_dir=config.data_dir, seed=config.seed,
        cache=not stack, **options)
    eval_data, _ = input_fn.eval_input(
        config.dataset, global_batch, split="validation",
        data_dir=config.data_dir, angle_seed=config.eval_angle_seed,
        angle_distribution=config.angle_distribution, angle_scale=config.angle_scale, **options)
    sharding = tf.data.Options()
    sharding.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (train_data.with_options(sharding), eval_data.with_options(sharding), normalization)


def train(config: TrainConfig) -> TrainResult:
    """Trains (resuming from `model_dir` if a checkpoint is there), then exports a SavedModel.

    With several workers, all run this with the same config: the chief builds a data set that is
    not there yet while the others wait, and alone writes checkpoints, logs and the SavedModel;
    the others write theirs (saving may synchronise the workers) to a temporary folder they
    delete. Every worker resumes from the chief's checkpoint. A lost worker stops the others with
    `WorkerLostError`; restarting all of them resumes from the last epoch's checkpoint.
    """
    config.validate()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    strategy = make_strategy(config.strategy, config.cluster, config.slurm_port)
    chief = is_chief(strategy)
    scratch = None if chief else tempfile.mkdtemp(prefix="rotinv_worker_")
    try:
        try:
            if chief:
                train_data, eval_data, normalization = _datasets(config, config.batch_size)
            wait_for_all_workers(strategy)
            if not chief:
                train_data, eval_data, normalization = _datasets(config, config.batch_size)
            return _fit_and_export(config, strategy, train_data, eval_data, normalization,
                                   scratch)
        except tf.errors.UnavailableError as e:
            if config.strategy != "multi_worker":
                raise
            first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WorkerLostError(
                f"a worker was lost ({first_line}); restart every worker with the same command "
                f"to resume from {os.path.join(config.model_dir, 'checkpoints')}") from e
    finally:
        if scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def _adapt_to_multi_worker(model: keras.Model, strategy: tf.distribute.Strategy) -> None:
    """Works around two places where Keras (3.15) `fit` fails under MultiWorkerMirroredStrategy.

    - It begins by all-reducing a first batch to build the model, which fails for a batch of
      several tensors (our dicts). The models here are built when made, so only their optimizers
      may be left to build, which needs no batch: build those and skip that step.
    - It averages each step's logs over replicas with `reduce(MEAN, axis=0)`, which fails for the
      scalars our steps return; each is returned as a vector of one value instead.
    """
    if not model.built:
        raise ValueError(f"{type(model).__name__} must be built when made")
    with strategy.scope():
        for optimizer in optimizers_of(model):
            if not optimizer.built:
                optimizer.build(model.trainable_variables)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None

    def as_vectors(step):
        return lambda batch: {k: tf.reshape(v, [1]) for k, v in step(batch).items()}

    model.train_step = as_vectors(model.train_step)
    model.test_step = as_vectors(model.test_step)


def _fit_and_export(config: TrainConfig, strategy: tf.distribute.Strategy,
                    train_data: tf.data.Dataset, eval_data: tf.data.Dataset,
                    normalization, scratch: str | None) -> TrainResult:
    """`train` once the data is there. Checkpoints, logs and the SavedModel go to the run's
    folders, or under `scratch` on a worker that is not the chief."""
    write_dir = scratch or config.model_dir
    image_size = int(train_data.element_spec["image"].shape[1])
    with strategy.scope():
        model = build_model(config, image_size, normalization)
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multi_worker:
        _adapt_to_multi_worker(model, strategy)
    log_dir = os.path.join(write_dir, "logs")
    summary_batch = next(iter(eval_data.unbatch().batch(256).take(1)))
    callbacks = [AverageMovingStatistics(strategy)] if multi_worker else []
    callbacks += [
        Throughput(config.batch_size),
        StepDecay(optimizers_of(model), [config.learning_rate, config.critic_learning_rate],
                  config.lr_decay_epoch, config.lr_decay_factor),
        WorkerBackup(os.path.join(config.model_dir, "checkpoints"),
                     os.path.join(write_dir, "checkpoints")),
        EvalSummaries(log_dir, summary_batch),
        TensorBoard(log_dir, update_freq=config.log_every_steps),
    ]
    start = time.perf_counter()
    history = model.fit(train_data, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                        validation_data=eval_data, callbacks=callbacks, shuffle=False,
                        verbose=fit_verbosity(sys.stdout) if config.verbose is None
                        else config.verbose)
    seconds = time.perf_counter() - start
    export_path = export_saved_model(
        model, normalization, image_size,
        os.path.join(scratch, "saved_models") if scratch else config.export_dir, config.name)
    return TrainResult(history=history.history, export_path=None if scratch else export_path,
                       model_dir=config.model_dir, log_dir=os.path.join(config.model_dir, "logs"),
                       seconds=seconds, weights_digest=weights_digest(model))
