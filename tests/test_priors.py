"""Learned priors (vaelab.models.priors; ``--prior mog|vamp``): the densities against brute
force, sampling statistics, the sampled KL, the prior in the state_dict, a VampPrior run
on MNIST that trains, evaluates, draws its figures with its own prior and resumes exactly,
old runs without the settings, and bad input (exit 2)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import assert_one_line_error, call_cli, train_tiny_run
from vaelab.checksums import seal_json
from vaelab.config import TrainConfig
from vaelab.errors import VaelabError
from vaelab.models import build_model
from vaelab.models.priors import Mixture, mixture_log_density, mixture_mean, sample_mixture
from vaelab.run import RunPaths, load_run, read_metrics
from vaelab.training.loop import train
from vaelab.viz import analysis, dimension_figures, dimensions, figures

QUIET = dict(progress=False, log=lambda _m: None)


def log_normal_by_hand(z: list[float], mean: list[float], logvar: list[float]) -> float:
    return sum(
        -0.5 * (math.log(2 * math.pi) + lv + (zj - m) ** 2 / math.exp(lv))
        for zj, m, lv in zip(z, mean, logvar)
    )


def logsumexp_by_hand(values: list[float]) -> float:
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


# ------------------------------------------------------------------------- densities
def test_vampprior_density_is_the_mean_of_the_encoders_posteriors_at_the_pseudo_inputs():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 3, 3), latent_dim=3, hidden=8, prior="vamp",
                        pseudo_inputs=7)  # fmt: skip
    with torch.no_grad():  # some pseudo-inputs outside [0, 1]: the encoder sees them clipped
        model.prior.pseudo_inputs[0] = 3.0
        model.prior.pseudo_inputs[1, :4] = -2.0
    z = torch.randn(5, 3, generator=torch.Generator().manual_seed(1)) * 2
    got = model.log_prior(z)
    for i in range(len(z)):
        terms = []
        for k in range(7):
            u = model.prior.pseudo_inputs[k].detach().clamp(0, 1)
            with torch.no_grad():
                mu, logvar = model.encode(u[None])
            terms.append(log_normal_by_hand(z[i].tolist(), mu[0].tolist(), logvar[0].tolist()))
        expected = logsumexp_by_hand(terms) - math.log(7)
        assert got[i].item() == pytest.approx(expected, rel=1e-5, abs=1e-4)


def test_mixture_of_gaussians_density_with_learned_weights_against_brute_force():
    torch.manual_seed(0)
    model = build_model("conv-vae", input_shape=(1, 8, 8), latent_dim=2, hidden=8,
                        prior="mog", prior_components=4)  # fmt: skip
    with torch.no_grad():
        model.prior.weight_logits.copy_(torch.tensor([2.0, -1.0, 0.0, 0.5]))
        model.prior.logvars.copy_(torch.randn(4, 2))
    z = torch.randn(3, 6, 2)  # any leading shape, e.g. (samples, batch, d)
    got = model.log_prior(z)
    assert got.shape == (3, 6)
    logits = [2.0, -1.0, 0.0, 0.5]
    log_pi = [a - logsumexp_by_hand(logits) for a in logits]
    means, logvars = model.prior.means.tolist(), model.prior.logvars.tolist()
    for idx in [(0, 0), (1, 3), (2, 5)]:
        terms = [
            log_pi[k] + log_normal_by_hand(z[idx].tolist(), means[k], logvars[k]) for k in range(4)
        ]
        assert got[idx].item() == pytest.approx(logsumexp_by_hand(terms), rel=1e-5)


def test_a_mixture_density_integrates_to_one():
    mixture = Mixture(
        torch.tensor([[-2.0], [1.0], [3.0]], dtype=torch.float64),
        torch.tensor([[0.5], [-1.0], [0.0]], dtype=torch.float64),
        torch.log(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)),
    )
    grid = torch.linspace(-15, 15, 30001, dtype=torch.float64)[:, None]
    mass = mixture_log_density(grid, mixture).exp().sum() * (grid[1, 0] - grid[0, 0])
    assert float(mass) == pytest.approx(1.0, abs=1e-6)


def test_the_expanded_density_keeps_its_precision_far_from_narrow_components():
    # log N = -0.5 z^2.p + z.(m p) - ...: with p = exp(12) and |z - m| up to 40 the
    # expanded terms are ~1e8 times their sum's precision in float32; float64 keeps it
    means = [[-20.0, 3.0], [0.5, 0.5], [15.0, -8.0]]
    logvars = [[-12.0, -12.0], [0.0, 2.0], [-6.0, 1.0]]
    log_pi = [math.log(0.2), math.log(0.3), math.log(0.5)]
    mixture = Mixture(torch.tensor(means), torch.tensor(logvars), torch.tensor(log_pi))
    z = torch.tensor([[-20.0, 3.0], [-19.99, 3.01], [20.0, 20.0], [0.5, 0.5]])
    got = mixture_log_density(z, mixture)
    assert got.dtype == torch.float32
    for i in range(len(z)):
        terms = [
            log_pi[k] + log_normal_by_hand(z[i].tolist(), means[k], logvars[k]) for k in range(3)
        ]
        assert got[i].item() == pytest.approx(logsumexp_by_hand(terms), rel=1e-6, abs=1e-4)


def test_the_mixture_density_has_the_gradient_of_its_formula():
    g = torch.Generator().manual_seed(0)
    means = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    logvars = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    weights = torch.log_softmax(torch.randn(4, generator=g, dtype=torch.float64), 0)
    z = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda z, m, lv: mixture_log_density(z, Mixture(m, lv, weights)), (z, means, logvars)
    )


def test_a_held_prior_scores_the_same_and_is_not_recomputed():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 3, 3), latent_dim=2, hidden=8, prior="vamp",
                        pseudo_inputs=5).eval()  # fmt: skip
    z = torch.randn(6, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = model.log_prior(z)
        with model.held_prior():
            assert torch.equal(model.log_prior(z), before)
            model.prior.pseudo_inputs.add_(0.5)  # the components on entry stay in use
            assert torch.equal(model.log_prior(z), before)
        assert not torch.allclose(model.log_prior(z), before)  # recomputed after the block


# ------------------------------------------------------------------------- sampling
def test_mixture_samples_follow_the_weights_means_and_spreads():
    mixture = Mixture(
        torch.tensor([[-10.0, 0.0], [10.0, 5.0]]),
        torch.log(torch.tensor([[1.0, 1.0], [4.0, 0.25]])),
        torch.log(torch.tensor([0.2, 0.8])),
    )
    z = sample_mixture(20000, mixture, torch.Generator().manual_seed(0))
    right = z[:, 0] > 0
    assert float(right.double().mean()) == pytest.approx(0.8, abs=0.01)
    assert z[right].mean(0).tolist() == pytest.approx([10.0, 5.0], abs=0.05)
    assert z[right].std(0).tolist() == pytest.approx([2.0, 0.5], rel=0.03)
    # the mean: 0.2 (-10, 0) + 0.8 (10, 5); standard error 0.06 along the first axis
    assert z.mean(0).tolist() == pytest.approx(mixture_mean(mixture).tolist(), abs=0.25)
    hot = sample_mixture(20000, mixture, torch.Generator().manual_seed(0), temperature=0.5)
    assert hot[hot[:, 0] > 0].std(0).tolist() == pytest.approx([1.0, 0.25], rel=0.03)


def test_vampprior_samples_match_its_density_and_mean():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 3, 3), latent_dim=2, hidden=8, prior="vamp",
                        pseudo_inputs=5).eval()  # fmt: skip
    g = torch.Generator().manual_seed(2)
    z = model.sample_prior(40000, g)
    assert z.shape == (40000, 2) and z.device.type == "cpu"
    assert z.mean(0).tolist() == pytest.approx(model.prior_mean().tolist(), abs=0.03)
    # a histogram of the samples against the density, on a coarse grid
    edges = torch.linspace(-3, 3, 7)
    centres = (edges[:-1] + edges[1:]) / 2
    cell = float(edges[1] - edges[0]) ** 2
    counts, _, _ = np.histogram2d(z[:, 0].numpy(), z[:, 1].numpy(), bins=[edges.numpy()] * 2)
    grid = torch.cartesian_prod(centres, centres)
    with torch.no_grad():
        density = model.log_prior(grid).exp().view(6, 6).numpy() * cell
    busy = density > 0.03  # where the cell's mass is about constant over the cell
    assert np.allclose(counts[busy] / len(z), density[busy], rtol=0.25)


def test_the_default_prior_samples_exactly_what_it_always_did():
    model = build_model("vae", latent_dim=4, hidden=8)
    assert model.learned_prior is None and model.closed_form_kl
    g = torch.Generator().manual_seed(3)
    expected = 0.7 * torch.randn(6, 4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(model.sample_prior(6, g, 0.7), expected)
    assert not any(k.startswith("prior") for k in model.state_dict())


# ----------------------------------------------------------------------------- the KL
def test_the_kl_against_a_learned_prior_is_log_q_minus_log_p_at_a_sample():
    torch.manual_seed(0)
    model = build_model("vae", input_shape=(1, 3, 3), latent_dim=2, hidden=8, prior="mog",
                        prior_components=3).train()  # fmt: skip
    mu, logvar = torch.randn(4, 2), torch.randn(4, 2) * 0.3
    z = mu + torch.randn(4, 2) * (0.5 * logvar).exp()
    expected = model.log_posterior(z, mu, logvar) - model.log_prior(z)
    assert torch.equal(model.kl(mu, logvar, z=z), expected)
    # averaged over many draws it estimates the true KL (brute force: many more draws)
    many = mu + torch.randn(200000, 4, 2) * (0.5 * logvar).exp()
    true_kl = (model.log_posterior(many, mu, logvar) - model.log_prior(many)).mean(0)
    model.eval()  # eval mode: a fresh draw, not the decoder's z = mu
    estimates = torch.stack([model.kl(mu, logvar, z=mu) for _ in range(3000)]).mean(0)
    assert torch.allclose(estimates, true_kl, atol=0.1)
    with pytest.raises(VaelabError, match="per latent dimension is not defined"):
        model.kl_per_dim(mu, logvar)


def test_the_prior_is_in_the_state_dict_and_comes_back():
    torch.manual_seed(0)
    kw = dict(input_shape=(1, 3, 3), latent_dim=2, hidden=8, prior="vamp", pseudo_inputs=4)
    a = build_model("vae", **kw)
    assert a.state_dict()["prior.pseudo_inputs"].shape == (4, 9)
    torch.manual_seed(1)
    b = build_model("vae", **kw)
    b.load_state_dict(a.state_dict())
    z = torch.randn(3, 2)
    assert torch.equal(a.log_prior(z), b.log_prior(z))


def test_a_learned_prior_does_not_change_the_models_own_weights():
    torch.manual_seed(0)
    plain = build_model("vae", latent_dim=3, hidden=8).state_dict()
    torch.manual_seed(0)
    vamp = build_model("vae", latent_dim=3, hidden=8, prior="vamp", pseudo_inputs=2)
    for name, value in plain.items():
        assert torch.equal(vamp.state_dict()[name], value)


# ---------------------------------------------------------- a VampPrior run on MNIST
@pytest.fixture(scope="module")
def vamp_run(tmp_path_factory, mnist):
    root = tmp_path_factory.mktemp("vamp") / "run"
    config = TrainConfig(prior="vamp", pseudo_inputs=50, limit=512, epochs=1, latent_dim=2,
                         hidden=64, batch_size=64, device="cpu")  # fmt: skip
    return train(config, out=root, data=mnist, **QUIET)


def test_a_vamp_run_trains_and_reloads_its_pseudo_inputs(vamp_run, mnist):
    rows = read_metrics(RunPaths(vamp_run).metrics)
    assert rows[1]["test_loss"] < rows[0]["test_loss"] - 20  # 8 steps of 64 images
    assert all(math.isfinite(r["test_kl"]) for r in rows)
    run = load_run(vamp_run)
    assert run.config.prior == "vamp" and run.model.learned_prior.kind == "vamp"
    saved = torch.load(RunPaths(vamp_run).last, weights_only=True)["model"]
    assert torch.equal(run.model.prior.pseudo_inputs, saved["prior.pseudo_inputs"])
    assert torch.equal(run.model_at(1).prior.pseudo_inputs, run.model.prior.pseudo_inputs)
    moved = run.model.prior.pseudo_inputs - run.model_at(0).prior.pseudo_inputs
    assert moved.abs().max() > 1e-3  # learned, and each cached epoch keeps its own


def test_evaluate_scores_a_vamp_run_with_its_own_prior(vamp_run, capsys):
    code, out, err = call_cli(capsys, "evaluate", vamp_run, "--n-images", "100",
                              "--iw-samples", "20", "--no-sample-scores", "--quiet")  # fmt: skip
    assert code == 0, err
    result = json.loads((vamp_run / "eval.json").read_text())
    assert result["prior"] == "vamp" and result["kl_per_dim"] is None
    assert result["neg_elbo"] == pytest.approx(result["recon"] + result["kl"], rel=1e-9)
    assert result["nll_iwae"] <= result["neg_elbo"] + 1.0  # K = 20 is tighter (noise aside)
    # the sample scores' samples are the run's prior samples
    model = load_run(vamp_run).model
    expected = model.decode(model.sample_prior(8, torch.Generator().manual_seed(4)))
    assert np.allclose(analysis.prior_samples(model, 8, seed=4), expected.detach().numpy())


def test_figures_of_a_vamp_run_use_its_prior(vamp_run, tmp_path):
    run = load_run(vamp_run)
    assert "VampPrior" in analysis.prior_label(run.model)
    assert figures.make_samples(run, tmp_path).is_file()
    assert all(p.is_file() for p in figures.make_bubbles(run, None, 200, tmp_path))
    assert figures.make_manifold(run, 5, tmp_path).is_file()
    assert dimension_figures.make_traversal(run, out=tmp_path, steps=3).is_file()
    with pytest.raises(VaelabError, match="no term per latent dimension"):
        dimension_figures.make_kl_per_dim(run, tmp_path)
    # the manifold's grid spans the prior's own quantiles, not N(0, 1)'s
    points = analysis.prior_points(run.model)
    q = analysis.prior_grid_values(points[:, 0], 5)
    assert q[0] == pytest.approx(np.quantile(points[:, 0], 0.05))
    # the dimensions are ranked by the variance of the means (no KL per dimension)
    use, what = dimensions.dimension_use(run.model, run.latents(1))
    assert what == "variance"


def test_the_report_and_the_explorer_sample_the_learned_prior(vamp_run, mnist, tmp_path):
    from vaelab.viz import live
    from vaelab.viz.report import build_report

    run = load_run(vamp_run)
    payload, why = live.decoder_payload(run)
    assert payload is not None, why
    drawn = np.array(payload["prior_samples"])
    assert drawn.shape == (live.PRIOR_SAMPLES, 2)
    assert np.allclose(drawn, analysis.prior_points(run.model, live.PRIOR_SAMPLES), atol=1e-4)
    page = build_report(vamp_run, tmp_path / "report.html", method="pca", n_embed=200).read_text()
    assert "VampPrior" in page and 'id="kl"' not in page
    pytest.importorskip("fastapi")
    from vaelab.server.explorer import Explorer

    info = Explorer(run, mnist.x_test[:50], mnist.y_test[:50]).info()
    assert info["prior"] == "vamp" and len(info["prior_samples"]) == 256
    assert info["prior_mean"] == pytest.approx(run.model.prior_mean().tolist())


def test_the_live_panels_random_z_is_a_draw_of_the_learned_prior(browser, vamp_run, tmp_path):
    from test_report_live import TOLERANCE, Panel, python_decode
    from vaelab.viz import live
    from vaelab.viz.report import page

    run = load_run(vamp_run)
    path = tmp_path / "live.html"
    path.write_text(page("live", [("live", "Live", live.section(run))]))
    panel = Panel(browser, path)
    start = panel.z()  # the centre: the prior's mean
    assert start == pytest.approx(run.model.prior_mean().tolist(), abs=1e-6)
    drawn = live.decoder_payload(run)[0]["prior_samples"]
    panel.page.click("#live-random")
    panel.wait_drawn("(s) => window.vaelabLive.z.some((v, j) => v !== s[j])", start)
    z = panel.z()
    assert z in drawn
    np.testing.assert_allclose(panel.pixels(), python_decode(vamp_run, z), atol=TOLERANCE)
    assert panel.errors == [] and panel.foreign == []
    panel.context.close()


def test_standard_runs_keep_no_prior_samples_in_the_payload(tmp_path):
    from vaelab.viz import live

    run = load_run(train_tiny_run(tmp_path, epochs=1))
    payload, _ = live.decoder_payload(run)
    assert payload["prior_samples"] is None


# ----------------------------------------------------------------- resume, old runs
def test_resume_with_a_vampprior_is_exact(tiny, tmp_path):
    cfg = dict(latent_dim=2, hidden=16, batch_size=64, prior="vamp", pseudo_inputs=6)
    full = train(TrainConfig(**cfg, epochs=2), out=tmp_path / "full", data=tiny, **QUIET)
    part = train(TrainConfig(**cfg, epochs=1), out=tmp_path / "part", data=tiny, **QUIET)
    train(resume=part, epochs=2, data=tiny, **QUIET)
    a, b = load_run(full).model.state_dict(), load_run(part).model.state_dict()
    assert any(k.startswith("prior.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    losses = lambda root: [r["test_loss"] for r in read_metrics(RunPaths(root).metrics)]
    assert losses(full) == losses(part)


def test_a_run_written_before_the_prior_settings_still_loads(tmp_path):
    root = train_tiny_run(tmp_path, epochs=1)
    path = RunPaths(root).config
    meta = json.loads(path.read_text())
    meta.pop("sha256", None)
    for key in ("prior", "pseudo_inputs", "prior_components", "estimator"):
        del meta["config"][key]
    path.write_text(json.dumps(seal_json(meta)))
    run = load_run(root)
    assert (run.config.prior, run.config.estimator) == ("standard", "standard")
    assert run.model.learned_prior is None


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "flags, match",
    [
        (["--prior", "vamp"], "--prior vamp needs --pseudo-inputs"),
        (["--pseudo-inputs", "5"], "--pseudo-inputs applies to --prior vamp only"),
        (["--prior", "mog"], "--prior mog needs --prior-components"),
        (["--prior", "vamp", "--prior-components", "3", "--pseudo-inputs", "2"], "applies to"),
        (["--prior", "mog", "--prior-components", "0"], "must be a positive integer"),
        (["--prior", "vamp", "--pseudo-inputs", "-4"], "must be a positive integer"),
        (["--prior", "mog", "--prior-components", "3", "--model", "ae"], "plain autoencoder"),
        (["--prior", "vamp", "--pseudo-inputs", "3", "--condition", "label"], "no label"),
        (["--prior", "flat"], "invalid choice"),
    ],
)
def test_bad_prior_settings_exit_2(capsys, tiny_npz, tmp_path, flags, match):
    code, _, err = call_cli(
        capsys, "train", "--dataset", tiny_npz, "--out", tmp_path / "r", "--quiet", *flags
    )
    assert_one_line_error(code, err, 2, match)
    assert not (tmp_path / "r").exists()
