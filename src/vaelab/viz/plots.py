"""Figures from arrays: compute lives elsewhere, this module only draws.

Every figure is a :class:`matplotlib.figure.Figure` made without pyplot (``new_figure``),
as matplotlib recommends for libraries: importing or using vaelab never changes the
user's backend (a notebook keeps its inline plots), and no figure is registered with
pyplot, so none stays open after it is saved. Files are written by Agg through
``Figure.savefig``. Digits are drawn in grey-scale with nearest-neighbour interpolation
so every pixel is visible as it is.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def to_images(flat: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """(N, D) rows in the layout ``input_shape`` -> float32 (N, H, W) grey or (N, H, W, 3)
    colour, in [0, 1] (NaN drawn as 0). The one place pixels become pictures: the figures,
    TensorBoard and the explorer's PNGs all go through it.

    (C, H, W): 3 or more channels are drawn in colour from the first three (RGB, RGBA),
    1 or 2 channels show the first in grey; (H, W) is grey; flat feature vectors (or any
    other shape) are padded with zeros to the nearest square.

    Examples:
        >>> to_images(np.ones((2, 12)), (3, 2, 2)).shape  # colour
        (2, 2, 2, 3)
        >>> to_images(np.ones((2, 10)), (10,)).shape  # 10 features padded to 4 x 4
        (2, 4, 4)
    """
    shape = tuple(int(s) for s in input_shape)
    x = np.asarray(flat, dtype=np.float32)
    x = np.nan_to_num(x, nan=0.0).clip(0.0, 1.0).reshape(len(x), -1)  # (N, D)
    n = len(x)
    if len(shape) == 3:
        x = x.reshape(n, *shape)  # (N, C, H, W)
        return x[:, :3].transpose(0, 2, 3, 1) if shape[0] >= 3 else x[:, 0]
    if len(shape) == 2:
        return x.reshape(n, *shape)  # (N, H, W)
    side = max(1, math.ceil(math.sqrt(x.shape[1])))
    padded = np.zeros((n, side * side), dtype=np.float32)
    padded[:, : x.shape[1]] = x
    return padded.reshape(n, side, side)


def tile(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """(N, H, W[, 3]) -> one mosaic image with ``ncol`` columns and a 1-pixel gap.

    Examples:
        >>> tile(np.zeros((3, 2, 2)), ncol=2).shape  # 2 rows of 2, gaps of 1 all round
        (7, 7)
    """
    n, h, w = images.shape[:3]
    nrow = math.ceil(n / ncol)
    shape = (nrow * (h + pad) + pad, ncol * (w + pad) + pad) + images.shape[3:]
    canvas = np.ones(shape, dtype=np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, ncol)
        canvas[
            pad + r * (h + pad) : pad + r * (h + pad) + h,
            pad + c * (w + pad) : pad + c * (w + pad) + w,
        ] = image
    return canvas


def _show(ax, mosaic: np.ndarray) -> None:
    ax.imshow(mosaic, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def new_figure(figsize: tuple[float, float], layout: str | None = None) -> Figure:
    """A figure that belongs to no backend and to no pyplot state: draw on
    ``fig.subplots()``, write it with ``save_figure``, or show it in a notebook (a Figure
    is displayed inline). It is freed like any Python object; no ``close`` is needed.

    Examples:
        >>> fig = new_figure((2.0, 1.0))
        >>> type(fig).__name__, fig.get_size_inches().tolist()
        ('Figure', [2.0, 1.0])
    """
    return Figure(figsize=figsize, layout=layout)


def save_figure(fig, path: Path | str, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` (PNG, or whatever its suffix names), atomically: a reader
    (the report, the explorer) sees the old picture or the new one, never half of one. A
    figure the caller made with pyplot is closed afterwards, so pyplot does not keep it."""
    from vaelab.fileio import atomic_write

    path = Path(path)
    kind = path.suffix.lstrip(".").lower() or "png"
    atomic_write(path, lambda f: fig.savefig(f, format=kind, dpi=dpi, bbox_inches="tight"))
    pyplot = sys.modules.get("matplotlib.pyplot")  # never imported here: only if in use
    if pyplot is not None:
        pyplot.close(fig)  # a no-op for the Figures of new_figure
    return path


