"""rotinv_tf.config: flags generated from the dataclasses, one check, the saved config.json."""
import dataclasses
import glob
import os

import pytest
from absl import flags

from data_pipeline import settings
from data_pipeline.settings import SimulationConfig
from rotinv_tf import config as configs
from rotinv_tf.models.autoencoder import RotationInvariantAutoencoder
from rotinv_tf.config import AutoencoderConfig, Config, DataFacts, SpatialVAEConfig
from rotinv_tf.models.spatial_vae import SpatialVAE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parsed(*args: str) -> flags.FlagValues:
    values = flags.FlagValues()
    settings.define_flags(Config, flag_values=values)
    values(["train", *args])
    return values


def test_every_setting_is_one_flag_and_flags_come_back_as_the_config():
    values = _parsed("--critic_filters=4", "--svae_latent_dim=3", "--sim_snr=0.5",
                     "--sim_ctf", "--model=spatial_vae", "--epochs=2", "--name=x")
    config = configs.from_flags(values)
    assert config.model.autoencoder.critic_filters == 4
    assert config.model.spatial_vae.latent_dim == 3
    assert config.data.simulation == SimulationConfig(snr=0.5, ctf=True)
    assert (config.model.name, config.schedule.epochs, config.runtime.name) == (
        "spatial_vae", 2, "x")
    assert configs.from_flags(_parsed()) == Config()  # flag defaults are the field defaults
    names = [name for name, _, _ in settings.leaves(Config)]
    assert len(names) == len(set(names))  # no two settings share a flag


def test_only_flags_given_override_a_base_config():
    base = Config().replace(dataset="mnist", epochs=7)
    config = configs.from_flags(_parsed("--eval_angle_seed=5"), base=base)
    assert config == base.replace(eval_angle_seed=5)


def test_model_settings_are_exactly_the_constructors():
    """A new hyperparameter is one field: the model takes every field of its dataclass."""
    ours = AutoencoderConfig(frame="learned", ctf_correction="none", feature_axes=5,
                             defocus_momentum=0.3)
    for cls, model_settings in ((RotationInvariantAutoencoder, ours),
                                (SpatialVAE, SpatialVAEConfig())):
        model = cls(16, **dataclasses.asdict(model_settings))
        assert model.settings == model_settings


def test_json_round_trip_and_differences():
    config = Config().replace(stack="p.mrcs", dataset="particle_stack", sim_snr=float("inf"),
                              critic_filters=8)
    assert Config.from_json(config.to_json()) == config
    assert configs.differences(config, config.replace(epochs=3, critic_filters=4)) == [
        "critic_filters: 8 -> 4", "epochs: 10 -> 3"]


def test_check_names_every_problem_in_one_line():
    config = Config().replace(epochs=-1, stack_holdout_fraction=1.5, filters=0,
                              dataset="particle_stack")
    with pytest.raises(ValueError) as error:
        config.check()
    message = str(error.value)
    assert "\n" not in message
    for name in ("epochs", "stack_holdout_fraction", "filters", "stack="):
        assert name in message
    Config().check()


# Values out of range, by flag name: the config refuses each before a run writes anything (the
# constructors, the optimizer or the seeding would refuse most of them only once it has).
REFUSED = {
    "latent_dim": 1, "feature_axes": 0, "feature_mask_radius": 0.0, "defocus_momentum": 1.5,
    "gp_weight": -1.0, "frame_angles": 4, "frame_momentum": 0.0, "frame_classes": 0,
    "reconstruction_norm": "l3", "architecture": "mlp", "svae_hidden_units": 0,
    "lr_decay_factor": 0.0, "adam_beta_1": 1.0, "weight_decay": -1e-5, "seed": -1,
    "slurm_port": 0, "eval_angle_seed": 2 ** 31,
}


@pytest.mark.parametrize("name,value", sorted(REFUSED.items()))
def test_check_finds_each_value_out_of_range(name, value):
    with pytest.raises(ValueError) as error:
        Config().replace(**{name: value}).check()
    field = name.removeprefix("svae_")  # a section's problems name its fields
    assert field in str(error.value) and "\n" not in str(error.value)


def test_sim_box_sizes_the_networks_cannot_take_are_refused():
    for size, architecture in ((10, "paper"), (15, "conv")):
        with pytest.raises(ValueError, match=f"sim_image_size {size}: "):
            Config().replace(sim_image_size=size, architecture=architecture).check()
    Config().replace(sim_image_size=10).check()  # conv takes any even box from 8
    Config().replace(sim_image_size=15, model="spatial_vae").check()


