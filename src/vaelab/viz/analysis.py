"""What the lecture shows, as arrays: prior samples, interpolations, KL per latent
dimension, posterior "bubbles" and the latent manifold (traversals of one dimension at a
time and how each cached epoch uses the latent: :mod:`vaelab.viz.dimensions`; 2-D
embeddings of the cached test means: :mod:`vaelab.viz.embeddings`).

Compute only: every function here returns numpy arrays; :mod:`vaelab.viz.plots` draws them
and :mod:`vaelab.viz.figures` ties the two to a run directory. Anything deterministic
(interpolation, embeddings, the manifold) uses the posterior means, as the lecture does.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import torch

from vaelab.errors import SettingError, VaelabError
from vaelab.losses import gaussian_kl_per_dim
from vaelab.models import LatentModel

INTERPOLATION_MODES = ("linear", "slerp")


# ----------------------------------------------------------------------------- generation


def _encode(model: LatentModel, x: torch.Tensor, labels: torch.Tensor | None = None):
    """``model.encode(x)``, with the labels only for a conditional model, so that any
    model (or stub) without a label input keeps ``encode(x)``."""
    return model.encode(x) if labels is None else model.encode(x, labels)


def decode(model: LatentModel, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """``model.decode(z)``, with the labels only for a conditional model."""
    return model.decode(z) if labels is None else model.decode(z, labels)


@torch.no_grad()
def prior_samples(
    model: LatentModel,
    n: int = 64,
    seed: int = 0,
    temperature: float = 1.0,
    batch_size: int = 1000,
    labels: np.ndarray | torch.Tensor | None = None,
) -> np.ndarray:
    """Decode n latents from the model's prior, z ~ p(z) (scaled by ``temperature``;
    N(0, T^2 I) for the lecture's VAE): (n, D) pixel means on the CPU (lecture section
    6.2). Drawn in batches from one generator seeded with ``seed``. A conditional model
    decodes sample i with ``labels[i]`` ((n,) ints; :func:`balanced_labels`)."""
    if labels is not None:
        labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if labels.shape != (n,):
            raise VaelabError(f"{n} samples need {n} labels, got shape {tuple(labels.shape)}")
    if n <= 0:
        raise SettingError("{n} must be a positive integer, got {value}", value=n)
    if not math.isfinite(temperature) or temperature <= 0:
        raise SettingError(
            "{temperature} must be a positive number, got {value}", value=temperature
        )
    model.eval()
    dev = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, n, batch_size):
        z = model.sample_prior(min(batch_size, n - start), generator, temperature)
        y = None if labels is None else labels[start : start + len(z)].to(dev)
        parts.append(decode(model, z.to(dev), y).float().cpu())
    return torch.cat(parts).numpy()  # (n, D)


@torch.no_grad()
def prior_points(model: LatentModel, n: int = 2000, seed: int = 0) -> np.ndarray:
    """n latents z ~ p(z) from the model's prior, (n, d) on the CPU (seeded): what the
    figures draw for a learned prior, whose shape has no closed-form circles or
    quantiles."""
    return model.sample_prior(n, torch.Generator().manual_seed(seed)).double().numpy()


def prior_label(model: LatentModel) -> str:
    """How titles name the model's prior: "N(0, I)", or the learned prior's own name.

    Examples:
        >>> from vaelab.models import build_model
        >>> prior_label(build_model("vae", latent_dim=2, hidden=4))
        'N(0, I)'
    """
    prior = getattr(model, "learned_prior", None)
    return "N(0, I)" if prior is None else prior.short_name()


@torch.no_grad()
def reconstruct(
    model: LatentModel, x: torch.Tensor, labels: torch.Tensor | None = None
) -> np.ndarray:
    """Decode the posterior means of ``x`` (with its ``labels`` for a conditional model):
    (N, D), the model's eval mode."""
    mu, _ = _encode(model, x, labels)
    return decode(model, mu, labels).float().cpu().numpy()


# ------------------------------------------------------- conditional models: the label


def balanced_labels(n: int, n_classes: int) -> np.ndarray:
    """n labels that take every class in turn, (n,) int64: each class n / K times.

    Examples:
        >>> balanced_labels(7, 3).tolist()
        [0, 1, 2, 0, 1, 2, 0]
    """
    return np.arange(n, dtype=np.int64) % n_classes


