"""Training: the lecture's epoch-0-to-E loop as one plain function.

Epoch 0 evaluates the untrained model; every later epoch trains on a fresh permutation of
the in-memory training set, then evaluates on the test set with z = mu (the lecture's
"test loss", not a sampled ELBO: ``vaelab evaluate`` computes that). Losses are summed
over pixels and reported per sample, in nats.
"""

from __future__ import annotations

import datetime
import shutil
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from vaelab.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vaelab.config import TrainConfig
from vaelab.data import Dataset, binarize_dataset, check_unit_range, load_dataset
from vaelab.errors import DivergenceError, TrainingInterrupted, VaelabError
from vaelab.fileio import remove_stale_temp_files
from vaelab.models import build_model
from vaelab.objectives import elbo_terms, training_loss
from vaelab.run import (
    N_SHOWN,
    RunPaths,
    append_metrics,
    check_disk_space,
    create_run_dir,
    mark_finished,
    read_run_config,
    refuse_existing_run,
    truncate_metrics,
    write_latents,
    write_run_config,
)
from vaelab.stopping import EpochProgress, GracefulStop, StopRequested
from vaelab.tracking import open_tracker

EVAL_BATCH = 1000


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaelabError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam with its fused kernel (one pass over all parameters, ~15% of a CPU epoch of the
    lecture's model saved: docs/benchmarks.md), or the default one where this PyTorch or
    device has none. Both keep the same state, so checkpoints move between them."""
    try:
        return torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=lr)


def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the training set in ``epoch``: a function of (seed, epoch) only, so a
    resumed run and every distributed rank draw the same batches."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))


@torch.no_grad()
def evaluate_loss(
    model: nn.Module, x: Tensor, config: TrainConfig, keep_latents: bool = False
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Per-sample test loss, recon and KL with z = mu; optionally the means, log-variances
    and the reconstructions of the first N_SHOWN images."""
    model.eval()
    sums = torch.zeros(3, device=x.device, dtype=torch.float64)
    mus, logvars = [], []
    shown = None
    for start in range(0, len(x), EVAL_BATCH):
        xb = x[start : start + EVAL_BATCH]
        mu, logvar = model.encode(xb)
        logits = model.decode_logits(mu)
        terms = elbo_terms(model, logits, xb, mu, logvar, config, config.beta)
        sums += torch.stack([t.sum() for t in terms]).double()
        if keep_latents:
            mus.append(mu.float().cpu())
            logvars.append(
                (logvar if logvar is not None else torch.full_like(mu, -np.inf)).float().cpu()
            )
            if shown is None:
                shown = torch.sigmoid(logits[:N_SHOWN]).float().cpu().numpy()
    loss, rec, kl = (sums / len(x)).tolist()
    latents = {}
    if keep_latents:
        latents = {
            "mu": torch.cat(mus).numpy(),
            "logvar": torch.cat(logvars).numpy(),
            "recon": shown,
        }
    return {"test_loss": loss, "test_recon": rec, "test_kl": kl}, latents


def _grad_norm(model: nn.Module) -> Tensor:
    return torch.nn.utils.get_total_norm([p.grad for p in model.parameters() if p.grad is not None])


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    config: TrainConfig,
    epoch: int,
    progress: bool,
    resume_from: EpochProgress | None = None,
    stop: GracefulStop | None = None,
) -> dict[str, float]:
    """One pass over ``x`` in the epoch's permutation; per-sample averages of the terms.

    The loss is summed over the batch, as in the lecture (Adam is insensitive to scale).
    ``resume_from`` continues a pass interrupted at a step boundary; ``stop`` is polled
    after every step and raises StopRequested with the progress so far."""
    model.train()
    n = len(x)
    state = resume_from or EpochProgress(epoch)
    perm = epoch_permutation(n, config.seed, epoch).to(x.device)
    sums = torch.tensor(state.sums, device=x.device, dtype=torch.float64)
    steps = (n + config.batch_size - 1) // config.batch_size
    on_cpu = x.device.type == "cpu"  # checks each step are free on CPU, a sync on a GPU
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
        xb = x[perm[step * config.batch_size : (step + 1) * config.batch_size]]
        if config.binarize == "dynamic":  # a fresh binary image per visit (Burda et al.)
            xb = torch.bernoulli(xb)
        terms = training_loss(model, xb, config, epoch, step / steps)
        loss = terms.loss.sum()
        if on_cpu and not torch.isfinite(loss):
            raise _divergence(epoch, step, "loss")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        elif on_cpu:
            norm = _grad_norm(model)
        if on_cpu and not torch.isfinite(norm):
            raise _divergence(epoch, step, "gradient")
        optimizer.step()
        sums += torch.stack([t.detach().sum() for t in terms]).double()
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{sums[0].item() / min(n, (step + 1) * config.batch_size):.2f}")
        bar.update()
        if stop is not None and stop.signum is not None and step < steps - 1:
            bar.close()
            raise StopRequested(
                EpochProgress(
                    epoch, step + 1, sums.tolist(), state.seconds + time.perf_counter() - t0
                )
            )
    bar.close()
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


