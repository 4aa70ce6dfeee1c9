"""Training objectives: what the trainer minimises, per example.

The trainer calls ``training_loss`` and never changes when an objective is added.
"""

from __future__ import annotations

from torch import Tensor, nn

from vaelab.config import TrainConfig
from vaelab.losses import LossTerms, negative_elbo


def kl_weight(config: TrainConfig, epoch: int) -> float:
    """The KL term's weight in ``epoch``: beta (annealing schedules hook in here)."""
    return config.beta


def training_loss(model: nn.Module, x: Tensor, config: TrainConfig, epoch: int) -> LossTerms:
    """Per-example loss terms for a batch ``x``. z is sampled in train mode and is mu in
    eval mode (the lecture's test loss); loss = recon + weight * kl."""
    mu, logvar = model.encode(x)
    logits = model.decode_logits(model.reparameterize(mu, logvar))
    return negative_elbo(logits, x.flatten(1), mu, logvar, kl_weight(config, epoch), config.recon)
