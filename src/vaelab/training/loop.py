"""Training: the lecture's epoch-0-to-E loop, read top to bottom.

``train`` opens the run (new, or resumed from its last checkpoint), ``set_up`` builds
what every epoch needs (data, model, optimiser, the step), ``run_epochs`` runs them and
``finish`` draws the final figures. Epoch 0 evaluates the untrained model; every later
epoch trains on a fresh permutation of the in-memory training set (``vaelab.training.epoch``), then
evaluates on the test set with z = mu (the lecture's "test loss", not a sampled ELBO:
``vaelab evaluate`` computes that), caches what the figures need and writes a
checkpoint. Losses are summed over pixels and reported per sample, in nats.

The recipe around the steps (issue 16): the learning rate follows --lr-schedule and
--lr-warmup (``vaelab.training.schedules``), read before each step; --ema keeps a moving
average of the weights, which is what is tested and saved (``vaelab.training.ema``);
--val-size scores a held-out validation split each epoch and keeps checkpoints/best.pt
(``vaelab.training.selection``); --time-budget replaces the epoch count by a clock
(``vaelab.training.budget``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vaelab.config import TrainConfig
from vaelab.data.datasets import Dataset, label_classes, prepare_data
from vaelab.errors import RankLostError, TrainingInterrupted, VaelabError
from vaelab.fileio import atomic_write_bytes
from vaelab.models import LatentModel, build_model
from vaelab.run import N_SHOWN, RunPaths
from vaelab.training.budget import BudgetClock, summary_line
from vaelab.training.checkpoint import (
    encode_checkpoint,
    is_resumable,
    restore_rng_state,
    rng_state,
)
from vaelab.training.distributed import (
    World,
    destroy_process_group,
    failpoint,
    gather_objects,
    init_process_group,
    is_peer_failure,
    world_from_env,
)
from vaelab.training.ema import WeightAverage, evaluated
from vaelab.training.epoch import train_epoch
from vaelab.training.epoch_end import end_of_epoch, epoch_line, final_figures
from vaelab.training.optim import Optimizer, make_optimizer
from vaelab.training.run_dir import (
    RunState,
    check_disk_space,
    claim_run_dir,
    mark_finished,
    open_run,
    record_budget,
    truncate_metrics,
    update_run_config,
    write_run_config,
    writing,
)
from vaelab.training.selection import Best, improved, reconcile_best, write_best
from vaelab.training.step import TrainStep, select_device
from vaelab.training.stopping import EpochProgress, GracefulStop, StopRequested
from vaelab.training.tracking import NullTracker, open_tracker

TRAIN_KEYS = ("train_loss", "train_recon", "train_kl", "train_seconds")


def train(
    config: TrainConfig | None = None,
    out: Path | str | None = None,
    resume: Path | str | None = None,
    data: Dataset | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    epochs: int | None = None,
    device: str | None = None,
    from_epoch: int | None = None,
    time_budget: float | None = None,
) -> Path:
    """Train a model and write its run directory; returns the run's path.

    ``resume=RUN`` continues RUN from checkpoints/last.pt with its saved settings
    (``epochs`` may raise the target, or ``time_budget`` a --time-budget run's minutes;
    ``device`` may change), or from its checkpoint of epoch ``from_epoch``. ``data`` (the whole dataset) skips loading. SIGINT/SIGTERM stop
    at the next step boundary after writing a checkpoint. Started by torchrun, each
    process trains its share of every batch (vaelab.training.distributed) and rank 0
    alone writes the run, holding its writer lock (vaelab.lock). A write the disk refuses
    is a StorageError naming the intact checkpoint and the resume command.
    """
    world = world_from_env()
    state = open_run(config, out, resume, epochs, device, world, from_epoch, time_budget)
    with writing(state):  # holds the writer lock; says a full disk plainly
        if not state.finish_only:
            dev = select_device(state.config.device, world)
            init_process_group(world, dev)
            try:
                run_epochs(set_up(state, dev, world, data, progress and world.is_main, log))
            except RuntimeError as exc:
                if world.distributed and is_peer_failure(exc):
                    first = str(exc).splitlines()[0][:100]
                    raise RankLostError(
                        f"rank {world.rank}: another rank stopped ({first})"
                    ) from None
                raise
            finally:
                destroy_process_group()
        if world.is_main:
            finish(RunPaths(state.root))
    return state.root


@dataclass
class Session:
    """What the epochs of one run need, built once by ``set_up``."""

    config: TrainConfig
    paths: RunPaths
    world: World
    device: torch.device
    data: Dataset
    model: LatentModel
    optimizer: Optimizer
    step: TrainStep
    start: int  # the first epoch to run
    partial: EpochProgress | None  # where an interrupted epoch stopped
    tracker: NullTracker
    progress: bool
    log: Callable[[str], None]
    average: WeightAverage | None = None  # --ema
    clock: BudgetClock | None = None  # --time-budget
    best: Best | None = None  # the epoch of best.pt (--val-size; rank 0 only)

    @property
    def main(self) -> bool:
        return self.world.is_main

    @property
    def tested(self) -> LatentModel:
        """The model that is tested and saved: the moving average under --ema."""
        return evaluated(self.model, self.average)


def set_up(
    state: RunState,
    dev: torch.device,
    world: World,
    data: Dataset | None,
    progress: bool,
    log: Callable[[str], None],
) -> Session:
    """Data, model, optimiser and step for ``state``'s run; a new run's directory and
    config.json, or a resumed run's weights, optimiser and RNG states."""
    config, paths = state.config, RunPaths(state.root)
    if config.time_budget is not None and world.distributed:
        raise VaelabError(
            "--time-budget trains in one process for now (the ranks would have to agree "
            "on the clock every step); drop --nproc or use --epochs"
        )
    log = log if world.is_main else (lambda _msg: None)
    # First, so a missing optional extra is reported before any data is read.
    tracker = open_tracker(config.tensorboard and world.is_main, paths.tensorboard)
    data = prepare_data(config, data, state.meta["data"]["sha256"] if state.meta else None)
    n_classes = label_classes(data) if config.condition == "label" else 0
    torch.manual_seed(config.seed)  # the same initial weights on every rank
    model = build_model(
        config.model, input_shape=data.input_shape, n_classes=n_classes, **config.to_dict()
    ).to(dev)
    if config.output_bias_init and state.ckpt is None:  # a fresh run; a resumed one has its own
        model.init_output_bias(data.x_train.float().mean(0))
    optimizer = make_optimizer(model, config.lr, config.adam_eps)
    average = WeightAverage(model, config.ema) if config.ema is not None else None
    if world.rank > 0:  # other noise on each rank; rank 0 draws what one process draws
        torch.manual_seed(config.seed * 1_000_003 + world.rank)
    partial, best, saved_clock = None, None, None
    if state.ckpt is not None:
        _restore(state, model, optimizer, world, average)
        partial = EpochProgress(**state.ckpt["partial"]) if state.ckpt.get("partial") else None
        saved_clock = state.ckpt.get("budget")  # a cached epoch's too (--from-epoch)
        if world.is_main:
            check_disk_space(state.root, model, data, config, state.start)
            truncate_metrics(paths.metrics, state.start - 1)
            best = reconcile_best(paths, state.ckpt) if data.x_val is not None else None
            update_run_config(paths, config, world.size)  # a new --epochs target or --device
        log(f"resuming {state.root} at epoch {state.start}{_target(config, saved_clock)}"
            f"{_source(state)}")  # fmt: skip
    elif world.is_main:
        claim_run_dir(state)
        check_disk_space(state.root, model, data, config)
        write_run_config(paths, config, dict(vars(model.config)), data, dev, world.size)
        truncate_metrics(paths.metrics, -1)
    step = TrainStep(model, optimizer, config, dev, world, average)
    clock = None
    if config.time_budget is not None:
        clock = BudgetClock.from_checkpoint(config.time_budget, saved_clock)
    return Session(
        config, paths, world, dev, data, model, optimizer, step, state.start, partial, tracker,
        progress, log, average, clock, best,
    )  # fmt: skip


