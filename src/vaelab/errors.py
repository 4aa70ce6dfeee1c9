"""Errors that the command line turns into one-line messages and exit codes.

Library code raises these instead of printing; ``vaelab.cli`` catches them, writes
``vaelab: error: <message>`` to stderr and exits with ``exit_code``.
"""

from __future__ import annotations


class VaelabError(Exception):
    """A usage or data problem the user can fix (exit code 2)."""

    exit_code = 2


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
