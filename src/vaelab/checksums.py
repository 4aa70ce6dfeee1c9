"""Checksums: every file of a run carries the SHA-256 of its content, recorded when it is
written, and every read checks it (the way git and checkpoint libraries trust their
files).

- Zip archives (checkpoints ``*.pt``, latents and embeddings ``*.npz``) keep it in the
  archive comment, which every zip reader (``torch.load``, ``numpy.load``, ``unzip``)
  allows: ``vaelab-sha256:<64 hex>\\n``, the SHA-256 of every byte before the comment.
  The checksum lives in the file it covers, so an atomic rename replaces both at once
  and a crash can never leave the one without the other.
- JSON files (``config.json``, ``eval.json``) and every ``metrics.jsonl`` line keep it
  in a ``"checksum": "sha256:<64 hex>"`` field: the SHA-256 of the object's canonical
  JSON (sorted keys, no spaces) without that field. Readers get the object without it.

A file without a checksum (a run written by an older vaelab) is read unverified, with
one note on stderr per run. A single flipped byte cannot make a sealed file look like an
old one: the seal is recognised by two independent marks (zip) or by the ``sha256:``
value under a damaged key (JSON).
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

from vaelab.errors import DamagedFileError

CHECKSUM_KEY = "checksum"
MISMATCH = "its SHA-256 does not match the one recorded when it was written"
_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")

# ------------------------------------------------------------------ zip archives
_EOCD = b"PK\x05\x06"  # the zip's end-of-central-directory record, 22 bytes + comment
_PREFIX = b"vaelab-sha256:"
_COMMENT = len(_PREFIX) + 64 + 1  # prefix, hex digest, newline


def seal_zip(data: bytes) -> bytes:
    """``data`` (a zip archive without comment, as torch.save and numpy.savez write it)
    with its SHA-256 in the archive comment."""
    if len(data) < 22 or data[-22:-18] != _EOCD or data[-2:] != b"\0\0":
        raise ValueError("not a zip archive without a comment")
    body, length = memoryview(data)[:-2], _COMMENT.to_bytes(2, "little")  # no copies
    digest = hashlib.sha256(body)
    digest.update(length)
    return b"".join([body, length, _PREFIX, digest.hexdigest().encode(), b"\n"])


def check_zip(data: bytes, path: Path | str) -> bool:
    """True if ``data`` carries an intact checksum, False if it carries none (an older
    vaelab, or not a vaelab file: its loader decides); DamagedFileError if the checksum
    does not match or is itself damaged."""
    comment, head = data[-_COMMENT:], memoryview(data)[:-_COMMENT]
    marked = comment.startswith(_PREFIX)
    framed = head[-22:-18] == _EOCD and head[-2:] == _COMMENT.to_bytes(2, "little")
    if not (marked or framed):
        return False
    recorded = comment[len(_PREFIX) : -1].decode("ascii", "replace")
    well_formed = comment.endswith(b"\n") and _DIGEST.fullmatch(f"sha256:{recorded}")
    if not (marked and framed and well_formed):
        raise DamagedFileError(path, "its checksum record (the zip comment) is damaged")
    if hashlib.sha256(head).hexdigest() != recorded:
        raise DamagedFileError(path, MISMATCH)
    return True


# ----------------------------------------------------------- JSON objects and lines
def digest(obj: dict[str, Any]) -> str:
    """``sha256:<hex>`` of ``obj``'s canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal_json(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` with its checksum as the last field (a checksum it had is replaced)."""
    rest = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    return {**rest, CHECKSUM_KEY: digest(rest)}


def check_json(obj: Any, where: str) -> tuple[Any, bool]:
    """(``obj`` without its checksum field, whether it had one); DamagedFileError
    naming ``where`` if the checksum does not match or its key is damaged."""
    if not isinstance(obj, dict):
        return obj, False
    if CHECKSUM_KEY not in obj:
        if any(isinstance(v, str) and _DIGEST.fullmatch(v) for v in obj.values()):
            raise DamagedFileError(where, f"its {CHECKSUM_KEY!r} field is damaged")
        return obj, False
    rest = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    if obj[CHECKSUM_KEY] != digest(rest):
        raise DamagedFileError(where, MISMATCH)
    return rest, True


def sealed_line(row: dict[str, Any]) -> str:
    """One metrics.jsonl line, with its checksum and newline."""
    return json.dumps(seal_json(row)) + "\n"


def parse_json(text: str, where: str) -> Any:
    """``json.loads``; a file that was sealed but no longer parses is DamagedFileError,
    any other parse error is left to the caller (JSONDecodeError)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if f'"{CHECKSUM_KEY}"' in text or '"sha256:' in text:  # one flip cannot hide both
            raise DamagedFileError(where, f"not valid JSON any more ({exc})") from None
        raise


def read_json(path: Path | str) -> tuple[Any, bool]:
    """A sealed JSON file, checked: (the object without its checksum, sealed or not)."""
    path = Path(path)
    text = path.read_bytes().decode("utf-8", "replace")  # a damaged byte: caught below
    return check_json(parse_json(text, str(path)), str(path))


# ------------------------------------------------------------- files without one
_NOTED: set[Path] = set()


def note_unverified(path: Path | str) -> None:
    """One line on stderr per run: ``path`` has no checksum, so it was read unverified."""
    path = Path(path)
    above = (path.parent, path.parent.parent)
    run = next((p for p in above if (p / "config.json").exists()), path.parent)
    if run.resolve() in _NOTED:
        return
    _NOTED.add(run.resolve())
    sys.stderr.write(
        f"vaelab: note: {path} has no checksum (written by an older vaelab), so it was "
        f"read unverified; `vaelab verify {run}` lists the files that have one\n"
    )
