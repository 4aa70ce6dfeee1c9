"""Learned priors p(z): a mixture of Gaussians and the VampPrior.

The lecture's prior N(0, I) stays the default and has no module here: ``LatentModel``
keeps its closed forms for it. A learned prior is a mixture of K diagonal Gaussians,

    p(z) = sum_k pi_k N(z; m_k, diag(exp(lv_k))),

and each prior module only says where its components come from (``mixture``); the maths
is the pure functions below, which ``LatentModel`` calls for ``log_prior``,
``sample_prior`` and ``prior_mean``.

- ``MixturePrior`` (``--prior mog --prior-components K``): m_k, lv_k and the weights
  pi = softmax(a) are parameters; m_k starts as a draw from N(0, I), lv_k = 0 and a = 0
  (uniform weights).
- ``VampPrior`` (``--prior vamp --pseudo-inputs K``; Tomczak & Welling 2018, "VAE with a
  VampPrior", https://arxiv.org/abs/1705.07120): the "variational mixture of posteriors"
  p(z) = 1/K sum_k q(z | u_k), the model's own encoder at K learned pseudo-inputs u_k.
  As in the authors' code, u_k = hardtanh(P_k) in [0, 1] (the pixels' range; unclipped
  for a likelihood that does not need [0, 1]) with P ~ N(0.05, 0.01^2) at the start; their
  option of starting from training images is not offered.

The parameters are module parameters, so they sit in the model's state_dict as
``prior.*`` and come back with every checkpoint (resume, evaluate, figures).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vaelab.losses import LOG_2PI
from vaelab.setting_spec import PRIOR_CHOICES  # --prior; "standard" is N(0, I)

# The pseudo-inputs' start, N(mean, std^2) per pixel (Tomczak & Welling's experiments).
PSEUDO_INPUT_MEAN, PSEUDO_INPUT_STD = 0.05, 0.01
# A component's log-variance is clamped like the encoder's (models.base.LOGVAR_MIN/MAX).
COMPONENT_LOGVAR_MIN, COMPONENT_LOGVAR_MAX = -30.0, 20.0


Encoder = Callable[[Tensor], tuple[Tensor, Tensor]]  # x (B, D) -> mu, logvar (B, d) each


class Mixture(NamedTuple):
    """K diagonal Gaussian components: ``means`` and ``logvars`` (K, d), ``log_weights``
    (K,) = log pi_k, with logsumexp_k log pi_k = 0."""

    means: Tensor
    logvars: Tensor
    log_weights: Tensor


# ------------------------------------------------------------------------- the maths
def mixture_log_density(z: Tensor, mixture: Mixture) -> Tensor:
    """log p(z) of a mixture of diagonal Gaussians, over the last dimension of ``z``
    (..., d) -> (...):

        log p(z) = logsumexp_k [log pi_k + log N(z; m_k, diag(exp(lv_k)))],

    with each component's quadratic expanded, p_k = exp(-lv_k), so that all K of them
    are two matrix products rather than a (..., K, d) tensor of differences:

        log N(z; m_k, .) = -0.5 (z^2 . p_k) + z . (m_k p_k)
                           - 0.5 (d log 2 pi + sum_j lv_kj + m_k^2 . p_k).

    The expansion subtracts terms that can be large next to their difference, so it is
    computed in float64 (and returned in z's dtype). Why: an evaluation scores 50 million
    samples (K = 5000 on 10,000 images) against 500 components of 40 dimensions; the
    tensor of differences took about 1 s per 4,096 samples on one core (3.4 hours), the
    float64 matrix products 0.07 s (14 minutes).

    Examples:
        >>> one = Mixture(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1))
        >>> mixture_log_density(torch.zeros(3, 2), one)  # K = 1: N(0, I) at 0, -log 2 pi
        tensor([-1.8379, -1.8379, -1.8379])
        >>> two = Mixture(torch.tensor([[-1.0], [1.0]]), torch.zeros(2, 1),
        ...               torch.full((2,), math.log(0.5)))
        >>> mixture_log_density(torch.zeros(1, 1), two)  # both: -0.5 (log 2 pi + 1)
        tensor([-1.4189])
    """
    z64 = z.double()
    means, logvars, log_weights = (t.double() for t in mixture)
    precisions = torch.exp(-logvars)  # (K, d)
    constant = log_weights - 0.5 * (  # (K,)
        z.shape[-1] * LOG_2PI + logvars.sum(-1) + (means.pow(2) * precisions).sum(-1)
    )
    quadratic = z64 @ (means * precisions).T - 0.5 * (z64.pow(2) @ precisions.T)  # (..., K)
    return torch.logsumexp(quadratic + constant, dim=-1).to(z.dtype)


def sample_mixture(
    n: int,
    mixture: Mixture,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """n draws from the mixture on the CPU, (n, d): a component k ~ Categorical(pi), then

        z = m_k + T * exp(0.5 lv_k) * eps,   eps ~ N(0, I),

    with the temperature T scaling each component's spread (not the distance between
    components; T = 1 samples p(z) itself). ``generator`` is a CPU generator.

    Examples:
        >>> far = Mixture(torch.tensor([[-100.0], [100.0]]), torch.full((2, 1), -20.0),
        ...               torch.log(torch.tensor([0.25, 0.75])))
        >>> z = sample_mixture(4000, far, torch.Generator().manual_seed(0))
        >>> round(float((z > 0).double().mean()), 2)  # the weights pick the components
        0.75
    """
    means, logvars, log_weights = (t.detach().float().cpu() for t in mixture)
    k = torch.multinomial(log_weights.double().exp(), n, replacement=True, generator=generator)
    eps = torch.randn(n, means.shape[1], generator=generator)
    return means[k] + temperature * torch.exp(0.5 * logvars[k]) * eps


def mixture_mean(mixture: Mixture) -> Tensor:
    """E[z] under the mixture, (d,): sum_k pi_k m_k.

    Examples:
        >>> m = Mixture(torch.tensor([[0.0, 2.0], [4.0, 0.0]]), torch.zeros(2, 2),
        ...             torch.log(torch.tensor([0.75, 0.25])))
        >>> mixture_mean(m)
        tensor([1.0000, 1.5000])
    """
    return (mixture.log_weights.exp().unsqueeze(-1) * mixture.means).sum(0)


# ------------------------------------------------------------------------ the modules
class MixturePrior(nn.Module):
    """p(z) = sum_k softmax(a)_k N(z; m_k, diag(exp(lv_k))), every part learned."""

    kind = "mog"

    def __init__(self, components: int, latent_dim: int) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.randn(components, latent_dim))  # (K, d)
        self.logvars = nn.Parameter(torch.zeros(components, latent_dim))  # (K, d)
        self.weight_logits = nn.Parameter(torch.zeros(components))  # (K,): uniform at start

    def mixture(self, encode: Encoder | None = None) -> Mixture:
        """The components; ``encode`` is not needed (the VampPrior's signature)."""
        logvars = self.logvars.clamp(COMPONENT_LOGVAR_MIN, COMPONENT_LOGVAR_MAX)
        return Mixture(self.means, logvars, F.log_softmax(self.weight_logits, dim=0))

    def describe(self) -> str:
        return f"a learned mixture of {len(self.means)} Gaussians"

    def short_name(self) -> str:
        return f"p(z), a mixture of {len(self.means)} Gaussians"


class VampPrior(nn.Module):
    """p(z) = 1/K sum_k q(z | u_k): the encoder's posteriors at K learned pseudo-inputs
    u_k = hardtanh(P_k) (Tomczak & Welling 2018, eq. 9)."""

    kind = "vamp"

    def __init__(self, pseudo_inputs: int, input_size: int, unit_range: bool = True) -> None:
        super().__init__()
        start = torch.randn(pseudo_inputs, input_size) * PSEUDO_INPUT_STD + PSEUDO_INPUT_MEAN
        self.pseudo_inputs = nn.Parameter(start)  # (K, D)
        self.unit_range = unit_range

    def inputs(self) -> Tensor:
        """The pseudo-inputs u_k as the encoder sees them, (K, D)."""
        if self.unit_range:  # hardtanh to [0, 1]: what the pixels of the data can be
            return F.hardtanh(self.pseudo_inputs, 0.0, 1.0)
        return self.pseudo_inputs

    def mixture(self, encode: Encoder) -> Mixture:
        """The components q(z | u_k) = N(mu(u_k), diag(exp(logvar(u_k)))), equal weights;
        ``encode`` is the model's encoder, x -> (mu, logvar)."""
        mu, logvar = encode(self.inputs())  # (K, d) each
        k = len(self.pseudo_inputs)
        log_weights = torch.full((k,), -math.log(k), dtype=torch.float32, device=mu.device)
        return Mixture(mu.float(), logvar.float(), log_weights)

    def describe(self) -> str:
        return f"the VampPrior with {len(self.pseudo_inputs)} pseudo-inputs"

    def short_name(self) -> str:
        return f"p(z), the VampPrior of {len(self.pseudo_inputs)} pseudo-inputs"


def make_prior(
    kind: str | None,
    latent_dim: int,
    input_size: int,
    pseudo_inputs: int | None = None,
    components: int | None = None,
    unit_range: bool = True,
) -> nn.Module | None:
    """The prior module of ``--prior kind`` (None for "standard", N(0, I)); its starting
    values are drawn from torch's global generator."""
    if kind in (None, "standard"):
        return None
    if kind == "mog":
        return MixturePrior(int(components), latent_dim)
    if kind == "vamp":
        return VampPrior(int(pseudo_inputs), input_size, unit_range)
    raise ValueError(f"unknown prior {kind!r}; choose one of {', '.join(PRIOR_CHOICES)}")
