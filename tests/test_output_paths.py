"""Bad output paths fail before the work that would write them: `data_pipeline.outputs` on its
own, and the train, evaluate and canonicalize programs, which give exit status 2, one `error:`
line naming the path, and leave nothing behind (no output, folder or probe file).

A folder even root cannot write into is needed: /proc/self (permission bits do not bind root).
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from data_pipeline.errors import DataError
from data_pipeline.formats.mrc import write_stack
from data_pipeline.outputs import check_output_dir, check_output_file
from rotinv_tf.training import train_lib
from rotinv_tf.config import Config
from tests.cli_output import user_facing_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
UNWRITABLE = "/proc/self"
needs_unwritable = pytest.mark.skipif(not os.path.isdir(UNWRITABLE),
                                      reason=f"no {UNWRITABLE} folder")


@pytest.fixture
def workspace(tmp_path):
    """A folder holding a file `afile` and a folder `adir`."""
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "adir").mkdir()
    return tmp_path


def tree(root) -> list[str]:
    """Every path under `root`, relative: what a check must leave as it was."""
    return sorted(os.path.relpath(os.path.join(folder, name), root)
                  for folder, dirs, files in os.walk(root) for name in dirs + files)


def check_fails(check, path: str, problem: str) -> None:
    with pytest.raises(DataError) as caught:
        check(path)
    assert caught.value.path == path and problem in caught.value.problem


# The checks.

def test_writable_paths_pass_and_leave_nothing(workspace):
    before = tree(workspace)
    check_output_file(str(workspace / "new.mrcs"))
    check_output_file(str(workspace / "afile"))  # replaced on success
    check_output_file(str(workspace / "new" / "deeper" / "out.star"))
    check_output_dir(str(workspace / "adir"))
    check_output_dir(str(workspace / "new" / "run"))
    assert tree(workspace) == before


def test_a_file_path_that_is_a_folder_or_under_a_file_fails(workspace):
    check_fails(check_output_file, str(workspace / "adir"), "is a folder")
    check_fails(check_output_file, str(workspace / "afile" / "out.mrcs"),
                f"its folder {workspace / 'afile'} is a file")
    check_fails(check_output_file, str(workspace / "afile" / "a" / "b" / "out.star"),
                f"its folder {workspace / 'afile'} is a file")


def test_a_folder_path_that_is_a_file_or_under_a_file_fails(workspace):
    check_fails(check_output_dir, str(workspace / "afile"), "is a file")
    check_fails(check_output_dir, str(workspace / "afile" / "run"),
                f"its folder {workspace / 'afile'} is a file")


@needs_unwritable
def test_an_unwritable_folder_fails_even_for_root():
    check_fails(check_output_file, f"{UNWRITABLE}/out.mrcs", f"folder {UNWRITABLE} is not writable")
    check_fails(check_output_dir, f"{UNWRITABLE}/new/run", f"folder {UNWRITABLE} is not writable")
    check_fails(check_output_dir, UNWRITABLE, "is not writable")


def test_training_checks_its_folders_before_building_data(workspace):
    config = Config().replace(dataset="simulated_particles", data_dir=str(workspace / "tfds"),
                              model_dir=str(workspace / "run"),
                              export_dir=str(workspace / "afile"))
    before = tree(workspace)
    with pytest.raises(DataError, match="afile"):
        train_lib.train(config)
    assert tree(workspace) == before


# The programs.

def run_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=300)


def assert_one_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2 and one user-facing stderr line, the `error:` naming every fragment."""
    assert result.returncode == 2, result.stderr[-2000:]
    lines = user_facing_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("output,star,named,problem", [
    ("afile/out.mrcs", "out.star", "afile/out.mrcs", "is a file"),
    ("out.mrcs", "adir", "adir", "is a folder"),
    pytest.param(f"{UNWRITABLE}/out.mrcs", "out.star", f"{UNWRITABLE}/out.mrcs",
                 "is not writable", marks=needs_unwritable),
])
def test_canonicalize_checks_its_outputs_before_loading_the_model(workspace, output, star,
                                                                   named, problem):
    before = tree(workspace)
    # The SavedModel and the input do not exist: the output checks must come first.
    result = run_cli("rotinv_tf.canonicalize", f"--saved_model={workspace}/missing_model",
                     f"--input={workspace}/missing.mrcs",
                     f"--output={os.path.join(workspace, output)}",
                     f"--star={os.path.join(workspace, star)}")
    assert_one_error(result, os.path.join(str(workspace), named), problem)
    assert tree(workspace) == before


@pytest.mark.parametrize("flag,named,problem", [
    ("--model_dir=afile/run", "afile", "is a file"),
    ("--export_dir=afile", "afile", "is a file"),
    pytest.param(f"--export_dir={UNWRITABLE}/saved_models", UNWRITABLE, "is not writable",
                 marks=needs_unwritable),
])
def test_train_checks_its_folders_before_any_data_or_output(workspace, flag, named, problem):
    name, value = flag.split("=")
    value = value if value.startswith("/") else str(workspace / value)
    folders = {"--model_dir": str(workspace / "run"), "--export_dir": str(workspace / "saved"),
               name: value}
    before = tree(workspace)
    result = run_cli("rotinv_tf.train", "--flagfile=configs/quickstart.cfg", "--epochs=1",
                     f"--data_dir={workspace}/tfds", *(f"{k}={v}" for k, v in folders.items()))
    assert_one_error(result, value, named, problem)
    assert tree(workspace) == before  # no run folder, no data set, no export


def test_train_rejects_an_odd_box_before_writing_the_run_folder(workspace):
    stack = str(workspace / "odd.mrcs")
    write_stack(stack, np.zeros((20, 63, 63), np.float32), 1.0)
    before = tree(workspace)
    result = run_cli("rotinv_tf.train", "--flagfile=configs/stack.cfg", f"--stack={stack}",
                     "--epochs=1", f"--model_dir={workspace}/run",
                     f"--export_dir={workspace}/saved")
    assert_one_error(result, stack, "63x63", "even box size")
    assert tree(workspace) == before


@pytest.mark.parametrize("output_dir,named,problem", [
    ("afile", "afile", "is a file"),
    pytest.param(f"{UNWRITABLE}/report", UNWRITABLE, "is not writable", marks=needs_unwritable),
])
def test_evaluate_checks_its_folder_before_loading_the_model(workspace, output_dir, named,
                                                             problem):
    output_dir = os.path.join(str(workspace), output_dir)
    before = tree(workspace)
    result = run_cli("rotinv_tf.evaluate", f"--saved_model={workspace}/missing_model",
                     f"--output_dir={output_dir}")
    assert_one_error(result, output_dir, named, problem)
    assert tree(workspace) == before
