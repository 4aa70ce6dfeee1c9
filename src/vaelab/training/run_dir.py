"""Writing a run directory: a new run, resuming one, and what each epoch appends.

The protocol that keeps a run exact and crash-safe: one process writes a run at a time
(``vaelab.lock``); a new run never touches an existing one; every file is written
atomically (``vaelab.fileio``) with its SHA-256 (``vaelab.checksums``) except
metrics.jsonl, which is appended and fsynced one checksummed line per epoch and cut back
to the checkpoint's epoch on resume; config.json records what a resume changed and when
the run finished. A write the disk refuses is a StorageError that names the intact
checkpoint and the resume command (``storage_failure``). The layout and the reader are
``vaelab.run``.
"""

from __future__ import annotations

import datetime
import math
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from vaelab.checksums import read_json, seal_json, sealed_line
from vaelab.config import DEFAULT_EPOCHS, TrainConfig
from vaelab.data.datasets import Dataset
from vaelab.errors import DamagedFileError, StorageError, VaelabError
from vaelab.fileio import (
    append_line,
    atomic_write_json,
    atomic_write_text,
    atomic_write_zip,
    make_writable_dir,
    remove_stale_temp_files,
    storage_error,
)
from vaelab.lock import RunLock
from vaelab.run import N_SHOWN, RunPaths, read_metrics, read_run_config
from vaelab.training.budget import budget_left
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
    atomic_write_zip(paths.latent_file(epoch), lambda f: np.savez_compressed(f, **arrays))


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    """One metrics line with its checksum, appended and fsynced."""
    append_line(path, sealed_line(row))


def truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop rows written after the checkpoint we resume from (a crash between the two)."""
    rows = [r for r in read_metrics(path) if r.get("epoch", -1) <= last_epoch]
    atomic_write_text(path, "".join(sealed_line(r) for r in rows))


def checkpoint_bytes(model: nn.Module) -> int:
    """A generous estimate of one checkpoint: weights + two Adam moments + overhead."""
    return 3 * weight_bytes(model)


def weight_bytes(model: nn.Module) -> int:
    """A generous estimate of a cached epoch's checkpoint: the weights + overhead."""
    return sum(p.numel() * p.element_size() for p in model.parameters()) + (1 << 20)


FIGURE_BYTES = 512 << 10  # a generous PNG
FINAL_FIGURES = 12  # samples, reconstructions and what vaelab report draws besides


def run_bytes(
    model: nn.Module, data: Dataset, config: TrainConfig, start: int = 0
) -> dict[str, int]:
    """What epochs ``start``..E and the final figures will keep on disk, generously, by
    kind: last.pt and the temporary copy of each rewrite, the --keep-every copies, each
    cached epoch's weights, latents, reconstruction figure and embeddings, the final
    figures and report.html (which holds them again), TensorBoard logs; best.pt
    (--val-size); a --time-budget run is counted as DEFAULT_EPOCHS more epochs."""
    last = config.epochs if config.epochs is not None else start + DEFAULT_EPOCHS
    epochs = range(start, last + 1)
    cached = [e for e in config.cached_epochs() if start <= e <= last]
    if config.epochs is None and config.embed_epochs is None:
        cached.append(last)  # a budget run caches its last epoch, whichever it is
    kept = [e for e in epochs if config.keep_every and e > 0 and e % config.keep_every == 0]
    n_test, pixels = data.x_test.shape[0], math.prod(data.input_shape)
    latents = n_test * (8 * config.latent_dim + 8) + 2 * N_SHOWN * pixels * 4
    embeddings = 2 * min(n_test, 1000) * 24  # t-SNE and PCA: xy, labels, indices
    figures = FIGURE_BYTES * (len(cached) + FINAL_FIGURES)
    logs = len(epochs) * (2 * N_SHOWN * pixels + (64 << 10)) if config.tensorboard else 0
    full, weights = checkpoint_bytes(model), weight_bytes(model)
    full += weights if config.ema is not None else 0  # the trained weights besides
    best = 2 * weights if config.val_size else 0  # best.pt and its temporary copy
    return {
        "checkpoints": full * (2 + len(kept)) + weights * len(cached) + best,
        "latents": latents * len(cached),
        "figures, embeddings and report": 2 * figures + embeddings * len(cached),
        "TensorBoard": logs,
    }


