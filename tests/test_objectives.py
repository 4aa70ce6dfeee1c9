import json

import pytest
import torch

from conftest import run_cli
from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.losses import gaussian_kl, log_normal_diag, log_standard_normal
from vaelab.models import build_model
from vaelab.objectives import kl_weight, negative_elbo, objective_terms
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.loop import train

QUIET = {"progress": False, "log": lambda _m: None}


def training_loss(model, x, config, epoch, fraction=0.0):
    """The trainer's per-example terms at step ``fraction`` of ``epoch``."""
    return objective_terms(model, x, config, kl_weight(config, epoch, fraction))


def small(**kw) -> TrainConfig:
    base = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 32, "epochs": 2}
    return TrainConfig(**{**base, **kw})


def test_kl_warmup_rises_linearly_step_by_step_then_stays_at_beta():
    c = TrainConfig(beta=2.0, kl_warmup=2)
    assert kl_weight(c, 1, 0.0) == 0.0
    assert kl_weight(c, 1, 0.5) == pytest.approx(0.5)
    assert kl_weight(c, 2, 0.0) == pytest.approx(1.0)
    assert kl_weight(c, 2, 0.75) == pytest.approx(1.75)
    assert kl_weight(c, 3, 0.0) == kl_weight(c, 9, 0.3) == 2.0
    assert kl_weight(TrainConfig(beta=0.5), 1, 0.0) == 0.5  # no warm-up: beta throughout
    with pytest.raises(VaelabError, match="kl_warmup must be"):
        TrainConfig(kl_warmup=-1)


def test_iwae_with_one_sample_is_the_elbo_with_the_same_noise():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 6, 6), latent_dim=3, hidden=8).train()
    x = torch.rand(7, 1, 6, 6).bernoulli()
    elbo_cfg, iwae_cfg = TrainConfig(), TrainConfig(objective="iwae", iw_k=1)
    torch.manual_seed(1)
    elbo = training_loss(model, x, elbo_cfg, 1)
    torch.manual_seed(1)
    iwae = training_loss(model, x, iwae_cfg, 1)
    assert torch.equal(iwae.recon, elbo.recon) and torch.equal(iwae.kl, elbo.kl)
    # the same z: -L_1 = -log p(x|z) + log q(z|x) - log p(z), the ELBO with a sampled KL
    torch.manual_seed(1)
    mu, logvar = model.encode(x)
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    sampled_kl = log_normal_diag(z, mu, logvar) - log_standard_normal(z)
    torch.testing.assert_close(iwae.loss, elbo.recon + sampled_kl)
    # over the noise, the sampled KL averages to the closed form: E[-L_1] = -ELBO
    with torch.no_grad():
        terms = [training_loss(model, x, iwae_cfg, 1) for _ in range(1000)]
    mc_kl = torch.stack([t.loss - t.recon for t in terms]).mean(0)
    torch.testing.assert_close(mc_kl, elbo.kl.detach(), atol=0.1, rtol=0)


def test_iwae_bound_tightens_with_k():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(20,), latent_dim=3, hidden=8)
    x = torch.rand(16, 20).bernoulli()
    with torch.no_grad():
        means = [
            torch.stack(
                [
                    training_loss(model, x, TrainConfig(objective="iwae", iw_k=k), 1).loss
                    for _ in range(200)
                ]
            ).mean()
            for k in (1, 5, 50)
        ]
    assert means[0] > means[1] > means[2]  # -L_1 >= -L_5 >= -L_50 >= -log p(x)
    loss = training_loss(model, x, TrainConfig(objective="iwae", iw_k=5), 1)
    assert loss.loss.shape == loss.recon.shape == loss.kl.shape == (16,)


def test_iwae_and_beta_weight_only_the_prior_and_posterior_terms():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(20,), latent_dim=3, hidden=8)
    x = torch.rand(4, 20).bernoulli()
    cfg = TrainConfig(objective="iwae", iw_k=3, kl_warmup=1)
    torch.manual_seed(2)
    at_zero = training_loss(model, x, cfg, 1, 0.0)  # weight 0: only log p(x|z_k)
    torch.manual_seed(2)
    mu, logvar = model.encode(x)
    z = mu + torch.randn(3, *mu.shape) * (0.5 * logvar).exp()
    rec = model.neg_log_likelihood(model.decode_logits(z.flatten(0, 1)), x.repeat(3, 1))
    expected = -(torch.logsumexp(-rec.view(3, -1), 0) - torch.log(torch.tensor(3.0)))
    torch.testing.assert_close(at_zero.loss, expected)
    torch.testing.assert_close(at_zero.kl, gaussian_kl(mu, logvar))


