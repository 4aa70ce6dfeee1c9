import pytest
import torch

from vaelab.models import MODELS, build_model
from vaelab.models.base import LOGVAR_MAX


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 8, 8), (50,)])
def test_vae_shapes_from_flat_and_image_inputs(shape):
    model = build_model("vae", input_shape=shape, latent_dim=4, hidden=16)
    D = torch.Size(shape).numel()
    for x in (torch.rand(5, *shape), torch.rand(5, D)):
        mu, logvar = model.encode(x)
        assert mu.shape == logvar.shape == (5, 4)
        x_hat, mu2, _ = model(x)
        assert x_hat.shape == (5, D)
        assert 0 <= x_hat.min() and x_hat.max() <= 1


def test_lecture_architecture():
    model = build_model("vae", input_shape=(1, 28, 28), latent_dim=20, hidden=400)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(400, 784), (400,), (40, 400), (40,), (400, 20), (400,), (784, 400), (784,)]


def test_eval_mode_returns_mean_and_train_mode_samples():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(10,), latent_dim=3, hidden=8)
    x = torch.rand(2, 10)
    mu, logvar = model.encode(x)
    model.eval()
    assert torch.equal(model.reparameterize(mu, logvar), mu)
    model.train()
    draws = torch.stack([model.reparameterize(mu, logvar) for _ in range(4000)])
    torch.testing.assert_close(draws.mean(0), mu, atol=0.1, rtol=0)
    torch.testing.assert_close(draws.std(0), (0.5 * logvar).exp(), atol=0.05, rtol=0.05)


def test_logvar_is_bounded_so_exp_stays_finite():
    model = build_model("vae", input_shape=(4,), latent_dim=2, hidden=4)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1e4)
    _, logvar = model.encode(torch.ones(1, 4))
    assert logvar.max() <= LOGVAR_MAX and torch.isfinite(logvar.exp()).all()
    assert torch.isfinite(logvar.exp().bfloat16()).all()


def test_autoencoder_has_no_variance():
    model = build_model("ae", input_shape=(1, 8, 8), latent_dim=2, hidden=8)
    z, logvar = model.encode(torch.rand(3, 1, 8, 8))
    assert logvar is None and z.shape == (3, 2)
    x_hat, mu, lv = model(torch.rand(3, 64))
    assert x_hat.shape == (3, 64) and lv is None


def test_registry_lists_summaries():
    assert {"vae", "ae"} <= set(MODELS)
    assert all(entry.summary for entry in MODELS.values())