def check_disk_space(
    root: Path, model: nn.Module, data: Dataset, config: TrainConfig, start: int = 0
) -> None:
    """Refuse to start (or resume at epoch ``start``) without room for what is left."""
    need = run_bytes(model, data, config, start)
    total, free = sum(need.values()), shutil.disk_usage(root).free
    if free < total:
        parts = ", ".join(f"{kind} {size / 2**20:.1f}" for kind, size in need.items() if size)
        fix = f"then resume with: vaelab train --resume {root}" if start else "or another --out"
        raise VaelabError(
            f"not enough disk space in {root}: {free / 2**20:.1f} MiB free, the run needs "
            f"about {total / 2**20:.1f} MiB more (MiB: {parts}); free some space, {fix}"
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
    from vaelab.presets import describe_preset

    meta = {
        "vaelab_version": __version__,
        "torch_version": torch.__version__,
        "config": config.to_dict(),
        "preset": describe_preset(config),  # None, or the preset and what the flags overrode
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
    atomic_write_json(paths.config, seal_json(meta))


def update_run_config(paths: RunPaths, config: TrainConfig, world_size: int = 1) -> None:
    """Record what a resume changed (--epochs, --device, the number of processes) in
    config.json."""
    meta, _ = read_json(paths.config)  # checked: a damaged file is never sealed again
    if meta["config"] != config.to_dict() or meta.get("processes", 1) != world_size:
        meta["config"] = config.to_dict()
        meta["processes"] = world_size
        meta.pop("finished", None)
        atomic_write_json(paths.config, seal_json(meta))


def record_budget(paths: RunPaths, summary: dict[str, Any]) -> None:
    """Record in config.json what a --time-budget run did: epochs, steps, seconds."""
    meta, _ = read_json(paths.config)
    meta["budget"] = summary
    atomic_write_json(paths.config, seal_json(meta))


def mark_finished(paths: RunPaths) -> None:
    """Record in config.json that every epoch and the final figures are done."""
    meta, _ = read_json(paths.config)
    meta["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    atomic_write_json(paths.config, seal_json(meta))


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
    source: Path | None = None  # the file of ``ckpt``: last.pt, or --from-epoch's
    lock: RunLock | None = None  # the writer lock (RunLock(root) unless given)

    def __post_init__(self) -> None:
        if self.lock is None:
            self.lock = RunLock(self.root)


def open_run(
    config: TrainConfig | None,
    out: Path | str | None,
    resume: Path | str | None,
    epochs: int | None,
    device: str | None,
    world: World = World(),
    from_epoch: int | None = None,
    time_budget: float | None = None,
) -> RunState:
    """A new run directory, or the saved settings and last checkpoint of ``resume`` (or
    its checkpoint of epoch ``from_epoch``; ``epochs`` or ``time_budget`` a new length). Resuming, rank 0 takes the run's writer lock
    here (a new run's, once its folder exists: ``claim_run_dir``); ``train`` releases it."""
    if resume is None:
        if from_epoch is not None:
            raise VaelabError("--from-epoch chooses the checkpoint of --resume RUN; give both")
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
    read_run_config(root)  # a vaelab run, before a lock file is made in it
    lock = RunLock(root)
    if world.is_main:
        lock.acquire()
    try:
        return _resumed(root, epochs, device, world, from_epoch, lock, time_budget)
    except BaseException:
        lock.release()
        raise


def _resumed(
    root: Path,
    epochs: int | None,
    device: str | None,
    world: World,
    from_epoch: int | None,
    lock: RunLock,
    time_budget: float | None = None,
) -> RunState:
    meta = read_run_config(root)  # again, under the lock
    if world.is_main:
        remove_stale_temp_files(root)  # left by a process killed mid-write
    saved = dict(meta["config"])
    by_budget = saved.get("time_budget") is not None
    if (epochs is not None and by_budget) or (time_budget is not None and not by_budget):
        have, other = ("--time-budget", "--epochs") if by_budget else ("--epochs", "--time-budget")
        raise VaelabError(
            f"{root} was started with {have}; resume it with a new {have}, not {other}"
        )
    changes = (("epochs", epochs), ("device", device), ("time_budget", time_budget))
    saved.update({k: v for k, v in changes if v is not None})
    config = TrainConfig.from_dict(saved)
    paths = RunPaths(root)
    source = paths.last if from_epoch is None else paths.epoch_checkpoint(from_epoch)
    if from_epoch is not None and not source.is_file():
        from vaelab.verify import resume_advice

        raise VaelabError(f"{root} has no checkpoint of epoch {from_epoch}; {resume_advice(root)}")
    if not source.exists():  # stopped before its first checkpoint: start over
        return RunState(config, root, 0, None, meta, lock=lock)
    try:
        ckpt = load_checkpoint(source)
    except DamagedFileError as exc:
        if from_epoch is not None:
            raise
        from vaelab.verify import resume_advice

        raise DamagedFileError(exc.path, f"{exc.reason}; {resume_advice(root)}") from None
    partial = ckpt.get("partial")
    start = int(partial["epoch"]) if partial else int(ckpt["epoch"]) + 1
    state = RunState(config, root, start, ckpt, meta, source=source, lock=lock)
    if config.time_budget is not None:
        ended = not budget_left(config.time_budget, ckpt.get("budget"))
    else:
        ended = start > config.epochs
    if ended and "finished" not in meta:  # killed while drawing the figures
        state.finish_only = True
    elif ended and config.time_budget is not None:
        spent = ckpt["budget"]["seconds"] / 60
        raise VaelabError(
            f"{root} already spent its time budget ({spent:.2f} of {config.time_budget:g} "
            f"min); pass --time-budget M (M > {spent:.2f}) to train longer"
        )
    elif ended:
        raise VaelabError(
            f"{root} already finished epoch {start - 1} of {config.epochs}; "
            f"pass --epochs N (N > {start - 1}) to train longer"
        )
    return state


def claim_run_dir(state: RunState) -> None:
    """Create a new run's directory and take its writer lock (a resumed run holds it
    already); a run that another process began there meanwhile is refused."""
    create_run_dir(state.root)
    if not state.lock.held:
        state.lock.acquire()
        refuse_existing_run(state.root)


@contextmanager
def writing(state: RunState) -> Iterator[None]:
    """While a run is being written: release its writer lock at the end, and turn a write
    the disk refuses into ``storage_failure``'s StorageError."""
    try:
        yield
    except OSError as exc:
        if (failed := storage_error(exc)) is None:
            raise
        raise storage_failure(failed, state.root) from None
    finally:
        state.lock.release()


def storage_failure(error: StorageError, root: Path) -> StorageError:
    """A write the disk refused during training, as one line: what happened, which file,
    which checkpoint is intact and the resume command (exit code 4)."""
    from vaelab.verify import checkpoint_status, resume_advice

    message = error.message if error.path is not None else f"{error.message} in {root}"
    last = RunPaths(root).last
    ckpt = checkpoint_status(last)[2] if last.is_file() else None
    if ckpt is not None:
        done = ckpt.get("partial", {}).get("step")
        at = f"epoch {ckpt['epoch']}" + (f" and {done} steps of the next" if done else "")
        intact = f"{last} ({at}) is intact; free some space, then resume with: "
        intact += f"vaelab train --resume {root}"
    elif not last.exists():
        intact = "no checkpoint was written yet; free some space, then start it again with: "
        intact += f"vaelab train --resume {root}"
    else:
        intact = f"{last} is damaged too; {resume_advice(root)}"
    return StorageError(f"{message}; {intact}", error.errno, error.path)
