import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from conftest import call_cli as call
from conftest import make_arrays, train_tiny_run
from vaelab.checksums import read_json
from vaelab.cli.evaluate import format_result
from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.evaluation import bounds
from vaelab.evaluation.bounds import active_units, iwae_estimate, latent_usage, mutual_information
from vaelab.evaluation.evaluate import evaluate_run
from vaelab.models import LatentModel, build_model
from vaelab.training.loop import train


class TwoPixelToy(LatentModel):
    """p(z) = N(0, 1), p(x|z) = Bernoulli(sigmoid(a z + c)) on 2 pixels, and a Gaussian
    q(z|x) that is deliberately not the posterior: log p(x) by quadrature is exact."""

    stochastic = True
    latent_dim = 1

    def __init__(self, q_scale: float = 1.0) -> None:
        super().__init__()
        self.dec = nn.Linear(1, 2)
        self.enc = nn.Linear(2, 2)
        with torch.no_grad():
            self.dec.weight.copy_(torch.tensor([[2.0], [-1.5]]))
            self.dec.bias.copy_(torch.tensor([0.3, 0.5]))
            self.enc.weight.copy_(torch.tensor([[0.8, -0.6], [0.0, 0.0]]))
            self.enc.bias.copy_(torch.tensor([0.1, 2 * math.log(q_scale)]))

    def encode(self, x):
        out = self.enc(x.flatten(1))
        return out[:, :1], out[:, 1:]

    def decode_logits(self, z):
        return self.dec(z)


PATTERNS = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


@torch.no_grad()
def exact_log_px(model: TwoPixelToy, x: torch.Tensor) -> torch.Tensor:
    """log p(x) = log ∫ N(z; 0, 1) p(x|z) dz on a fine grid, in float64."""
    z = torch.linspace(-14, 14, 200_001, dtype=torch.float64)[:, None]
    dz = float(z[1] - z[0])
    W, b = model.dec.weight.double(), model.dec.bias.double()
    logits = z @ W.T + b  # (G, 2)
    out = []
    for xi in x.double():
        log_lik = -nn.functional.binary_cross_entropy_with_logits(
            logits, xi.expand_as(logits), reduction="none"
        ).sum(1)
        log_prior = -0.5 * (math.log(2 * math.pi) + z[:, 0] ** 2)
        out.append(torch.logsumexp(log_lik + log_prior, 0) + math.log(dz))
    return torch.stack(out)


@torch.no_grad()
def exact_neg_elbo(model: TwoPixelToy, x: torch.Tensor) -> torch.Tensor:
    """-E_q[log p(x|z)] + KL(q || p) by quadrature over q's density."""
    z = torch.linspace(-14, 14, 200_001, dtype=torch.float64)
    dz = float(z[1] - z[0])
    W, b = model.dec.weight.double(), model.dec.bias.double()
    logits = z[:, None] @ W.T + b
    mu, logvar = (t.double() for t in model.encode(x))
    out = []
    for i, xi in enumerate(x.double()):
        log_lik = -nn.functional.binary_cross_entropy_with_logits(
            logits, xi.expand_as(logits), reduction="none"
        ).sum(1)
        var = logvar[i, 0].exp()
        q = torch.exp(-0.5 * (z - mu[i, 0]) ** 2 / var) / torch.sqrt(2 * math.pi * var)
        kl = 0.5 * (var - logvar[i, 0] - 1 + mu[i, 0] ** 2)
        out.append(-(q * log_lik).sum() * dz + kl)
    return torch.stack(out)


def test_iwae_converges_to_the_exact_log_likelihood():
    model = TwoPixelToy(q_scale=1.5)  # q too wide: the ELBO is ~1 nat above -log p(x)
    truth = -exact_log_px(model, PATTERNS)
    x = PATTERNS.repeat(50, 1)  # 200 images: 50 copies of each pattern
    g = torch.Generator().manual_seed(0)
    est = iwae_estimate(model, x, k=2000, batch_size=64, generator=g)["nll_iwae"]
    per_pattern = est.view(50, 4).mean(0)
    torch.testing.assert_close(per_pattern, truth, atol=5e-3, rtol=0)
    # ...while the ELBO of this (wrong) q stays visibly above it
    assert (exact_neg_elbo(model, PATTERNS) - truth).min() > 0.5


def test_k1_matches_the_elbo_in_expectation():
    model = TwoPixelToy(q_scale=0.7)
    x = PATTERNS.repeat(2000, 1)
    exact = exact_neg_elbo(model, PATTERNS).repeat(2000)
    t = iwae_estimate(model, x, k=1, batch_size=1000, generator=torch.Generator().manual_seed(1))
    se = float(t["nll_iwae"].std() / math.sqrt(len(x)))
    assert abs(float(t["nll_iwae"].mean()) - float(exact.mean())) < 4 * se
    # the reported neg_elbo uses the closed-form KL; its recon is the sampled term
    neg_elbo = t["recon"] + t["kl"]
    assert abs(float(neg_elbo.mean()) - float(exact.mean())) < 4 * se


