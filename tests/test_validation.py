"""--val-size: the hold-out comes from the training images (never the test set), val_loss
is scored each epoch, checkpoints/best.pt follows it crash-safely, and ``vaelab evaluate
--checkpoint best`` scores it."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_one_line_error, call_cli
from vaelab.config import TrainConfig
from vaelab.data.datasets import prepare_data
from vaelab.errors import VaelabError
from vaelab.evaluation.evaluate import evaluate_run
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training import epoch_end
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.loop import train

QUIET = {"progress": False, "log": lambda _m: None}


def small(**kw) -> TrainConfig:
    base = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 32, "epochs": 3}
    base["embed_epochs"] = list(range(kw.get("epochs", 3) + 1))  # every epoch's weights kept
    return TrainConfig(**{**base, **kw})


def test_mnist_hold_out_is_its_canonical_validation_split(mnist):
    data = prepare_data(TrainConfig(val_size=10_000), mnist)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (50_000, 10_000, 10_000)
    assert torch.equal(data.x_val, mnist.x_train[50_000:])  # the pickle's "valid" part
    assert torch.equal(data.x_train, mnist.x_train[:50_000])
    assert torch.equal(data.x_test, mnist.x_test)
    limited = prepare_data(TrainConfig(val_size=10_000, limit=1024), mnist)
    assert torch.equal(limited.x_val, data.x_val) and len(limited.x_train) == 1024
    assert prepare_data(TrainConfig(limit=1024), mnist).x_val is None


def test_hold_out_is_binarised_once_like_the_test_set(tiny):
    data = prepare_data(small(val_size=64, binarize="dynamic"), tiny)
    assert set(data.x_val.unique().tolist()) <= {0.0, 1.0}
    again = prepare_data(small(val_size=64, binarize="dynamic"), tiny)
    assert torch.equal(data.x_val, again.x_val)


def test_a_hold_out_as_large_as_the_training_set_is_refused(tiny, capsys, tmp_path):
    with pytest.raises(VaelabError, match="val_size 256 leaves no training images"):
        prepare_data(small(val_size=256), tiny)
    with pytest.raises(VaelabError, match="limit 200 is larger than the 192 training images"):
        prepare_data(small(val_size=64, limit=200), tiny)
    code, _, err = call_cli(
        capsys, "train", "--val-size", "60000", "--epochs", "0", "--out", tmp_path / "r"
    )
    assert_one_line_error(code, err, 2, "--val-size 60000 leaves no training images")
    code, _, err = call_cli(capsys, "train", "--val-size", "0", "--out", tmp_path / "r")
    assert_one_line_error(code, err, 2, "--val-size must be a positive integer")


def _scripted_validation(monkeypatch, losses: dict[int, float]) -> None:
    """val_loss of epoch e is losses[e] (the real scores otherwise), so the test knows
    which epoch must win."""
    real = epoch_end.validation_loss
    epochs = iter(sorted(losses))

    def scripted(*args, **kwargs):
        scores = real(*args, **kwargs)
        return dict(scores, val_loss=losses[next(epochs)])

    monkeypatch.setattr(epoch_end, "validation_loss", scripted)


def test_best_checkpoint_is_the_epoch_of_lowest_validation_loss(tiny, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, {0: 900.0, 1: 500.0, 2: 400.0, 3: 450.0})
    root = train(small(val_size=64), out=tmp_path / "r", data=tiny, **QUIET)
    paths = RunPaths(root)
    rows = read_metrics(paths.metrics)
    assert [r["val_loss"] for r in rows] == [900.0, 500.0, 400.0, 450.0]
    assert all(r["val_recon"] > 0 and r["test_loss"] != r["val_loss"] for r in rows)
    best = load_checkpoint(paths.best)
    assert (best["epoch"], best["val_loss"]) == (2, 400.0)
    at_2 = load_checkpoint(paths.epoch_checkpoint(2))["model"]
    assert all(torch.equal(v, at_2[k]) for k, v in best["model"].items())
    assert load_run(root, checkpoint="best").epoch == 2 and load_run(root).epoch == 3


def test_a_kill_between_last_and_best_is_repaired_on_resume(tiny, tmp_path, monkeypatch):
    _scripted_validation(monkeypatch, {0: 900.0, 1: 500.0, 2: 400.0})
    root = train(small(val_size=64, epochs=2), out=tmp_path / "r", data=tiny, **QUIET)
    paths = RunPaths(root)
    paths.best.unlink()  # as if killed after writing last.pt (epoch 2, best 2), before best.pt
    monkeypatch.undo()
    _scripted_validation(monkeypatch, {3: 450.0})
    train(resume=root, epochs=3, data=tiny, **QUIET)
    best = load_checkpoint(paths.best)
    assert (best["epoch"], best["val_loss"]) == (2, 400.0)
    at_2 = load_checkpoint(paths.epoch_checkpoint(2))["model"]
    assert all(torch.equal(v, at_2[k]) for k, v in best["model"].items())


def test_evaluate_checkpoint_best_and_the_val_split(tiny, tmp_path, monkeypatch, capsys):
    _scripted_validation(monkeypatch, {0: 900.0, 1: 300.0, 2: 400.0, 3: 450.0})
    root = train(small(val_size=64), out=tmp_path / "r", data=tiny, **QUIET)
    common = dict(iw_samples=2, n_samples=2, scores=False, data=tiny, device="cpu")
    best = evaluate_run(root, checkpoint="best", **common)
    last = evaluate_run(root, split="val", **common)
    assert (best["epoch"], best["checkpoint"]) == (1, "best")
    assert (last["epoch"], last["checkpoint"], last["n_images"]) == (3, "last", 64)
    assert best["neg_elbo"] != last["neg_elbo"]
    npz = tmp_path / "tiny.npz"  # the CLI loads the data itself: a run on a file
    import numpy as np

    from conftest import make_arrays

    np.savez(npz, **make_arrays())
    monkeypatch.undo()
    cli_run = train(small(val_size=64, dataset=str(npz)), out=tmp_path / "c", **QUIET)
    args = ["--iw-samples", "2", "--no-sample-scores", "--quiet", "--device", "cpu"]
    code, out, err = call_cli(capsys, "evaluate", cli_run, "--checkpoint", "best", *args)
    assert code == 0, err
    saved = json.loads((cli_run / "eval.json").read_text())
    assert (
        saved["checkpoint"] == "best"
        and saved["epoch"] == load_checkpoint(RunPaths(cli_run).best)["epoch"]
    )
    plain = train(small(dataset=str(npz), epochs=1), out=tmp_path / "p", **QUIET)
    code, _, err = call_cli(capsys, "evaluate", plain, "--checkpoint", "best", *args)
    assert_one_line_error(code, err, 2, "has no checkpoints/best.pt")
    code, _, err = call_cli(capsys, "evaluate", plain, "--split", "val", *args)
    assert_one_line_error(code, err, 2, "--split val needs a run trained with --val-size")
