"""--time-budget MINUTES: the run stops inside its budget, says what it did, and --resume
spends only what is left. Most tests drive the budget's clock by hand (``FakeTime``) so
that where a run stops does not depend on how busy the machine is."""

from __future__ import annotations

import json
import time

import pytest

from conftest import assert_one_line_error, call_cli, make_arrays, stop_during_step
from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training import budget as budget_module
from vaelab.training.budget import BudgetClock
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.loop import train

QUIET = {"progress": False, "log": lambda _m: None}
STEPS_PER_EPOCH = 8  # 256 tiny images, batches of 32


def small(**kw) -> TrainConfig:
    base = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 32}
    return TrainConfig(**{**base, **kw})


class FakeTime:
    """time.perf_counter for the budget's clock: ``tick`` seconds pass on every reading."""

    def __init__(self, tick: float = 0.01) -> None:
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_a_real_budget_stops_in_time_and_records_what_it_did(tiny, tmp_path):
    lines: list[str] = []
    t0 = time.perf_counter()
    root = train(small(time_budget=0.05), out=tmp_path / "r", data=tiny, log=lines.append,
                 progress=False)  # fmt: skip
    wall = time.perf_counter() - t0
    rows = read_metrics(RunPaths(root).metrics)
    meta = json.loads(RunPaths(root).config.read_text())
    done = meta["budget"]
    # the last epoch began inside the budget, and its steps stopped within a step of it:
    # what runs past the budget is one epoch's end (its test loss, latents, checkpoint)
    last = rows[-1]
    assert last["budget_seconds"] - last["train_seconds"] < 3.0
    assert last["budget_seconds"] <= 3.0 + 0.5
    assert done["seconds"] >= last["budget_seconds"]
    assert wall < 3.0 + 30  # + loading, epoch 0 and the final figures, on a busy machine
    assert len(rows) >= 2 and [r["epoch"] for r in rows] == list(range(len(rows)))
    assert done["epochs"] == rows[-1]["epoch"] and done["minutes"] == 0.05
    assert done["steps"] == sum(r["steps"] for r in rows[1:])
    assert done["last_epoch_steps"] == rows[-1]["steps"]
    assert done["steps_per_epoch"] == STEPS_PER_EPOCH
    assert any(line.startswith("time budget 0.05 min spent:") for line in lines)
    assert meta["config"]["epochs"] is None and "finished" in meta
    run = load_run(root)
    assert run.cached_epochs()[-1] == rows[-1]["epoch"]  # the last epoch's latents
    assert run.config.time_budget == 0.05 and run.epoch == rows[-1]["epoch"]


