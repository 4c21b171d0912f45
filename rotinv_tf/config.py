"""A run's configuration: nested dataclasses from which the command-line flags are generated.

    Config
    ├── data      DataConfig (data_pipeline.settings), with its SimulationConfig (flags `sim_*`)
    ├── model     which model, and one dataclass per model: exactly its constructor's settings
    │             (AutoencoderConfig, flags as named; SpatialVAEConfig, flags `svae_*`)
    ├── schedule  epochs, batch size, optimiser settings
    └── runtime   names, folders, seed, precision, distribution

A setting is one field (default, help text and allowed values in one place); `define_flags` makes
its flag for `train` and `evaluate`, `from_flags` reads it back, `problems`/`check` validate the
whole configuration: every value a constructor would refuse is found here, before a run writes
anything. `resolved(DataFacts)` replaces every `auto` setting from facts about the data (read by
`rotinv_tf.training.resolve`, since this module reads no data). A run writes its resolved config as
`config.json` into `model_dir` and into the SavedModel's assets (`save`/`load`), so evaluating or
canonicalizing a model needs no flagfile.
"""
import dataclasses
import json
import os
from typing import Any

from absl import flags

from data_pipeline import settings
from data_pipeline.atomic import write_text
from data_pipeline.settings import DataConfig, section, setting
from rotinv_tf.models import ctf_corrections, frames
from rotinv_tf.models.losses import RECONSTRUCTION_NORMS
from rotinv_tf.models.networks import ARCHITECTURES, image_size_problems, light_architecture
from rotinv_tf.pose import template_frame
from rotinv_tf.training.distribution import CLUSTERS, DEFAULT_SLURM_PORT, STRATEGIES

CONFIG_FILE = "config.json"
MODELS = ("autoencoder", "spatial_vae")
# A mode's name is its class's, in its module's registry: a new one touches that module alone.
FRAMES = tuple(frames.FRAMES)
CTF_CORRECTIONS = tuple(ctf_corrections.CORRECTIONS)
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
LIKELIHOODS = ("gaussian", "bernoulli")


