"""The lecture's figures for a run directory: each function computes with
:mod:`vaelab.viz.analysis`, draws with :mod:`vaelab.viz.plots` and returns the files it wrote
(into RUN/figures/ unless ``out`` says otherwise). One function per ``vaelab`` command.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

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


def make_losses(run: Run, out: Path | str | None = None) -> Path:
    folder = output_dir(run, out)
    if not run.metrics:
        raise VaelabError(f"{run.path} has no metrics.jsonl rows")
    return plots.plot_losses(
        [(run.path.name, run.metrics)],
        f"{model_kind(run)} losses per epoch (test: z = mu)",
        folder / "losses.png",
    )


__all__ = [
    "make_bubbles",
    "make_embeddings",
    "make_interpolations",
    "make_losses",
    "make_manifold",
    "make_reconstructions",
    "make_relabel",
    "make_samples",
    "output_dir",
]
