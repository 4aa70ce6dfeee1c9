import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vaelab.losses import (
    bernoulli_nll,
    gaussian_kl,
    gaussian_kl_per_dim,
    half_squared_error,
    reparameterize,
)


def test_kl_closed_form_matches_monte_carlo():
    torch.manual_seed(0)
    mu = torch.randn(4, 3)
    logvar = torch.randn(4, 3) * 0.5
    z = reparameterize(mu.expand(200_000, 4, 3), logvar.expand(200_000, 4, 3))
    std = (0.5 * logvar).exp()
    log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(-1)
    log_p = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    mc = (log_q - log_p).mean(0)
    torch.testing.assert_close(gaussian_kl(mu, logvar), mc, atol=0.02, rtol=0.01)


def test_kl_per_dim_sums_to_kl_and_is_zero_at_prior():
    mu, logvar = torch.randn(5, 7), torch.randn(5, 7)
    torch.testing.assert_close(gaussian_kl_per_dim(mu, logvar).sum(-1), gaussian_kl(mu, logvar))
    assert gaussian_kl(torch.zeros(2, 4), torch.zeros(2, 4)).abs().max() == 0


def test_bernoulli_from_logits_equals_lecture_bce_of_sigmoid():
    torch.manual_seed(0)
    logits = torch.randn(8, 784) * 3
    x = torch.rand(8, 784)
    lecture = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").sum(1)
    torch.testing.assert_close(bernoulli_nll(logits, x), lecture, rtol=1e-5, atol=1e-3)


def test_bernoulli_is_finite_where_sigmoid_saturates():
    logits = torch.tensor([[200.0, -200.0]])
    x = torch.tensor([[0.0, 1.0]])
    assert torch.isfinite(bernoulli_nll(logits, x)).all()
    assert bernoulli_nll(logits, x).item() == pytest.approx(400.0)


def test_half_squared_error():
    assert half_squared_error(torch.ones(1, 4), torch.zeros(1, 4)).item() == 2.0


def test_reparameterize_moments():
    torch.manual_seed(0)
    mu = torch.full((100_000, 1), 2.0)
    logvar = torch.full((100_000, 1), math.log(0.25))
    z = reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(2.0, abs=0.01)
    assert z.var().item() == pytest.approx(0.25, rel=0.02)


def test_reparameterize_lets_gradients_through():
    mu = torch.zeros(3, requires_grad=True)
    logvar = torch.zeros(3, requires_grad=True)
    reparameterize(mu, logvar).sum().backward()
    assert mu.grad is not None and logvar.grad is not None
    assert torch.all(mu.grad == 1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(-1e3, 1e3), min_size=1, max_size=8),
    st.lists(st.floats(-30, 20), min_size=1, max_size=8),
)
def test_kl_is_nonnegative(mu, logvar):
    n = min(len(mu), len(logvar))
    kl = gaussian_kl(
        torch.tensor(mu[:n], dtype=torch.float64), torch.tensor(logvar[:n], dtype=torch.float64)
    )
    assert kl.item() >= 0


@settings(max_examples=100, deadline=None)
@given(st.floats(-1e4, 1e4), st.floats(0, 1))
def test_bernoulli_finite_for_extreme_logits(logit, x):
    value = bernoulli_nll(torch.tensor([[logit]]), torch.tensor([[x]]))
    assert torch.isfinite(value).all() and value.item() >= -1e-6
