"""Training for a time instead of a number of epochs (--time-budget MINUTES).

The budget's clock runs from the first training step on: the steps, each epoch's
evaluation and checkpoint count; loading the data, epoch 0 (the untrained model's test
loss) and drawing the final figures do not. The trainer reads it
after every step: once it has reached the budget, that step is the last, and the epoch
ends there with the work of any epoch's end (test loss, latents, checkpoint). It is read
again at the end of each epoch: when what is left would not hold another epoch's end (as
long as the longest so far), this epoch is the last, so no epoch begins after the budget
is spent and a run ends within one epoch's end of it. The
schedules (learning rate, warm-ups) read the share of the budget spent, t = elapsed /
budget, where a run of --epochs reads the share of its steps.

The seconds spent are saved in every checkpoint, so ``--resume`` spends only what is left
(time after the last checkpoint of a killed run is spent again). A run stopped by a
signal continues mid-epoch with the same batches, but the schedules follow the clock,
and wall-clock time is never the same twice: runs under a budget are not
bit-reproducible, resumed or not.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from vaelab.config import TrainConfig
from vaelab.objectives import kl_weight
from vaelab.setting_values import share_of_run
from vaelab.training.schedules import lr_factor


@dataclass
class BudgetClock:
    """Seconds and steps spent of a budget of ``minutes``; ``seconds`` and ``steps``
    start from what a checkpoint saved (``state``)."""

    minutes: float
    seconds: float = 0.0  # spent before ``start``
    steps: int = 0
    done: bool = False  # the run's last epoch has ended (saved, so a resume knows)
    reserve: float = 0.0  # the longest an epoch's end took (test loss, checkpoint)
    _started: float | None = field(default=None, repr=False)
    _epoch_end: float = field(default=0.0, repr=False)

    @classmethod
    def from_checkpoint(cls, minutes: float, saved: dict[str, Any] | None) -> BudgetClock:
        saved = saved or {}
        return cls(minutes, float(saved.get("seconds", 0.0)), int(saved.get("steps", 0)))

    def start(self) -> None:
        self._started = time.perf_counter()

    @property
    def running(self) -> bool:
        return self._started is not None

    def elapsed(self) -> float:
        """Seconds spent, this session's included."""
        running = 0.0 if self._started is None else time.perf_counter() - self._started
        return self.seconds + running

    def share(self) -> float:
        """t = elapsed / budget, at most 1: the schedules' share of training done."""
        return min(1.0, self.elapsed() / (60.0 * self.minutes))

    def spent(self) -> bool:
        return self.elapsed() >= 60.0 * self.minutes

    def epoch_end_started(self) -> None:
        self._epoch_end = self.elapsed()

    def epoch_end_finished(self) -> None:
        """Measure ``reserve``: the longest an epoch's end (since ``epoch_end_started``)
        has taken in this session."""
        self.reserve = max(self.reserve, self.elapsed() - self._epoch_end)

    def last_epoch(self) -> bool:
        """Whether an epoch ending now is the last: the budget is spent, or what is left
        would not hold another epoch's end (``reserve``), so no epoch of a step or two
        follows an epoch's end that crossed the budget."""
        return self.elapsed() + self.reserve >= 60.0 * self.minutes

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps: seconds and steps spent, and whether the run ended."""
        return {"seconds": self.elapsed(), "steps": self.steps, "done": self.done}


def budget_left(minutes: float, saved: dict[str, Any] | None) -> bool:
    """Whether a run saved with ``saved`` (a checkpoint's "budget") has time left of a
    budget of ``minutes``: a run that ended its last epoch continues only under a larger
    budget."""
    saved = saved or {}
    return not saved.get("done") or float(saved.get("seconds", 0.0)) < 60.0 * minutes


def summary_line(minutes: float, summary: dict[str, Any]) -> str:
    """The line printed when a budget is spent, e.g. ``time budget 0.05 min spent: 3
    epochs (the last 12 of 40 steps), 92 steps in 3.0 s``."""
    last = summary["last_epoch_steps"], summary["steps_per_epoch"]
    part = f" (the last {last[0]} of {last[1]} steps)" if last[0] < last[1] else ""
    epochs = summary["epochs"]
    return (
        f"time budget {minutes:g} min spent: {epochs} epoch{'s' * (epochs != 1)}{part}, "
        f"{summary['steps']} steps in {summary['seconds']:.1f} s"
    )


def budget_step_settings(
    config: TrainConfig, epoch: int, share: float, device: torch.device
) -> tuple[float | Tensor, float | None]:
    """Under --time-budget: the KL weight and the learning-rate factor (None: leave it)
    of a step taken when ``share`` of the budget is spent."""
    warmup = share_of_run(config.lr_warmup, None)
    rate = None
    if config.lr_schedule != "constant" or warmup > 0:
        rate = lr_factor(config.lr_schedule, share, warmup)
    if share_of_run(config.kl_warmup, None) <= 0:
        return config.beta, rate
    weight = kl_weight(config, epoch, progress=share)  # a tensor, as step_kl_weights gives
    return torch.tensor(weight, dtype=torch.float32, device=device), rate
