"""Training objectives over the model interface (``vaelab.models.base``), per example.

- ``elbo_terms``: the negative ELBO, -log p(x|z) + w * KL(q(z|x) || p(z)) with one
  z ~ q(z|x) in train mode and z = mu in eval mode, the lecture's test loss (Kingma &
  Welling 2014); w = beta, or annealed from 0 to beta over ``kl_warmup`` epochs (Bowman et
  al. 2016, "Generating sentences from a continuous space",
  https://arxiv.org/abs/1511.06349), ``kl_weight``.
- ``iwae_terms``: the negative importance-weighted bound with K samples (Burda, Grosse &
  Salakhutdinov 2015, https://arxiv.org/abs/1509.00519); K = 1 is the ELBO with a sampled
  KL.

Each model supplies -log p(x|z), the KL and the importance weights' parts, so these
functions never change when a model, a prior or a likelihood is added. The trainer calls
``objective_terms``, which picks the run's objective. ``labels`` (B,) go to a conditional
model (q(z|x, y), p(x|z, y)) and are None for the others.
"""

from __future__ import annotations

from torch import Generator, Tensor

from vaelab.config import TrainConfig, share_of_run
from vaelab.losses import LossTerms, iwae_bound
from vaelab.models.base import LatentModel, LogWeights


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
    autoencoder (logvar None) has no KL term."""
    rec = model.neg_log_likelihood(logits, x.flatten(1))
    kl = model.kl(*posterior, z=z)
    return LossTerms(rec + weight * kl, rec, kl)


def elbo_terms(
    model: LatentModel, x: Tensor, weight: float | Tensor = 1.0, labels: Tensor | None = None
) -> LossTerms:
    """The negative ELBO of a batch ``x``: z sampled in train mode, z = mu in eval mode."""
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
    as the model gives it), so loss <= recon + kl when weight = 1."""
    posterior = _float32(*model.posterior(x, labels))  # (B, d) each
    parts = log_weights(model, x, posterior, k, labels=labels)  # (K, B) each
    log_w = parts.log_px_given_z + weight * (parts.log_pz - parts.log_qz)
    recon = -parts.log_px_given_z.mean(0)
    return LossTerms(-iwae_bound(log_w), recon, model.kl(*posterior))


def objective_terms(
    model: LatentModel,
    x: Tensor,
    config: TrainConfig,
    weight: float | Tensor,
    labels: Tensor | None = None,
) -> LossTerms:
    """Per-example loss terms of the run's objective (``config.objective``) for a batch
    ``x`` (with its ``labels`` for a conditional model), with KL weight ``weight``."""
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
) -> LogWeights:
    """``model.log_weights``, given the labels only when there are some: a model that
    overrides it without a label input keeps working."""
    if labels is None:
        return model.log_weights(x, posterior, samples, generator)
    return model.log_weights(x, posterior, samples, generator, labels=labels)


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