def default_run_dir() -> Path:
    return Path("runs") / datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")


def _figures(paths: RunPaths, data: Dataset, epoch: int, latents: dict[str, np.ndarray]) -> None:
    from vaelab import plots

    plots.plot_rows(
        [
            latents["inputs"] if "inputs" in latents else data.x_test[:N_SHOWN].numpy(),
            latents["recon"],
        ],
        ["input", f"epoch {epoch}"],
        data.input_shape,
        f"Test images and their reconstructions, epoch {epoch}",
        paths.figures / f"reconstructions-epoch-{epoch:03d}.png",
    )


def _final_figures(root: Path) -> None:
    """Reconstructions by cached epoch and prior samples, as ``vaelab reconstruct`` and
    ``vaelab sample`` draw them."""
    from vaelab import figures
    from vaelab.run import load_run

    run = load_run(root)
    figures.make_reconstructions(run)
    figures.make_samples(run)


@dataclass
class RunState:
    """What the epoch loop needs to know about where a run starts."""

    config: TrainConfig
    root: Path
    start: int  # first epoch to run
    ckpt: dict[str, Any] | None  # the checkpoint resumed from, if any
    meta: dict[str, Any] | None  # config.json of a resumed run
    finish_only: bool = False  # every epoch is trained; only the final figures are missing


