"""How a benchmark driver starts: run as `python -m benchmarks.<name>` from the repository root,
its flags defined only then (so tests import its functions beside other programs' flags), errors
as `data_pipeline.cli` prints them, and the command recorded in its results as it was typed."""
import os
import sys
from typing import Callable, Iterable

from data_pipeline import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The training settings of the drivers that train on particle stacks, read before their flags.
STACK_CONFIG = os.path.join(REPO, "configs", "stack.cfg")


def start(main: Callable[[list[str]], None], define_flags: Callable[[], None],
          flagfile: str | None = None) -> None:
    """Defines the driver's flags, then runs `main` on the command line, `flagfile` read first
    (the command line's flags override it)."""
    define_flags()
    first = [f"--flagfile={flagfile}"] if flagfile else []
    cli.run(main, [sys.argv[0], *first, *sys.argv[1:]])


def command() -> str:
    """The command that started this driver: `python -m benchmarks.<name> <flags>`."""
    name = sys.modules["__main__"].__spec__.name.removesuffix(".__main__")
    return " ".join(["python", "-m", name, *sys.argv[1:]])


def check_choices(flag: str, values: list[str], choices: Iterable[str], empty: bool = False
                  ) -> None:
    """A one-line error (exit 2) unless the list flag `--flag`'s `values` are some of `choices`
    (none only where `empty`)."""
    choices = list(choices)
    if any(value not in choices for value in values) or not (values or empty):
        cli.fail(f"--{flag}: expected some of {', '.join(choices)}, got {','.join(values)}")
