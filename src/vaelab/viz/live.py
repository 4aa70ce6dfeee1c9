"""The report's live panel: the run's decoder inside report.html, run by a few lines of
plain JavaScript (``static/live.js``) as the reader moves one slider per latent dimension
or, for d = 2, clicks on the map of the test means. No server and no request: the page
stays one file that works from ``file:`` and when mailed to someone else.

What is embedded (a JSON block in the page, ``decoder_payload``): the weights and biases
of each Linear layer of an MLP decoder (Linear -> act -> ... -> Linear, where act is one
of ``ACTIVATION_NAMES``: ReLU, tanh, softplus, ELU or exact GELU), little-endian
float16 in base64 (float32 when a weight does not fit float16's range). The lecture's
784-400-20 decoder has 322,784 parameters: 0.65 MB as float16, 0.86 MB in base64 (1.29 MB
and 1.72 MB as float32); float16 moves a decoded pixel by about 1e-3. A decoder that is
not such an MLP (the conv models), that does not reproduce ``decode_logits`` or that has
more than MAX_PARAMETERS parameters is not embedded; the page says that ``vaelab serve``
explores it instead. The logits become the run's mean image as ``LatentModel.decode``
does: a sigmoid for bernoulli, gaussian and mse, the continuous-Bernoulli mean otherwise.

A conditional run's decoder takes z with the one-hot label appended (its first layer is
Linear(d + K, h)): the payload lists the K classes, the page shows a label picker, and
``decoderInput`` in live.js appends the chosen label's one-hot row to z, as the model's
``with_label`` does.
"""

from __future__ import annotations

import base64
import html
import json
from importlib import resources
from typing import Any

import numpy as np
import torch
from torch import nn

from vaelab.losses import CB_TAYLOR_BAND
from vaelab.models.vae import ACTIVATIONS
from vaelab.run import Run
from vaelab.viz import analysis, dimensions
from vaelab.viz.figures import class_names

MAX_PARAMETERS = 1_000_000  # 2 MB as float16, 2.7 MB of base64 in the page
MAX_SLIDERS = 64
MAP_POINTS = 1000  # test means drawn on the d = 2 map
SLIDER_RANGE = 3.0  # each slider spans the prior mean +- 3 (the bulk of N(0, 1))
FLOAT16_MAX = 65504.0


# The models' activations by layer class (vaelab.models.vae.ACTIVATIONS, torch's default
# settings: softplus beta 1 threshold 20, ELU alpha 1, exact GELU): live.js has each one.
ACTIVATION_NAMES: dict[type[nn.Module], str] = {cls: name for name, cls in ACTIVATIONS.items()}
TORCH_ACTIVATIONS = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "softplus": torch.nn.functional.softplus,
    "elu": torch.nn.functional.elu,
    "gelu": torch.nn.functional.gelu,
}


def mlp_layers(model: nn.Module) -> tuple[list[nn.Linear], str] | None:
    """The Linear layers of ``model.decoder`` and the name of its activation when it is
    Linear -> act -> ... -> Linear with one act of ``ACTIVATION_NAMES`` from the d latent
    numbers (d + K for a conditional model: z and the one-hot label), else None (a conv
    decoder, a decoder with other inputs or mixed activations)."""
    dec = getattr(model, "decoder", None)
    if not isinstance(dec, nn.Sequential) or len(dec) % 2 == 0:
        return None
    acts = {ACTIVATION_NAMES.get(type(layer)) for layer in list(dec)[1::2]}
    linear = all(isinstance(layer, nn.Linear) for layer in list(dec)[::2])
    if not linear or None in acts or len(acts) > 1:  # one known activation throughout
        return None
    layers = [dec[i] for i in range(0, len(dec), 2)]
    inputs = model.latent_dim + getattr(model, "n_classes", 0)
    return (layers, acts.pop() if acts else "relu") if layers[0].in_features == inputs else None


@torch.no_grad()
def _reproduces(model: nn.Module, layers: list[nn.Linear], activation: str) -> bool:
    """True when the layers, run as the page runs them, give ``decode_logits`` (for a
    conditional model: with labels 0, 1, ... appended one-hot)."""
    z = torch.randn(8, model.latent_dim, generator=torch.Generator().manual_seed(0))
    labels = None
    if getattr(model, "n_classes", 0):
        labels = torch.arange(8) % model.n_classes
    h = model.with_label(z, labels).double() if labels is not None else z.double()
    for i, layer in enumerate(layers):
        h = h @ layer.weight.double().T + layer.bias.double()
        h = TORCH_ACTIVATIONS[activation](h) if i < len(layers) - 1 else h
    return bool(torch.allclose(h.float(), model.logits(z, labels).float(), atol=1e-3))


