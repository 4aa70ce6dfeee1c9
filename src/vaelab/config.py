"""Run configuration: one dataclass, validated on creation, saved as JSON with every run.

Defaults are the practicum's (../shared/docs/lecture.md, section 5): MNIST, d = 20,
hidden = d^2 = 400, BCE + 1.0 * KL, Adam with lr 1e-3, batch 256, 10 epochs, seed 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from vaelab.errors import SettingError

RECON_CHOICES = ("bce", "mse")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("fp32", "bf16")
BINARIZE_CHOICES = ("none", "dynamic", "static")
OBJECTIVE_CHOICES = ("elbo", "iwae")
DEFAULT_IW_K = 5  # importance samples of --objective iwae unless --iw-k says otherwise
LECTURE_EMBED_EPOCHS = (0, 5, 10)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise SettingError("unknown <name> <value>; choose one of ...") unless ``value`` is
    one of ``choices``."""
    if value not in choices:
        raise SettingError(
            "unknown {" + name + "} {value!r}; choose one of {choices}",
            value=value,
            choices=", ".join(choices),
        )


@dataclass
class TrainConfig:
    """Every setting of a training run. ``hidden=None`` means ``latent_dim ** 2``.

    Examples:
        >>> TrainConfig().hidden, TrainConfig(latent_dim=2).hidden  # d^2 unless given
        (400, 4)
        >>> TrainConfig(model="ae", epochs=3).to_dict()["model"]
        'ae'
        >>> TrainConfig(lr=float("nan"))
        Traceback (most recent call last):
        ...
        vaelab.errors.SettingError: lr must be a positive finite number, got nan
    """

    dataset: str = "mnist"  # a known name or a path to IDX files / an .npz
    data_dir: str | None = None  # extra place to look for data first
    limit: int | None = None  # train on the first N training images only
    binarize: str = "none"  # none (grayscale, the lecture) | dynamic | static
    model: str = "vae"
    latent_dim: int = 20
    hidden: int | None = None
    recon: str = "bce"  # bce: Bernoulli (sum over pixels); mse: 0.5 * squared error
    beta: float = 1.0
    # None: the lecture's --recon; else bernoulli (= bce) | continuous-bernoulli | gaussian
    likelihood: str | None = None
    gaussian_sigma: float | str | None = None  # gaussian only: fixed sigma (1.0) or "learned"
    objective: str = "elbo"  # elbo | iwae (Burda et al. 2015)
    iw_k: int | None = None  # iwae only: importance samples K (default DEFAULT_IW_K)
    kl_warmup: float = 0.0  # epochs of linear KL annealing from 0 to beta (0: none)
    lr: float = 1e-3
    batch_size: int = 256
    epochs: int = 10
    seed: int = 1
    device: str = "auto"
    precision: str = "fp32"  # bf16: autocast matmuls to bfloat16, fp32 weights and losses
    compile: bool = False  # torch.compile the training step (a C++ compiler on CPU)
    grad_clip: float | None = None  # clip the gradient's global norm to this value
    keep_every: int | None = None  # also keep a full checkpoint every N epochs
    embed_epochs: list[int] | None = None  # None: the lecture's 0, 5, 10 that run + the last
    tensorboard: bool = False  # also log each epoch to RUN/tb/ (vaelab[tensorboard])

    def __post_init__(self) -> None:
        if self.hidden is None:
            self.hidden = self.latent_dim**2
        if self.embed_epochs is not None:
            self.embed_epochs = sorted({int(e) for e in self.embed_epochs})
        if self.likelihood == "gaussian" and self.gaussian_sigma is None:
            self.gaussian_sigma = 1.0
        if self.objective == "iwae" and self.iw_k is None:
            self.iw_k = DEFAULT_IW_K
        self.validate()

    def validate(self) -> None:
        """Raise SettingError naming the first invalid setting."""
        for name in ("latent_dim", "hidden", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise SettingError(
                    "{" + name + "} must be a positive integer, got {value!r}", value=value
                )
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise SettingError("{epochs} must be 0 or more, got {value!r}", value=self.epochs)
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit <= 0):
            raise SettingError(
                "{limit} must be a positive integer, got {value!r}", value=self.limit
            )
        if not math.isfinite(self.lr) or self.lr <= 0:
            raise SettingError(
                "{lr} must be a positive finite number, got {value!r}", value=self.lr
            )
        if self.grad_clip is not None and not (
            math.isfinite(self.grad_clip) and self.grad_clip > 0
        ):
            raise SettingError(
                "{grad_clip} must be a positive number, got {value!r}", value=self.grad_clip
            )
        if self.keep_every is not None and (
            not isinstance(self.keep_every, int) or self.keep_every <= 0
        ):
            raise SettingError(
                "{keep_every} must be a positive integer, got {value!r}", value=self.keep_every
            )
        if not math.isfinite(self.beta) or self.beta < 0:
            raise SettingError(
                "{beta} must be a finite number >= 0, got {value!r}", value=self.beta
            )
        for name, choices in (
            ("recon", RECON_CHOICES),
            ("binarize", BINARIZE_CHOICES),
            ("device", DEVICE_CHOICES),
            ("precision", PRECISION_CHOICES),
        ):
            check_choice(name, getattr(self, name), choices)
        for e in self.embed_epochs or []:
            if not 0 <= e <= self.epochs:
                raise SettingError(
                    "{embed_epochs} {value} is outside the epochs that run (0..{last})",
                    value=e,
                    last=self.epochs,
                )
        self._validate_model_family()

    def _validate_model_family(self) -> None:
        """Model, likelihood, objective and KL schedule (issue 5)."""
        from vaelab.losses import LIKELIHOODS  # late imports: models import this module
        from vaelab.models import MODELS

        check_choice("model", self.model, MODELS)
        if self.likelihood is not None:
            check_choice("likelihood", self.likelihood, LIKELIHOODS)
            if self.recon == "mse":
                raise SettingError(
                    "{recon} mse is the lecture's shorthand (0.5 * squared error); give either "
                    "it or {likelihood}, not both ({likelihood} gaussian is the normalised density)"
                )
        sigma = self.gaussian_sigma
        if sigma is not None:
            if self.likelihood != "gaussian":
                raise SettingError("{gaussian_sigma} applies to {likelihood} gaussian only")
            if isinstance(sigma, str):
                valid = sigma == "learned"
            else:
                valid = isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0
            if not valid:
                raise SettingError(
                    "{gaussian_sigma} must be a positive number or 'learned', got {value!r}",
                    value=sigma,
                )
        check_choice("objective", self.objective, OBJECTIVE_CHOICES)
        if self.iw_k is not None:
            if self.objective != "iwae":
                raise SettingError("{iw_k} applies to {objective} iwae only")
            if not isinstance(self.iw_k, int) or self.iw_k <= 0:
                raise SettingError(
                    "{iw_k} must be a positive integer, got {value!r}", value=self.iw_k
                )
        if self.objective == "iwae" and not MODELS[self.model].model_cls.stochastic:
            raise SettingError(
                "{objective} iwae needs a model with a posterior variance; {value!r} is a "
                "plain autoencoder",
                value=self.model,
            )
        if not (math.isfinite(self.kl_warmup) and self.kl_warmup >= 0):
            raise SettingError(
                "{kl_warmup} must be a number of epochs >= 0, got {value!r}", value=self.kl_warmup
            )

    @property
    def needs_unit_range(self) -> bool:
        """Bernoulli-type likelihoods (bce, bernoulli, continuous-bernoulli) need x in [0, 1]."""
        return self.recon == "bce" and self.likelihood != "gaussian"

    def cached_epochs(self) -> list[int]:
        """Epochs whose test-set latents are kept: as given, or the lecture's 0, 5, 10
        (those that run) plus the final epoch.

        Examples:
            >>> TrainConfig().cached_epochs(), TrainConfig(epochs=3).cached_epochs()
            ([0, 5, 10], [0, 3])
            >>> TrainConfig(epochs=20, embed_epochs=[20, 1]).cached_epochs()
            [1, 20]
        """
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
