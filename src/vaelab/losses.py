"""The VAE's maths as pure, per-example functions.

Kingma & Welling 2014, "Auto-Encoding Variational Bayes" (https://arxiv.org/abs/1312.6114):
the loss is the negative evidence lower bound,

    -ELBO(x) = E_q(z|x)[-log p(x|z)] + beta * KL(q(z|x) || p(z)),

with q(z|x) = N(mu, diag(exp(logvar))) and p(z) = N(0, I); beta = 1 is the original VAE,
beta != 1 the beta-VAE of Higgins et al. 2017. Every function here returns one value per
example (shape (B,)); callers sum or average.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


def reparameterize(mu: Tensor, logvar: Tensor, eps: Tensor | None = None) -> Tensor:
    """z = mu + eps * sigma, sigma = exp(0.5 * logvar), eps ~ N(0, I).

    The noise is an extra input, so gradients flow to mu and logvar through the sum and
    product (the reparameterisation trick, Kingma & Welling 2014, section 2.4).

    Examples:
        >>> mu, logvar = torch.tensor([[0.0, 1.0]]), torch.tensor([[0.0, 2.0]])
        >>> eps = torch.tensor([[1.0, -1.0]])  # sigma = (1, e)
        >>> reparameterize(mu, logvar, eps)
        tensor([[ 1.0000, -1.7183]])
    """
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + eps * torch.exp(0.5 * logvar)


def gaussian_kl(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag(exp(logvar))) || N(0, I)) per example, in nats.

    KL = 0.5 * sum_j (exp(logvar_j) - logvar_j - 1 + mu_j^2)   (Kingma & Welling,
    appendix B). The term V - log V - 1 is zero only at V = 1; mu^2 pulls means to 0.
    Computed as expm1(logvar) - logvar, which never rounds below zero (exp(lv) - lv - 1
    does, for |lv| near float32's epsilon).

    Examples:
        >>> gaussian_kl(torch.zeros(2, 20), torch.zeros(2, 20))  # q is the prior: 0
        tensor([0., 0.])
        >>> mu, logvar = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
        >>> gaussian_kl(mu, logvar)  # 0.5 * 2^2 + 0.5 * (4 - log 4 - 1)
        tensor([2.8069])
    """
    return gaussian_kl_per_dim(mu, logvar).sum(dim=-1)


def gaussian_kl_per_dim(mu: Tensor, logvar: Tensor) -> Tensor:
    """The KL above without the sum: shape (B, d), one term per latent dimension.

    Examples:
        >>> mu, logvar = torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
        >>> gaussian_kl_per_dim(mu, logvar)  # the prior; mu = 1; variance e
        tensor([[0.0000, 0.5000, 0.3591]])
    """
    return 0.5 * (torch.expm1(logvar) - logvar + mu.pow(2))


def gaussian_kl_diag(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL(N(mu_q, diag(v_q)) || N(mu_p, diag(v_p))) per example, v = exp(logvar), in nats:

    KL = 0.5 * sum_j (logvar_p,j - logvar_q,j + (v_q,j + (mu_q,j - mu_p,j)^2) / v_p,j - 1),

    the KL between two diagonal Gaussians (the prior of a lower latent given the one above
    it, e.g. p(z1|z2) in a two-layer VAE). With mu_p = 0, logvar_p = 0 it is ``gaussian_kl``.

    Examples:
        >>> mu, logvar = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]])
        >>> gaussian_kl_diag(mu, logvar, torch.zeros(1, 2), torch.zeros(1, 2))  # = gaussian_kl
        tensor([2.8069])
        >>> gaussian_kl_diag(mu, logvar, mu, logvar)  # a distribution against itself
        tensor([0.])
    """
    log_ratio = logvar_q - logvar_p  # log(v_q / v_p); expm1 as in gaussian_kl_per_dim
    distance = (mu_q - mu_p).pow(2) * torch.exp(-logvar_p)
    return 0.5 * (torch.expm1(log_ratio) - log_ratio + distance).sum(dim=-1)


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x|z) for pixels x in [0, 1] under Bernoulli(sigmoid(logits)), per example.

    = -sum_i [x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i))], i.e. the lecture's
    binary cross-entropy of sigmoid(logits) summed over pixels, computed from logits
    (log-sum-exp form) so that saturated pixels never give log(0).

    Examples:
        >>> x = torch.tensor([[0.0, 1.0, 0.5, 1.0]])
        >>> bernoulli_nll(torch.zeros(1, 4), x)  # p = 0.5 everywhere: 4 log 2
        tensor([2.7726])
        >>> bernoulli_nll(torch.tensor([[-1000.0, 1000.0]]), torch.tensor([[0.0, 1.0]]))
        tensor([0.])
    """
    return F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)


