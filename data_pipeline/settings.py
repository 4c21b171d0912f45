"""The data settings, each defined once: names, defaults, help and checks.

`SimulationConfig` (what the simulator makes) and `DataConfig` (which data set a run reads, with its
simulation settings) are plain dataclasses. Each field's help text lives in its metadata
(`setting(default, help)`), so the command-line flags of `data_pipeline.simulate` and of
`rotinv_tf`'s programs are generated from these fields (`rotinv_tf/config.py`); `check()` is the one
place their values are validated. Angles follow `data_pipeline/angles.py`.
"""
import dataclasses
import math
import typing
from typing import Any, Iterator, Mapping

from absl import flags

DATASETS = ("mnist", "fashion_mnist", "five_hdb", "simulated_particles", "particle_stack")
# Data sets read straight from their files on every epoch (a particle stack may be larger than
# memory), unless their training split holds at most STREAM_CACHE_BYTES: a small stack is cached
# in memory after its first epoch (reading 800 particles through the stack's Python generator took
# 0.4-2.6 s an epoch on the shared 2-core machine, of 5-10 s epochs; issue 15).
STREAMED_DATASETS = ("particle_stack",)
STREAM_CACHE_BYTES = 2 ** 30
ANGLE_DISTRIBUTIONS = ("uniform", "normal")
DEFAULT_HOLDOUT_FRACTION = 0.2


def setting(default: Any, help: str, choices: tuple[str, ...] | None = None,
            **metadata: Any) -> Any:
    """A dataclass field with its command-line help (and allowed values for a string)."""
    return dataclasses.field(default=default,
                             metadata={"help": help, "choices": choices, **metadata})


def section(cls: type, help: str, prefix: str = "") -> Any:
    """A nested settings dataclass; its flags are named `<prefix><field>`."""
    return dataclasses.field(default_factory=cls, metadata={"help": help, "prefix": prefix})


def problems_of_choices(settings: object) -> list[str]:
    """A problem for every string field whose value is not one of its `choices`."""
    problems = []
    for field in dataclasses.fields(settings):
        choices = field.metadata.get("choices")
        value = getattr(settings, field.name)
        if choices and value not in choices:
            problems.append(f"{field.name} must be one of {', '.join(choices)}, got {value!r}")
    return problems


