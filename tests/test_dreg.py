"""The doubly reparameterised IWAE gradient (DReG, Tucker et al. 2018), ``--estimator dreg``:
the same loss as the standard estimator, the same decoder gradient sample by sample, the
same encoder gradient in expectation (and a biased variant fails that check), with less
variance; settings and models that cannot use it are refused."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import assert_one_line_error, call_cli
from vaelab.config import TrainConfig
from vaelab.errors import SettingError
from vaelab.losses import LossTerms, iwae_bound
from vaelab.models import MODELS, LogWeights, ModelEntry, build_model
from vaelab.models.vae import VAE, MLPConfig
from vaelab.objectives import iwae_dreg_terms, iwae_terms, log_weights, objective_terms

K = 5


def tiny_model(prior: str = "standard", **extra) -> VAE:
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 2, 3), latent_dim=2, hidden=8, prior=prior, **extra)
    return model.train()


def data() -> torch.Tensor:
    return torch.rand(4, 6, generator=torch.Generator().manual_seed(1)).bernoulli()


def gradients(model, objective, x, seed: int, repeats: int, weight: float = 1.0):
    """The estimator's gradient of the mean loss over ``repeats`` copies of ``x`` (each
    copy draws its own K samples): the mean of ``repeats`` independent estimates."""
    model.zero_grad()
    torch.manual_seed(seed)
    objective(model, x.repeat(repeats, 1), K, weight).loss.sum().div(repeats).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}


def path_only(model, x, k, weight=1.0):
    """A wrong estimator to show the test can fail: log q at stopped parameters but no
    w~ reweighting of the path term (the IWAE "sticking the landing" gradient, biased)."""
    posterior = model.posterior(x)
    parts = log_weights(model, x, posterior, k, detach_posterior=True)
    log_w = parts.log_px_given_z + weight * (parts.log_pz - parts.log_qz)
    return LossTerms(-iwae_bound(log_w), log_w, log_w)


def paired_t(model, estimator, weight=1.0, rounds=10, repeats=128):
    """Per encoder weight: |mean difference| / its standard error between the standard
    estimator and ``estimator`` over ``rounds`` paired rounds (the same samples in both),
    and the two estimators' summed variances."""
    x = data()
    diffs, std_all, other_all = [], [], []
    for r in range(rounds):
        a = gradients(model, iwae_terms, x, 100 + r, repeats, weight)
        b = gradients(model, estimator, x, 100 + r, repeats, weight)
        names = [n for n in a if n.startswith("encoder")]
        diffs.append(torch.cat([(a[n] - b[n]).flatten() for n in names]))
        std_all.append(torch.cat([a[n].flatten() for n in names]))
        other_all.append(torch.cat([b[n].flatten() for n in names]))
    d = torch.stack(diffs)  # (rounds, P)
    t = d.mean(0).abs() / (d.std(0) / rounds**0.5 + 1e-12)
    return t, torch.stack(std_all).var(0).sum(), torch.stack(other_all).var(0).sum()


def test_dreg_loss_value_recon_and_kl_equal_the_standard_ones():
    model, x = tiny_model(), data()
    torch.manual_seed(3)
    standard = iwae_terms(model, x, K, 0.7)
    torch.manual_seed(3)
    dreg = iwae_dreg_terms(model, x, K, 0.7)
    for a, b in zip(standard, dreg):
        assert torch.equal(a, b)
    # and it is -L_K: the log-mean-exp of the weights, computed by hand
    torch.manual_seed(3)
    posterior = model.posterior(x)
    parts = model.log_weights(x, posterior, K)
    log_w = parts.log_px_given_z + 0.7 * (parts.log_pz - parts.log_qz)
    by_hand = -(log_w.exp().mean(0).log())
    assert torch.allclose(dreg.loss, by_hand, rtol=1e-5)


@pytest.mark.parametrize("prior", ["standard", "vamp"])
def test_decoder_and_prior_gradients_are_the_standard_ones_sample_by_sample(prior):
    extra = {"pseudo_inputs": 3} if prior == "vamp" else {}
    model, x = tiny_model(prior, **extra), data()
    a = gradients(model, iwae_terms, x, seed=5, repeats=3)
    b = gradients(model, iwae_dreg_terms, x, seed=5, repeats=3)
    for name in a:
        if name.startswith(("decoder", "prior")):
            assert torch.allclose(a[name], b[name], rtol=1e-5, atol=1e-6), name
    encoder_change = max((a[n] - b[n]).abs().max() for n in a if n.startswith("encoder"))
    assert encoder_change > 1e-3  # the encoder's estimate is a different one


