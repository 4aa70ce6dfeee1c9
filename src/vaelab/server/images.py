"""Flat pixel vectors -> PNG images at their true size, as ``data:`` URLs for the page.

The page scales them up with CSS (``image-rendering: pixelated``), so a 28x28 digit costs
about 300 bytes on the wire and every pixel stays visible as it is.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image


def to_pixels(flat: np.ndarray, input_shape: Sequence[int]) -> np.ndarray:
    """(N, D) values in [0, 1] -> uint8 (N, H, W) grey or (N, H, W, 3) colour.

    (C, H, W) inputs with 3 channels are drawn in colour, other channel counts show their
    first channel; (H, W) is grey; flat feature vectors are padded to the nearest square."""
    x = np.asarray(flat, dtype=np.float32)
    x = np.nan_to_num(x, nan=0.0).clip(0.0, 1.0)
    shape = tuple(int(s) for s in input_shape)
    n = len(x)
    if len(shape) == 3:
        x = x.reshape(n, *shape)
        x = x[:, :3].transpose(0, 2, 3, 1) if shape[0] == 3 else x[:, 0]
    elif len(shape) == 2:
        x = x.reshape(n, *shape)
    else:
        size = x.shape[1]
        side = max(1, math.ceil(math.sqrt(size)))
        padded = np.zeros((n, side * side), dtype=np.float32)
        padded[:, :size] = x.reshape(n, size)
        x = padded.reshape(n, side, side)
    return (x * 255.0 + 0.5).astype(np.uint8)


def png_data_url(pixels: np.ndarray) -> str:
    """One uint8 image (H, W) or (H, W, 3) -> ``data:image/png;base64,...``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_urls(flat: np.ndarray, input_shape: Sequence[int]) -> list[str]:
    """(N, D) values in [0, 1] -> N PNG data URLs."""
    return [png_data_url(p) for p in to_pixels(flat, input_shape)]
