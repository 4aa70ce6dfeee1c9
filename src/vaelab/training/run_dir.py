"""Writing a run directory: a new run, resuming one, and what each epoch appends.

The protocol that keeps a run exact and crash-safe: a new run never touches an existing
one; every file is written atomically (``vaelab.fileio``) except metrics.jsonl, which is
appended and fsynced one line per epoch and cut back to the checkpoint's epoch on resume;
config.json records what a resume changed and when the run finished. The layout and the
reader are ``vaelab.run``.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaelab.config import TrainConfig
from vaelab.data.datasets import Dataset
from vaelab.errors import VaelabError
from vaelab.fileio import (
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    make_writable_dir,
    remove_stale_temp_files,
)
from vaelab.run import N_SHOWN, RunPaths, read_metrics, read_run_config
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.distributed import World


def refuse_existing_run(root: Path) -> None:
    """A new run never touches an existing one (checked before anything is written)."""
    paths = RunPaths(root)
    if paths.config.exists() or paths.last.exists():
        raise VaelabError(
            f"{root} already holds a run; continue it with: vaelab train --resume {root}, "
            "or choose another --out"
        )
    if root.exists() and not root.is_dir():
        raise VaelabError(f"--out {root} exists and is not a directory")


def create_run_dir(root: Path) -> None:
    try:
        make_writable_dir(root)
    except OSError as exc:
        raise VaelabError(
            f"cannot write the run directory {root}: {exc.strerror or exc}; choose another --out"
        ) from None


def write_latents(
    paths: RunPaths, epoch: int, latents: dict[str, np.ndarray], data: Dataset
) -> None:

    arrays = dict(
        latents, labels=data.y_test.numpy(), inputs=data.x_test[:N_SHOWN].flatten(1).numpy()
    )
    atomic_write(paths.latent_file(epoch), lambda f: np.savez_compressed(f, **arrays))


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop rows written after the checkpoint we resume from (a crash between the two)."""
    rows = [r for r in read_metrics(path) if r.get("epoch", -1) <= last_epoch]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def checkpoint_bytes(model: nn.Module) -> int:
    """A generous estimate of one checkpoint: weights + two Adam moments + overhead."""
    return 3 * sum(p.numel() * p.element_size() for p in model.parameters()) + (1 << 20)


def check_disk_space(root: Path, model: nn.Module, data: Dataset, config: TrainConfig) -> None:
    need = checkpoint_bytes(model) * (3 + len(config.cached_epochs()))
    need += len(config.cached_epochs()) * data.x_test.shape[0] * config.latent_dim * 8
    free = shutil.disk_usage(root).free
    if free < need:
        raise VaelabError(
            f"not enough disk space in {root}: {free / 2**20:.1f} MiB free, the run needs "
            f"about {need / 2**20:.1f} MiB; free some space or choose another --out"
        )


def write_run_config(
    paths: RunPaths,
    config: TrainConfig,
    model_config: dict,
    data: Dataset,
    dev: torch.device,
    world_size: int = 1,
) -> None:
    from vaelab import __version__

    meta = {
        "vaelab_version": __version__,
        "torch_version": torch.__version__,
        "config": config.to_dict(),
        "model_config": {
            k: list(v) if isinstance(v, tuple) else v for k, v in model_config.items()
        },
        "data": data.describe(),
        "device": str(dev),
        "processes": world_size,  # torch.distributed ranks that trained it (1: one process)
        "test_loss_note": "test_* metrics use z = mu (the lecture's eval mode), not a "
        "sampled ELBO; vaelab evaluate computes the sampled bound",
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    atomic_write_json(paths.config, meta)


def update_run_config(paths: RunPaths, config: TrainConfig, world_size: int = 1) -> None:
    """Record what a resume changed (--epochs, --device, the number of processes) in
    config.json."""
    meta = json.loads(paths.config.read_text())
    if meta["config"] != config.to_dict() or meta.get("processes", 1) != world_size:
        meta["config"] = config.to_dict()
        meta["processes"] = world_size
        meta.pop("finished", None)
        atomic_write_json(paths.config, meta)


def mark_finished(paths: RunPaths) -> None:
    """Record in config.json that every epoch and the final figures are done."""
    meta = json.loads(paths.config.read_text())
    meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    atomic_write_json(paths.config, meta)


def default_run_dir() -> Path:
    return Path("runs") / datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")


@dataclass
class RunState:
    """What the epoch loop needs to know about where a run starts."""

    config: TrainConfig
    root: Path
    start: int  # first epoch to run
    ckpt: dict[str, Any] | None  # the checkpoint resumed from, if any
    meta: dict[str, Any] | None  # config.json of a resumed run
    finish_only: bool = False  # every epoch is trained; only the final figures are missing


def open_run(
    config: TrainConfig | None,
    out: Path | str | None,
    resume: Path | str | None,
    epochs: int | None,
    device: str | None,
    world: World = World(),
) -> RunState:
    """A new run directory, or the saved settings and last checkpoint of ``resume``."""
    if resume is None:
        config = config or TrainConfig()
        if out is None and world.distributed:
            raise VaelabError(
                "a multi-process run needs --out RUN (every rank must write to the same place)"
            )
        root = Path(out) if out is not None else default_run_dir()
        if world.is_main:
            refuse_existing_run(root)
        return RunState(config, root, 0, None, None)
    root = Path(resume)
    meta = read_run_config(root)
    if world.is_main:
        remove_stale_temp_files(root)  # left by a process killed mid-write
    saved = dict(meta["config"])
    saved.update({k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None})
    config = TrainConfig.from_dict(saved)
    if not RunPaths(root).last.exists():  # stopped before its first checkpoint: start over
        return RunState(config, root, 0, None, meta)
    ckpt = load_checkpoint(RunPaths(root).last)
    partial = ckpt.get("partial")
    start = int(partial["epoch"]) if partial else int(ckpt["epoch"]) + 1
    if start > config.epochs and "finished" not in meta:  # killed while drawing the figures
        return RunState(config, root, start, ckpt, meta, finish_only=True)
    if start > config.epochs:
        raise VaelabError(
            f"{root} already finished epoch {start - 1} of {config.epochs}; "
            f"pass --epochs N (N > {start - 1}) to train longer"
        )
    return RunState(config, root, start, ckpt, meta)
