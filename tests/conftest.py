"""Shared fixtures: a tiny synthetic dataset for speed, and the real MNIST for the tests
that must see it (loaded once per session)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vaelab.data.datasets import Dataset, arrays_to_dataset, load_dataset

ROOT = Path(__file__).resolve().parents[1]
# No thread calibration (a few seconds each) and no thread-count changes with the load in
# the suite, its subprocesses included: `vaelab train` keeps torch's default threads and
# the short OpenMP spin. tests/test_threads.py turns it back on where it tests it.
os.environ["VAELAB_AUTO_THREADS"] = "0"
VAELAB = [sys.executable, "-m", "vaelab"]
# Browser tests drive Debian's chromium through Playwright (never a downloaded browser).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def make_arrays(n_train: int = 256, n_test: int = 64, side: int = 8, seed: int = 0) -> dict:
    """Blobby uint8 images: each class lights up a different band, plus noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 4, n)
        x = rng.integers(0, 60, (n, side, side))
        for i, label in enumerate(y):
            x[i, label * side // 4 : (label + 1) * side // 4] += 180
        out[f"x_{split}"] = x.clip(0, 255).astype(np.uint8)
        out[f"y_{split}"] = y.astype(np.uint8)
    return out


@pytest.fixture
def tiny() -> Dataset:
    return arrays_to_dataset(make_arrays(), "tiny", "0" * 64, "synthetic")


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.npz"
    np.savez(path, **make_arrays())
    return path


@pytest.fixture(scope="session")
def mnist() -> Dataset:
    return load_dataset("mnist")


def run_cli(
    *args: str, env: dict | None = None, cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run(
        [*VAELAB, *args], capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout
    )


@pytest.fixture(autouse=True)
def _torch_threads():
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    yield


def train_tiny_run(folder: Path, **settings) -> Path:
    """A finished run on the synthetic 8x8 data (4 classes, 256 train / 64 test images)
    written to FOLDER/run in a second or two: for module-scoped fixtures of figure tests."""
    from vaelab.config import TrainConfig
    from vaelab.training.loop import train

    folder.mkdir(parents=True, exist_ok=True)
    npz = folder / "tiny.npz"
    np.savez(npz, **make_arrays())
    defaults = dict(dataset=str(npz), epochs=2, latent_dim=3, hidden=16, batch_size=64)
    config = TrainConfig(**{**defaults, **settings})
    return train(config, out=folder / "run", progress=False, log=lambda _m: None)


def call_cli(capsys, *argv: str | Path) -> tuple[int, str, str]:
    """Run ``vaelab ARGV`` in this process: (exit code, stdout, stderr)."""
    from vaelab import cli

    try:
        code = cli.main([str(a) for a in argv])
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, err: str, expected_code: int = 2, match: str = "") -> None:
    """A user error: the expected exit code, one line on stderr, no traceback."""
    assert code == expected_code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert match.lower() in lines[0].lower(), lines[0]


def snapshot(root: Path) -> dict[Path, str]:
    """SHA-256 of every file under ``root``: to show a run was left untouched."""
    import hashlib

    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def finished_cli_run(tmp_path: Path, tiny_npz: Path) -> Path:
    """A finished one-epoch run on the synthetic data, trained through ``vaelab train``."""
    from vaelab import cli

    out = tmp_path / "run"
    argv = ["train", "--dataset", str(tiny_npz), "--epochs", "1", "--latent-dim", "2"]
    assert cli.main([*argv, "--hidden", "8", "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def browser():
    """Headless Debian chromium through Playwright, one per test module."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (make install-dev installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def stop_during_step(monkeypatch, n_steps: int) -> None:
    """Make the next ``train`` stop as if SIGTERM arrived during its ``n_steps``-th step
    (counted over the whole run): it writes a mid-epoch checkpoint and raises
    TrainingInterrupted; ``monkeypatch.undo()`` before resuming."""
    import signal

    from vaelab.training import loop as train_module
    from vaelab.training import step as step_module

    real_enter = train_module.GracefulStop.__enter__
    calls = {"n": 0}

    def enter(self):
        real_enter(self)
        original = step_module.objective_terms

        def counting(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n_steps:
                self.signum = signal.SIGTERM
            return original(*args, **kwargs)

        monkeypatch.setattr(step_module, "objective_terms", counting)
        return self

    monkeypatch.setattr(train_module.GracefulStop, "__enter__", enter)
