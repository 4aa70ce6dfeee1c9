"""The lecture's figures for a run directory: each function computes with
:mod:`vaelab.viz.analysis`, draws with :mod:`vaelab.viz.plots` and returns the files it wrote
(into RUN/figures/ unless ``out`` says otherwise). One function per ``vaelab`` command.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from vaelab.errors import VaelabError
from vaelab.fileio import make_writable_dir
from vaelab.run import N_SHOWN, Run
from vaelab.viz import analysis, embeddings, latent_plots, plots


def output_dir(run: Run, out: Path | str | None) -> Path:
    """``out`` (default RUN/figures), created and checked to be writable."""
    folder = Path(out) if out is not None else run.paths.figures
    try:
        make_writable_dir(folder)
    except OSError as exc:
        raise VaelabError(
            f"cannot write figures to {folder}: {exc.strerror or exc}; pass a writable --out"
        ) from None
    return folder


def class_names(run: Run) -> tuple[str, ...]:
    """The class names of a known dataset (MNIST digits, Fashion-MNIST items), else ()."""
    from vaelab.data.sources import KNOWN

    spec = KNOWN.get(run.config.dataset)
    return tuple(spec.classes) if spec is not None else ()


def model_kind(run: Run) -> str:
    kind = "VAE" if run.model.stochastic else "plain AE"
    return f"conditional {kind}" if run.model.conditional else kind


def epochs_or_cached(run: Run, epochs: Sequence[int] | None) -> list[int]:
    cached = run.cached_epochs()
    if not cached:
        raise VaelabError(f"{run.path} has no cached latents (latents/epoch-NNN.npz)")
    if not epochs:
        return cached
    missing = [e for e in epochs if e not in cached]
    if missing:
        raise VaelabError(
            f"epoch {missing[0]} is not cached in {run.path}; cached epochs: "
            f"{', '.join(map(str, cached))} (train with --embed-epochs to cache others)"
        )
    return list(epochs)


def label_name(run: Run, label: int) -> str:
    """How a figure names a class: "7", or "7 Sneaker" where the class has a name."""
    names = class_names(run)
    name = names[label] if label < len(names) else str(label)
    return str(label) if name == str(label) else f"{label} {name}"


def make_samples(
    run: Run,
    out: Path | str | None = None,
    n: int | None = None,
    seed: int = 0,
    temperature: float = 1.0,
    label: int | str | None = None,
) -> Path:
    """Prior samples z ~ p(z) decoded, as a grid of n (64) (lecture section 6.2): the
    run's own prior, N(0, T^2 I) for the lecture's VAE (a learned prior at temperature T:
    its components' spread times T, ``LatentModel.sample_prior``).

    A conditional run decodes them with ``label``; with ``label`` "all" (its default) it
    draws n (10) latents and decodes each with every label, one row per class."""
    folder = output_dir(run, out)
    model = run.model
    if label is not None:
        analysis.check_label(model, label)
    temp = "" if temperature == 1 else f", T = {temperature:g}"
    suffix = "" if temperature == 1 else f"-t{temperature:g}"
    if model.conditional and label in (None, "all"):
        n = 10 if n is None else n
        return _samples_by_label(run, folder, n, seed, temperature, temp, suffix)
    n = 64 if n is None else n
    labels = None if label is None else np.full(n, label, dtype=np.int64)
    images = analysis.prior_samples(model, n, seed, temperature, labels=labels)
    which = "" if label is None else f" with label {label_name(run, label)}"
    name = "samples" + ("" if label is None else f"-label-{label}") + suffix + ".png"
    return plots.plot_grid(
        images,
        model.config.input_shape,
        f"{model_kind(run)}: z ~ {analysis.prior_label(model)} decoded{which}{temp}, "
        f"epoch {run.epoch}",
        folder / name,
        ncol=min(n, max(8, int(np.ceil(np.sqrt(n))))),
    )


def _samples_by_label(
    run: Run, folder: Path, n: int, seed: int, temperature: float, temp: str, suffix: str
) -> Path:
    """n prior latents (columns) decoded with every label (rows): ``samples.png``."""
    images = analysis.samples_by_label(run.model, n, seed, temperature)  # (K, n, D)
    return plots.plot_rows(
        list(images),
        [label_name(run, k) for k in range(len(images))],
        run.model.config.input_shape,
        f"{model_kind(run)}, β = {run.config.beta:g}: z ~ {analysis.prior_label(run.model)} "
        "decoded with each label"
        f"\n(rows; one z per column){temp}, epoch {run.epoch}",
        folder / f"samples{suffix}.png",
    )


def make_relabel(run: Run, n: int = 10, out: Path | str | None = None, data=None) -> Path:
    """What the label and z each carry (conditional runs): the first n test images,
    encoded with their own labels, their means decoded with every label (one row per
    label). Along a column z stays and the label changes: the same handwriting, every
    class, if training kept the class out of z."""
    folder = output_dir(run, out)
    analysis.check_label(run.model, "all")
    data = data if data is not None else run.dataset()
    if not 0 < n <= len(data.x_test):
        raise VaelabError(f"--n must be in 1..{len(data.x_test)}, got {n}")
    x, y = data.x_test[:n], data.y_test[:n]
    images = analysis.relabel(run.model, x, y)  # (K, n, D)
    rows = [x.flatten(1).numpy(), *images]
    names = ["test image"] + [f"as {label_name(run, k)}" for k in range(len(images))]
    return plots.plot_rows(
        rows,
        names,
        run.model.config.input_shape,
        f"{model_kind(run)}, β = {run.config.beta:g}: test images (top) encoded with their "
        f"label,\ndecoded with every label, epoch {run.epoch}",
        folder / "relabel.png",
    )


def make_reconstructions(
    run: Run,
    out: Path | str | None = None,
    n: int = 16,
    epochs: Sequence[int] | None = None,
    data=None,
) -> Path:
    """Test inputs above their reconstructions (z = mu), one row per cached epoch
    (lecture section 6.1). Up to 16 come from the cache; more need the data."""
    folder = output_dir(run, out)
    if n <= 0:
        raise VaelabError(f"--n must be a positive integer, got {n}")
    epochs = epochs_or_cached(run, epochs)
    rows, labels = [], []
    if n <= N_SHOWN:  # the reconstructions every latents/epoch-NNN.npz keeps
        for epoch in epochs:
            lat = run.latents(epoch)
            if not rows:
                rows.append(lat["inputs"][:n])
                labels.append("input")
            rows.append(lat["recon"][:n])
            labels.append(f"epoch {epoch}")
    else:
        data = data if data is not None else run.dataset()
        if n > len(data.x_test):
            raise VaelabError(f"--n {n} is more than the {len(data.x_test)} test images")
        x = data.x_test[:n]
        y = data.y_test[:n] if run.model.conditional else None
        rows, labels = [x.flatten(1).numpy()], ["input"]
        for epoch in epochs:
            rows.append(analysis.reconstruct(run.model_at(epoch), x, y))
            labels.append(f"epoch {epoch}")
    return plots.plot_rows(
        rows,
        labels,
        run.model.config.input_shape,
        f"{model_kind(run)}: test images (top) and their reconstructions by epoch",
        folder / "reconstructions.png",
    )


def make_interpolations(
    run: Run,
    pairs: Sequence[tuple[int, int]] | None = None,
    digits: tuple[int, int] | None = None,
    steps: int = 10,
    mode: str = "linear",
    out: Path | str | None = None,
    data=None,
    filename: str | None = None,
) -> Path:
    """Latent interpolation between test images (decoded with mu) above the same
    endpoints blended in pixel space (lecture section 6.3). ``pairs`` are test indices;
    ``digits`` picks the first test image of each label; neither: two default pairs."""
    folder = output_dir(run, out)
    analysis.latent_path(np.zeros(1), np.zeros(1), 2, mode)  # check the mode before work
    labels = run.latents(run.cached_epochs()[-1])["labels"] if run.cached_epochs() else None
    if digits is not None:
        if labels is None:
            raise VaelabError(f"{run.path} has no cached labels; pass --a and --b instead")
        pairs = [analysis.pick_by_label(labels, digits)]
    elif pairs is None:
        if labels is None:
            raise VaelabError(f"{run.path} has no cached labels; pass --a and --b instead")
        pairs = analysis.default_pairs(labels)
    data = data if data is not None else run.dataset()
    x, y = data.x_test, data.y_test.numpy()
    rows, names = [], []
    for a, b in pairs:
        analysis.check_index(a, len(x), "--a")
        analysis.check_index(b, len(x), "--b")
        ends = (int(y[a]), int(y[b])) if run.model.conditional else None
        path = analysis.interpolate(run.model, x[a], x[b], steps, mode, ends)
        what = f"#{a}→#{b}" if y[a] < 0 else f"{y[a]}→{y[b]}"
        rows += [path["latent"], path["pixel"]]
        names += [f"latent {what}", f"pixels {what}"]
    name = filename or "interpolation-" + "_".join(f"{a}-{b}" for a, b in pairs) + f"-{mode}.png"
    return plots.plot_rows(
        rows,
        names,
        run.model.config.input_shape,
        f"{model_kind(run)}: {mode} path between the means, decoded, over a pixel blend",
        folder / name,
    )


def make_embeddings(
    run: Run,
    epochs: Sequence[int] | None = None,
    method: str = "tsne",
    n: int = 1000,
    out: Path | str | None = None,
) -> Path:
    """2-D embeddings (t-SNE or PCA) of the first n cached test means, one panel per
    epoch, cached in RUN/embeddings/ (lecture section 6.4)."""
    folder = output_dir(run, out)
    if method not in embeddings.EMBED_METHODS:
        embeddings.embed_2d(np.zeros((5, 2)), method)  # raises the one-line error
    panels = []
    for epoch in epochs_or_cached(run, epochs):
        emb = embeddings.cached_embedding(run.path, epoch, run.latents(epoch), method, n)
        panels.append((f"epoch {epoch}", emb["xy"], emb["labels"]))
    name = "t-SNE" if method == "tsne" else "PCA"
    return latent_plots.plot_embeddings(
        panels,
        f"{model_kind(run)}: {name} of the first {len(panels[0][1])} test means, by class",
        folder / f"embeddings-{method}.png",
        axis_name=name,
        class_names=class_names(run),
    )


def _dims_note(run: Run, dims: list[int], what: str) -> str:
    d = run.model.latent_dim
    if d <= 2:
        return ""
    return f", dims {dims[0] + 1} and {dims[1] + 1} of {d} ({what})"


def make_bubbles(
    run: Run,
    epochs: Sequence[int] | None = None,
    n: int = 1000,
    out: Path | str | None = None,
) -> list[Path]:
    """Each test point's posterior mu +/- sigma as an ellipse, one panel per cached epoch,
    and the same as an animated GIF; for d > 2 the two highest-KL dimensions (with a
    learned prior: the two of the most varied means). Behind them the prior: N(0, I)'s
    1- and 2-sigma circles, or 2000 samples of a learned prior (those two coordinates)."""
    folder = output_dir(run, out)
    epochs = epochs_or_cached(run, epochs)
    learned = run.model.stochastic and not run.model.closed_form_kl
    dims, what = analysis.top_dims(run.latents(max(run.cached_epochs())), by_kl=not learned)
    if len(dims) < 2:
        raise VaelabError(f"{run.path} has a 1-D latent; bubbles need two dimensions")
    panels = [(f"epoch {e}", analysis.bubbles(run.latents(e), dims, n)) for e in epochs]
    stochastic = run.model.stochastic
    what_drawn = "posteriors, mu ± sigma" if stochastic else "codes (no sigma: points, not bubbles)"
    title = f"{model_kind(run)} {what_drawn} per test image{_dims_note(run, dims, what)}"
    kwargs = dict(stochastic=stochastic, class_names=class_names(run))
    if learned:
        kwargs["prior_points"] = analysis.prior_points(run.model)[:, dims]
        title += f"; grey: samples of the prior at epoch {run.epoch}"
    return [
        latent_plots.plot_bubbles(panels, dims, title, folder / "bubbles.png", **kwargs),
        latent_plots.bubbles_gif(panels, dims, title, folder / "bubbles.gif", **kwargs),
    ]


def make_manifold(
    run: Run, grid: int = 20, out: Path | str | None = None, label: int | None = None
) -> Path:
    """Decoded grid over the latent plane at Gaussian quantiles (the two highest-KL
    dimensions for d > 2, the others at 0); a conditional run decodes it with ``label``
    (default 0). With a learned prior: at the 5%..95% quantiles of 2000 samples of p(z)
    in each of the two dimensions (the two of the most varied means for d > 2), the
    others at the prior's mean."""
    folder = output_dir(run, out)
    if label is not None or run.model.conditional:
        label = analysis.check_label(run.model, 0 if label is None else label)
    if grid > 60:
        raise VaelabError(f"--grid {grid} is too large to see; use at most 60")
    lat = run.latents(max(run.cached_epochs())) if run.cached_epochs() else None
    learned = run.model.stochastic and not run.model.closed_form_kl
    if lat is None:
        d = run.model.latent_dim
        dims, what = list(range(min(2, d))), "first two"
    else:
        dims, what = analysis.top_dims(lat, by_kl=not learned)
    centre = scale = axes = None
    where = "cells at the 5%..95% quantiles of N(0, 1)"
    if not run.model.stochastic and lat is not None:
        centre, scale = lat["mu"].mean(0), lat["mu"].std(0)
        where = "cells at the codes' mean + N(0, 1) quantiles × their std (an AE has no prior)"
    if learned:
        points = analysis.prior_points(run.model)
        centre = run.model.prior_mean().double().numpy()
        axes = tuple(analysis.prior_grid_values(points[:, j], grid) for j in (dims[0], dims[-1]))
        where = f"cells at the 5%..95% quantiles of {len(points)} samples of the learned p(z)"
    grid_data = analysis.manifold(run.model, dims, grid, centre, scale, label, axes)
    rest = "" if label is None else f", label {label_name(run, label)}"
    if run.model.latent_dim > 2:
        others = "their mean" if centre is not None else "0"
        rest += f", others at {'the prior mean' if learned else others}"
    return latent_plots.plot_manifold(
        grid_data["images"],
        run.model.config.input_shape,
        grid_data["u"],
        grid_data["v"],
        dims,
        f"{model_kind(run)} latent manifold{_dims_note(run, dims, what)}{rest}\n{where}",
        folder / "manifold.png",
    )


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
    (``analysis.traversal``). Base: the prior mean, or with ``index`` the posterior mean
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
    use, what = analysis.dimension_use(model, lat) if lat is not None else (np.full(d, np.nan), "")
    chosen = list(range(d)) if dims is None else list(dict.fromkeys(dims))
    order = sorted(chosen, key=lambda j: -use[j] if np.isfinite(use[j]) else j)
    order = order[:MAX_TRAVERSAL_ROWS] if dims is None else order
    base, scale, where, label = _traversal_base(run, lat, index, data, label)
    tr = analysis.traversal(model, base, order, span, steps, scale, label)
    unused = [bool(np.isfinite(use[j]) and use[j] < analysis.INACTIVE) for j in order]
    labels = [
        f"z{j + 1}"
        + (f"  {what} {use[j]:.{2 if use[j] >= 0.1 else 3}f}" if np.isfinite(use[j]) else "")
        + (" (inactive)" if off else "")
        for j, off in zip(order, unused)
    ]
    shown = f"{len(order)} of {d}" if len(order) < d else {1: "the", 2: "both"}.get(d, f"all {d}")
    ranked = (
        f", most used ({what} at epoch {run.cached_epochs()[-1]}) first; grey: inactive "
        f"({what} < {analysis.INACTIVE:g})"
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
    use = analysis.latent_use_by_epoch(run.model, {e: run.latents(e) for e in epochs})
    last = use["kl"][-1]
    title = (
        f"{model_kind(run)} latent use, beta = {run.config.beta:g}: epoch {epochs[-1]} has "
        f"{int(use['active_units'][-1])} active units, KL {last.sum():.2f} nats, "
        f"I(x; z) {use['mutual_information'][-1]:.2f} nats"
    )
    return latent_plots.plot_latent_use(use, title, folder / "latent-use.png", run.metrics)


def make_losses(run: Run, out: Path | str | None = None) -> Path:
    folder = output_dir(run, out)
    if not run.metrics:
        raise VaelabError(f"{run.path} has no metrics.jsonl rows")
    return plots.plot_losses(
        [(run.path.name, run.metrics)],
        f"{model_kind(run)} losses per epoch (test: z = mu)",
        folder / "losses.png",
    )


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


__all__ = [
    "make_bubbles",
    "make_embeddings",
    "make_interpolations",
    "make_kl_per_dim",
    "make_latent_use",
    "make_losses",
    "make_manifold",
    "make_reconstructions",
    "make_relabel",
    "make_samples",
    "make_traversal",
    "output_dir",
]
