"""absl flag definitions shared by `train` and `evaluate`, so one flagfile in `configs/` drives
both, and their translation into a `TrainConfig`. Angles on the command line are in degrees."""
import math

from absl import flags

from data_pipeline.datasets.particle_stack import DEFAULT_HOLDOUT_FRACTION
from data_pipeline.rotation import ANGLE_DISTRIBUTIONS
from rotinv_tf.distribution import CLUSTERS, STRATEGIES
from rotinv_tf.networks import ARCHITECTURES
from rotinv_tf.autoencoder import CTF_CORRECTIONS
from rotinv_tf.training import MODELS, PRECISIONS, TrainConfig

DATASET_NAMES = ("simulated_particles", "mnist", "fashion_mnist", "five_hdb", "particle_stack")


def define_flags() -> None:
    """Defines every flag a config file may set. Call once per program, before parsing."""
    d = TrainConfig()
    # What to train on.
    flags.DEFINE_string("name", d.name, "Run name: the SavedModel goes to export_dir/<name>/<version>.")
    flags.DEFINE_enum("dataset", d.dataset, DATASET_NAMES, "Dataset to train and evaluate on.")
    flags.DEFINE_string("data_dir", None, "TensorFlow Datasets folder (default ~/tensorflow_datasets).")
    flags.DEFINE_string("mnist_dir", None, "Folder of MNIST/Fashion-MNIST IDX files (gzipped or not).")
    flags.DEFINE_string("manual_dir", None, "Folder holding the unpacked 5HDB archive (5HDB/<k>_/...).")
    flags.DEFINE_string("stack", None, "particle_stack: an .mrcs/.mrc particle stack.")
    flags.DEFINE_string("star", None, "particle_stack: optional in-plane angles of the stack's "
                        "particles: a RELION STAR file (rlnAnglePsi) or a cryoSPARC .cs file "
                        "(alignments2D/pose).")
    flags.DEFINE_float("stack_holdout_fraction", DEFAULT_HOLDOUT_FRACTION,
                       "particle_stack: fraction of the particles held out, half for validation "
                       "and half for test (a fixed hash of each particle's position).")
    flags.DEFINE_integer("sim_image_size", 40, "simulated_particles: image size in pixels.")
    flags.DEFINE_float("sim_snr", 0.1, "simulated_particles: signal variance / noise variance.")
    flags.DEFINE_integer("sim_num_conformations", 20, "simulated_particles: conformations.")
    flags.DEFINE_integer("sim_images_per_conformation", 1000,
                         "simulated_particles: images per conformation.")
    flags.DEFINE_integer("sim_test_conformations", 4,
                         "simulated_particles: conformations held out for the test split.")
    flags.DEFINE_integer("sim_seed", 0, "simulated_particles: simulation seed.")
    # The model.
    flags.DEFINE_enum("model", d.model, MODELS, "autoencoder (ours) or spatial_vae (baseline).")
    flags.DEFINE_integer("latent_dim", d.latent_dim, "Latent size, angle slot included.")
    flags.DEFINE_integer("filters", d.filters, "Width of the encoder's and decoder's first layer.")
    flags.DEFINE_integer("critic_filters", d.critic_filters,
                         "Width of the critic's first layer (ours; the dearest part of a step).")
    flags.DEFINE_enum("architecture", d.architecture, ARCHITECTURES,
                      "ours: default (convolutional encoder, widths above) or paper (the authors' "
                      "MLP encoder, DCGAN decoder from 4x4x64 and 2/4/8-channel critic).")
    flags.DEFINE_enum("angle_distribution", d.angle_distribution, ANGLE_DISTRIBUTIONS,
                      "Training/evaluation rotations: uniform on ±angle_scale or N(0, scale²).")
    flags.DEFINE_float("angle_scale_deg", math.degrees(d.angle_scale),
                       "Half-range (uniform) or standard deviation (normal), degrees.")
    flags.DEFINE_boolean("augment_quarter_turns", d.augment_quarter_turns,
                         "ours: turn full-circle data that carries angles by random k x 90 degrees.")
    flags.DEFINE_enum("frame", d.frame, ("auto", "supervised", "learned"),
                      "ours: supervised (the paper: the data's canonical images define the frame) "
                      "or learned (EM template frame, for stacks without angles); auto picks "
                      "learned for a particle stack without a STAR file.")
    flags.DEFINE_integer("frame_angles", d.frame_angles,
                         "learned frame: polar angle bins of the EM template (multiple of 4).")
    flags.DEFINE_float("frame_momentum", d.frame_momentum,
                       "learned frame: EM template update rate per training step.")
    flags.DEFINE_integer("frame_classes", d.frame_classes,
                         "learned frame: EM templates, one per view of a stack holding several "
                         "(as K in RELION 2D classification).", lower_bound=1)
    # CTF (issue 17).
    flags.DEFINE_enum("ctf_correction", d.ctf_correction, ("auto",) + CTF_CORRECTIONS,
                      "ours, particle stacks with CTF values: model (the decoder returns the "
                      "CTF-free canonical image, the loss sees it through each particle's CTF), "
                      "phase_flip (particles and targets phase-flipped) or none; auto: model when "
                      "the STAR/.cs file has CTF values, else none.")
    flags.DEFINE_integer("svae_latent_dim", d.svae_latent_dim, "spatial-VAE content latents.")
    flags.DEFINE_integer("svae_hidden_units", d.svae_hidden_units,
                         "spatial-VAE MLP width (inference and generator; original: 500).")
    flags.DEFINE_integer("svae_num_hidden_layers", d.svae_num_hidden_layers,
                         "spatial-VAE MLP depth (inference and generator; original: 2).")
    flags.DEFINE_float("svae_rotation_prior_std_deg", math.degrees(d.svae_rotation_prior_std),
                       "spatial-VAE rotation prior std, degrees (180 particles, 45 MNIST).")
    flags.DEFINE_float("svae_translation_prior_std", d.svae_translation_prior_std,
                       "spatial-VAE translation prior std (image half-widths); 0 disables.")
    flags.DEFINE_enum("svae_likelihood", d.svae_likelihood, ["gaussian", "bernoulli"],
                      "spatial-VAE pixel likelihood.")
    flags.DEFINE_boolean("svae_standardize", d.svae_standardize,
                         "spatial-VAE, gaussian likelihood: standardise each image (Bepler et "
                         "al.'s --normalize), so its unit-variance noise model fits particles.")
    flags.DEFINE_boolean("svae_rotation_kl_mean_penalty", d.svae_rotation_kl_mean_penalty,
                         "spatial-VAE: the full KL of the rotation, its mean included (Bepler et "
                         "al.'s MNIST script); off, the mean is free (their particle script).")
    # The schedule.
    flags.DEFINE_integer("epochs", d.epochs, "Training epochs.")
    flags.DEFINE_integer("batch_size", d.batch_size, "Global batch size.")
    flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch; 0 = one pass over the data.")
    flags.DEFINE_float("learning_rate", d.learning_rate, "Encoder/decoder learning rate.")
    flags.DEFINE_float("critic_learning_rate", d.critic_learning_rate, "Critic learning rate.")
    flags.DEFINE_integer("lr_decay_epoch", d.lr_decay_epoch,
                         "Multiply learning rates by lr_decay_factor from this epoch; 0 = never.")
    flags.DEFINE_float("lr_decay_factor", d.lr_decay_factor, "Learning-rate decay factor.")
    flags.DEFINE_float("weight_decay", d.weight_decay,
                       "ours: Adam weight decay as PyTorch's (L2 added to the gradient); "
                       "spatial-VAE trains with Bepler et al.'s plain Adam.")
    flags.DEFINE_float("adam_beta_1", d.adam_beta_1,
                       "ours: Adam β₁ (the authors' 0.5; spatial-VAE: Bepler et al.'s 0.9).")
    flags.DEFINE_integer("generator_steps_per_critic_step", d.generator_steps_per_critic_step,
                         "Critic updated once every this many generator steps (paper: 4).")
    flags.DEFINE_integer("critic_steps_per_generator_step", d.critic_steps_per_generator_step,
                         "Critic updates per generator step (WGAN-GP paper: 5).")
    flags.DEFINE_float("gp_weight", d.gp_weight, "Gradient-penalty weight λ.")
    flags.DEFINE_float("adversarial_weight", d.adversarial_weight,
                       "Weight of -D(x̂) for the decoder (the paper's 1, beside per-image norms).")
    flags.DEFINE_float("angle_weight", d.angle_weight, "Weight of the angle loss.")
    flags.DEFINE_float("reconstruction_weight", d.reconstruction_weight,
                       "Weight of the reconstruction loss.")
    # Where and how.
    flags.DEFINE_string("model_dir", None, "Checkpoints and TensorBoard logs (default runs/<name>).")
    flags.DEFINE_string("export_dir", d.export_dir, "SavedModels go to <export_dir>/<name>/<version>.")
    flags.DEFINE_integer("seed", d.seed, "Seed for weights, shuffling and training rotations.")
    flags.DEFINE_integer("eval_angle_seed", d.eval_angle_seed, "Seed of the fixed evaluation angles.")
    flags.DEFINE_boolean("jit_compile", d.jit_compile, "Compile train steps with XLA.")
    flags.DEFINE_enum("mixed_precision", d.mixed_precision, PRECISIONS, "Keras dtype policy.")
    flags.DEFINE_enum("strategy", d.strategy, STRATEGIES, "tf.distribute strategy.")
    flags.DEFINE_enum("cluster", d.cluster, CLUSTERS,
                      "multi_worker: where the cluster is described: the TF_CONFIG variable, or "
                      "the SLURM_* variables of an srun step (docs/distributed.md).")
    flags.DEFINE_integer("slurm_port", d.slurm_port,
                         "cluster slurm: port of a host's first task (the next tasks take the "
                         "next ports).")
    flags.DEFINE_integer("log_every_steps", d.log_every_steps, "TensorBoard step-metric interval.")
    flags.register_validator("stack_holdout_fraction", lambda v: 0 < v < 1,
                             "--stack_holdout_fraction must be between 0 and 1")
    for name in ("epochs", "sim_num_conformations", "sim_images_per_conformation"):
        flags.register_validator(name, lambda v: v >= 0, f"--{name} must be >= 0")
    for name in ("batch_size", "latent_dim", "filters", "critic_filters", "sim_image_size",
                 "svae_hidden_units", "svae_num_hidden_layers"):
        flags.register_validator(name, lambda v: v > 0, f"--{name} must be > 0")


