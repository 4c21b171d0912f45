"""`benchmarks.driver`: a driver's list flags checked with one-line errors, as run from the
repository root."""
import os
import subprocess
import sys

import pytest

from benchmarks import driver

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_check_choices_accepts_known_values_and_fails_in_one_line(capsys):
    driver.check_choices("stacks", ["a", "b"], ("a", "b", "c"))
    driver.check_choices("skip", [], ("a",), empty=True)
    for values, empty in ((["a", "z"], False), ([], False)):
        with pytest.raises(SystemExit) as exit_info:
            driver.check_choices("stacks", values, ("a", "b"), empty)
        assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["error: --stacks: expected some of a, b, got a,z",
                     "error: --stacks: expected some of a, b, got "]


def test_a_driver_runs_as_a_module_and_rejects_bad_flags_in_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.table1", "--datasets=rotated_mnist,nope",
         f"--work_dir={tmp_path / 'work'}", f"--output_dir={tmp_path / 'out'}"],
        cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""})
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "error: --datasets: expected some of rotated_mnist, simulated_5hdb, got "
        "rotated_mnist,nope")
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()