def test_estimate_does_not_increase_with_k_on_average():
    model = TwoPixelToy(q_scale=0.5)
    x = PATTERNS.repeat(250, 1)
    ks = [1, 3, 10, 50]
    means = []
    for k in ks:
        runs = [
            iwae_estimate(model, x, k, batch_size=500, generator=torch.Generator().manual_seed(s))
            for s in range(5)
        ]
        means.append(float(torch.stack([r["nll_iwae"].mean() for r in runs]).mean()))
    assert all(b <= a + 1e-3 for a, b in zip(means, means[1:])), means
    assert means[0] - means[-1] > 0.05
    assert means[-1] >= float(-exact_log_px(model, PATTERNS).mean()) - 1e-2


def test_chunking_over_samples_and_images_is_exact_when_weights_are_constant(monkeypatch):
    """With a decoder that ignores z and q = p(z), every log-weight equals log p(x):
    any chunking must return exactly that, whatever K."""
    model = TwoPixelToy()
    with torch.no_grad():
        model.dec.weight.zero_()
        model.enc.weight.zero_()
        model.enc.bias.zero_()
    truth = -exact_log_px(model, PATTERNS).float()
    for k, batch, rows in [(1, 4, 4096), (10, 3, 3), (7, 1, 2), (64, 4, 64)]:
        monkeypatch.setitem(bounds.ROWS_PER_CHUNK, "cpu", rows)  # samples per draw
        est = iwae_estimate(model, PATTERNS, k, batch_size=batch)["nll_iwae"]
        torch.testing.assert_close(est.float(), truth, atol=1e-5, rtol=0)


# ------------------------------------------------ per-image noise: (seed, index) only
@pytest.fixture(scope="module")
def small_vae_and_images():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(30,), latent_dim=3, hidden=16)  # untrained
    return model, torch.rand(230, 30).bernoulli()  # 2.3 groups of NOISE_GROUP images


def test_an_images_samples_do_not_depend_on_batch_size_or_sharding(small_vae_and_images):
    model, x = small_vae_and_images
    whole = iwae_estimate(model, x, 50, batch_size=100, seed=3)
    for batch in (1, 7, 128):
        other = iwae_estimate(model, x, 50, batch_size=batch, seed=3)
        for name in ("nll_iwae", "recon", "kl", "mu"):
            torch.testing.assert_close(other[name], whole[name], rtol=1e-12, atol=0)
    # a contiguous shard that knows where it starts, as a rank scores it
    middle = iwae_estimate(model, x[60:170], 50, batch_size=6, seed=3, first_index=60)
    torch.testing.assert_close(middle["nll_iwae"], whole["nll_iwae"][60:170], rtol=1e-12, atol=0)
    # ...and the same images under another index or seed get other samples
    moved = iwae_estimate(model, x[60:170], 50, batch_size=6, seed=3, first_index=0)
    assert not torch.allclose(moved["nll_iwae"], whole["nll_iwae"][60:170])
    reseeded = iwae_estimate(model, x, 50, seed=4)["nll_iwae"]
    assert not torch.allclose(reseeded, whole["nll_iwae"])


