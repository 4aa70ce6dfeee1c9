"""Training: the lecture's epoch-0-to-E loop as one plain function.

Epoch 0 evaluates the untrained model; every later epoch trains on a fresh permutation of
the in-memory training set, then evaluates on the test set with z = mu (the lecture's
"test loss", not a sampled ELBO: ``vaelab evaluate`` computes that). Losses are summed
over pixels and reported per sample, in nats.
"""

from __future__ import annotations

import math
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from vaelab.config import TrainConfig
from vaelab.data.datasets import Dataset, binarize_dataset, check_unit_range, load_dataset
from vaelab.errors import DivergenceError, RankLostError, TrainingInterrupted, VaelabError
from vaelab.models import build_model
from vaelab.objectives import kl_weight, objective_terms
from vaelab.run import (
    N_SHOWN,
    RunPaths,
    RunState,
    check_disk_space,
    create_run_dir,
    mark_finished,
    open_run,
    truncate_metrics,
    update_run_config,
    write_run_config,
)
from vaelab.training.checkpoint import restore_rng_state, rng_state, save_checkpoint
from vaelab.training.distributed import (
    World,
    any_rank,
    destroy_process_group,
    failpoint,
    gather_objects,
    init_process_group,
    is_peer_failure,
    rank_slice,
    sum_over_ranks,
    world_from_env,
)
from vaelab.training.epoch_end import end_of_epoch, epoch_line, final_figures
from vaelab.training.optim import Optimizer, make_optimizer
from vaelab.training.stopping import EpochProgress, GracefulStop, StopRequested
from vaelab.training.tracking import open_tracker

STOP_POLL_STEPS = 20  # how often ranks of a multi-process run agree on a stop signal


def select_device(name: str, world: World = World()) -> torch.device:
    """cpu or cuda (``auto``: cuda when PyTorch sees a GPU); rank r of a job on GPUs takes
    the GPU of its local rank."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise VaelabError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    if name == "cuda" and world.distributed:
        return torch.device("cuda", world.local_rank)
    return torch.device(name)


class TrainingLoss(nn.Module):
    """The model with its training objective as ``forward``, which returns the batch's sums
    of (loss, recon, kl), shape (3,): DDP synchronises gradients through ``forward`` and
    torch.compile traces it (the sums included), so both see the whole step."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        super().__init__()
        self.model = model
        self.config = config

    def forward(self, x: Tensor, weight: float | Tensor) -> Tensor:
        return torch.stack([t.sum() for t in objective_terms(self.model, x, self.config, weight)])


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the training set in ``epoch``: a function of (seed, epoch) only, so a
    resumed run and every distributed rank draw the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


