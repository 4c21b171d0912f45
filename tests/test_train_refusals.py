"""Settings a run cannot train with are refused by `rotinv_tf.train` before it writes anything:
exit status 2, one `error:` line naming the setting and its problem, no run folder, data set or
export. Each value passed `Config.check` before issue 27 and failed once the run folder was
written, or is only known from the data (`rotinv_tf.training.resolve`)."""
import numpy as np
import pytest

from data_pipeline.formats.mrc import write_stack
from tests.test_output_paths import assert_one_error, run_cli, tree


@pytest.fixture
def workspace(tmp_path):
    """A folder holding `p16.mrcs` and `p24.mrcs`, bare stacks (no STAR: no angles, no CTF)."""
    for size in (16, 24):
        write_stack(str(tmp_path / f"p{size}.mrcs"), np.zeros((20, size, size), np.float32), 1.0)
    return tmp_path


@pytest.mark.parametrize("flags,fragments", [
    (["--latent_dim=1"], ["latent_dim must be >= 2"]),
    (["--feature_mask_radius=0"], ["feature_mask_radius must be in (0, 1]"]),
    (["--architecture=paper", "--sim_image_size=10"],
     ["sim_image_size 10", "at least 26 pixels"]),
    (["--flagfile=configs/stack.cfg", "--stack={w}/p16.mrcs", "--strategy=mirrored"],
     ["frame learned cannot train with strategy mirrored"]),
    (["--flagfile=configs/stack.cfg", "--stack={w}/p16.mrcs", "--ctf_correction=model"],
     ["ctf_correction 'model' needs a particle stack whose STAR/.cs file has CTF values"]),
    (["--flagfile=configs/stack.cfg", "--stack={w}/p24.mrcs", "--architecture=paper"],
     ["p24.mrcs", "box of 24x24 pixels", "at least 26 pixels"]),
])
def test_train_refuses_settings_before_writing_the_run_folder(workspace, flags, fragments):
    before = tree(workspace)
    result = run_cli("rotinv_tf.train", "--flagfile=configs/quickstart.cfg", "--epochs=1",
                     *(flag.format(w=workspace) for flag in flags),
                     f"--data_dir={workspace}/tfds", f"--model_dir={workspace}/run",
                     f"--export_dir={workspace}/saved")
    assert_one_error(result, *fragments)
    assert tree(workspace) == before