def test_the_blocks_of_samples_of_one_image_are_combined_exactly(small_vae_and_images):
    """An image's group of NOISE_GROUP images (padded with blank ones) is scored with one
    generator, K = 2.5 draws of ROWS_PER_CHUNK / NOISE_GROUP samples, and the estimate is
    the logsumexp over all K of the image's log-weights."""
    from vaelab.objectives import log_weights

    model, x = small_vae_and_images
    group = bounds.NOISE_GROUP
    per_draw = bounds.ROWS_PER_CHUNK["cpu"] // group
    k = 2 * per_draw + per_draw // 2
    # x[5] alone, as the 6th image of the second group: the others are blank
    est = iwae_estimate(model, x[5:6], k, seed=11, first_index=group + 5)["nll_iwae"]
    with torch.no_grad():
        padded = torch.zeros(group, x.shape[1])
        padded[5] = x[5]
        g = torch.Generator().manual_seed(bounds.group_seed(11, 1))
        posterior = model.posterior(padded)
        draws = [log_weights(model, padded, posterior, s, g) for s in (per_draw, per_draw, k // 5)]
        log_w = torch.cat([p.log_px_given_z + p.log_pz - p.log_qz for p in draws])  # (K, G)
        expected = -(torch.logsumexp(log_w[:, 5].double(), 0) - math.log(k))
    torch.testing.assert_close(est, expected[None], rtol=1e-12, atol=0)


def test_without_a_seed_the_generator_chooses_one(small_vae_and_images):
    model, x = small_vae_and_images
    a = iwae_estimate(model, x, 5, generator=torch.Generator().manual_seed(0))["nll_iwae"]
    b = iwae_estimate(model, x, 5, generator=torch.Generator().manual_seed(0))["nll_iwae"]
    c = iwae_estimate(model, x, 5, generator=torch.Generator().manual_seed(1))["nll_iwae"]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_rejects_bad_k_and_plain_autoencoders():
    with pytest.raises(VaelabError, match="iw-samples"):
        iwae_estimate(TwoPixelToy(), PATTERNS, 0)
    ae = TwoPixelToy()
    ae.stochastic = False
    with pytest.raises(VaelabError, match="autoencoder"):
        iwae_estimate(ae, PATTERNS, 5)


def test_active_units_counts_dimensions_that_vary_over_the_data():
    mu = torch.zeros(1000, 3)
    mu[:, 0] = torch.randn(1000)  # variance 1: active
    mu[:, 1] = 0.05 * torch.randn(1000)  # variance 0.0025: inactive
    count, var = active_units(mu)
    assert count == 1 and var.shape == (3,)


# ------------------------------------------------------- mutual information I(x; z)
def test_mutual_information_is_zero_when_the_posterior_ignores_x():
    g = torch.Generator().manual_seed(0)
    mu, logvar = torch.full((300, 4), 0.7), torch.full((300, 4), -1.3)  # one q for every x
    assert abs(mutual_information(mu, logvar, samples=3, generator=g)) < 1e-9


@pytest.mark.parametrize("a, s, sigma", [(1.0, 2.0, 1.0), (2.0, 1.0, 0.8), (0.3, 1.0, 1.0)])
def test_mutual_information_of_a_linear_gaussian_encoder_matches_the_closed_form(a, s, sigma):
    """x ~ N(0, s^2 I_2), q(z|x) = N(a x, sigma^2 I): q(z) = N(0, (a^2 s^2 + sigma^2) I) and
    I(x; z) = 2 * 0.5 log(1 + a^2 s^2 / sigma^2) exactly. 3000 points estimate it to the
    1-2% by which the I of a finite sample of x scatters around it."""
    g = torch.Generator().manual_seed(1)
    x = s * torch.randn(3000, 2, generator=g, dtype=torch.float64)
    logvar = torch.full_like(x, 2 * math.log(sigma))
    estimate = mutual_information(a * x, logvar, samples=4, generator=g)
    assert estimate == pytest.approx(math.log(1 + (a * s / sigma) ** 2), rel=0.03, abs=0.01)


def test_mutual_information_matches_a_brute_force_double_loop():
    """The same draws through log N(z; mu_m, sigma_m) for every pair, one at a time."""
    from vaelab.losses import log_normal_diag

    g = torch.Generator().manual_seed(2)
    mu = torch.randn(40, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(40, 3, generator=g, dtype=torch.float64) - 1
    estimate = mutual_information(mu, logvar, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    z = mu + eps * torch.exp(0.5 * logvar)
    terms = []
    for n in range(40):
        own = log_normal_diag(z[n], mu[n], logvar[n])
        log_qz = torch.logsumexp(
            torch.stack([log_normal_diag(z[n], mu[m], logvar[m]) for m in range(40)]), 0
        ) - math.log(40)
        terms.append(own - log_qz)
    assert estimate == pytest.approx(float(torch.stack(terms).mean()), abs=1e-9)


def test_mutual_information_reaches_log_n_when_posteriors_are_apart():
    mu = torch.arange(50.0)[:, None] * 40  # sigma 1, 40 apart: no overlap
    value = mutual_information(mu, torch.zeros(50, 1), generator=torch.Generator().manual_seed(0))
    assert value == pytest.approx(math.log(50), abs=1e-6)
    usage = latent_usage(mu, torch.zeros(50, 1), points=20)
    assert usage["active_units"] == 1 and usage["mutual_information_max"] == math.log(20)
    assert latent_usage(mu, None)["mutual_information"] is None  # a plain autoencoder


# ------------------------------------------------------------------ whole runs on tiny data
@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    """A 2-epoch VAE and AE on the synthetic 8x8 dataset, sharing one .npz."""
    root = tmp_path_factory.mktemp("runs")
    npz = root / "tiny.npz"
    np.savez(npz, **make_arrays())
    runs = {}
    for model in ("vae", "ae"):
        cfg = TrainConfig(dataset=str(npz), model=model, latent_dim=4, epochs=2, device="cpu")
        runs[model] = train(cfg, out=root / model, progress=False, log=lambda _m: None)
    return runs


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_evaluate_run_writes_eval_json(tiny_runs, tmp_cache):
    logs = []
    result = evaluate_run(tiny_runs["vae"], iw_samples=20, n_samples=200, log=logs.append)
    saved, sealed = read_json(tiny_runs["vae"] / "eval.json")  # its checksum checked
    assert sealed and saved == json.loads(json.dumps(result))
    assert result["iw_samples"] == 20 and result["split"] == "test" and result["n_images"] == 64
    assert result["nll_iwae"] <= result["neg_elbo"] + 1.0
    assert result["neg_elbo"] == pytest.approx(result["recon"] + result["kl"])
    assert len(result["kl_per_dim"]) == 4 and 0 <= result["active_units"] <= 4
    assert sum(result["kl_per_dim"]) == pytest.approx(result["kl"], rel=1e-4)
    assert "BCE bound" in result["note"] and not result["binary_data"]
    s = result["sample_scores"]
    assert s["n_samples"] == 200 and sum(s["class_histogram"]) == 200
    assert 0 <= s["confident_fraction"] <= 1 and s["frechet_distance"] >= 0
    assert s["classifier"]["trained_now"] and any(
        "training the sample classifier" in m for m in logs
    )
    assert "nll_iwae" in format_result(result) and "I(x; z)" in format_result(result)
    assert 0 <= result["mutual_information"] <= result["mutual_information_max"] + 1e-9
    assert result["mutual_information_max"] == pytest.approx(math.log(64))


def test_evaluate_binarized_and_train_split(tiny_runs):
    result = evaluate_run(
        tiny_runs["vae"], iw_samples=5, split="train", binarize="dynamic", scores=False, write=False
    )
    assert result["binary_data"] and "true NLL" in result["note"]
    assert result["n_images"] == 256 and result["sample_scores"] is None


def test_plain_autoencoder_gets_null_bounds_and_a_note(tiny_runs, tmp_cache):
    result = evaluate_run(tiny_runs["ae"], iw_samples=5, n_samples=100)
    assert result["nll_iwae"] is None and result["neg_elbo"] is None and result["kl"] is None
    assert "plain autoencoder" in result["note"] and result["recon"] > 0
    assert result["sample_scores"]["n_samples"] == 100


def test_conv_model_with_a_density_likelihood(tmp_path):
    """Any registered model and likelihood: the run's own -log p(x|z) is used."""
    run = train_tiny_run(tmp_path, model="conv-vae", likelihood="continuous-bernoulli")
    result = evaluate_run(run, iw_samples=4, scores=False, write=False)
    assert result["likelihood"] == "continuous-bernoulli" and "density" in result["note"]
    assert math.isfinite(result["nll_iwae"]) and result["nll_iwae"] <= result["neg_elbo"] + 1.0


def test_n_images_scores_the_first_images_of_the_split(tiny_runs):
    from vaelab.losses import gaussian_kl
    from vaelab.run import load_run

    run = load_run(tiny_runs["vae"])
    result = evaluate_run(run, iw_samples=3, scores=False, write=False, n_images=10)
    x = run.dataset().x_test
    with torch.no_grad():
        mu, logvar = run.model.encode(x[:10])
    assert result["n_images"] == 10
    assert result["kl"] == pytest.approx(float(gaussian_kl(mu, logvar).mean()), rel=1e-5)
    everything = evaluate_run(run, iw_samples=3, scores=False, write=False, n_images=10_000)
    assert everything["n_images"] == len(x) == 64


def test_evaluate_rejects_bad_arguments(tiny_runs):
    for kwargs, word in [
        ({"iw_samples": 0}, "iw_samples must be"),
        ({"split": "valid"}, "unknown split 'valid'"),
        ({"batch_size": 0}, "batch_size must be"),
        ({"binarize": "maybe"}, "unknown binarize 'maybe'"),
        ({"n_images": 0}, "n_images"),
    ]:
        with pytest.raises(VaelabError, match=word):
            evaluate_run(tiny_runs["vae"], write=False, scores=False, **kwargs)


def test_cli_evaluate(tiny_runs, capsys):
    run = str(tiny_runs["vae"])
    code, out, err = call(
        capsys, "evaluate", run, "--iw-samples", "5", "--no-sample-scores", "--quiet"
    )
    assert code == 0, err
    assert "nll_iwae" in out and "K = 5" in out
    for bad in (["--iw-samples", "0"], ["--split", "valid"], ["--iw-samples", "many"]):
        code, out, err = call(capsys, "evaluate", run, *bad)
        assert code == 2
        assert len(err.strip().splitlines()) == 1, err


def test_cli_evaluate_missing_run_is_one_line(tmp_path, capsys):
    code, _, err = call(capsys, "evaluate", str(tmp_path / "nope"), "--no-sample-scores")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "no such run" in err
