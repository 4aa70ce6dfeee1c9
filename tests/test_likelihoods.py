import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.distributions import ContinuousBernoulli, Normal

from vaelab.config import TrainConfig
from vaelab.data.datasets import arrays_to_dataset
from vaelab.errors import VaelabError
from vaelab.losses import (
    CB_TAYLOR_BAND,
    LOG_2PI,
    bernoulli_nll,
    continuous_bernoulli_log_norm,
    continuous_bernoulli_mean,
    continuous_bernoulli_nll,
    decoder_mean,
    gaussian_nll,
    half_squared_error,
    likelihood_nll,
)
from vaelab.models import build_model
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.loop import train

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


# ------------------------------------------------------------ the decoder's mean E[x|z]


def cb_mean_formula(lam: float) -> float:
    """The paper's E[x] in lambda, in float64 (0/0 at 1/2: not called there)."""
    return lam / (2 * lam - 1) + 1 / (2 * math.atanh(1 - 2 * lam))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("lam", LAMBDAS)
def test_continuous_bernoulli_mean_is_the_integral_of_x_times_the_density(lam, dtype):
    x = torch.linspace(0, 1, 20_001, dtype=torch.float64)
    logits = torch.full((len(x), 1), logit(lam), dtype=torch.float64)
    density = torch.exp(-continuous_bernoulli_nll(logits, x[:, None]))
    integral = torch.trapezoid(x * density, x).item()
    mean = decoder_mean(torch.tensor([logit(lam)], dtype=dtype), "continuous-bernoulli")
    assert mean.dtype == dtype
    assert mean.item() == pytest.approx(integral, abs=1e-7)
    if abs(lam - 0.5) > 1e-3:  # the closed form, where it has no 0/0
        assert mean.item() == pytest.approx(cb_mean_formula(lam), abs=1e-7)


def test_continuous_bernoulli_mean_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20_000, generator=g, dtype=torch.float64) * 6
    # torch's own Taylor band is 0.499 < lambda < 0.501; it clamps lambda away from 0 and 1,
    # which costs it 1e-8 at |l| = 25 (2e-2 in float32 at |l| = 16): compare for |l| < 20
    lg64 = logits[logits.abs() < 20]
    ref = ContinuousBernoulli(logits=lg64).mean
    torch.testing.assert_close(continuous_bernoulli_mean(lg64), ref, atol=1e-9, rtol=0)
    far = torch.tensor([-700.0, -200.0, -25.7, 25.7, 40.0, 700.0], dtype=torch.float64)
    closed = [1 / (1 - math.exp(-v)) - 1 / v for v in far.tolist()]  # no cancellation here
    torch.testing.assert_close(continuous_bernoulli_mean(far).tolist(), closed, atol=1e-15, rtol=0)
    # float32 logits: as exact as float32 can hold (torch's float32 mean, computed from
    # lambda, is off by up to 6e-5 at |l| = 11 and 2e-2 at |l| > 16)
    ours32 = continuous_bernoulli_mean(logits.float())
    assert ours32.dtype == torch.float32
    exact = continuous_bernoulli_mean(logits.float().double())
    torch.testing.assert_close(ours32.double(), exact, atol=1e-7, rtol=0)
    lg32 = logits[(logits.abs() > 0.5) & (logits.abs() < 12)].float()
    ref32 = ContinuousBernoulli(logits=lg32).mean
    torch.testing.assert_close(continuous_bernoulli_mean(lg32), ref32, atol=1e-4, rtol=0)


def test_continuous_bernoulli_mean_is_smooth_and_exact_around_one_half():
    assert continuous_bernoulli_mean(torch.zeros(3)).tolist() == [0.5, 0.5, 0.5]
    tiny = torch.tensor([1e-30, -1e-12, 1e-6, -1e-3], dtype=torch.float64)
    torch.testing.assert_close(
        continuous_bernoulli_mean(tiny), 0.5 + tiny / 12 - tiny**3 / 720, atol=1e-17, rtol=0
    )
    # both sides of the Taylor band agree (no step at its edge)
    for sign in (1.0, -1.0):
        edge = sign * torch.tensor(
            [CB_TAYLOR_BAND * (1 - 1e-9), CB_TAYLOR_BAND], dtype=torch.float64
        )
        a, b = continuous_bernoulli_mean(edge).tolist()
        step = sign * CB_TAYLOR_BAND * 1e-9 / 12  # what the function itself moves there
        assert b - a == pytest.approx(step, abs=1e-14)
    lg = torch.tensor([0.0, 1e-7, -0.01, CB_TAYLOR_BAND, 3.0, -90.0], requires_grad=True)
    continuous_bernoulli_mean(lg).sum().backward()
    assert torch.isfinite(lg.grad).all()
    assert lg.grad[0].item() == pytest.approx(1 / 12)  # dE[x]/dl at 0


@settings(max_examples=300, deadline=None)
@given(st.floats(-200.0, 200.0), st.floats(-200.0, 200.0))
def test_continuous_bernoulli_mean_properties(a, b):
    lg = torch.tensor([a, b, -a], dtype=torch.float64)
    m = continuous_bernoulli_mean(lg)
    lam = torch.sigmoid(lg)
    assert ((m >= 0) & (m <= 1)).all()
    # pulled from lambda towards 1/2, never past it
    assert (m - 0.5).abs().le((lam - 0.5).abs() + 1e-15).all()
    assert ((m - 0.5) * (lam - 0.5) >= 0).all()
    assert m[0].item() + m[2].item() == pytest.approx(1.0, abs=1e-12)  # E(-l) = 1 - E(l)
    if a < b:
        assert m[0].item() <= m[1].item() + 1e-15  # increasing in l


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=True, width=32))
def test_continuous_bernoulli_mean_is_in_0_1_for_any_float32_logit(value):
    m = decoder_mean(torch.tensor([value]), "continuous-bernoulli")
    assert m.dtype == torch.float32 and 0.0 <= m.item() <= 1.0