def plot_grid(
    images: np.ndarray,
    input_shape: Sequence[int],
    title: str,
    path: Path | str,
    ncol: int | None = None,
) -> Path:
    """A square-ish grid of images (e.g. prior samples)."""
    ncol = ncol or math.ceil(math.sqrt(len(images)))
    mosaic = tile(to_images(images, input_shape), ncol)
    nrow = math.ceil(len(images) / ncol)
    fig = new_figure((0.42 * ncol + 0.6, 0.42 * nrow + 0.8))
    ax = fig.subplots()
    _show(ax, mosaic)
    ax.set_title(title)
    return save_figure(fig, path)


def plot_rows(
    rows: Sequence[np.ndarray],
    labels: Sequence[str],
    input_shape: Sequence[int],
    title: str,
    path: Path | str,
) -> Path:
    """Rows of images, each labelled on the left (inputs above reconstructions, ...)."""
    ncol = max(len(r) for r in rows)
    fig = new_figure((max(4.0, 0.45 * ncol + 1.2), 0.55 * len(rows) + 0.7))
    axes = fig.subplots(len(rows), 1, squeeze=False)
    for ax, row, label in zip(axes[:, 0], rows, labels):
        _show(ax, tile(to_images(row, input_shape), ncol))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    axes[0, 0].set_title(title)
    return save_figure(fig, path)


# ------------------------------------------------------------------ the lecture's figures


def class_colours(labels: np.ndarray, names: Sequence[str] = ()):
    """One colour per class, the same in every panel: (cmap, norm, ticks, tick labels),
    or None when nothing is labelled (then no colour encodes a value)."""
    import matplotlib
    from matplotlib.colors import BoundaryNorm

    present = np.asarray(labels)[np.asarray(labels) >= 0]
    if len(present) == 0:
        return None
    k = max(int(present.max()) + 1, len(names), 1)
    cmap = matplotlib.colormaps["tab10" if k <= 10 else "tab20"].resampled(k)
    norm = BoundaryNorm(np.arange(-0.5, k), k)
    ticks = list(range(k))
    tick_labels = [names[i] if i < len(names) else str(i) for i in ticks]
    return cmap, norm, ticks, tick_labels


def _class_colourbar(fig, axes, colours, label: str = "class") -> None:
    from matplotlib.cm import ScalarMappable

    cmap, norm, ticks, tick_labels = colours
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, ticks=ticks, shrink=0.9)
    bar.ax.set_yticklabels(tick_labels, fontsize=8)
    bar.set_label(label)


def plot_embeddings(
    panels: Sequence[tuple[str, np.ndarray, np.ndarray]],
    title: str,
    path: Path | str,
    axis_name: str = "t-SNE",
    class_names: Sequence[str] = (),
) -> Path:
    """One scatter panel per (panel title, xy (n, 2), labels (n,)), coloured by class with
    one colour map for all panels and a colour bar (lecture section 6.4)."""
    colours = class_colours(np.concatenate([p[2] for p in panels]), class_names)
    fig = new_figure((3.9 * len(panels) + 1.2, 4.1), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, xy, labels) in zip(axes[0], panels):
        if colours is None:
            ax.scatter(xy[:, 0], xy[:, 1], s=5, c="0.3", linewidths=0)
        else:
            cmap, norm = colours[:2]
            ax.scatter(xy[:, 0], xy[:, 1], s=5, c=labels, cmap=cmap, norm=norm, linewidths=0)
        ax.set_title(name)
        ax.set_xlabel(f"{axis_name} 1")
        ax.set_ylabel(f"{axis_name} 2")
        ax.tick_params(labelsize=7)
    if colours is not None:
        _class_colourbar(fig, axes[0].tolist(), colours)
    fig.suptitle(_wrap(title, len(panels)))
    return save_figure(fig, path)


def _wrap(title: str, panels: int) -> str:
    """A figure title broken into lines that fit above ``panels`` panels."""
    import textwrap

    return "\n".join(textwrap.wrap(title, 45 * panels + 15))


def _bubble_limit(panels: Sequence[dict]) -> float:
    """A symmetric axis limit that shows (nearly) every bubble of every panel, >= 3."""
    reach = [np.abs(p["mu"]) + p["sigma"] for p in panels]
    return float(max(3.0, *(np.percentile(r, 99.5) * 1.05 for r in reach)))


