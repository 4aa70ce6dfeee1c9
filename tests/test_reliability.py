"""Crash safety: SIGKILL at random moments (some mid-checkpoint), SIGINT/SIGTERM, disk
full; every time, resuming gives the uninterrupted run's weights bit for bit."""

from __future__ import annotations

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

from conftest import make_arrays
from vaelab import fileio
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


def _train_child(argv: list[str], env: dict[str, str]) -> None:
    """Runs in a process forked from a forkserver that has vaelab imported already."""
    os.environ.update(env)
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

    def launch(*argv: str, env: dict | None = None):
        proc = ctx.Process(target=_train_child, args=(list(argv), env or {}))
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


def test_disk_full_while_checkpointing_keeps_the_last_good_one(tmp_path, tiny, monkeypatch):
    config = TrainConfig(dataset="tiny", latent_dim=2, hidden=8, epochs=3, embed_epochs=[0])
    quiet = {"progress": False, "log": lambda _m: None}
    root = train(
        TrainConfig(**{**config.to_dict(), "epochs": 1}), out=tmp_path / "r", data=tiny, **quiet
    )
    good = RunPaths(root).last.read_bytes()
    import errno

    def full_disk(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(
        "vaelab.training.checkpoint.atomic_write_bytes", lambda path, data: full_disk(path, None)
    )
    with pytest.raises(OSError):
        train(resume=root, epochs=3, data=tiny, **quiet)
    assert RunPaths(root).last.read_bytes() == good
    monkeypatch.undo()
    train(resume=root, epochs=3, data=tiny, **quiet)
    assert load_checkpoint(RunPaths(root).last)["epoch"] == 3


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
