"""One optimisation step, built once per configuration.

``TrainStep`` decides everything a step depends on when it is made (the device, bf16
autocast, torch.compile, DDP over several ranks, gradient clipping, the divergence check)
so that the epoch loop is the same few lines for every run: draw a batch, call the step.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor, nn

from vaelab.config import TrainConfig
from vaelab.errors import DivergenceError, SettingError
from vaelab.models import LatentModel
from vaelab.objectives import objective_terms
from vaelab.training.distributed import World
from vaelab.training.ema import WeightAverage
from vaelab.training.optim import Optimizer


def select_device(name: str, world: World = World(), local_size: int | None = None) -> torch.device:
    """cpu or cuda (``auto``: cuda when PyTorch sees a GPU). Rank r of a job on GPUs takes
    the GPU of its local rank, so a machine needs one GPU for each of its ``local_size``
    ranks (torchrun's LOCAL_WORLD_SIZE, else the job's size): with fewer, ``auto`` uses the
    CPUs (gloo) and ``cuda`` is refused rather than two NCCL ranks sharing a GPU."""
    if local_size is None:
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world.size))
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if name == "auto":
        name = "cuda" if gpus >= max(local_size, 1) else "cpu"
    if name == "cuda" and not gpus:
        raise SettingError(
            "{device} cuda asked for, but PyTorch sees no CUDA GPU; use {device} cpu"
        )
    if name == "cuda" and gpus < local_size:  # gpus >= 1 here
        raise SettingError(
            "{device} cuda with {n} processes on this machine needs {n} GPUs, PyTorch sees "
            "{gpus}; use at most {gpus} processes or {device} cpu",
            n=local_size,
            gpus=gpus,
        )
    if name == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return torch.device(name)


class TrainingLoss(nn.Module):
    """The model with its training objective as ``forward``, which returns the batch's sums
    of (loss, recon, kl), shape (3,): DDP synchronises gradients through ``forward`` and
    torch.compile traces it (the sums included), so both see the whole step."""

    def __init__(self, model: LatentModel, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, x: Tensor, weight: float | Tensor, labels: Tensor | None = None) -> Tensor:
        terms = objective_terms(self.model, x, self.config, weight, labels)
        return torch.stack([t.sum() for t in terms])


def step_loss_module(
    model: LatentModel, config: TrainConfig, dev: torch.device, world: World = World()
) -> nn.Module:
    """The module a training step calls: the objective, wrapped in DDP on several ranks
    and compiled with --compile."""
    step_loss: nn.Module = TrainingLoss(model, config)
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        step_loss = DistributedDataParallel(
            step_loss, device_ids=[dev.index] if dev.type == "cuda" else None
        )
    if config.compile:  # CUDA graphs on one GPU: no kernel-launch cost per small op
        if dev.type == "cuda" and not world.distributed:
            step_loss = torch.compile(step_loss, mode="reduce-overhead")
        elif dev.type == "cpu":  # eager's vectorised randn, a C++ wrapper: docs/benchmarks.md
            step_loss = torch.compile(
                step_loss, options={"fallback_random": True, "cpp_wrapper": True}
            )
        else:
            step_loss = torch.compile(step_loss)
    return step_loss


class TrainStep:
    """``step(xb, weight, epoch, index, labels)``: the loss of one batch (its labels for a
    conditional model, else None), its gradient, Adam's update and under --ema the moving
    average's (``average``); returns the batch's sums of (loss, recon, kl).

    The loss is summed over the batch, as in the lecture (Adam is insensitive to scale).
    On several ranks DDP averages gradients; scaling the loss by the world size makes that
    the sum over the global batch, the gradient of one process on the whole batch."""

    def __init__(
        self,
        model: LatentModel,
        optimizer: Optimizer,
        config: TrainConfig,
        dev: torch.device,
        world: World = World(),
        average: WeightAverage | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.average = average
        self.loss = step_loss_module(model, config, dev, world)
        self.autocast = torch.autocast(
            dev.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"
        )
        self.scale = float(world.size) if world.distributed else None
        self.grad_clip = config.grad_clip
        # Finite checks each step are free on CPU but a host sync on a GPU: CPU only there.
        self.check = dev.type == "cpu"

    def __call__(
        self,
        xb: Tensor,
        weight: float | Tensor,
        epoch: int,
        index: int,
        labels: Tensor | None = None,
    ) -> Tensor:
        with self.autocast:
            batch_sums = self.loss(xb, weight, labels)
        loss = batch_sums[0]
        # One float read, not torch.isfinite (four small ops, ~4% of a bf16 CPU step).
        if self.check and not math.isfinite(loss.item()):
            raise divergence(epoch, index, "loss")
        self.optimizer.zero_grad(set_to_none=True)
        (loss if self.scale is None else loss * self.scale).backward()
        if self.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
            if self.check and not torch.isfinite(norm):
                raise divergence(epoch, index, "gradient")
        # Unclipped, a non-finite gradient makes the next step's loss (or the epoch's test
        # loss, checked before the checkpoint is written) non-finite: no per-step norm.
        self.optimizer.step()
        if self.average is not None:
            self.average.update()
        return batch_sums.detach()


def divergence(epoch: int, step: int, what: str) -> DivergenceError:
    return DivergenceError(
        f"training diverged: non-finite {what} at epoch {epoch}, step {step}; the last good "
        "checkpoint is kept. Try a lower --lr or --grad-clip 100, and check that the data "
        "range suits the likelihood (--recon)"
    )
