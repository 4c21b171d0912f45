"""Shared entry point for the command-line programs: absl flags, and one-line errors.

Bad flags, a missing flagfile or bad input data print a single `error: ...` line to stderr and
exit with status 2, instead of a traceback or a page of usage text.
"""
import sys
from typing import Callable, Sequence

from absl import app, flags, logging

from data_pipeline.errors import DataError

USAGE_ERROR = 2


def fail(message: str) -> None:
    """Prints a one-line error and exits with status 2."""
    print(f"error: {message}".replace("\n", " "), file=sys.stderr)
    sys.exit(USAGE_ERROR)


def _parse_flags(argv: Sequence[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(str(e).removeprefix("ERROR:: "))


def run(main: Callable[[list[str]], None], argv: Sequence[str] | None = None) -> None:
    """Runs `main(argv)` under absl with one-line errors for bad flags and bad data; `argv`: the
    command line to parse (default `sys.argv`)."""

    def guarded(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(f"unexpected positional arguments: {' '.join(argv[1:])}")
        if not flags.FLAGS["verbosity"].present:  # library INFO chatter only on request
            logging.set_verbosity(logging.WARNING)
        try:
            main(argv)
        except (DataError, flags.ValidationError) as e:
            fail(str(e))

    app.run(guarded, argv=argv, flags_parser=_parse_flags)