def raise_problems(problems: list[str]) -> None:
    """One ValueError listing every problem, or nothing."""
    if problems:
        raise ValueError("; ".join(problems))


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    """Every setting of a simulated dataset; the defaults reproduce the 5HDB layout.

    Units: pixel_size Å (None: chosen so the molecule spans 65% of the box), angles radians,
    max_shift pixels, defocus µm, voltage kV, spherical_aberration mm. `snr` is signal variance over
    noise variance per image (math.inf: no noise). `angle_std` is used by the normal distribution
    only; the optics settings only with `ctf`. A user model (`atomic_model` or `density_map`) is
    rigid: its conformations are identical and only label the images. `continuous_conformations`,
    `num_views` and `view_tilt` (radians): `data_pipeline.simulator`'s docstring.
    """

    image_size: int = setting(40, "Box size N in pixels (images are N x N).")
    pixel_size: float | None = setting(
        None, "Pixel size in Å (default: the molecule spans 65% of the box).")
    num_conformations: int = setting(
        20, "Conformations along the hinge (the built-in molecule only).")
    images_per_conformation: int = setting(1000, "Images per conformation.")
    test_conformations: int = setting(4, "Conformations held out for the test split.")
    snr: float = setting(0.1, "Signal variance / noise variance of each image.")
    angle_distribution: str = setting(
        "uniform", "In-plane angles: uniform over (-π, π], or normal N(0, angle_std²).",
        ANGLE_DISTRIBUTIONS)
    angle_std: float = setting(0.5, "Std of normal angles, radians.")
    max_shift: float = setting(0.0, "Random shift per axis, up to this many pixels.")
    ctf: bool = setting(False, "Apply a CTF (300 kV, Cs 2.7 mm, 10% amplitude contrast by "
                               "default).")
    defocus_min: float = setting(1.0, "Smallest defocus, µm.")
    defocus_max: float = setting(2.5, "Largest defocus, µm.")
    voltage: float = setting(300.0, "Accelerating voltage, kV.")
    spherical_aberration: float = setting(2.7, "Cs, mm.")
    amplitude_contrast: float = setting(0.1, "Amplitude contrast.")
    atomic_model: str | None = setting(
        None, "PDB/mmCIF file to project instead of the built-in molecule (needs gemmi).")
    density_map: str | None = setting(
        None, "MRC density map to project instead of the built-in molecule.")
    seed: int = setting(0, "Simulation seed; same seed, same images.")
    continuous_conformations: bool = setting(
        False, "Draw each image's hinge position uniformly within its conformation's bin (per-image "
               "truth `hinge`) instead of the bin's centre.")
    num_views: int = setting(1, "Viewing directions of the molecule (view 0 along z).")
    view_tilt: float = setting(math.radians(40.0), "Tilt of views 1.. from view 0, radians.")

    def __post_init__(self):
        raise_problems(self.problems())

    def problems(self) -> list[str]:
        """What makes these settings unusable (empty when they are fine)."""
        problems = problems_of_choices(self)
        if self.image_size < 4:
            problems.append(f"image_size must be at least 4, got {self.image_size}")
        if self.pixel_size is not None and not self.pixel_size > 0:
            problems.append(f"pixel_size must be positive, got {self.pixel_size}")
        if self.num_conformations < 1 or self.images_per_conformation < 1:
            problems.append("num_conformations and images_per_conformation must be positive")
        if not 0 <= self.test_conformations < self.num_conformations:
            problems.append(f"test_conformations must be in [0, {self.num_conformations}), "
                            f"got {self.test_conformations}")
        if not self.snr > 0:
            problems.append(f"snr must be positive, got {self.snr}")
        if not self.angle_std >= 0 or not self.max_shift >= 0:
            problems.append("angle_std and max_shift must be non-negative")
        if not 0 < self.defocus_min <= self.defocus_max:
            problems.append(f"need 0 < defocus_min <= defocus_max, got {self.defocus_min}, "
                            f"{self.defocus_max}")
        if not 0 <= self.amplitude_contrast <= 1 or not self.voltage > 0:
            problems.append("amplitude_contrast must be in [0, 1] and voltage positive")
        if self.atomic_model and self.density_map:
            problems.append("give at most one of atomic_model and density_map")
        if self.seed < 0:
            problems.append(f"seed must be non-negative, got {self.seed}")
        if self.num_views < 1:
            problems.append(f"num_views must be positive, got {self.num_views}")
        if not 0 <= self.view_tilt <= math.pi:
            problems.append(f"view_tilt must be in [0, π], got {self.view_tilt}")
        return problems

    @property
    def num_train_conformations(self) -> int:
        return self.num_conformations - self.test_conformations


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data a run trains and is evaluated on, and the rotations that make its inputs."""

    dataset: str = setting("simulated_particles", "Dataset to train and evaluate on.", DATASETS)
    data_dir: str | None = setting(
        None, "TensorFlow Datasets folder (default ~/tensorflow_datasets).")
    mnist_dir: str | None = setting(
        None, "mnist/fashion_mnist: folder of IDX files (gzipped or not); without it TFDS "
              "downloads.")
    manual_dir: str | None = setting(
        None, "five_hdb: folder holding the unpacked 5HDB archive (5HDB/<k>_/...).")
    stack: str | None = setting(
        None, "particle_stack: an .mrcs/.mrc particle stack (with --star: only its particles).")
    star: str | None = setting(
        None, "particle_stack: the particles' RELION STAR file (any version; stacks named as "
              "RELION resolves them, optics groups, rlnAnglePsi, CTF) or cryoSPARC .cs file.")
    stack_holdout_fraction: float = setting(
        DEFAULT_HOLDOUT_FRACTION, "particle_stack: fraction of the particles held out, half for "
        "validation and half for test (a fixed hash of each particle's position).")
    angle_distribution: str = setting(
        "uniform", "Rotations of data without angles (training draws, fixed evaluation angles): "
        "uniform on ±angle_scale_deg or N(0, angle_scale_deg²).", ANGLE_DISTRIBUTIONS)
    angle_scale_deg: float = setting(180.0, "Half-range (uniform) or std (normal), degrees.")
    eval_angle_seed: int = setting(1234, "Seed of the fixed evaluation angles.")
    simulation: SimulationConfig = section(
        SimulationConfig, "simulated_particles: the simulation settings.", prefix="sim_")

    @property
    def angle_scale(self) -> float:
        """`angle_scale_deg` in radians."""
        return math.radians(self.angle_scale_deg)

    def problems(self) -> list[str]:
        """What makes these settings unusable (the simulation's are checked when it is made)."""
        problems = problems_of_choices(self)
        if not 0 < self.stack_holdout_fraction < 1:
            problems.append("stack_holdout_fraction must be between 0 and 1, got "
                            f"{self.stack_holdout_fraction}")
        if not self.angle_scale_deg >= 0:
            problems.append(f"angle_scale_deg must be >= 0, got {self.angle_scale_deg}")
        if not -2 ** 31 <= self.eval_angle_seed < 2 ** 31:
            problems.append(f"eval_angle_seed must fit in 32 bits (it seeds TensorFlow's "
                            f"stateless draws), got {self.eval_angle_seed}")
        if self.dataset == "particle_stack" and not (self.stack or self.star):
            problems.append("dataset particle_stack needs stack=<.mrcs/.mrc> or star=<.star/.cs>")
        if self.dataset == "five_hdb" and not self.manual_dir:
            problems.append("dataset five_hdb needs manual_dir=<folder holding 5HDB/>")
        return problems

    def load_options(self) -> dict[str, Any]:
        """Keyword options of `datasets.load` (and `input_fn`) for this data set."""
        if self.dataset in ("mnist", "fashion_mnist"):
            return {"mnist_dir": self.mnist_dir}
        if self.dataset == "five_hdb":
            return {"manual_dir": self.manual_dir}
        if self.dataset == "particle_stack":
            return {"stack": self.stack, "star": self.star,
                    "holdout_fraction": self.stack_holdout_fraction}
        return {"simulation": dataclasses.asdict(self.simulation)}


# Settings <-> flags: every leaf field is one flag, named `<section prefixes><field name>` (or the
# field's `flag` metadata instead of its name).

def _leaf_type(field: dataclasses.Field) -> type:
    """The field's type, with `| None` removed."""
    args = [arg for arg in typing.get_args(field.type) if arg is not type(None)]
    return args[0] if args else field.type


def leaves(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field, type]]:
    """(flag name, field, type) of every leaf setting of the dataclass `cls`, nested included."""
    for field in dataclasses.fields(cls):
        kind = _leaf_type(field)
        if dataclasses.is_dataclass(kind):
            yield from leaves(kind, prefix + field.metadata.get("prefix", ""))
        else:
            yield prefix + field.metadata.get("flag", field.name), field, kind


