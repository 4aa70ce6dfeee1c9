"""One writer per run: a second train, --resume, evaluate or sweep writing into a run that
another process holds is refused with the holder's PID and command, and changes nothing;
the kernel releases the lock of a killed holder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import assert_one_line_error, call_cli, snapshot
from vaelab.errors import RunLockedError
from vaelab.lock import LOCK_NAME, RunLock

HOLD = """
import sys, time
from vaelab.lock import RunLock
RunLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(finished_cli_run):
    """Another process holding the run's writer lock (killed at the end)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(finished_cli_run)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


def test_a_second_writer_is_refused_and_changes_nothing(capsys, finished_cli_run, holder):
    run = finished_cli_run
    before = snapshot(run)
    for argv in (
        ["train", "--resume", run, "--epochs", "3", "--quiet"],
        ["evaluate", run, "--iw-samples", "2", "--no-sample-scores", "--quiet"],
    ):
        code, _, err = call_cli(capsys, *argv)
        assert_one_line_error(code, err, match=f"{run} is being written by another process")
        assert f"PID {holder.pid}: python -c" in err, err
        assert snapshot(run) == before


def test_sweep_and_a_new_run_are_refused_in_a_folder_being_written(capsys, tmp_path, tiny_npz):
    folder = tmp_path / "sweep" / "beta-1"
    folder.mkdir(parents=True)
    small = ["--dataset", tiny_npz, "--epochs", "1", "--latent-dim", "2", "--hidden", "8"]
    with RunLock(folder):  # as a `vaelab train --out sweep/beta-1` that has just begun
        code, _, err = call_cli(capsys, "train", *small, "--out", folder, "--quiet")
        assert_one_line_error(code, err, match="is being written by another process")
        code, _, err = call_cli(
            capsys, "sweep", *small, "--beta", "1", "--out", tmp_path / "sweep", "--quiet",
            "--no-sample-scores", "--iw-samples", "2",
        )  # fmt: skip
        assert_one_line_error(code, err, match=f"PID {os.getpid()}")
    assert os.listdir(folder) == []  # nothing written, the lock file removed


def test_the_kernel_releases_the_lock_of_a_killed_holder(finished_cli_run, holder):
    with pytest.raises(RunLockedError):
        RunLock(finished_cli_run).acquire()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (finished_cli_run / LOCK_NAME).exists()  # left behind, but not locked
    with RunLock(finished_cli_run) as lock:
        assert lock.held
        assert (finished_cli_run / LOCK_NAME).read_text().startswith(f"{os.getpid()} ")
    assert not (finished_cli_run / LOCK_NAME).exists()


def test_a_finished_run_leaves_no_lock_file(finished_cli_run):
    assert not (finished_cli_run / LOCK_NAME).exists()


def test_readers_do_not_wait_for_a_writer(capsys, finished_cli_run, holder):
    """load_run, figures and verify read while another process holds the lock."""
    from vaelab.run import load_run

    t0 = time.monotonic()
    assert load_run(finished_cli_run).epoch == 1
    code, _, err = call_cli(capsys, "verify", finished_cli_run)
    assert code == 0, err
    code, out, err = call_cli(capsys, "sample", finished_cli_run, "--n", "4")
    assert code == 0 and Path(out.split()[-1]).is_file(), err
    assert time.monotonic() - t0 < 60
