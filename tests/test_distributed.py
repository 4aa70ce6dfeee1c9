"""Multi-process training: real torch.distributed processes (gloo on CPU) started by
``vaelab train --nproc 2``, against one process with the same global batch."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from conftest import assert_one_line_error, call_cli, run_cli
from vaelab.config import TrainConfig
from vaelab.errors import SettingError, VaelabError
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.distributed import World, rank_slice, strip_nproc, world_from_env
from vaelab.training.loop import train
from vaelab.training.step import select_device

SUBSET = ["--limit", "3000", "--batch-size", "100", "--epochs", "1", "--quiet"]


@given(n=st.integers(0, 300), size=st.integers(1, 5))
def test_rank_slices_split_every_batch_into_near_equal_consecutive_parts(n, size):
    batch = torch.randperm(n)
    parts = [rank_slice(batch, World(rank, size)) for rank in range(size)]
    assert torch.equal(torch.cat(parts), batch)
    lengths = [len(p) for p in parts]
    assert max(lengths) - min(lengths) <= 1


def test_world_comes_from_torchruns_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert world_from_env() == World() and not World().distributed
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    world = world_from_env()
    assert world == World(3, 4, 1) and world.distributed and not world.is_main


def test_ranks_use_gpus_only_when_there_is_one_each(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto") == torch.device("cpu")
    with pytest.raises(SettingError, match="sees no CUDA GPU"):
        select_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert select_device("auto") == torch.device("cuda")
    assert select_device("auto", World(1, 2, 1), local_size=2) == torch.device("cuda", 1)
    assert select_device("auto", World(2, 3, 2), local_size=3) == torch.device("cpu")
    with pytest.raises(SettingError, match="3 processes on this machine needs 3 GPUs"):
        select_device("cuda", World(0, 3, 0), local_size=3)
    assert select_device("cpu", World(0, 3, 0), local_size=3) == torch.device("cpu")
    # torchrun says how many ranks share this machine
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert select_device("auto", World(5, 8, 1)) == torch.device("cpu")


def test_too_few_gpus_for_the_ranks_is_refused_before_any_process_starts(
    capsys, monkeypatch, tmp_path
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    run = tmp_path / "r"
    code, _, err = call_cli(
        capsys, "train", "--nproc", "2", "--device", "cuda", "--out", str(run), *SUBSET
    )
    assert_one_line_error(code, err, match="2 processes on this machine needs 2 GPUs")
    assert not run.exists()


def test_strip_nproc_removes_both_spellings():
    argv = ["train", "--nproc", "2", "--epochs", "1", "--nproc=3", "--out", "r"]
    assert strip_nproc(argv) == ["train", "--epochs", "1", "--out", "r"]


def test_a_rank_of_a_multi_process_run_needs_out(monkeypatch, tiny):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(VaelabError, match="--out"):
        train(TrainConfig(epochs=1), data=tiny, progress=False, log=lambda _m: None)


def test_bad_settings_are_refused_before_any_process_starts(capsys, tmp_path):
    code, _, err = call_cli(capsys, "train", "--nproc", "2", "--latent-dim", "0")
    assert_one_line_error(code, err, match="--latent-dim")
    code, _, err = call_cli(capsys, "train", "--nproc", "0", "--out", str(tmp_path / "r"))
    assert_one_line_error(code, err, match="--nproc")
    assert not (tmp_path / "r").exists()


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp") / "run"
    done = run_cli("train", "--nproc", "2", *SUBSET, "--out", str(root), timeout=240)
    assert done.returncode == 0, done.stderr
    return root


def test_two_gloo_processes_match_one_process(two_process_run, mnist, tmp_path):
    rows = read_metrics(RunPaths(two_process_run).metrics)
    assert [r["epoch"] for r in rows] == [0, 1]  # rank 0 alone writes, once per epoch
    meta = json.loads(RunPaths(two_process_run).config.read_text())
    assert meta["processes"] == 2 and "finished" in meta
    single = train(
        TrainConfig(limit=3000, batch_size=100, epochs=1),
        out=tmp_path / "single",
        data=mnist,
        progress=False,
        log=lambda _m: None,
    )
    (_, one) = read_metrics(RunPaths(single).metrics)
    two = rows[1]
    # Same batches, other reparameterisation noise on rank 1: equal within 1%.
    assert two["test_loss"] == pytest.approx(one["test_loss"], rel=0.01)
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=0.01)
    assert two["test_loss"] < 0.6 * rows[0]["test_loss"]  # it learned


def test_a_two_process_run_resumes_and_loads(two_process_run):
    done = run_cli(
        "train", "--nproc", "2", "--resume", str(two_process_run), "--epochs", "2", "--quiet"
    )
    assert done.returncode == 0, done.stderr
    rows = read_metrics(RunPaths(two_process_run).metrics)
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[2]["test_loss"] < rows[1]["test_loss"]
    assert load_run(two_process_run).model is not None
    ckpt = torch.load(RunPaths(two_process_run).last, weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["rng_ranks"]) == 2
    meta = json.loads(RunPaths(two_process_run).config.read_text())
    assert meta["config"]["epochs"] == 2 and meta["processes"] == 2 and "finished" in meta


def test_a_failing_rank_ends_the_whole_job(tmp_path):
    root = tmp_path / "r"
    done = run_cli(
        "train",
        "--nproc",
        "2",
        *SUBSET,
        "--out",
        str(root),
        env={"VAELAB_FAILPOINT_FAIL_RANK": "1"},
        timeout=240,
    )
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert "rank 1 of 2 exited with code 2" in last, done.stderr
    assert "failed on purpose" in done.stderr and "Traceback" not in done.stderr
    assert "finished" not in json.loads(RunPaths(root).config.read_text())
