"""The practicum's VAE (Kingma & Welling 2014, "Auto-Encoding Variational Bayes",
https://arxiv.org/abs/1312.6114), as an MLP: lecture section 5.

Encoder Linear(D, h) -> ReLU -> Linear(h, 2d), viewed as (B, 2, d) into mu and logvar;
decoder Linear(d, h) -> ReLU -> Linear(h, D), logits; ``decode`` maps them to the mean of
p(x|z) (a sigmoid for the lecture's Bernoulli, ``vaelab.losses.decoder_mean``). D comes
from the data.

Deeper: ``hidden`` = [h1, h2, ...] gives the encoder D-h1-h2-...-2d and the decoder the
mirror d-...-h2-h1-D, each hidden layer followed by ``activation`` (Burda et al. 2015's
one-stochastic-layer model: ``--hidden 200,200 --activation tanh --latent-dim 50``). The
lecture's one ReLU layer keeps its module names (encoder.0, encoder.2, ...) and the order
in which its weights are drawn, so its runs and checkpoints are unchanged.

Conditional (``n_classes`` = K > 0): the one-hot label is appended to the encoder's input
and to z, so the first layers are Linear(D + K, h) and Linear(d + K, h).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab.models.base import LOGVAR_MAX, LOGVAR_MIN, LatentModel
from vaelab.setting_spec import ACTIVATION_CHOICES, check_choice
from vaelab.setting_values import hidden_list, stored_hidden

# --activation's layers; the names are vaelab.setting_spec.ACTIVATION_CHOICES
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}


def mlp(sizes: Sequence[int], activation: str = "relu") -> nn.Sequential:
    """Linear layers between consecutive ``sizes``, ``activation`` after each but the
    last: mlp([784, 400, 40]) = Linear(784, 400) -> ReLU -> Linear(400, 40). The weights
    are drawn layer by layer from the input side."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        if i > 0:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(n_in, n_out))
    return nn.Sequential(*layers)


class MLPSizes:
    """What every MLP model's config derives from its ``input_shape`` and ``hidden``, and
    checks in ``__post_init__`` (``normalise_mlp``)."""

    input_shape: tuple[int, ...]
    hidden: int | list[int]
    activation: str

    def normalise_mlp(self) -> None:
        """Integer shape, one hidden size stored as an int, a known activation."""
        self.input_shape = tuple(int(s) for s in self.input_shape)
        self.hidden = stored_hidden(hidden_list(self.hidden))
        check_choice("activation", self.activation, ACTIVATION_CHOICES)

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)

    @property
    def hidden_sizes(self) -> list[int]:
        return hidden_list(self.hidden)


@dataclass
class MLPConfig(MLPSizes):
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 20
    hidden: int | list[int] = 400  # one size per hidden layer, from the data side
    activation: str = "relu"  # after each hidden layer (ACTIVATIONS)
    learn_sigma: bool = False  # a learned Gaussian decoder scale (--gaussian-sigma learned)
    n_classes: int = 0  # K > 0: conditional on a label (--condition label), one-hot in

    def __post_init__(self) -> None:
        self.normalise_mlp()


class VAE(LatentModel):
    """The lecture's MLP VAE; the N(0, I) prior, sampling and the bounds come from
    ``LatentModel``."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        D, h, d, K = config.input_size, config.hidden_sizes, config.latent_dim, config.n_classes
        self.latent_dim, self.n_classes = d, K
        self.encoder = mlp([D + K, *h, 2 * d], config.activation)
        self.decoder = mlp([d + K, *reversed(h), D], config.activation)
        self.log_sigma = nn.Parameter(torch.zeros(())) if config.learn_sigma else None

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x: (B, *input_shape) or (B, D) (and labels (B,)) -> mu, logvar: (B, d) each."""
        inputs = self.with_label(x.flatten(1), labels)  # (B, D + K)
        stats = self.encoder(inputs).view(-1, 2, self.latent_dim)  # (B, 2, d)
        mu, logvar = stats[:, 0, :], stats[:, 1, :]
        return mu, logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z: (B, d) (and labels (B,)) -> logits (B, D)."""
        return self.decoder(self.with_label(z, labels))  # (B, d + K) in
