"""Model selection on the validation split (--val-size): checkpoints/best.pt.

After each epoch the validation loss (``val_loss``: the test loss's z = mu bound on the
held-out training images, never the test set) is compared with the best so far; a lower
one makes that epoch's weights (the averaged ones under --ema) checkpoints/best.pt,
``{"format", "model_config", "model", "epoch", "val_loss"}``. Rank 0 writes it, after
last.pt, whose "best" records which epoch best.pt must hold: a run killed between the two
writes finds last.pt's weights are that epoch's and writes best.pt again on resume.
"""

from __future__ import annotations

from typing import Any

from vaelab.errors import VaelabError
from vaelab.run import RunPaths
from vaelab.training.checkpoint import load_checkpoint, save_checkpoint

Best = dict[str, Any]  # {"epoch": int, "val_loss": float}


def improved(best: Best | None, epoch: int, row: dict[str, Any]) -> Best | None:
    """The new best record if ``row``'s val_loss beats ``best`` (a strict improvement:
    of equal losses the earlier epoch stays), else None.

    Examples:
        >>> improved(None, 1, {"val_loss": 90.0})
        {'epoch': 1, 'val_loss': 90.0}
        >>> improved({"epoch": 1, "val_loss": 90.0}, 2, {"val_loss": 95.0}) is None
        True
    """
    loss = row.get("val_loss")
    if loss is None or not loss == loss:  # no validation split, or NaN
        return None
    if best is None or loss < best["val_loss"]:
        return {"epoch": epoch, "val_loss": loss}
    return None


def write_best(paths: RunPaths, model_config: dict, model_state: dict, best: Best) -> None:
    """checkpoints/best.pt: atomically, with its checksum."""
    save_checkpoint(paths.best, model_config=model_config, model=model_state, **best)


def saved_best(paths: RunPaths) -> Best | None:
    """The record best.pt holds, or None when it is missing or damaged."""
    if not paths.best.is_file():
        return None
    try:
        ckpt = load_checkpoint(paths.best)
        return {"epoch": int(ckpt["epoch"]), "val_loss": float(ckpt["val_loss"])}
    except (VaelabError, KeyError, TypeError, ValueError):
        return None


def reconcile_best(paths: RunPaths, ckpt: dict[str, Any]) -> Best | None:
    """On resume: the best record to continue with, best.pt made to agree with it.

    best.pt as last.pt recorded it: kept. Killed between writing last.pt and best.pt
    (the record names last.pt's own finished epoch): best.pt is written from last.pt.
    Anything else (no record: resuming from a cached epoch's weights; a best.pt from
    epochs after the checkpoint, e.g. --from-epoch an earlier copy): best.pt is removed
    and selection starts again from the next epoch."""
    best = ckpt.get("best")
    if best is not None and saved_best(paths) == best:
        return best
    if best is not None and best["epoch"] == int(ckpt["epoch"]) and not ckpt.get("partial"):
        write_best(paths, ckpt["model_config"], ckpt["model"], best)
        return best
    paths.best.unlink(missing_ok=True)
    return None
