"""What the explorer computes, apart from any web framework: decode latent vectors, encode
test images, interpolate between two of them, and the 2-D map of the test set.

Everything deterministic uses the posterior means (style.md, point 6). The maths lives in
:mod:`vaelab.viz.analysis` (interpolation paths, PCA, the embedding cache), so the explorer
and the report draw the same picture for the same points. The model is loaded once and
used read-only, under ``torch.no_grad`` and a lock, so requests served from several
threads never interleave inside PyTorch.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vaelab.run import Run
from vaelab.viz import analysis, embeddings

ENCODE_BATCH = 1000
METHOD_NAMES = {"tsne": "t-SNE", "pca": "PCA"}


@dataclass
class MapPoints:
    """The test set as 2-D points. ``xy`` (n, 2); ``indices`` into the test set;
    ``sigma`` (n, 2) posterior standard deviations when the map is the latent itself
    (d <= 2) and the model has variances, else None."""

    source: str  # "latent", "tsne", "pca" (a cached embedding) or "pca-server"
    epoch: int
    xy: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    sigma: np.ndarray | None
    note: str


class Explorer:
    """A trained run ready to be explored: its model, its test images, its map."""

    def __init__(
        self, run: Run, x_test: torch.Tensor, y_test: torch.Tensor, classes: tuple[str, ...] = ()
    ) -> None:
        self.run = run
        self.classes = tuple(str(c) for c in classes)
        self.model = run.model.eval().requires_grad_(False)
        self.latent_dim = int(run.model.latent_dim)
        self.stochastic = run.model.stochastic
        self.input_shape = tuple(int(s) for s in x_test.shape[1:])
        self.x_test = x_test.float()  # (N, *input_shape), as the encoder expects it
        self.y_test = y_test.long()
        self._lock = threading.Lock()
        self._map: MapPoints | None = None

    @classmethod
    def from_run(cls, run: Run, data_dir: str | None = None) -> Explorer:
        data = run.dataset(data_dir)
        return cls(run, data.x_test, data.y_test, data.classes)

    @property
    def n_test(self) -> int:
        return len(self.x_test)

    # ------------------------------------------------------------------ the model
    @property
    def n_classes(self) -> int:
        """K of a conditional run (its decoder takes a label 0..K-1); 0 otherwise."""
        return int(self.model.n_classes)

    def decode(self, z: np.ndarray, label: int | None = None) -> np.ndarray:
        """z: (B, d) -> pixel means in [0, 1], (B, D) float32; a conditional run decodes
        every vector with ``label``."""
        z = torch.as_tensor(z, dtype=torch.float32)
        labels = None if label is None else torch.full((len(z),), label, dtype=torch.long)
        with self._lock, torch.no_grad():
            x = self.model.decode(z, labels)
        return _in_unit_range(x.numpy())

    def _labels(self, indices: np.ndarray) -> torch.Tensor | None:
        """The test labels at ``indices`` for a conditional run (its encoder takes them)."""
        return self.y_test[torch.as_tensor(indices, dtype=torch.long)] if self.n_classes else None

    def encode(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Test images at ``indices`` (with their labels, for a conditional run) -> mu
        (B, d) and logvar (B, d), None for an AE."""
        x = self.x_test[torch.as_tensor(indices, dtype=torch.long)]
        with self._lock, torch.no_grad():
            mu, logvar = self.model.posterior(x, self._labels(indices))
        return mu.numpy(), None if logvar is None else logvar.numpy()

    def reconstruct(self, indices: np.ndarray) -> np.ndarray:
        """Test images at ``indices`` decoded from their means, (B, D)."""
        x = self.x_test[torch.as_tensor(indices, dtype=torch.long)]
        with self._lock:
            return _in_unit_range(analysis.reconstruct(self.model, x, self._labels(indices)))

    def images(self, indices: np.ndarray) -> np.ndarray:
        """Test images at ``indices``, flat (B, D)."""
        return self.x_test[torch.as_tensor(indices, dtype=torch.long)].flatten(1).numpy()

    def interpolate(
        self, a: int, b: int, steps: int, mode: str = "linear"
    ) -> dict[str, np.ndarray]:
        """The lecture's interpolation (:func:`vaelab.viz.analysis.interpolate`): ``t``
        (S,), the path ``z`` (S, d) from mu_a to mu_b (``mode`` linear or slerp), ``latent``
        (S, D) that path decoded, and ``pixel`` (S, D) the blend (1 - t) x_a + t x_b."""
        ends = (int(self.y_test[a]), int(self.y_test[b])) if self.n_classes else None
        with self._lock:
            path = analysis.interpolate(
                self.model, self.x_test[a], self.x_test[b], steps, mode, ends
            )
        return dict(path, latent=_in_unit_range(path["latent"]))

    # ------------------------------------------------------------------ the map
    def _test_latents(self) -> tuple[np.ndarray, np.ndarray | None, str]:
        """mu and logvar of the whole test set for the loaded model's epoch: the cached
        file when there is one for that epoch, else encoded now."""
        epoch = self.run.epoch
        if epoch in self.run.cached_epochs():
            cached = self.run.latents(epoch)
            mu = np.asarray(cached["mu"], dtype=np.float64)
            logvar = cached.get("logvar")
            if mu.shape == (self.n_test, self.latent_dim):
                return mu, logvar, f"latents/epoch-{epoch:03d}.npz"
        mus, logvars = [], []
        for start in range(0, self.n_test, ENCODE_BATCH):
            mu, logvar = self.encode(np.arange(start, min(start + ENCODE_BATCH, self.n_test)))
            mus.append(mu)
            logvars.append(logvar)
        logvar = None if logvars[0] is None else np.concatenate(logvars)
        return np.concatenate(mus).astype(np.float64), logvar, "encoded by the server"

    def map_points(self) -> MapPoints:
        """The 2-D map, computed once: the latent means for d <= 2; for d > 2 the cached
        t-SNE (or PCA) of RUN/embeddings/ at the model's epoch, else a PCA computed here."""
        if self._map is None:
            self._map = self._compute_map()
        return self._map

    def _compute_map(self) -> MapPoints:
        epoch, d = self.run.epoch, self.latent_dim
        labels = self.y_test.numpy()
        everyone = np.arange(self.n_test)
        if d > 2:
            for method in ("tsne", "pca"):
                path = embeddings.embedding_file(self.run.path, epoch, method)
                emb = embeddings.read_embedding(path, self.n_test)
                if emb is not None:
                    note = (
                        f"{METHOD_NAMES[method]} of the test means at epoch {epoch} "
                        f"(embeddings/{path.name})"
                    )
                    return MapPoints(
                        method, epoch, emb["xy"], labels[emb["indices"]], emb["indices"], None, note
                    )
        mu, logvar, origin = self._test_latents()
        if d > 2:
            xy, explained = embeddings.pca_2d_explained(mu)
            note = (
                f"PCA of the test means at epoch {epoch}, computed by the server (no cached "
                f"embedding found); the 2 axes explain {explained:.0%} of the variance"
            )
            return MapPoints("pca-server", epoch, xy, labels, everyone, None, note)
        sigma = None
        if self.stochastic and logvar is not None and np.isfinite(logvar).all():
            sigma = np.exp(0.5 * np.asarray(logvar, dtype=np.float64))
        if d == 1:  # one latent axis: spread the points vertically by label to see them
            rng = np.random.default_rng(0)
            xy = np.stack([mu[:, 0], labels + rng.uniform(-0.3, 0.3, len(mu))], axis=1)
            sigma = None if sigma is None else np.concatenate([sigma, np.zeros_like(sigma)], 1)
            note = f"the latent means (x) at epoch {epoch}, one row per label ({origin})"
        else:
            xy = mu
            note = f"the latent means at epoch {epoch} ({origin})"
        return MapPoints("latent", epoch, xy, labels, everyone, sigma, note)

    # ------------------------------------------------------------------ the run
    def info(self) -> dict[str, Any]:
        """Settings, headline metrics and what the page needs to lay itself out."""
        run = self.run
        last = run.metrics[-1] if run.metrics else {}
        headline = {
            k: v
            for k, v in last.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        }
        return {
            "run": run.path.resolve().name,
            "model": run.config.model,
            "stochastic": self.stochastic,
            "latent_dim": self.latent_dim,
            "n_classes": self.n_classes,  # > 0: conditional, decode with a label 0..K-1
            "epoch": run.epoch,
            "input_shape": list(self.input_shape),
            "n_test": self.n_test,
            "labels": sorted({int(v) for v in self.y_test.tolist()}),
            "classes": list(self.classes),
            "config": {k: v for k, v in run.meta["config"].items()},
            "metrics": headline,
            "evaluation": _evaluation_numbers(run.paths.eval),
            "has_report": run.paths.report.is_file(),
            "versions": {k: v for k, v in run.meta.items() if k.endswith("version")},
            # p(z): "standard" is N(0, I), which the page samples itself; a learned prior
            # sends its mean and seeded draws for the page's "sample" and "reset" buttons
            "prior": getattr(run.config, "prior", "standard"),
            "prior_mean": [float(v) for v in run.model.prior_mean()],
            "prior_samples": self._prior_samples(),
        }

    def _prior_samples(self, n: int = 256) -> list[list[float]] | None:
        """n seeded draws of a learned prior, rounded; None for N(0, I) (or an AE)."""
        if not self.stochastic or self.model.learned_prior is None:
            return None
        with self._lock:
            points = analysis.prior_points(self.model, n)
        return [[round(float(v), 4) for v in row] for row in points]


