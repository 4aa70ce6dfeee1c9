"""A moving average of the weights (--ema): the model that is tested, saved and drawn.

After every optimiser step, with w the trained weights and n the updates so far,

    w_avg = d_n * w_avg + (1 - d_n) * w,    d_n = min(D, (1 + n) / (10 + n)),

an exponential moving average with decay D per step (Polyak & Juditsky 1992 average the
iterates; the exponential form with the (1 + n) / (10 + n) ramp is TensorFlow's
``ExponentialMovingAverage(num_updates=n)``). The ramp lets a short run forget its random
initial weights: with D = 0.999 alone they would still weigh 0.999^2350 = 9.5% after the
lecture's 10 epochs; with it, their weight falls like n^-9. It counts steps, not epochs
or seconds, so it is the same under --epochs and --time-budget.

The averaged weights are the run's model: the test loss, ``checkpoints/*.pt``'s
"model", ``load_run``, ``vaelab evaluate`` and the figures use them; the trained weights
are kept for ``--resume`` only, as last.pt's "model_raw".
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from vaelab.models import LatentModel


def ema_decay(decay: float, updates: int) -> float:
    """d_n = min(D, (1 + n) / (10 + n)): the weight of the old average in update n + 1.

    Examples:
        >>> ema_decay(0.999, 0), ema_decay(0.999, 90), ema_decay(0.999, 100_000)
        (0.1, 0.91, 0.999)
    """
    return min(decay, (1 + updates) / (10 + updates))


class WeightAverage:
    """``model``: a copy of the trained model whose weights are the moving average,
    updated by ``update()`` after each optimiser step; buffers are copied as they are."""

    def __init__(self, trained: LatentModel, decay: float) -> None:
        self.trained = trained
        self.model = copy.deepcopy(trained).eval().requires_grad_(False)
        self.decay = decay
        self.updates = 0
        self._pairs = _matching(self.model.parameters(), trained.parameters())
        self._buffers = _matching(self.model.buffers(), trained.buffers())

    @torch.no_grad()
    def update(self) -> None:
        if not self._pairs[0]:
            return
        weight = 1.0 - ema_decay(self.decay, self.updates)
        torch._foreach_lerp_(self._pairs[0], self._pairs[1], weight)  # avg += w (new - avg)
        for average, trained in zip(*self._buffers):
            average.copy_(trained)
        self.updates += 1

    def load(self, state: dict, updates: int) -> None:
        """The average and its update count as saved in a checkpoint."""
        self.model.load_state_dict(state)
        self.updates = int(updates)


def _matching(averaged: object, trained: object) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    a, b = list(averaged), list(trained)
    if [t.shape for t in a] != [t.shape for t in b]:
        raise ValueError("the averaged model's tensors differ from the trained model's")
    return a, b


def evaluated(model: LatentModel, average: WeightAverage | None) -> nn.Module:
    """The model that is tested and saved: the average under --ema, else ``model``."""
    return average.model if average is not None else model
