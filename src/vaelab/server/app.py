"""The explorer's web app: ``create_app(run)`` -> a FastAPI application.

Routes (the OpenAPI spec is at /openapi.json):

    GET  /                    the page (index.html, app.js, style.css: fixed routes)
    GET  /report.html         RUN/report.html when it exists (a fixed route, never a path)
    GET  /api/info            run settings, headline metrics, latent size, image shape
    GET  /api/map             the 2-D map of the test set (x, y, labels, indices, sigma)
    POST /api/decode          {"z": [[...d numbers], ...], "format": "png" | "array",
                               "label": k}  (label: conditional runs only, and required)
    GET  /api/encode/{index}  one test image: mu, logvar, label, image and reconstruction
    POST /api/encode          {"indices": [...]} the same for up to 1024 images
    POST /api/interpolate     {"a": i, "b": j, "steps": 10, "mode": "linear" | "slerp"}
                              latent path between the means and pixel blend

Images travel as PNG ``data:`` URLs at their true size (``"format": "array"`` gives the
raw pixel means in [0, 1] instead, flat, in the run's input layout). Every input is
validated by pydantic against this run's latent size and test-set size: a wrong
dimension, a non-finite or huge number, more than 1024 vectors or indices, an index out of
range, or a body over 8 MiB gives a 4xx with a message, never a 5xx.
"""

import json
from importlib import resources
from typing import Annotated, Any, Literal

import numpy as np
from fastapi import FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from vaelab.run import Run
from vaelab.server.explorer import Explorer
from vaelab.server.images import png_urls
from vaelab.viz.analysis import INTERPOLATION_MODES

MAX_BATCH = 1024  # vectors per decode, indices per encode
MAX_STEPS = 64  # interpolation steps
Z_LIMIT = 1e6  # |z| above this is rejected: meaningless for a N(0, I) prior, unsafe in float32
MAX_BODY_BYTES = 8 * 2**20
MAX_ERRORS = 10  # validation errors listed in a 422 answer
STATIC_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# The page loads nothing from anywhere else: scripts, styles and fetches stay on this
# server; images are data: URLs drawn by the server.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
REPORT_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; "
        "script-src 'unsafe-inline'; font-src data:"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}

Finite = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-Z_LIMIT, le=Z_LIMIT)]
ImageFormat = Literal["png", "array"]
InterpolationMode = Literal[INTERPOLATION_MODES]  # "linear", "slerp": analysis's list


# ---------------------------------------------------------------------------- responses
class Images(BaseModel):
    """Decoded images: PNG data URLs (``format`` png) or flat pixel means (array)."""

    images: list[str] | None = None
    pixels: list[list[float]] | None = None
    input_shape: list[int]


class Encoded(BaseModel):
    index: int
    label: int
    mu: list[float]
    logvar: list[float] | None = Field(description="null for a plain autoencoder")
    image: str = Field(description="the test image, PNG data URL")
    recon: str = Field(description="its reconstruction decoded from mu, PNG data URL")


class EncodedBatch(BaseModel):
    items: list[Encoded]


class Interpolation(BaseModel):
    t: list[float]
    mode: str = Field(description="linear: (1 - t) mu_a + t mu_b; slerp: the great circle")
    z: list[list[float]] = Field(description="(steps, d) latent path from mu_a to mu_b")
    latent: Images = Field(description="the latent path decoded")
    pixel: Images = Field(description="(1 - t) x_a + t x_b, blended in pixel space")
    labels: list[int] = Field(description="labels of a and b")


class MapResponse(BaseModel):
    source: Literal["latent", "tsne", "pca", "pca-server"]
    epoch: int
    note: str
    latent_dim: int
    x: list[float]
    y: list[float]
    labels: list[int]
    indices: list[int] = Field(description="test-set index of each point")
    sigma_x: list[float] | None = None
    sigma_y: list[float] | None = None


# ---------------------------------------------------------------------------- middleware
class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, by header or as they stream in."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_bytes:
            await _send_json(send, 413, f"request body over {self.max_bytes} bytes")
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, f"request body over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)


async def _send_json(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's 422 without echoing the input back: it may hold NaN (not JSON) or a
    thousand vectors. Same shape as FastAPI's: ``{"detail": [{"loc", "msg", "type"}]}``."""
    errors = exc.errors()
    detail = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type"))}
        for e in errors[:MAX_ERRORS]
    ]
    if len(errors) > MAX_ERRORS:
        detail.append(
            {"loc": [], "msg": f"and {len(errors) - MAX_ERRORS} more", "type": "value_error"}
        )
    return JSONResponse({"detail": detail}, status_code=422)


