"""Named training recipes: ``vaelab train --preset NAME`` fills the settings, flags given
on the command line win, and config.json records the preset with what was overridden.

Each preset says what it is, where its recipe comes from and what it reached here (the
number and the budget, measured on this project's 2-core CPU machine; docs/results.md
has the commands and the machine). "not run here" means exactly that.

The likelihood presets train on dynamically binarised MNIST, the benchmark of Burda,
Grosse & Salakhutdinov 2015 ("Importance Weighted Autoencoders",
https://arxiv.org/abs/1509.00519, Table 1), and are scored by ``vaelab evaluate`` with
K = 5000 importance samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vaelab.errors import SettingError
from vaelab.setting_spec import PRIOR_SIZE_SETTINGS  # a learned prior's own size setting

# --epochs and --time-budget say how long a run trains: one of them. A length given on the
# command line replaces the preset's, whichever of the two it is.
LENGTH_SETTINGS = ("epochs", "time_budget")


@dataclass(frozen=True)
class Preset:
    name: str
    summary: str  # what it is, one line
    source: str  # where the recipe comes from
    reached: str  # what it reached here, and in how long ("not run here" if not)
    settings: dict[str, Any] = field(default_factory=dict)  # TrainConfig field -> value


# Burda et al.'s optimisation: Adam (beta1 0.9, beta2 0.999, eps 1e-4), batch 20, lr 1e-3
# decayed by 10^(-1/7) after 3^i epochs, i = 0..7 (3280 epochs), dynamic binarisation,
# output biases at the logit of the mean pixel (their code), tanh MLPs.
BURDA_RECIPE: dict[str, Any] = {
    "binarize": "dynamic",
    "batch_size": 20,
    "lr": 1e-3,
    "adam_eps": 1e-4,
    "lr_schedule": "burda",
    "epochs": 3280,
    "output_bias_init": True,
}
BURDA_ONE_LAYER: dict[str, Any] = {
    "model": "vae",
    "hidden": [200, 200],
    "activation": "tanh",
    "latent_dim": 50,
}
BURDA_SOURCE = "Burda, Grosse & Salakhutdinov 2015, Table 1"

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            "burda-vae",
            "VAE, 1 stochastic layer: 784-200-200-(50) tanh, ELBO",
            f"{BURDA_SOURCE}: 86.76 nats",
            "not run here for its 3280 epochs (9.6 h of one core); its schedule squeezed into "
            "both cores of a 2-core AMD EPYC: 95.36 nats in 5 minutes, 91.13 in 15, 89.18 in "
            "30, 88.18 in 60 (docs/results.md)",
            {**BURDA_ONE_LAYER, **BURDA_RECIPE},
        ),
        Preset(
            "burda-iwae-k50",
            "IWAE, 1 stochastic layer, k = 50: the burda-vae network on the k = 50 bound",
            f"{BURDA_SOURCE}: 84.78 nats",
            "not run here for its 3280 epochs; its schedule squeezed into both cores of a "
            "2-core AMD EPYC: 109.82 nats in 5 minutes, 98.36 in 15, 92.09 in 30, 89.02 in "
            "60 (docs/results.md)",
            {**BURDA_ONE_LAYER, **BURDA_RECIPE, "objective": "iwae", "iw_k": 50},
        ),
        Preset(
            "burda-vae-2l",
            "VAE, 2 stochastic layers (100, 50 units; vae-2l), ELBO",
            f"{BURDA_SOURCE}: 85.33 nats",
            "not run here for its 3280 epochs; its schedule squeezed into the budget: 105.17 "
            "nats in 5 minutes of one core; on both cores of a 2-core AMD EPYC 102.58 in 5 "
            "minutes, 92.52 in 15, 90.36 in 30 (docs/results.md)",
            {"model": "vae-2l", **BURDA_RECIPE},
        ),
        Preset(
            "burda-iwae-2l-k50",
            "IWAE, 2 stochastic layers (vae-2l), k = 50",
            f"{BURDA_SOURCE}: 82.90 nats",
            "not run here for its 3280 epochs; its schedule squeezed into both cores of a "
            "2-core AMD EPYC: 118.50 nats in 5 minutes, 104.15 in 15, 94.57 in 30, 90.20 in "
            "60 (docs/results.md)",
            {"model": "vae-2l", **BURDA_RECIPE, "objective": "iwae", "iw_k": 50},
        ),
        Preset(
            "vamp",
            "VAE with a VampPrior of 500 pseudo-inputs: 784-300-300-(40) tanh, KL warm-up, "
            "best of a 10,000-image validation hold-out",
            "Tomczak & Welling 2018, 'VAE with a VampPrior' (their MLP has gated layers): "
            "85.57 nats",
            "not run here for its 2000 epochs; its schedule squeezed into the budget on both "
            "cores of a 2-core AMD EPYC: 144.05 nats in 5 minutes, 96.96 in 15, 89.60 in 30 "
            "(one core, 5 minutes: 161.04; docs/results.md)",
            {
                "model": "vae",
                "hidden": [300, 300],
                "activation": "tanh",
                "latent_dim": 40,
                "prior": "vamp",
                "pseudo_inputs": 500,
                "binarize": "dynamic",
                "batch_size": 100,
                "lr": 5e-4,
                "kl_warmup": "5%",  # their 100 of 2000 epochs
                "epochs": 2000,
                "val_size": 10000,
            },
        ),
        Preset(
            "fast-nll",
            "the lowest test NLL per CPU minute found here: 784-400-400-(50) tanh VAE with a "
            "VampPrior of 300 pseudo-inputs, ELBO, batch 500, lr 3e-3 cosine-decayed over a "
            "60-minute budget",
            "vaelab's search on 2 CPU cores (docs/results.md, 'fast-nll: how it was chosen')",
            "86.70 nats in 5 minutes, 84.57 in 15, 83.93 in 30 and 83.41 in 60, each of both "
            "cores of a 2-core AMD EPYC (K = 5000, 10,000 test images; docs/results.md); "
            "with N(0, I) (--prior standard) 88.19 in 5 and 85.33 in 60",
            {
                "model": "vae",
                "hidden": [400, 400],
                "activation": "tanh",
                "latent_dim": 50,
                "prior": "vamp",
                "pseudo_inputs": 300,
                "binarize": "dynamic",
                "batch_size": 500,
                "lr": 3e-3,
                "adam_eps": 1e-4,
                "lr_schedule": "cosine",
                "output_bias_init": True,
                "time_budget": 60.0,
            },
        ),
    )
}


def preset_settings(name: str, given: dict[str, Any]) -> dict[str, Any]:
    """The settings of a run of preset ``name``: the preset's, then those ``given`` (the
    flags on the command line win). A length given (``epochs`` or ``time_budget``)
    replaces the preset's length; a prior given drops the preset's size of another prior.

    Examples:
        >>> s = preset_settings("burda-vae", {"epochs": 5})
        >>> s["epochs"], s["hidden"], s["preset"]
        (5, [200, 200], 'burda-vae')
        >>> "epochs" in preset_settings("fast-nll", {"time_budget": 5.0})
        False
        >>> s = preset_settings("fast-nll", {"epochs": 3})
        >>> s["epochs"], "time_budget" in s
        (3, False)
    """
    if name not in PRESETS:
        raise SettingError(
            "unknown {preset} {value!r}; choose one of {choices} (see `vaelab presets`)",
            value=name,
            choices=", ".join(PRESETS),
        )
    settings = dict(PRESETS[name].settings)
    if any(k in given for k in LENGTH_SETTINGS):
        for key in LENGTH_SETTINGS:
            settings.pop(key, None)
    if "prior" in given:  # a size belongs to its prior: drop the preset's for another prior
        for kind, size in PRIOR_SIZE_SETTINGS.items():
            if kind != given["prior"]:
                settings.pop(size, None)
    return {**settings, **given, "preset": name}


def describe_preset(config: Any) -> dict[str, Any] | None:
    """What config.json records of a preset run: its name, the preset's settings and those
    the run overrode (the flags that won); None for a run without a preset."""
    if config.preset is None:
        return None
    settings = PRESETS[config.preset].settings
    values = config.to_dict()
    keys = set(settings) | set(LENGTH_SETTINGS)  # a given length replaces the preset's
    overridden = {
        k: values[k] for k in values if k in keys and _differs(values[k], settings.get(k))
    }
    return {"name": config.preset, "settings": settings, "overridden": overridden}


def _differs(value: Any, preset_value: Any) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(preset_value, (list, tuple)):
        return list(value) != list(preset_value)
    return value != preset_value


def preset_lines() -> list[str]:
    """One line per preset, for ``vaelab presets``: name, what it is, its source, and what
    it reached here."""
    width = max(map(len, PRESETS))
    return [
        f"{p.name:<{width}}  {p.summary}. Source: {p.source}. Here: {p.reached}."
        for p in PRESETS.values()
    ]
