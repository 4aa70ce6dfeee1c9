import json

import pytest
import torch

from vaelab.checksums import seal_json
from vaelab.config import TrainConfig
from vaelab.errors import DivergenceError, VaelabError
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.loop import train

QUIET = {"progress": False, "log": lambda _m: None}


def small(**kw) -> TrainConfig:
    base = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 32, "epochs": 2}
    return TrainConfig(**{**base, **kw})


def weights(root):
    return load_run(root).model.state_dict()


def test_untrained_test_loss_is_in_the_lecture_range(mnist, tmp_path):
    root = train(TrainConfig(epochs=0, limit=256), out=tmp_path / "r", data=mnist, **QUIET)
    (row,) = read_metrics(RunPaths(root).metrics)
    assert 514 <= row["test_loss"] <= 550
    assert row["train_loss"] is None and row["train_seconds"] is None


def test_short_mnist_run_learns(mnist, tmp_path):
    root = train(TrainConfig(epochs=1, limit=6000), out=tmp_path / "r", data=mnist, **QUIET)
    rows = read_metrics(RunPaths(root).metrics)
    assert rows[1]["test_loss"] < 0.5 * rows[0]["test_loss"]
    assert rows[1]["test_loss"] == pytest.approx(rows[1]["test_recon"] + rows[1]["test_kl"])


def test_run_directory_contents(tiny, tmp_path):
    root = train(small(epochs=3, embed_epochs=[0, 2]), out=tmp_path / "r", data=tiny, **QUIET)
    paths = RunPaths(root)
    meta = json.loads(paths.config.read_text())
    assert meta["config"]["epochs"] == 3 and meta["data"]["sha256"] == tiny.sha256
    assert meta["torch_version"] == torch.__version__ and "z = mu" in meta["test_loss_note"]
    rows = read_metrics(paths.metrics)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    keys = {
        "epoch",
        "train_loss",
        "train_recon",
        "train_kl",
        "test_loss",
        "test_recon",
        "test_kl",
        "train_seconds",
    }
    assert all(keys <= set(r) for r in rows)
    assert all(r["train_seconds"] > 0 for r in rows[1:])
    run = load_run(root)
    assert run.cached_epochs() == [0, 2]
    lat = run.latents(2)
    assert lat["mu"].shape == (len(tiny.x_test), 2) and lat["labels"].shape == (len(tiny.x_test),)
    assert (paths.figures / "samples.png").is_file()
    assert (paths.figures / "reconstructions.png").is_file()
    assert run.model_at(0).state_dict().keys() == run.model.state_dict().keys()


def test_default_cached_epochs_are_the_lectures_clipped_plus_last():
    assert TrainConfig().cached_epochs() == [0, 5, 10]
    assert TrainConfig(epochs=3).cached_epochs() == [0, 3]
    assert TrainConfig(epochs=12).cached_epochs() == [0, 5, 10, 12]
    with pytest.raises(VaelabError, match="outside"):
        TrainConfig(epochs=3, embed_epochs=[5])


def test_same_seed_same_metrics_and_weights(tiny, tmp_path):
    a = train(small(), out=tmp_path / "a", data=tiny, **QUIET)
    b = train(small(), out=tmp_path / "b", data=tiny, **QUIET)
    strip = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]
    assert strip(read_metrics(RunPaths(a).metrics)) == strip(read_metrics(RunPaths(b).metrics))
    for (k, va), vb in zip(weights(a).items(), weights(b).values()):
        assert torch.equal(va, vb), k
    c = train(small(seed=2), out=tmp_path / "c", data=tiny, **QUIET)
    assert not torch.equal(weights(a)["encoder.0.weight"], weights(c)["encoder.0.weight"])


def test_resume_gives_the_uninterrupted_weights(tiny, tmp_path):
    full = train(small(epochs=4), out=tmp_path / "full", data=tiny, **QUIET)
    part = train(small(epochs=1), out=tmp_path / "part", data=tiny, **QUIET)
    # a crash after the metrics line of epoch 2 but before its checkpoint:
    with open(RunPaths(part).metrics, "a") as f:
        f.write(json.dumps({"epoch": 2, "test_loss": 1.0}) + '\n{"torn')
    train(resume=part, epochs=4, data=tiny, **QUIET)
    for (k, va), vb in zip(weights(full).items(), weights(part).values()):
        assert torch.equal(va, vb), k
    rows = read_metrics(RunPaths(part).metrics)
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3, 4]
    full_rows = read_metrics(RunPaths(full).metrics)
    assert [r["test_loss"] for r in rows] == [r["test_loss"] for r in full_rows]
    assert load_run(part).config.epochs == 4  # the new target is recorded in config.json