def _open_run(config, out, resume, epochs, device) -> RunState:
    """A new run directory, or the saved settings and last checkpoint of ``resume``."""
    if resume is None:
        config = config or TrainConfig()
        root = Path(out) if out is not None else default_run_dir()
        refuse_existing_run(root)
        return RunState(config, root, 0, None, None)
    root = Path(resume)
    meta = read_run_config(root)
    remove_stale_temp_files(root)  # left by a process killed mid-write
    saved = dict(meta["config"])
    saved.update({k: v for k, v in (("epochs", epochs), ("device", device)) if v is not None})
    config = TrainConfig.from_dict(saved)
    if not RunPaths(root).last.exists():  # stopped before its first checkpoint: start over
        return RunState(config, root, 0, None, meta)
    ckpt = load_checkpoint(RunPaths(root).last)
    partial = ckpt.get("partial")
    start = int(partial["epoch"]) if partial else int(ckpt["epoch"]) + 1
    if start > config.epochs and "finished" not in meta:  # killed while drawing the figures
        return RunState(config, root, start, ckpt, meta, finish_only=True)
    if start > config.epochs:
        raise VaelabError(
            f"{root} already finished epoch {start - 1} of {config.epochs}; "
            f"pass --epochs N (N > {start - 1}) to train longer"
        )
    return RunState(config, root, start, ckpt, meta)


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
    SIGINT/SIGTERM stop at the next step boundary after writing a checkpoint.
    """
    state = _open_run(config, out, resume, epochs, device)
    config, root, paths = state.config, state.root, RunPaths(state.root)
    if state.finish_only:
        _final_figures(root)
        mark_finished(paths)
        return root
    dev = select_device(config.device)
    tracker = open_tracker(config.tensorboard, root)  # --tensorboard: RUN/tb/
    data = _prepare_data(config, data, state.meta)
    torch.manual_seed(config.seed)
    learn_sigma = config.gaussian_sigma == "learned"
    model = build_model(
        config.model,
        **{**config.to_dict(), "input_shape": data.input_shape, "learn_sigma": learn_sigma},
    )
    model = model.to(dev)
    optimizer = make_optimizer(model, config.lr)
    model_config = dict(vars(model.config))
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
        set_rng_state(state.ckpt["rng"])
        partial = state.ckpt.get("partial")
        partial = EpochProgress(**partial) if partial else None
        truncate_metrics(paths.metrics, state.start - 1)
        log(f"resuming {root} at epoch {state.start} of {config.epochs}")
    else:
        create_run_dir(root)
        check_disk_space(root, model, data, config)
        write_run_config(paths, config, model_config, data, dev)
        truncate_metrics(paths.metrics, -1)

    def save_last(epoch: int, **extra: Any) -> None:
        save_checkpoint(
            paths.last,
            config=config.to_dict(),
            model_config=model_config,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            rng=rng_state(),
            epoch=epoch,
            **extra,
        )

    x_train, x_test = data.x_train.to(dev), data.x_test.to(dev)
    with GracefulStop() as stop:
        for epoch in range(state.start, config.epochs + 1):
            row: dict[str, Any] = dict.fromkeys(
                ("train_loss", "train_recon", "train_kl", "train_seconds"), None
            )
            row = {"epoch": epoch, **row}
            if epoch > 0:
                try:
                    row.update(
                        train_epoch(
                            model,
                            optimizer,
                            x_train,
                            config,
                            epoch,
                            progress,
                            partial if partial and partial.epoch == epoch else None,
                            stop,
                        )
                    )
                except StopRequested as stopped:
                    save_last(epoch - 1, partial=vars(stopped.progress))
                    raise _interrupted(stop.signum, root, epoch, stopped.progress.step) from None
            _end_of_epoch(model, x_test, data, config, paths, epoch, row)
            save_last(epoch)
            if config.keep_every and epoch % config.keep_every == 0 and epoch > 0:
                shutil.copyfile(paths.last, paths.epoch_checkpoint(epoch))
            log(_epoch_line(row))
            tracker.log_epoch(epoch, row, model, x_test[:N_SHOWN])
            if stop.signum is not None and epoch < config.epochs:
                raise _interrupted(stop.signum, root, epoch + 1, 0)
    tracker.close()
    _final_figures(root)
    mark_finished(paths)
    return root


def _end_of_epoch(model, x_test, data, config, paths, epoch, row) -> None:
    """Evaluate, cache latents/weights/figures for cached epochs, append the metrics row."""
    t0 = time.perf_counter()
    cache = epoch in config.cached_epochs()
    test, latents = evaluate_loss(model, x_test, config, keep_latents=cache)
    if not np.isfinite(test["test_loss"]):
        raise DivergenceError(
            f"training diverged: non-finite test loss after epoch {epoch}; the last good "
            "checkpoint is kept. Try a lower --lr or --grad-clip 100"
        )
    row.update(test, eval_seconds=time.perf_counter() - t0)
    if cache:
        write_latents(paths, epoch, latents, data)
        save_checkpoint(
            paths.epoch_checkpoint(epoch),
            model_config=dict(vars(model.config)),
            model=model.state_dict(),
            epoch=epoch,
        )
        shown = dict(latents, inputs=data.x_test[:N_SHOWN].flatten(1).numpy())
        _figures(paths, data, epoch, shown)
    append_metrics(paths.metrics, row)


def _interrupted(signum: int | None, root: Path, epoch: int, step: int) -> TrainingInterrupted:
    code = 130 if signum == signal.SIGINT else 143
    name = "SIGINT" if signum == signal.SIGINT else "SIGTERM"
    return TrainingInterrupted(
        f"stopped by {name} at epoch {epoch}, step {step}; checkpoint written. "
        f"Resume with: vaelab train --resume {root}",
        code,
    )


def _epoch_line(row: dict[str, Any]) -> str:
    train = "      -" if row["train_loss"] is None else f"{row['train_loss']:7.2f}"
    secs = "" if row["train_seconds"] is None else f"  {row['train_seconds']:.1f} s"
    return (
        f"epoch {row['epoch']:3d}  train {train}  test {row['test_loss']:7.2f} "
        f"(recon {row['test_recon']:.2f} + kl {row['test_kl']:.2f}){secs}"
    )
