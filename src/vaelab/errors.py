"""Errors that the command line turns into one-line messages and exit codes.

Library code raises these instead of printing; ``vaelab.cli`` catches them, writes
``vaelab: error: <message>`` to stderr and exits with ``exit_code``.
"""

from __future__ import annotations

import string
from collections.abc import Callable


class VaelabError(Exception):
    """A usage or data problem the user can fix (exit code 2)."""

    exit_code = 2


class SettingError(VaelabError):
    """A setting with a value it cannot take, e.g. ``TrainConfig(lr=nan)`` (exit code 2).

    The message is a template that names settings in braces (``{lr}``, ``{batch_size}``:
    the library's names, i.e. the field or argument names); the other fields are filled
    from ``values``. ``str(error)`` spells the settings as the library does; ``spelled``
    spells them another way, which is how the command line names its flags.
    ``setting`` is the first setting named.

    Examples:
        >>> e = SettingError("{batch_size} must be a positive integer, got {got!r}", got=0)
        >>> str(e), e.setting
        ('batch_size must be a positive integer, got 0', 'batch_size')
        >>> e.spelled(lambda name: "--" + name.replace("_", "-"))
        '--batch-size must be a positive integer, got 0'
    """

    def __init__(self, template: str, **values: object) -> None:
        fields = (f for _, f, _, _ in string.Formatter().parse(template) if f)
        self.settings = tuple(dict.fromkeys(f for f in fields if f not in values))
        self.setting = self.settings[0]
        self.template, self.values = template, values
        super().__init__(self.spelled(str))

    def spelled(self, spell: Callable[[str], str]) -> str:
        """The message with each setting's name replaced by ``spell(name)``."""
        return self.template.format(**{s: spell(s) for s in self.settings}, **self.values)


class DivergenceError(VaelabError):
    """Training produced a non-finite loss or gradient (exit code 3)."""

    exit_code = 3


class TrainingInterrupted(VaelabError):
    """Training was stopped by a signal after a checkpoint was written."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class RankLostError(VaelabError):
    """A torch.distributed peer stopped, so this rank cannot go on (exit code 1)."""

    exit_code = 1


class RankFailedError(VaelabError):
    """A process of a multi-process run failed, so the launcher stopped the others; the
    exit code is the failed process's (1 if a signal ended it)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
