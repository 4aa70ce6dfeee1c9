"""The model interface (vaelab.models.base): a model with a prior of its own is one class
and one registry entry, and the bounds, the evaluation, the trainer and the figures all use
that prior without a change anywhere else."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from vaelab.config import TrainConfig
from vaelab.evaluation.bounds import iwae_estimate
from vaelab.evaluation.evaluate import evaluate_run
from vaelab.losses import gaussian_kl_per_dim, log_standard_normal
from vaelab.models import MODELS, VAE, LatentModel, MLPConfig, ModelEntry, build_model
from vaelab.objectives import elbo_terms
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.loop import train
from vaelab.viz import analysis, dimension_figures, figures

PRIOR_MEAN = 1.5


class ShiftedPriorVAE(VAE):
    """The lecture's VAE with the prior p(z) = N(m, I), m = 1.5 in every dimension: the
    prior's four parts overridden, nothing else."""

    def sample_prior(self, n, generator=None, temperature=1.0):
        return PRIOR_MEAN + super().sample_prior(n, generator, temperature)

    def prior_mean(self):
        return torch.full((self.latent_dim,), PRIOR_MEAN)

    def log_prior(self, z):
        return log_standard_normal(z - PRIOR_MEAN)

    def kl_per_dim(self, mu, logvar):
        return gaussian_kl_per_dim(mu - PRIOR_MEAN, logvar)


class ShiftedToy(LatentModel):
    """d = 1, two binary pixels, a fixed linear decoder and encoder, prior N(m, 1)."""

    latent_dim = 1

    def __init__(self) -> None:
        super().__init__()
        self.dec = nn.Linear(1, 2)
        self.enc = nn.Linear(2, 2)
        with torch.no_grad():
            self.dec.weight.copy_(torch.tensor([[2.0], [-1.5]]))
            self.dec.bias.copy_(torch.tensor([-2.5, 2.0]))
            self.enc.weight.copy_(torch.tensor([[0.8, -0.6], [0.0, 0.0]]))
            self.enc.bias.copy_(torch.tensor([1.2, 0.0]))

    def encode(self, x):
        out = self.enc(x.flatten(1))
        return out[:, :1], out[:, 1:]

    def decode_logits(self, z):
        return self.dec(z)

    def log_prior(self, z):
        return log_standard_normal(z - PRIOR_MEAN)

    def kl_per_dim(self, mu, logvar):
        return gaussian_kl_per_dim(mu - PRIOR_MEAN, logvar)


PATTERNS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


@torch.no_grad()
def exact_log_px(model: nn.Module, x: torch.Tensor, prior_mean: float) -> torch.Tensor:
    """log p(x) = log ∫ N(z; m, 1) p(x|z) dz on a fine grid, in float64."""
    z = torch.linspace(-14, 16, 200_001, dtype=torch.float64)[:, None]
    dz = float(z[1] - z[0])
    logits = z @ model.dec.weight.double().T + model.dec.bias.double()
    log_prior = -0.5 * (math.log(2 * math.pi) + (z[:, 0] - prior_mean) ** 2)
    out = []
    for xi in x.double():
        log_lik = -nn.functional.binary_cross_entropy_with_logits(
            logits, xi.expand_as(logits), reduction="none"
        ).sum(1)
        out.append(torch.logsumexp(log_lik + log_prior, 0) + math.log(dz))
    return torch.stack(out)


def test_the_iwae_estimate_uses_the_models_own_prior():
    model = ShiftedToy()
    g = torch.Generator().manual_seed(0)
    est = iwae_estimate(model, PATTERNS, k=4000, batch_size=4, generator=g)["nll_iwae"]
    truth = -exact_log_px(model, PATTERNS, PRIOR_MEAN)
    torch.testing.assert_close(est, truth, atol=0.02, rtol=0)
    # the standard-normal answer is far from it: the prior really is the model's
    assert (truth + exact_log_px(model, PATTERNS, 0.0)).abs().max() > 0.5


def test_the_closed_form_kl_matches_the_sampled_log_q_minus_log_p():
    torch.manual_seed(0)
    model = ShiftedPriorVAE(MLPConfig(input_shape=(6,), latent_dim=3, hidden=8))
    x = torch.rand(5, 6)
    mu, logvar = model.encode(x)
    parts = model.log_weights(x, (mu, logvar), 20_000)
    sampled = (parts.log_qz - parts.log_pz).mean(0)
    torch.testing.assert_close(sampled, model.kl(mu, logvar), atol=0.06, rtol=0)


def test_prior_samples_decode_the_models_prior():
    torch.manual_seed(0)
    model = ShiftedPriorVAE(MLPConfig(input_shape=(6,), latent_dim=3, hidden=8)).eval()
    z = model.sample_prior(4000, torch.Generator().manual_seed(0))
    assert abs(z.mean().item() - PRIOR_MEAN) < 0.05 and abs(z.std().item() - 1) < 0.05
    images = analysis.prior_samples(model, n=5, seed=3)
    expected = model.decode(model.sample_prior(5, torch.Generator().manual_seed(3)))
    np.testing.assert_array_equal(images, expected.detach().numpy())


def test_a_new_model_is_a_class_and_a_registry_line(tiny, tmp_path, monkeypatch):
    """Train, reload, evaluate and draw a model the library has never heard of."""
    entry = ModelEntry(MLPConfig, ShiftedPriorVAE, "the MLP VAE with a prior N(1.5, I)")
    monkeypatch.setitem(MODELS, "shifted-vae", entry)
    quiet = {"progress": False, "log": lambda _m: None}
    settings = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "epochs": 2}
    root = train(
        TrainConfig(model="shifted-vae", **settings), out=tmp_path / "s", data=tiny, **quiet
    )
    plain = train(TrainConfig(**settings), out=tmp_path / "p", data=tiny, **quiet)
    run = load_run(root)
    assert isinstance(run.model, ShiftedPriorVAE) and run.config.model == "shifted-vae"
    # epoch 0: the same initial weights, but the KL is against the other prior
    shifted_kl, plain_kl = (read_metrics(RunPaths(r).metrics)[0]["test_kl"] for r in (root, plain))
    x = tiny.x_test
    with torch.no_grad():
        torch.manual_seed(1)  # the trainer's seed: its initial weights
        untrained = build_model("vae", input_shape=tiny.input_shape, latent_dim=2, hidden=16)
        mu, logvar = untrained.encode(x)
    assert plain_kl == pytest.approx(gaussian_kl_per_dim(mu, logvar).sum(1).mean().item())
    assert shifted_kl == pytest.approx(
        gaussian_kl_per_dim(mu - PRIOR_MEAN, logvar).sum(1).mean().item()
    )
    result = evaluate_run(run, iw_samples=20, scores=False, data=tiny, write=False)
    assert math.isfinite(result["nll_iwae"]) and result["nll_iwae"] <= result["neg_elbo"] + 1.0
    with torch.no_grad():
        terms = elbo_terms(run.model, x)
    assert result["kl"] == pytest.approx(terms.kl.mean().item(), rel=1e-4)
    assert figures.make_samples(run).is_file()
    assert dimension_figures.make_traversal(run, steps=3).is_file()  # around N(1.5, I)'s mean
