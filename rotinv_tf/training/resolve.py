"""A run's config resolved from its data, once, before training: the particle stack's metadata is
read (once per version of its files: a run asks for it before training for its checks, its
`auto` settings and its report, and a STAR file of millions of rows takes seconds to parse) and
the facts the config needs are handed to `Config.resolved`, which reads no files itself."""
import functools
import os

from data_pipeline.datasets.particle_stack import ParticleStack
from rotinv_tf.config import Config, DataFacts


def particle_stack(config: Config) -> ParticleStack | None:
    """The run's particle stack with its metadata (None for other data sets); `DataError` for
    a file that cannot be read."""
    data = config.data
    if data.dataset != "particle_stack" or not (data.stack or data.star):
        return None
    return _read_stack(data.stack, data.star, data.stack_holdout_fraction,
                       _version(data.stack), _version(data.star))


def _version(path: str | None) -> tuple[int, int] | None:
    """(modification time, size) of a file, None when there is none to read."""
    if not path or not os.path.isfile(path):
        return None
    status = os.stat(path)
    return status.st_mtime_ns, status.st_size


@functools.lru_cache(maxsize=4)
def _read_stack(stack: str | None, star: str | None, holdout_fraction: float,
                *versions: tuple[int, int] | None) -> ParticleStack:
    """`ParticleStack(stack, star, holdout_fraction)`, cached by the files' `versions`."""
    return ParticleStack(stack, star, holdout_fraction)


def data_facts(config: Config) -> DataFacts:
    """What the run's data says about its `auto` settings: a particle stack has angles when its
    STAR/.cs file has rlnAnglePsi, CTF values when it has defocus columns, and its box size;
    every other data set has angles (or canonical images) and no CTF values."""
    stack = particle_stack(config)
    if stack is None:
        return DataFacts()
    return DataFacts(angles=stack.angles is not None, ctf=stack.ctf is not None,
                     image_size=stack.height)


def resolve(config: Config) -> Config:
    """`config` with every `auto` setting replaced from its data and checked (ValueError, one
    line; `DataError` for data that cannot be read): what a run trains with and saves."""
    return config.resolved(data_facts(config))
