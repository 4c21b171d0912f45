"""The training program as a library: data in, model built and compiled, `fit` with checkpoints
and TensorBoard, SavedModel out. `rotinv_tf.train` is its command-line face."""
import dataclasses
import math
import os
import sys
import time
from typing import TextIO

import keras
import tensorflow as tf

from data_pipeline import input_fn
from rotinv_tf.autoencoder import FRAMES, RotationInvariantAutoencoder
from rotinv_tf.callbacks import EvalSummaries, StepDecay, TensorBoard, Throughput
from rotinv_tf.distribution import make_strategy
from rotinv_tf.export import export_saved_model

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
    weight_decay: float = 1e-5
    generator_steps_per_critic_step: int = 4
    critic_steps_per_generator_step: int = 1
    gp_weight: float = 10.0
    adversarial_weight: float = 0.01
    angle_weight: float = 1.0
    reconstruction_weight: float = 1.0
    latent_dim: int = 32
    filters: int = 32
    critic_filters: int = 16
    angle_distribution: str = "uniform"
    angle_scale: float = math.pi
    augment_quarter_turns: bool = False
    frame: str = "auto"
    frame_angles: int = 128
    frame_momentum: float = 0.1
    svae_latent_dim: int = 2
    svae_hidden_units: int = 500
    svae_num_hidden_layers: int = 2
    svae_rotation_prior_std: float = math.pi
    svae_translation_prior_std: float = 0.0
    svae_likelihood: str = "gaussian"
    model_dir: str = "runs/quickstart"
    export_dir: str = "saved_models"
    seed: int = 0
    jit_compile: bool = False
    mixed_precision: str = "float32"
    strategy: str = "default"
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
            (self.frame in ("auto",) + FRAMES,
             f"unknown frame {self.frame!r}; expected auto or one of {FRAMES}"),
            (self.frame != "learned" or self.model == "autoencoder",
             "frame 'learned' is a frame of the autoencoder, not of spatial_vae"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


@dataclasses.dataclass
class TrainResult:
    """What a run produced: Keras history (epochs run now), the export, where logs live, time."""

    history: dict
    export_path: str
    model_dir: str
    log_dir: str
    seconds: float


def resolved_frame(config: TrainConfig) -> str:
    """The frame a run trains in: `learned` for a particle stack without angles (no STAR file),
    `supervised` (the paper's) for everything else, unless the config names one."""
    if config.frame != "auto":
        return config.frame
    options = config.dataset_options
    unknown_angles = config.dataset == "particle_stack" and not options.get("star")
    return "learned" if unknown_angles and config.model == "autoencoder" else "supervised"


def build_model(config: TrainConfig, image_size: int) -> keras.Model:
    """The model named by `config.model`, compiled with the configured optimizers and losses."""
    def adam(learning_rate):
        optimizer = keras.optimizers.Adam(learning_rate, weight_decay=config.weight_decay or None)
        if config.mixed_precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    if config.model == "spatial_vae":
        from rotinv_tf.spatial_vae import SpatialVAE
        model = SpatialVAE(image_size=image_size, latent_dim=config.svae_latent_dim,
                           hidden_units=config.svae_hidden_units,
                           num_hidden_layers=config.svae_num_hidden_layers,
                           rotation_prior_std=config.svae_rotation_prior_std,
                           translation_prior_std=config.svae_translation_prior_std,
                           likelihood=config.svae_likelihood,
                           angle_distribution=config.angle_distribution,
                           angle_scale=config.angle_scale, seed=config.seed)
        model.compile(optimizer=adam(config.learning_rate), jit_compile=config.jit_compile)
        return model
    model = RotationInvariantAutoencoder(
        image_size, config.latent_dim, filters=config.filters,
        critic_filters=config.critic_filters, angle_distribution=config.angle_distribution,
        angle_scale=config.angle_scale, seed=config.seed,
        augment_quarter_turns=config.augment_quarter_turns, frame=resolved_frame(config),
        frame_angles=config.frame_angles, frame_momentum=config.frame_momentum)
    model.compile(
        generator_optimizer=adam(config.learning_rate),
        critic_optimizer=adam(config.critic_learning_rate),
        angle_weight=config.angle_weight, reconstruction_weight=config.reconstruction_weight,
        adversarial_weight=config.adversarial_weight, gp_weight=config.gp_weight,
        generator_steps_per_critic_step=config.generator_steps_per_critic_step,
        critic_steps_per_generator_step=config.critic_steps_per_generator_step,
        jit_compile=config.jit_compile)
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


def _datasets(config: TrainConfig, global_batch: int):
    """Training and validation pipelines. A particle stack is streamed from its memory map (not
    cached in RAM) and validated on its held-out `validation` split; the other data sets keep
    their `test` split for validation."""
    options = dict(config.dataset_options)
    stack = config.dataset == "particle_stack"
    train_data, normalization = input_fn.train_input(
        config.dataset, global_batch, data_dir=config.data_dir, seed=config.seed,
        cache=not stack, **options)
    eval_data, _ = input_fn.eval_input(
        config.dataset, global_batch, split="validation" if stack else "test",
        data_dir=config.data_dir, angle_seed=config.eval_angle_seed,
        angle_distribution=config.angle_distribution, angle_scale=config.angle_scale, **options)
    return train_data, eval_data, normalization


def train(config: TrainConfig) -> TrainResult:
    """Trains (resuming from `model_dir` if a checkpoint is there), then exports a SavedModel."""
    config.validate()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.mixed_precision)
    strategy = make_strategy(config.strategy)
    train_data, eval_data, normalization = _datasets(config, config.batch_size)
    image_size = int(train_data.element_spec["image"].shape[1])
    with strategy.scope():
        model = build_model(config, image_size)
    log_dir = os.path.join(config.model_dir, "logs")
    summary_batch = next(iter(eval_data.unbatch().batch(256).take(1)))
    callbacks = [
        Throughput(config.batch_size),
        StepDecay(optimizers_of(model), [config.learning_rate, config.critic_learning_rate],
                  config.lr_decay_epoch, config.lr_decay_factor),
        keras.callbacks.BackupAndRestore(os.path.join(config.model_dir, "checkpoints"),
                                         delete_checkpoint=False),
        EvalSummaries(log_dir, summary_batch),
        TensorBoard(log_dir, update_freq=config.log_every_steps),
    ]
    start = time.perf_counter()
    history = model.fit(train_data, epochs=config.epochs, steps_per_epoch=config.steps_per_epoch,
                        validation_data=eval_data, callbacks=callbacks, shuffle=False,
                        verbose=fit_verbosity(sys.stdout) if config.verbose is None
                        else config.verbose)
    seconds = time.perf_counter() - start
    export_path = export_saved_model(model, normalization, image_size, config.export_dir,
                                     config.name)
    return TrainResult(history=history.history, export_path=export_path,
                       model_dir=config.model_dir, log_dir=log_dir, seconds=seconds)
