"""`tf.distribute` strategies by name, for `--strategy`, and the cluster of a multi-worker run.

A multi-worker run finds its cluster with a `tf.distribute.cluster_resolver` (`--cluster`):
`tf_config` reads `TF_CONFIG` (one JSON per process, see docs/distributed.md), `slurm` the
`SLURM_*` variables of an `srun` step (one task per host; Slurm gives each task its GPUs).
"""
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")
CLUSTERS = ("tf_config", "slurm")
DEFAULT_SLURM_PORT = 8888


def cluster_resolver(name: str = "tf_config", slurm_port: int = DEFAULT_SLURM_PORT
                     ) -> tf.distribute.cluster_resolver.ClusterResolver:
    """The resolver of cluster `name` (see the module docstring)."""
    if name == "tf_config":
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if name == "slurm":
        # Slurm already sets each task's CUDA_VISIBLE_DEVICES, so the resolver's own GPU
        # bookkeeping is turned off; its `gpus_per_node` then only sizes its table of ports (one
        # per task on a node, from `slurm_port`), which must hold every task of the step.
        tasks = int(os.environ.get("SLURM_STEP_NUM_TASKS", "1"))
        return tf.distribute.cluster_resolver.SlurmClusterResolver(
            port_base=slurm_port, gpus_per_node=tasks, gpus_per_task=1, auto_set_gpu=False)
    raise ValueError(f"unknown cluster {name!r}; expected one of {CLUSTERS}")


def make_strategy(name: str, cluster: str = "tf_config",
                  slurm_port: int = DEFAULT_SLURM_PORT) -> tf.distribute.Strategy:
    """default: one device; mirrored: all local GPUs (or CPUs); multi_worker: the hosts of
    `cluster`, each with all its GPUs (or its CPU)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy(
            cluster_resolver=cluster_resolver(cluster, slurm_port))
    raise ValueError(f"unknown strategy {name!r}; expected one of {STRATEGIES}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's outputs: the chief (worker 0 when the cluster has no
    `chief` task), or the only process of a single-host run."""
    return strategy.extended.should_checkpoint


def wait_for_all_workers(strategy: tf.distribute.Strategy) -> None:
    """Returns once every worker has called it (a collective all-reduce; immediate on one host)."""
    strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.constant(1.0)), axis=None)
