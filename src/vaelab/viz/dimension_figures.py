"""The figures of single latent dimensions for a run directory: traversals (one
dimension moved at a time), each dimension's use over the cached epochs, and the KL per
dimension. As in :mod:`vaelab.viz.figures`, each function computes with
:mod:`vaelab.viz.analysis`, draws, and returns the file it wrote.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vaelab.errors import VaelabError
from vaelab.run import Run
from vaelab.viz import analysis, dimensions, latent_plots, plots
from vaelab.viz.figures import epochs_or_cached, label_name, model_kind, output_dir

MAX_TRAVERSAL_ROWS = 32  # the most-used dimensions shown by default
MAX_TRAVERSAL_STEPS = 41


def _last_latents(run: Run) -> dict[str, np.ndarray] | None:
    cached = run.cached_epochs()
    return run.latents(cached[-1]) if cached else None


def _traversal_base(
    run: Run, lat, index: int | None, data, label: int | None
) -> tuple[np.ndarray, object, str, int | None]:
    """(base code, per-dimension scale or None, what the base is, the label a conditional
    run decodes with: ``label``, else the test image's own, else 0) of ``make_traversal``."""
    model, scale, where = run.model, None, "the prior mean"
    if not model.stochastic and lat is not None:  # an AE: no prior to sweep around
        base, scale, where = lat["mu"].mean(0), lat["mu"].std(0), "the mean code"
    else:
        base = model.prior_mean().numpy()
    if index is not None:
        data = data if data is not None else run.dataset()
        analysis.check_index(index, len(data.x_test), "--index")
        own = int(data.y_test[index])
        x = data.x_test[index : index + 1]
        if model.conditional:
            label = own if label is None else label
            y = torch.full((1,), label, dtype=torch.long)
        with torch.no_grad():
            mu = (model.encode(x, y) if model.conditional else model.encode(x))[0]
        base = mu[0].double().numpy()
        where = f"test image #{index}" + (f" (a {own})" if own >= 0 else "")
    if model.conditional:
        label = analysis.check_label(model, 0 if label is None else label)
        where += f", decoded as {label_name(run, label)}"
    return base, scale, where, label


def make_traversal(
    run: Run,
    dims: Sequence[int] | None = None,
    span: float = 3.0,
    steps: int = 11,
    index: int | None = None,
    out: Path | str | None = None,
    data=None,
    label: int | None = None,
) -> Path:
    """One row per latent dimension (0-based ``dims``; default: all, at most 32), most
    used first: the base code decoded with that dimension moved by t in [-span, span]
    (``dimensions.traversal``). Base: the prior mean, or with ``index`` the posterior mean
    of that test image. Use is the mean KL at the last cached epoch (an AE: the codes'
    variance; its base is their mean and t is in units of their std). A conditional run
    decodes with ``label`` (default: the test image's own label, else 0)."""
    if label is not None:
        analysis.check_label(run.model, label)
    folder = output_dir(run, out)
    model, d = run.model, run.model.latent_dim
    if steps > MAX_TRAVERSAL_STEPS:
        raise VaelabError(f"--steps {steps} is too many to see; use at most {MAX_TRAVERSAL_STEPS}")
    lat = _last_latents(run)
    use, what = (
        dimensions.dimension_use(model, lat) if lat is not None else (np.full(d, np.nan), "")
    )
    chosen = list(range(d)) if dims is None else list(dict.fromkeys(dims))
    order = sorted(chosen, key=lambda j: -use[j] if np.isfinite(use[j]) else j)
    order = order[:MAX_TRAVERSAL_ROWS] if dims is None else order
    base, scale, where, label = _traversal_base(run, lat, index, data, label)
    tr = dimensions.traversal(model, base, order, span, steps, scale, label)
    unused = [bool(np.isfinite(use[j]) and use[j] < dimensions.INACTIVE) for j in order]
    labels = [
        f"z{j + 1}"
        + (f"  {what} {use[j]:.{2 if use[j] >= 0.1 else 3}f}" if np.isfinite(use[j]) else "")
        + (" (inactive)" if off else "")
        for j, off in zip(order, unused)
    ]
    shown = f"{len(order)} of {d}" if len(order) < d else {1: "the", 2: "both"}.get(d, f"all {d}")
    ranked = (
        f", most used ({what} at epoch {run.cached_epochs()[-1]}) first; grey: inactive "
        f"({what} < {dimensions.INACTIVE:g})"
        if lat is not None
        else ""
    )
    title = (
        f"{model_kind(run)}: one latent dimension at a time, around {where}\n"
        f"{shown} dimension{'s' if len(order) > 1 else ''}{ranked}"
    )
    unit = " × the codes' std" if scale is not None else ""
    name = "traversal.png" if index is None else f"traversal-{index}.png"
    return latent_plots.plot_traversal(
        tr["images"],
        labels,
        unused,
        tr["t"],
        model.config.input_shape,
        title,
        folder / name,
        xlabel=f"z_j − base_j{unit}",
    )


def make_latent_use(run: Run, out: Path | str | None = None) -> Path:
    """Is the latent used? Each dimension's KL over the cached epochs, the total KL, the
    mutual information I(x; z) and the active units per epoch (posterior collapse shows
    as KL and I near 0)."""
    folder = output_dir(run, out)
    epochs = epochs_or_cached(run, None)
    if not run.model.stochastic:
        raise VaelabError(f"{run.path} is a plain autoencoder: it has no KL or posterior")
    _check_kl_per_dim(run)
    use = dimensions.latent_use_by_epoch(run.model, {e: run.latents(e) for e in epochs})
    last = use["kl"][-1]
    title = (
        f"{model_kind(run)} latent use, beta = {run.config.beta:g}: epoch {epochs[-1]} has "
        f"{int(use['active_units'][-1])} active units, KL {last.sum():.2f} nats, "
        f"I(x; z) {use['mutual_information'][-1]:.2f} nats"
    )
    return latent_plots.plot_latent_use(use, title, folder / "latent-use.png", run.metrics)


def make_kl_per_dim(run: Run, out: Path | str | None = None, epoch: int | None = None) -> Path:
    """Mean KL per latent dimension of the test set at a cached epoch (the last)."""
    folder = output_dir(run, out)
    epoch = epochs_or_cached(run, [epoch] if epoch is not None else None)[-1]
    lat = run.latents(epoch)
    if not np.isfinite(lat["logvar"]).all():
        raise VaelabError(f"{run.path} is a plain autoencoder: it has no KL per dimension")
    _check_kl_per_dim(run)
    kl = analysis.kl_per_dim(lat["mu"], lat["logvar"])
    used = int((kl > 0.01).sum())
    return plots.plot_kl_per_dim(
        kl,
        f"KL per latent dimension, epoch {epoch}: total {kl.sum():.1f} nats, "
        f"{used} of {len(kl)} above 0.01",
        folder / "kl-per-dim.png",
    )


def _check_kl_per_dim(run: Run) -> None:
    """A one-line error for a run whose prior gives no KL per dimension (a learned one)."""
    if not run.model.closed_form_kl:
        raise VaelabError(
            f"{run.path} has {run.model.learned_prior.describe()}: its KL has no term per "
            "latent dimension (a mixture does not factorise); metrics.jsonl's test_kl and "
            "eval.json's kl are the sampled whole KL, and vaelab traversal ranks the "
            "dimensions by the variance of the means"
        )


__all__ = ["make_kl_per_dim", "make_latent_use", "make_traversal"]