# ---------------------------------------------------------------------------- the app
def create_app(run: Run | Explorer, trusted_hosts: list[str] | None = None) -> FastAPI:
    """The explorer app for a loaded run (or a ready Explorer). ``trusted_hosts``: the
    Host header values accepted (the CLI passes the loopback names unless the server is
    exposed on purpose), None to accept any."""
    ex = run if isinstance(run, Explorer) else Explorer.from_run(run)
    d, n = ex.latent_dim, ex.n_test
    shape = list(ex.input_shape)
    Index = Annotated[int, Field(strict=True, ge=0, lt=n, description=f"test image, 0..{n - 1}")]
    Vector = Annotated[
        list[Finite], Field(min_length=d, max_length=d, description=f"{d} finite numbers")
    ]

    k = ex.n_classes

    class DecodeRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        z: list[Vector] = Field(min_length=1, max_length=MAX_BATCH)
        format: ImageFormat = "png"
        label: int | None = Field(
            None,
            strict=True,
            ge=0,
            le=k - 1 if k else None,  # unconditional: any label is refused below
            description=f"conditional runs: the label every z is decoded with, 0..{k - 1}"
            if k
            else "conditional runs only; this run is not conditional",
        )

        @model_validator(mode="after")
        def label_fits_the_run(self) -> "DecodeRequest":
            if k and self.label is None:
                raise ValueError(f"this run is conditional: give a label in 0..{k - 1}")
            if not k and self.label is not None:
                raise ValueError("this run is not conditional: it takes no label")
            return self

    class EncodeRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        indices: list[Index] = Field(min_length=1, max_length=MAX_BATCH)

    class InterpolateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        a: Index
        b: Index
        steps: int = Field(10, strict=True, ge=2, le=MAX_STEPS)
        mode: InterpolationMode = "linear"
        format: ImageFormat = "png"

    def images(flat: np.ndarray, fmt: str) -> dict[str, Any]:
        if fmt == "array":
            return {"pixels": flat.astype(np.float64).round(5).tolist(), "input_shape": shape}
        return {"images": png_urls(flat, shape), "input_shape": shape}

    def encoded(indices: list[int]) -> list[dict[str, Any]]:
        idx = np.asarray(indices, dtype=np.int64)
        mu, logvar = ex.encode(idx)
        originals = png_urls(ex.images(idx), shape)
        recons = png_urls(ex.reconstruct(idx), shape)
        labels = ex.y_test[idx].tolist()
        return [
            {
                "index": int(i),
                "label": int(labels[k]),
                "mu": mu[k].tolist(),
                "logvar": None if logvar is None else logvar[k].tolist(),
                "image": originals[k],
                "recon": recons[k],
            }
            for k, i in enumerate(indices)
        ]

    info = ex.info()
    map_json = _map_json(ex)

    app = FastAPI(
        title="vaelab explorer",
        version=info["versions"].get("vaelab_version", "0"),
        description=__doc__,
        docs_url=None,  # the Swagger page loads scripts from a CDN; the spec is enough
        redoc_url=None,
    )
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    if trusted_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=trusted_hosts)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.state.explorer = ex

    for route, (name, media_type) in STATIC_FILES.items():
        app.add_api_route(route, _page(_static(name), media_type), include_in_schema=False)

    @app.get("/report.html", include_in_schema=False)
    def report() -> FileResponse:
        path = ex.run.paths.report
        if not path.is_file():
            raise HTTPException(404, "this run has no report.html (vaelab report RUN writes it)")
        return FileResponse(path, media_type="text/html", headers=REPORT_HEADERS)

    @app.get("/api/info", summary="Run settings, headline metrics and shapes")
    def get_info() -> dict[str, Any]:
        return dict(info, has_report=ex.run.paths.report.is_file())

    @app.get("/api/map", response_model=MapResponse, summary="The 2-D map of the test set")
    def get_map() -> Response:
        return Response(map_json, media_type="application/json")

    @app.post(
        "/api/decode",
        response_model=Images,
        response_model_exclude_none=True,
        summary="Decode latent vectors",
    )
    def decode(req: DecodeRequest) -> dict[str, Any]:
        return images(ex.decode(np.asarray(req.z, dtype=np.float32), req.label), req.format)

    @app.get("/api/encode/{index}", response_model=Encoded, summary="Encode one test image")
    def encode_one(index: Annotated[int, PathParam(ge=0, lt=n)]) -> dict[str, Any]:
        return encoded([index])[0]

    @app.post("/api/encode", response_model=EncodedBatch, summary="Encode test images")
    def encode_many(req: EncodeRequest) -> dict[str, Any]:
        return {"items": encoded(req.indices)}

    @app.post(
        "/api/interpolate",
        response_model=Interpolation,
        response_model_exclude_none=True,
        summary="Interpolate between two test images",
    )
    def interpolate(req: InterpolateRequest) -> dict[str, Any]:
        path = ex.interpolate(req.a, req.b, req.steps, req.mode)
        return {
            "t": path["t"].tolist(),
            "mode": req.mode,
            "z": path["z"].tolist(),
            "latent": images(path["latent"], req.format),
            "pixel": images(path["pixel"], req.format),
            "labels": ex.y_test[[req.a, req.b]].tolist(),
        }

    return app


def _static(name: str) -> bytes:
    return (resources.files("vaelab.server") / "static" / name).read_bytes()


def _page(content: bytes, media_type: str):
    """A route answering one fixed file of the page (no parameters: nothing to name)."""

    def page() -> Response:
        return Response(content, media_type=media_type, headers=PAGE_HEADERS)

    return page


def _map_json(ex: Explorer) -> bytes:
    """The map as JSON bytes, computed once (a few hundred kB for 10 000 points)."""
    m = ex.map_points()

    def col(a: np.ndarray) -> list[float]:
        return np.round(np.asarray(a, dtype=np.float64), 4).tolist()

    body = {
        "source": m.source,
        "epoch": m.epoch,
        "note": m.note,
        "latent_dim": ex.latent_dim,
        "x": col(m.xy[:, 0]),
        "y": col(m.xy[:, 1]),
        "labels": [int(v) for v in m.labels],
        "indices": [int(v) for v in m.indices],
        "sigma_x": None if m.sigma is None else col(m.sigma[:, 0]),
        "sigma_y": None if m.sigma is None else col(m.sigma[:, 1]),
    }
    return MapResponse.model_validate(body).model_dump_json().encode()
