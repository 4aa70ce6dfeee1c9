"""Experiment tracking: ``vaelab train --tensorboard`` logs each epoch to RUN/tb/.

Per epoch: the metrics row (train/test loss, reconstruction, KL) as scalars, and two
images: the first test images above their reconstructions (z = mu) and a fixed grid of
prior samples. TensorBoard is an optional extra (``pip install 'vaelab[tensorboard]'``);
without it, asking for it is a one-line error. The trainer calls :func:`open_tracker`
once and ``log_epoch`` after every epoch; with tracking off the tracker does nothing.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vaelab.errors import SettingError
from vaelab.viz.analysis import balanced_labels, prior_samples, reconstruct

N_SAMPLES = 64


def require_tensorboard() -> None:
    """Raise a one-line SettingError (naming the tensorboard setting) when the extra is missing."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise SettingError(
            "{tensorboard} needs the optional extra: pip install 'vaelab[tensorboard]'"
        ) from None


def _mosaic(flat: np.ndarray, input_shape: tuple[int, ...], ncol: int) -> np.ndarray:
    """(N, D) in [0, 1] -> one (H', W') or (H', W', 3) image for add_image."""
    from vaelab.viz.plots import tile, to_images

    return tile(to_images(flat, input_shape), ncol)


class NullTracker:
    def log_epoch(
        self,
        epoch: int,
        row: dict[str, Any],
        model: nn.Module,
        shown: Tensor,
        labels: Tensor | None = None,
    ) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker(NullTracker):
    def __init__(self, log_dir: Path) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(log_dir))

    @torch.no_grad()
    def log_epoch(
        self,
        epoch: int,
        row: dict[str, Any],
        model: nn.Module,
        shown: Tensor,
        labels: Tensor | None = None,
    ) -> None:
        """Scalars from ``row``; reconstructions of ``shown`` (with its ``labels`` for a
        conditional model) and prior samples as images (a conditional model's: every
        label in turn)."""
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)) and math.isfinite(value):
                split, _, name = key.partition("_")
                self.writer.add_scalar(f"{name}/{split}", value, epoch)
        model.eval()
        shape = tuple(model.config.input_shape)
        labels = None if labels is None else labels.to(shown.device)
        recon = reconstruct(model, shown, labels)
        pairs = np.concatenate([shown.flatten(1).cpu().numpy(), recon])
        self._image("reconstructions", _mosaic(pairs, shape, len(shown)), epoch)
        # the same z every epoch (seed 0): only the decoder changes
        sample_labels = balanced_labels(N_SAMPLES, model.n_classes) if model.conditional else None
        samples = prior_samples(model, N_SAMPLES, seed=0, labels=sample_labels)
        self._image("prior_samples", _mosaic(samples, shape, 8), epoch)
        self.writer.flush()

    def _image(self, tag: str, image: np.ndarray, epoch: int) -> None:
        formats = "HW" if image.ndim == 2 else "HWC"
        self.writer.add_image(tag, np.clip(image, 0, 1), epoch, dataformats=formats)

    def close(self) -> None:
        self.writer.close()


def open_tracker(enabled: bool, log_dir: Path) -> NullTracker:
    """A TensorBoard tracker writing to ROOT/tb when ``enabled``, else one that does nothing."""
    return TensorBoardTracker(log_dir) if enabled else NullTracker()