def dataset_options(values: flags.FlagValues) -> dict:
    """Keyword options of `data_pipeline.input_fn` for the chosen dataset."""
    name = values.dataset
    if name in ("mnist", "fashion_mnist"):
        return {"mnist_dir": values.mnist_dir}
    if name == "five_hdb":
        return {"manual_dir": values.manual_dir}
    if name == "particle_stack":
        return {"stack": values.stack, "star": values.star,
                "holdout_fraction": values.stack_holdout_fraction}
    return {"simulation": {
        "image_size": values.sim_image_size, "snr": values.sim_snr,
        "num_conformations": values.sim_num_conformations,
        "images_per_conformation": values.sim_images_per_conformation,
        "test_conformations": values.sim_test_conformations, "seed": values.sim_seed}}


def config_from_flags(values: flags.FlagValues) -> TrainConfig:
    """The TrainConfig the parsed flags describe."""
    return TrainConfig(
        name=values.name, dataset=values.dataset, dataset_options=dataset_options(values),
        data_dir=values.data_dir, model=values.model, epochs=values.epochs,
        batch_size=values.batch_size, steps_per_epoch=values.steps_per_epoch or None,
        learning_rate=values.learning_rate, critic_learning_rate=values.critic_learning_rate,
        lr_decay_epoch=values.lr_decay_epoch, lr_decay_factor=values.lr_decay_factor,
        weight_decay=values.weight_decay, adam_beta_1=values.adam_beta_1,
        generator_steps_per_critic_step=values.generator_steps_per_critic_step,
        critic_steps_per_generator_step=values.critic_steps_per_generator_step,
        gp_weight=values.gp_weight, adversarial_weight=values.adversarial_weight,
        angle_weight=values.angle_weight, reconstruction_weight=values.reconstruction_weight,
        latent_dim=values.latent_dim, filters=values.filters,
        critic_filters=values.critic_filters, architecture=values.architecture,
        angle_distribution=values.angle_distribution,
        angle_scale=math.radians(values.angle_scale_deg),
        augment_quarter_turns=values.augment_quarter_turns, frame=values.frame,
        frame_angles=values.frame_angles, frame_momentum=values.frame_momentum,
        frame_classes=values.frame_classes, ctf_correction=values.ctf_correction,
        svae_latent_dim=values.svae_latent_dim, svae_hidden_units=values.svae_hidden_units,
        svae_num_hidden_layers=values.svae_num_hidden_layers,
        svae_rotation_prior_std=math.radians(values.svae_rotation_prior_std_deg),
        svae_translation_prior_std=values.svae_translation_prior_std,
        svae_likelihood=values.svae_likelihood, svae_standardize=values.svae_standardize,
        svae_rotation_kl_mean_penalty=values.svae_rotation_kl_mean_penalty,
        model_dir=values.model_dir or f"runs/{values.name}", export_dir=values.export_dir,
        seed=values.seed, jit_compile=values.jit_compile, mixed_precision=values.mixed_precision,
        strategy=values.strategy, cluster=values.cluster, slurm_port=values.slurm_port,
        eval_angle_seed=values.eval_angle_seed,
        log_every_steps=values.log_every_steps)
