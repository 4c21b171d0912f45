"""Two worker processes on localhost train as one (`--strategy=multi_worker`), with the commands
of docs/distributed.md: one SavedModel, identical weights, and a run that survives a lost worker.

Each test runs the documented commands in a scratch folder (ports swapped for free ones), CPU
only. A worker's output is read only after it exits, and every wait has a timeout, so a hang
fails the test instead of blocking the suite.
"""
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from rotinv_tf.training import distribution
from rotinv_tf.config import Config, DataFacts
from tests.cli_output import user_facing_lines

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(REPO, "docs", "distributed.md")
MARKER = "<!-- two-worker example"
TIMEOUT = 120  # seconds for a worker to finish (about 25 s on 2 busy cores)


def _documented_example() -> tuple[dict, list[str]]:
    """The TF_CONFIG and the train arguments of the two-worker example in docs/distributed.md."""
    text = open(DOC).read()
    block = text[text.index(MARKER):].split("```")[1]
    lines = block.replace("\\\n", " ").strip().splitlines()
    tf_config = json.loads(shlex.split(lines[0].removeprefix("export "))[0].split("=", 1)[1])
    command = shlex.split(lines[1])
    assert command[:3] == ["python", "-m", "rotinv_tf.train"]
    return tf_config, command[3:]


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


class Workers:
    """The documented two workers, started in `folder` on free ports."""

    def __init__(self, folder):
        self.folder = folder
        self.tf_config, self.args = _documented_example()
        hosts = [f"localhost:{port}" for port in _free_ports(2)]
        assert len(self.tf_config["cluster"]["worker"]) == 2
        self.tf_config["cluster"]["worker"] = hosts
        os.symlink(os.path.join(REPO, "configs"), os.path.join(folder, "configs"))
        self.processes = []

    def flag(self, name: str) -> str:
        return os.path.join(self.folder, next(a.split("=", 1)[1] for a in self.args
                                              if a.startswith(f"--{name}=")))

    def start(self) -> None:
        self.processes = []
        for index in range(2):
            config = {**self.tf_config, "task": {"type": "worker", "index": index}}
            env = {**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONPATH": REPO,
                   "CUDA_VISIBLE_DEVICES": "", "TF_CPP_MIN_LOG_LEVEL": "2"}
            log = open(os.path.join(self.folder, f"worker{index}.log"), "w")
            self.processes.append(subprocess.Popen(
                [sys.executable, "-m", "rotinv_tf.train", *self.args], cwd=self.folder, env=env,
                stdout=log, stderr=subprocess.STDOUT, text=True))

    def wait(self) -> list[tuple[int, str]]:
        """(exit status, output) of each worker; kills them all if one overruns TIMEOUT."""
        deadline = time.monotonic() + TIMEOUT
        results = []
        try:
            for index, process in enumerate(self.processes):
                code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
                results.append((code, open(os.path.join(self.folder,
                                                        f"worker{index}.log")).read()))
        finally:
            for process in self.processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        return results


def _digest(output: str) -> str:
    return re.search(r"^Weights: +sha256 ([0-9a-f]{64})", output, re.M).group(1)


