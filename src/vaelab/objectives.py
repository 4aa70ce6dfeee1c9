"""Training objectives over the model interface (``vaelab.models.base``), per example.

- ``elbo_terms``: the negative ELBO, -log p(x|z) + w * KL(q(z|x) || p(z)) with one
  z ~ q(z|x) in train mode and z = mu in eval mode, the lecture's test loss (Kingma &
  Welling 2014); w = beta, or annealed from 0 to beta over ``kl_warmup`` epochs (Bowman et
  al. 2016, "Generating sentences from a continuous space",
  https://arxiv.org/abs/1511.06349), ``kl_weight``.
- ``iwae_terms``: the negative importance-weighted bound with K samples (Burda, Grosse &
  Salakhutdinov 2015, https://arxiv.org/abs/1509.00519); K = 1 is the ELBO with a sampled
  KL.
- ``iwae_dreg_terms``: the same -L_K, with the doubly reparameterised gradient (DReG;
  Tucker, Lawson, Gu & Maddison 2018, "Doubly Reparameterized Gradient Estimators for
  Monte Carlo Objectives", https://arxiv.org/abs/1810.04152), ``--estimator dreg``.

Each model supplies -log p(x|z), the KL and the importance weights' parts, so these
functions never change when a model, a prior or a likelihood is added. The trainer calls
``objective_terms``, which picks the run's objective. ``labels`` (B,) go to a conditional
model (q(z|x, y), p(x|z, y)) and are None for the others.
"""

from __future__ import annotations

import torch
from torch import Generator, Tensor

from vaelab.config import TrainConfig
from vaelab.errors import SettingError
from vaelab.losses import LossTerms, iwae_bound
from vaelab.models.base import LatentModel, LogWeights
from vaelab.setting_values import share_of_run


def negative_elbo(
    model: LatentModel,
    x: Tensor,
    z: Tensor,
    posterior: tuple[Tensor, Tensor | None],
    logits: Tensor,
    weight: float | Tensor = 1.0,
) -> LossTerms:
    """-ELBO = -log p(x|z) + weight * KL(q(z|x) || p(z)) per example, given the decoder's
    ``logits`` at the latent ``z`` drawn from ``posterior`` = (mu, logvar); a plain
    autoencoder (logvar None) has no KL term. A model with an ELBO of its own (two
    stochastic layers: ``LatentModel.own_negative_elbo``) gives its terms instead."""
    own = model.own_negative_elbo(x, weight)
    if own is not None:
        return own
    rec = model.neg_log_likelihood(logits, x.flatten(1))
    kl = model.kl(*posterior, z=z)
    return LossTerms(rec + weight * kl, rec, kl)


def elbo_terms(
    model: LatentModel, x: Tensor, weight: float | Tensor = 1.0, labels: Tensor | None = None
) -> LossTerms:
    """The negative ELBO of a batch ``x``: z sampled in train mode, z = mu in eval mode
    (a model with more stochastic layers: its ``own_negative_elbo``)."""
    own = model.own_negative_elbo(x, weight, labels)
    if own is not None:
        return own
    posterior = _float32(*model.posterior(x, labels))
    z = model.reparameterize(*posterior)
    return negative_elbo(model, x, z, posterior, model.logits(z, labels).float(), weight)


def iwae_terms(
    model: LatentModel,
    x: Tensor,
    k: int,
    weight: float | Tensor = 1.0,
    labels: Tensor | None = None,
) -> LossTerms:
    """-L_K per example, L_K = log (1/K) sum_k w_k, log w_k = log p(x|z_k) + weight *
    (log p(z_k) - log q(z_k|x)), z_k ~ q(z|x) (always sampled, also in eval mode).

    ``recon`` and ``kl`` report the ELBO's parts (recon averaged over the K samples, the KL
    as the model gives it, or for several stochastic layers log q - log p averaged over the
    K samples), so loss <= recon + kl when weight = 1."""
    # several stochastic layers draw their own posteriors inside log_weights
    posterior = _float32(*model.posterior(x, labels)) if model.stochastic_layers == 1 else None
    parts = log_weights(model, x, posterior, k, labels=labels)  # (K, B) each
    log_w = parts.log_px_given_z + weight * (parts.log_pz - parts.log_qz)
    return LossTerms(
        -iwae_bound(log_w), -parts.log_px_given_z.mean(0), _kl(model, posterior, parts)
    )


