"""The likelihood bounds of a trained model, image by image: the importance-weighted
estimate of -log p(x), the sampled ELBO's parts, KL per dimension and active units.

nll_iwae = -log (1/K sum_k p(x|z_k) p(z_k) / q(z_k|x)),  z_k ~ q(z|x)   (Burda, Grosse &
Salakhutdinov 2015, "Importance Weighted Autoencoders", https://arxiv.org/abs/1509.00519,
eq. 8 and section 5.2). It is an upper bound on -log p(x) that tightens as K grows; K = 1
is the negative ELBO in expectation. The K samples are drawn in chunks (images x samples)
and combined with logsumexp, so memory is bounded for any K and the time is linear in K
and in the number of images. The samples of an image depend only on the seed and its
index in the data set (``group_seed``), so the numbers are the same for any batch size and
any split of the images between processes. The model supplies the weights' parts
(``LatentModel.log_weights``), so any prior or latent structure is scored the same way.

Active units: latent dimensions j with Cov_x(E_q[z_j | x]) > 0.01 (Burda et al., sec. 5.2).

Mutual information I(x; z) under the encoder's aggregate posterior q(z) = E_x q(z|x)
(Hoffman & Johnson 2016, "ELBO surgery", https://approximateinference.org/2016/accepted/
HoffmanJohnson2016.pdf; He et al. 2019, "Lagging Inference Networks and Posterior
Collapse in Variational Autoencoders", https://arxiv.org/abs/1901.05534): how many nats
of the KL term tell the images apart; near 0 when the posterior has collapsed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from vaelab.errors import VaelabError
from vaelab.models import LatentModel
from vaelab.objectives import log_weights

ACTIVE_THRESHOLD = 0.01
ROWS_PER_CHUNK = {"cpu": 4096, "cuda": 65536}  # decoder rows (images x samples) at a time
# The images whose importance samples one generator draws (iwae_estimate), always scored
# together: the old default batch, so the decoder calls keep their shapes (100 images x 40
# samples on a CPU) and their speed. Fewer images per call cost time at small K, where the
# per-call overhead dominates: K = 1 on 8000 images took 94 s one image at a time against
# 0.7 s before, and 16 images per call were 2-6x slower than 100.
NOISE_GROUP = 100


def _release_freed_memory() -> None:
    """Give memory that the C allocator keeps after the chunk buffers are freed back to
    the system (glibc's ``malloc_trim``; a no-op elsewhere). Measured: without it, a
    K = 5000 test-set run's peak RSS wandered between 0.85 and 3.7 GB as the heap
    fragmented; the live tensors never exceed a few chunks."""
    global _malloc_trim
    if _malloc_trim is None:
        try:
            _malloc_trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
        except (OSError, AttributeError):
            _malloc_trim = False
    if _malloc_trim:
        _malloc_trim(0)


_malloc_trim = None


# ------------------------------------------------------------------------ pure statistics
def active_units(mu: Tensor, threshold: float = ACTIVE_THRESHOLD) -> tuple[int, Tensor]:
    """(count, per-dimension variance): dimensions j with Var_x(E_q[z_j|x]) > threshold.

    ``mu``: (N, d) posterior means over a data set (Burda et al. 2015, section 5.2)."""
    var = mu.double().var(dim=0, unbiased=True) if len(mu) > 1 else torch.zeros(mu.shape[1])
    return int((var > threshold).sum()), var


# The per-epoch mutual information (metrics.jsonl, the report's curves) uses the first
# USAGE_POINTS test posteriors as the data: 0.03 s a epoch against 3 s for all 10,000 on a
# shared 2-core CPU (the cost is N^2), and capped at log 1000 = 6.91 nats. eval.json uses
# every scored image up to EVAL_MI_POINTS (log 10000 = 9.21).
USAGE_POINTS = 1000
EVAL_MI_POINTS = 10000


@torch.no_grad()
def mutual_information(
    mu: Tensor,
    logvar: Tensor,
    samples: int = 1,
    generator: torch.Generator | None = None,
    rows_per_chunk: int = 1024,
) -> float:
    """I(x; z) in nats under the aggregate posterior of the N posteriors N(mu_n,
    diag(exp(logvar_n))) given as ``mu``, ``logvar`` (N, d), x uniform over the N points:

        I = E_x[KL(q(z|x) || p(z))] - KL(q(z) || p(z))
          = E_x E_{q(z|x)}[log q(z|x) - log q(z)],    q(z) = 1/N sum_m q(z|x_m),

    the "ELBO surgery" split of the average KL into I and the marginal KL (Hoffman &
    Johnson 2016, eq. 3), estimated as He et al. 2019 do (their ``calc_mi``): ``samples``
    draws z ~ q(z|x_n) per point, log q(z) by a logsumexp over all N posteriors of the
    mixture. Unlike ``calc_mi``, log q(z|x_n) is taken at the same draw instead of its
    closed-form mean (the same expectation, less noise), so posteriors that do not depend
    on x give 0 (to rounding) and every term is at most log N (the mixture holds q(z|x_n)
    itself). The prior cancels: any p(z) gives the same number. The bound I <= log N is
    real for N points (H(x) = log N) and is reached once the posteriors no longer overlap,
    so report N with the estimate. Float64, memory ``rows_per_chunk`` x N, time
    O(samples N^2 d) as two matrix products per chunk.

    Examples:
        >>> mu, logvar = torch.zeros(500, 3), torch.zeros(500, 3)  # q(z|x) ignores x
        >>> g = torch.Generator().manual_seed(0)
        >>> abs(mutual_information(mu, logvar, generator=g)) < 1e-12
        True
        >>> far = torch.arange(4.0)[:, None] * 100  # 4 posteriors that never overlap
        >>> round(mutual_information(far, torch.zeros(4, 1)), 6) == round(math.log(4), 6)
        True
    """
    mu, logvar = mu.double(), logvar.double()
    n, d = mu.shape
    if n < 1 or not bool(torch.isfinite(logvar).all()):
        raise VaelabError("the mutual information needs N >= 1 Gaussian posteriors")
    precision = torch.exp(-logvar)  # (N, d)
    # log q(z|x_m) = -0.5 [z^2 . p_m - 2 z . (mu_m p_m) + c_m],  p = 1/variance: two matmuls
    const = (mu.pow(2) * precision + logvar).sum(1) + d * math.log(2 * math.pi)  # (N,)
    terms = torch.zeros(n, dtype=torch.float64, device=mu.device)
    for _ in range(samples):
        eps = torch.randn(mu.shape, generator=generator, dtype=torch.float64).to(mu.device)
        z = mu + eps * torch.exp(0.5 * logvar)  # (N, d): one draw from each posterior
        own = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi)).sum(1)  # log q(z_n|x_n)
        for start in range(0, n, rows_per_chunk):
            zc = z[start : start + rows_per_chunk]  # (C, d)
            quad = zc.pow(2) @ precision.T - 2 * zc @ (mu * precision).T + const  # (C, N)
            log_qz = torch.logsumexp(-0.5 * quad, dim=1) - math.log(n)  # (C,)
            terms[start : start + len(zc)] += own[start : start + len(zc)] - log_qz
    return float(terms.mean()) / samples


@torch.no_grad()
def latent_usage(
    mu: Tensor, logvar: Tensor | None, points: int = USAGE_POINTS, seed: int = 0
) -> dict[str, Any]:
    """Is the latent used? From the posteriors of a test set, ``mu``, ``logvar`` (N, d)
    (``logvar`` None for a plain autoencoder): ``active_units`` (all N points), and
    ``mutual_information`` I(x; z) over the first ``points`` of them (seeded draws) with
    its ceiling ``mutual_information_max`` = log(points), or None without a posterior."""
    count, _ = active_units(mu)
    out: dict[str, Any] = {"active_units": count, "mutual_information": None}
    if logvar is not None and bool(torch.isfinite(logvar).all()):
        n = min(points, len(mu))
        g = torch.Generator().manual_seed(seed)
        out["mutual_information"] = mutual_information(mu[:n], logvar[:n], generator=g)
        out["mutual_information_max"] = math.log(n)
    return out


# ---------------------------------------------------------------------- the likelihood
_MASK64 = (1 << 64) - 1


def _splitmix64(value: int) -> int:
    """One step of SplitMix64 (Steele, Lea & Flood 2014, "Fast splittable pseudorandom
    number generators"): a bijection of 64-bit integers whose outputs for consecutive
    inputs look independent."""
    z = (value + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def group_seed(seed: int, group: int) -> int:
    """The seed of the importance samples of image group ``group`` (images
    NOISE_GROUP * group ... NOISE_GROUP * (group + 1) - 1) under the evaluation ``seed``:

        group_seed(seed, g) = splitmix64(splitmix64(seed mod 2^64) + g)   (mod 2^64)

    a function of (seed, g) alone, so the noise of an image does not depend on the batch,
    the order or the process that scores it. (A CPU generator keeps the low 32 bits.)

    Examples:
        >>> group_seed(0, 7) == group_seed(0, 7) != group_seed(0, 8)
        True
        >>> group_seed(0, 1) != group_seed(1, 0)  # not a function of seed + group
        True
    """
    return _splitmix64((_splitmix64(seed & _MASK64) + group) & _MASK64)


@torch.no_grad()
def iwae_estimate(
    model: LatentModel,
    x: Tensor,
    k: int,
    batch_size: int = 100,
    generator: torch.Generator | None = None,
    progress: bool = False,
    labels: Tensor | None = None,
    seed: int | None = None,
    first_index: int = 0,
) -> dict[str, Tensor]:
    """Per-image terms on ``x`` (N, ...) with K importance samples each (a conditional
    model's with the images' ``labels`` (N,)).

    The images are scored in fixed groups of NOISE_GROUP consecutive global indices
    (``first_index`` is the global index of ``x[0]``), each group with its own generator
    seeded with ``group_seed(seed, group)``; a group that ``x`` holds only part of is
    padded with blank images (scored and dropped), so every call of ``model.log_weights``
    sees the same inputs and draws the same noise whichever images are around. The K
    samples are drawn in blocks of ROWS_PER_CHUNK / NOISE_GROUP per image. So image i's
    samples depend on (seed, first_index + i, K, the device type) only: not on
    ``batch_size`` (how many images are scored between progress updates and the release
    of freed memory), the order or the sharding over processes. Without ``seed`` one is
    drawn from ``generator`` (torch's global generator when None).

    Returns float64 tensors on the CPU: ``nll_iwae`` (N,), ``recon`` (N,) (the mean over
    the K samples of -log p(x|z_k)), ``kl`` (N,) and ``kl_per_dim`` (N, d) (the model's
    closed-form KL; against a learned prior, ``kl`` is the mean of log q(z_k|x) -
    log p(z_k) over the K samples and ``kl_per_dim`` is NaN, not defined) and ``mu``,
    ``logvar`` (N, d). A model with several stochastic layers
    has ``kl`` = the mean over the K samples of log q - log p (so recon + kl is its
    sampled -ELBO) and ``kl_per_dim``, ``mu``, ``logvar`` of its top latent. Memory holds
    ROWS_PER_CHUNK decoder rows at a time."""
    if not model.stochastic:
        raise VaelabError("a plain autoencoder has no q(z|x): the IWAE bound is not defined")
    if k < 1:
        raise VaelabError(f"--iw-samples must be a positive integer, got {k}")
    if len(x) == 0:
        raise VaelabError("the IWAE estimate needs at least one image")
    model.eval()
    dev = next(model.parameters()).device
    if seed is None:
        seed = int(torch.randint(2**62, (), generator=generator, device=dev))
    rows = ROWS_PER_CHUNK.get(dev.type, ROWS_PER_CHUNK["cpu"])
    per_draw = max(1, rows // NOISE_GROUP)  # samples of each image per log_weights call
    group_rng = torch.Generator(dev)
    out: dict[str, list[Tensor]] = {}
    first_group = first_index // NOISE_GROUP
    last_group = (first_index + len(x) - 1) // NOISE_GROUP
    bar = tqdm(
        total=len(x), desc=f"K={k}", unit="img", disable=None if progress else True, leave=False
    )
    since_release = 0
    with model.held_prior():
        for group in range(first_group, last_group + 1):
            lo = group * NOISE_GROUP - first_index  # where the group starts in x (may be < 0)
            have = slice(max(lo, 0), min(lo + NOISE_GROUP, len(x)))  # its images in x...
            at = slice(have.start - lo, have.stop - lo)  # ...and their rows in the group
            xg = _padded(x[have].to(dev).flatten(1), at)  # (G, D)
            yg = None if labels is None else _padded(labels[have].to(dev), at)
            group_rng.manual_seed(group_seed(seed, group))
            for name, value in _group_terms(model, xg, yg, k, per_draw, group_rng).items():
                out.setdefault(name, []).append(value[at].cpu())
            bar.update(at.stop - at.start)
            since_release += at.stop - at.start
            if since_release >= batch_size:
                _release_freed_memory()
                since_release = 0
    bar.close()
    _release_freed_memory()
    return {name: torch.cat(parts) for name, parts in out.items()}


def _padded(rows: Tensor, at: slice) -> Tensor:
    """``rows`` placed at ``at`` of NOISE_GROUP zero rows (a whole group)."""
    out = rows.new_zeros((NOISE_GROUP, *rows.shape[1:]))
    out[at] = rows
    return out


def _group_terms(
    model: LatentModel,
    x: Tensor,
    labels: Tensor | None,
    k: int,
    per_draw: int,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """``iwae_estimate``'s terms of one group of images ``x`` (G, D), on its device: K
    samples each, drawn from ``generator`` ``per_draw`` at a time, combined with
    logsumexp."""
    posterior = mu, logvar = model.posterior(x, labels)  # (G, d) each
    lse, rec = [], torch.zeros(len(x), dtype=torch.float64, device=x.device)
    sampled_kl = torch.zeros_like(rec)
    for s0 in range(0, k, per_draw):
        s = min(per_draw, k - s0)
        parts = log_weights(model, x, posterior, s, generator, labels=labels)
        log_w = parts.log_px_given_z + parts.log_pz - parts.log_qz  # (S, G)
        lse.append(torch.logsumexp(log_w.double(), dim=0))
        rec -= parts.log_px_given_z.double().sum(0)
        sampled_kl += (parts.log_qz - parts.log_pz).double().sum(0)
    log_px_hat = torch.logsumexp(torch.stack(lse), dim=0) - math.log(k)  # (G,)
    if model.closed_form_kl:  # of the top latent, for a model with several layers
        kl_dims = model.kl_per_dim(mu, logvar).double()
    else:  # a learned prior: no per-dimension terms (NaN)
        kl_dims = torch.full(mu.shape, math.nan, dtype=torch.float64, device=x.device)
    one_closed_form = model.closed_form_kl and model.stochastic_layers == 1
    return {
        "nll_iwae": -log_px_hat,
        "recon": rec / k,
        # the closed form, or the K-sample mean of log q - log p (a learned prior, or the
        # lower layers of a model with several, which kl() does not know)
        "kl": kl_dims.sum(1) if one_closed_form else sampled_kl / k,
        "kl_per_dim": kl_dims,
        "mu": mu.double(),
        "logvar": logvar.double(),
    }


@torch.no_grad()
def autoencoder_terms(
    model: LatentModel, x: Tensor, batch_size: int = 1000, labels: Tensor | None = None
) -> dict[str, Tensor]:
    """Per-image reconstruction loss and codes of a deterministic autoencoder (a
    conditional one's with the images' ``labels``)."""
    model.eval()
    dev = next(model.parameters()).device
    recs, codes = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(dev).flatten(1)
        yb = None if labels is None else labels[start : start + batch_size].to(dev)
        code, _ = model.posterior(xb, yb)
        recs.append(model.neg_log_likelihood(model.logits(code, yb), xb).double().cpu())
        codes.append(code.double().cpu())
    return {"recon": torch.cat(recs), "mu": torch.cat(codes)}