def draw_bubbles(
    ax, data: dict, dims: Sequence[int], colours, limit: float, title: str, stochastic: bool
) -> None:
    """Posterior ellipses mu +/- sigma of each point on ``ax`` (points for a plain AE),
    with the prior's 1- and 2-sigma circles dashed."""
    from matplotlib.collections import EllipseCollection
    from matplotlib.patches import Circle

    mu, sigma, labels = data["mu"], data["sigma"], data["labels"]
    if colours is None:
        face = np.tile([0.3, 0.3, 0.3, 1.0], (len(mu), 1))
    else:
        face = colours[0](colours[1](labels))
    if stochastic:
        face[:, 3] = 0.18
        ax.add_collection(
            EllipseCollection(
                2 * sigma[:, 0],
                2 * sigma[:, 1],
                np.zeros(len(mu)),
                units="xy",
                offsets=mu,
                offset_transform=ax.transData,
                facecolors=face,
                edgecolors=face[:, :3] * 0.8,
                linewidths=0.2,
            )
        )
    ax.scatter(
        mu[:, 0], mu[:, 1], s=1.5 if stochastic else 4, c=face[:, :3], linewidths=0, zorder=3
    )
    for r in (1, 2):
        ax.add_patch(Circle((0, 0), r, fill=False, ls="--", lw=0.8, ec="0.2", zorder=4))
    ax.set_xlim(-limit, limit)
    ax.set_ylim(-limit, limit)
    ax.set_aspect("equal")
    ax.set_xlabel(f"z{dims[0] + 1}")
    ax.set_ylabel(f"z{dims[-1] + 1}")
    ax.set_title(title, fontsize=10)