def check_label(model: LatentModel, label: int | str) -> int | str:
    """``label`` if ``model`` is conditional and takes it (0..K-1, or "all" for every
    label); otherwise a one-line error."""
    if not model.conditional:
        raise VaelabError(
            "--label needs a conditional run (vaelab train --condition label); this one is not"
        )
    if label != "all" and not (isinstance(label, int) and 0 <= label < model.n_classes):
        raise VaelabError(
            f"--label {label} is not one of the run's classes; use one of "
            f"0..{model.n_classes - 1}, or all"
        )
    return label


@torch.no_grad()
def decode_every_label(model: LatentModel, z: np.ndarray | torch.Tensor) -> np.ndarray:
    """Each latent z_i of ``z`` (n, d) decoded with every label k of a conditional model:
    (K, n, D), [k, i] = E[x | z_i, y = k]. What stays the same along k is what z carries;
    what changes is the label's."""
    model.eval()
    dev = next(model.parameters()).device
    z = torch.as_tensor(np.asarray(z), dtype=torch.float32).to(dev)
    out = []
    for k in range(model.n_classes):
        labels = torch.full((len(z),), k, dtype=torch.long, device=dev)
        out.append(model.decode(z, labels).float().cpu())
    return torch.stack(out).numpy()


@torch.no_grad()
def samples_by_label(
    model: LatentModel, n: int, seed: int = 0, temperature: float = 1.0
) -> np.ndarray:
    """n prior latents z ~ p(z), each decoded with every label: (K, n, D), one row per
    class (``vaelab sample RUN --label all``); column i is the same z_i in every row."""
    if n <= 0:
        raise SettingError("{n} must be a positive integer, got {value}", value=n)
    z = model.sample_prior(n, torch.Generator().manual_seed(seed), temperature)
    return decode_every_label(model, z)


