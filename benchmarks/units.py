"""The benchmarks' resumable runner: each unit of work (a training run and its scores, a baseline)
is saved atomically as one JSON file with the settings it ran with, so a rerun, or a stopped run
started again, skips every unit saved with the same settings and runs the rest."""
import glob
import json
import os
from typing import Callable

from data_pipeline.atomic import write_text


def save(path: str, record: dict | list) -> None:
    """Writes a unit atomically (its folder made): a stopped run leaves it whole or absent."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    write_text(path, json.dumps(record, indent=1, allow_nan=True) + "\n")


def finished(path: str, settings: dict) -> dict | None:
    """The unit saved at `path` if it was run with `settings` (else None: to be run again)."""
    try:
        with open(path) as f:
            unit = json.load(f)
    except (OSError, ValueError):
        return None
    return unit if unit.get("settings") == settings else None


def run_once(path: str, settings: dict, job: Callable[[], dict]) -> dict | None:
    """Runs `job()` and saves its record with `settings` at `path`, unless a unit saved with the
    same settings is there; the new record, or None when it was skipped."""
    if finished(path, settings) is not None:
        return None
    record = {**job(), "settings": settings}
    save(path, record)
    return record


def record_command(folder: str, command: str) -> list[str]:
    """The commands that ran units in `folder`, `command` added (once) and saved: what a report of
    those units says it came from."""
    path = os.path.join(folder, "commands.json")
    commands = json.load(open(path)) if os.path.exists(path) else []
    commands = list(dict.fromkeys(commands + [command]))
    save(path, commands)
    return commands


def load_all(folder: str, pattern: str = "*.json") -> list[tuple[str, dict]]:
    """(path, record) of every unit under `folder` matching `pattern`, in path order."""
    records = []
    for path in sorted(glob.glob(os.path.join(folder, pattern))):
        with open(path) as f:
            records.append((path, json.load(f)))
    return records
