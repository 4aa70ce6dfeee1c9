"""Reading a run directory: where each file lives (``RunPaths``) and ``load_run``.

RUN/config.json               settings, versions, dataset checksum
RUN/metrics.jsonl             one JSON object per epoch (0 = untrained)
RUN/latents/epoch-NNN.npz     test-set mu, logvar, labels (+ a few reconstructions)
RUN/checkpoints/last.pt       model, optimiser, RNG states, epoch (resume from here)
RUN/checkpoints/epoch-NNN.pt  model weights at each cached epoch
RUN/checkpoints/best.pt       the weights of the epoch with the lowest val_loss (--val-size)
RUN/figures/                  PNG figures
RUN/embeddings/               cached 2-D embeddings of the test means (vaelab embed)
RUN/eval.json                 vaelab evaluate's numbers
RUN/report.html               vaelab report's page
RUN/tb/                       TensorBoard logs (--tensorboard)

Writing one (a new run, resuming, the end of each epoch) is ``vaelab.training.run_dir``.
Every file is checked against the SHA-256 recorded when it was written
(``vaelab.checksums``); ``vaelab.verify`` checks a whole run.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.checksums import check_json, check_zip, note_unverified, parse_json, read_json
from vaelab.config import TrainConfig
from vaelab.data.datasets import Dataset, load_dataset, prepare_data
from vaelab.errors import DamagedFileError, VaelabError
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
        self.best = self.checkpoints / "best.pt"
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


def check_metrics(path: Path) -> tuple[list[dict[str, Any]], list[tuple[int, str]], int]:
    """(rows, problems, rows without a checksum) of metrics.jsonl, each line checked
    against its checksum; a problem is (line number, why). A torn last line (a crash or a full
    disk mid-append: no newline, not even a closing brace) is skipped, not a problem."""
    rows, problems, unsealed = [], [], 0
    if not path.is_file():
        return rows, problems, unsealed
    lines = path.read_bytes().decode("utf-8", "replace").split("\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row, sealed = check_json(parse_json(line, ""), "")
        except json.JSONDecodeError:
            if number < len(lines) or "}" in line:
                problems.append((number, "not a JSON line"))
            continue  # else torn
        except DamagedFileError as exc:
            problems.append((number, exc.reason))
            continue
        if not isinstance(row, dict):
            problems.append((number, "not a metrics row"))
            continue
        rows.append(row)
        unsealed += not sealed
    return rows, problems, unsealed


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The metrics rows, every line checked (``check_metrics``); DamagedFileError names
    the first damaged line."""
    rows, problems, unsealed = check_metrics(path)
    if problems:
        number, why = problems[0]
        raise DamagedFileError(f"{path}, line {number}", why)
    if unsealed:
        note_unverified(path)
    return rows


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz written by vaelab (latents, embeddings), checksum checked;
    never unpickles."""
    data = path.read_bytes()
    sealed = check_zip(data, path)
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    if not sealed:
        note_unverified(path)
    return arrays


def read_run_config(root: Path) -> dict[str, Any]:
    """config.json of the run in ``root``, checked (its checksum, its settings)."""
    paths = RunPaths(root)
    if not root.is_dir():
        raise VaelabError(f"{root}: no such run directory")
    if not paths.config.is_file():
        raise VaelabError(f"{root}: not a vaelab run (no config.json); pass a run directory")
    try:
        meta, sealed = read_json(paths.config)
        TrainConfig.from_dict(meta["config"])
        if meta["config"]["model"] not in MODELS:
            raise KeyError("model")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise VaelabError(f"{paths.config}: not a vaelab run config ({exc})") from None
    if not sealed:
        note_unverified(paths.config)
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
        return read_npz(path)

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


def _model_settings(name: str, values: dict[str, Any]) -> dict[str, Any]:
    """Saved model settings as model ``name`` reads them: a setting that an earlier vaelab
    did not write (``activation``) at its default, tuples as lists. An old run resumed by
    this version has its checkpoint's settings written out in full, config.json's not."""
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(MODELS[name].config_cls)
        if f.default is not dataclasses.MISSING
    }
    return _plain({**defaults, **values})


def _decoder_settings(ckpt: dict[str, Any], config: TrainConfig) -> dict[str, Any]:
    """The checkpoint's model settings, the run's p(x|z) (likelihood, Gaussian scale) and
    its p(z) (a learned prior's kind and size; its values are in the weights)."""
    return {
        **ckpt["model_config"],
        "likelihood": config.likelihood,
        "gaussian_sigma": config.gaussian_sigma,
        "prior": config.prior,
        "pseudo_inputs": config.pseudo_inputs,
        "prior_components": config.prior_components,
    }


CHECKPOINTS = ("last", "best")  # what load_run(checkpoint=...) reads


def load_run(path: Path | str, map_location: str = "cpu", checkpoint: str = "last") -> Run:
    """Load a run directory: its config, metrics and the model from checkpoints/last.pt,
    or (``checkpoint="best"``) from best.pt, the epoch of lowest validation loss. A
    checkpoint's "model" is the weights to use: the moving average under --ema."""
    root = Path(path)
    meta = read_run_config(root)
    config = TrainConfig.from_dict(meta["config"])
    if checkpoint not in CHECKPOINTS:
        raise VaelabError(f"unknown checkpoint {checkpoint!r}; choose one of last, best")
    source = RunPaths(root).last if checkpoint == "last" else RunPaths(root).best
    if checkpoint == "best" and not source.is_file():
        raise VaelabError(
            f"{root} has no checkpoints/best.pt: it is kept by runs trained with --val-size N"
        )
    ckpt = load_checkpoint(source, map_location)
    saved = meta.get("model_config")
    mine = ckpt.get("model_config", {})
    if saved is not None and _model_settings(config.model, saved) != _model_settings(
        config.model, mine
    ):
        raise VaelabError(
            f"{root}: checkpoints/{source.name} does not fit model {config.model!r} of "
            "config.json (its model settings differ); it is from another run or architecture"
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