def test_two_workers_train_as_one(tmp_path):
    workers = Workers(str(tmp_path))
    workers.start()
    (code0, out0), (code1, out1) = workers.wait()
    assert code0 == 0, out0[-3000:]
    assert code1 == 0, out1[-3000:]
    export_dir = workers.flag("export_dir")
    versions = [os.path.join(root) for root, _, files in os.walk(export_dir)
                if "saved_model.pb" in files]
    assert versions == [os.path.join(export_dir, "quickstart", "1")]
    assert sorted(os.listdir(workers.flag("model_dir"))) == ["checkpoints", "config.json", "logs"]
    # A fresh process: the SavedModel serves, and the chief's checkpoint holds the weights that
    # worker 1 reported (worker 1 wrote no checkpoint of its own to the shared folder).
    script = textwrap.dedent(f"""
        import sys, numpy as np, tensorflow as tf
        from absl import flags
        from rotinv_tf import config as configs
        from rotinv_tf.training import train_lib
        configs.define_flags()
        flags.FLAGS(["train"] + {workers.args!r})
        config = configs.from_flags(flags.FLAGS)
        served = tf.saved_model.load({versions[0]!r}).signatures["serving_default"]
        out = served(images=tf.random.normal([3, 16, 16, 1]))
        assert out["canonical_image"].shape == (3, 16, 16, 1), out["canonical_image"].shape
        assert np.isfinite(out["angle"].numpy()).all()
        model = train_lib.build_model(config, 16)
        model.load_weights({os.path.join(workers.flag("model_dir"), "checkpoints",
                                         "latest.weights.h5")!r})
        print("checkpoint", train_lib.weights_digest(model))
    """)
    fresh = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), timeout=TIMEOUT,
                           capture_output=True, text=True, env={**os.environ, "PYTHONPATH": REPO})
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    checkpoint = re.search(r"^checkpoint ([0-9a-f]{64})$", fresh.stdout, re.M).group(1)
    assert _digest(out1) == _digest(out0) == checkpoint
    assert "written by the chief" in out1


def test_a_lost_worker_stops_the_run_and_a_restart_resumes_it(tmp_path):
    workers = Workers(str(tmp_path))
    metadata = os.path.join(workers.flag("model_dir"), "checkpoints", "training_metadata.json")
    workers.start()
    deadline = time.monotonic() + TIMEOUT
    while not (os.path.exists(metadata) and json.load(open(metadata))["epoch"] == 1):
        assert time.monotonic() < deadline and workers.processes[0].poll() is None
        time.sleep(0.05)
    workers.processes[1].send_signal(signal.SIGKILL)  # worker 1 is lost mid-epoch 2
    (code0, out0), (code1, _) = workers.wait()
    assert code1 == -signal.SIGKILL
    assert code0 == 1, out0[-3000:]
    last = user_facing_lines(out0)[-1]
    assert last.startswith("error: a worker was lost") and "restart every worker" in last
    assert json.load(open(metadata))["epoch"] == 1
    workers.start()  # the same commands again
    (code0, out0), (code1, out1) = workers.wait()
    assert code0 == 0 and code1 == 0, out0[-3000:]
    for out in (out0, out1):  # both resumed from the backup of epoch 1
        assert re.findall(r"^Epoch (\d+)/2", out, re.M) == ["2"]
    assert _digest(out0) == _digest(out1)
    assert json.load(open(metadata))["epoch"] == 2


@pytest.mark.parametrize("strategy", ["multi_worker", "mirrored"])
def test_learned_frame_is_refused_on_several_replicas(strategy):
    config = Config().replace(dataset="particle_stack", stack="x.mrcs", strategy=strategy)
    refused = f"frame learned cannot train with strategy {strategy}"
    with pytest.raises(ValueError, match=refused):
        config.replace(frame="learned").check()
    with pytest.raises(ValueError, match=refused):  # `auto` on a stack without angles
        config.resolved(DataFacts(angles=False))
    config.resolved(DataFacts(angles=True))


def test_slurm_cluster_from_the_step_variables(monkeypatch):
    for name, value in {"SLURM_PROCID": "1", "SLURM_STEP_NUM_TASKS": "2",
                        "SLURM_STEP_NODELIST": "gpu[07-08]",
                        "SLURM_STEP_TASKS_PER_NODE": "1(x2)"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    resolver = distribution.cluster_resolver("slurm", slurm_port=9000)
    assert resolver.cluster_spec().as_dict() == {"worker": ["gpu07:9000", "gpu08:9000"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 1)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"  # Slurm's choice of GPUs is kept
    with pytest.raises(ValueError, match="unknown cluster"):
        distribution.cluster_resolver("kubernetes")