@dataclasses.dataclass(frozen=True)
class DataFacts:
    """What the `auto` settings are resolved from, read from a run's data before it trains
    (`rotinv_tf.training.resolve`): whether each particle comes with its in-plane angle (every
    data set but a particle stack whose metadata has no rlnAnglePsi), and with its CTF values."""

    angles: bool = True
    ctf: bool = False
    image_size: int | None = None  # a particle stack's box (None: not a stack)


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
    """The settings of `RotationInvariantAutoencoder` (ours); see its docstring."""

    latent_dim: int = setting(32, "Latent size, angle slot included.")
    filters: int = setting(32, "conv: width of the encoder's and decoder's first layer.")
    critic_filters: int = setting(
        16, "conv: width of the critic's first layer (its gradient penalty is the dearest part of a "
            "step).")
    architecture: str = setting(
        "conv", "conv (convolutional encoder at full resolution, widths above; any even box "
                "size) or paper (the authors' MLP encoder, DCGAN decoder from 4x4x64 and "
                "2/4/8-channel critic, widths ignored; boxes of 26-40 px as theirs, a twelfth "
                "of the work: configs set it where it won at equal time); auto: paper for a "
                "particle stack whose box is in PAPER_BOXES (26-64 px), else conv.",
        ("auto",) + ARCHITECTURES)
    augment_quarter_turns: bool = setting(
        False, "Turn full-circle data that carries angles by random k x 90 degrees.")
    frame: str = setting(
        "auto", "supervised (the paper: the data's canonical images define the frame) or "
                "learned (EM template frame, for stacks without angles); auto picks learned for "
                "a particle stack without a STAR file.", ("auto",) + FRAMES)
    frame_angles: int = setting(128, "learned frame: polar angle bins of the EM template "
                                     "(multiple of 4).")
    frame_momentum: float = setting(0.1, "learned frame: EM template update rate per step.")
    frame_classes: int = setting(
        1, "learned frame: EM templates, one per view of a stack holding several (as K in "
           "RELION 2D classification).")
    frame_max_shift: float = setting(
        5.0, "learned frame: offsets searched, in pixels from the box centre (a disc, as "
             "RELION 2D's offset range; its GUI default 5); particles are re-centred by their "
             "offset before the network sees them, and it is written as rlnOriginXAngst/YAngst. "
             "At most a fifth of the box width (less in small boxes); 0: particles are taken as "
             "centred.")
    frame_shift_step: float = setting(
        1.0, "learned frame: step of the offset search, pixels (RELION 2D's offset step; its "
             "GUI default 1).")
    feature_axes: int = setting(
        12, "learned frame: principal axes of the turned particles served as features "
            "(rotinv_tf.pose.frame_features says how these, the disc and the class weight were "
            "tuned).")
    feature_mask_radius: float = setting(
        0.25, "learned frame: radius of the disc the features see, as a share of the box width.")
    feature_class_weight: float = setting(
        0.25, "learned frame with several templates: scale of the class posterior appended to "
              "the features, relative to the projections' RMS norm.")
    feature_fit_particles: int = setting(
        2000, "learned frame: training particles the feature axes are fitted on after training.")
    frame_start_particles: int = setting(
        2000, "learned frame with several templates: the templates start as classical "
              "reference-free alignment's class averages (its restarts) on this many particles "
              "of the training stack, before training; 0: a random start on the first batch.")
    ctf_correction: str = setting(
        "auto", "particle stacks with CTF values: model (the decoder returns the CTF-free "
                "canonical image, the loss sees it through each particle's CTF), phase_flip "
                "(particles and targets phase-flipped) or none; auto: model when the STAR/.cs "
                "file has CTF values, else none.", ("auto",) + CTF_CORRECTIONS)
    defocus_decorrelation_weight: float = setting(
        30.0, "Under a CTF correction: weight of the penalty on the R² of a linear read-out of "
              "each particle's defocus from the content latent (keeps defocus out of the "
              "latent); 0 turns it off.")
    defocus_momentum: float = setting(
        0.1, "Under a CTF correction: weight of a batch in the running latent/defocus "
             "covariances of that penalty (one batch's read-out is mostly chance).")
    angle_weight: float = setting(1.0, "Weight of the angle loss.")
    reconstruction_weight: float = setting(1.0, "Weight of the reconstruction loss.")
    reconstruction_norm: str = setting(
        "l1_l2", "Reconstruction loss per image: l1_l2 (the paper's L2 + L1 norms) or l2 "
                 "(sqrt(pixels) x the L2 norm: no L1 term, whose per-pixel median optimum keeps a "
                 "decoder at the median image when inputs say little; "
                 "rotinv_tf.models.losses.reconstruction_loss).", RECONSTRUCTION_NORMS)
    adversarial_weight: float = setting(
        0.01, "Weight of -D(x̂) for the decoder. The paper's is 1 beside the reconstruction's "
              "per-image norms (rotinv_tf.models.losses.reconstruction_loss says why): its "
              "configs and Table 1 set it; 0.01, the weight every stack, pose and CTF result was "
              "measured with, stays the default until the paper's is measured there.")
    gp_weight: float = setting(10.0, "Gradient-penalty weight λ.")
    generator_steps_per_critic_step: int = setting(
        4, "The critic is updated once every this many generator steps (paper: 4).")

    def problems(self) -> list[str]:
        problems = settings.problems_of_choices(self)
        if self.latent_dim < 2:
            problems.append(f"latent_dim must be >= 2 (the angle slot and content), got "
                            f"{self.latent_dim}")
        for name in ("filters", "critic_filters", "generator_steps_per_critic_step",
                     "feature_axes", "feature_fit_particles"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.frame_start_particles < 0:
            problems.append(f"frame_start_particles must be >= 0, got "
                            f"{self.frame_start_particles}")
        for name in ("defocus_decorrelation_weight", "angle_weight", "reconstruction_weight",
                     "adversarial_weight", "gp_weight", "feature_class_weight"):
            if not getattr(self, name) >= 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("defocus_momentum", "feature_mask_radius"):
            if not 0 < getattr(self, name) <= 1:
                problems.append(f"{name} must be in (0, 1], got {getattr(self, name)}")
        problems += template_frame.problems(self.frame_angles, self.frame_momentum,
                                            self.frame_classes, self.frame_max_shift,
                                            self.frame_shift_step)
        return problems

    def resolved(self, data: DataFacts = DataFacts()) -> "AutoencoderConfig":
        """A copy with `auto` replaced from the facts of the data it trains on: the frame is
        learned for data without angles, else supervised; the CTF correction is model for data
        with CTF values, else none; the architecture `light_architecture`'s for a stack's box,
        else conv. Without facts (a model made without data), the data is taken to have angles
        and no CTF values."""
        frame = self.frame if self.frame != "auto" else (
            "supervised" if data.angles else "learned")
        correction = self.ctf_correction if self.ctf_correction != "auto" else (
            "model" if data.ctf else "none")
        architecture = self.architecture if self.architecture != "auto" else (
            light_architecture(data.image_size) if data.image_size else "conv")
        return dataclasses.replace(self, frame=frame, ctf_correction=correction,
                                   architecture=architecture)


@dataclasses.dataclass(frozen=True)
class SpatialVAEConfig:
    """The settings of `SpatialVAE` (the baseline); see its docstring."""

    latent_dim: int = setting(2, "Content latents z.")
    hidden_units: int = setting(500, "MLP width (inference and generator; original: 500).")
    num_hidden_layers: int = setting(2, "MLP depth (inference and generator; original: 2).")
    rotation_prior_std_deg: float = setting(
        180.0, "Std of the rotation prior, degrees (180 particles, 45 MNIST).")
    translation_prior_std: float = setting(
        0.0, "Std of the translation prior, in image half-widths; 0 turns translation off.")
    infer_rotation: bool = setting(True, "Infer the rotation (otherwise fixed at 0).")
    likelihood: str = setting("gaussian", "Pixel likelihood: gaussian (standardised particles) "
                                          "or bernoulli (images in [0, 1]).", LIKELIHOODS)
    standardize: bool = setting(
        True, "gaussian likelihood: standardise each image (Bepler et al.'s --normalize), so the "
              "unit-variance noise model fits noisy particles.")
    rotation_kl_mean_penalty: bool = setting(
        False, "Penalise the rotation posterior's mean too: the full KL of Bepler et al.'s MNIST "
               "script (their particle script leaves it free: the canonical pose is arbitrary).")

    def problems(self) -> list[str]:
        problems = settings.problems_of_choices(self)
        if self.latent_dim < 0:
            problems.append(f"latent_dim must be >= 0, got {self.latent_dim}")
        if self.hidden_units < 1 or self.num_hidden_layers < 1:
            problems.append("hidden_units and num_hidden_layers must be >= 1")
        if not self.rotation_prior_std_deg > 0:
            problems.append(f"rotation_prior_std_deg must be > 0, got "
                            f"{self.rotation_prior_std_deg}")
        if not self.translation_prior_std >= 0:
            problems.append(f"translation_prior_std must be >= 0, got "
                            f"{self.translation_prior_std}")
        if self.standardize and self.likelihood != "gaussian":
            problems.append("standardize needs the gaussian likelihood (bernoulli takes images "
                            "in [0, 1])")
        if not (self.infer_rotation or self.translation_prior_std > 0 or self.latent_dim > 0):
            problems.append("nothing to infer: rotation and translation are off and latent_dim "
                            "is 0")
        return problems


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Which model trains, and the settings of each (only the chosen one's are used)."""

    name: str = setting("autoencoder", "autoencoder (ours) or spatial_vae (baseline).", MODELS,
                        flag="model")
    autoencoder: AutoencoderConfig = section(AutoencoderConfig, "ours")
    spatial_vae: SpatialVAEConfig = section(SpatialVAEConfig, "the baseline", prefix="svae_")


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """How long and how fast a run trains."""

    epochs: int = setting(10, "Training epochs.")
    batch_size: int = setting(256, "Global batch size.")
    steps_per_epoch: int = setting(0, "Steps per epoch; 0 = one pass over the data.")
    learning_rate: float = setting(1e-4, "Encoder/decoder learning rate.")
    critic_learning_rate: float = setting(1e-4, "Critic learning rate (ours).")
    lr_decay_epoch: int = setting(
        200, "Multiply learning rates by lr_decay_factor from this epoch; 0 = never.")
    lr_decay_factor: float = setting(0.1, "Learning-rate decay factor.")
    weight_decay: float = setting(
        1e-5, "ours: Adam weight decay as PyTorch's, added to the gradient "
              "(rotinv_tf.training.optimizers); spatial-VAE trains with Bepler et al.'s plain "
              "Adam.")
    adam_beta_1: float = setting(
        0.9, "ours: Adam β₁. The authors' is 0.5 (torch.optim.Adam(betas=(0.5, 0.999)), "
             "benchmarks/reference_pytorch.py): the paper's configs and Table 1 set it.")
    max_train_cpu_seconds: float = setting(
        0.0, "Stop training after the step at which the training process has spent this many CPU "
             "seconds (time.process_time, all threads; validation included), then validate and "
             "export as after the last epoch; 0 = off. CPU time, not wall time, so runs on a "
             "shared machine get the same work whatever the load.")

    def problems(self) -> list[str]:
        problems = []
        if self.epochs < 0 or self.steps_per_epoch < 0:
            problems.append("epochs and steps_per_epoch must be >= 0")
        if self.batch_size < 1:
            problems.append(f"batch_size must be > 0, got {self.batch_size}")
        if not (self.learning_rate > 0 and self.critic_learning_rate > 0):
            problems.append("learning rates must be > 0")
        if self.max_train_cpu_seconds < 0:
            problems.append(f"max_train_cpu_seconds must be >= 0, got {self.max_train_cpu_seconds}")
        if self.lr_decay_epoch < 0 or not self.lr_decay_factor > 0:
            problems.append(f"lr_decay_epoch must be >= 0 and lr_decay_factor > 0, got "
                            f"{self.lr_decay_epoch}, {self.lr_decay_factor}")
        if not self.weight_decay >= 0:
            problems.append(f"weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.adam_beta_1 < 1:
            problems.append(f"adam_beta_1 must be in [0, 1), got {self.adam_beta_1}")
        return problems


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where a run writes, its seed, and how it computes."""

    name: str = setting("quickstart", "Run name: the SavedModel goes to export_dir/<name>/"
                                      "<version>.")
    model_dir: str | None = setting(
        None, "Checkpoints, TensorBoard logs and config.json (default runs/<name>).")
    export_dir: str = setting("saved_models", "SavedModels go to <export_dir>/<name>/<version>.")
    seed: int = setting(0, "Seed for weights, shuffling and training rotations.")
    jit_compile: bool = setting(False, "Compile train steps with XLA.")
    mixed_precision: str = setting("float32", "Keras dtype policy.", PRECISIONS)
    strategy: str = setting("default", "tf.distribute strategy.", STRATEGIES)
    cluster: str = setting(
        "tf_config", "multi_worker: where the cluster is described: the TF_CONFIG variable, or "
                     "the SLURM_* variables of an srun step (docs/distributed.md).", CLUSTERS)
    slurm_port: int = setting(DEFAULT_SLURM_PORT, "cluster slurm: port of a host's first task (the next tasks "
                                    "take the next ports).")
    log_every_steps: int = setting(25, "TensorBoard step-metric interval.")

    @property
    def run_dir(self) -> str:
        """`model_dir`, or runs/<name>."""
        return self.model_dir or os.path.join("runs", self.name)

    def problems(self) -> list[str]:
        problems = settings.problems_of_choices(self)
        if not self.name or os.sep in self.name or self.name in (".", ".."):
            problems.append(f"name must be a plain folder name, got {self.name!r}")
        if self.log_every_steps < 1:
            problems.append(f"log_every_steps must be >= 1, got {self.log_every_steps}")
        if not 0 <= self.seed < 2 ** 32:
            problems.append(f"seed must be in [0, 2**32), got {self.seed}")
        if not 0 < self.slurm_port < 2 ** 16:
            problems.append(f"slurm_port must be a port number in [1, 65535], got "
                            f"{self.slurm_port}")
        return problems


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything a training run needs."""

    data: DataConfig = section(DataConfig, "the data")
    model: ModelConfig = section(ModelConfig, "the model")
    schedule: ScheduleConfig = section(ScheduleConfig, "the schedule")
    runtime: RuntimeConfig = section(RuntimeConfig, "where and how")

    def problems(self) -> list[str]:
        """What makes these settings unusable together (empty when they are fine). An `auto`
        setting is taken as it is: `resolved` checks again once it is replaced."""
        ours = self.model.autoencoder
        problems = (self.data.problems() + ours.problems()
                    + self.model.spatial_vae.problems() + self.schedule.problems()
                    + self.runtime.problems() + settings.problems_of_choices(self.model))
        if self.model.name != "autoencoder":
            if ours.frame == "learned":
                problems.append("frame learned is a frame of the autoencoder, not of spatial_vae")
            if ours.ctf_correction not in ("auto", "none"):
                problems.append("a CTF correction is a feature of the autoencoder, not of "
                                "spatial_vae")
        elif self.data.dataset == "simulated_particles":
            size = self.data.simulation.image_size
            problems += [f"sim_image_size {size}: {problem}"
                         for problem in image_size_problems(ours.architecture, size)]
        # The EM template is updated from each replica's own batch, so replicas' templates
        # would drift apart.
        if ours.frame == "learned" and self.runtime.strategy != "default":
            problems.append(f"frame learned cannot train with strategy {self.runtime.strategy} "
                            f"(its EM template is not synchronised across replicas); train it "
                            f"with the default strategy, or give the stack a STAR file")
        # Each worker would count its own CPU time and stop at a different step.
        if self.schedule.max_train_cpu_seconds and self.runtime.strategy == "multi_worker":
            problems.append("max_train_cpu_seconds cannot be used with strategy multi_worker "
                            "(each worker would stop at a different step)")
        return problems

    def check(self) -> None:
        """ValueError, one line naming every problem, for settings that cannot run together."""
        settings.raise_problems(self.problems())

    def resolved(self, data: DataFacts) -> "Config":
        """The config a run trains with, and saves: every `auto` setting replaced from the
        facts of its data (only the autoencoder learns a frame or corrects the CTF), checked.
        ValueError, one line, for problems, a CTF correction of data without CTF values
        included."""
        ours = self.model.autoencoder
        facts = data if self.model.name == "autoencoder" else DataFacts()
        resolved = dataclasses.replace(self, model=dataclasses.replace(
            self.model, autoencoder=ours.resolved(facts)))
        problems = resolved.problems()
        if (self.model.name == "autoencoder" and ours.ctf_correction not in ("auto", "none")
                and not data.ctf):
            problems.append(f"ctf_correction {ours.ctf_correction!r} needs a particle stack "
                            f"whose STAR/.cs file has CTF values")
        settings.raise_problems(problems)
        return resolved

    def replace(self, **flat: Any) -> "Config":
        """A copy with the settings named by their flag names replaced: `replace(epochs=2)`."""
        return settings.from_flat(Config, flat, base=self)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """The inverse of `dataclasses.asdict` (ValueError for unknown settings)."""
        return settings.from_dict(cls, values)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))


def define_flags() -> None:
    """Defines one flag per setting. Call once per program, before parsing, then
    `flags.adopt_module_key_flags(data_pipeline.settings)` to list them in its --helpshort."""
    settings.define_flags(Config)


def from_flags(flag_values: flags.FlagValues = flags.FLAGS, base: Config | None = None) -> Config:
    """The config the parsed flags describe; with `base`, only flags given replace its values."""
    return settings.from_flags(Config, flag_values, base)


def save(config: Config, folder: str) -> str:
    """Writes `folder/config.json` atomically; returns its path."""
    path = os.path.join(folder, CONFIG_FILE)
    write_text(path, config.to_json() + "\n")
    return path


def load(path: str) -> Config:
    """The config in the file `path`; ValueError naming the file if it is not one."""
    try:
        with open(path) as f:
            return Config.from_json(f.read())
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a rotinv_tf config ({e})") from None


def differences(old: Config, new: Config) -> list[str]:
    """`name: old -> new` for every setting that differs, by flag name."""
    before, after = settings.to_flat(old), settings.to_flat(new)
    return [f"{name}: {before[name]!r} -> {after[name]!r}"
            for name in after if before.get(name) != after[name]]


def describe(config: dict) -> str:
    """One line on a model's training data and objective, from its saved config (as a dict, as
    `serving` reads it): what `canonicalize` reports."""
    data, model = config.get("data", {}), config.get("model", {})
    dataset = data.get("dataset", "unknown data")
    if dataset == "simulated_particles":
        sim = data.get("simulation", {})
        dataset += (f" ({sim.get('image_size')}x{sim.get('image_size')}, SNR {sim.get('snr')}, "
                    f"{sim.get('num_conformations')} conformations)")
    elif dataset == "particle_stack":
        dataset += f" ({', '.join(p for p in (data.get('stack'), data.get('star')) if p)})"
    name = model.get("name", "unknown model")
    if name == "autoencoder":
        ours = model.get("autoencoder", {})
        objective = (f"angle x{ours.get('angle_weight')} + reconstruction "
                     f"x{ours.get('reconstruction_weight')} + adversarial "
                     f"x{ours.get('adversarial_weight')} (critic every "
                     f"{ours.get('generator_steps_per_critic_step')} steps)")
    else:
        objective = f"ELBO, {model.get('spatial_vae', {}).get('likelihood')} likelihood"
    schedule = config.get("schedule", {})
    return (f"trained {name} on {dataset}, rotations {data.get('angle_distribution')} "
            f"±{data.get('angle_scale_deg')} deg; objective {objective}; "
            f"{schedule.get('epochs')} epochs")
