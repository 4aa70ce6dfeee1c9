"""Crash safety: SIGKILL at random moments (some mid-checkpoint), SIGINT/SIGTERM, a disk
that fills during a checkpoint write or a metrics append, a second writer; every time,
resuming gives the uninterrupted run's weights bit for bit."""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, call_cli, make_arrays
from vaelab import fileio
from vaelab.checksums import sealed_line
from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.loop import train

ARGS = [
    "--latent-dim",
    "4",
    "--hidden",
    "1024",
    "--batch-size",
    "32",
    "--epochs",
    "8",
    "--embed-epochs",
    "0,8",
    "--quiet",
]
N_KILLS = 24


def start(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "vaelab", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, **(env or {})),
    )


def _train_child(argv: list[str], env: dict[str, str], stderr: str | None = None) -> None:
    """Runs in a process forked from a forkserver that has vaelab imported already."""
    os.environ.update(env)
    if stderr is not None:
        os.dup2(os.open(stderr, os.O_WRONLY | os.O_CREAT, 0o644), 2)
    torch.set_num_threads(1)
    from vaelab.cli import main

    sys.exit(main(["train", *argv]))


@pytest.fixture(scope="module")
def forkserver():
    """Starts `vaelab train` as real processes in milliseconds (no torch import each)."""
    import multiprocessing as mp

    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(
        ["torch", "vaelab.cli", "vaelab.cli.train", "vaelab.training.loop", "vaelab.viz.plots"]
    )

    def launch(*argv: str, env: dict | None = None, stderr: Path | None = None):
        stderr = None if stderr is None else str(stderr)
        proc = ctx.Process(target=_train_child, args=(list(argv), env or {}, stderr))
        proc.start()
        return proc

    return launch


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "toy.npz"
    np.savez(path, **make_arrays(n_train=2048, n_test=256))
    return path


