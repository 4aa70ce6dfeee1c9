"""How a setting is declared: its flag (``setting``: group, help, how its text is read),
the names it accepts (one tuple per setting) and the check that a value is one of them.

``vaelab.config`` declares each TrainConfig field with ``setting`` and gives it its tuple
(``--prior {standard,mog,vamp}``); the library checks values against the same tuples, so
a name is listed in one place only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from vaelab.errors import SettingError

RECON_CHOICES = ("bce", "mse")
DEVICE_CHOICES = ("auto", "cpu", "cuda")
PRECISION_CHOICES = ("fp32", "bf16")
BINARIZE_CHOICES = ("none", "dynamic", "static")
OBJECTIVE_CHOICES = ("elbo", "iwae")
ESTIMATOR_CHOICES = ("standard", "dreg")  # the gradient of --objective iwae
PRIOR_CHOICES = ("standard", "mog", "vamp")  # p(z): N(0, I) or a learned one
# A learned prior's size, the setting that only it takes: --pseudo-inputs, --prior-components.
PRIOR_SIZE_SETTINGS = {"vamp": "pseudo_inputs", "mog": "prior_components"}
LR_SCHEDULE_CHOICES = ("constant", "burda", "cosine")  # vaelab.training.schedules
CONDITION_CHOICES = ("none", "label")
# the MLP's nonlinearity (--activation); vaelab.models.vae.ACTIVATIONS maps each to its layer
ACTIVATION_CHOICES = ("relu", "tanh", "softplus", "elu", "gelu")

# The groups of ``vaelab train --help``, in the order TrainConfig's fields first use them.
DATA, MODEL, OPTIMISATION, RUN = "data", "model and loss", "optimisation", "run directory"


def setting(default: Any, group: str, help: str, **flag: Any) -> Any:
    """A TrainConfig field and its flag: ``help`` (``{default}`` in it shows the default),
    ``group``, and optionally ``parse`` (text -> value), ``metavar`` and ``choices``."""
    return dataclasses.field(default=default, metadata={"group": group, "help": help, **flag})


def check_choice(name: str, value: Any, choices: Sequence[str]) -> None:
    """Raise SettingError("unknown <name> <value>; choose one of ...") unless ``value`` is
    one of ``choices``.

    Examples:
        >>> check_choice("prior", "vamp", PRIOR_CHOICES)
        >>> check_choice("prior", "flow", PRIOR_CHOICES)
        Traceback (most recent call last):
        ...
        vaelab.errors.SettingError: unknown prior 'flow'; choose one of standard, mog, vamp
    """
    if value not in choices:
        raise SettingError(
            "unknown {" + name + "} {value!r}; choose one of {choices}",
            value=value,
            choices=", ".join(choices),
        )
