"""After each epoch: the lecture's test loss, and what a run keeps of the epoch.

``evaluate_loss`` is the lecture's test loss: the model in eval mode, z = mu (not a
sampled ELBO; ``vaelab evaluate`` computes that), summed over pixels, averaged over
images. ``end_of_epoch`` checks it, scores the validation split the same way
(``val_*``, with --val-size), caches the test-set latents, weights and a reconstruction
figure for the cached epochs, and appends the metrics line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vaelab.config import TrainConfig
from vaelab.data.datasets import Dataset
from vaelab.errors import DivergenceError
from vaelab.evaluation.bounds import latent_usage
from vaelab.losses import decoder_mean
from vaelab.models import LatentModel
from vaelab.objectives import negative_elbo
from vaelab.run import N_SHOWN, RunPaths
from vaelab.training.checkpoint import save_checkpoint
from vaelab.training.run_dir import append_metrics, write_latents

EVAL_BATCH = 1000


@torch.no_grad()
def evaluate_loss(
    model: LatentModel,
    x: Tensor,
    config: TrainConfig,
    keep_latents: bool = False,
    labels: Tensor | None = None,
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Per-sample test loss, recon and KL with z = mu (weight beta), the active units and
    the mutual information I(x; z) of the test posteriors (``latent_usage``); optionally
    the means, log-variances (-inf for a plain autoencoder) and the reconstructions (the
    decoder's means) of the first N_SHOWN images. ``labels``: those of ``x``, for a
    conditional model."""
    model.eval()
    sums = torch.zeros(3, device=x.device, dtype=torch.float64)
    mus, logvars = [], []
    shown = None
    for start in range(0, len(x), EVAL_BATCH):
        xb = x[start : start + EVAL_BATCH]
        yb = None if labels is None else labels[start : start + EVAL_BATCH]
        mu, logvar = model.posterior(xb, yb)
        logits = model.logits(mu, yb)
        terms = negative_elbo(model, xb, mu, (mu, logvar), logits, config.beta)
        sums += torch.stack([t.sum() for t in terms]).double()
        mus.append(mu.float())
        logvars.append(logvar if logvar is None else logvar.float())
        if keep_latents and shown is None:
            shown = decoder_mean(logits[:N_SHOWN], model.likelihood).float().cpu().numpy()
    loss, rec, kl = (sums / len(x)).tolist()
    mu = torch.cat(mus)
    logvar = None if logvars[0] is None else torch.cat(logvars)
    usage = latent_usage(mu, logvar)  # 0.03 s on the lecture's run (docs/benchmarks.md)
    test = {
        "test_loss": loss,
        "test_recon": rec,
        "test_kl": kl,
        "test_active_units": usage["active_units"],
        "test_mutual_information": usage["mutual_information"],
    }
    latents = {}
    if keep_latents:
        latents = {
            "mu": mu.cpu().numpy(),
            "logvar": (logvar if logvar is not None else torch.full_like(mu, -np.inf))
            .cpu()
            .numpy(),
            "recon": shown,
        }
    return test, latents


def end_of_epoch(
    model: LatentModel,
    x_test: Tensor,
    data: Dataset,
    config: TrainConfig,
    paths: RunPaths,
    epoch: int,
    row: dict[str, Any],
    final: bool | Callable[[], bool] = False,
    budget: dict[str, Any] | None = None,
) -> bool:
    """Evaluate, cache latents/weights/figures for cached epochs (and the ``final`` one,
    unless --embed-epochs says which), append the metrics row; returns ``final``.

    ``final`` may be a function that says whether this is the last epoch once the rest
    is done: under --time-budget the clock decides then, having seen this epoch's end
    (the latents are kept in memory until it has). ``budget``: the clock's state
    (--time-budget), kept in a cached epoch's checkpoint, so that ``--resume RUN
    --from-epoch E`` spends what was left at epoch E."""
    t0 = time.perf_counter()
    decided = not callable(final)
    cached = epoch in config.cached_epochs()
    keep = cached or (decided and final and config.embed_epochs is None)
    labels = data.y_test.to(x_test.device) if model.conditional else None
    test, latents = evaluate_loss(
        model, x_test, config, keep_latents=keep or not decided, labels=labels
    )
    if not np.isfinite(test["test_loss"]):
        raise DivergenceError(
            f"training diverged: non-finite test loss after epoch {epoch}; the last good "
            "checkpoint is kept. Try a lower --lr or --grad-clip 100"
        )
    val = validation_loss(model, data, config, x_test.device) if data.x_val is not None else {}
    row.update(test, **val, eval_seconds=time.perf_counter() - t0)
    if keep:
        _cache_epoch(model, data, paths, epoch, latents, budget)
    append_metrics(paths.metrics, row)
    if not decided:  # as late as may be, so that the clock has seen this epoch's end
        final = final()
        if final and not keep and config.embed_epochs is None:
            _cache_epoch(model, data, paths, epoch, latents, budget)
    return final


def _cache_epoch(
    model: LatentModel,
    data: Dataset,
    paths: RunPaths,
    epoch: int,
    latents: dict,
    budget: dict[str, Any] | None = None,
) -> None:
    """A cached epoch's test-set latents, weights (and the budget spent) and
    reconstruction figure."""
    write_latents(paths, epoch, latents, data)
    save_checkpoint(
        paths.epoch_checkpoint(epoch),
        model_config=dict(vars(model.config)),
        model=model.state_dict(),
        epoch=epoch,
        **({"budget": budget} if budget is not None else {}),
    )
    shown = dict(latents, inputs=data.x_test[:N_SHOWN].flatten(1).numpy())
    _reconstruction_figure(paths, data, epoch, shown)


def validation_loss(
    model: LatentModel, data: Dataset, config: TrainConfig, device: torch.device
) -> dict[str, float]:
    """val_loss, val_recon, val_kl: the test loss's bound (z = mu) on the validation
    split, what model selection (checkpoints/best.pt) compares."""
    x = data.x_val.to(device)
    labels = data.y_val.to(device) if model.conditional else None
    scores, _ = evaluate_loss(model, x, config, labels=labels)
    return {f"val_{k}": scores[f"test_{k}"] for k in ("loss", "recon", "kl")}


def _reconstruction_figure(
    paths: RunPaths, data: Dataset, epoch: int, latents: dict[str, np.ndarray]
) -> None:
    from vaelab.viz import plots

    plots.plot_rows(
        [latents["inputs"], latents["recon"]],
        ["input", f"epoch {epoch}"],
        data.input_shape,
        f"Test images and their reconstructions, epoch {epoch}",
        paths.figures / f"reconstructions-epoch-{epoch:03d}.png",
    )


def final_figures(root: Path) -> None:
    """Reconstructions by cached epoch and prior samples, as ``vaelab reconstruct`` and
    ``vaelab sample`` draw them."""
    from vaelab.run import load_run
    from vaelab.viz import figures

    run = load_run(root)
    figures.make_reconstructions(run)
    figures.make_samples(run)


def epoch_line(row: dict[str, Any]) -> str:
    train = "      -" if row["train_loss"] is None else f"{row['train_loss']:7.2f}"
    secs = "" if row["train_seconds"] is None else f"  {row['train_seconds']:.1f} s"
    val = f"  val {row['val_loss']:7.2f}" if row.get("val_loss") is not None else ""
    return (
        f"epoch {row['epoch']:3d}  train {train}{val}  test {row['test_loss']:7.2f} "
        f"(recon {row['test_recon']:.2f} + kl {row['test_kl']:.2f}){secs}"
    )