def _b64(values: torch.Tensor, dtype: str) -> str:
    array = values.detach().cpu().numpy().astype("<f2" if dtype == "float16" else "<f4")
    return base64.b64encode(array.tobytes()).decode("ascii")


def image_layout(input_shape: tuple[int, ...]) -> dict[str, int]:
    """How the page turns D numbers into a picture, as ``plots.to_images`` does: (C, H, W)
    with 3 or more channels in colour from the first three, else the first in grey;
    (H, W) in grey; flat vectors padded with zeros to the nearest square."""
    shape = tuple(int(s) for s in input_shape)
    size = int(np.prod(shape))
    if len(shape) == 3:
        return {"height": shape[1], "width": shape[2], "channels": 3 if shape[0] >= 3 else 1,
                "plane": shape[1] * shape[2], "size": size}  # fmt: skip
    if len(shape) == 2:
        return {"height": shape[0], "width": shape[1], "channels": 1, "plane": size, "size": size}
    side = max(1, int(np.ceil(np.sqrt(size))))
    return {"height": side, "width": side, "channels": 1, "plane": side * side, "size": size}


def decoder_payload(run: Run) -> tuple[dict[str, Any] | None, str]:
    """What the page needs to decode live, or (None, why not)."""
    model = run.model
    found = mlp_layers(model)
    if found is None or not _reproduces(model, *found):
        return None, (
            f"this run's decoder ({run.config.model}) is not an MLP from z with one of the "
            f"activations {', '.join(ACTIVATION_NAMES.values())}"
        )
    layers, activation = found
    n_params = sum(p.numel() for layer in layers for p in (layer.weight, layer.bias))
    if n_params > MAX_PARAMETERS:
        return None, (
            f"this run's decoder has {n_params:,} parameters, more than the "
            f"{MAX_PARAMETERS:,} that the page embeds"
        )
    biggest = max(
        float(p.detach().abs().max()) for layer in layers for p in (layer.weight, layer.bias)
    )
    dtype = "float16" if biggest < FLOAT16_MAX else "float32"
    d = model.latent_dim
    cached = run.cached_epochs()
    lat = run.latents(cached[-1]) if cached else None
    use, what = dimensions.dimension_use(model, lat) if lat is not None else (np.zeros(d), "")
    order = [int(j) for j in np.argsort(-use, kind="stable")][:MAX_SLIDERS]
    payload: dict[str, Any] = {
        "latent_dim": d,
        "dtype": dtype,
        "layers": [
            {
                "rows": layer.out_features,
                "cols": layer.in_features,
                "weight": _b64(layer.weight, dtype),  # (rows, cols), row-major
                "bias": _b64(layer.bias, dtype),
            }
            for layer in layers
        ],
        "activation": activation,  # after every layer but the last
        "likelihood": model.likelihood,
        "cb_band": CB_TAYLOR_BAND,
        "image": image_layout(model.config.input_shape),
        "start": [float(v) for v in model.prior_mean()],
        "scale": [1.0] * d,  # a slider spans start +- range * scale
        "centre": "prior mean",
        "range": SLIDER_RANGE,
        "order": order,  # slider order: the most used dimension first
        "use": [round(float(v), 4) for v in use] if what else None,
        "use_name": what,
        "inactive": dimensions.INACTIVE,
        # a conditional run's classes (their names): the page shows a label picker
        "labels": _class_labels(run) if getattr(model, "n_classes", 0) else [],
        "map": None,
        "parameters": n_params,
        # a learned prior: "random z" picks one of these draws of p(z) (none: N(start, I))
        "prior_samples": _prior_samples(model),
    }
    if not model.stochastic and lat is not None:  # an AE has no prior: its codes' spread
        payload["start"] = [float(v) for v in lat["mu"].mean(0)]
        payload["scale"] = [float(v) or 1.0 for v in lat["mu"].std(0)]
        payload["centre"] = "mean code"
    if d == 2 and lat is not None:
        n = min(MAP_POINTS, len(lat["mu"]))
        payload["map"] = {
            "x": [round(float(v), 4) for v in lat["mu"][:n, 0]],
            "y": [round(float(v), 4) for v in lat["mu"][:n, 1]],
            "labels": [int(v) for v in lat["labels"][:n]],
            "classes": list(class_names(run)),
            "epoch": cached[-1],
        }
    return payload, ""


