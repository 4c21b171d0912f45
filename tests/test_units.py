"""`benchmarks.units`, the benchmarks' resumable runner: a unit runs once per settings, and a
stopped run leaves no torn unit."""
import json

import pytest

from benchmarks import units


def test_a_unit_runs_once_per_settings(tmp_path):
    path = str(tmp_path / "d" / "ours_seed0.json")
    calls = []

    def job() -> dict:
        calls.append(1)
        return {"score": len(calls)}

    assert units.run_once(path, {"epochs": 2}, job) == {"score": 1, "settings": {"epochs": 2}}
    assert units.run_once(path, {"epochs": 2}, job) is None  # saved: skipped
    assert units.run_once(path, {"epochs": 3}, job)["score"] == 2  # other settings: run again
    assert json.load(open(path)) == {"score": 2, "settings": {"epochs": 3}}
    assert units.load_all(str(tmp_path), "*/*.json") == [(path, {"score": 2,
                                                                 "settings": {"epochs": 3}})]


def test_a_stopped_run_leaves_no_unit(tmp_path):
    path = str(tmp_path / "u" / "ours_seed0.json")
    units.save(path, {"settings": {"a": 1}})
    assert units.finished(path, {"a": 1}) == {"settings": {"a": 1}}
    assert units.finished(path, {"a": 2}) is None
    open(path, "w").write('{"settings": ')  # torn by hand: never by `save`
    assert units.finished(path, {"a": 1}) is None
    assert units.finished(str(tmp_path / "absent.json"), {"a": 1}) is None


def test_a_failed_job_saves_nothing(tmp_path):
    path = tmp_path / "u.json"

    def job() -> dict:
        raise RuntimeError("training diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        units.run_once(str(path), {}, job)
    assert not path.exists()
