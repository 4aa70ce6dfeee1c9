"""Errors that the command line turns into one-line messages and exit codes.

Library code raises these instead of printing; ``vaelab.cli`` catches them, writes
``vaelab: error: <message>`` to stderr and exits with ``exit_code``: 2 for what the
user can fix (bad input, a damaged file, a run another process is writing), 3 for a
diverging run, 4 for a write the disk refused (full, over quota, failing).
"""

from __future__ import annotations

import errno
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


class StorageError(VaelabError, OSError):
    """A write failed because the disk is full, over quota or failing (ENOSPC, EDQUOT,
    EIO): exit code 4. It is an OSError too, so code that tolerates an unwritable cache
    (``except OSError``) still does. ``path`` is the file that was being written."""

    exit_code = 4

    def __init__(self, message: str, code: int | None = None, path: object = None) -> None:
        OSError.__init__(self, code, message, None if path is None else str(path))
        self.message, self.path = message, path

    def __str__(self) -> str:
        return self.message


# The write errors that mean "the storage failed", not "vaelab has a bug".
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on device (the disk is full)",
    errno.EDQUOT: "disk quota exceeded",
    errno.EIO: "input/output error (the disk failed)",
}


class DamagedFileError(VaelabError):
    """A file of a run does not match the SHA-256 recorded when it was written, or is not
    what vaelab wrote at all (exit code 2). ``path`` names it."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: damaged: {reason}")
        self.path, self.reason = path, reason


class RunLockedError(VaelabError):
    """Another process is writing the run directory (exit code 2)."""


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
