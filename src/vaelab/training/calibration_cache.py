"""The calibration cache of ``--threads auto`` (vaelab.training.threads): the best thread
count and OpenMP spin measured for one CPU, core count, torch version and model shape,
kept in the user cache (``threads.json``) so that a run measures only once per machine.

Only the standard library is imported here: the command line plans before torch loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CALIBRATION_VERSION = 1  # part of the cache key: a new method measures again
# The settings a step's cost depends on: the cache keeps one measurement per combination.
SHAPE_FIELDS = (
    "model", "dataset", "latent_dim", "hidden", "batch_size", "precision", "objective",
    "iw_k", "condition",
)  # fmt: skip


def step_shape(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The settings of ``SHAPE_FIELDS`` with TrainConfig's defaults filled in (read from
    the dataclass's fields: building a TrainConfig would import torch)."""
    from vaelab.config import LECTURE_LATENT_DIM, TrainConfig

    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    values = {**defaults, **{k: v for k, v in settings.items() if k in defaults}}
    shape = {k: values[k] for k in SHAPE_FIELDS}
    if shape["latent_dim"] is None:  # the model's own default; only a key, with "model" in it
        shape["latent_dim"] = LECTURE_LATENT_DIM
    if shape["hidden"] is None and isinstance(shape["latent_dim"], int):
        shape["hidden"] = shape["latent_dim"] ** 2  # TrainConfig's d^2
    return shape


def cache_key(cpu: str, flags: frozenset[str], cores: int, torch: str, shape: dict) -> str:
    """What a calibration is valid for: the CPU (model name and feature flags: a virtual
    machine may show one name over different hosts), the cores we may use, torch's
    version, the model's shape and the calibration method's version."""
    described = {
        "version": CALIBRATION_VERSION,
        "cpu": cpu,
        "flags": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:12],
        "cores": cores,
        "torch": torch,
        "shape": shape,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:24]


def cache_path() -> Path:
    from vaelab.data.sources import cache_dir

    return cache_dir() / "threads.json"


def read_cache(path: Path) -> dict[str, dict]:
    """The cached calibrations by key; {} for a missing or unreadable file (a cache: it
    is measured again)."""
    try:
        entries = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def cached_calibration(path: Path, key: str) -> dict | None:
    entry = read_cache(path).get(key)
    valid = isinstance(entry, dict) and isinstance(entry.get("threads"), int)
    return entry if valid and isinstance(entry.get("spin"), int) else None


def store_calibration(path: Path, key: str, entry: dict, keep: int = 100) -> None:
    """Add ``entry`` under ``key`` (replacing an older one), keeping the newest ``keep``;
    a cache that cannot be written is only a note."""
    from vaelab.fileio import atomic_write_json

    entries = {k: v for k, v in read_cache(path).items() if k != key}
    entries[key] = entry
    entries = dict(list(entries.items())[-keep:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, entries)
    except OSError as exc:
        print(f"vaelab: note: could not cache the thread calibration: {exc}", file=sys.stderr)


@contextmanager
def calibration_lock(path: Path) -> Iterator[None]:
    """One calibration at a time per cache: a second run started at the same moment waits
    for the first one's result instead of measuring against it."""
    try:
        import fcntl

        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    except (ImportError, OSError):
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