def _restore(
    state: RunState,
    model: LatentModel,
    optimizer: Optimizer,
    world: World,
    average: WeightAverage | None = None,
) -> None:
    """The checkpoint's weights, optimiser and RNG states; a cached epoch's checkpoint
    (--from-epoch) has weights only: the optimiser starts afresh, the RNG as seeded.
    Under --ema the checkpoint's "model" is the average and "model_raw" the trained
    weights (a cached epoch's weights-only checkpoint: the average, taken as both)."""
    paths = RunPaths(state.root)
    try:
        model.load_state_dict(state.ckpt.get("model_raw", state.ckpt["model"]))
        if average is not None:
            average.load(state.ckpt["model"], state.ckpt.get("ema_updates", 0))
        if is_resumable(state.ckpt):
            optimizer.load_state_dict(state.ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise VaelabError(
            f"{state.source} does not fit model {state.config.model!r} of {paths.config} "
            f"({str(exc).splitlines()[0][:120]}); it is from another architecture"
        ) from None
    if is_resumable(state.ckpt):
        restore_rng_state(state.ckpt, world)


def _target(config: TrainConfig, saved_clock: dict[str, Any] | None) -> str:
    if config.time_budget is None:
        return f" of {config.epochs}"
    spent = (saved_clock or {}).get("seconds", 0.0) / 60
    return f" with {max(0.0, config.time_budget - spent):.2f} of {config.time_budget:g} min left"


def _source(state: RunState) -> str:
    if state.source is None or state.source == RunPaths(state.root).last:
        return ""
    if is_resumable(state.ckpt):
        return f" from {state.source.name}"
    return (
        f" from {state.source.name}: weights only, so a fresh optimiser state (the result "
        "will not match an uninterrupted run bit for bit)"
    )


def run_epochs(s: Session) -> None:
    """Epochs ``s.start`` .. E (or until --time-budget is spent): train (from epoch 1),
    test, cache, checkpoint, log."""
    x_train, x_test = s.data.x_train.to(s.device), s.data.x_test.to(s.device)
    y_train = s.data.y_train.to(s.device) if s.model.conditional else None
    failpoint(s.world)
    epoch, row = s.start, {}
    with GracefulStop() as stop:
        while True:
            row = {"epoch": epoch, **dict.fromkeys(TRAIN_KEYS)}
            if epoch > 0:
                if s.clock is not None and not s.clock.running:
                    s.clock.start()  # at the first step: epoch 0 is no training
                resume_from = s.partial if s.partial and s.partial.epoch == epoch else None
                try:
                    row.update(
                        train_epoch(
                            s.step,
                            x_train,
                            s.config,
                            epoch,
                            s.progress,
                            resume_from,
                            stop,
                            s.world,
                            y_train,
                            s.clock,
                        )
                    )
                except StopRequested as stopped:
                    save_last(s, epoch - 1, partial=vars(stopped.progress))
                    step = stopped.progress.step
                    raise _interrupted(stop.signum, s.paths.root, epoch, step) from None
            final = epoch == s.config.epochs  # an epoch target is known
            if s.clock is not None:  # the clock decides at the end of the epoch
                s.clock.epoch_end_started()
                final = s.clock.last_epoch if epoch > 0 else False
            if s.main:
                budget = s.clock.state() if s.clock is not None else None
                final = end_of_epoch(
                    s.tested, x_test, s.data, s.config, s.paths, epoch, row, final, budget
                )
            if s.clock is not None:
                s.clock.done = final
            new_best = improved(s.best, epoch, row) if s.main else None
            s.best = new_best or s.best
            keep = s.config.keep_every and epoch > 0 and epoch % s.config.keep_every == 0
            save_last(s, epoch, copies=[s.paths.epoch_checkpoint(epoch)] if keep else [])
            if new_best is not None:  # after last.pt, which names the epoch best.pt holds
                write_best(s.paths, dict(vars(s.model.config)), s.tested.state_dict(), new_best)
            if s.clock is not None:
                s.clock.epoch_end_finished()
            if s.main:
                s.log(epoch_line(row))
                shown = s.data.y_test[:N_SHOWN] if s.model.conditional else None
                s.tracker.log_epoch(epoch, row, s.tested, x_test[:N_SHOWN], shown)
            if final:
                break
            if stop.signum is not None:
                raise _interrupted(stop.signum, s.paths.root, epoch + 1, 0)
            epoch += 1
    if s.clock is not None and s.main:
        summary = _budget_summary(s, row)
        record_budget(s.paths, summary)
        s.log(summary_line(s.config.time_budget, summary))
    s.tracker.close()


def _budget_summary(s: Session, last: dict[str, Any]) -> dict[str, Any]:
    """What a --time-budget run did, for config.json and the line printed at its end."""
    per_epoch = (len(s.data.x_train) + s.config.batch_size - 1) // s.config.batch_size
    return {
        "minutes": s.config.time_budget,
        "seconds": round(s.clock.elapsed(), 3),
        "epochs": last["epoch"],
        "steps": s.clock.steps,
        "last_epoch_steps": last.get("steps", per_epoch),
        "steps_per_epoch": per_epoch,
    }


def save_last(s: Session, epoch: int, copies: list[Path] = (), **extra: Any) -> None:
    """checkpoints/last.pt: weights, optimiser, every rank's RNG states, the epoch done
    (``partial``: how far the next one got); under --ema "model" is the average and
    "model_raw" the trained weights; the best epoch so far (--val-size) and the budget
    spent (--time-budget). Every rank takes part; rank 0 writes, the ``copies``
    (--keep-every's) first, so a crash never leaves last.pt without them."""
    rngs = gather_objects(rng_state(), s.world)
    if s.main:
        if s.average is not None:
            extra.update(model_raw=s.model.state_dict(), ema_updates=s.average.updates)
        if s.best is not None:
            extra.update(best=s.best)
        if s.clock is not None:
            extra.update(budget=s.clock.state())
        data = encode_checkpoint(
            config=s.config.to_dict(),
            model_config=dict(vars(s.model.config)),
            model=s.tested.state_dict(),
            optimizer=s.optimizer.state_dict(),
            rng=rngs[0],
            rng_ranks=rngs,
            epoch=epoch,
            **extra,
        )
        for path in [*copies, s.paths.last]:
            atomic_write_bytes(path, data)


def finish(paths: RunPaths) -> None:
    """Reconstructions by cached epoch and prior samples, then config.json says
    "finished" (a run killed while drawing them finishes on resume)."""
    final_figures(paths.root)
    mark_finished(paths)


def _interrupted(signum: int | None, root: Path, epoch: int, step: int) -> TrainingInterrupted:
    code = 130 if signum == signal.SIGINT else 143
    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    return TrainingInterrupted(
        f"stopped by {name} at epoch {epoch}, step {step}; checkpoint written. "
        f"Resume with: vaelab train --resume {root}",
        code,
    )