def test_auto_is_resolved_from_the_data_facts():
    stack = Config().replace(dataset="particle_stack", stack="p.mrcs")
    ours = lambda config: (config.model.autoencoder.frame,  # noqa: E731
                           config.model.autoencoder.ctf_correction)
    assert ours(stack.resolved(DataFacts(angles=False, ctf=True))) == ("learned", "model")
    assert ours(stack.resolved(DataFacts(angles=True, ctf=False))) == ("supervised", "none")
    assert ours(stack.replace(frame="supervised", ctf_correction="phase_flip").resolved(
        DataFacts(angles=False, ctf=True))) == ("supervised", "phase_flip")
    assert ours(stack.replace(model="spatial_vae").resolved(
        DataFacts(angles=False, ctf=True))) == ("supervised", "none")
    resolved = stack.resolved(DataFacts(angles=False))
    assert resolved.resolved(DataFacts()) == resolved  # nothing left to resolve
    assert ours(Config()) == ("auto", "auto")  # the flags keep `auto` for users
    with pytest.raises(ValueError, match="ctf_correction 'model' needs a particle stack"):
        stack.replace(ctf_correction="model").resolved(DataFacts())
    # A learned frame, named or resolved, cannot train on several replicas.
    with pytest.raises(ValueError, match="frame learned cannot train with strategy mirrored"):
        stack.replace(strategy="mirrored").resolved(DataFacts(angles=False))
    stack.replace(strategy="mirrored").check()  # `auto` is left to the resolution


def test_auto_architecture_is_the_authors_networks_where_they_fit_the_stacks_box():
    stack = Config().replace(dataset="particle_stack", stack="p.mrcs", architecture="auto")
    chosen = {size: stack.resolved(DataFacts(image_size=size)).model.autoencoder.architecture
              for size in (24, 26, 48, 64, 66, 128)}
    assert chosen == {24: "conv", 26: "paper", 48: "paper", 64: "paper", 66: "conv",
                      128: "conv"}
    assert stack.resolved(DataFacts()).model.autoencoder.architecture == "conv"  # no stack
    assert stack.replace(architecture="conv").resolved(
        DataFacts(image_size=48)).model.autoencoder.architecture == "conv"  # named stays


def test_cpu_budget_is_refused_where_workers_would_disagree():
    config = Config().replace(max_train_cpu_seconds=60.0, strategy="multi_worker")
    with pytest.raises(ValueError, match="max_train_cpu_seconds cannot be used"):
        config.check()
    config.replace(strategy="default").check()


def test_unknown_settings_are_refused():
    with pytest.raises(ValueError, match="unknown settings: no_such"):
        Config().replace(no_such=1)
    with pytest.raises(ValueError, match="config.json: not a rotinv_tf config"):
        configs.load(__file__.replace("test_config.py", "config.json"))


def test_describe_names_the_data_and_the_objective():
    line = configs.describe(dataclasses.asdict(Config().replace(sim_snr=1.0)))
    assert line.startswith("trained autoencoder on simulated_particles (40x40, SNR 1.0")
    assert f"adversarial x{Config().model.autoencoder.adversarial_weight}" in line
    assert "ELBO" in configs.describe(dataclasses.asdict(Config().replace(model="spatial_vae")))


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "configs", "*.cfg"))))
def test_config_files_hold_only_their_differences_from_the_defaults(path):
    values = _parsed(f"--flagfile={path}")
    given = [name for name, _, _ in settings.leaves(Config) if values[name].present]
    assert given
    for name in given:
        assert values[name].value != values[name].default, f"{path}: --{name} is the default"


def test_spatial_vae_configs_are_set_up_as_its_authors_scripts():
    """Bepler et al.'s train_mnist.py: Bernoulli, the full rotation KL; train_particles.py
    --normalize: each image standardised, the rotation's mean left free."""
    def svae(name: str) -> SpatialVAEConfig:
        path = os.path.join(REPO, "configs", name)
        return configs.from_flags(_parsed(f"--flagfile={path}")).model.spatial_vae
    mnist, particles = svae("mnist.cfg"), svae("simulated_5hdb.cfg")
    assert mnist.likelihood == "bernoulli" and mnist.rotation_kl_mean_penalty
    assert not mnist.standardize and mnist.problems() == []
    assert particles.standardize and not particles.rotation_kl_mean_penalty
    assert SpatialVAEConfig(likelihood="bernoulli").problems() == [
        "standardize needs the gaussian likelihood (bernoulli takes images in [0, 1])"]