def test_negative_elbo_parts_and_beta():
    torch.manual_seed(0)
    x = torch.rand(4, 10)
    mu, logvar = torch.randn(4, 2), torch.randn(4, 2)
    logits = torch.randn(4, 10)
    vae = build_model("vae", input_shape=(10,), latent_dim=2, hidden=4)
    terms = negative_elbo(vae, x, mu, (mu, logvar), logits, weight=2.5)
    torch.testing.assert_close(terms.loss, terms.recon + 2.5 * terms.kl)
    torch.testing.assert_close(terms.kl, gaussian_kl(mu, logvar))
    ae = build_model("ae", input_shape=(10,), latent_dim=2, hidden=4)
    no_var = negative_elbo(ae, x, mu, (mu, None), logits)
    assert no_var.kl.abs().max() == 0 and torch.equal(no_var.loss, no_var.recon)


def test_objective_settings_are_validated():
    assert TrainConfig(objective="iwae").iw_k == 5 and TrainConfig().iw_k is None
    for kw, match in [
        ({"objective": "vi"}, "unknown objective 'vi'"),
        ({"iw_k": 3}, "iw_k applies to objective iwae only"),
        ({"objective": "iwae", "iw_k": 0}, "positive"),
        ({"objective": "iwae", "model": "ae"}, "plain autoencoder"),
        ({"objective": "iwae", "model": "conv-ae"}, "plain autoencoder"),
    ]:
        with pytest.raises(VaelabError, match=match):
            TrainConfig(**kw)


@pytest.mark.parametrize("model", ["vae", "conv-vae"])
def test_iwae_training_lowers_the_loss_and_reloads(tiny, tmp_path, model):
    root = train(
        small(model=model, objective="iwae", iw_k=4, epochs=3),
        out=tmp_path / "r",
        data=tiny,
        **QUIET,
    )
    rows = read_metrics(RunPaths(root).metrics)
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]
    assert rows[3]["train_loss"] < rows[1]["train_loss"]
    assert all(r["train_loss"] <= r["train_recon"] + r["train_kl"] + 1e-3 for r in rows[1:])
    run = load_run(root)
    assert (run.config.objective, run.config.iw_k) == ("iwae", 4)


def test_warmup_and_iwae_resume_bit_identically(tiny, tmp_path):
    cfg = dict(model="conv-vae", objective="iwae", iw_k=2, kl_warmup=2.5)
    full = train(small(**cfg, epochs=3), out=tmp_path / "full", data=tiny, **QUIET)
    part = train(small(**cfg, epochs=1), out=tmp_path / "part", data=tiny, **QUIET)
    train(resume=part, epochs=3, data=tiny, **QUIET)
    a, b = load_run(full).model.state_dict(), load_run(part).model.state_dict()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    strip = lambda root: [r["test_loss"] for r in read_metrics(RunPaths(root).metrics)]
    assert strip(full) == strip(part)


def test_cli_flags_reach_config_json(tiny_npz, tmp_path):
    out = tmp_path / "r"
    flags = ["--objective", "iwae", "--iw-k", "3", "--kl-warmup", "0.5", "--beta", "0.5"]
    flags += ["--likelihood", "gaussian", "--gaussian-sigma", "learned", "--model", "conv-vae"]
    res = run_cli(
        "train", "--dataset", str(tiny_npz), "--epochs", "1", "--quiet", "--out", str(out), *flags
    )
    assert res.returncode == 0, res.stderr
    saved = json.loads((out / "config.json").read_text())
    cfg, mcfg = saved["config"], saved["model_config"]
    assert (cfg["objective"], cfg["iw_k"], cfg["kl_warmup"]) == ("iwae", 3, 0.5)
    assert (cfg["likelihood"], cfg["gaussian_sigma"]) == ("gaussian", "learned")
    assert mcfg["learn_sigma"] is True and mcfg["channels"] == [32, 64]
    bad = run_cli("train", "--dataset", str(tiny_npz), "--gaussian-sigma", "wide")
    assert bad.returncode == 2 and "learned" in bad.stderr
