"""The convolutional VAE's networks as a plain autoencoder: the zero-variance contrast
(lecture sections 2 and 6.5) for the convolutional family. No posterior variance, no KL.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab.models.base import LatentModel
from vaelab.models.conv_vae import ConvConfig, ConvDecoder, ConvEncoder


class ConvAE(LatentModel):
    stochastic = False

    def __init__(self, config: ConvConfig) -> None:
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        self.n_classes = config.n_classes
        self.encoder = ConvEncoder(config, config.latent_dim)
        self.decoder = ConvDecoder(config)
        self.log_sigma = nn.Parameter(torch.zeros(())) if config.learn_sigma else None

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, None]:
        """x: (B, C, H, W) or (B, D) -> (code (B, d), None): no variance."""
        return self.encoder(x, self.one_hot(labels, x)), None

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z: (B, d) -> logits (B, D)."""
        return self.decoder(self.with_label(z, labels))
