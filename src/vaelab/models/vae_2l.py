"""A VAE with two stochastic layers: Burda, Grosse & Salakhutdinov 2015, "Importance
Weighted Autoencoders" (https://arxiv.org/abs/1509.00519), section 5 and Table 1; sizes as
in their code (github.com/yburda/iwae, experiments.py: latent units [100, 50], hidden
units q [[200, 200], [100, 100]], p [[100, 100], [200, 200]], tanh):

    q(z1|x)  = N(m, diag(v))  D  -200-200-> (m, log v) of d1 = ``z1_dim`` = 100
    q(z2|z1) = N(m, diag(v))  d1 -100-100-> (m, log v) of d2 = ``latent_dim`` = 50
    p(z2)    = the model's prior (``log_prior``, ``sample_prior``: N(0, I) by default)
    p(z1|z2) = N(m, diag(v))  d2 -100-100-> (m, log v) of d1
    p(x|z1)  = the run's likelihood (Bernoulli) from d1 -200-200-> D logits

with ``activation`` after every hidden layer. ``hidden`` sizes the x-side networks,
``z_hidden`` the z-side ones (default: as many layers of ``z1_dim`` units as ``hidden``
has, the paper's 100-100). Each Gaussian is one Linear head giving its mean and
log-variance; the paper's code has sigma = exp(Linear(h)), the same family (log sigma =
log v / 2 is linear in h). Weights are PyTorch's default initialisation, not the paper's
Glorot-uniform.

log w = log p(x|z1) + log p(z1|z2) + log p(z2) - log q(z1|x) - log q(z2|z1),
z1 ~ q(z1|x), z2 ~ q(z2|z1)  (``log_weights``: the IWAE bound and ``vaelab evaluate``'s
importance-sampled NLL average exp(log w) over K samples).

The ELBO (``own_negative_elbo``): in training one sample's -log w, as in Burda et al.'s
VAE, whose KL part log q - log p is then a sampled estimate; in eval mode (the test loss)
the lecture's "z = mean" loss, deterministic:
-log p(x|z1 = m1) + KL(q(z1|x) || p(z1|z2 = m2)) + KL(q(z2|z1 = m1) || p(z2)), m1 and m2
the posterior means, each KL in closed form (the top one the prior's ``kl``).

The figures, the explorer and the active units see the top latent z2: ``encode(x)`` is
q(z2|z1 = m1), z1 at its posterior mean (not a sample, so they are deterministic), and
``decode_logits(z2)`` decodes through the mean of p(z1|z2). Labels (--condition label) are
not supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from vaelab.losses import LossTerms, gaussian_kl_diag, log_normal_diag, reparameterize
from vaelab.models.base import LOGVAR_MAX, LOGVAR_MIN, LatentModel, LogWeights
from vaelab.models.vae import MLPSizes, mlp
from vaelab.setting_values import hidden_list


@dataclass
class TwoLayerConfig(MLPSizes):
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 50  # d2, the top latent: the one the figures show
    z1_dim: int = 100  # d1, the lower latent
    hidden: int | list[int] = field(default_factory=lambda: [200, 200])  # x <-> z1
    z_hidden: list[int] | None = None  # z1 <-> z2; None: [z1_dim] * len(hidden)
    activation: str = "tanh"
    learn_sigma: bool = False  # a learned Gaussian decoder scale (--gaussian-sigma learned)

    def __post_init__(self) -> None:
        self.normalise_mlp()
        if self.z_hidden is None:
            self.z_hidden = [self.z1_dim] * len(self.hidden_sizes)
        self.z_hidden = hidden_list(self.z_hidden)


def gaussian_head(stats: Tensor, d: int) -> tuple[Tensor, Tensor]:
    """A network's output (..., 2d) as a diagonal Gaussian's mean and log-variance (..., d)
    each (the first d numbers are the mean), in float32, the log-variance clamped."""
    mean, logvar = stats.float().unflatten(-1, (2, d)).unbind(-2)
    return mean, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)


class TwoLayerVAE(LatentModel):
    """Two stochastic layers x -> z1 -> z2 (see the module docstring)."""

    stochastic_layers = 2

    def __init__(self, config: TwoLayerConfig) -> None:
        super().__init__()
        self.config = config
        D, d1, d2 = config.input_size, config.z1_dim, config.latent_dim
        hx, hz, act = config.hidden_sizes, config.z_hidden, config.activation
        self.latent_dim, self.z1_dim = d2, d1
        self.q_z1 = mlp([D, *hx, 2 * d1], act)  # q(z1|x)
        self.q_z2 = mlp([d1, *hz, 2 * d2], act)  # q(z2|z1)
        self.p_z1 = mlp([d2, *reversed(hz), 2 * d1], act)  # p(z1|z2)
        self.p_x = mlp([d1, *reversed(hx), D], act)  # p(x|z1): logits
        self.log_sigma = nn.Parameter(torch.zeros(())) if config.learn_sigma else None

    # ------------------------------------------------------------- the four conditionals
    def q_z1_given_x(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, *input_shape) or (B, D) -> mean, log-variance of q(z1|x), (B, d1) each."""
        return gaussian_head(self.q_z1(x.flatten(1)), self.z1_dim)

    def q_z2_given_z1(self, z1: Tensor) -> tuple[Tensor, Tensor]:
        """z1 (..., d1) -> mean, log-variance of q(z2|z1), (..., d2) each."""
        return gaussian_head(self.q_z2(z1), self.latent_dim)

    def p_z1_given_z2(self, z2: Tensor) -> tuple[Tensor, Tensor]:
        """z2 (..., d2) -> mean, log-variance of p(z1|z2), (..., d1) each."""
        return gaussian_head(self.p_z1(z2), self.z1_dim)

    def output_bias(self) -> Tensor:
        return self.p_x[-1].bias  # the logits' layer of p(x|z1)

    # ------------------------------------------------- the top latent, for the figures
    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x -> mean, log-variance of q(z2|z1 = E[z1|x]), (B, d2) each."""
        self.one_hot(labels, x)  # refuses labels: this model takes none
        mean_z1, _ = self.q_z1_given_x(x)
        return self.q_z2_given_z1(mean_z1)

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z2 (B, d2) -> logits (B, D) of p(x|z1 = E[z1|z2])."""
        self.one_hot(labels, z)
        mean_z1, _ = self.p_z1_given_z2(z)
        return self.p_x(mean_z1)

    # ---------------------------------------------------------------------- the bounds
    def log_weights(
        self,
        x: Tensor,
        posterior: tuple[Tensor, Tensor] | None,
        samples: int,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
    ) -> LogWeights:
        """S = ``samples`` draws z1 ~ q(z1|x), then z2 ~ q(z2|z1) for each, and the parts
        of log w, each (S, B): log p(x|z1); log p(z1|z2) + log p(z2); log q(z1|x) +
        log q(z2|z1). ``posterior`` (the top latent's, from ``encode``) is not used: z2 is
        drawn given each sample of z1."""
        self.one_hot(labels, x)
        flat = x.flatten(1)  # (B, D)
        mean1, logvar1 = self.q_z1_given_x(flat)  # (B, d1) each
        z1 = reparameterize(mean1, logvar1, self._noise((samples, *mean1.shape), generator))
        mean2, logvar2 = self.q_z2_given_z1(z1)  # (S, B, d2) each
        z2 = reparameterize(mean2, logvar2, self._noise(mean2.shape, generator))
        prior_mean1, prior_logvar1 = self.p_z1_given_z2(z2)  # (S, B, d1) each
        logits = self.p_x(z1.flatten(0, 1)).float()  # (S * B, D)
        log_px = -self.neg_log_likelihood(logits, flat.repeat(samples, 1)).view(samples, -1)
        log_pz = log_normal_diag(z1, prior_mean1, prior_logvar1) + self.log_prior(z2)
        log_qz = log_normal_diag(z1, mean1, logvar1) + log_normal_diag(z2, mean2, logvar2)
        return LogWeights(log_px, log_pz, log_qz)

    def _noise(self, shape: torch.Size | tuple[int, ...], generator: torch.Generator | None):
        """eps ~ N(0, I) of ``shape`` on the model's device, in float32."""
        device = next(self.parameters()).device
        return torch.randn(shape, device=device, generator=generator)

    def own_negative_elbo(
        self, x: Tensor, weight: float | Tensor = 1.0, labels: Tensor | None = None
    ) -> LossTerms:
        """-ELBO = recon + weight * kl per example: one sample of -log w in training (kl =
        log q(z1, z2|x) - log p(z1, z2), sampled); the means and closed-form KLs in eval
        mode (see the module docstring)."""
        if self.training:
            parts = self.log_weights(x, None, 1, labels=labels)
            recon = -parts.log_px_given_z[0]
            kl = (parts.log_qz - parts.log_pz)[0]
        else:
            self.one_hot(labels, x)
            mean1, logvar1 = self.q_z1_given_x(x)
            mean2, logvar2 = self.q_z2_given_z1(mean1)
            prior_mean1, prior_logvar1 = self.p_z1_given_z2(mean2)
            recon = self.neg_log_likelihood(self.p_x(mean1).float(), x.flatten(1))
            kl_z1 = gaussian_kl_diag(mean1, logvar1, prior_mean1, prior_logvar1)
            kl = kl_z1 + self.kl(mean2, logvar2, z=mean2)
        return LossTerms(recon + weight * kl, recon, kl)
