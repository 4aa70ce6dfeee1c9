"""A plain autoencoder with the lecture's MLP shape: the zero-variance special case of the
VAE (lecture section 2). It encodes only a point per input, has no KL term, and its
latent space has no structure between training points (lecture section 6.5).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vaelab.models.base import LatentModel
from vaelab.models.vae import MLPConfig


class AE(LatentModel):
    stochastic = False

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        D, h, d, K = config.input_size, config.hidden, config.latent_dim, config.n_classes
        self.latent_dim, self.n_classes = d, K
        self.encoder = nn.Sequential(nn.Linear(D + K, h), nn.ReLU(), nn.Linear(h, d))
        self.decoder = nn.Sequential(nn.Linear(d + K, h), nn.ReLU(), nn.Linear(h, D))
        self.log_sigma = nn.Parameter(torch.zeros(())) if config.learn_sigma else None

    def encode(self, x: Tensor, labels: Tensor | None = None) -> tuple[Tensor, None]:
        """x: (B, *input_shape) or (B, D) -> (code (B, d), None): no variance."""
        return self.encoder(self.with_label(x.flatten(1), labels)), None

    def decode_logits(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """z: (B, d) -> logits (B, D)."""
        return self.decoder(self.with_label(z, labels))