def half_squared_error(x_hat: Tensor, x: Tensor) -> Tensor:
    """0.5 * sum_i (x_hat_i - x_i)^2 per example: a unit-variance Gaussian's -log p(x|z)
    up to the constant 0.5 * D * log(2 pi), the lecture's (half) MSE option.

    Examples:
        >>> half_squared_error(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2))
        tensor([2.5000])
    """
    return 0.5 * (x_hat - x).pow(2).flatten(1).sum(1)


class LossTerms(NamedTuple):
    """Per-example loss and its parts: loss = recon + beta * kl."""

    loss: Tensor
    recon: Tensor
    kl: Tensor


LOG_2PI = math.log(2 * math.pi)


def log_normal_diag(z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(z; mu, diag(exp(logvar))) summed over the last dimension.

    = -0.5 * sum_j (log 2 pi + logvar_j + (z_j - mu_j)^2 / exp(logvar_j))."""
    return -0.5 * (LOG_2PI + logvar + (z - mu).pow(2) * torch.exp(-logvar)).sum(dim=-1)


def log_standard_normal(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension: -0.5 * sum_j (log 2 pi + z_j^2).

    Examples:
        >>> log_standard_normal(torch.zeros(1, 2))  # -log 2 pi
        tensor([-1.8379])
    """
    return -0.5 * (LOG_2PI + z.pow(2)).sum(dim=-1)


def iwae_bound(log_weights: Tensor) -> Tensor:
    """The importance-weighted bound from K log-weights per example (dim 0 = samples).

    log_w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x), z_k ~ q(z|x);
    L_K = logsumexp_k(log_w_k) - log K  (Burda, Grosse & Salakhutdinov 2015, eq. 8,
    https://arxiv.org/abs/1509.00519). L_1 is the ELBO; L_K rises towards log p(x).

    Examples:
        >>> log_w = torch.tensor([[0.0], [math.log(3.0)]])  # K = 2 weights: 1 and 3
        >>> iwae_bound(log_w)  # log of their mean, log 2
        tensor([0.6931])
        >>> iwae_bound(log_w[:1])  # K = 1: the log-weight itself
        tensor([0.])
    """
    return torch.logsumexp(log_weights, dim=0) - math.log(log_weights.shape[0])


# Likelihoods p(x|z) beyond the lecture's BCE: -log p(x|z) per example from the decoder's
# logits, (N, D) -> (N,). ``likelihood_nll`` dispatches on the name.

LIKELIHOODS = ("bernoulli", "continuous-bernoulli", "gaussian")  # --likelihood's choices
# ``mse`` is the lecture's --recon mse: 0.5 * squared error on sigmoid(logits), a
# unit-variance Gaussian without its constant (TrainConfig maps --recon onto these names).
LIKELIHOOD_NAMES = (*LIKELIHOODS, "mse")
CB_TAYLOR_BAND = 0.02  # |logit| below this (|lambda - 0.5| < 0.005): the Taylor series


def continuous_bernoulli_log_norm(logits: Tensor) -> Tensor:
    """log C(lambda) elementwise, lambda = sigmoid(logits), for the continuous Bernoulli

        p(x | lambda) = C(lambda) * lambda^x * (1 - lambda)^(1 - x),  x in [0, 1],
        C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda),  C(1/2) = 2

    (Loaiza-Ganem & Cunningham 2019, "The continuous Bernoulli: fixing a pervasive error in
    variational autoencoders", https://arxiv.org/abs/1907.06845, eq. 7). With
    artanh(1 - 2 lambda) = -l/2 for l = logit(lambda) this is C = l / tanh(l / 2): no
    1 - 2 lambda cancels. At l = 0 it is 0/0, so in a band |l| < CB_TAYLOR_BAND the series
    log C = log 2 + u^2/3 - 7 u^4/90 + 62 u^6/2835 + O(u^8), u = l/2 (error < 1e-17) is used.

    Examples:
        >>> continuous_bernoulli_log_norm(torch.tensor([0.0, 0.01, 4.0]))  # log 2 at l = 0
        tensor([0.6931, 0.6932, 1.4229])
        >>> math.log(4.0 / math.tanh(2.0))  # the closed form at l = 4
        1.4229...
    """
    a = logits.abs()
    outside = a >= CB_TAYLOR_BAND
    safe = torch.where(outside, a, torch.full_like(a, 1.0))  # no 0/0, not even in the grad
    exact = torch.log(safe) - torch.log(torch.tanh(0.5 * safe))
    u2 = (0.5 * a).pow(2)
    series = math.log(2.0) + u2 * (1.0 / 3.0 + u2 * (-7.0 / 90.0 + u2 * (62.0 / 2835.0)))
    return torch.where(outside, exact, series)


def continuous_bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x|z) for x in [0, 1] under the continuous Bernoulli, per example:

    = sum_i [BCE(l_i, x_i) - log C(sigmoid(l_i))]: the lecture's BCE plus the log-normaliser
    that makes it a density on [0, 1] (Loaiza-Ganem & Cunningham 2019, eq. 7). Note: the
    distribution's mean is not lambda = sigmoid(l) (except at 1/2): see
    ``continuous_bernoulli_mean``, which ``decoder_mean`` (and so ``decode``) returns.
    """
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    return (bce - continuous_bernoulli_log_norm(logits)).flatten(1).sum(1)


def continuous_bernoulli_mean(logits: Tensor) -> Tensor:
    """E[x] of the continuous Bernoulli elementwise, lambda = sigmoid(logits):

        E[x] = lambda / (2 lambda - 1) + 1 / (2 artanh(1 - 2 lambda)),   E[x] = 1/2 at 1/2

    (Loaiza-Ganem & Cunningham 2019, https://arxiv.org/abs/1907.06845). With
    artanh(1 - 2 lambda) = -l/2 for l = logit(lambda) this is E[x] = 1 / (1 - exp(-l)) - 1/l,
    computed with expm1. Near l = 0 the two terms cancel (0/0 at l = 0), so for
    |l| < CB_TAYLOR_BAND the series E[x] = 1/2 + l/12 - l^3/720 + l^5/30240 + O(l^7) is used
    (error < 1e-18). The mean lies between 1/2 and lambda, and E(-l) = 1 - E(l) for
    E(l) = E[x]. Computed in float64 (display only, never in the loss) and returned in the
    dtype of ``logits``.

    Examples:
        >>> continuous_bernoulli_mean(torch.tensor([0.0, 2.0, -2.0]))  # lambda 0.5, 0.88, 0.12
        tensor([0.5000, 0.6565, 0.3435])
        >>> 1 / (1 - math.exp(-2.0)) - 1 / 2.0  # the closed form at l = 2
        0.6565...
    """
    lg = logits.double()
    outside = lg.abs() >= CB_TAYLOR_BAND
    safe = torch.where(outside, lg, torch.ones_like(lg))  # no 0/0, not even in the grad
    exact = -1.0 / torch.expm1(-safe) - 1.0 / safe
    l2 = lg * lg
    series = 0.5 + lg * (1.0 / 12.0 + l2 * (-1.0 / 720.0 + l2 * (1.0 / 30240.0)))
    return torch.where(outside, exact, series).to(logits.dtype)


def decoder_mean(logits: Tensor, likelihood: str | None = None) -> Tensor:
    """The mean E[x|z] of p(x|z) from the decoder's logits: what is shown as the decoded
    image (reconstructions, prior samples, interpolations, the manifold, the explorer).

    - ``None`` (the lecture's ``--recon``: ``bce`` or ``mse``), ``bernoulli``, ``gaussian``:
      sigmoid(logits), the Bernoulli probability or the Gaussian's mean;
    - ``continuous-bernoulli``: E[x] = lambda / (2 lambda - 1) + 1 / (2 artanh(1 - 2 lambda))
      with lambda = sigmoid(logits) (``continuous_bernoulli_mean``), not lambda itself.

    Examples:
        >>> logits = torch.tensor([[-2.0, 0.0, 2.0]])
        >>> decoder_mean(logits)  # Bernoulli: sigmoid
        tensor([[0.1192, 0.5000, 0.8808]])
        >>> decoder_mean(logits, "continuous-bernoulli")  # pulled towards 1/2
        tensor([[0.3435, 0.5000, 0.6565]])
    """
    if likelihood in (None, "bernoulli", "gaussian", "mse"):
        return torch.sigmoid(logits)
    if likelihood == "continuous-bernoulli":
        return continuous_bernoulli_mean(logits)
    raise ValueError(f"unknown likelihood {likelihood!r}")


def gaussian_nll(mean: Tensor, x: Tensor, log_sigma: Tensor | float) -> Tensor:
    """-log N(x; mean, sigma^2 I) per example, with one scale sigma = exp(log_sigma):

    = sum_i [0.5 (x_i - mean_i)^2 / sigma^2 + log sigma + 0.5 log 2 pi], a normalised density
    (at sigma = 1 it is ``half_squared_error`` + 0.5 D log 2 pi). A learned sigma is the
    "calibrated decoder" of Rybkin et al. 2021 (https://arxiv.org/abs/2006.13202).

    Examples:
        >>> x = torch.tensor([[0.0, 1.0]])
        >>> gaussian_nll(x, x, 0.0)  # a perfect mean, sigma = 1: D * 0.5 log 2 pi
        tensor([1.8379])
        >>> zero = torch.zeros(1, 2)  # sigma = 1: half_squared_error + the constant
        >>> gaussian_nll(zero, x, 0.0) - half_squared_error(zero, x)
        tensor([1.8379])
    """
    log_sigma = torch.as_tensor(log_sigma, dtype=mean.dtype, device=mean.device)
    D = mean[0].numel()
    sq = (x - mean).pow(2).flatten(1).sum(1)
    return 0.5 * sq * torch.exp(-2.0 * log_sigma) + D * (log_sigma + 0.5 * LOG_2PI)


def likelihood_nll(
    logits: Tensor, x: Tensor, likelihood: str, log_sigma: Tensor | float = 0.0
) -> Tensor:
    """-log p(x|z) per example for a named likelihood (``LIKELIHOOD_NAMES``); the decoder's
    output is ``logits`` (Bernoulli / continuous-Bernoulli logits, or the Gaussian mean's
    logit: mean = sigmoid(logits), as in the lecture's MSE on the sigmoid output).

    Examples:
        >>> logits, x = torch.zeros(1, 4), torch.ones(1, 4)
        >>> likelihood_nll(logits, x, "bernoulli")  # the lecture's BCE: 4 log 2
        tensor([2.7726])
        >>> likelihood_nll(logits, x, "mse")  # 0.5 * 4 * (1 - 0.5)^2
        tensor([0.5000])
    """
    if likelihood == "bernoulli":
        return bernoulli_nll(logits, x)
    if likelihood == "continuous-bernoulli":
        return continuous_bernoulli_nll(logits, x)
    if likelihood == "gaussian":
        return gaussian_nll(torch.sigmoid(logits), x, log_sigma)
    if likelihood == "mse":
        return half_squared_error(torch.sigmoid(logits), x)
    raise ValueError(f"unknown likelihood {likelihood!r}")
