"""The run directory and ``load_run``: everything a finished run leaves behind.

RUN/config.json               settings, versions, dataset checksum
RUN/metrics.jsonl             one JSON object per epoch (0 = untrained)
RUN/latents/epoch-NNN.npz     test-set mu, logvar, labels (+ a few reconstructions)
RUN/checkpoints/last.pt       model, optimiser, RNG states, epoch (resume from here)
RUN/checkpoints/epoch-NNN.pt  model weights at each cached epoch
RUN/figures/                  PNG figures
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from vaelab.checkpoint import load_checkpoint
from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.models import MODELS, build_model


class RunPaths:
    """Where each artefact of a run lives."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.config = self.root / "config.json"
        self.metrics = self.root / "metrics.jsonl"
        self.latents = self.root / "latents"
        self.checkpoints = self.root / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.figures = self.root / "figures"

    def latent_file(self, epoch: int) -> Path:
        return self.latents / f"epoch-{epoch:03d}.npz"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:03d}.pt"


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The metrics lines; a torn last line (a crash mid-write) is skipped."""
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def read_run_config(root: Path) -> dict[str, Any]:
    paths = RunPaths(root)
    if not root.is_dir():
        raise VaelabError(f"{root}: no such run directory")
    if not paths.config.is_file():
        raise VaelabError(f"{root}: not a vaelab run (no config.json); pass a run directory")
    try:
        meta = json.loads(paths.config.read_text())
        TrainConfig.from_dict(meta["config"])
        if meta["config"]["model"] not in MODELS:
            raise KeyError("model")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VaelabError(f"{paths.config}: not a vaelab run config ({exc})") from None
    return meta


@dataclass
class Run:
    """A trained run: ``model`` (eval mode, on CPU), ``config``, ``metrics`` and paths."""

    path: Path
    config: TrainConfig
    model: nn.Module
    metrics: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    epoch: int = 0

    @property
    def paths(self) -> RunPaths:
        return RunPaths(self.path)

    def cached_epochs(self) -> list[int]:
        return sorted(int(p.stem.split("-")[1]) for p in self.paths.latents.glob("epoch-*.npz"))

    def latents(self, epoch: int) -> dict[str, np.ndarray]:
        """Cached test-set ``mu``, ``logvar`` and ``labels`` at ``epoch``."""
        path = self.paths.latent_file(epoch)
        if not path.is_file():
            raise VaelabError(
                f"no latents cached for epoch {epoch} in {self.path}; cached epochs: "
                f"{', '.join(map(str, self.cached_epochs())) or 'none'}"
            )
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}

    def dataset(self, data_dir: str | None = None):
        """The data this run was trained on (limit and binarisation applied), checked
        against the checksum recorded in config.json."""
        from vaelab.data import binarize_dataset, load_dataset

        data = load_dataset(
            self.config.dataset, data_dir or self.config.data_dir, self.config.limit
        )
        recorded = self.meta.get("data", {}).get("sha256")
        if recorded and recorded != data.sha256:
            raise VaelabError(
                f"the data for {self.path} has changed since training (checksum differs)"
            )
        return binarize_dataset(data, self.config.binarize, self.config.seed)

    def model_at(self, epoch: int) -> nn.Module:
        """The model's weights as they were at a cached epoch."""
        ckpt = load_checkpoint(self.paths.epoch_checkpoint(epoch))
        model = build_model(self.config.model, **ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
        return model.eval()


def load_run(path: Path | str, map_location: str = "cpu") -> Run:
    """Load a run directory: its config, metrics and the model from checkpoints/last.pt."""
    root = Path(path)
    meta = read_run_config(root)
    config = TrainConfig.from_dict(meta["config"])
    ckpt = load_checkpoint(RunPaths(root).last, map_location)
    try:
        model = build_model(config.model, **ckpt["model_config"])
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise VaelabError(
            f"{root}: checkpoint does not fit model {config.model!r} "
            f"({str(exc).splitlines()[0][:160]})"
        ) from None
    model.eval()
    return Run(root, config, model, read_metrics(RunPaths(root).metrics), meta, int(ckpt["epoch"]))
