"""``vaelab verify RUN``: every file of a run checked against the SHA-256 recorded when it
was written (``vaelab.checksums``), and the newest checkpoint a damaged run can continue
from.

Checked: config.json, every metrics.jsonl line, checkpoints/last.pt, best.pt and epoch-NNN.pt,
latents/epoch-NNN.npz, embeddings/*.npz and eval.json. Expected, and reported missing if
absent: a metrics row, latents and weights for every cached epoch up to the last
checkpoint's epoch, and the ``--keep-every`` copies. Files without a checksum (an older
vaelab wrote them) are reported as such; their zip CRC-32s are still checked. Figures,
report.html and tb/ carry no checksum: they are drawn again from the files above.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.checksums import check_zip, read_json
from vaelab.config import TrainConfig
from vaelab.errors import DamagedFileError, VaelabError
from vaelab.run import RunPaths, check_metrics

INTACT, DAMAGED, MISSING, UNVERIFIED = "intact", "damaged", "missing", "no checksum (old run)"


@dataclass
class FileCheck:
    """One file of a run: its path inside the run, a status above, and why."""

    name: str
    status: str
    detail: str = ""

    def line(self) -> str:
        return f"{self.name}: {self.status}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Checkpoint:
    """An intact checkpoint of a run: a full one (``resumable``) or a cached epoch's
    weights."""

    path: Path
    epoch: int
    resumable: bool


def _zip_status(path: Path) -> tuple[str, str, bytes | None]:
    """(status, detail, bytes) of a zip file vaelab wrote (.pt, .npz)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return DAMAGED, f"cannot be read: {exc.strerror or exc}", None
    try:
        if check_zip(data, path):
            return INTACT, "", data
    except DamagedFileError as exc:
        return DAMAGED, exc.reason, None
    try:  # no checksum: at least the CRC-32 of every member
        bad = zipfile.ZipFile(io.BytesIO(data)).testzip()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        return DAMAGED, f"not a complete zip archive: {exc}", None
    if bad is not None:
        return DAMAGED, f"the CRC-32 of its member {bad} does not match", None
    return UNVERIFIED, "its zip CRC-32s match", data


def checkpoint_status(path: Path) -> tuple[str, str, dict[str, Any] | None]:
    """(status, detail, the checkpoint) of a checkpoint file, loaded without code."""
    import torch

    from vaelab.training.checkpoint import FORMAT

    status, detail, data = _zip_status(path)
    if data is None:
        return status, detail, None
    try:
        ckpt = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to load means "damaged" here
        return DAMAGED, f"not a loadable checkpoint: {str(exc).splitlines()[0][:120]}", None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        return DAMAGED, "not a vaelab checkpoint", None
    return status, detail, ckpt


def _json_status(path: Path) -> tuple[str, str, Any]:
    try:
        obj, sealed = read_json(path)
    except DamagedFileError as exc:
        return DAMAGED, exc.reason, None
    except (OSError, ValueError) as exc:
        return DAMAGED, f"not readable JSON: {exc}", None
    return (INTACT if sealed else UNVERIFIED), "", obj


def _epoch_of(path: Path) -> int | None:
    """5 for epoch-005.pt / epoch-005.npz / epoch-005-tsne.npz; None for other names."""
    parts = path.name.split(".")[0].split("-")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "epoch" and parts[1].isdigit() else None


def _epoch_files(folder: Path, suffix: str) -> dict[int, Path]:
    found = {}
    for p in folder.glob(f"epoch-*{suffix}") if folder.is_dir() else []:
        epoch = _epoch_of(p)
        if epoch is not None and p.name == f"epoch-{epoch:03d}{suffix}":
            found[epoch] = p
    return found


def _span(epochs: list[int]) -> str:
    return ", ".join(map(str, epochs[:8])) + (", ..." if len(epochs) > 8 else "")


