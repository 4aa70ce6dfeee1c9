"""Crash-safe file writes: a file is either the old version or the complete new one.

Each write goes to a temporary file in the same directory, is flushed and fsynced, then
renamed over the target (rename is atomic on POSIX), and the directory is fsynced so the
rename itself survives a power cut. A write the storage refuses (a full disk, a quota,
an I/O error) raises ``StorageError`` naming the file (exit code 4), never a bare OSError.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from vaelab.checksums import seal_zip
from vaelab.errors import STORAGE_ERRNOS, StorageError


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Fault injection for the crash-safety tests: seconds to wait between writing a temporary
# file and renaming it, so a test can kill the process while a checkpoint is half-written.
FAILPOINT_WRITE_DELAY = "VAELAB_FAILPOINT_WRITE_DELAY"
# Fault injection where a small disk cannot be mounted: pretend that only this many bytes
# are free, so any single write (a file, an appended line) larger than that fails with
# ENOSPC, as a full disk would.
FAILPOINT_FREE_BYTES = "VAELAB_FAILPOINT_FREE_BYTES"


def _failpoint_space(nbytes: int, path: Path) -> None:
    free = os.environ.get(FAILPOINT_FREE_BYTES)
    if free and nbytes > int(free):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def storage_error(exc: OSError, path: Path | str | None = None) -> StorageError | None:
    """The StorageError for ``exc`` if the storage refused a write (ENOSPC, EDQUOT, EIO),
    naming ``path`` (or the file the OSError names); None for any other OSError."""
    if isinstance(exc, StorageError):
        return exc
    if exc.errno not in STORAGE_ERRNOS:
        return None
    target = path if path is not None else exc.filename
    where = f" while writing {target}" if target is not None else ""
    return StorageError(f"{STORAGE_ERRNOS[exc.errno]}{where}", exc.errno, target)


@contextmanager
def reported_write(path: Path | str) -> Iterator[None]:
    """Turn a write to ``path`` that the storage refuses into a StorageError."""
    try:
        yield
    except OSError as exc:
        if (error := storage_error(exc, path)) is None:
            raise
        raise error from None


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def make_writable_dir(folder: Path | str) -> None:
    """Create ``folder`` if needed and prove it takes a file; raises OSError if not."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / ".write-test"
    probe.write_bytes(b"ok")
    probe.unlink()


def atomic_write(path: Path | str, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(f)`` on a temporary binary file, then atomically move it to ``path``."""
    path = Path(path)
    with reported_write(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give what open() would
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                _failpoint_space(f.tell(), path)
                if delay := float(os.environ.get(FAILPOINT_WRITE_DELAY) or 0):
                    time.sleep(delay)
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    _fsync_dir(path.parent)


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_zip(path: Path | str, write: Callable[[IO[bytes]], Any]) -> None:
    """``write(f)`` a zip archive (``numpy.savez``, ``torch.save``), then write it
    atomically with its SHA-256 in the archive comment (``vaelab.checksums``)."""
    buffer = io.BytesIO()
    write(buffer)
    atomic_write_bytes(path, seal_zip(buffer.getvalue()))


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def append_line(path: Path | str, line: str) -> None:
    """Append ``line`` (with its newline) in one write, flushed and fsynced. A crash or a
    full disk part-way leaves a torn last line without its newline, never a changed one."""
    data = line.encode("utf-8")
    with reported_write(path), open(path, "ab") as f:
        _failpoint_space(len(data), Path(path))
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def remove_stale_temp_files(folder: Path | str) -> list[Path]:
    """Delete temporary files that a killed ``atomic_write`` left under ``folder``."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
