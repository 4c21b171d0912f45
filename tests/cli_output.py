"""What a command-line program printed for its user, without TensorFlow's import-time C++ logs
(which no environment variable silences in TF 2.21)."""
import re

_TF_LOG = re.compile(r"^([IWEF]\d{4} \d\d:\d\d:\d\d|WARNING: All log messages before absl|"
                     r"To enable the following instructions)")


def user_facing_lines(stderr: str) -> list[str]:
    """Non-empty stderr lines that did not come from TensorFlow's C++ logger."""
    return [line for line in stderr.splitlines() if line.strip() and not _TF_LOG.match(line)]