def _in_unit_range(x: np.ndarray) -> np.ndarray:
    """Decoded pixel means as the page shows them: NaN -> 0, clipped to [0, 1]."""
    return np.nan_to_num(np.asarray(x, dtype=np.float32), nan=0.0).clip(0.0, 1.0)


EVALUATION_KEYS = {
    "neg_elbo": "-ELBO",
    "nll_iwae": "NLL (IWAE)",
    "active_units": "active units",
}


def _evaluation_numbers(path: Path) -> dict[str, float]:
    """The headline numbers of RUN/eval.json (written by ``vaelab evaluate``), if any; a
    damaged file (its checksum disagrees) shows none."""
    from vaelab.checksums import read_json
    from vaelab.errors import DamagedFileError

    try:
        data, _sealed = read_json(path)
    except (OSError, ValueError, DamagedFileError):
        return {}
    if not isinstance(data, dict):
        return {}
    numbers = {
        label: data[key]
        for key, label in EVALUATION_KEYS.items()
        if isinstance(data.get(key), int | float)
        and not isinstance(data[key], bool)
        and math.isfinite(data[key])
    }
    numbers.update(_label_accuracy_numbers(data.get("label_accuracy")))
    return numbers


def _label_accuracy_numbers(acc: Any) -> dict[str, float]:
    """A conditional run's label accuracy (eval.json), overall and worst, in percent."""
    if not isinstance(acc, dict):
        return {}
    out = {}
    for key, label in (("overall", "label accuracy %"), ("worst", "worst label %")):
        v = acc.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
            out[label] = round(100 * v, 1)
    return out
