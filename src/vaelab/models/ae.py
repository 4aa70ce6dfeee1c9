"""A plain autoencoder with the lecture's MLP shape: the zero-variance special case of the
VAE (lecture section 2). It encodes only a point per input, has no KL term, and its
latent space has no structure between training points (lecture section 6.5). Its
``hidden`` and ``activation`` work as the VAE's (``vaelab.models.vae``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab.models.base import LatentModel
from vaelab.models.vae import MLPConfig, mlp


class AE(LatentModel):
    stochastic = False

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        D, h, d, K = config.input_size, config.hidden_sizes, config.latent_dim, config.n_classes
        self.latent_dim, self.n_classes = d, K
        self.encoder = mlp([D + K, *h, d], config.activation)
        self.decoder = mlp([d + K, *reversed(h), D], config.activation)
        self.log_sigma = nn.Parameter(torch.zeros(())) if config.learn_sigma else None

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, None]:
        """x: (B, *input_shape) or (B, D) -> (code (B, d), None): no variance."""
        return self.encoder(self.with_label(x.flatten(1), labels)), None

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z: (B, d) -> logits (B, D)."""
        return self.decoder(self.with_label(z, labels))
