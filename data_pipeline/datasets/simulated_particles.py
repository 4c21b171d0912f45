"""TFDS builder `simulated_particles`: the simulator's 5HDB-style data set, generated locally.

Every set of simulation settings is its own builder config, named from the settings
(`make_config(snr=0.05).name == "n40_snr0.05_c20x1000_seed0"`), so each is stored and cached as a
separate version. Train holds the first `num_conformations - test_conformations` conformations,
test the rest. Elements: `image` (canonical) and `observed` float32 [N, N, 1], `angle` float32
(`data_pipeline/angles.py`), `index` int64 (position in the split) and
`conformation` int64. The pixel size (Å) is in the description and in `info.metadata`.
"""
import dataclasses
import math
import re
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from data_pipeline import simulator as sim
from data_pipeline.datasets.features import particle_features

_DEFAULTS = sim.SimulationConfig()
VERSION = tfds.core.Version("2.1.0")


def _number(value: float) -> str:
    """A short exact spelling of a setting: 40, 0.1, inf."""
    text = repr(float(value))
    return text[:-2] if text.endswith(".0") else text


def config_name(settings: sim.SimulationConfig) -> str:
    """A name that differs whenever the simulated data would: defaults are left out."""
    s = settings
    parts = [f"n{s.image_size}_snr{_number(s.snr)}_c{s.num_conformations}x"
             f"{s.images_per_conformation}_seed{s.seed}"]
    if s.test_conformations != _DEFAULTS.test_conformations:
        parts.append(f"test{s.test_conformations}")
    if s.pixel_size is not None:
        parts.append(f"px{_number(s.pixel_size)}")
    if s.angle_distribution == "normal":
        parts.append(f"normal{_number(s.angle_std)}")
    if s.max_shift:
        parts.append(f"shift{_number(s.max_shift)}")
    if s.ctf:
        parts.append(f"ctf{_number(s.defocus_min)}-{_number(s.defocus_max)}")
        optics = (s.voltage, s.spherical_aberration, s.amplitude_contrast)
        if optics != (_DEFAULTS.voltage, _DEFAULTS.spherical_aberration,
                      _DEFAULTS.amplitude_contrast):
            parts.append("optics" + "-".join(_number(v) for v in optics))
    if s.continuous_conformations:
        parts.append("continuous")
    if s.num_views != _DEFAULTS.num_views:
        parts.append(f"views{s.num_views}tilt{_number(round(math.degrees(s.view_tilt), 6))}")
    model = s.atomic_model or s.density_map
    if model:
        stem = re.sub(r"[^a-z0-9]+", "", model.rsplit("/", 1)[-1].rsplit(".", 1)[0].lower())
        kind = "pdb" if s.atomic_model else "map"
        parts.append(f"{kind}-{stem}-{sim.model_fingerprint(s)}")
    return "_".join(parts)


@dataclasses.dataclass(eq=False)
class SimulatedParticlesConfig(tfds.core.BuilderConfig):
    """A builder config carrying the simulation settings and the pixel size they give."""

    simulation: sim.SimulationConfig = dataclasses.field(default_factory=sim.SimulationConfig)
    pixel_size: float = 0.0


def _build_config(settings: sim.SimulationConfig) -> SimulatedParticlesConfig:
    pixel_size = sim.Simulator(settings).pixel_size
    return SimulatedParticlesConfig(
        name=config_name(settings), version=VERSION,
        description=(f"{settings.num_conformations} conformations x "
                     f"{settings.images_per_conformation} images of {settings.image_size}x"
                     f"{settings.image_size} pixels, pixel size {pixel_size:.4f} Å, "
                     f"SNR {_number(settings.snr)}"),
        simulation=settings, pixel_size=pixel_size)


class SimulatedParticles(tfds.core.GeneratorBasedBuilder):
    """Simulated cryo-EM particle images with known canonical images and angles; no download."""

    VERSION = VERSION
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "2.0.0": "Images in RELION's hand (3D y along image rows); 1.0.0 had every "
                              "image mirrored top-bottom.",
                     "2.1.0": "CTF stacks use data_pipeline.ctf (RELION's wavelength constant): "
                              "observed images differ from 2.0.0 by ~3e-6 relative."}
    BUILDER_CONFIGS = [_build_config(_DEFAULTS)]

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=particle_features(self.builder_config.simulation.image_size),
            metadata=tfds.core.MetadataDict(
                pixel_size=self.builder_config.pixel_size,
                simulation=dataclasses.asdict(self.builder_config.simulation)),
            disable_shuffling=True,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict:
        del dl_manager  # everything is simulated locally
        splits = ["train"] + (["test"] if self.builder_config.simulation.test_conformations else [])
        return {split: self._generate_examples(split) for split in splits}

    def _generate_examples(self, split: str) -> Iterator[tuple[int, dict[str, Any]]]:
        simulator = sim.Simulator(self.builder_config.simulation)
        for chunk in simulator.iter_split(split):
            for i, index in enumerate(chunk["index"]):
                yield int(index), {"image": chunk["image"][i, ..., np.newaxis],
                                   "observed": chunk["observed"][i, ..., np.newaxis],
                                   "angle": chunk["angle"][i], "index": index,
                                   "conformation": chunk["conformation"][i]}


def make_config(**settings: Any) -> SimulatedParticlesConfig:
    """The builder config for these `SimulationConfig` settings (the registered one for defaults,
    since TFDS refuses a new config object under a registered config's name)."""
    simulation = sim.SimulationConfig(**settings)
    for registered in SimulatedParticles.BUILDER_CONFIGS:
        if registered.simulation == simulation:
            return registered
    return _build_config(simulation)
