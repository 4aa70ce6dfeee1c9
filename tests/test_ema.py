"""vaelab.training.ema (--ema): the moving average is what is tested and saved, every
reader gets it, and it survives --resume bit for bit (with the rest of the recipe)."""

from __future__ import annotations

import pytest
import torch

from conftest import stop_during_step
from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.checkpoint import load_checkpoint
from vaelab.training.ema import WeightAverage, ema_decay
from vaelab.training.epoch_end import evaluate_loss
from vaelab.training.loop import train

QUIET = {"progress": False, "log": lambda _m: None}


def small(**kw) -> TrainConfig:
    base = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 16, "epochs": 2}
    return TrainConfig(**{**base, **kw})


def test_decay_ramps_up_to_its_ceiling():
    assert [ema_decay(0.999, n) for n in (0, 1, 8)] == [0.1, 2 / 11, 0.5]
    assert ema_decay(0.9, 1000) == 0.9 and ema_decay(0.999, 10**6) == 0.999


def test_update_is_the_weighted_mean_of_average_and_weights():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 4, 4), latent_dim=2, hidden=4)
    average = WeightAverage(model, 0.5)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update()  # d_0 = min(0.5, 1/10) = 0.1
    for name, value in average.model.state_dict().items():
        torch.testing.assert_close(value, 0.1 * start[name] + 0.9 * (start[name] + 1))
    assert average.updates == 1 and not any(p.requires_grad for p in average.model.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    average.update()  # d_1 = min(0.5, 2/11)
    d = 2 / 11
    for name, value in average.model.state_dict().items():
        expected = d * (start[name] + 0.9) + (1 - d) * (start[name] + 2)
        torch.testing.assert_close(value, expected)


def test_a_run_tests_and_saves_the_average_and_readers_get_it(tiny, tmp_path):
    root = train(small(ema=0.9), out=tmp_path / "r", data=tiny, **QUIET)
    ckpt = load_checkpoint(RunPaths(root).last)
    assert ckpt["ema_updates"] == 2 * 16  # 256 images / 16 per batch, 2 epochs
    raw, averaged = ckpt["model_raw"], ckpt["model"]
    assert not torch.equal(raw["encoder.0.weight"], averaged["encoder.0.weight"])
    run = load_run(root)
    assert all(torch.equal(v, averaged[k]) for k, v in run.model.state_dict().items())
    assert all(torch.equal(v, averaged[k]) for k, v in run.model_at(2).state_dict().items())
    test, _ = evaluate_loss(run.model, run.dataset(data=tiny).x_test, run.config)
    assert read_metrics(RunPaths(root).metrics)[-1]["test_loss"] == pytest.approx(
        test["test_loss"], rel=1e-6
    )
    plain = train(small(), out=tmp_path / "plain", data=tiny, **QUIET)
    plain_ckpt = load_checkpoint(RunPaths(plain).last)
    assert "model_raw" not in plain_ckpt  # off by default: last.pt as before
    # the trained weights are the same run's: --ema changes what is saved, not the steps
    assert all(torch.equal(v, plain_ckpt["model"][k]) for k, v in raw.items())


def test_ema_must_be_a_decay_below_one():
    for bad in (0.0, 1.0, 1.5, -0.1):
        with pytest.raises(VaelabError, match="ema must be a decay between 0 and 1"):
            small(ema=bad)


def test_the_whole_recipe_survives_a_mid_epoch_stop_bit_for_bit(tiny, tmp_path, monkeypatch):
    """--ema, --val-size, --lr-schedule cosine with --lr-warmup, --adam-eps and a KL
    warm-up as a share: stopped in epoch 2, resumed, the uninterrupted run's files."""
    config = small(
        epochs=3, ema=0.95, val_size=64, lr_schedule="cosine", lr_warmup="20%",
        adam_eps=1e-4, kl_warmup=1.5,
    )  # fmt: skip
    full = train(config, out=tmp_path / "full", data=tiny, **QUIET)
    stop_during_step(monkeypatch, 12 + 5)  # 192 training images / 16: 12 steps per epoch
    with pytest.raises(VaelabError, match="epoch 2, step 5"):
        train(config, out=tmp_path / "part", data=tiny, **QUIET)
    monkeypatch.undo()
    part = RunPaths(tmp_path / "part")
    assert load_checkpoint(part.last)["partial"]["step"] == 5
    train(resume=part.root, data=tiny, **QUIET)
    a, b = load_checkpoint(RunPaths(full).last), load_checkpoint(part.last)
    for key in ("model", "model_raw"):
        assert all(torch.equal(v, b[key][k]) for k, v in a[key].items()), key
    assert a["ema_updates"] == b["ema_updates"] == 36 and a["best"] == b["best"]
    best_a, best_b = load_checkpoint(RunPaths(full).best), load_checkpoint(part.best)
    assert best_a["epoch"] == best_b["epoch"]
    assert all(torch.equal(v, best_b["model"][k]) for k, v in best_a["model"].items())
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]
    assert strip(read_metrics(RunPaths(full).metrics)) == strip(read_metrics(part.metrics))