def test_the_last_epoch_ends_where_the_clock_does(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(budget_module, "time", FakeTime(0.01))
    root = train(small(time_budget=0.005), out=tmp_path / "r", data=tiny, **QUIET)
    rows = read_metrics(RunPaths(root).metrics)
    done = json.loads(RunPaths(root).config.read_text())["budget"]
    assert 0 < rows[-1]["steps"] < STEPS_PER_EPOCH  # a partial last epoch
    assert all(r["steps"] == STEPS_PER_EPOCH for r in rows[1:-1])
    assert done["steps"] == (len(rows) - 2) * STEPS_PER_EPOCH + rows[-1]["steps"]
    # the partial epoch's losses are averages over the images it saw, not over all
    assert rows[-1]["train_loss"] > 0.5 * rows[-2]["train_loss"]
    assert done["seconds"] >= 0.3  # 0.005 min on the fake clock


def test_resume_spends_what_is_left(tiny, tmp_path, monkeypatch):
    fake = FakeTime(0.01)
    monkeypatch.setattr(budget_module, "time", fake)
    stop_during_step(monkeypatch, 11)  # in epoch 2
    with pytest.raises(VaelabError, match="epoch 2, step 3"):
        train(small(time_budget=0.01), out=tmp_path / "r", data=tiny, **QUIET)
    monkeypatch.undo()
    paths = RunPaths(tmp_path / "r")
    saved = load_checkpoint(paths.last)["budget"]
    assert saved["steps"] == 11 and 0 < saved["seconds"] < 0.6 and not saved["done"]
    monkeypatch.setattr(budget_module, "time", FakeTime(0.01))  # another process's clock
    lines: list[str] = []
    train(resume=paths.root, data=tiny, log=lines.append, progress=False)
    assert "resuming" in lines[0] and "of 0.01 min left" in lines[0]
    rows = read_metrics(paths.metrics)
    done = json.loads(paths.config.read_text())["budget"]
    assert done["steps"] == sum(r["steps"] for r in rows[1:]) > 11
    assert rows[2]["steps"] == STEPS_PER_EPOCH  # epoch 2 went on from step 3 to its end
    assert 0.6 <= done["seconds"] < 0.6 + 0.5  # the budget in all, not twice
    with pytest.raises(VaelabError, match="already spent its time budget"):
        train(resume=paths.root, data=tiny, **QUIET)
    last = rows[-1]["epoch"]
    train(resume=paths.root, time_budget=0.02, data=tiny, **QUIET)  # a larger budget
    assert read_metrics(paths.metrics)[-1]["epoch"] > last
    assert load_run(paths.root).config.time_budget == 0.02


def test_resume_from_a_cached_epoch_spends_what_was_left_there(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(budget_module, "time", FakeTime(0.01))
    train(small(time_budget=0.02, embed_epochs=[2]), out=tmp_path / "r", data=tiny, **QUIET)
    paths = RunPaths(tmp_path / "r")
    assert read_metrics(paths.metrics)[-1]["epoch"] > 2
    at_two = load_checkpoint(paths.epoch_checkpoint(2))["budget"]
    assert 0 < at_two["seconds"] < 1.2 and at_two["steps"] == 2 * STEPS_PER_EPOCH
    monkeypatch.setattr(budget_module, "time", FakeTime(0.01))  # another process's clock
    lines: list[str] = []
    train(resume=paths.root, from_epoch=2, data=tiny, log=lines.append, progress=False)
    left = 0.02 - at_two["seconds"] / 60
    assert f"at epoch 3 with {left:.2f} of 0.02 min left from epoch-002.pt" in lines[0]
    done = json.loads(paths.config.read_text())["budget"]
    assert 1.2 <= done["seconds"] < 1.2 + 0.5  # the budget in all, from epoch 2's share on


def test_a_budget_run_resumes_with_a_budget_not_epochs(tmp_path, capsys):
    npz = tmp_path / "tiny.npz"
    import numpy as np

    np.savez(npz, **make_arrays())
    base = ["--dataset", npz, "--latent-dim", "2", "--hidden", "8", "--quiet"]
    code, _, err = call_cli(capsys, "train", *base, "--time-budget", "0.002", "--out",
                            tmp_path / "b")  # fmt: skip
    assert code == 0, err
    code, _, err = call_cli(capsys, "train", "--resume", tmp_path / "b", "--epochs", "5")
    assert_one_line_error(code, err, 2, "was started with --time-budget")
    code, _, err = call_cli(capsys, "train", *base, "--epochs", "1", "--out", tmp_path / "e")
    assert code == 0, err
    code, _, err = call_cli(capsys, "train", "--resume", tmp_path / "e", "--time-budget", "1")
    assert_one_line_error(code, err, 2, "was started with --epochs")


@pytest.mark.parametrize(
    "flags,match",
    [
        (["--time-budget", "0"], "--time-budget must be a positive number of minutes"),
        (["--time-budget=-1"], "--time-budget must be a positive number of minutes"),
        (["--time-budget", "1", "--epochs", "3"], "give --epochs or --time-budget, not both"),
        (["--time-budget", "1", "--kl-warmup", "2"], "give --kl-warmup as a share of the budget"),
        (["--time-budget", "1", "--lr-warmup", "1"], "give --lr-warmup as a share of the budget"),
        (["--time-budget", "1", "--nproc", "2"], "--time-budget trains in one process"),
    ],
)
def test_bad_budgets_are_one_line_exit_2(capsys, tmp_path, flags, match):
    code, _, err = call_cli(capsys, "train", "--limit", "256", "--out", tmp_path / "r", *flags)
    assert_one_line_error(code, err, 2, match)
    assert not (tmp_path / "r").exists()


def test_clock_counts_from_what_a_checkpoint_saved(monkeypatch):
    monkeypatch.setattr(budget_module, "time", FakeTime(1.0))
    clock = BudgetClock.from_checkpoint(1.0, {"seconds": 50.0, "steps": 7, "done": True})
    assert (clock.elapsed(), clock.steps, clock.done) == (50.0, 7, False)
    clock.start()  # reads 1.0
    assert clock.elapsed() == 51.0 and clock.share() == pytest.approx(52 / 60)
    assert not clock.spent()
    clock.reserve = 10.0
    assert clock.last_epoch()  # 54 s + 10 s of epoch end > 60 s
    assert budget_module.budget_left(1.0, {"seconds": 61.0, "done": True}) is False
    assert budget_module.budget_left(2.0, {"seconds": 61.0, "done": True}) is True
    assert budget_module.budget_left(1.0, {"seconds": 61.0, "done": False}) is True
