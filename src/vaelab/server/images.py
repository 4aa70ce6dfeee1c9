"""Flat pixel vectors -> PNG images at their true size, as ``data:`` URLs for the page.

The pixels become pictures in :func:`vaelab.viz.plots.to_images`, as in every figure;
this module only encodes them as PNG (Pillow). The page scales them up with CSS
(``image-rendering: pixelated``), so a 28x28 digit costs about 300 bytes on the wire and
every pixel stays visible as it is.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from vaelab.viz.plots import to_images


def png_data_url(pixels: np.ndarray) -> str:
    """One uint8 image (H, W) or (H, W, 3) -> ``data:image/png;base64,...``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def png_urls(flat: np.ndarray, input_shape: Sequence[int]) -> list[str]:
    """(N, D) values in [0, 1] -> N PNG data URLs."""
    pixels = (to_images(flat, input_shape) * 255.0 + 0.5).astype(np.uint8)
    return [png_data_url(p) for p in pixels]