PRIOR_SAMPLES = 64  # draws of a learned prior embedded for the "random z" button


def _prior_samples(model: nn.Module) -> list[list[float]] | None:
    """PRIOR_SAMPLES draws of a learned prior (seeded, rounded), None for N(0, I), which
    the page samples itself."""
    if getattr(model, "learned_prior", None) is None:
        return None
    points = analysis.prior_points(model, PRIOR_SAMPLES)
    return [[round(float(v), 4) for v in row] for row in points]


def _class_labels(run: Run) -> list[str]:
    """The names the picker shows for labels 0..K-1: "3", or "3 Dress" where the dataset
    names its classes."""
    names = class_names(run)
    return [
        f"{k} {names[k]}" if k < len(names) and names[k] != str(k) else str(k)
        for k in range(run.model.n_classes)
    ]


PANEL = """
<div class="live" id="live-panel">
  <div class="live-out">
    <canvas id="live-image" width="28" height="28" aria-label="decoded image"></canvas>
    <p class="live-z" id="live-z"></p>
    <p class="live-buttons"><button type="button" id="live-reset">centre</button>
      <button type="button" id="live-random">random z</button>
      <label id="live-label-box" hidden>label <select id="live-label"></select></label></p>
  </div>
  <div class="live-map" id="live-map-box" hidden>
    <canvas id="live-map" width="320" height="320" aria-label="map of the test means"></canvas>
    <p class="note" id="live-map-legend"></p>
    <p class="note">Test means (z = mu), coloured by label; click to decode a point.</p>
  </div>
  <div class="live-sliders" id="live-sliders"></div>
</div>
"""

STYLE = """
.live { display: flex; flex-wrap: wrap; gap: 1.2rem; align-items: flex-start; }
.live-out canvas { width: 224px; height: 224px; image-rendering: pixelated;
                   border: 1px solid #ccc; background: #000; }
.live-map canvas { width: 320px; height: 320px; border: 1px solid #ccc; cursor: crosshair; }
#live-map-legend span { margin-right: .5rem; font-weight: 600; }
.live-z { font-family: monospace; font-size: .8rem; max-width: 224px; color: #555; }
.live-sliders { columns: 2 20rem; column-gap: 1.5rem; flex: 1; min-width: 20rem; }
.live-sliders label { display: grid; grid-template-columns: 10rem 1fr 3rem; gap: .4rem;
                      align-items: center; font-size: .82rem; break-inside: avoid; }
.live-sliders label.off { color: #999; }
.live-sliders output { font-family: monospace; text-align: right; }
"""


def _script_json(payload: dict[str, Any]) -> str:
    """JSON that cannot end the <script> element it sits in."""
    return json.dumps(payload, separators=(",", ":")).replace("<", "\\u003c")


def section(run: Run) -> str:
    """The panel's HTML: the canvas, the sliders, the weights and the script; or, when
    the decoder cannot be embedded, a note that ``vaelab serve`` is the way."""
    payload, why = decoder_payload(run)
    if payload is None:
        return (
            f'<p class="note" id="live-unavailable">No live decoder in this page: '
            f"{html.escape(why)}. Explore it in the browser with "
            f"<code>vaelab serve {html.escape(str(run.path))}</code> instead.</p>"
        )
    script = resources.files("vaelab.viz").joinpath("static", "live.js").read_text()
    size = sum(len(layer["weight"]) + len(layer["bias"]) for layer in payload["layers"])
    note = (
        f"The decoder runs in this page: {payload['parameters']:,} weights as "
        f"{payload['dtype']} ({size / 1e6:.2f} MB of the file), no server and no network. "
        "Move a slider to change one latent dimension (most used first; grey: inactive)."
    )
    return (
        f'<p class="note">{html.escape(note)}</p>{PANEL}'
        f'<script type="application/json" id="live-data">{_script_json(payload)}</script>'
        f"<script>{script}</script>"
    )
