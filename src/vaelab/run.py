"""Reading a run directory: where each file lives (``RunPaths``) and ``load_run``.

RUN/config.json               settings, versions, dataset checksum
RUN/metrics.jsonl             one JSON object per epoch (0 = untrained)
RUN/latents/epoch-NNN.npz     test-set mu, logvar, labels (+ a few reconstructions)
RUN/checkpoints/last.pt       model, optimiser, RNG states, epoch (resume from here)
RUN/checkpoints/epoch-NNN.pt  model weights at each cached epoch
RUN/figures/                  PNG figures
RUN/embeddings/               cached 2-D embeddings of the test means (vaelab embed)
RUN/eval.json                 vaelab evaluate's numbers
RUN/report.html               vaelab report's page
RUN/tb/                       TensorBoard logs (--tensorboard)

Writing one (a new run, resuming, the end of each epoch) is ``vaelab.training.run_dir``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.config import TrainConfig
from vaelab.data.datasets import Dataset, load_dataset, prepare_data
from vaelab.errors import VaelabError
from vaelab.models import MODELS, LatentModel, build_model
from vaelab.training.checkpoint import load_checkpoint

N_SHOWN = 16  # test images whose reconstructions are kept per cached epoch


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
        self.embeddings = self.root / "embeddings"
        self.eval = self.root / "eval.json"
        self.report = self.root / "report.html"
        self.tensorboard = self.root / "tb"

    def latent_file(self, epoch: int) -> Path:
        return self.latents / f"epoch-{epoch:03d}.npz"

    def epoch_checkpoint(self, epoch: int) -> Path:
        return self.checkpoints / f"epoch-{epoch:03d}.pt"

    def embedding_file(self, epoch: int, method: str) -> Path:
        return self.embeddings / f"epoch-{epoch:03d}-{method}.npz"


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
    model: LatentModel
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

    def dataset(
        self,
        data_dir: str | None = None,
        *,
        data: Dataset | None = None,
        binarize: str | None = None,
    ) -> Dataset:
        """The data this run was trained on (its limit and binarisation, or ``binarize``
        instead), checked against the checksum recorded in config.json
        (``vaelab.data.datasets.prepare_data``). ``data`` (the whole dataset) skips
        loading it; ``data_dir`` looks there first instead of the run's --data-dir."""
        if data is None and data_dir is not None:
            data = load_dataset(self.config.dataset, data_dir)
        recorded = self.meta.get("data", {}).get("sha256")
        return prepare_data(self.config, data, recorded, binarize)

    def model_at(self, epoch: int) -> LatentModel:
        """The model's weights as they were at a cached epoch."""
        ckpt = load_checkpoint(self.paths.epoch_checkpoint(epoch))
        model = build_model(self.config.model, **_decoder_settings(ckpt, self.config))
        model.load_state_dict(ckpt["model"])
        return model.eval()


def _plain(values: dict[str, Any]) -> dict[str, Any]:
    """Model settings with tuples as lists, as JSON stores them."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _decoder_settings(ckpt: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """The checkpoint's model settings and the run's p(x|z) (likelihood, Gaussian scale)."""
    return {
        **ckpt["model_config"],
        "likelihood": config.likelihood,
        "gaussian_sigma": config.gaussian_sigma,
    }


def load_run(path: Path | str, map_location: str = "cpu") -> Run:
    """Load a run directory: its config, metrics and the model from checkpoints/last.pt."""
    root = Path(path)
    meta = read_run_config(root)
    config = TrainConfig.from_dict(meta["config"])
    ckpt = load_checkpoint(RunPaths(root).last, map_location)
    saved = meta.get("model_config")
    if saved is not None and _plain(saved) != _plain(ckpt.get("model_config", {})):
        raise VaelabError(
            f"{root}: checkpoints/last.pt does not fit model {config.model!r} of config.json "
            "(its model settings differ); it is from another run or architecture"
        )
    try:
        model = build_model(config.model, **_decoder_settings(ckpt, config))
        model.load_state_dict(ckpt["model"])
    except (RuntimeError, KeyError, TypeError) as exc:
        raise VaelabError(
            f"{root}: checkpoint does not fit model {config.model!r} "
            f"({str(exc).splitlines()[0][:160]})"
        ) from None
    model.eval()
    return Run(root, config, model, read_metrics(RunPaths(root).metrics), meta, int(ckpt["epoch"]))
