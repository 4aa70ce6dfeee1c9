"""Training objectives: what the trainer minimises, per example.

The trainer calls ``training_loss`` and never changes when an objective is added.

- ``elbo``: the negative ELBO with one sample z ~ q(z|x), recon + w * KL (Kingma & Welling
  2014), w = beta, or annealed from 0 to beta over ``kl_warmup`` epochs (Bowman et al.
  2016, "Generating sentences from a continuous space", https://arxiv.org/abs/1511.06349).
- ``iwae``: the negative importance-weighted bound with K samples (Burda, Grosse &
  Salakhutdinov 2015, https://arxiv.org/abs/1509.00519); K = 1 is the ELBO with a sampled KL.

``neg_log_likelihood`` is the one place where the run's -log p(x|z) is chosen (--recon,
--likelihood, --gaussian-sigma): the trainer's test loss, these objectives and the
evaluation all call it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from vaelab.config import TrainConfig
from vaelab.losses import (
    LossTerms,
    gaussian_kl,
    iwae_bound,
    likelihood_nll,
    log_normal_diag,
    log_standard_normal,
    reconstruction_loss,
    reparameterize,
)

LOG_SIGMA_MIN = math.log(1e-3)  # a learned Gaussian scale stops here, not at 0 (-log p = -inf)


def neg_log_likelihood(model: nn.Module, logits: Tensor, x: Tensor, config: TrainConfig) -> Tensor:
    """-log p(x|z) per example for the run's likelihood: logits (N, D), x (N, D) -> (N,).

    ``likelihood=None`` is the lecture's ``--recon``: bce (= bernoulli) or mse, the half
    squared error, i.e. a unit-variance Gaussian *without* its constant 0.5 D log 2 pi.
    ``gaussian`` is the normalised density with sigma fixed, or ``model.log_sigma``."""
    if config.likelihood is None:
        return reconstruction_loss(logits, x, config.recon)
    log_sigma: Tensor | float = 0.0
    if config.likelihood == "gaussian":
        if config.gaussian_sigma == "learned":
            log_sigma = model.log_sigma.clamp(min=LOG_SIGMA_MIN)
        else:
            log_sigma = math.log(config.gaussian_sigma)
    return likelihood_nll(logits, x, config.likelihood, log_sigma)


def elbo_terms(
    model: nn.Module,
    logits: Tensor,
    x: Tensor,
    mu: Tensor,
    logvar: Tensor | None,
    config: TrainConfig,
    weight: float | Tensor,
) -> LossTerms:
    """-ELBO = -log p(x|z) + weight * KL(q(z|x) || p(z)) per example, from the decoder's
    logits at z; a plain autoencoder (``logvar=None``) has no KL term."""
    rec = neg_log_likelihood(model, logits, x.flatten(1), config)
    kl = torch.zeros_like(rec) if logvar is None else gaussian_kl(mu, logvar)
    return LossTerms(rec + weight * kl, rec, kl)


def kl_weight(config: TrainConfig, epoch: int, fraction: float = 0.0) -> float:
    """The KL term's weight at step ``fraction`` (in [0, 1)) of training epoch ``epoch``
    (1-based): beta * min(1, t / kl_warmup) with t = epoch - 1 + fraction the epochs of
    training done, so the weight rises step by step from 0 to beta; beta when no warm-up.

    Examples:
        >>> config = TrainConfig(beta=2.0, kl_warmup=4)
        >>> [kl_weight(config, epoch) for epoch in (1, 2, 3, 5, 9)]  # start of each epoch
        [0.0, 0.5, 1.0, 2.0, 2.0]
        >>> kl_weight(config, 1, fraction=0.5)  # half-way through the first epoch
        0.25
        >>> kl_weight(TrainConfig(beta=2.0), 1)  # no warm-up
        2.0
    """
    if config.kl_warmup <= 0:
        return config.beta
    t = max(0.0, epoch - 1 + fraction)
    return config.beta * min(1.0, t / config.kl_warmup)


def iwae_terms(
    model: nn.Module, x: Tensor, config: TrainConfig, weight: float | Tensor
) -> LossTerms:
    """-L_K per example, L_K = log (1/K) sum_k w_k, log w_k = log p(x|z_k) + weight *
    (log p(z_k) - log q(z_k|x)), z_k ~ q(z|x) (always sampled, also in eval mode).

    ``recon`` and ``kl`` report the ELBO's parts (recon averaged over the K samples, the KL
    in closed form), so loss <= recon + kl when weight = 1."""
    K = config.iw_k
    mu, logvar = _float32(*model.encode(x))  # (B, d) each
    eps = torch.randn((K, *mu.shape), dtype=mu.dtype, device=mu.device)
    z = reparameterize(mu, logvar, eps)  # (K, B, d)
    logits = model.decode_logits(z.flatten(0, 1))  # (K * B, D)
    rec = neg_log_likelihood(model, logits, x.flatten(1).repeat(K, 1), config).view(K, -1)
    log_w = -rec + weight * (log_standard_normal(z) - log_normal_diag(z, mu, logvar))  # (K, B)
    return LossTerms(-iwae_bound(log_w), rec.mean(0), gaussian_kl(mu, logvar))


def _float32(mu: Tensor, logvar: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The posterior's statistics in float32 (a no-op unless bf16 autocast made them), so
    the KL and the importance weights keep float32 precision."""
    return mu.float(), None if logvar is None else logvar.float()


def objective_terms(
    model: nn.Module, x: Tensor, config: TrainConfig, weight: float | Tensor
) -> LossTerms:
    """Per-example loss terms of the run's objective for a batch ``x``, with KL weight
    ``weight``. For the ELBO, z is sampled in train mode and is mu in eval mode."""
    if config.objective == "iwae":
        return iwae_terms(model, x, config, weight)
    mu, logvar = _float32(*model.encode(x))
    logits = model.decode_logits(model.reparameterize(mu, logvar))
    return elbo_terms(model, logits.float(), x, mu, logvar, config, weight)


def training_loss(
    model: nn.Module, x: Tensor, config: TrainConfig, epoch: int, fraction: float = 0.0
) -> LossTerms:
    """Per-example loss terms for a batch ``x`` at step ``fraction`` of ``epoch`` (the KL
    weight follows the warm-up schedule, ``kl_weight``)."""
    return objective_terms(model, x, config, kl_weight(config, epoch, fraction))