def define_flags(cls: type, exclude: tuple[str, ...] = (),
                 flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines one absl flag per leaf setting of `cls` (but those named in `exclude`)."""
    definers = {bool: flags.DEFINE_boolean, int: flags.DEFINE_integer,
                float: flags.DEFINE_float, str: flags.DEFINE_string}
    for name, field, kind in leaves(cls):
        if name in exclude:
            continue
        help_text = field.metadata["help"]
        if field.metadata.get("choices"):
            flags.DEFINE_enum(name, field.default, field.metadata["choices"], help_text,
                              flag_values=flag_values)
        else:
            definers[kind](name, field.default, help_text, flag_values=flag_values)


def from_flat(cls: type, values: Mapping[str, Any], base: Any = None, prefix: str = "") -> Any:
    """An instance of `cls` with the settings named (by flag name) in `values`, the others taken
    from `base` (or the defaults). ValueError for a name that is no setting of `cls`."""
    unknown = set(values) - {name for name, _, _ in leaves(cls, prefix)}
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    kwargs = {}
    for field in dataclasses.fields(cls):
        kind = _leaf_type(field)
        current = getattr(base, field.name) if base is not None else None
        if dataclasses.is_dataclass(kind):
            inner_prefix = prefix + field.metadata.get("prefix", "")
            inner = {k: v for k, v in values.items()
                     if k in {n for n, _, _ in leaves(kind, inner_prefix)}}
            kwargs[field.name] = from_flat(kind, inner, current, inner_prefix)
            continue
        name = prefix + field.metadata.get("flag", field.name)
        if name in values:
            kwargs[field.name] = values[name]
        elif base is not None:
            kwargs[field.name] = current
    return cls(**kwargs)


def from_flags(cls: type, flag_values: flags.FlagValues = flags.FLAGS, base: Any = None) -> Any:
    """The settings the parsed flags describe; with `base`, only the flags given on the command
    line (or in a flagfile) replace its values."""
    values = {name: flag_values[name].value for name, _, _ in leaves(cls)
              if base is None or flag_values[name].present}
    return from_flat(cls, values, base)


def to_flat(settings: Any, prefix: str = "") -> dict[str, Any]:
    """{flag name: value} of every leaf setting."""
    flat = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if dataclasses.is_dataclass(value):
            flat.update(to_flat(value, prefix + field.metadata.get("prefix", "")))
        else:
            flat[prefix + field.metadata.get("flag", field.name)] = value
    return flat


def from_dict(cls: type, values: Mapping[str, Any]) -> Any:
    """The inverse of `dataclasses.asdict` (ValueError for unknown keys)."""
    known = {field.name: field for field in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(sorted(unknown))}")
    kwargs = {}
    for name, value in values.items():
        kind = _leaf_type(known[name])
        kwargs[name] = from_dict(kind, value) if dataclasses.is_dataclass(kind) else value
    return cls(**kwargs)
