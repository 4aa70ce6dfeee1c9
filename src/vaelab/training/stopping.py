"""Stopping cleanly: SIGINT/SIGTERM become a flag that the trainer reads between steps.

The trainer then writes a checkpoint that records how far the epoch got
(``EpochProgress``), so ``--resume`` continues mid-epoch with the result of a run that
was never stopped.
"""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class EpochProgress:
    """Where a training pass stands: resumable mid-epoch after a signal."""

    epoch: int
    step: int = 0  # the next step to run
    sums: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])  # loss, recon, kl
    seconds: float = 0.0


class StopRequested(Exception):
    """Raised at a step boundary after SIGINT/SIGTERM, carrying the epoch's progress."""

    def __init__(self, progress: EpochProgress) -> None:
        super().__init__("stop requested")
        self.progress = progress


class GracefulStop:
    """SIGINT/SIGTERM set a flag that the trainer reads at the next step boundary; a second
    SIGINT stops at once (the last complete checkpoint is intact: writes are atomic)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
