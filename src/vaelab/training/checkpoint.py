"""Checkpoints: plain tensors and numbers only, written atomically, loaded without
unpickling code (``torch.load(weights_only=True)``).

A checkpoint is ``{"format", "config", "model_config", "model", "optimizer", "rng",
"epoch"}``: enough to rebuild the model from the registry and continue training
bit for bit. A cached epoch's checkpoint holds ``{"format", "model_config", "model",
"epoch"}`` only. Each file carries its SHA-256 in the zip comment
(``vaelab.checksums``), checked before anything is unpickled.
"""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from vaelab.checksums import check_zip, note_unverified, seal_zip
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_bytes
from vaelab.training.distributed import World

FORMAT = "vaelab-checkpoint-1"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def restore_rng_state(ckpt: dict[str, Any], world: World) -> None:
    """Each rank's random state as saved; with another number of ranks, rank 0 takes the
    saved state of rank 0 and the others a fresh seed of their own."""
    ranks = ckpt.get("rng_ranks")
    if ranks is not None and len(ranks) == world.size:
        set_rng_state(ranks[world.rank])
    elif world.is_main:
        set_rng_state(ckpt["rng"])
    else:
        torch.manual_seed(int(ckpt["epoch"]) * 1_000_003 + world.rank)


def encode_checkpoint(**content: Any) -> bytes:
    """The bytes of a checkpoint of ``content`` (tensors, dicts, lists, numbers,
    strings), with its SHA-256."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **content}, buffer)
    return seal_zip(buffer.getvalue())


def save_checkpoint(path: Path | str, **content: Any) -> None:
    """Write ``content`` (tensors, dicts, lists, numbers, strings) atomically."""
    atomic_write_bytes(path, encode_checkpoint(**content))


def is_resumable(ckpt: dict[str, Any]) -> bool:
    """A full checkpoint (last.pt, a --keep-every copy), not a cached epoch's weights."""
    return "optimizer" in ckpt


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a vaelab checkpoint safely, its SHA-256 checked first (DamagedFileError on a
    mismatch); a clear VaelabError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise VaelabError(f"{path}: no checkpoint there")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise VaelabError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    sealed = check_zip(data, path)
    try:
        ckpt = torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "unsafe content"
        raise VaelabError(
            f"{path}: refused to load: it is not a plain-tensor checkpoint ({first[:160]})"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise VaelabError(
            f"{path}: truncated or corrupt checkpoint ({str(exc).splitlines()[0][:160]}); "
            "use another checkpoint or retrain"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise VaelabError(f"{path}: not a vaelab checkpoint")
    if not sealed:
        note_unverified(path)
    return ckpt
