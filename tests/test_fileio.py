import errno
import os

import pytest

from vaelab.fileio import atomic_write, atomic_write_json


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "f.json"
    atomic_write_json(path, {"a": 1})
    atomic_write_json(path, {"a": 2})
    assert path.read_text().strip().endswith("}") and '"a": 2' in path.read_text()
    assert os.listdir(tmp_path) == ["f.json"]


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, boom)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]


def test_written_files_get_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        from vaelab import fileio

        mask, fileio._UMASK = fileio._UMASK, 0o022
        atomic_write_json(tmp_path / "report.json", {})
        fileio._UMASK = mask
    finally:
        os.umask(old)
    assert (tmp_path / "report.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_storage_errors_name_the_file_and_exit_4(tmp_path, code):
    from vaelab.errors import STORAGE_ERRNOS, StorageError

    path = tmp_path / "f.bin"
    path.write_bytes(b"old")

    def refused(f):
        f.write(b"half")
        raise OSError(code, os.strerror(code))

    with pytest.raises(StorageError) as info:
        atomic_write(path, refused)
    assert info.value.exit_code == 4 and info.value.errno == code
    assert str(info.value) == f"{STORAGE_ERRNOS[code]} while writing {path}"
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["f.bin"]
    with pytest.raises(OSError):  # still an OSError for code that tolerates one
        atomic_write(path, refused)


def test_the_free_bytes_failpoint_refuses_larger_writes(tmp_path, monkeypatch):
    from vaelab.errors import StorageError
    from vaelab.fileio import FAILPOINT_FREE_BYTES, append_line

    monkeypatch.setenv(FAILPOINT_FREE_BYTES, "8")
    append_line(tmp_path / "m.jsonl", "short\n")
    with pytest.raises(StorageError, match="no space left on device"):
        append_line(tmp_path / "m.jsonl", "a longer line\n")
    with pytest.raises(StorageError):
        atomic_write_json(tmp_path / "f.json", {"a": 1})
    assert (tmp_path / "m.jsonl").read_text() == "short\n"