@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_dreg_encoder_gradient_agrees_with_the_standard_one_in_expectation(weight):
    model = tiny_model()
    t, var_standard, var_dreg = paired_t(model, iwae_dreg_terms, weight)
    assert t.max() < 5.0, float(t.max())
    assert var_dreg < 0.2 * var_standard  # the point of DReG: much less noise
    # the check has power: the path-only gradient (no w~^2) is biased and fails it
    t_wrong, _, _ = paired_t(model, path_only, weight)
    assert t_wrong.max() > 10.0, float(t_wrong.max())


def test_dreg_is_unbiased_with_a_vampprior_too():
    """The VampPrior reads the encoder: its parameters enter log w directly (weight w~)
    as well as through z (weight w~^2); the sum still agrees with the standard one."""
    model = tiny_model("vamp", pseudo_inputs=3)
    t, _, _ = paired_t(model, iwae_dreg_terms)
    assert t.max() < 5.0, float(t.max())


def test_the_trainer_picks_dreg_from_the_config():
    model, x = tiny_model(), data()
    config = TrainConfig(objective="iwae", iw_k=K, estimator="dreg")
    a = gradients(model, lambda m, xb, k, w: objective_terms(m, xb, config, w), x, 7, 2)
    b = gradients(model, iwae_dreg_terms, x, 7, 2)
    assert all(torch.equal(a[n], b[n]) for n in a)


class NoDregVAE(VAE):
    """A model whose log_weights has no detach_posterior (as a 2-layer model might)."""

    def log_weights(self, x, posterior, samples, generator=None, labels=None):
        return super().log_weights(x, posterior, samples, generator, labels)


class NoSamplesVAE(VAE):
    """A model that takes the keyword but does not hand back its samples."""

    def log_weights(self, x, posterior, samples, generator=None, labels=None, **kw):
        return LogWeights(*super().log_weights(x, posterior, samples, generator, labels, **kw)[:3])


def test_a_model_that_cannot_stop_its_posterior_is_a_setting_error(monkeypatch):
    monkeypatch.setitem(MODELS, "no-dreg", ModelEntry(MLPConfig, NoDregVAE, "test"))
    TrainConfig(model="no-dreg", objective="iwae")  # the standard estimator is fine
    with pytest.raises(SettingError, match="estimator dreg needs log q"):
        TrainConfig(model="no-dreg", objective="iwae", estimator="dreg")
    model = NoSamplesVAE(MLPConfig(input_shape=(1, 2, 3), latent_dim=2, hidden=4))
    with pytest.raises(SettingError, match="importance samples"):
        iwae_dreg_terms(model, data(), K)


@pytest.mark.parametrize(
    "flags, match",
    [
        (["--estimator", "dreg"], "--estimator dreg is a gradient of the IWAE bound"),
        (["--estimator", "dreg", "--objective", "elbo"], "--objective iwae"),
        (["--estimator", "fancy", "--objective", "iwae"], "invalid choice"),
        (["--model", "ae", "--objective", "iwae", "--estimator", "dreg"], "plain autoencoder"),
    ],
)
def test_bad_estimator_settings_exit_2(capsys, tiny_npz, tmp_path, flags, match):
    code, _, err = call_cli(
        capsys, "train", "--dataset", tiny_npz, "--out", tmp_path / "r", "--quiet", *flags
    )
    assert_one_line_error(code, err, 2, match)
    assert not (tmp_path / "r").exists()


def test_a_dreg_run_trains_and_records_its_estimator(capsys, tiny_npz, tmp_path):
    out = tmp_path / "r"
    flags = ["--objective", "iwae", "--iw-k", "3", "--estimator", "dreg", "--epochs", "2"]
    code, _, err = call_cli(
        capsys, "train", "--dataset", tiny_npz, "--latent-dim", "2", "--hidden", "16",
        "--out", out, "--quiet", *flags,
    )  # fmt: skip
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())["config"]
    assert (saved["objective"], saved["estimator"]) == ("iwae", "dreg")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
