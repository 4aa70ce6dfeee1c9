"""Training: the lecture's epoch-0-to-E loop as one plain function.

Epoch 0 evaluates the untrained model; every later epoch trains on a fresh permutation of
the in-memory training set, then evaluates on the test set with z = mu (the lecture's
"test loss", not a sampled ELBO: ``vaelab evaluate`` computes that). Losses are summed
over pixels and reported per sample, in nats.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

import vaelab
from vaelab.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from vaelab.config import TrainConfig
from vaelab.data import Dataset, binarize_dataset, check_unit_range, load_dataset
from vaelab.errors import DivergenceError, VaelabError
from vaelab.fileio import atomic_write_json, atomic_write_text
from vaelab.losses import negative_elbo
from vaelab.models import build_model
from vaelab.objectives import training_loss
from vaelab.run import RunPaths, read_metrics, read_run_config

N_SHOWN = 16  # test images whose reconstructions are kept per cached epoch
EVAL_BATCH = 1000


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise VaelabError("--device cuda asked for, but PyTorch sees no CUDA GPU; use --device cpu")
    return torch.device(name)


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
        terms = negative_elbo(logits, xb.flatten(1), mu, logvar, config.beta, config.recon)
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


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    config: TrainConfig,
    epoch: int,
    progress: bool,
) -> dict[str, float]:
    """One pass over ``x`` in the epoch's permutation; per-sample averages of the terms.

    The loss is summed over the batch, as in the lecture (Adam is insensitive to scale)."""
    model.train()
    n = len(x)
    perm = epoch_permutation(n, config.seed, epoch).to(x.device)
    sums = torch.zeros(3, device=x.device, dtype=torch.float64)
    steps = (n + config.batch_size - 1) // config.batch_size
    check_each_step = x.device.type == "cpu"  # free on CPU; a sync per step on a GPU
    bar = tqdm(
        total=steps,
        desc=f"epoch {epoch}/{config.epochs}",
        leave=False,
        disable=not progress,
        unit="step",
        file=sys.stderr,
    )
    t0 = time.perf_counter()
    for step in range(steps):
        xb = x[perm[step * config.batch_size : (step + 1) * config.batch_size]]
        if config.binarize == "dynamic":  # a fresh binary image per visit (Burda et al.)
            xb = torch.bernoulli(xb)
        terms = training_loss(model, xb, config, epoch)
        loss = terms.loss.sum()
        if check_each_step and not torch.isfinite(loss):
            raise _divergence(epoch, step)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sums += torch.stack([t.detach().sum() for t in terms]).double()
        if progress and (step % 10 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{sums[0].item() / min(n, (step + 1) * config.batch_size):.2f}")
        bar.update()
    bar.close()
    seconds = time.perf_counter() - t0
    loss, rec, kl = (sums / n).tolist()
    if not np.isfinite(loss):
        raise _divergence(epoch, steps - 1)
    return {"train_loss": loss, "train_recon": rec, "train_kl": kl, "train_seconds": seconds}


def _divergence(epoch: int, step: int) -> DivergenceError:
    return DivergenceError(
        f"training diverged: non-finite loss at epoch {epoch}, step {step}; the last good "
        "checkpoint is kept. Try a lower --lr, or check that the data range suits --recon"
    )


def default_run_dir() -> Path:
    return Path("runs") / datetime.datetime.now().strftime("%Y-%m-%d-%H%M%S")


def _check_new_run_dir(root: Path) -> None:
    paths = RunPaths(root)
    if paths.config.exists() or paths.last.exists():
        raise VaelabError(
            f"{root} already holds a run; continue it with: vaelab train --resume {root}, "
            "or choose another --out"
        )
    if root.exists() and not root.is_dir():
        raise VaelabError(f"--out {root} exists and is not a directory")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        raise VaelabError(f"cannot write the run directory {root}: {exc.strerror or exc}") from None


def _write_latents(
    paths: RunPaths, epoch: int, latents: dict[str, np.ndarray], data: Dataset
) -> None:
    from vaelab.fileio import atomic_write

    arrays = dict(
        latents, labels=data.y_test.numpy(), inputs=data.x_test[:N_SHOWN].flatten(1).numpy()
    )
    atomic_write(paths.latent_file(epoch), lambda f: np.savez_compressed(f, **arrays))


def _append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _truncate_metrics(path: Path, last_epoch: int) -> None:
    """Drop rows written after the checkpoint we resume from (a crash between the two)."""
    rows = [r for r in read_metrics(path) if r.get("epoch", -1) <= last_epoch]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


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


def _final_figures(
    paths: RunPaths, model: nn.Module, data: Dataset, config: TrainConfig, device: torch.device
) -> None:
    from vaelab import plots

    rows, labels = [], []
    for epoch in config.cached_epochs():
        if paths.latent_file(epoch).is_file():
            with np.load(paths.latent_file(epoch)) as npz:
                if not rows:
                    rows.append(npz["inputs"])
                    labels.append("input")
                rows.append(npz["recon"])
                labels.append(f"epoch {epoch}")
    if rows:
        plots.plot_rows(
            rows,
            labels,
            data.input_shape,
            "Test images (top) and their reconstructions by epoch",
            paths.figures / "reconstructions.png",
        )
    model.eval()
    with torch.no_grad():
        z = torch.randn(64, config.latent_dim, generator=torch.Generator().manual_seed(0))
        samples = model.decode(z.to(device)).float().cpu().numpy()
    kind = "z ~ N(0, I)" if getattr(model, "stochastic", True) else "z ~ N(0, I) through a plain AE"
    plots.plot_grid(
        samples,
        data.input_shape,
        f"Prior samples, {kind}, epoch {config.epochs}",
        paths.figures / "samples.png",
        ncol=8,
    )


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
    """
    if resume is not None:
        root = Path(resume)
        meta = read_run_config(root)
        saved = dict(meta["config"])
        if epochs is not None:
            saved["epochs"] = epochs
        if device is not None:
            saved["device"] = device
        config = TrainConfig.from_dict(saved)
        ckpt = load_checkpoint(RunPaths(root).last)
        start = int(ckpt["epoch"]) + 1
        if start > config.epochs:
            raise VaelabError(
                f"{root} already finished epoch {start - 1} of {config.epochs}; "
                f"pass --epochs N (N > {start - 1}) to train longer"
            )
    else:
        config = config or TrainConfig()
        root = Path(out) if out is not None else default_run_dir()
        _check_new_run_dir(root)
        ckpt, start = None, 0

    dev = select_device(config.device)
    data = data if data is not None else load_dataset(config.dataset, config.data_dir)
    if config.limit:
        data = data.limited(config.limit)
    data = binarize_dataset(data, config.binarize, config.seed)
    if config.recon == "bce":
        check_unit_range(data)
    if ckpt is not None and meta["data"]["sha256"] != data.sha256:
        raise VaelabError(f"{root} was trained on other data (checksum differs); cannot resume")

    torch.manual_seed(config.seed)
    model = build_model(
        config.model,
        input_shape=data.input_shape,
        latent_dim=config.latent_dim,
        hidden=config.hidden,
    ).to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    paths = RunPaths(root)
    model_config = dict(vars(model.config))
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"])
        _truncate_metrics(paths.metrics, start - 1)
        log(f"resuming {root} at epoch {start} of {config.epochs}")
    else:
        meta = {
            "vaelab_version": vaelab.__version__,
            "torch_version": torch.__version__,
            "config": config.to_dict(),
            "model_config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in model_config.items()
            },
            "data": data.describe(),
            "device": str(dev),
            "test_loss_note": "test_* metrics use z = mu (the lecture's eval mode), not a "
            "sampled ELBO; vaelab evaluate computes the sampled bound",
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        atomic_write_json(paths.config, meta)

    x_train, x_test = data.x_train.to(dev), data.x_test.to(dev)
    for epoch in range(start, config.epochs + 1):
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": None,
            "train_recon": None,
            "train_kl": None,
            "train_seconds": None,
        }
        if epoch > 0:
            row.update(train_epoch(model, optimizer, x_train, config, epoch, progress))
        t0 = time.perf_counter()
        cache = epoch in config.cached_epochs()
        test, latents = evaluate_loss(model, x_test, config, keep_latents=cache)
        if not np.isfinite(test["test_loss"]):
            raise DivergenceError(
                f"training diverged: non-finite test loss after epoch {epoch}; the last good "
                "checkpoint is kept. Try a lower --lr, or check that the data range suits --recon"
            )
        row.update(test, eval_seconds=time.perf_counter() - t0)
        if cache:
            _write_latents(paths, epoch, latents, data)
            save_checkpoint(
                paths.epoch_checkpoint(epoch),
                model_config=model_config,
                model=model.state_dict(),
                epoch=epoch,
            )
            _figures(
                paths, data, epoch, dict(latents, inputs=data.x_test[:N_SHOWN].flatten(1).numpy())
            )
        _append_metrics(paths.metrics, row)
        save_checkpoint(
            paths.last,
            config=config.to_dict(),
            model_config=model_config,
            model=model.state_dict(),
            optimizer=optimizer.state_dict(),
            rng=rng_state(),
            epoch=epoch,
        )
        log(_epoch_line(row))
    _final_figures(paths, model, data, config, dev)
    return root


def _epoch_line(row: dict[str, Any]) -> str:
    train = "      -" if row["train_loss"] is None else f"{row['train_loss']:7.2f}"
    secs = "" if row["train_seconds"] is None else f"  {row['train_seconds']:.1f} s"
    return (
        f"epoch {row['epoch']:3d}  train {train}  test {row['test_loss']:7.2f} "
        f"(recon {row['test_recon']:.2f} + kl {row['test_kl']:.2f}){secs}"
    )