@torch.no_grad()
def relabel(model: LatentModel, x: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Test images ``x`` (n, ...) encoded with their own ``labels`` (n,), their means then
    decoded with every label: (K, n, D). Same handwriting, every class: the label carries
    the class, z the rest (when training left the class out of z)."""
    model.eval()
    mu, _ = model.encode(x, labels)
    return decode_every_label(model, mu)


# -------------------------------------------------------------------------- interpolation


def path_weights(steps: int) -> np.ndarray:
    """``steps`` evenly spaced t in [0, 1], both endpoints included.

    Examples:
        >>> path_weights(5).tolist()
        [0.0, 0.25, 0.5, 0.75, 1.0]
    """
    if steps < 2:
        raise SettingError("{steps} must be at least 2, got {value}", value=steps)
    return np.linspace(0.0, 1.0, steps)


def latent_path(za: np.ndarray, zb: np.ndarray, steps: int, mode: str = "linear") -> np.ndarray:
    """Points from ``za`` to ``zb`` (both (d,)): (steps, d).

    linear: (1 - t) za + t zb. slerp (Shoemake 1985; White 2016, "Sampling Generative
    Networks", https://arxiv.org/abs/1609.04468): along the great circle, with the norm
    interpolated linearly, so the path keeps the typical radius of a Gaussian sample.

    Examples:
        >>> latent_path(np.array([0.0, 0.0]), np.array([1.0, 2.0]), steps=3).tolist()
        [[0.0, 0.0], [0.5, 1.0], [1.0, 2.0]]
        >>> mid = latent_path(np.array([2.0, 0.0]), np.array([0.0, 2.0]), 3, "slerp")[1]
        >>> np.round(mid, 4).tolist(), round(float(np.linalg.norm(mid)), 4)  # on the circle
        ([1.4142, 1.4142], 2.0)
    """
    if mode not in INTERPOLATION_MODES:
        raise VaelabError(
            f"unknown interpolation mode {mode!r}; choose one of {', '.join(INTERPOLATION_MODES)}"
        )
    t = path_weights(steps)[:, None]  # (steps, 1)
    za, zb = np.asarray(za, np.float64), np.asarray(zb, np.float64)
    if mode == "linear":
        return (1 - t) * za + t * zb
    na, nb = np.linalg.norm(za), np.linalg.norm(zb)
    if na < 1e-8 or nb < 1e-8:
        return (1 - t) * za + t * zb
    ua, ub = za / na, zb / nb
    omega = math.acos(float(np.clip(ua @ ub, -1.0, 1.0)))
    if omega < 1e-6:  # (anti-)parallel ends: no unique circle; fall back to a line
        return (1 - t) * za + t * zb
    direction = (np.sin((1 - t) * omega) * ua + np.sin(t * omega) * ub) / math.sin(omega)
    return direction * ((1 - t) * na + t * nb)


@torch.no_grad()
def interpolate(
    model: LatentModel,
    xa: torch.Tensor,
    xb: torch.Tensor,
    steps: int = 10,
    mode: str = "linear",
    labels: tuple[int, int] | None = None,
) -> dict[str, np.ndarray]:
    """The lecture's interpolation (section 6.3) between two inputs.

    Returns ``latent`` (steps, D): the decoded path between the two posterior means,
    ``pixel`` (steps, D): the same endpoints blended in pixel space, for contrast, ``z``
    (steps, d): the latent path itself, and ``t`` (steps,). A conditional model encodes
    each input with its label (``labels`` = (label a, label b)) and decodes the path
    with the one-hot labels mixed alongside, (1 - t) y_a + t y_b."""
    y = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    mu, _ = _encode(model, torch.stack([xa, xb]), y)
    z = latent_path(mu[0].numpy(), mu[1].numpy(), steps, mode)  # (steps, d)
    t = path_weights(steps)[:, None]
    mixed = None
    if y is not None:  # (steps, K): the labels' one-hot rows, mixed as z is
        ends = torch.nn.functional.one_hot(y, model.n_classes).double().numpy()
        mixed = torch.as_tensor((1 - t) * ends[0] + t * ends[1], dtype=torch.float32)
    decoded = decode(model, torch.as_tensor(z, dtype=torch.float32), mixed).float().numpy()
    a, b = xa.flatten().numpy(), xb.flatten().numpy()
    pixel = ((1 - t) * a + t * b).astype(np.float32)
    return {"latent": decoded, "pixel": pixel, "t": t[:, 0], "z": z}


def pick_by_label(labels: np.ndarray, digits: tuple[int, int]) -> tuple[int, int]:
    """Test indices of the first image of each of two classes (e.g. ``(3, 8)``).

    Examples:
        >>> pick_by_label(np.array([7, 3, 8, 3, 8]), (3, 8))
        (1, 2)
    """
    out = []
    for digit in digits:
        hits = np.flatnonzero(np.asarray(labels) == digit)
        if len(hits) == 0:
            known = sorted(int(v) for v in np.unique(labels) if v >= 0)
            raise VaelabError(
                f"no test image has label {digit}; labels in this run: "
                f"{', '.join(map(str, known)) or 'none'}"
            )
        out.append(int(hits[0]))
    return out[0], out[1]


def default_pairs(labels: np.ndarray) -> list[tuple[int, int]]:
    """Two pairs of test indices for the report: the lecture's 5 -> 4 and 3 -> 8 where
    those labels exist, otherwise the first images of the first classes present."""
    present = set(int(v) for v in np.unique(labels))
    if {3, 4, 5, 8} <= present:
        return [pick_by_label(labels, (5, 4)), pick_by_label(labels, (3, 8))]
    classes = sorted(v for v in present if v >= 0)
    if len(classes) >= 4:
        return [
            pick_by_label(labels, (classes[0], classes[1])),
            pick_by_label(labels, (classes[2], classes[3])),
        ]
    n = len(labels)
    return [(0, min(1, n - 1)), (min(2, n - 1), min(3, n - 1))]


def check_index(i: int, n: int, flag: str) -> int:
    if not 0 <= i < n:
        raise VaelabError(f"{flag} {i} is outside the test set; use an index in 0..{n - 1}")
    return i


# ------------------------------------------------------------------- KL, bubbles, manifold


def kl_per_dim(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Mean over the test set of each latent dimension's KL term against N(0, I), (d,)
    in nats."""
    per = gaussian_kl_per_dim(torch.as_tensor(mu, dtype=torch.float64), torch.as_tensor(logvar))
    return per.mean(0).numpy()


def top_dims(
    latents: dict[str, np.ndarray], k: int = 2, by_kl: bool = True
) -> tuple[list[int], str]:
    """The ``k`` latent dimensions that carry the most information, in index order, and
    what "most" meant: the highest mean KL for a VAE, the highest variance of the codes
    for a plain autoencoder (which has no KL) and for a VAE with a learned prior
    (``by_kl=False``: its KL has no term per dimension)."""
    mu, logvar = latents["mu"], latents["logvar"]
    d = mu.shape[1]
    if d <= k:
        return list(range(d)), "all"
    if by_kl and np.isfinite(logvar).all():
        score, what = kl_per_dim(mu, logvar), "highest KL"
    else:
        score, what = mu.var(0), "highest variance"
    return sorted(int(i) for i in np.argsort(-score, kind="stable")[:k]), what


def bubbles(latents: dict[str, np.ndarray], dims: list[int], n: int) -> dict[str, np.ndarray]:
    """Each of the first ``n`` test points' posterior in two latent dimensions:
    ``mu`` (n, 2), ``sigma`` (n, 2) (zeros for a plain autoencoder), ``labels`` (n,)."""
    if n <= 0:
        raise SettingError("{n} must be a positive integer, got {value}", value=n)
    mu = latents["mu"][:n, dims]
    logvar = latents["logvar"][:n, dims]
    sigma = np.where(np.isfinite(logvar), np.exp(0.5 * logvar), 0.0)
    return {"mu": mu, "sigma": sigma.astype(np.float32), "labels": latents["labels"][:n]}


def prior_grid_values(samples: np.ndarray, grid: int, lo: float = 0.05, hi: float = 0.95):
    """The manifold's cell values for a prior without a closed-form quantile (a learned
    mixture): ``grid`` empirical quantiles of the prior's samples of one dimension,
    evenly spaced in probability from ``lo`` to ``hi``, as ``grid_values`` are for N(0, 1).

    Examples:
        >>> prior_grid_values(np.arange(101.0), 3).round(6).tolist()  # the 5%, 50%, 95% points
        [5.0, 50.0, 95.0]
    """
    if grid < 2:
        raise SettingError("{grid} must be at least 2, got {value}", value=grid)
    return np.quantile(np.asarray(samples, np.float64), np.linspace(lo, hi, grid))


def grid_values(grid: int, lo: float = 0.05, hi: float = 0.95) -> np.ndarray:
    """``grid`` standard-normal quantiles evenly spaced in probability (Kingma & Welling
    2014, fig. 4): (grid,) values of z for the cells of the manifold picture.

    Examples:
        >>> np.round(grid_values(2), 4).tolist()  # the 5% and 95% quantiles
        [-1.6449, 1.6449]
        >>> np.round(grid_values(5)[[1, 3]], 4).tolist()  # 27.5% and 72.5%
        [-0.5978, 0.5978]
    """
    if grid < 2:
        raise SettingError("{grid} must be at least 2, got {value}", value=grid)
    normal = NormalDist()
    return np.array([normal.inv_cdf(p) for p in np.linspace(lo, hi, grid)])


@torch.no_grad()
def manifold(
    model: LatentModel,
    dims: list[int],
    grid: int = 20,
    centre: np.ndarray | None = None,
    scale: np.ndarray | None = None,
    label: int | None = None,
    axes: tuple[np.ndarray, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Decode a grid over two latent dimensions, the others fixed at ``centre`` (0 by
    default); cell values are Gaussian quantiles times ``scale`` (1) plus ``centre``, or
    ``axes`` = (values along x, values along y) as given (a learned prior's quantiles,
    ``prior_grid_values``). A conditional model decodes every cell with ``label``.

    Returns ``images`` (grid * grid, D) row by row, the first row at the top (the
    highest value of the second dimension), and ``u``, ``v``: the values along x and y."""
    d = model.latent_dim
    centre = np.zeros(d) if centre is None else np.asarray(centre, np.float64)
    scale = np.ones(d) if scale is None else np.asarray(scale, np.float64)
    q = grid_values(grid)
    u = centre[dims[0]] + scale[dims[0]] * q  # along x
    v = centre[dims[-1]] + scale[dims[-1]] * q  # along y
    if axes is not None:
        u, v = (np.asarray(a, np.float64) for a in axes)
    z = np.tile(centre, (grid * grid, 1))  # (grid^2, d)
    for row, vy in enumerate(v[::-1]):
        for col, ux in enumerate(u):
            z[row * grid + col, dims[0]] = ux
            if len(dims) > 1:
                z[row * grid + col, dims[1]] = vy
    labels = None if label is None else torch.full((len(z),), label, dtype=torch.long)
    images = decode(model, torch.as_tensor(z, dtype=torch.float32), labels).float().numpy()
    return {"images": images, "u": u, "v": v}
