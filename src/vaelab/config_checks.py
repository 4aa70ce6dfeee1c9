"""The checks of ``TrainConfig.validate``: each setting valid, and only where it applies.

Every failure is a ``SettingError`` naming the setting (the command line spells it as its
flag), so ``vaelab train`` prints one line and exits 2. Imported when a config is first
validated; what would import torch (the models, the likelihoods) is imported late.
"""

from __future__ import annotations

import dataclasses
import inspect
import math

from vaelab.config import LECTURE_ACTIVATION, TrainConfig
from vaelab.errors import SettingError
from vaelab.setting_spec import (
    ACTIVATION_CHOICES,
    BINARIZE_CHOICES,
    CONDITION_CHOICES,
    DEVICE_CHOICES,
    ESTIMATOR_CHOICES,
    LR_SCHEDULE_CHOICES,
    OBJECTIVE_CHOICES,
    PRECISION_CHOICES,
    PRIOR_CHOICES,
    PRIOR_SIZE_SETTINGS,
    RECON_CHOICES,
    check_choice,
)
from vaelab.setting_values import hidden_list


def validate_config(config: TrainConfig) -> None:
    """Raise SettingError naming the first invalid setting."""
    if config.preset is not None:
        from vaelab.presets import PRESETS

        check_choice("preset", config.preset, PRESETS)
    for name in ("latent_dim", "batch_size"):
        value = getattr(config, name)
        if not isinstance(value, int) or value <= 0:
            raise SettingError(
                "{" + name + "} must be a positive integer, got {value!r}", value=value
            )
    _validate_length(config)
    if config.limit is not None and (not isinstance(config.limit, int) or config.limit <= 0):
        raise SettingError("{limit} must be a positive integer, got {value!r}", value=config.limit)
    for name in ("lr", "adam_eps"):
        value = getattr(config, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise SettingError(
                "{" + name + "} must be a positive finite number, got {value!r}", value=value
            )
    _validate_recipe(config)
    if config.grad_clip is not None and not (
        math.isfinite(config.grad_clip) and config.grad_clip > 0
    ):
        raise SettingError(
            "{grad_clip} must be a positive number, got {value!r}", value=config.grad_clip
        )
    if config.keep_every is not None and (
        not isinstance(config.keep_every, int) or config.keep_every <= 0
    ):
        raise SettingError(
            "{keep_every} must be a positive integer, got {value!r}", value=config.keep_every
        )
    if not math.isfinite(config.beta) or config.beta < 0:
        raise SettingError("{beta} must be a finite number >= 0, got {value!r}", value=config.beta)
    for name, choices in (
        ("recon", RECON_CHOICES),
        ("binarize", BINARIZE_CHOICES),
        ("device", DEVICE_CHOICES),
        ("precision", PRECISION_CHOICES),
    ):
        check_choice(name, getattr(config, name), choices)
    for e in config.embed_epochs or []:
        if e < 0 or (config.epochs is not None and e > config.epochs):
            raise SettingError(
                "{embed_epochs} {value} is outside the epochs that run (0..{last})",
                value=e,
                last=config.epochs if config.epochs is not None else "",
            )
    _validate_model_family(config)


def _validate_model_family(config: TrainConfig) -> None:
    """Model, likelihood, objective and KL schedule (issue 5)."""
    from vaelab.losses import LIKELIHOOD_NAMES, LIKELIHOODS  # late: models import this
    from vaelab.models import MODELS

    check_choice("model", config.model, MODELS)
    _validate_architecture(config)
    if config.likelihood not in LIKELIHOOD_NAMES:  # mse: only ever set from --recon mse
        check_choice("likelihood", config.likelihood, LIKELIHOODS)
    sigma = config.gaussian_sigma
    if sigma is not None:
        if config.likelihood != "gaussian":
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
    check_choice("objective", config.objective, OBJECTIVE_CHOICES)
    if config.condition is not None:
        check_choice("condition", config.condition, CONDITION_CHOICES)
    if config.iw_k is not None:
        if config.objective != "iwae":
            raise SettingError("{iw_k} applies to {objective} iwae only")
        if not isinstance(config.iw_k, int) or config.iw_k <= 0:
            raise SettingError(
                "{iw_k} must be a positive integer, got {value!r}", value=config.iw_k
            )
    if config.objective == "iwae" and not MODELS[config.model].model_cls.stochastic:
        raise SettingError(
            "{objective} iwae needs a model with a posterior variance; {value!r} is a "
            "plain autoencoder",
            value=config.model,
        )
    _check_warmup(config, "kl_warmup")
    _validate_prior_and_estimator(config, MODELS[config.model].model_cls)


def _validate_length(config: TrainConfig) -> None:
    """--epochs or --time-budget: one of them, each a sensible number."""
    if config.time_budget is not None:
        if config.epochs is not None:
            raise SettingError(
                "give {epochs} or {time_budget}, not both: a time budget decides how "
                "many epochs run"
            )
        budget = config.time_budget
        if not isinstance(budget, (int, float)) or not (math.isfinite(budget) and budget > 0):
            raise SettingError(
                "{time_budget} must be a positive number of minutes, got {value!r}",
                value=budget,
            )
    elif not isinstance(config.epochs, int) or config.epochs < 0:
        raise SettingError("{epochs} must be 0 or more, got {value!r}", value=config.epochs)


def _validate_recipe(config: TrainConfig) -> None:
    """The training recipe of issue 16: schedule, warm-up, EMA, validation hold-out."""
    check_choice("lr_schedule", config.lr_schedule, LR_SCHEDULE_CHOICES)
    _check_warmup(config, "lr_warmup")
    if config.ema is not None and not (isinstance(config.ema, (int, float)) and 0 < config.ema < 1):
        raise SettingError(
            "{ema} must be a decay between 0 and 1 (e.g. 0.999), got {value!r}",
            value=config.ema,
        )
    if config.val_size is not None and (
        not isinstance(config.val_size, int) or config.val_size <= 0
    ):
        raise SettingError(
            "{val_size} must be a positive integer, got {value!r}", value=config.val_size
        )


def _check_warmup(config: TrainConfig, name: str) -> None:
    """A warm-up is a number of epochs >= 0 or a share 'P%' with 0 <= P <= 100; under
    --time-budget only a share (there is no epoch count to measure it against)."""
    value = getattr(config, name)
    if isinstance(value, str):
        try:
            share = float(value[:-1]) if value.endswith("%") else math.nan
        except ValueError:
            share = math.nan
        if not 0 <= share <= 100:
            raise SettingError(
                "{" + name + "} must be epochs >= 0 or a share from 0% to 100%, got {value!r}",
                value=value,
            )
        return
    if not isinstance(value, (int, float)) or not (math.isfinite(value) and value >= 0):
        raise SettingError(
            "{" + name + "} must be a number of epochs >= 0, got {value!r}", value=value
        )
    if value > 0 and config.time_budget is not None:
        raise SettingError(
            "under {time_budget} give {" + name + "} as a share of the budget, e.g. 10%, not epochs"
        )


def _validate_prior_and_estimator(config: TrainConfig, model_cls: type) -> None:
    """--prior and its size, --estimator (issue 16, part B)."""

    check_choice("prior", config.prior, PRIOR_CHOICES)
    check_choice("estimator", config.estimator, ESTIMATOR_CHOICES)
    what_sizes = {"vamp": "learned pseudo-inputs (e.g. 500)", "mog": "Gaussians"}
    for kind, name in PRIOR_SIZE_SETTINGS.items():
        what = what_sizes[kind]
        value = getattr(config, name)
        if value is None and config.prior == kind:
            raise SettingError(f"{{prior}} {kind} needs {{{name}}} K, the number of its {what}")
        if value is not None and config.prior != kind:
            raise SettingError(f"{{{name}}} applies to {{prior}} {kind} only")
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise SettingError(
                f"{{{name}}} must be a positive integer, got {{value!r}}", value=value
            )
    if config.prior != "standard" and not model_cls.stochastic:
        raise SettingError(
            "{prior} " + config.prior + " needs a model with a posterior; {value!r} is a "
            "plain autoencoder",
            value=config.model,
        )
    if config.prior == "vamp" and config.condition == "label":
        raise SettingError(
            "{prior} vamp cannot be used with {condition} label: its pseudo-inputs "
            "have no label for the encoder"
        )
    if config.estimator == "dreg":
        if config.objective != "iwae":
            raise SettingError(
                "{estimator} dreg is a gradient of the IWAE bound: it needs {objective} iwae"
            )
        takes = inspect.signature(model_cls.log_weights).parameters
        if "detach_posterior" not in takes:
            raise SettingError(
                "{estimator} dreg needs log q(z|x) at stopped posterior parameters, "
                "which model {value!r} does not provide; use {estimator} standard",
                value=config.model,
            )


def _validate_architecture(config: TrainConfig) -> None:
    """Hidden sizes, activation, z1_dim: valid, and only for a model that takes them
    (``--activation tanh`` on a conv model is an error, not ignored)."""
    from vaelab.models import MODELS, model_config

    hidden_list(config.hidden)  # positive sizes
    check_choice("activation", config.activation, ACTIVATION_CHOICES)
    if config.z1_dim is not None and (not isinstance(config.z1_dim, int) or config.z1_dim <= 0):
        raise SettingError(
            "{z1_dim} must be a positive integer, got {value!r}", value=config.z1_dim
        )
    takes = {f.name for f in dataclasses.fields(MODELS[config.model].config_cls)}
    for name, unset in (("activation", LECTURE_ACTIVATION), ("z1_dim", None)):
        if name not in takes and getattr(config, name) != unset:
            raise SettingError(
                "{" + name + "} does not apply to model {value!r}", value=config.model
            )
    if config.condition is not None and "n_classes" not in takes:
        raise SettingError("{condition} label: model {value!r} takes no labels", value=config.model)
    model_config(config.model, **config.to_dict())  # its own checks (conv: one hidden size)
