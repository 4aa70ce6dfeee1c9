"""Figures from arrays: compute lives elsewhere, this module only draws.

Matplotlib with the Agg backend; digits drawn in grey-scale with nearest-neighbour
interpolation so every pixel is visible as it is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def to_images(flat: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """(N, D) or (N, C, H, W) values in [0, 1] -> (N, H, W) grey or (N, H, W, 3) colour.

    Flat feature vectors with no image shape are drawn as the nearest square."""
    x = np.asarray(flat, dtype=np.float32).reshape(len(flat), *input_shape)
    if x.ndim == 2:  # flat features: pad to a square
        side = math.ceil(math.sqrt(x.shape[1]))
        padded = np.zeros((len(x), side * side), dtype=np.float32)
        padded[:, : x.shape[1]] = x
        return padded.reshape(len(x), side, side)
    if x.shape[1] == 1:
        return x[:, 0]
    return np.clip(x[:, :3].transpose(0, 2, 3, 1), 0, 1)


def tile(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """(N, H, W[, 3]) -> one mosaic image with ``ncol`` columns and a 1-pixel gap."""
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


def save_figure(fig, path: Path | str, dpi: int = 120) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
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
    fig, ax = plt.subplots(figsize=(0.42 * ncol + 0.6, 0.42 * nrow + 0.8))
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
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(max(4.0, 0.45 * ncol + 1.2), 0.55 * len(rows) + 0.7), squeeze=False
    )
    for ax, row, label in zip(axes[:, 0], rows, labels):
        _show(ax, tile(to_images(row, input_shape), ncol))
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    axes[0, 0].set_title(title)
    return save_figure(fig, path)