def verify_run(root: Path | str) -> list[FileCheck]:
    """Check every file of the run in ``root``; one FileCheck per file, in the order of
    the run directory's listing in the README."""
    root = Path(root)
    paths = RunPaths(root)
    if not root.is_dir():
        raise VaelabError(f"{root}: no such run directory")
    if not paths.config.is_file() and not paths.checkpoints.is_dir():
        raise VaelabError(f"{root}: not a vaelab run (no config.json); pass a run directory")

    def name(path: Path) -> str:
        return path.relative_to(root).as_posix()

    config_check, config = _config_check(paths)
    checks = [config_check]
    if paths.last.is_file():
        status, detail, last = checkpoint_status(paths.last)
        done = None if last is None else int(last["epoch"])
        detail = detail or (f"epoch {done}" if done is not None else "")
        last_check = FileCheck(name(paths.last), status, detail)
    else:
        done, last_check = None, FileCheck(name(paths.last), MISSING, "resume starts over")
    rows, problems, unsealed = check_metrics(paths.metrics)
    if done is None:
        done = max((r.get("epoch", -1) for r in rows), default=-1)
    checks.append(_metrics_check(paths, rows, problems, unsealed, done))
    checks.append(last_check)
    if paths.best.is_file():  # --val-size runs: the epoch of lowest validation loss
        status, detail, best = checkpoint_status(paths.best)
        detail = detail or (f"epoch {best['epoch']}" if best is not None else "")
        checks.append(FileCheck(name(paths.best), status, detail))

    cached = [e for e in (config.cached_epochs() if config else []) if e <= done]
    keep = config.keep_every if config else 0
    kept = list(range(keep, done + 1, keep)) if keep else []
    present = _epoch_files(paths.checkpoints, ".pt")
    for epoch in sorted(set(present) | set(cached) | set(kept)):
        path = paths.epoch_checkpoint(epoch)
        what = "the resumable --keep-every copy" if epoch in kept else "the cached weights"
        if epoch not in present:
            checks.append(FileCheck(name(path), MISSING, what))
            continue
        status, detail, ckpt = checkpoint_status(path)
        if ckpt is not None and epoch in kept and "optimizer" not in ckpt:
            status, detail = MISSING, f"{what}: only the cached weights are there"
        checks.append(FileCheck(name(path), status, detail))
    latents = _epoch_files(paths.latents, ".npz")
    for epoch in sorted(set(latents) | set(cached)):
        path = paths.latent_file(epoch)
        status, detail, _ = _zip_status(path) if epoch in latents else (MISSING, "", None)
        checks.append(FileCheck(name(path), status, detail))
    for path in sorted(paths.embeddings.glob("*.npz")) if paths.embeddings.is_dir() else []:
        checks.append(FileCheck(name(path), *_zip_status(path)[:2]))
    if paths.eval.is_file():
        checks.append(FileCheck(name(paths.eval), *_json_status(paths.eval)[:2]))
    return checks


def _config_check(paths: RunPaths) -> tuple[FileCheck, TrainConfig | None]:
    if not paths.config.is_file():
        return FileCheck("config.json", MISSING), None
    status, detail, meta = _json_status(paths.config)
    try:
        config = TrainConfig.from_dict(meta["config"]) if meta is not None else None
    except (KeyError, TypeError, ValueError, VaelabError) as exc:
        status, detail, config = DAMAGED, f"not a vaelab run config: {exc}", None
    return FileCheck("config.json", status, detail), config


def _metrics_check(
    paths: RunPaths, rows: list[dict], problems: list[tuple[int, str]], unsealed: int, done: int
) -> FileCheck:
    if not paths.metrics.is_file():
        return FileCheck("metrics.jsonl", MISSING if done >= 0 else INTACT, "")
    if problems:
        text = "; ".join(f"line {number}: {why}" for number, why in problems[:3])
        return FileCheck("metrics.jsonl", DAMAGED, text)
    lacking = sorted(set(range(done + 1)) - {r.get("epoch") for r in rows})
    if lacking:
        return FileCheck("metrics.jsonl", MISSING, f"no row for epoch {_span(lacking)}")
    if unsealed:
        return FileCheck("metrics.jsonl", UNVERIFIED, f"{unsealed} of {len(rows)} rows")
    return FileCheck("metrics.jsonl", INTACT, f"{len(rows)} rows")


def intact_checkpoints(root: Path | str) -> list[Checkpoint]:
    """The intact epoch checkpoints of a run, newest first, down to the newest resumable
    one (a ``--keep-every`` copy); files without a checksum count if they load."""
    found = []
    for epoch, path in sorted(_epoch_files(RunPaths(root).checkpoints, ".pt").items())[::-1]:
        status, _, ckpt = checkpoint_status(path)
        if ckpt is None:
            continue
        found.append(Checkpoint(path, epoch, "optimizer" in ckpt))
        if found[-1].resumable:
            break
    return found


def resume_advice(root: Path | str) -> str:
    """What a run whose last.pt is damaged can continue from, with the command."""
    found = intact_checkpoints(root)
    full = next((c for c in found if c.resumable), None)
    newer = found[0] if found and not found[0].resumable else None
    parts = []
    if full is not None:
        parts.append(
            f"the newest intact resumable checkpoint is checkpoints/{full.path.name} (epoch "
            f"{full.epoch}); continue from it, exactly, with: vaelab train --resume {root} "
            f"--from-epoch {full.epoch}"
        )
    if newer is not None:
        parts.append(
            f"checkpoints/{newer.path.name} (epoch {newer.epoch}) holds weights only: "
            f"--from-epoch {newer.epoch} continues from them with a fresh optimiser state, "
            "which will not match an uninterrupted run bit for bit"
        )
    return "; ".join(parts) or "no intact checkpoint is left to continue from"
