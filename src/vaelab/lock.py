"""One writer per run directory: an OS file lock on ``RUN/.lock``.

A process that writes into a run (``vaelab train``, new or ``--resume``; ``evaluate``,
which writes eval.json; ``sweep``, for each run it trains and evaluates) holds
``fcntl.flock(LOCK_EX)`` on RUN/.lock while it writes, with "PID COMMAND" in the file.
A second writer finds the lock taken and gets ``RunLockedError`` naming that process
before it changes anything. The kernel drops a flock when its holder exits or is killed,
so a killed run never leaves a stale lock; the next writer takes the file over, and the
holder deletes it when it is done. Of a multi-process run, rank 0 (the one that writes)
holds it.

Readers take no lock and never wait: ``load_run``, figures, ``report``, ``embed``,
``serve`` and ``verify``. Every file a writer replaces is replaced atomically, and a
torn last metrics line is skipped, so a reader sees a complete old or new file. The
figure commands, which write PNGs, embeddings and report.html, are readers in this sense.
"""

from __future__ import annotations

import fcntl
import os
import shlex
import sys
import time
from pathlib import Path
from types import TracebackType

from vaelab.errors import RunLockedError, VaelabError
from vaelab.fileio import storage_error

LOCK_NAME = ".lock"


def command_line() -> str:
    """This process's command, as a person would type it (``vaelab train ...``)."""
    argv = list(sys.argv) or [""]
    name = Path(argv[0]).name
    if name == "__main__.py":
        name = f"python -m {Path(argv[0]).parent.name}"
    elif name in ("-c", "-m", ""):
        name = f"python {name}".strip()
    text = " ".join([name, shlex.join(argv[1:])]).strip().replace("\n", " ")
    return text if len(text) <= 200 else text[:197] + "..."


class RunLock:
    """The writer lock of the run in ``root``: ``with RunLock(root): ...``, or
    ``acquire()`` / ``release()`` (both may be called again; release when not held does
    nothing)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        """Take the lock or raise RunLockedError naming its holder."""
        while self._fd is None:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise storage_error(exc, self.path) or VaelabError(
                    f"cannot write into {self.root}: {exc.strerror or exc}"
                ) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise RunLockedError(
                    f"{self.root} is being written by another process ({holder}); wait "
                    "for it to end, or stop it, then run this again"
                ) from None
            # The holder before us may have deleted the file between our open and flock.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            try:  # who holds it, for the message of a second writer; the lock holds anyway
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {command_line()}\n".encode(), 0)
            except OSError:
                pass
            self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # while still holding it, so no one locks a deleted file
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _holder(fd: int) -> str:
    """'PID 123: vaelab train ...' from the lock file (which its holder may be writing)."""
    for _ in range(20):
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        if text:
            pid, _, command = text.partition(" ")
            return f"PID {pid}: {command}" if command else f"PID {pid}"
        time.sleep(0.02)
    return "its PID is not recorded yet"
