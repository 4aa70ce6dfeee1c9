"""``vaelab serve``: walk a trained model's latent space in the browser.

``explorer`` computes (decode, encode, interpolate, the 2-D map) without any web code;
``app`` wraps it in a FastAPI JSON API and serves the page in ``static/`` (plain
JavaScript and canvas, nothing loaded from the network). FastAPI and uvicorn are the
optional extra ``vaelab[serve]``, imported only by ``app`` and the command.
"""

from __future__ import annotations

from vaelab.server.explorer import Explorer, MapPoints

__all__ = ["Explorer", "MapPoints"]
