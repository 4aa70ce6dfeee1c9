"""Honest numbers for a trained run: the sampled ELBO, an importance-weighted estimate of
the negative log-likelihood, KL per dimension, active units, and sample quality.

nll_iwae = -log (1/K sum_k p(x|z_k) p(z_k) / q(z_k|x)),  z_k ~ q(z|x)   (Burda, Grosse &
Salakhutdinov 2015, "Importance Weighted Autoencoders", https://arxiv.org/abs/1509.00519,
eq. 8 and section 5.2). It is an upper bound on -log p(x) that tightens as K grows; K = 1
is the negative ELBO in expectation. The K samples are drawn in chunks (images x samples)
and combined with logsumexp, so memory is bounded for any K and the time is linear in K
and in the number of images.

Active units: latent dimensions j with Cov_x(E_q[z_j | x]) > 0.01 (Burda et al., sec. 5.2).
Sample quality: N prior samples z ~ N(0, I), decoded to pixel means and scored by the
dataset's classifier (``vaelab.evaluation.classifier``): mean max-softmax confidence, the fraction
scored >= 0.9, the entropy of the predicted-class histogram, and the Fréchet distance
between classifier features of samples and of test images (Heusel et al. 2017).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from vaelab.config import BINARIZE_CHOICES, TrainConfig, check_choice
from vaelab.data.datasets import Dataset, binarize_dataset, binarize_fixed, load_dataset
from vaelab.errors import SettingError, VaelabError
from vaelab.fileio import atomic_write_json
from vaelab.losses import gaussian_kl_per_dim, importance_log_weights, reparameterize
from vaelab.objectives import neg_log_likelihood
from vaelab.run import Run, load_run

SPLITS = ("test", "train")
ACTIVE_THRESHOLD = 0.01
ROWS_PER_CHUNK = {"cpu": 4096, "cuda": 65536}  # decoder rows (images x samples) at a time


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


# ---------------------------------------------------------------------- the likelihood
@torch.no_grad()
def iwae_estimate(
    model: nn.Module,
    x: Tensor,
    k: int,
    config: TrainConfig | None = None,
    batch_size: int = 100,
    sample_chunk: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
) -> dict[str, Tensor]:
    """Per-image terms on ``x`` (N, ...) with K importance samples each, chunked.

    Returns float64 tensors on the CPU: ``nll_iwae`` (N,), ``recon`` (N,) (the mean over
    the K samples of -log p(x|z_k)), ``kl`` (N,) (closed form), ``kl_per_dim`` (N, d) and
    ``mu`` (N, d). Memory holds ``batch_size * sample_chunk`` decoder rows at a time.
    ``config`` names the likelihood (default: the lecture's Bernoulli / BCE)."""
    if not getattr(model, "stochastic", True):
        raise VaelabError("a plain autoencoder has no q(z|x): the IWAE bound is not defined")
    if k < 1:
        raise VaelabError(f"--iw-samples must be a positive integer, got {k}")
    config = config or TrainConfig()
    model.eval()
    dev = next(model.parameters()).device
    rows = ROWS_PER_CHUNK.get(dev.type, ROWS_PER_CHUNK["cpu"])
    sample_chunk = min(k, sample_chunk or max(1, rows // batch_size))
    out: dict[str, list[Tensor]] = {n: [] for n in ("nll_iwae", "recon", "kl", "kl_per_dim", "mu")}
    starts = range(0, len(x), batch_size)
    for start in tqdm(
        starts, desc=f"K={k}", unit="batch", disable=None if progress else True, leave=False
    ):
        xb = x[start : start + batch_size].to(dev).flatten(1)  # (B, D)
        mu, logvar = model.encode(xb)  # (B, d) each
        B, D = xb.shape
        lse, rec = [], torch.zeros(B, dtype=torch.float64, device=dev)
        targets = xb.expand(sample_chunk, B, D).reshape(sample_chunk * B, D)  # once per batch
        for s0 in range(0, k, sample_chunk):
            S = min(sample_chunk, k - s0)
            eps = torch.randn((S, *mu.shape), generator=generator, device=dev)
            z = reparameterize(mu, logvar, eps)  # (S, B, d)
            logits = model.decode_logits(z.reshape(S * B, -1))  # (S*B, D)
            log_px = -neg_log_likelihood(model, logits, targets[: S * B], config).view(S, B)
            log_w = importance_log_weights(log_px, z, mu, logvar)  # (S, B)
            lse.append(torch.logsumexp(log_w.double(), dim=0))
            rec -= log_px.double().sum(0)
        log_px_hat = torch.logsumexp(torch.stack(lse), dim=0) - math.log(k)  # (B,)
        kl_dims = gaussian_kl_per_dim(mu, logvar).double()
        _release_freed_memory()
        for name, value in (
            ("nll_iwae", -log_px_hat),
            ("recon", rec / k),
            ("kl", kl_dims.sum(1)),
            ("kl_per_dim", kl_dims),
            ("mu", mu.double()),
        ):
            out[name].append(value.cpu())
    return {name: torch.cat(parts) for name, parts in out.items()}


@torch.no_grad()
def autoencoder_terms(
    model: nn.Module, x: Tensor, config: TrainConfig | None = None, batch_size: int = 1000
) -> dict[str, Tensor]:
    """Per-image reconstruction loss and codes of a deterministic autoencoder."""
    config = config or TrainConfig()
    model.eval()
    dev = next(model.parameters()).device
    recs, codes = [], []
    for start in range(0, len(x), batch_size):
        xb = x[start : start + batch_size].to(dev).flatten(1)
        code, _ = model.encode(xb)
        recs.append(neg_log_likelihood(model, model.decode_logits(code), xb, config).double().cpu())
        codes.append(code.double().cpu())
    return {"recon": torch.cat(recs), "mu": torch.cat(codes)}


# ----------------------------------------------------------------------- sample scores
@torch.no_grad()
def prior_samples(
    model: nn.Module, n: int, latent_dim: int, seed: int = 0, batch_size: int = 1000
) -> Tensor:
    """``n`` decoded prior samples z ~ N(0, I): pixel means (n, D) on the CPU."""
    model.eval()
    dev = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    parts = []
    for start in range(0, n, batch_size):
        z = torch.randn(min(batch_size, n - start), latent_dim, generator=g)
        parts.append(model.decode(z.to(dev)).float().cpu())
    return torch.cat(parts)


# ----------------------------------------------------------------------- a whole run
def likelihood_name(config: TrainConfig) -> str:
    """The run's p(x|z): --likelihood, else the lecture's --recon (bce = bernoulli)."""
    if config.likelihood is not None:
        return config.likelihood
    return "bernoulli" if config.recon == "bce" else "mse"


def _data_note(binary: bool, likelihood: str, stochastic: bool) -> str:
    """What the numbers mean: a true NLL, or a bound on something that is not one."""
    if not stochastic:
        return (
            "plain autoencoder: no q(z|x) and no KL, so no ELBO and no IWAE estimate; only "
            "the reconstruction loss (z = code) and sample scores are reported"
        )
    if likelihood == "bernoulli" and binary:
        return (
            "true NLL: binary data under a Bernoulli likelihood, so nll_iwae is an upper "
            "bound on -log p(x) in nats, comparable with Burda et al. 2015 (Table 1)"
        )
    if likelihood == "bernoulli":
        return (
            "BCE bound, not an NLL: grey pixels under a Bernoulli likelihood are not a "
            "density of the data; nll_iwae tightens the BCE bound but is not comparable with "
            "published NLLs (use --binarize dynamic for the benchmark)"
        )
    if likelihood in ("continuous-bernoulli", "gaussian"):
        return (
            f"true NLL of a density: the {likelihood} likelihood is normalised on the "
            "pixel values, so nll_iwae bounds -log p(x) in nats; densities of continuous "
            "pixels are not comparable with NLLs of binarised MNIST"
        )
    return (
        "MSE bound, not an NLL: -log p(x|z) is half the squared error, a unit-variance "
        "Gaussian without its 0.5*D*log(2*pi) constant"
    )


def evaluation_data(
    run: Run, binarize: str | None = None, data: Dataset | None = None
) -> tuple[Dataset, Dataset]:
    """(raw, scored): the run's dataset as loaded (full, grey) and as scored (the run's
    --limit and binarisation, or ``binarize`` instead), checked against its checksum."""
    cfg = run.config
    raw = data if data is not None else load_dataset(cfg.dataset, cfg.data_dir)
    recorded = run.meta.get("data", {}).get("sha256")
    if recorded and recorded != raw.sha256:
        raise VaelabError(f"the data for {run.path} has changed since training (checksum differs)")
    mode = binarize or cfg.binarize
    return raw, binarize_dataset(raw.limited(cfg.limit), mode, cfg.seed)


def split_images(data: Dataset, split: str, mode: str) -> Tensor:
    """The images scored for ``split``; a dynamically binarised training set is
    binarised once with the fixed test seed so that the score is reproducible
    (``split`` is checked by ``check_arguments``)."""
    if split == "test":
        return data.x_test
    return binarize_fixed(data.x_train) if mode == "dynamic" else data.x_train


def check_arguments(
    iw_samples: int, batch_size: int, n_samples: int, binarize: str | None, split: str
) -> None:
    """One SettingError naming the first bad evaluation argument."""
    if not isinstance(iw_samples, int) or iw_samples < 1:
        raise SettingError(
            "{iw_samples} must be a positive integer, got {value!r}", value=iw_samples
        )
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SettingError(
            "{batch_size} must be a positive integer, got {value!r}", value=batch_size
        )
    if not isinstance(n_samples, int) or n_samples < 2:
        raise SettingError("{n_samples} must be an integer >= 2, got {value!r}", value=n_samples)
    if binarize is not None:
        check_choice("binarize", binarize, BINARIZE_CHOICES)
    check_choice("split", split, SPLITS)


def likelihood_fields(
    model: nn.Module,
    x: Tensor,
    config: TrainConfig,
    k: int,
    batch_size: int,
    seed: int,
    progress: bool = False,
) -> dict[str, Any]:
    """The eval.json fields about the data's likelihood: bounds, KL, active units.

    A plain autoencoder has no q(z|x): its bounds and KL are None."""
    if getattr(model, "stochastic", True):
        g = torch.Generator(next(model.parameters()).device).manual_seed(seed)
        t = iwae_estimate(model, x, k, config, batch_size, generator=g, progress=progress)
        neg_elbo = t["recon"] + t["kl"]
        fields = {
            "neg_elbo": float(neg_elbo.mean()),
            "neg_elbo_se": _se(neg_elbo),
            "recon": float(t["recon"].mean()),
            "kl": float(t["kl"].mean()),
            "nll_iwae": float(t["nll_iwae"].mean()),
            "nll_iwae_se": _se(t["nll_iwae"]),
            "kl_per_dim": [round(float(v), 6) for v in t["kl_per_dim"].mean(0)],
        }
    else:
        t = autoencoder_terms(model, x, config)
        fields = dict.fromkeys(
            ("neg_elbo", "neg_elbo_se", "recon", "kl", "nll_iwae", "nll_iwae_se", "kl_per_dim")
        )
        fields["recon"] = float(t["recon"].mean())
    au, var = active_units(t["mu"])
    fields.update(
        active_units=au,
        latent_dim=int(t["mu"].shape[1]),
        mu_variance_per_dim=[round(float(v), 6) for v in var],
    )
    return fields


def evaluate_run(
    run: Run | str | Path,
    iw_samples: int = 5000,
    split: str = "test",
    batch_size: int = 100,
    binarize: str | None = None,
    n_samples: int = 10000,
    scores: bool = True,
    data: Dataset | None = None,
    device: str = "auto",
    seed: int = 0,
    write: bool = True,
    progress: bool = False,
    log: Callable[[str], None] = print,
    n_images: int | None = None,
) -> dict[str, Any]:
    """Evaluate a run and (``write``) save RUN/eval.json; returns the same dict.

    ``data`` (the full, grey dataset) skips loading it; ``binarize`` overrides the run's
    own binarisation of the scored split; ``scores=False`` skips the sample scores;
    ``n_images`` scores only the first N images of the split (all of them when None or
    more than there are): a quick estimate, e.g. in a notebook."""
    from vaelab import __version__
    from vaelab.training.loop import select_device

    check_arguments(iw_samples, batch_size, n_samples, binarize, split)
    if n_images is not None and (not isinstance(n_images, int) or n_images < 1):
        raise VaelabError(f"n_images must be a positive integer or None, got {n_images!r}")
    run = run if isinstance(run, Run) else load_run(run)
    t0 = time.perf_counter()
    raw, scored = evaluation_data(run, binarize, data)
    mode = binarize or run.config.binarize
    x = split_images(scored, split, mode)[:n_images]
    binary = bool(((x == 0) | (x == 1)).all())
    model = run.model.to(select_device(device))
    stochastic = getattr(model, "stochastic", True)
    likelihood = likelihood_name(run.config)
    result: dict[str, Any] = {
        "run": str(run.path),
        "epoch": run.epoch,
        "model": run.config.model,
        "split": split,
        "n_images": len(x),
        "binarize": mode,
        "binary_data": binary,
        "likelihood": likelihood,
        "beta": run.config.beta,
        "iw_samples": iw_samples if stochastic else None,
    }
    result.update(
        likelihood_fields(model, x, run.config, iw_samples, batch_size, seed, progress),
        seconds_likelihood=round(time.perf_counter() - t0, 2),
        sample_scores=None,
    )
    if scores:
        t1 = time.perf_counter()
        result["sample_scores"] = score_prior_samples(model, raw, run, n_samples, seed, log)
        result["sample_scores"]["seconds"] = round(time.perf_counter() - t1, 2)
    note = _data_note(binary, likelihood, stochastic)
    if stochastic and run.config.beta != 1:
        note += f"; trained with beta = {run.config.beta:g}, but neg_elbo is the beta = 1 bound"
    result.update(
        seed=seed,
        device=str(next(model.parameters()).device),
        seconds=round(time.perf_counter() - t0, 2),
        note=note,
        vaelab_version=__version__,
    )
    model.cpu()
    if write:
        atomic_write_json(run.path / "eval.json", result)
    return result


def score_prior_samples(
    model: nn.Module,
    raw: Dataset,
    run: Run,
    n_samples: int,
    seed: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Sample scores of ``model`` with the cached (or freshly trained) classifier of
    ``raw``, against its grey test images."""
    from vaelab.evaluation.classifier import get_classifier, sample_scores

    classifier, info = get_classifier(raw, log=log)
    samples = prior_samples(model, n_samples, run.config.latent_dim, seed)
    out = sample_scores(classifier, samples, raw.x_test)
    out["classifier"] = info
    return out


def _se(values: Tensor) -> float | None:
    """Standard error of the mean over images."""
    return float(values.std(unbiased=True) / math.sqrt(len(values))) if len(values) > 1 else None


def format_result(result: dict[str, Any]) -> str:
    """A short printed table of an evaluation."""
    lines = [
        f"{result['run']}: {result['split']} split, {result['n_images']} images, "
        f"binarize {result['binarize']}, epoch {result['epoch']}"
    ]
    if result["nll_iwae"] is not None:
        lines += [
            f"  neg_elbo      {result['neg_elbo']:9.2f} ± {result['neg_elbo_se']:.2f}   "
            f"= recon {result['recon']:.2f} + kl {result['kl']:.2f}  (z sampled)",
            f"  nll_iwae      {result['nll_iwae']:9.2f} ± {result['nll_iwae_se']:.2f}   "
            f"(K = {result['iw_samples']})",
        ]
    else:
        lines.append(f"  recon         {result['recon']:9.2f}   (z = code)")
    lines.append(f"  active units  {result['active_units']:9d} of {result['latent_dim']}")
    s = result.get("sample_scores")
    if s:
        lines.append(
            f"  samples       confidence {s['mean_confidence']:.3f}, "
            f"{100 * s['confident_fraction']:.1f}% >= 0.9, class entropy "
            f"{s['class_entropy']:.2f}/{s['class_entropy_max']:.2f} nats, "
            f"Fréchet {s['frechet_distance']:.2f}  (N = {s['n_samples']})"
        )
    lines.append(f"  seconds       {result['seconds']:9.1f}")
    lines.append(f"note: {result['note']}")
    return "\n".join(lines)