def test_decoder_mean_is_the_sigmoid_for_the_other_likelihoods():
    torch.manual_seed(0)
    logits = torch.randn(4, 16) * 5
    for name in (None, "bernoulli", "gaussian", "mse"):
        assert torch.equal(decoder_mean(logits, name), torch.sigmoid(logits))  # bit for bit
    cb = decoder_mean(logits, "continuous-bernoulli")
    assert cb.shape == logits.shape and not torch.allclose(cb, torch.sigmoid(logits))
    with pytest.raises(ValueError, match="unknown likelihood"):
        decoder_mean(logits, "poisson")


@pytest.mark.parametrize("likelihood", ["continuous-bernoulli", "bernoulli"])
def test_runs_show_the_decoders_mean(tiny, tmp_path, likelihood):
    from vaelab.server.explorer import Explorer
    from vaelab.viz import analysis

    root = train(small(likelihood=likelihood), out=tmp_path / "r", data=tiny, **QUIET)
    run = load_run(root)
    model, x = run.model, tiny.x_test[:16]
    assert model.likelihood == likelihood
    assert run.model_at(run.epoch).likelihood == likelihood
    with torch.no_grad():
        mu, _ = model.encode(x)
        logits = model.decode_logits(mu)
    expected = decoder_mean(logits, likelihood)
    shown = {
        "decode": model.decode(mu),
        "reconstruct": torch.as_tensor(analysis.reconstruct(model, x)),
        "cached": torch.as_tensor(run.latents(run.epoch)["recon"]),  # the figures' rows
        "explorer": torch.as_tensor(
            Explorer(run, tiny.x_test, tiny.y_test).reconstruct(np.arange(16))
        ),
    }
    for where, images in shown.items():
        torch.testing.assert_close(images, expected, atol=1e-6, rtol=0, msg=where)
    if likelihood == "bernoulli":  # unchanged: the sigmoid, bit for bit
        assert torch.equal(shown["decode"], torch.sigmoid(logits))
    else:  # the mean, not lambda
        gap = (shown["decode"] - torch.sigmoid(logits)).abs().max().item()
        assert gap > 1e-3, gap
        samples = analysis.prior_samples(model, n=8)
        z = torch.randn(8, model.latent_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ref = continuous_bernoulli_mean(model.decode_logits(z))
        torch.testing.assert_close(torch.as_tensor(samples), ref)


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
    assert torch.equal(likelihood_nll(logits, x, "bernoulli"), bernoulli_nll(logits, x))
    with pytest.raises(ValueError, match="unknown likelihood"):
        likelihood_nll(logits, x, "poisson")

    def nll(**settings):
        config = TrainConfig(**settings)  # the run's p(x|z), as the trainer builds the model
        model = build_model(
            "vae",
            input_shape=(16,),
            latent_dim=2,
            hidden=4,
            likelihood=config.likelihood,
            gaussian_sigma=config.gaussian_sigma,
        )
        return model.neg_log_likelihood(logits, x)

    assert torch.equal(nll(), bernoulli_nll(logits, x))  # --recon bce, unchanged
    assert torch.equal(nll(likelihood="bernoulli"), bernoulli_nll(logits, x))
    assert torch.equal(nll(recon="mse"), half_squared_error(torch.sigmoid(logits), x))
    gauss = nll(likelihood="gaussian", gaussian_sigma=0.5)
    torch.testing.assert_close(gauss, gaussian_nll(torch.sigmoid(logits), x, math.log(0.5)))
    assert torch.equal(nll(likelihood="continuous-bernoulli"), continuous_bernoulli_nll(logits, x))


def test_likelihood_settings_are_validated():
    assert TrainConfig(likelihood="gaussian").gaussian_sigma == 1.0
    assert TrainConfig().gaussian_sigma is None and TrainConfig().likelihood == "bernoulli"
    assert TrainConfig(recon="mse").likelihood == "mse"  # --recon mapped once, to one name
    for kw, match in [
        ({"likelihood": "poisson"}, "unknown likelihood 'poisson'"),
        ({"likelihood": "gaussian", "recon": "mse"}, "either it or likelihood"),
        ({"gaussian_sigma": 2.0}, "gaussian_sigma applies to likelihood gaussian only"),
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
    from vaelab.training.epoch_end import evaluate_loss

    test, _ = evaluate_loss(run.model, tiny.x_test, run.config)  # reloaded = as trained
    assert test["test_loss"] == rows[-1]["test_loss"]


def test_gaussian_accepts_real_valued_data_and_continuous_bernoulli_does_not(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 6)).astype(np.float32)
    ds = arrays_to_dataset({"x_train": x, "x_test": x[:16]}, "gauss", "0", "synthetic")
    with pytest.raises(VaelabError, match=r"\[0, 1\]"):
        train(small(likelihood="continuous-bernoulli"), out=tmp_path / "a", data=ds, **QUIET)
    train(small(likelihood="gaussian"), out=tmp_path / "b", data=ds, **QUIET)
