"""One training epoch: a pass over the in-memory training set in the epoch's permutation,
one optimisation step per batch, with the KL weight and learning rate of each step, a
stop signal polled between steps and, under --time-budget, the clock that may end the
pass early. :mod:`vaelab.training.loop` runs the epochs around it.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from vaelab.config import TrainConfig
from vaelab.objectives import kl_weight
from vaelab.setting_values import share_of_run
from vaelab.training.budget import BudgetClock, budget_step_settings
from vaelab.training.distributed import World, any_rank, rank_slice, sum_over_ranks
from vaelab.training.schedules import step_lr_factors
from vaelab.training.step import TrainStep, divergence
from vaelab.training.stopping import EpochProgress, GracefulStop, StopRequested
from vaelab.training.threads import adjust as adjust_threads

STOP_POLL_STEPS = 20  # how often ranks of a multi-process run agree on a stop signal


def train_epoch(
    step_fn: TrainStep,
    x: Tensor,
    config: TrainConfig,
    epoch: int,
    progress: bool = False,
    resume_from: EpochProgress | None = None,
    stop: GracefulStop | None = None,
    world: World = World(),
    labels: Tensor | None = None,
    clock: BudgetClock | None = None,
) -> dict[str, float]:
    """One pass over ``x`` (and its ``labels``, for a conditional model) in the epoch's
    permutation, one ``step_fn`` call per batch; per-sample averages of the terms.

    ``resume_from`` continues a pass interrupted at a step boundary; ``stop`` is polled
    after every step and raises StopRequested with the progress so far. On several ranks
    each takes its slice of every global batch and the sums are added over ranks. Under
    a ``clock`` (--time-budget) the schedules follow it and the pass ends after the step
    that spends it: the averages are then over the images seen, and ``steps`` says how
    many steps of the pass ran."""
    step_fn.model.train()
    n, batch_size = len(x), config.batch_size
    steps = (n + batch_size - 1) // batch_size
    state = resume_from or EpochProgress(epoch)
    perm = epoch_permutation(n, config.seed, epoch).to(x.device)
    # Saved sums are global (added over ranks), so only one rank starts from them.
    sums = torch.tensor(state.sums if world.is_main else [0.0] * 3, dtype=torch.float64)
    sums = sums.to(x.device)
    weights = step_kl_weights(config, epoch, steps, x.device) if clock is None else None
    rates = step_lr_factors(config, epoch, steps) if clock is None else None
    bar = tqdm(
        total=steps,
        initial=state.step,
        desc=f"epoch {epoch}" + (f"/{config.epochs}" if config.epochs is not None else ""),
        leave=False,
        disable=None if progress else True,  # None: off when stderr is not a terminal
        unit="step",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    done = steps
    for step in range(state.step, steps):
        if clock is not None:
            weight, rate = budget_step_settings(config, epoch, clock.share(), x.device)
        else:
            weight, rate = weights[step], None if rates is None else rates[step]
        if rate is not None:
            for group in step_fn.optimizer.param_groups:
                group["lr"] = config.lr * rate
        batch = rank_slice(perm[step * batch_size : (step + 1) * batch_size], world)
        xb = x.index_select(0, batch)  # a row gather: several times faster than x[batch]
        if config.binarize == "dynamic":  # a fresh binary image per visit (Burda et al.)
            xb = torch.bernoulli(xb)
        yb = None if labels is None else labels.index_select(0, batch)
        sums += step_fn(xb, weight, epoch, step, yb)
        adjust_threads()  # fewer threads while other processes need the cores (--threads auto)
        if progress and step_fn.check and (step % 10 == 0 or step == steps - 1):
            seen = min(n, (step + 1) * batch_size) / world.size
            bar.set_postfix(loss=f"{sums[0].item() / seen:.2f}")
        bar.update()
        if clock is not None:
            clock.steps += 1
            if clock.spent():
                done = step + 1
                break
        stopping = stop is not None and stop.signum is not None
        # Ranks agree on stopping through a collective: every STOP_POLL_STEPS steps, not
        # every step, so a GPU job does not wait for the host each step.
        poll = not world.distributed or step % STOP_POLL_STEPS == 0
        if step < steps - 1 and poll and any_rank(stopping, world, x.device):
            bar.close()
            seconds = state.seconds + time.perf_counter() - t0
            total = sum_over_ranks(sums, world).tolist()
            raise StopRequested(EpochProgress(epoch, step + 1, total, seconds))
    bar.close()
    seen = min(n, done * batch_size)  # n unless a --time-budget ended the pass early
    loss, rec, kl = (sum_over_ranks(sums, world) / seen).tolist()
    if not np.isfinite(loss):
        raise divergence(epoch, done - 1, "loss")
    seconds = state.seconds + time.perf_counter() - t0
    row = {"train_loss": loss, "train_recon": rec, "train_kl": kl, "train_seconds": seconds}
    if clock is not None:
        row.update(steps=done, budget_seconds=clock.elapsed())
    return row


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the training set in ``epoch``: a function of (seed, epoch) only, so a
    resumed run and every distributed rank draw the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def step_kl_weights(
    config: TrainConfig, epoch: int, steps: int, device: torch.device
) -> list[float] | Tensor:
    """The KL weight of each step of ``epoch``: beta throughout, or under --kl-warmup one
    value per step (``kl_weight``) on the device, a tensor for torch.compile and no copy
    per step."""
    if share_of_run(config.kl_warmup, config.epochs) <= 0:
        return [kl_weight(config, epoch)] * steps
    weights = [kl_weight(config, epoch, s / steps) for s in range(steps)]
    return torch.tensor(weights, dtype=torch.float32, device=device)