def iwae_dreg_terms(
    model: LatentModel,
    x: Tensor,
    k: int,
    weight: float | Tensor = 1.0,
    labels: Tensor | None = None,
) -> LossTerms:
    """``iwae_terms``' -L_K (the same value, the same ``recon`` and ``kl``) as a surrogate
    whose gradient is DReG (Tucker et al. 2018, eq. 7): with w~_k = w_k / sum_j w_j,

        encoder phi:          sum_k w~_k^2 (d log w_k / d z_k) (d z_k / d phi)
        decoder, prior theta: sum_k w~_k (d log w_k / d theta)

    instead of the standard estimator's sum_k w~_k (d log w_k / d phi), whose score term
    -w~_k d log q(z_k|x) / d phi is noisy and, as K grows, drowns the signal (Rainforth et
    al. 2018). How: log q(z|x) is evaluated with mu and logvar stopped
    (``log_weights(..., detach_posterior=True)``), so the encoder's gradient flows only
    through the samples z_k, and a hook multiplies the gradient arriving at z_k by
    ((1 - weight) + weight * w~_k): at weight 1 that turns w~_k into w~_k^2. The general
    factor keeps the estimator unbiased under a KL weight (``kl_weight``): the score term
    it replaces is weight * w~_k d log q / d phi. A learned prior's own parameters (the
    VampPrior's pseudo-inputs, read through the encoder) enter log w_k directly, not
    through z_k, so they keep w~_k, as the decoder does."""
    posterior = _float32(*model.posterior(x, labels))  # (B, d) each
    parts = log_weights(model, x, posterior, k, labels=labels, detach_posterior=True)
    if parts.z is None:
        raise SettingError(
            "{estimator} dreg needs the importance samples z from log_weights; this model "
            "does not return them"
        )
    log_w = parts.log_px_given_z + weight * (parts.log_pz - parts.log_qz)  # (K, B)
    if parts.z.requires_grad:
        normalised = torch.softmax(log_w.detach(), dim=0)  # w~_k, (K, B)
        path_scale = ((1 - weight) + weight * normalised).unsqueeze(-1)  # (K, B, 1)
        parts.z.register_hook(lambda grad: grad * path_scale)
    return LossTerms(
        -iwae_bound(log_w), -parts.log_px_given_z.mean(0), _kl(model, posterior, parts)
    )


def _kl(model: LatentModel, posterior: tuple[Tensor, Tensor] | None, parts: LogWeights) -> Tensor:
    """The KL an IWAE step reports: the model's (closed form against N(0, I)); against a
    learned prior, the mean of log q(z_k|x) - log p(z_k) over the K samples already drawn
    (no extra pass through the VampPrior's pseudo-inputs)."""
    if model.closed_form_kl and model.stochastic_layers == 1:
        return model.kl(*posterior)
    return (parts.log_qz - parts.log_pz).mean(0).detach()


def objective_terms(
    model: LatentModel,
    x: Tensor,
    config: TrainConfig,
    weight: float | Tensor,
    labels: Tensor | None = None,
) -> LossTerms:
    """Per-example loss terms of the run's objective (``config.objective``) for a batch
    ``x`` (with its ``labels`` for a conditional model), with KL weight ``weight``."""
    if config.objective == "iwae" and getattr(config, "estimator", "standard") == "dreg":
        return iwae_dreg_terms(model, x, config.iw_k, weight, labels)
    if config.objective == "iwae":
        return iwae_terms(model, x, config.iw_k, weight, labels)
    return elbo_terms(model, x, weight, labels)


def log_weights(
    model: LatentModel,
    x: Tensor,
    posterior: tuple[Tensor, Tensor],
    samples: int,
    generator: Generator | None = None,
    labels: Tensor | None = None,
    detach_posterior: bool = False,
) -> LogWeights:
    """``model.log_weights``, given the labels only when there are some and
    ``detach_posterior`` only when asked for: a model that overrides it without a label
    input (or without the DReG keyword) keeps working."""
    extra = {"detach_posterior": True} if detach_posterior else {}
    if labels is None:
        return model.log_weights(x, posterior, samples, generator, **extra)
    return model.log_weights(x, posterior, samples, generator, labels=labels, **extra)


def kl_weight(
    config: TrainConfig, epoch: int, fraction: float = 0.0, progress: float | None = None
) -> float:
    """The KL term's weight at step ``fraction`` (in [0, 1)) of training epoch ``epoch``
    (1-based): beta * min(1, t / kl_warmup) with t = epoch - 1 + fraction the epochs of
    training done, so the weight rises step by step from 0 to beta; beta when no warm-up.
    A warm-up given as a share of the run ("P%") compares the share of training done
    with it instead: ``progress`` (under --time-budget, the share of the budget spent),
    else t / epochs.

    Examples:
        >>> config = TrainConfig(beta=2.0, kl_warmup=4)
        >>> [kl_weight(config, epoch) for epoch in (1, 2, 3, 5, 9)]  # start of each epoch
        [0.0, 0.5, 1.0, 2.0, 2.0]
        >>> kl_weight(config, 1, fraction=0.5)  # half-way through the first epoch
        0.25
        >>> kl_weight(TrainConfig(beta=2.0), 1)  # no warm-up
        2.0
        >>> kl_weight(TrainConfig(beta=2.0, kl_warmup="50%", epochs=4), 2)  # 1/4 of the run
        1.0
    """
    if isinstance(config.kl_warmup, str):  # a share of the run
        share = share_of_run(config.kl_warmup, config.epochs)
        if share <= 0:
            return config.beta
        if progress is None:
            progress = max(0.0, epoch - 1 + fraction) / config.epochs
        return config.beta * min(1.0, progress / share)
    if config.kl_warmup <= 0:
        return config.beta
    t = max(0.0, epoch - 1 + fraction)
    return config.beta * min(1.0, t / config.kl_warmup)


def _float32(mu: Tensor, logvar: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """The posterior's statistics in float32 (a no-op unless bf16 autocast made them), so
    the KL and the importance weights keep float32 precision."""
    return mu.float(), None if logvar is None else logvar.float()
