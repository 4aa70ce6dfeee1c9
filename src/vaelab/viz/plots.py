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
