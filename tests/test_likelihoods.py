import math

import numpy as np
import pytest
import torch
from torch.distributions import ContinuousBernoulli, Normal

from vaelab.config import TrainConfig
from vaelab.data import arrays_to_dataset
from vaelab.errors import VaelabError
from vaelab.losses import (
    CB_TAYLOR_BAND,
    LOG_2PI,
    bernoulli_nll,
    continuous_bernoulli_log_norm,
    continuous_bernoulli_nll,
    gaussian_nll,
    half_squared_error,
    likelihood_nll,
)
from vaelab.models import build_model
from vaelab.objectives import neg_log_likelihood
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.train import train

QUIET = {"progress": False, "log": lambda _m: None}
LAMBDAS = [1e-3, 0.1, 0.3, 0.5 - 1e-4, 0.5 - 1e-6, 0.5, 0.5 + 1e-6, 0.5 + 1e-4, 0.7, 0.999]


def logit(p: float) -> float:
    return math.log(p) - math.log1p(-p)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lam", LAMBDAS)
def test_continuous_bernoulli_density_integrates_to_one(lam, dtype):
    x = torch.linspace(0, 1, 20_001, dtype=torch.float64)
    logits = torch.full((len(x), 1), logit(lam), dtype=dtype)
    density = torch.exp(-continuous_bernoulli_nll(logits, x[:, None].to(dtype))).double()
    assert torch.trapezoid(density, x).item() == pytest.approx(1.0, abs=1e-5)


def test_continuous_bernoulli_log_norm_is_smooth_and_exact_around_one_half():
    # float64 reference from the paper's formula, away from its 0/0 at lambda = 1/2
    lg = torch.tensor([-3.0, -0.5, -0.021, -0.019, -1e-3, 1e-4, 0.0199, 0.0201, 0.4, 8.0])
    lam = torch.sigmoid(lg.double())
    ref = torch.log(2 * torch.atanh(1 - 2 * lam) / (1 - 2 * lam))
    torch.testing.assert_close(continuous_bernoulli_log_norm(lg).double(), ref, atol=2e-6, rtol=0)
    assert continuous_bernoulli_log_norm(torch.zeros(1)).item() == pytest.approx(math.log(2))
    # both sides of the Taylor band agree (no step at its edge)
    edge = torch.tensor([CB_TAYLOR_BAND * (1 - 1e-6), CB_TAYLOR_BAND], dtype=torch.float64)
    a, b = continuous_bernoulli_log_norm(edge).tolist()
    assert a == pytest.approx(b, abs=1e-9)  # the function itself moves 7e-11 here


def test_continuous_bernoulli_gradient_is_finite_at_one_half():
    lg = torch.tensor([0.0, 1e-7, -1e-4, 0.5, 60.0, -200.0], requires_grad=True)
    x = torch.tensor([0.3, 0.5, 0.9, 0.1, 1.0, 0.0])
    continuous_bernoulli_nll(lg[None], x[None]).sum().backward()
    assert torch.isfinite(lg.grad).all()
    assert lg.grad[0].item() == pytest.approx(0.5 - 0.3, abs=1e-6)  # sigmoid(0) - x


