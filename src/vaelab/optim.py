"""The optimiser: Adam (Kingma & Ba 2015), the lecture's, with its fused kernel."""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam with its fused kernel (one pass over all parameters, ~15% of a CPU epoch of the
    lecture's model saved: docs/benchmarks.md), or the default one where this PyTorch or
    device has none. Both keep the same state, so checkpoints move between them.

    Under --precision bf16 it still steps the float32 weights: autocast casts them for
    the matmuls. (A bfloat16 copy of the weights with these as master weights, which saves
    those casts, was no faster here: docs/benchmarks.md.)"""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)
