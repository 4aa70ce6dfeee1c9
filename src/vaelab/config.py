"""Run configuration: one dataclass, validated on creation, saved as JSON with every run.

Defaults are the practicum's (../shared/docs/lecture.md, section 5): MNIST, d = 20,
hidden = d^2 = 400, BCE + 1.0 * KL, Adam with lr 1e-3, batch 256, 10 epochs, seed 1.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vaelab.errors import VaelabError

RECON_CHOICES = ("bce", "mse")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
BINARIZE_CHOICES = ("none", "dynamic", "static")
LECTURE_EMBED_EPOCHS = (0, 5, 10)


@dataclass
class TrainConfig:
    """Every setting of a training run. ``hidden=None`` means ``latent_dim ** 2``."""

    dataset: str = "mnist"  # a known name or a path to IDX files / an .npz
    data_dir: str | None = None  # extra place to look for data first
    limit: int | None = None  # train on the first N training images only
    binarize: str = "none"  # none (grayscale, the lecture) | dynamic | static
    model: str = "vae"
    latent_dim: int = 20
    hidden: int | None = None
    recon: str = "bce"  # bce: Bernoulli (sum over pixels); mse: 0.5 * squared error
    beta: float = 1.0
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 10
    seed: int = 1
    device: str = "auto"
    embed_epochs: list[int] | None = None  # None: the lecture's 0, 5, 10 that run + the last

    def __post_init__(self) -> None:
        if self.hidden is None:
            self.hidden = self.latent_dim**2
        if self.embed_epochs is not None:
            self.embed_epochs = sorted({int(e) for e in self.embed_epochs})
        self.validate()

    def validate(self) -> None:
        """Raise VaelabError naming the first invalid setting."""
        positive = {
            "latent-dim": self.latent_dim,
            "hidden": self.hidden,
            "batch-size": self.batch_size,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or value <= 0:
                raise VaelabError(f"--{name} must be a positive integer, got {value!r}")
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise VaelabError(f"--epochs must be 0 or more, got {self.epochs!r}")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit <= 0):
            raise VaelabError(f"--limit must be a positive integer, got {self.limit!r}")
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise VaelabError(f"--lr must be a positive finite number, got {self.lr!r}")
        if not math.isfinite(self.beta) or self.beta < 0:
            raise VaelabError(f"--beta must be a finite number >= 0, got {self.beta!r}")
        if self.recon not in RECON_CHOICES:
            raise VaelabError(
                f"unknown --recon {self.recon!r}; choose one of {', '.join(RECON_CHOICES)}"
            )
        if self.binarize not in BINARIZE_CHOICES:
            raise VaelabError(
                f"unknown --binarize {self.binarize!r}; choose one of {', '.join(BINARIZE_CHOICES)}"
            )
        if self.device not in DEVICE_CHOICES:
            raise VaelabError(
                f"unknown --device {self.device!r}; choose one of {', '.join(DEVICE_CHOICES)}"
            )
        for e in self.embed_epochs or []:
            if not 0 <= e <= self.epochs:
                raise VaelabError(
                    f"--embed-epochs {e} is outside the epochs that run (0..{self.epochs})"
                )
        from vaelab.models import MODELS  # late import: models import this module

        if self.model not in MODELS:
            raise VaelabError(f"unknown --model {self.model!r}; choose one of {', '.join(MODELS)}")

    def cached_epochs(self) -> list[int]:
        """Epochs whose test-set latents are kept: as given, or the lecture's 0, 5, 10
        (those that run) plus the final epoch."""
        if self.embed_epochs is not None:
            return list(self.embed_epochs)
        return sorted({e for e in LECTURE_EMBED_EPOCHS if e <= self.epochs} | {self.epochs})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a saved dict, ignoring keys this version does not know."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
