"""Property tests (hypothesis) of the guarantees in docs/reliability.md."""

from __future__ import annotations

import math

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaelab.config import TrainConfig
from vaelab.losses import gaussian_kl, likelihood_nll, reparameterize
from vaelab.models.base import LOGVAR_MAX, LOGVAR_MIN
from vaelab.run import load_run
from vaelab.training.loop import train

finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=16), st.data())
def test_kl_nonnegative_and_zero_only_at_the_prior(mu, data):
    logvar = data.draw(
        st.lists(st.floats(LOGVAR_MIN, LOGVAR_MAX, width=32), min_size=len(mu), max_size=len(mu))
    )
    kl = gaussian_kl(torch.tensor(mu), torch.tensor(logvar)).item()
    assert kl >= 0
    assert gaussian_kl(torch.zeros(len(mu)), torch.zeros(len(mu))).item() == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(finite32, min_size=4, max_size=4),
    st.lists(finite32, min_size=2, max_size=2),
    st.lists(finite32, min_size=2, max_size=2),
    st.sampled_from(["bernoulli", "mse"]),
)
def test_loss_is_finite_for_extreme_logits_and_logvars(logits, mu, logvar, likelihood):
    """Logits up to +-1e30 and any logvar (the model clamps it) give a finite loss; means
    are finite while |mu| < 1e15 (mu^2 must fit in float32)."""
    logits_t = torch.tensor([logits]).clamp(-1e30, 1e30)
    mu_t = torch.tensor([mu]).clamp(-1e15, 1e15)
    logvar_t = torch.tensor([logvar]).clamp(LOGVAR_MIN, LOGVAR_MAX)  # as VAE.encode does
    rec = likelihood_nll(logits_t, torch.tensor([[0.0, 0.3, 0.7, 1.0]]), likelihood)
    kl = gaussian_kl(mu_t, logvar_t)
    assert torch.isfinite(rec).all() and torch.isfinite(kl).all()


@settings(max_examples=25, deadline=None)
@given(st.floats(-50, 50), st.floats(-6, 4))
def test_reparameterized_samples_have_the_requested_moments(mean, logvar):
    n = 40_000
    torch.manual_seed(0)
    z = reparameterize(
        torch.full((n,), mean, dtype=torch.float64), torch.full((n,), logvar, dtype=torch.float64)
    )
    std = math.exp(0.5 * logvar)
    assert abs(z.mean().item() - mean) < 5 * std / math.sqrt(n)
    assert abs(z.var().item() / std**2 - 1) < 5 * math.sqrt(2 / n)


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, 3))
def test_resume_from_any_epoch_gives_the_uninterrupted_result(tmp_path_factory, tiny, stop_at):
    quiet = {"progress": False, "log": lambda _m: None}
    base = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 64, "embed_epochs": [0]}
    tmp = tmp_path_factory.mktemp("resume")
    full = train(TrainConfig(**base, epochs=4), out=tmp / "full", data=tiny, **quiet)
    part = train(TrainConfig(**base, epochs=stop_at), out=tmp / "part", data=tiny, **quiet)
    train(resume=part, epochs=4, data=tiny, **quiet)
    a, b = load_run(full).model.state_dict(), load_run(part).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