def train_epoch(
    model: nn.Module,
    optimizer: Optimizer,
    x: Tensor,
    config: TrainConfig,
    epoch: int,
    progress: bool,
    resume_from: EpochProgress | None = None,
    stop: GracefulStop | None = None,
    world: World = World(),
    step_loss: nn.Module | None = None,
) -> dict[str, float]:
    """One pass over ``x`` in the epoch's permutation; per-sample averages of the terms.

    The loss is summed over the batch, as in the lecture (Adam is insensitive to scale).
    ``resume_from`` continues a pass interrupted at a step boundary; ``stop`` is polled
    after every step and raises StopRequested with the progress so far. ``step_loss``
    computes the batch's sums of the terms (default ``TrainingLoss(model)``; the trainer passes
    its DDP-wrapped or compiled one). On several ranks each takes its slice of every
    global batch and the epoch's sums are added over ranks at the end."""
    model.train()
    step_loss = step_loss if step_loss is not None else TrainingLoss(model, config)
    n = len(x)
    state = resume_from or EpochProgress(epoch)
    perm = epoch_permutation(n, config.seed, epoch).to(x.device)
    # Saved sums are global (added over ranks), so only one rank starts from them.
    sums = torch.tensor(state.sums if world.is_main else [0.0] * 3, dtype=torch.float64)
    sums = sums.to(x.device)
    steps = (n + config.batch_size - 1) // config.batch_size
    on_cpu = x.device.type == "cpu"  # checks each step are free on CPU, a sync on a GPU
    weight: float | Tensor = kl_weight(config, epoch)
    if config.kl_warmup > 0:  # on the device (no copy per step), a tensor for torch.compile
        weights = [kl_weight(config, epoch, s / steps) for s in range(steps)]
        weights = torch.tensor(weights, dtype=torch.float32, device=x.device)
    # DDP averages gradients over ranks; scaling by the world size makes that the sum over
    # the global batch, the gradient of one process on the whole batch.
    scale = float(world.size)
    autocast = torch.autocast(
        x.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"
    )
    bar = tqdm(
        total=steps,
        initial=state.step,
        desc=f"epoch {epoch}/{config.epochs}",
        leave=False,
        disable=None if progress else True,  # None: off when stderr is not a terminal
        unit="step",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    for step in range(state.step, steps):
        batch = rank_slice(perm[step * config.batch_size : (step + 1) * config.batch_size], world)
        xb = x.index_select(0, batch)  # a row gather: several times faster than x[batch]
        if config.binarize == "dynamic":  # a fresh binary image per visit (Burda et al.)
            xb = torch.bernoulli(xb)
        if config.kl_warmup > 0:
            weight = weights[step]
        with autocast:
            batch_sums = step_loss(xb, weight)
        loss = batch_sums[0]
        # One float read, not torch.isfinite (four small ops, ~4% of a bf16 CPU step).
        if on_cpu and not math.isfinite(loss.item()):
            raise _divergence(epoch, step, "loss")
        optimizer.zero_grad(set_to_none=True)
        (loss * scale if world.distributed else loss).backward()
        if config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if on_cpu and not torch.isfinite(norm):
                raise _divergence(epoch, step, "gradient")
        # Unclipped, a non-finite gradient makes the next step's loss (or the epoch's test
        # loss, checked before the checkpoint is written) non-finite: no per-step norm.
        optimizer.step()
        sums += batch_sums.detach()
        if progress and on_cpu and (step % 10 == 0 or step == steps - 1):
            seen = min(n, (step + 1) * config.batch_size) / world.size
            bar.set_postfix(loss=f"{sums[0].item() / seen:.2f}")
        bar.update()
        stopping = stop is not None and stop.signum is not None
        # Ranks agree on stopping through a collective: every STOP_POLL_STEPS steps, not
        # every step, so a GPU job does not wait for the host each step.
        poll = not world.distributed or step % STOP_POLL_STEPS == 0
        if step < steps - 1 and poll and any_rank(stopping, world, x.device):
            bar.close()
            raise StopRequested(
                EpochProgress(
                    epoch,
                    step + 1,
                    sum_over_ranks(sums, world).tolist(),
                    state.seconds + time.perf_counter() - t0,
                )
            )
    bar.close()
    sums = sum_over_ranks(sums, world)
    seconds = state.seconds + time.perf_counter() - t0
    loss, rec, kl = (sums / n).tolist()
    if not np.isfinite(loss):
        raise _divergence(epoch, steps - 1, "loss")
    return {"train_loss": loss, "train_recon": rec, "train_kl": kl, "train_seconds": seconds}


def _divergence(epoch: int, step: int, what: str) -> DivergenceError:
    return DivergenceError(
        f"training diverged: non-finite {what} at epoch {epoch}, step {step}; the last good "
        "checkpoint is kept. Try a lower --lr or --grad-clip 100, and check that the data "
        "range suits the likelihood (--recon)"
    )


def _prepare_data(config: TrainConfig, data: Dataset | None, meta: dict | None) -> Dataset:
    data = data if data is not None else load_dataset(config.dataset, config.data_dir)
    if config.limit:
        data = data.limited(config.limit)
    if meta is not None and meta["data"]["sha256"] != data.sha256:
        raise VaelabError("the run was trained on other data (checksum differs); cannot resume")
    data = binarize_dataset(data, config.binarize, config.seed)
    if config.needs_unit_range:
        check_unit_range(data)
    return data


def train(
    config: TrainConfig | None = None,
    out: Path | str | None = None,
    resume: Path | str | None = None,
    data: Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    epochs: int | None = None,
    device: str | None = None,
) -> Path:
    """Train a model and write its run directory; returns the run's path.

    ``resume=RUN`` continues RUN from checkpoints/last.pt with its saved settings
    (``epochs`` may raise the target, ``device`` may change). ``data`` skips loading.
    SIGINT/SIGTERM stop at the next step boundary after writing a checkpoint. Started by
    torchrun, each process trains its share of every batch (vaelab.training.distributed) and rank 0
    alone writes the run.
    """
    world = world_from_env()
    state = open_run(config, out, resume, epochs, device, world)
    config, root = state.config, state.root
    if state.finish_only:
        if world.is_main:
            final_figures(root)
            mark_finished(RunPaths(root))
        return root
    dev = select_device(config.device, world)
    init_process_group(world, dev)
    try:
        _train_run(state, dev, world, data, progress if world.is_main else False, log)
    except RuntimeError as exc:
        if world.distributed and is_peer_failure(exc):
            raise RankLostError(
                f"rank {world.rank}: another rank stopped ({str(exc).splitlines()[0][:100]})"
            ) from None
        raise
    finally:
        destroy_process_group()
    return root


def _train_run(
    state: RunState,
    dev: torch.device,
    world: World,
    data: Dataset | None,
    progress: bool,
    log: Callable[[str], None],
) -> None:
    config, root, paths = state.config, state.root, RunPaths(state.root)
    main = world.is_main
    log = log if main else (lambda _msg: None)
    # First, so a missing optional extra is reported before any data is read.
    tracker = open_tracker(config.tensorboard and main, root)  # --tensorboard: RUN/tb/
    data = _prepare_data(config, data, state.meta)
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    learn_sigma = config.gaussian_sigma == "learned"
    model = build_model(
        config.model,
        **{**config.to_dict(), "input_shape": data.input_shape, "learn_sigma": learn_sigma},
    )
    model = model.to(dev)
    optimizer = make_optimizer(model, config.lr)
    model_config = dict(vars(model.config))
    if world.rank > 0:  # other noise on each rank; rank 0 draws what one process draws
        torch.manual_seed(config.seed * 1_000_003 + world.rank)
    partial = None
    if state.ckpt is not None:
        try:
            model.load_state_dict(state.ckpt["model"])
            optimizer.load_state_dict(state.ckpt["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise VaelabError(
                f"{paths.last} does not fit model {config.model!r} of {paths.config} "
                f"({str(exc).splitlines()[0][:120]}); it is from another architecture"
            ) from None
        restore_rng_state(state.ckpt, world)
        partial = state.ckpt.get("partial")
        partial = EpochProgress(**partial) if partial else None
        if main:
            truncate_metrics(paths.metrics, state.start - 1)
            update_run_config(paths, config, world.size)  # a new --epochs target or --device
        log(f"resuming {root} at epoch {state.start} of {config.epochs}")
    elif main:
        create_run_dir(root)
        check_disk_space(root, model, data, config)
        write_run_config(paths, config, model_config, data, dev, world.size)
        truncate_metrics(paths.metrics, -1)
    step_loss = step_loss_module(model, config, dev, world)

    def save_last(epoch: int, **extra: Any) -> None:
        rngs = gather_objects(rng_state(), world)  # every rank takes part
        if main:
            save_checkpoint(
                paths.last,
                config=config.to_dict(),
                model_config=model_config,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                rng=rngs[0],
                rng_ranks=rngs,
                epoch=epoch,
                **extra,
            )

    x_train, x_test = data.x_train.to(dev), data.x_test.to(dev)
    failpoint(world)
    with GracefulStop() as stop:
        for epoch in range(state.start, config.epochs + 1):
            row: dict[str, Any] = dict.fromkeys(
                ("train_loss", "train_recon", "train_kl", "train_seconds"), None
            )
            row = {"epoch": epoch, **row}
            if epoch > 0:
                resume_from = partial if partial and partial.epoch == epoch else None
                try:
                    row.update(
                        train_epoch(
                            model,
                            optimizer,
                            x_train,
                            config,
                            epoch,
                            progress,
                            resume_from,
                            stop,
                            world,
                            step_loss,
                        )
                    )
                except StopRequested as stopped:
                    save_last(epoch - 1, partial=vars(stopped.progress))
                    raise _interrupted(stop.signum, root, epoch, stopped.progress.step) from None
            if main:
                end_of_epoch(model, x_test, data, config, paths, epoch, row)
            save_last(epoch)
            if main and config.keep_every and epoch % config.keep_every == 0 and epoch > 0:
                shutil.copyfile(paths.last, paths.epoch_checkpoint(epoch))
            if main:
                log(epoch_line(row))
                tracker.log_epoch(epoch, row, model, x_test[:N_SHOWN])
            if stop.signum is not None and epoch < config.epochs:
                raise _interrupted(stop.signum, root, epoch + 1, 0)
    tracker.close()
    if main:
        final_figures(root)
        mark_finished(paths)


def step_loss_module(
    model: nn.Module, config: TrainConfig, dev: torch.device, world: World = World()
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


def _interrupted(signum: int | None, root: Path, epoch: int, step: int) -> TrainingInterrupted:
    code = 130 if signum == signal.SIGINT else 143
    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    return TrainingInterrupted(
        f"stopped by {name} at epoch {epoch}, step {step}; checkpoint written. "
        f"Resume with: vaelab train --resume {root}",
        code,
    )
