"""The practicum's VAE (Kingma & Welling 2014, "Auto-Encoding Variational Bayes",
https://arxiv.org/abs/1312.6114), as an MLP: lecture section 5.

Encoder Linear(D, h) -> ReLU -> Linear(h, 2d), viewed as (B, 2, d) into mu and logvar;
decoder Linear(d, h) -> ReLU -> Linear(h, D), logits; ``decode`` maps them to the mean of
p(x|z) (a sigmoid for the lecture's Bernoulli, ``vaelab.losses.decoder_mean``). D comes
from the data.

Conditional (``n_classes`` = K > 0): the one-hot label is appended to the encoder's input
and to z, so the first layers are Linear(D + K, h) and Linear(d + K, h).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from vaelab.models.base import LOGVAR_MAX, LOGVAR_MIN, LatentModel


@dataclass
class MLPConfig:
    input_shape: tuple[int, ...] = (1, 28, 28)
    latent_dim: int = 20
    hidden: int = 400
    learn_sigma: bool = False  # a learned Gaussian decoder scale (--gaussian-sigma learned)
    n_classes: int = 0  # K > 0: conditional on a label (--condition label), one-hot in

    def __post_init__(self) -> None:
        self.input_shape = tuple(int(s) for s in self.input_shape)

    @property
    def input_size(self) -> int:
        return math.prod(self.input_shape)


class VAE(LatentModel):
    """The lecture's MLP VAE; the N(0, I) prior, sampling and the bounds come from
    ``LatentModel``."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        D, h, d, K = config.input_size, config.hidden, config.latent_dim, config.n_classes
        self.latent_dim, self.n_classes = d, K
        self.encoder = nn.Sequential(nn.Linear(D + K, h), nn.ReLU(), nn.Linear(h, 2 * d))
        self.decoder = nn.Sequential(nn.Linear(d + K, h), nn.ReLU(), nn.Linear(h, D))
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
