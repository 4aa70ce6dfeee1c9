"""Learning-rate schedules: the learning rate as a pure function of the share of training
done, t in [0, 1], read before each step.

t is (epoch - 1 + step / steps) / epochs in a run of --epochs, and elapsed seconds /
budget under --time-budget (``vaelab.training.budget``), so one schedule fits both.
A warm-up of share w comes first (the rate rises linearly from 0), the schedule then
runs over the rest of the run, u = (t - w) / (1 - w):

- constant: 1;
- burda: Burda, Grosse & Salakhutdinov 2015, "Importance Weighted Autoencoders"
  (https://arxiv.org/abs/1509.00519, section 5): 3^i epochs at lr * 10^(-i/7) for
  i = 0..7, 3280 epochs in all. Here the 8 stages keep their proportions over any
  length: stage i covers 3280 u in [sum_{j<i} 3^j, sum_{j<=i} 3^j), so a 3280-epoch run
  gets the paper's epochs exactly and a 10-epoch run the same shape, compressed;
- cosine: Loshchilov & Hutter 2017, "SGDR" (https://arxiv.org/abs/1608.03983), one
  half-period without restarts: 0.5 (1 + cos(pi u)), from 1 down to 0 at the end.
"""

from __future__ import annotations

import bisect
import math

from vaelab.config import TrainConfig
from vaelab.setting_values import share_of_run

BURDA_STAGES = 8
BURDA_EPOCHS = (3**BURDA_STAGES - 1) // 2  # 1 + 3 + 9 + ... + 3^7 = 3280
# 3280 u at which stage i + 1 begins: 1, 4, 13, 40, 121, 364, 1093 (and 3280, the end)
BURDA_STAGE_ENDS = tuple((3 ** (i + 1) - 1) // 2 for i in range(BURDA_STAGES))
# t is computed in floating point; a step that lands on a stage's first epoch must not be
# counted in the stage before (3280 * (121 / 3280) can come out as 120.99999999999999).
_EPOCH_TOLERANCE = 1e-9


def burda_stage(u: float) -> int:
    """The stage i (0..7) of Burda et al.'s schedule at share ``u`` of it.

    Examples:
        >>> [burda_stage(e / BURDA_EPOCHS) for e in (0, 1, 3, 4, 1092, 1093, 3279)]
        [0, 1, 1, 2, 6, 7, 7]
    """
    position = u * BURDA_EPOCHS + _EPOCH_TOLERANCE
    return min(bisect.bisect_right(BURDA_STAGE_ENDS, position), BURDA_STAGES - 1)


def burda_factor(u: float) -> float:
    """10^(-i/7) in stage i of Burda et al.'s schedule (``burda_stage``): 1 in the first
    epoch's stage, 0.1 in the last (the last 2187 of 3280 epochs).

    Examples:
        >>> burda_factor(0.0), round(burda_factor(0.5), 6), burda_factor(1.0)
        (1.0, 0.1, 0.1)
    """
    return 10.0 ** (-burda_stage(u) / 7)


def cosine_factor(u: float) -> float:
    """0.5 (1 + cos(pi u)): 1 at u = 0, 0.5 half-way, 0 at u = 1.

    Examples:
        >>> cosine_factor(0.0), cosine_factor(0.5), cosine_factor(1.0)
        (1.0, 0.5, 0.0)
    """
    return 0.5 * (1.0 + math.cos(math.pi * min(max(u, 0.0), 1.0)))


SCHEDULES = {"constant": lambda u: 1.0, "burda": burda_factor, "cosine": cosine_factor}


def lr_factor(schedule: str, t: float, warmup: float = 0.0) -> float:
    """The learning rate at share ``t`` of training, as a multiple of --lr:

        t / w                      while t < w (the warm-up, a share w of the run),
        f((t - w) / (1 - w))       afterwards, f the schedule's factor (module docstring).

    Examples:
        >>> lr_factor("constant", 0.7), lr_factor("cosine", 0.5)
        (1.0, 0.5)
        >>> lr_factor("cosine", 0.05, warmup=0.1), lr_factor("cosine", 0.1, warmup=0.1)
        (0.5, 1.0)
        >>> round(lr_factor("cosine", 0.55, warmup=0.1), 12)  # half-way through the decay
        0.5
        >>> round(lr_factor("burda", 0.5), 6)  # the last stage: 10^(-7/7)
        0.1
    """
    if warmup > 0 and t < warmup:
        return t / warmup
    u = (t - warmup) / (1.0 - warmup) if warmup < 1 else 1.0
    return SCHEDULES[schedule](min(max(u, 0.0), 1.0))


def step_lr_factors(config: TrainConfig, epoch: int, steps: int) -> list[float] | None:
    """The learning rate of each step of ``epoch`` as a multiple of --lr (``lr_factor`` at
    t = (epoch - 1 + step / steps) / epochs); None for a constant rate without warm-up,
    which leaves the optimiser's rate untouched."""
    warmup = share_of_run(config.lr_warmup, config.epochs)
    if config.lr_schedule == "constant" and warmup <= 0:
        return None
    return [
        lr_factor(config.lr_schedule, (epoch - 1 + s / steps) / config.epochs, warmup)
        for s in range(steps)
    ]