def test_continuous_bernoulli_matches_torch_away_from_one_half():
    torch.manual_seed(0)
    logits = torch.randn(4, 30) * 4
    x = torch.rand(4, 30)
    ref = -ContinuousBernoulli(logits=logits).log_prob(x).sum(1)
    torch.testing.assert_close(continuous_bernoulli_nll(logits, x), ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("sigma", [0.1, 1.0, 3.0])
def test_gaussian_is_the_normalised_density(sigma):
    torch.manual_seed(0)
    mean, x = torch.rand(3, 12), torch.rand(3, 12)
    ref = -Normal(mean, sigma).log_prob(x).sum(1)
    torch.testing.assert_close(gaussian_nll(mean, x, math.log(sigma)), ref)
    if sigma == 1.0:  # the lecture's half squared error plus the constant 0.5 D log 2 pi
        torch.testing.assert_close(half_squared_error(mean, x) + 6 * LOG_2PI, ref)


def test_likelihood_dispatch_and_the_lectures_recon_numbers():
    torch.manual_seed(0)
    logits, x = torch.randn(5, 16), torch.rand(5, 16)
    model = build_model("vae", input_shape=(16,), latent_dim=2, hidden=4)
    assert torch.equal(likelihood_nll(logits, x, "bernoulli"), bernoulli_nll(logits, x))
    with pytest.raises(ValueError, match="unknown likelihood"):
        likelihood_nll(logits, x, "poisson")
    nll = lambda **kw: neg_log_likelihood(model, logits, x, TrainConfig(**kw))
    assert torch.equal(nll(), bernoulli_nll(logits, x))  # --recon bce, unchanged
    assert torch.equal(nll(likelihood="bernoulli"), bernoulli_nll(logits, x))
    assert torch.equal(nll(recon="mse"), half_squared_error(torch.sigmoid(logits), x))
    gauss = nll(likelihood="gaussian", gaussian_sigma=0.5)
    torch.testing.assert_close(gauss, gaussian_nll(torch.sigmoid(logits), x, math.log(0.5)))
    assert torch.equal(nll(likelihood="continuous-bernoulli"), continuous_bernoulli_nll(logits, x))


def test_likelihood_settings_are_validated():
    assert TrainConfig(likelihood="gaussian").gaussian_sigma == 1.0
    assert TrainConfig().gaussian_sigma is None and TrainConfig().likelihood is None
    for kw, match in [
        ({"likelihood": "poisson"}, "unknown --likelihood"),
        ({"likelihood": "gaussian", "recon": "mse"}, "either it or --likelihood"),
        ({"gaussian_sigma": 2.0}, "--likelihood gaussian only"),
        ({"likelihood": "gaussian", "gaussian_sigma": "tuned"}, "'learned'"),
        ({"likelihood": "gaussian", "gaussian_sigma": -1.0}, "positive"),
        ({"likelihood": "gaussian", "gaussian_sigma": float("nan")}, "positive"),
    ]:
        with pytest.raises(VaelabError, match=match):
            TrainConfig(**kw)


def small(**kw) -> TrainConfig:
    base = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 32, "epochs": 2}
    return TrainConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "kw",
    [
        {"likelihood": "bernoulli"},
        {"likelihood": "continuous-bernoulli"},
        {"likelihood": "gaussian", "gaussian_sigma": 0.2},
        {"likelihood": "gaussian", "gaussian_sigma": "learned", "lr": 1e-2},
    ],
)
def test_each_likelihood_trains_saves_and_reloads(tiny, tmp_path, kw):
    root = train(small(**kw), out=tmp_path / "r", data=tiny, **QUIET)
    rows = read_metrics(RunPaths(root).metrics)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    run = load_run(root)
    assert run.config.likelihood == kw["likelihood"]
    if kw.get("gaussian_sigma") == "learned":
        assert run.model.config.learn_sigma and run.model.log_sigma.item() != 0.0
    from vaelab.epoch_end import evaluate_loss

    test, _ = evaluate_loss(run.model, tiny.x_test, run.config)  # reloaded = as trained
    assert test["test_loss"] == rows[-1]["test_loss"]


def test_gaussian_accepts_real_valued_data_and_continuous_bernoulli_does_not(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    ds = arrays_to_dataset({"x_train": x, "x_test": x[:16]}, "gauss", "0", "synthetic")
    with pytest.raises(VaelabError, match=r"\[0, 1\]"):
        train(small(likelihood="continuous-bernoulli"), out=tmp_path / "a", data=ds, **QUIET)
    train(small(likelihood="gaussian"), out=tmp_path / "b", data=ds, **QUIET)
