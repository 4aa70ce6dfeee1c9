"""Model registry: one name -> (config dataclass, model class, one-line summary).

Adding a model adds one file and one line here. Every model subclasses
``vaelab.models.base.LatentModel``: it defines ``encode(x) -> (mu, logvar)`` (``logvar``
is None for a plain autoencoder) and ``decode_logits(z) -> (B, D)``, and inherits (or
overrides) the prior, the posterior's log-density, the KL, the importance weights, the
likelihood and ``decode``, which the trainer, the bounds, the evaluation, the figures and
the explorer call. ``build_model`` attaches the run's learned prior, if any
(``vaelab.models.priors``), so every stochastic model gets it. A model whose config has ``learn_sigma=True`` also holds ``log_sigma``,
the learned scale of a Gaussian decoder (``--likelihood gaussian --gaussian-sigma
learned``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vaelab.errors import VaelabError
from vaelab.models.ae import AE
from vaelab.models.base import LatentModel, LogWeights
from vaelab.models.conv_ae import ConvAE
from vaelab.models.conv_vae import ConvConfig, ConvVAE
from vaelab.models.priors import make_prior
from vaelab.models.vae import VAE, MLPConfig
from vaelab.models.vae_2l import TwoLayerConfig, TwoLayerVAE


@dataclass(frozen=True)
class ModelEntry:
    config_cls: type
    model_cls: type[LatentModel]
    summary: str
    # TrainConfig settings left unset take these (else the lecture's d = 20, d^2, relu)
    defaults: dict[str, Any] = field(default_factory=dict)


MODELS: dict[str, ModelEntry] = {
    "vae": ModelEntry(MLPConfig, VAE, "the lecture's MLP VAE: D-h-2d encoder, d-h-D decoder"),
    "ae": ModelEntry(MLPConfig, AE, "the same MLP as a plain autoencoder (no variance, no KL)"),
    "conv-vae": ModelEntry(
        ConvConfig, ConvVAE, "conv VAE: 2 stride-2 convs (32, 64) -> h -> 2d, mirrored decoder"
    ),
    "conv-ae": ModelEntry(ConvConfig, ConvAE, "the conv VAE's networks as a plain autoencoder"),
    "vae-2l": ModelEntry(
        TwoLayerConfig,
        TwoLayerVAE,
        "two stochastic layers (Burda et al. 2015): x-200-200-z1(100)-100-100-z2(50), tanh",
        {"latent_dim": 50, "z1_dim": 100, "hidden": [200, 200], "activation": "tanh"},
    ),
}


def model_config(name: str, **values: Any) -> Any:
    """The named model's config dataclass built from ``values`` (unknown keys ignored)."""
    cls = MODELS[name].config_cls
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def build_model(
    name: str,
    likelihood: str = "bernoulli",
    gaussian_sigma: float | str | None = None,
    prior: str | None = "standard",
    pseudo_inputs: int | None = None,
    prior_components: int | None = None,
    **values: Any,
) -> LatentModel:
    """Instantiate the registered model ``name`` from config values (unknown keys
    ignored), with the run's p(x|z): ``likelihood`` (bernoulli, continuous-bernoulli,
    gaussian or mse; ``TrainConfig.likelihood``) and a Gaussian's fixed ``gaussian_sigma``
    or "learned" (which also sets the model config's ``learn_sigma``); and its p(z):
    ``prior`` standard (N(0, I)), mog (``prior_components`` learned Gaussians) or vamp
    (``pseudo_inputs`` learned pseudo-inputs), attached as ``model.prior``
    (``vaelab.models.priors``). A learned prior's starting values are drawn after the
    model's weights, so N(0, I) runs draw exactly what they always drew."""
    if gaussian_sigma == "learned":
        values["learn_sigma"] = True
    model = MODELS[name].model_cls(model_config(name, **values))
    model.likelihood = likelihood or "bernoulli"
    model.gaussian_sigma = gaussian_sigma
    if prior not in (None, "standard"):
        if not model.stochastic:
            raise VaelabError(f"--prior {prior}: a plain autoencoder ({name}) has no prior")
        if prior == "vamp" and model.conditional:
            raise VaelabError(
                "--prior vamp: the pseudo-inputs of a conditional model have no label"
            )
        model.prior = make_prior(
            prior,
            model.latent_dim,
            model.config.input_size,
            pseudo_inputs,
            prior_components,
            unit_range=model.likelihood in ("bernoulli", "continuous-bernoulli"),
        )
    return model


__all__ = [
    "MODELS",
    "AE",
    "VAE",
    "ConvAE",
    "ConvConfig",
    "ConvVAE",
    "LatentModel",
    "LogWeights",
    "MLPConfig",
    "TwoLayerConfig",
    "TwoLayerVAE",
    "build_model",
    "model_config",
]