@pytest.fixture(scope="module")
def reference(npz, forkserver, tmp_path_factory) -> tuple[Path, float]:
    """An uninterrupted run (single-threaded, like the killed ones) and its duration."""
    out = tmp_path_factory.mktemp("ref") / "run"
    forkserver("--dataset", str(npz), *ARGS, "--out", str(out)).join()  # warm the server
    out = tmp_path_factory.mktemp("ref") / "run"
    t0 = time.monotonic()
    proc = forkserver("--dataset", str(npz), *ARGS, "--out", str(out))
    proc.join(timeout=300)
    assert proc.exitcode == 0
    return out, time.monotonic() - t0


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_run(a).model.state_dict(), load_run(b).model.state_dict()
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def wait_for_temp_checkpoint(proc, folder: Path, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.is_alive():
        if folder.is_dir() and any(p.name.startswith(".last.pt.") for p in folder.iterdir()):
            return True
        time.sleep(0.002)
    return False


def is_finished(out: Path) -> bool:
    """config.json records that every epoch and the final figures are done."""
    config = RunPaths(out).config
    return config.exists() and "finished" in json.loads(config.read_text())


def test_sigkill_at_random_moments_then_resume_is_bit_identical(
    npz, reference, forkserver, tmp_path
):
    """24 SIGKILLs, every fourth while last.pt is being written (a failpoint holds the
    write open 0.2 s); after each kill the last checkpoint loads, and every chain of
    kills and resumes ends with the uninterrupted run's weights, bit for bit."""
    ref, t_total = reference
    rng = random.Random(1234)
    kills, mid_write, chains = 0, 0, 0
    while kills < N_KILLS:
        chains += 1
        out = tmp_path / f"chain{chains}"
        fresh = ["--dataset", str(npz), *ARGS, "--out", str(out)]
        args = fresh
        while True:
            if kills % 4 == 3:
                proc = forkserver(*args, env={fileio.FAILPOINT_WRITE_DELAY: "0.2"})
                mid_write += wait_for_temp_checkpoint(proc, out / "checkpoints", 4 * t_total)
            else:
                proc = forkserver(*args)
                proc.join(timeout=rng.uniform(0.0, 0.8 * t_total))
            if not proc.is_alive():  # finished before the kill
                assert proc.exitcode == 0
                break
            proc.kill()
            proc.join()
            kills += 1
            if RunPaths(out).last.exists():  # never half-written: it always loads
                load_checkpoint(RunPaths(out).last)
            if is_finished(out):  # killed while exiting, after the run was complete
                break
            args = ["--resume", str(out), "--quiet"] if (out / "config.json").exists() else fresh
            if kills >= N_KILLS:
                proc = forkserver(*args)
                proc.join(timeout=300)
                assert proc.exitcode == 0
                break
        assert not any(p.name.endswith(".tmp") for p in (out / "checkpoints").iterdir())
        assert_same_weights(ref, out)
        assert [r["epoch"] for r in read_metrics(RunPaths(out).metrics)] == list(range(9))
    assert kills >= 20 and mid_write >= 3, (kills, mid_write)


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_at_a_step_boundary_with_a_checkpoint(npz, reference, tmp_path, sig, code):
    ref = reference[0]
    out = tmp_path / "run"
    one_thread = {"OMP_NUM_THREADS": "1"}  # as the reference run
    proc = start("--dataset", str(npz), *ARGS, "--out", str(out), env=one_thread)
    while proc.poll() is None and len(read_metrics(RunPaths(out).metrics)) < 2:
        time.sleep(0.005)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == code, err
    assert f"vaelab train --resume {out}" in err and len(err.strip().splitlines()) == 1
    load_checkpoint(RunPaths(out).last)
    proc = start("--resume", str(out), "--quiet", env=one_thread)
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert_same_weights(ref, out)


def test_mid_epoch_stop_and_resume_in_process(tmp_path, tiny, monkeypatch):
    """The in-process version: stop after a chosen step, resume, compare."""
    config = TrainConfig(dataset="tiny", latent_dim=2, hidden=16, batch_size=16, epochs=3)
    quiet = {"progress": False, "log": lambda _m: None}
    full = train(config, out=tmp_path / "full", data=tiny, **quiet)
    from vaelab.training import loop as train_module
    from vaelab.training import step as step_module

    real_enter = train_module.GracefulStop.__enter__
    calls = {"n": 0}

    def enter(self):
        real_enter(self)
        original = step_module.objective_terms

        def counting(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 21:  # in epoch 2 (16 steps per epoch)
                self.signum = signal.SIGTERM
            return original(*args, **kwargs)

        monkeypatch.setattr(step_module, "objective_terms", counting)
        return self

    monkeypatch.setattr(train_module.GracefulStop, "__enter__", enter)
    with pytest.raises(VaelabError, match="epoch 2, step 5") as info:
        train(config, out=tmp_path / "part", data=tiny, **quiet)
    assert info.value.exit_code == 143
    ckpt = load_checkpoint(RunPaths(tmp_path / "part").last)
    assert ckpt["epoch"] == 1 and ckpt["partial"]["step"] == 5
    monkeypatch.undo()
    train(resume=tmp_path / "part", data=tiny, **quiet)
    assert_same_weights(full, tmp_path / "part")
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]
    assert strip(read_metrics(RunPaths(full).metrics)) == strip(
        read_metrics(RunPaths(tmp_path / "part").metrics)
    )


def test_keep_every_keeps_resumable_checkpoints(tmp_path, tiny):
    config = TrainConfig(
        dataset="tiny", latent_dim=2, hidden=8, epochs=4, keep_every=2, embed_epochs=[0]
    )
    root = train(config, out=tmp_path / "r", data=tiny, progress=False, log=lambda _m: None)
    kept = sorted(p.name for p in (root / "checkpoints").glob("epoch-*.pt"))
    assert kept == ["epoch-000.pt", "epoch-002.pt", "epoch-004.pt"]
    assert "optimizer" in load_checkpoint(root / "checkpoints" / "epoch-002.pt")


def test_grad_clip_bounds_the_update(tmp_path, tiny):
    config = TrainConfig(dataset="tiny", latent_dim=2, hidden=8, epochs=1, grad_clip=1e-3, lr=1e-3)
    root = train(config, out=tmp_path / "r", data=tiny, progress=False, log=lambda _m: None)
    assert load_run(root).config.grad_clip == 1e-3
    with pytest.raises(VaelabError, match="grad_clip must be"):
        TrainConfig(grad_clip=0)


def test_a_second_writer_is_refused_while_the_first_trains(npz, reference, forkserver, tmp_path):
    """The issue's case: `vaelab train --resume RUN` while RUN is still training. The
    second is refused with the first's PID (exit 2); the first ends as if alone: one
    metrics row per epoch and the uninterrupted run's weights."""
    out = tmp_path / "run"
    slow = {fileio.FAILPOINT_WRITE_DELAY: "0.5"}  # every write takes 0.5 s longer
    first = forkserver("--dataset", str(npz), *ARGS, "--out", str(out), env=slow)
    lock = out / ".lock"
    while first.is_alive() and not (RunPaths(out).config.exists() and lock.exists()):
        time.sleep(0.01)
    assert lock.read_text().startswith(f"{first.pid} ")
    second = forkserver("--resume", str(out), "--quiet", stderr=tmp_path / "second.err")
    second.join(timeout=120)
    err = (tmp_path / "second.err").read_text()
    assert second.exitcode == 2 and first.is_alive(), err
    assert f"is being written by another process (PID {first.pid}" in err
    assert len(err.strip().splitlines()) == 1, err
    first.join(timeout=300)
    assert first.exitcode == 0
    assert [r["epoch"] for r in read_metrics(RunPaths(out).metrics)] == list(range(9))
    assert_same_weights(reference[0], out)
    assert not lock.exists()


class SmallDisk:
    """A 64 MiB tmpfs at ``root`` (as root, as in CI) that ``fill`` fills with a file and
    ``free`` empties again; where mounting is not possible, the failpoint that makes
    vaelab's writes see a full disk (``fileio.FAILPOINT_FREE_BYTES``)."""

    def __init__(self, root: Path, monkeypatch) -> None:
        self.root, self.monkeypatch = root, monkeypatch
        root.mkdir()
        mount = ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)]
        self.mounted = (
            os.geteuid() == 0 and subprocess.run(mount, capture_output=True).returncode == 0
        )

    def fill(self) -> None:
        if not self.mounted:
            self.monkeypatch.setenv(fileio.FAILPOINT_FREE_BYTES, "0")
            return
        with open(self.root / "filler", "wb", buffering=0) as f:
            for size in (1 << 20, 1 << 12, 1):
                try:
                    while True:
                        f.write(b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC

    def free(self) -> None:
        self.monkeypatch.delenv(fileio.FAILPOINT_FREE_BYTES, raising=False)
        (self.root / "filler").unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    disk = SmallDisk(tmp_path / "disk", monkeypatch)
    yield disk
    if disk.mounted:
        subprocess.run(["umount", "-l", str(disk.root)], check=True)


def tiny_cli_args(npz: Path, epochs: int) -> list[str]:
    return [
        "--dataset", str(npz), "--epochs", str(epochs), "--latent-dim", "2", "--hidden", "16",
        "--batch-size", "32", "--embed-epochs", f"0,{epochs}", "--quiet",
    ]  # fmt: skip


def test_disk_full_during_a_checkpoint_write_then_resume_is_bit_identical(
    capsys, small_disk, tmp_path, tiny_npz, monkeypatch
):
    """The disk fills just before epoch 2's last.pt is written: one line (exit 4) names
    the file, the intact checkpoint (epoch 1) and the resume command; last.pt is intact;
    after space is freed, --resume ends with the uninterrupted run's weights."""
    from vaelab.training import loop

    args = tiny_cli_args(tiny_npz, 4)
    assert call_cli(capsys, "train", *args, "--out", small_disk.root / "ref")[0] == 0
    out = small_disk.root / "run"
    real, calls = loop.atomic_write_bytes, []

    def write(path, data):
        calls.append(path.name)
        if calls.count("last.pt") == 3:  # epoch 2 (epoch 0 is the first)
            small_disk.fill()
        real(path, data)

    monkeypatch.setattr(loop, "atomic_write_bytes", write)
    code, _, err = call_cli(capsys, "train", *args, "--out", out)
    last = RunPaths(out).last
    assert_one_line_error(code, err, expected_code=4, match="no space left on device")
    assert f"while writing {last}; {last} (epoch 1) is intact" in err, err
    assert err.strip().endswith(f"resume with: vaelab train --resume {out}"), err
    assert load_checkpoint(last)["epoch"] == 1
    assert not any(p.name.endswith(".tmp") for p in last.parent.iterdir())
    monkeypatch.setattr(loop, "atomic_write_bytes", real)
    small_disk.free()
    code, _, err = call_cli(capsys, "train", "--resume", out, "--quiet")
    assert code == 0, err
    assert_same_weights(small_disk.root / "ref", out)
    assert [r["epoch"] for r in read_metrics(RunPaths(out).metrics)] == list(range(5))
    assert call_cli(capsys, "verify", out)[0] == 0


def test_disk_full_during_a_metrics_append_then_resume_is_bit_identical(
    capsys, small_disk, tmp_path, tiny_npz, monkeypatch
):
    """The disk fills just before a metrics line that needs a new 4 KiB page: the append
    fails part-way (a torn line on the tmpfs), one line (exit 4) names metrics.jsonl and
    the intact checkpoint; --resume drops the torn line and ends bit for bit."""
    from vaelab.training import epoch_end

    args = tiny_cli_args(tiny_npz, 14)
    assert call_cli(capsys, "train", *args, "--out", small_disk.root / "ref")[0] == 0
    out = small_disk.root / "run"
    real, failed = epoch_end.append_metrics, []

    def append(path, row):
        size = path.stat().st_size
        pages = lambda n: -(-n // 4096)  # noqa: E731
        if not failed and row["epoch"] >= 2 and pages(size + len(sealed_line(row))) > pages(size):
            failed.append(row["epoch"])
            small_disk.fill()
        real(path, row)

    monkeypatch.setattr(epoch_end, "append_metrics", append)
    code, _, err = call_cli(capsys, "train", *args, "--out", out)
    paths = RunPaths(out)
    assert failed, "no metrics line crossed a page"
    assert_one_line_error(code, err, expected_code=4, match="no space left on device")
    assert f"while writing {paths.metrics}; {paths.last} (epoch {failed[0] - 1}) is intact" in err
    if small_disk.mounted:  # the kernel wrote what fitted: a torn last line
        assert not paths.metrics.read_bytes().endswith(b"\n")
    assert [r["epoch"] for r in read_metrics(paths.metrics)] == list(range(failed[0]))
    monkeypatch.setattr(epoch_end, "append_metrics", real)
    small_disk.free()
    code, _, err = call_cli(capsys, "train", "--resume", out, "--quiet")
    assert code == 0, err
    assert_same_weights(small_disk.root / "ref", out)
    assert [r["epoch"] for r in read_metrics(paths.metrics)] == list(range(15))


def test_the_space_check_counts_what_the_run_keeps_and_runs_again_on_resume(
    tmp_path, tiny, monkeypatch
):
    import shutil
    from collections import namedtuple

    from vaelab.models import build_model
    from vaelab.training.run_dir import checkpoint_bytes, run_bytes

    config = TrainConfig(dataset="tiny", latent_dim=2, hidden=8, epochs=6, embed_epochs=[0])
    model = build_model(config.model, input_shape=tiny.input_shape, **config.to_dict())
    plain = run_bytes(model, tiny, config)
    kept = run_bytes(model, tiny, TrainConfig(**{**config.to_dict(), "keep_every": 2}))
    assert kept["checkpoints"] - plain["checkpoints"] == 3 * checkpoint_bytes(model)
    assert sum(run_bytes(model, tiny, config, start=4).values()) < sum(plain.values())
    quiet = {"progress": False, "log": lambda _m: None}
    root = train(
        TrainConfig(**{**config.to_dict(), "epochs": 2}), out=tmp_path / "r", data=tiny, **quiet
    )
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 1000))
    with pytest.raises(
        VaelabError, match=f"not enough disk space.*resume with: vaelab train --resume {root}"
    ):
        train(resume=root, epochs=6, data=tiny, **quiet)
    assert before == {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_not_enough_disk_space_is_reported_before_training(tmp_path, tiny, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10, 10, 1000))
    with pytest.raises(VaelabError, match="not enough disk space"):
        train(
            TrainConfig(dataset="tiny", epochs=1),
            out=tmp_path / "r",
            data=tiny,
            progress=False,
            log=lambda _m: None,
        )
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_read_only_location_is_reported_before_training(tmp_path, tiny):
    # /proc refuses new directories even to root, unlike a chmod-ed folder
    with pytest.raises(VaelabError, match="cannot write"):
        train(TrainConfig(dataset="tiny"), out="/proc/vaelab-run", data=tiny, progress=False)
