"""The model interface: the parts each model owns, and the defaults most models share.

The bounds (``vaelab.objectives``), the evaluation, the figures, the trainer's test loss
and the explorer call only these methods, so a new prior, a second stochastic layer or a
label input is a model file and a registry line, not an edit across the library (the
shape of Tomczak & Welling's VampPrior code, where each model owns ``log_p_z``).

A model maps x (B, *input_shape) to a latent z (B, d) and back. It must define

    encode(x) -> (mu, logvar)       q(z|x) = N(mu, diag(exp(logvar))); logvar is None for a
                                    plain autoencoder (a point, no posterior)
    decode_logits(z) -> (B, D)      the decoder's raw output, D = prod(input_shape)

A conditional model (``n_classes`` = K > 0, ``vaelab train --condition label``) takes the
labels (B,) int64 as a second argument of both, encode(x, labels) and decode_logits(z,
labels): q(z|x, y) and p(x|z, y), y one-hot (Sohn, Lee & Yan 2015, "Learning Structured Output
Representation using Deep Conditional Generative Models"; Kingma et al. 2014, M2). The
library passes labels only to a conditional model, through ``posterior`` and ``logits``,
so a model without a label input keeps encode(x) and decode_logits(z).

and inherits, for a diagonal-Gaussian posterior and the prior p(z) = N(0, I):

    sample_prior(n)                 z ~ p(z), (n, d)
    prior_mean()                    E[z] under p(z), (d,): the base code of traversals
    log_prior(z), log_posterior(z, mu, logvar)      log p(z), log q(z|x), summed over d
    kl(mu, logvar), kl_per_dim      KL(q(z|x) || p(z)) per example, and per dimension
    log_weights(x, posterior, S)    the S importance samples' log p(x|z), log p(z), log q(z|x)
    neg_log_likelihood(logits, x)   -log p(x|z) under the run's likelihood
    decode(z)                       E[x|z], the image shown
    posterior(x, labels), logits(z, labels)   encode and decode_logits, with the labels of
                                    a conditional model (None: an unconditional one)
    one_hot(labels, like)           the labels as one-hot rows (B, K); None if unconditional
    with_label(h, labels)           h (B, n) with the one-hot labels appended, (B, n + K)

Every method that decodes or encodes takes ``labels=None`` as well.

    init_output_bias(pixel_mean)    start the logits at the data's mean image (``vaelab
                                    train --output-bias-init``, Burda et al.'s code)

The prior is pluggable: ``build_model`` (``--prior mog|vamp``) attaches a learned prior
module from ``vaelab.models.priors`` as ``self.prior`` (``learned_prior``), and the prior
methods above delegate to it: ``sample_prior``, ``prior_mean`` (the mixture's mean
sum_k pi_k m_k), ``log_prior`` (the mixture's density) and ``kl``, which has no closed form
against a mixture and is the one-sample estimate log q(z|x) - log p(z) at the z the
decoder saw (``closed_form_kl`` is False). ``kl_per_dim`` is not defined for such a prior
(a mixture does not factorise over the dimensions) and raises; the figures then rank the
dimensions by the variance of the posterior means instead. With no prior module the
lecture's N(0, I) closed forms run, bit for bit as before. A model whose own prior is not
N(0, I) may instead override ``sample_prior``, ``prior_mean``, ``log_prior`` and ``kl``.

One with more stochastic layers (``stochastic_layers`` > 1, e.g.
``vaelab.models.vae_2l``) overrides ``log_weights`` (every layer's densities, with
``log_prior`` for its top latent) and ``own_negative_elbo`` (its ELBO), and exposes its
top latent through ``encode`` and ``decode_logits`` for the figures; its ``kl(mu,
logvar)`` is the top latent's only, so the bounds report the sampled log q - log p as its
KL instead. ``log_weights(..., detach_posterior=True)`` is what the DReG estimator needs
(``vaelab.objectives.iwae_dreg_terms``); an override without that keyword makes
``--estimator dreg`` a setting error for its model.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor, nn

from vaelab.errors import VaelabError
from vaelab.losses import (
    LossTerms,
    decoder_mean,
    gaussian_kl_per_dim,
    likelihood_nll,
    log_normal_diag,
    log_standard_normal,
    reparameterize,
)
from vaelab.models.priors import Mixture, mixture_log_density, mixture_mean, sample_mixture

# exp(LOGVAR_MAX) = 4.9e8 and exp(LOGVAR_MIN) = 9e-14 stay finite in float32 and bfloat16.
LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0
LOG_SIGMA_MIN = math.log(1e-3)  # a learned Gaussian scale stops here, not at 0 (-log p = -inf)


class LogWeights(NamedTuple):
    """The parts of S importance weights per example, each (S, B):
    log w = log p(x|z) + log p(z) - log q(z|x), z ~ q(z|x); and ``z`` (S, B, d), the
    samples themselves, where the model gives them (the DReG estimator hooks their
    gradient)."""

    log_px_given_z: Tensor
    log_pz: Tensor
    log_qz: Tensor
    z: Tensor | None = None


class LatentModel(nn.Module):
    """Base class of every registered model (see the module docstring)."""

    stochastic = True  # False: a plain autoencoder, with no posterior variance and no KL
    latent_dim: int
    # p(x|z), set by build_model from the run's config: bernoulli | continuous-bernoulli |
    # gaussian | mse; not a weight and not in the checkpoint's model settings.
    likelihood: str = "bernoulli"
    gaussian_sigma: float | str | None = None  # gaussian: a fixed sigma or "learned"
    log_sigma: nn.Parameter | None  # the learned Gaussian scale (None unless learn_sigma)
    n_classes: int = 0  # K > 0: a conditional model, whose encoder and decoder take labels
    # > 1: a hierarchy; log_weights and own_negative_elbo see every layer, kl() the top only
    stochastic_layers: int = 1
    _held_mixture: Mixture | None = None  # the prior's components inside held_prior()

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        raise NotImplementedError

    # ------------------------------------------------------- labels (conditional models)
    @property
    def conditional(self) -> bool:
        return self.n_classes > 0

    def posterior(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """``encode(x)``, or ``encode(x, labels)`` for a conditional model: (mu, logvar)."""
        return self.encode(x) if labels is None else self.encode(x, labels)

    def logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """``decode_logits(z)``, or ``decode_logits(z, labels)`` for a conditional model."""
        return self.decode_logits(z) if labels is None else self.decode_logits(z, labels)

    def one_hot(self, labels: Tensor | None, like: Tensor) -> Tensor | None:
        """The labels (B,) as one-hot rows (B, K) in ``like``'s dtype and device (K =
        ``n_classes``); None for an unconditional model, which takes no labels. Float
        labels (B, K) are rows of class weights, used as they are (an interpolation
        between two classes mixes their one-hot rows)."""
        if not self.conditional:
            if labels is not None:
                raise VaelabError("this model is not conditional: it takes no labels")
            return None
        if labels is None:
            raise VaelabError(
                f"this model is conditional: pass labels, int64 (B,) in 0..{self.n_classes - 1}"
            )
        if labels.is_floating_point():  # (B, K) class weights, e.g. between two labels
            return labels.to(like)
        # scatter, not F.one_hot: no host sync on a GPU; a label outside 0..K-1 still fails
        out = like.new_zeros(len(labels), self.n_classes)
        return out.scatter_(1, labels.long().view(-1, 1).to(out.device), 1.0)

    def with_label(self, h: Tensor, labels: Tensor | None) -> Tensor:
        """h (B, n) with the labels (B,) appended as one-hot rows: (B, n + K); h itself for
        an unconditional model."""
        one_hot = self.one_hot(labels, h)
        return h if one_hot is None else torch.cat([h, one_hot], dim=1)

    # ------------------------------------------------------------------ the prior p(z)
    @property
    def learned_prior(self) -> nn.Module | None:
        """The learned prior module (``vaelab.models.priors``: ``--prior mog`` or
        ``vamp``), registered as ``self.prior`` by ``build_model``; None for N(0, I)."""
        return self._modules.get("prior")

    @property
    def closed_form_kl(self) -> bool:
        """True when the KL against the prior has a closed form (and one term per
        dimension): the lecture's N(0, I). False for a learned mixture prior."""
        return self.learned_prior is None

    def prior_mixture(self) -> Mixture:
        """The learned prior's components (means, log-variances, log-weights); the
        VampPrior's come from this model's encoder at its pseudo-inputs."""
        prior = self.learned_prior
        if prior is None:
            raise VaelabError("this model's prior is N(0, I), not a mixture")
        return prior.mixture(self.encode)

    def sample_prior(
        self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        """n latents z ~ p(z), (n, d) on the CPU, at temperature T: z = T * eps, eps ~
        N(0, I) for N(0, I); for a mixture, a component, then its mean + T * its noise
        (``vaelab.models.priors.sample_mixture``)."""
        if self.learned_prior is None:
            return temperature * torch.randn(n, self.latent_dim, generator=generator)
        with torch.no_grad():
            mixture = self.prior_mixture()
        return sample_mixture(n, mixture, generator, temperature)

    def prior_mean(self) -> Tensor:
        """E[z] under p(z), (d,) on the CPU: zeros for N(0, I); a mixture's mean
        sum_k pi_k m_k (the base code of traversals and the live panel's centre; with
        well-separated components it may itself decode to no digit)."""
        if self.learned_prior is None:
            return torch.zeros(self.latent_dim)
        with torch.no_grad():
            return mixture_mean(self.prior_mixture()).float().cpu()

    def log_prior(self, z: Tensor) -> Tensor:
        """log p(z), summed over the last dimension: log N(z; 0, I), or the learned
        mixture's log-density (``vaelab.models.priors.mixture_log_density``)."""
        if self.learned_prior is None:
            return log_standard_normal(z)
        mixture = self._held_mixture
        return mixture_log_density(z, self.prior_mixture() if mixture is None else mixture)

    @contextmanager
    def held_prior(self) -> Iterator[None]:
        """Inside, ``log_prior`` uses the learned prior's components as they are on entry
        instead of recomputing them each call: for scoring with frozen weights (a K = 5000
        evaluation would otherwise encode the VampPrior's pseudo-inputs again for every
        chunk of samples: about 13% more arithmetic for the ``vamp`` preset, by the FLOP
        count). Gradients do not flow through held components; for N(0, I) it does
        nothing."""
        if self.learned_prior is None:
            yield
            return
        with torch.no_grad():
            self._held_mixture = self.prior_mixture()
        try:
            yield
        finally:
            self._held_mixture = None

    # ------------------------------------------------------------- the posterior q(z|x)
    def reparameterize(self, mu: Tensor, logvar: Tensor | None) -> Tensor:
        """A sample z ~ q(z|x) while training; the mean mu in eval mode (lecture 3) and
        always for a plain autoencoder."""
        if logvar is None or not self.training:
            return mu
        return reparameterize(mu, logvar)

    def log_posterior(self, z: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
        """log q(z|x) = log N(z; mu, diag(exp(logvar))), summed over the last dimension."""
        return log_normal_diag(z, mu, logvar)

    def kl(self, mu: Tensor, logvar: Tensor | None, z: Tensor | None = None) -> Tensor:
        """KL(q(z|x) || p(z)) per example, (B,): closed form for N(0, I); 0 for a plain
        autoencoder. A learned prior has no closed form: the one-sample estimate
        log q(z|x) - log p(z) at ``z``, the sample the decoder saw while training; with
        no ``z``, or in eval mode (where the decoder sees z = mu, not a draw from q), at a
        fresh draw z ~ q(z|x)."""
        if logvar is None:
            return torch.zeros(mu.shape[0], dtype=mu.dtype, device=mu.device)
        if self.closed_form_kl:
            return self.kl_per_dim(mu, logvar).sum(dim=-1)
        if z is None or not self.training:
            z = reparameterize(mu, logvar)
        return self.log_posterior(z, mu, logvar) - self.log_prior(z)

    def kl_per_dim(self, mu: Tensor, logvar: Tensor) -> Tensor:
        """The KL's term of each latent dimension, (B, d): closed form against N(0, I).
        Not defined against a learned mixture prior, which does not factorise over the
        dimensions: a VaelabError (check ``closed_form_kl`` first)."""
        if not self.closed_form_kl:
            raise VaelabError(
                f"KL per latent dimension is not defined for {self.learned_prior.describe()}"
                ": a mixture does not factorise over the dimensions (the whole KL is "
                "estimated by sampling)"
            )
        return gaussian_kl_per_dim(mu, logvar)

    def log_weights(
        self,
        x: Tensor,
        posterior: tuple[Tensor, Tensor],
        samples: int,
        generator: torch.Generator | None = None,
        labels: Tensor | None = None,
        detach_posterior: bool = False,
    ) -> LogWeights:
        """S = ``samples`` draws z_s ~ q(z|x) for each row of ``x`` (B, ...), given its
        ``posterior`` = ``encode(x)`` (``encode(x, labels)`` for a conditional model), the
        parts of their log importance weights, and the draws z (S, B, d).

        ``detach_posterior``: log q(z|x) evaluated with the posterior's parameters
        stopped (mu and logvar detached), so its gradient reaches the encoder only through
        z (the path derivative). The values are the same; the DReG estimator needs it."""
        mu, logvar = posterior  # (B, d) each
        eps = torch.randn(
            (samples, *mu.shape), dtype=mu.dtype, device=mu.device, generator=generator
        )
        z = reparameterize(mu, logvar, eps)  # (S, B, d)
        repeated = None if labels is None else labels.repeat(samples)  # (S * B,), as z's rows
        logits = self.logits(z.flatten(0, 1), repeated)  # (S * B, D)
        targets = x.flatten(1).repeat(samples, 1)  # (S * B, D)
        log_px = -self.neg_log_likelihood(logits, targets).view(samples, -1)
        if detach_posterior:
            mu, logvar = mu.detach(), logvar.detach()
        return LogWeights(log_px, self.log_prior(z), self.log_posterior(z, mu, logvar), z)

    # ----------------------------------------------------------------- the decoder p(x|z)
    def neg_log_likelihood(self, logits: Tensor, x: Tensor) -> Tensor:
        """-log p(x|z) per example, logits (N, D), x (N, D) -> (N,), under ``likelihood``:
        ``vaelab.losses.likelihood_nll`` with the fixed or learned Gaussian scale."""
        return likelihood_nll(logits, x, self.likelihood, self.decoder_log_sigma())

    def decoder_log_sigma(self) -> Tensor | float:
        """log sigma of a Gaussian p(x|z): the learned scale (floored at 1e-3) or the fixed
        one; 0 (unused) for the other likelihoods."""
        learned = getattr(self, "log_sigma", None)
        if learned is not None:
            return learned.clamp(min=LOG_SIGMA_MIN)
        if isinstance(self.gaussian_sigma, (int, float)):
            return math.log(self.gaussian_sigma)
        return 0.0

    def own_negative_elbo(
        self, x: Tensor, weight: float | Tensor = 1.0, labels: Tensor | None = None
    ) -> LossTerms | None:
        """The per-example -ELBO terms of a model whose ELBO is not the one-latent
        -log p(x|z) + weight * KL(q(z|x) || p(z)) (two stochastic layers); None, the
        default: ``vaelab.objectives`` computes that one-latent ELBO."""
        return None

    def output_bias(self) -> Tensor:
        """The bias of the layer that makes the logits: the last layer of ``decoder``
        with one (the MLP's Linear(h, D), the conv decoder's last transposed convolution,
        one bias per channel). A model without ``decoder`` overrides this."""
        decoder = getattr(self, "decoder", None)
        biases = [] if decoder is None else [
            m.bias for m in decoder.modules() if isinstance(getattr(m, "bias", None), Tensor)
        ]  # fmt: skip
        if not biases:
            raise VaelabError(f"{type(self).__name__} has no output bias to initialise")
        return biases[-1]

    @torch.no_grad()
    def init_output_bias(self, pixel_mean: Tensor, eps: float = 1e-3) -> None:
        """Set the output bias b = log(p / (1 - p)), so that sigmoid(b) = p, the mean
        training pixel: the untrained decoder then draws the data's mean image (Burda et
        al.'s code, which clips p to [0.001, 0.999] = [eps, 1 - eps] as here).
        ``pixel_mean``: (D,) or (*input_shape), each pixel's mean; a bias with one entry per
        channel (a conv decoder) takes its channel's mean."""
        bias = self.output_bias()
        p = pixel_mean.detach().double().flatten().cpu()
        if p.numel() != bias.numel():  # (C * H * W,) -> (C,): one bias per channel
            p = p.view(bias.numel(), -1).mean(dim=1)
        bias.copy_(torch.logit(p.clamp(eps, 1 - eps)).to(bias))

    def decode(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z: (B, d) -> the mean E[x|z] of p(x|z), (B, D): what is shown as the image
        (E[x|z, y] with the labels (B,) of a conditional model)."""
        return decoder_mean(self.logits(z, labels), self.likelihood)

    def forward(
        self, x: Tensor, labels: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """x (and labels) -> (x_hat (B, D), mu (B, d), logvar (B, d) or None)."""
        mu, logvar = self.posterior(x, labels)
        return self.decode(self.reparameterize(mu, logvar), labels), mu, logvar
