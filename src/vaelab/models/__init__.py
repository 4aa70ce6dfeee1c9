"""Model registry: one name -> (config dataclass, model class, one-line summary).

Adding a model adds one file and one line here; the trainer never changes. Every model
has ``encode(x) -> (mu, logvar)`` (``logvar`` is None for deterministic autoencoders),
``decode_logits(z) -> (B, D)``, ``decode(z) -> pixel means in [0, 1]`` and
``forward(x) -> (x_hat, mu, logvar)``, with D the flattened input size. A model whose
config has ``learn_sigma=True`` also holds ``log_sigma``, the learned scale of a Gaussian
decoder (``--likelihood gaussian --gaussian-sigma learned``); otherwise it is None.

``decode`` returns the mean E[x|z] of the run's p(x|z), ``vaelab.losses.decoder_mean``
of the logits for the model's ``likelihood`` attribute (the run's ``--likelihood``, set
by ``build_model`` from its ``likelihood`` value; None, the default, is the lecture's
sigmoid). It is not a weight and not in the checkpoint's model settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from torch import nn

from vaelab.models.ae import AE
from vaelab.models.conv_ae import ConvAE
from vaelab.models.conv_vae import ConvConfig, ConvVAE
from vaelab.models.vae import VAE, MLPConfig


@dataclass(frozen=True)
class ModelEntry:
    config_cls: type
    model_cls: type[nn.Module]
    summary: str


MODELS: dict[str, ModelEntry] = {
    "vae": ModelEntry(MLPConfig, VAE, "the lecture's MLP VAE: D-h-2d encoder, d-h-D decoder"),
    "ae": ModelEntry(MLPConfig, AE, "the same MLP as a plain autoencoder (no variance, no KL)"),
    "conv-vae": ModelEntry(
        ConvConfig, ConvVAE, "conv VAE: 2 stride-2 convs (32, 64) -> h -> 2d, mirrored decoder"
    ),
    "conv-ae": ModelEntry(ConvConfig, ConvAE, "the conv VAE's networks as a plain autoencoder"),
}


def model_config(name: str, **values: Any) -> Any:
    """The named model's config dataclass built from ``values`` (unknown keys ignored)."""
    cls = MODELS[name].config_cls
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in known})


def build_model(name: str, **values: Any) -> nn.Module:
    """Instantiate the registered model ``name`` from config values; a ``likelihood``
    value (the run's ``--likelihood``) sets what ``decode`` returns the mean of."""
    model = MODELS[name].model_cls(model_config(name, **values))
    model.likelihood = values.get("likelihood")
    return model


__all__ = [
    "MODELS",
    "AE",
    "VAE",
    "ConvAE",
    "ConvConfig",
    "ConvVAE",
    "MLPConfig",
    "build_model",
    "model_config",
]
