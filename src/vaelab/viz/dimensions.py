"""Latent dimensions one at a time, as arrays: how much each is used (the KL of a VAE, the
variance of an autoencoder's codes), what moving one does to the decoded image (a
traversal), and how the use changes over the cached epochs. Compute only, as
:mod:`vaelab.viz.analysis`; :mod:`vaelab.viz.dimension_figures` draws them for a run.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from vaelab.errors import SettingError
from vaelab.models import LatentModel
from vaelab.viz.analysis import decode

INACTIVE = 0.01  # a dimension with a mean KL (an AE: a code variance) below this is unused


def dimension_use(model: LatentModel, latents: dict[str, np.ndarray]) -> tuple[np.ndarray, str]:
    """How much each latent dimension is used, (d,), and in what: the mean KL of the
    model's posteriors against its own prior (``model.kl_per_dim``, nats) for a VAE, the
    variance of the codes for a plain autoencoder (which has no KL) and of the posterior
    means for a VAE with a learned prior (whose KL has no term per dimension; Burda et
    al.'s active-unit statistic). Below ``INACTIVE`` a dimension is unused."""
    mu, logvar = latents["mu"], latents["logvar"]
    if not np.isfinite(logvar).all() or not getattr(model, "closed_form_kl", True):
        return mu.astype(np.float64).var(0), "variance"
    with torch.no_grad():
        kl = model.kl_per_dim(torch.as_tensor(mu), torch.as_tensor(logvar))
    return kl.double().mean(0).numpy(), "KL"


@torch.no_grad()
def traversal(
    model: LatentModel,
    base: np.ndarray,
    dims: list[int],
    span: float = 3.0,
    steps: int = 11,
    scale: np.ndarray | None = None,
    label: int | None = None,
) -> dict[str, np.ndarray]:
    """Decode the code ``base`` (d,) with each latent dimension j of ``dims`` in turn moved
    to base_j + t * scale_j, t evenly spaced in [-span, span] (``scale`` 1 by default):
    around the base value, so with an odd number of ``steps`` the middle column of every
    row is the base image itself. A conditional model decodes every image with ``label``.

    Returns ``images`` (len(dims), steps, D), ``t`` (steps,) and ``z`` (len(dims), steps, d).

    Examples:
        >>> class Identity:  # decode(z) = z, to show the codes
        ...     latent_dim = 2
        ...     def decode(self, z):
        ...         return z
        >>> out = traversal(Identity(), np.array([0.5, 0.0]), [1], span=1.0, steps=3)
        >>> out["z"][0].tolist()  # dimension 2 swept, dimension 1 kept at 0.5
        [[0.5, -1.0], [0.5, 0.0], [0.5, 1.0]]
    """
    if steps < 2:
        raise SettingError("{steps} must be at least 2, got {value}", value=steps)
    if not math.isfinite(span) or span <= 0:  # the command's --range
        raise SettingError("{range} must be a positive number, got {value}", value=span)
    d = model.latent_dim
    bad = [j for j in dims if not 0 <= j < d]
    if bad or not dims:
        raise SettingError("{dims} must name latent dimensions in 0..{last}", last=d - 1)
    base = np.asarray(base, np.float64)
    scale = np.ones(d) if scale is None else np.asarray(scale, np.float64)
    t = np.linspace(-span, span, steps)
    z = np.tile(base, (len(dims), steps, 1))  # (R, S, d)
    for row, j in enumerate(dims):
        z[row, :, j] = base[j] + t * scale[j]
    flat = torch.as_tensor(z.reshape(-1, d), dtype=torch.float32)
    labels = None if label is None else torch.full((len(flat),), label, dtype=torch.long)
    with torch.no_grad():
        images = decode(model, flat, labels).float().numpy()
    return {"images": images.reshape(len(dims), steps, -1), "t": t, "z": z}


def latent_use_by_epoch(
    model: LatentModel, latents: dict[int, dict[str, np.ndarray]], points: int = 1000
) -> dict[str, np.ndarray]:
    """Per cached epoch (``latents``: epoch -> cached test posteriors): ``kl`` (E, d), the
    mean KL of each dimension, ``active_units`` (E,) and ``mutual_information`` (E,)
    I(x; z) over the first ``points`` test posteriors (the numbers metrics.jsonl records
    each epoch; ``vaelab.evaluation.bounds.latent_usage``), ``ceiling`` log(points), and
    ``epochs`` (E,). For a VAE with the N(0, I) prior only (a plain autoencoder has no
    KL; a learned prior's has no term per dimension)."""
    from vaelab.evaluation.bounds import latent_usage

    epochs = sorted(latents)
    kl, au, mi = [], [], []
    for epoch in epochs:
        lat = latents[epoch]
        kl.append(dimension_use(model, lat)[0])
        usage = latent_usage(torch.as_tensor(lat["mu"]), torch.as_tensor(lat["logvar"]), points)
        au.append(usage["active_units"])
        mi.append(usage["mutual_information"])
    n = min(points, len(latents[epochs[0]]["mu"])) if epochs else 1
    return {
        "epochs": np.array(epochs),
        "kl": np.array(kl),
        "active_units": np.array(au),
        "mutual_information": np.array(mi, dtype=np.float64),
        "ceiling": np.float64(math.log(n)),
    }
