"""Setting values: the text of a ``vaelab train`` flag read into a value (``parse`` of a
:class:`vaelab.config.TrainConfig` field), and the forms some values take: hidden sizes
as a list or as config.json keeps them, a warm-up as a share of the run. Errors of text
are ValueErrors, which argparse reports on one line; errors of a value name the setting.
"""

from __future__ import annotations

from collections.abc import Sequence

from vaelab.errors import SettingError


def int_list(text: str) -> list[int]:
    """Comma-separated integers: ``"0,5,10"`` -> ``[0, 5, 10]`` (--embed-epochs)."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated integers, got {text!r}") from None


def hidden_list(hidden: int | Sequence[int]) -> list[int]:
    """The hidden sizes as a list, from the data side: 400 -> [400]; checked positive."""
    sizes = [hidden] if isinstance(hidden, int) else list(hidden)
    if not sizes or not all(isinstance(h, int) and h > 0 for h in sizes):
        raise SettingError(
            "{hidden} must be a positive integer or a list of them, got {value!r}", value=hidden
        )
    return sizes


def stored_hidden(sizes: int | Sequence[int]) -> int | list[int]:
    """Hidden sizes as config.json keeps them: one layer an int (as earlier versions wrote
    it), several a list. ``[400]`` -> ``400``; ``[200, 200]`` -> ``[200, 200]``."""
    if isinstance(sizes, int):
        return sizes
    return sizes[0] if len(sizes) == 1 else list(sizes)


def hidden_sizes(text: str) -> int | list[int]:
    """One hidden size or several, comma-separated (--hidden): ``"400"`` -> ``400``,
    ``"200,200"`` -> ``[200, 200]`` (one layer each, from the data side)."""
    sizes = int_list(text)
    if not sizes:
        raise ValueError(f"expected a hidden size or comma-separated sizes, got {text!r}")
    return sizes[0] if len(sizes) == 1 else sizes


def number_or_learned(text: str) -> float | str:
    """A number or the word 'learned' (--gaussian-sigma)."""
    if text == "learned":
        return text
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number or 'learned', got {text!r}") from None


def epochs_or_share(text: str) -> float | str:
    """A warm-up's length: a number of epochs (``"2.5"`` -> 2.5) or a share of the whole
    run (``"10%"`` -> ``"10%"``; the only form a --time-budget run takes).

    Examples:
        >>> epochs_or_share("2"), epochs_or_share(" 5% ")
        (2.0, '5%')
    """
    text = text.strip()
    try:
        if text.endswith("%"):
            float(text[:-1])
            return text
        return float(text)
    except ValueError:
        raise ValueError(
            f"expected a number of epochs or a share such as 10%, got {text!r}"
        ) from None


def share_of_run(value: float | str, epochs: int | None) -> float:
    """The fraction of training a warm-up of ``value`` covers: ``"P%"`` -> P / 100, a
    number of epochs W -> W / epochs (0 without epochs to train).

    Examples:
        >>> share_of_run("10%", None), share_of_run(2, 10), share_of_run(0.0, 10)
        (0.1, 0.2, 0.0)
    """
    if isinstance(value, str):
        return float(value[:-1]) / 100
    return value / epochs if value and epochs else 0.0