def test_resume_a_finished_run_asks_for_more_epochs(tiny, tmp_path):
    root = train(small(epochs=1), out=tmp_path / "r", data=tiny, **QUIET)
    with pytest.raises(VaelabError, match="already finished"):
        train(resume=root, data=tiny, **QUIET)


def test_existing_run_is_not_overwritten(tiny, tmp_path):
    root = train(small(epochs=1), out=tmp_path / "r", data=tiny, **QUIET)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    with pytest.raises(VaelabError, match="already holds a run"):
        train(small(epochs=1), out=root, data=tiny, **QUIET)
    assert before == {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_divergence_stops_with_epoch_and_step(tiny, tmp_path):
    with pytest.raises(DivergenceError, match=r"epoch 1, step \d+"):
        train(small(lr=1e30), out=tmp_path / "r", data=tiny, **QUIET)
    assert (RunPaths(tmp_path / "r").last).is_file()  # epoch 0's checkpoint is kept


def test_autoencoder_trains_without_kl(tiny, tmp_path):
    root = train(small(model="ae"), out=tmp_path / "r", data=tiny, **QUIET)
    rows = read_metrics(RunPaths(root).metrics)
    assert all(r["test_kl"] == 0 for r in rows)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]


def test_mse_accepts_data_outside_unit_range(tmp_path):
    import numpy as np

    from vaelab.data.datasets import arrays_to_dataset

    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    ds = arrays_to_dataset({"x_train": x, "x_test": x[:16]}, "gauss", "0", "synthetic")
    with pytest.raises(VaelabError, match="use recon mse"):
        train(small(), out=tmp_path / "a", data=ds, **QUIET)
    train(small(recon="mse"), out=tmp_path / "b", data=ds, **QUIET)


def test_dynamic_binarization_trains_on_binary_batches(tiny, tmp_path):
    root = train(small(binarize="dynamic"), out=tmp_path / "r", data=tiny, **QUIET)
    rows = read_metrics(RunPaths(root).metrics)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    assert load_run(root).config.binarize == "dynamic"


def test_resume_after_a_kill_during_the_final_figures_only_draws_them(tiny, tmp_path):
    root = train(small(epochs=1), out=tmp_path / "r", data=tiny, **QUIET)
    paths = RunPaths(root)
    meta = json.loads(paths.config.read_text())
    assert "finished" in meta
    del meta["finished"]  # as if killed after the last checkpoint, before the figures
    paths.config.write_text(json.dumps(seal_json(meta)))  # as vaelab writes it
    (paths.figures / "samples.png").unlink()
    before = paths.last.read_bytes()
    train(resume=root, data=tiny, **QUIET)
    assert (paths.figures / "samples.png").is_file() and paths.last.read_bytes() == before
    assert "finished" in json.loads(paths.config.read_text())


def test_bf16_precision_runs_matmuls_in_bfloat16_and_keeps_the_loss(tiny, tmp_path):
    from vaelab.models import build_model
    from vaelab.training.epoch import train_epoch
    from vaelab.training.optim import make_optimizer
    from vaelab.training.step import TrainStep

    config = small(precision="bf16", dataset="tiny", epochs=1)
    model = build_model("vae", input_shape=tiny.input_shape, latent_dim=2, hidden=16)
    seen = set()
    model.encoder[0].register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    step = TrainStep(model, make_optimizer(model, 1e-3), config, torch.device("cpu"))
    row = train_epoch(step, tiny.x_train, config, 1)
    assert seen == {torch.bfloat16} and all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.isfinite(torch.tensor(row["train_loss"]))
    fp32 = train(small(), out=tmp_path / "fp32", data=tiny, **QUIET)
    bf16 = train(small(precision="bf16"), out=tmp_path / "bf16", data=tiny, **QUIET)
    a, b = (read_metrics(RunPaths(r).metrics)[-1]["test_loss"] for r in (fp32, bf16))
    assert b == pytest.approx(a, rel=0.01)


def test_compiled_training_step_gives_the_same_loss(tiny, tmp_path):
    plain = train(small(), out=tmp_path / "plain", data=tiny, **QUIET)
    compiled = train(small(compile=True), out=tmp_path / "compiled", data=tiny, **QUIET)
    a, b = (read_metrics(RunPaths(r).metrics)[-1]["test_loss"] for r in (plain, compiled))
    assert b == pytest.approx(a, rel=0.01)
    assert load_run(compiled).config.compile  # saved with the run, like every setting


def test_unknown_precision_is_refused():
    with pytest.raises(VaelabError, match="unknown precision 'fp8'"):
        small(precision="fp8")
