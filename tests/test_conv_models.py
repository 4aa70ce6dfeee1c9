import json

import pytest
import torch

from vaelab.config import TrainConfig
from vaelab.data.datasets import arrays_to_dataset
from vaelab.errors import VaelabError
from vaelab.models import MODELS, build_model
from vaelab.objectives import objective_terms
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.epoch_end import evaluate_loss
from vaelab.training.loop import train

QUIET = {"progress": False, "log": lambda _m: None}
SHAPES = [(1, 28, 28), (3, 32, 32), (1, 7, 9), (2, 5, 4), (1, 8, 8)]


def small(**kw) -> TrainConfig:
    base = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 32, "epochs": 2}
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize("shape", SHAPES)
def test_conv_vae_shapes_for_any_image_size(shape):
    model = build_model("conv-vae", input_shape=shape, latent_dim=3, hidden=8)
    D = torch.Size(shape).numel()
    for x in (torch.rand(4, *shape), torch.rand(4, D)):
        mu, logvar = model.encode(x)
        assert mu.shape == logvar.shape == (4, 3)
        assert model.decode_logits(mu).shape == (4, D)
        x_hat, _, _ = model(x)
        assert x_hat.shape == (4, D) and 0 <= x_hat.min() and x_hat.max() <= 1


@pytest.mark.parametrize("shape", SHAPES[:3])
def test_conv_ae_shapes_and_no_variance(shape):
    model = build_model("conv-ae", input_shape=shape, latent_dim=3, hidden=8)
    z, logvar = model.encode(torch.rand(2, *shape))
    assert logvar is None and z.shape == (2, 3)
    assert model(torch.rand(2, *shape))[0].shape == (2, torch.Size(shape).numel())
    assert not model.stochastic and MODELS["conv-vae"].model_cls.stochastic


def test_conv_architecture_is_the_documented_one():
    model = build_model("conv-vae", input_shape=(1, 28, 28), latent_dim=20, hidden=400)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride) for c in convs] == [
        (1, 32, (2, 2)),
        (32, 64, (2, 2)),
    ]
    tconvs = [m for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(c.in_channels, c.out_channels) for c in tconvs] == [(64, 32), (32, 1)]
    assert model.config.sides() == [(28, 28), (14, 14), (7, 7)]


def test_conv_models_refuse_flat_features_and_tiny_images():
    with pytest.raises(VaelabError, match="image data"):
        build_model("conv-vae", input_shape=(50,), latent_dim=2, hidden=4)
    with pytest.raises(VaelabError, match="at least 4x4"):
        build_model("conv-ae", input_shape=(1, 3, 28), latent_dim=2, hidden=4)


def test_flat_dataset_with_a_conv_model_is_a_clear_error(tmp_path):
    import numpy as np

    x = np.random.default_rng(0).random((64, 6)).astype(np.float32)
    ds = arrays_to_dataset({"x_train": x, "x_test": x[:16]}, "flat", "0", "synthetic")
    with pytest.raises(VaelabError, match="--model vae"):
        train(small(model="conv-vae"), out=tmp_path / "r", data=ds, **QUIET)


@pytest.mark.parametrize("name", list(MODELS))
def test_a_few_steps_lower_the_loss(name, tiny):
    torch.manual_seed(0)
    model = build_model(name, input_shape=tiny.input_shape, latent_dim=4, hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    x = tiny.x_train[:64]
    config = TrainConfig(model=name)
    losses = []
    for _ in range(40):
        loss = objective_terms(model, x, config, config.beta).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) < 0.9 * sum(losses[:5])


@pytest.mark.parametrize("name", ["conv-vae", "conv-ae"])
def test_conv_run_saves_and_reloads_identically(name, tiny, tmp_path):
    root = train(small(model=name), out=tmp_path / "r", data=tiny, **QUIET)
    meta = json.loads(RunPaths(root).config.read_text())
    assert meta["config"]["model"] == name and meta["model_config"]["channels"] == [32, 64]
    run = load_run(root)
    assert type(run.model) is MODELS[name].model_cls
    rows = read_metrics(run.paths.metrics)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    test, _ = evaluate_loss(run.model, tiny.x_test, run.config)  # the reloaded weights
    assert test["test_loss"] == rows[-1]["test_loss"]  # give exactly the trained numbers
    again = load_run(root).model
    x = tiny.x_test[:5]
    assert torch.equal(run.model.encode(x)[0], again.encode(x)[0])
    assert torch.equal(run.model.decode(run.model.encode(x)[0]), again(x)[0])
    assert torch.equal(
        run.model_at(2).decode_logits(torch.ones(1, 2)), again.decode_logits(torch.ones(1, 2))
    )


def test_conv_resume_gives_the_uninterrupted_weights(tiny, tmp_path):
    full = train(small(model="conv-vae", epochs=3), out=tmp_path / "full", data=tiny, **QUIET)
    part = train(small(model="conv-vae", epochs=1), out=tmp_path / "part", data=tiny, **QUIET)
    train(resume=part, epochs=3, data=tiny, **QUIET)
    a, b = load_run(full).model.state_dict(), load_run(part).model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