def plot_bubbles(
    panels: Sequence[tuple[str, dict]],
    dims: Sequence[int],
    title: str,
    path: Path | str,
    stochastic: bool = True,
    class_names: Sequence[str] = (),
) -> Path:
    """The lecture's bubbles: one panel per (panel title, bubbles dict) with shared axes."""
    colours = class_colours(np.concatenate([p[1]["labels"] for p in panels]), class_names)
    limit = _bubble_limit([p[1] for p in panels])
    fig = new_figure((3.9 * len(panels) + 1.2, 4.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (name, data) in zip(axes[0], panels):
        draw_bubbles(ax, data, dims, colours, limit, name, stochastic)
    if colours is not None:
        _class_colourbar(fig, axes[0].tolist(), colours)
    fig.suptitle(_wrap(title, len(panels)))
    return save_figure(fig, path)


def bubbles_gif(
    panels: Sequence[tuple[str, dict]],
    dims: Sequence[int],
    title: str,
    path: Path | str,
    stochastic: bool = True,
    class_names: Sequence[str] = (),
    seconds_per_frame: float = 1.2,
) -> Path:
    """The same panels as frames of an endless animated GIF (Pillow), same size each."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # renders; selects nothing
    from PIL import Image

    colours = class_colours(np.concatenate([p[1]["labels"] for p in panels]), class_names)
    limit = _bubble_limit([p[1] for p in panels])
    frames = []
    for name, data in panels:
        fig = new_figure((5.6, 4.8), layout="constrained")
        ax = fig.subplots()
        draw_bubbles(ax, data, dims, colours, limit, name, stochastic)
        if colours is not None:
            _class_colourbar(fig, [ax], colours)
        fig.suptitle(title, fontsize=10)
        fig.set_dpi(100)
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        frames.append(Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3]))
    from vaelab.fileio import atomic_write

    path = Path(path)
    palette = [f.quantize(colors=255, method=Image.Quantize.MEDIANCUT) for f in frames]
    ms = int(seconds_per_frame * 1000)
    atomic_write(
        path,
        lambda f: palette[0].save(
            f, format="GIF", save_all=True, append_images=palette[1:], duration=ms, loop=0
        ),
    )
    return path


def _tick(value: float) -> str:
    text = f"{value:.2f}"
    return "0.00" if text == "-0.00" else text


def plot_manifold(
    images: np.ndarray,
    input_shape: Sequence[int],
    u: np.ndarray,
    v: np.ndarray,
    dims: Sequence[int],
    title: str,
    path: Path | str,
) -> Path:
    """The decoded grid over two latent dimensions, ticks at the cells' z values."""
    grid = len(u)
    pics = to_images(images, input_shape)
    h, w = pics.shape[1:3]
    mosaic = tile(pics, grid, pad=0)
    size = min(9.0, max(4.0, 0.3 * grid + 1.5))
    fig = new_figure((size + 0.6, size + 0.4))
    ax = fig.subplots()
    ax.imshow(
        mosaic,
        cmap="gray",
        vmin=0,
        vmax=1,
        interpolation="nearest",
        extent=(0, grid * w, grid * h, 0),
    )
    step = max(1, grid // 8)
    cols = list(range(0, grid, step))
    ax.set_xticks([(c + 0.5) * w for c in cols], [_tick(u[c]) for c in cols], fontsize=8)
    rows = list(range(0, grid, step))  # row 0 at the top holds the largest v
    ax.set_yticks([(r + 0.5) * h for r in rows], [_tick(v[::-1][r]) for r in rows], fontsize=8)
    ax.set_xlabel(f"z{dims[0] + 1}")
    ax.set_ylabel(f"z{dims[-1] + 1}")
    ax.set_title(title)
    return save_figure(fig, path)


def _offset(value: float) -> str:
    """A column's offset: "-3", "0", "+1.5"."""
    return "0" if abs(value) < 1e-9 else f"{value:+.3g}".replace("-", "−")


def plot_traversal(
    images: np.ndarray,
    row_labels: Sequence[str],
    inactive: Sequence[bool],
    t: np.ndarray,
    input_shape: Sequence[int],
    title: str,
    path: Path | str,
    xlabel: str = "change of the dimension",
) -> Path:
    """One row per latent dimension (``images`` (rows, steps, D)), labelled on the left,
    the unused ones in grey; the columns' offsets ``t`` below."""
    rows, steps = images.shape[:2]
    pics = to_images(images.reshape(rows * steps, -1), input_shape)
    h, w = pics.shape[1:3]
    fig = new_figure((0.42 * steps + 2.6, 0.42 * rows + 1.2))
    ax = fig.subplots()
    _show(ax, tile(pics, steps))
    centre = lambda i, size: 1 + i * (size + 1) + (size - 1) / 2  # noqa: E731
    ax.set_yticks([centre(r, h) for r in range(rows)], row_labels, fontsize=8)
    for label, off in zip(ax.get_yticklabels(), inactive):
        label.set_color("0.6" if off else "0.1")
    cols = range(0, steps, max(1, (steps - 1) // 10))
    ax.set_xticks([centre(c, w) for c in cols], [_offset(t[c]) for c in cols], fontsize=7)
    ax.tick_params(length=0)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_title(title, fontsize=10)
    return save_figure(fig, path)


def plot_latent_use(
    use: dict,
    title: str,
    path: Path | str,
    metrics: Sequence[dict] = (),
    threshold: float = 0.01,
) -> Path:
    """Is the latent used, epoch by epoch? Left: each dimension's mean KL at the cached
    epochs (``use`` from ``analysis.latent_use_by_epoch``), unused ones (last KL below
    ``threshold``) dashed grey. Right: total KL and I(x; z) (its ceiling log N dotted)
    with the active units on a second axis: markers at the cached epochs, lines through
    every epoch where ``metrics`` rows carry them."""
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    epochs, kl = use["epochs"], use["kl"]  # (E,), (E, d)
    d = kl.shape[1]
    fig = new_figure((12.0, 4.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    cmap = matplotlib.colormaps["viridis"]
    top = max(float(kl[-1].max()), 1e-9)
    order = np.argsort(-kl[-1], kind="stable")
    for j in order[::-1]:  # the most used drawn last, on top
        used = kl[-1, j] >= threshold
        colour = cmap(0.85 * (1 - kl[-1, j] / top)) if used else "0.6"
        left.plot(epochs, kl[:, j], "o-" if used else "o--", ms=3, lw=1.2, color=colour)
    spread = max(float(kl.max()), 1e-9) * 0.04
    names: list[tuple[float, list[str]]] = []  # labels for the top 5, merged when close
    for j in [j for j in order[: min(5, d)] if kl[-1, j] >= threshold]:
        if names and abs(names[-1][0] - kl[-1, j]) < spread:
            names[-1][1].append(f"z{j + 1}")
        else:
            names.append((float(kl[-1, j]), [f"z{j + 1}"]))
    for y, group in names:
        left.annotate(
            ", ".join(group),
            (epochs[-1], y),
            xytext=(4, 0),
            textcoords="offset points",
            fontsize=7,
            va="center",
        )
    left.axhline(threshold, ls=":", lw=0.8, color="0.3")
    left.set_ylim(-0.01, max(left.get_ylim()[1], 0.1))  # collapsed dimensions look flat
    left.set_xlabel("epoch")
    left.set_ylabel("mean KL of the dimension (nats)")
    left.set_title(f"KL per dimension (grey dashed: below {threshold:g} nats, unused)", fontsize=10)
    units = right.twinx()
    rows = [m for m in metrics if m.get("test_mutual_information") is not None]
    series = {  # every epoch from metrics.jsonl where it has them, else the cached epochs
        "kl": ([m["epoch"] for m in rows], [m["test_kl"] for m in rows]),
        "mi": ([m["epoch"] for m in rows], [m["test_mutual_information"] for m in rows]),
        "au": ([m["epoch"] for m in rows], [m["test_active_units"] for m in rows]),
    }
    if not rows:
        series = {
            "kl": (epochs, kl.sum(1)),
            "mi": (epochs, use["mutual_information"]),
            "au": (epochs, use["active_units"]),
        }
    right.plot(*series["kl"], "-", color="C0", lw=1, label="KL, mean over test images")
    right.plot(epochs, kl.sum(1), "o", color="C0", ms=4)
    right.plot(*series["mi"], "-", color="C1", lw=1.4, label="I(x; z)")
    right.plot(epochs, use["mutual_information"], "s", color="C1", ms=4)
    ceiling = float(use["ceiling"])
    right.axhline(ceiling, ls=":", color="C1", lw=0.8, label=f"log N = {ceiling:.2f}: I's ceiling")
    units.plot(*series["au"], "-", color="C2", lw=1, drawstyle="steps-mid", label="active units")
    units.plot(epochs, use["active_units"], "^", color="C2", ms=4)
    right.set_xlabel("epoch")
    right.set_ylabel("nats")
    right.set_ylim(bottom=0)
    units.set_ylim(0, d + 0.5)
    units.yaxis.set_major_locator(MaxNLocator(integer=True))
    units.set_ylabel(f"active units (of {d})")
    handles = [h for a in (right, units) for h in a.get_legend_handles_labels()[0]]
    labels = [lab for a in (right, units) for lab in a.get_legend_handles_labels()[1]]
    right.legend(
        handles, labels, fontsize=8, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16)
    )
    right.set_title(
        "How much of the KL is information about x (markers: cached epochs)", fontsize=10
    )
    fig.suptitle(title)
    return save_figure(fig, path)


def _loss_series(metrics: Sequence[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(m["epoch"], m[key]) for m in metrics if m.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_losses(runs: Sequence[tuple[str, Sequence[dict]]], title: str, path: Path | str) -> Path:
    """Train and test loss per epoch and its two parts, reconstruction and KL, for one or
    more (name, metrics rows) runs; the loss and reconstruction on a log scale."""
    from matplotlib.ticker import FuncFormatter

    parts = [("loss", "loss = recon + beta * KL"), ("recon", "reconstruction"), ("kl", "KL")]
    fig = new_figure((12.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 3)
    styles = ["-", "--", ":", "-."]
    for ax, (key, name) in zip(axes, parts):
        values = []
        for i, (run_name, metrics) in enumerate(runs):
            prefix = f"{run_name}: " if len(runs) > 1 else ""
            for split, colour in (("train", "C0"), ("test", "C1")):
                x, y = _loss_series(metrics, f"{split}_{key}")
                if x:
                    ax.plot(
                        x,
                        y,
                        styles[i % 4],
                        color=colour,
                        marker="o",
                        ms=3,
                        label=f"{prefix}{split}",
                    )
                    values += y
        if key != "kl" and values and min(values) > 0:  # epoch 0 is ~5x the trained loss
            ax.set_yscale("log")
            plain = FuncFormatter(lambda y, _pos: f"{y:g}")
            ax.yaxis.set_major_formatter(plain)
            ax.yaxis.set_minor_formatter(plain)
            ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats per sample")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return save_figure(fig, path)


def plot_kl_per_dim(kl: np.ndarray, title: str, path: Path | str, threshold: float = 0.01) -> Path:
    """Mean KL of each latent dimension as bars, the 'used' threshold dashed."""
    d = len(kl)
    fig = new_figure((max(4.5, 0.3 * d + 2), 3.4))
    ax = fig.subplots()
    colours = ["C0" if k > threshold else "0.6" for k in kl]
    ax.bar(np.arange(1, d + 1), kl, color=colours)
    ax.axhline(threshold, ls="--", lw=0.8, color="0.3", label=f"{threshold:g} nats")
    ax.set_xlabel("latent dimension")
    ax.set_ylabel("mean KL (nats)")
    ax.set_xticks(np.arange(1, d + 1), [str(i) for i in range(1, d + 1)], fontsize=7)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
