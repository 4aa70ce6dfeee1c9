"""Deeper models (issue 16): MLPs with several hidden layers and another activation, the
two-stochastic-layer VAE (vaelab.models.vae_2l) and the output-bias initialisation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from conftest import assert_one_line_error, call_cli
from vaelab.checksums import seal_json
from vaelab.config import TrainConfig
from vaelab.errors import SettingError
from vaelab.evaluation.bounds import iwae_estimate
from vaelab.losses import gaussian_kl_diag, log_normal_diag
from vaelab.models import MODELS, build_model
from vaelab.models.vae import ACTIVATIONS
from vaelab.models.vae_2l import TwoLayerConfig, TwoLayerVAE
from vaelab.objectives import elbo_terms, iwae_terms
from vaelab.run import RunPaths, load_run
from vaelab.setting_spec import ACTIVATION_CHOICES
from vaelab.training.checkpoint import encode_checkpoint, load_checkpoint
from vaelab.training.loop import train

QUIET = {"progress": False, "log": lambda _m: None}


# ------------------------------------------------------------------ deeper MLPs
def test_the_lecture_mlp_draws_the_same_weights_under_the_same_names():
    """The default one-layer VAE is built as before: same names, same draws in order."""
    torch.manual_seed(3)
    old_encoder = nn.Sequential(nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 40))
    old_decoder = nn.Sequential(nn.Linear(20, 400), nn.ReLU(), nn.Linear(400, 784))
    torch.manual_seed(3)
    model = build_model("vae", **TrainConfig().to_dict())
    expected = {f"encoder.{k}": v for k, v in old_encoder.state_dict().items()}
    expected |= {f"decoder.{k}": v for k, v in old_decoder.state_dict().items()}
    state = model.state_dict()
    assert list(state) == list(expected)
    assert all(torch.equal(state[k], expected[k]) for k in expected)


@pytest.mark.parametrize("name", ["vae", "ae"])
@pytest.mark.parametrize("activation", ACTIVATION_CHOICES)
def test_mlp_with_several_hidden_layers_and_an_activation(name, activation):
    model = build_model(name, input_shape=(1, 6, 6), latent_dim=3, hidden=[16, 8],
                        activation=activation)  # fmt: skip
    code = 3 if name == "ae" else 6
    shapes = [tuple(p.shape) for p in model.encoder.parameters()]
    assert shapes == [(16, 36), (16,), (8, 16), (8,), (code, 8), (code,)]
    shapes = [tuple(p.shape) for p in model.decoder.parameters()]
    assert shapes == [(8, 3), (8,), (16, 8), (16,), (36, 16), (36,)]  # mirrored
    nonlinear = [type(m) for m in model.encoder if not isinstance(m, nn.Linear)]
    assert nonlinear == [ACTIVATIONS[activation]] * 2
    x_hat, mu, _ = model(torch.rand(5, 1, 6, 6))
    assert x_hat.shape == (5, 36) and mu.shape == (5, 3)


def test_the_activations_offered_are_the_ones_built():
    assert set(ACTIVATIONS) == set(ACTIVATION_CHOICES)


def test_hidden_sizes_in_the_config():
    assert TrainConfig(hidden=[64, 32]).hidden == [64, 32]
    assert TrainConfig(hidden=[64]).hidden == 64  # one layer: an int, as old runs have it
    assert TrainConfig(hidden=(64, 32)).to_dict()["hidden"] == [64, 32]
    assert TrainConfig(activation="tanh").activation == "tanh"
    for bad in ([0, 200], [], [200, -1], 0):
        with pytest.raises(SettingError, match="hidden must be a positive integer"):
            TrainConfig(hidden=bad)
    with pytest.raises(SettingError, match="unknown activation 'swish'"):
        TrainConfig(activation="swish")


def test_an_old_run_with_an_int_hidden_and_no_activation_loads_and_resumes(tiny, tmp_path):
    settings = {"dataset": "tiny", "latent_dim": 2, "hidden": 16, "batch_size": 32}
    root = train(TrainConfig(epochs=1, **settings), out=tmp_path / "old", data=tiny, **QUIET)
    paths = RunPaths(root)
    new_keys = ("activation", "z1_dim", "output_bias_init")
    meta = json.loads(paths.config.read_text())  # as an earlier vaelab wrote it
    meta.pop("checksum")
    for key in new_keys:
        meta["config"].pop(key)
    meta["model_config"].pop("activation")
    paths.config.write_text(json.dumps(seal_json(meta), indent=2))
    ckpt = load_checkpoint(paths.last)
    ckpt.pop("format")
    for key in new_keys:
        ckpt["config"].pop(key)
    ckpt["model_config"].pop("activation")
    paths.last.write_bytes(encode_checkpoint(**ckpt))

    run = load_run(root)
    assert run.config.hidden == 16 and run.config.activation == "relu"
    assert run.model.config.hidden == 16 and isinstance(run.model.encoder[1], nn.ReLU)
    weights = run.model.state_dict()
    train(resume=root, epochs=2, data=tiny, **QUIET)  # config.json keeps its old settings
    resumed = load_run(root)
    assert resumed.epoch == 2 and len(resumed.metrics) == 3
    assert not torch.equal(resumed.model.decoder[0].weight, weights["decoder.0.weight"])


# ------------------------------------------------ the two-stochastic-layer model
def test_vae_2l_defaults_are_burda_et_al_s_architecture():
    c = TrainConfig(model="vae-2l")
    assert (c.latent_dim, c.z1_dim, c.hidden, c.activation) == (50, 100, [200, 200], "tanh")
    model = build_model("vae-2l", input_shape=(1, 28, 28), **c.to_dict())
    linear = lambda net: [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)]
    assert linear(model.q_z1) == [(784, 200), (200, 200), (200, 200)]  # mean and log-var of z1
    assert linear(model.q_z2) == [(100, 100), (100, 100), (100, 100)]  # of z2: 2 x 50
    assert linear(model.p_z1) == [(50, 100), (100, 100), (100, 200)]
    assert linear(model.p_x) == [(100, 200), (200, 200), (200, 784)]
    assert all(isinstance(m, nn.Tanh) for m in model.p_x if not isinstance(m, nn.Linear))
    own = MODELS["vae-2l"].defaults  # the registry's defaults are the config class's
    assert {k: getattr(TwoLayerConfig(), k) for k in own} == own
    # the lecture's sizes stay the default of every other model
    assert (TrainConfig().latent_dim, TrainConfig().hidden, TrainConfig().activation) == (
        20,
        400,
        "relu",
    )
    z = TrainConfig(model="vae-2l", latent_dim=8, z1_dim=16, hidden=32)
    small = build_model("vae-2l", input_shape=(1, 28, 28), **z.to_dict())
    assert linear(small.q_z2) == [(16, 16), (16, 16)]  # z-side: z1_dim wide, as deep as hidden


def test_vae_2l_exposes_its_top_latent():
    torch.manual_seed(0)
    model = build_model("vae-2l", input_shape=(1, 8, 8), latent_dim=3, z1_dim=5, hidden=[16])
    x = torch.rand(4, 1, 8, 8).bernoulli()
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (4, 3)
    mean_z1, _ = model.q_z1_given_x(x)
    torch.testing.assert_close(mu, model.q_z2_given_z1(mean_z1)[0])  # through the mean of z1
    z2 = torch.randn(6, 3)
    torch.testing.assert_close(model.decode_logits(z2), model.p_x(model.p_z1_given_z2(z2)[0]))
    assert model.decode(model.sample_prior(6)).shape == (6, 64)


def test_vae_2l_elbo_is_one_importance_sample_and_its_eval_loss_uses_the_means():
    torch.manual_seed(0)
    model = build_model("vae-2l", input_shape=(1, 8, 8), latent_dim=3, z1_dim=5, hidden=[16])
    x = torch.rand(4, 1, 8, 8).bernoulli()
    torch.manual_seed(1)
    terms = elbo_terms(model.train(), x, weight=0.5)
    torch.manual_seed(1)
    parts = model.log_weights(x, None, 1)
    torch.testing.assert_close(terms.recon, -parts.log_px_given_z[0])
    torch.testing.assert_close(terms.kl, (parts.log_qz - parts.log_pz)[0])
    torch.testing.assert_close(terms.loss, terms.recon + 0.5 * terms.kl)
    # eval mode: deterministic, the means and the closed-form KLs of both layers
    model.eval()
    a, b = elbo_terms(model, x), elbo_terms(model, x)
    assert torch.equal(a.loss, b.loss)
    m1, lv1 = model.q_z1_given_x(x)
    m2, lv2 = model.q_z2_given_z1(m1)
    pm1, plv1 = model.p_z1_given_z2(m2)
    kl = gaussian_kl_diag(m1, lv1, pm1, plv1) + gaussian_kl_diag(m2, lv2, 0 * m2, 0 * lv2)
    torch.testing.assert_close(a.kl, kl)
    assert (a.kl > 0).all()
    # the IWAE objective reports the sampled KL of both layers, not the top one's only
    k_terms = iwae_terms(model.train(), x, k=200)
    assert (k_terms.loss <= k_terms.recon + k_terms.kl + 1e-4).all()
    assert (k_terms.kl > model.kl(*model.encode(x))).all()


class LinearGaussian2L(TwoLayerVAE):
    """The two-layer model made linear-Gaussian, through TwoLayerVAE's own code:

        z2 ~ N(0, I),  z1 | z2 ~ N(A z2 + a, s1^2 I),  x | z1 ~ N(B z1 + b, s^2 I),

    so x ~ N(B a + b, B (A A^T + s1^2 I) B^T + s^2 I) in closed form. A is diagonal and
    B's columns orthogonal, so the exact posteriors are diagonal and ``exact`` sets q to
    them; ``widen`` and ``shift`` move q away from them."""

    A = torch.tensor([[1.2, 0.0], [0.0, -0.8]])
    a = torch.tensor([0.5, -0.3])
    s1 = 0.7
    B = torch.tensor([[1.0, 0.5], [1.0, -0.5], [-1.0, 0.5], [1.0, 0.5]])  # B^T B = diag(4, 1)
    b = torch.tensor([0.2, -0.1, 0.0, 0.3])
    s = 0.5

    def __init__(self, widen: float = 1.0, shift: float = 0.0) -> None:
        super().__init__(TwoLayerConfig(input_shape=(4,), latent_dim=2, z1_dim=2, hidden=1))
        self.q_z1, self.q_z2 = nn.Linear(4, 4), nn.Linear(2, 4)  # (mean, log-variance) heads
        self.p_z1, self.p_x = nn.Linear(2, 4), nn.Linear(2, 4)
        A, a, B, b, s1, s = self.A, self.a, self.B, self.b, self.s1, self.s
        S1 = A @ A.T + s1**2 * torch.eye(2)  # Cov z1, diagonal
        post1 = torch.linalg.inv(torch.linalg.inv(S1) + B.T @ B / s**2)  # Cov z1 | x
        post2 = torch.linalg.inv(torch.eye(2) + A.T @ A / s1**2)  # Cov z2 | z1
        q_z1_bias = post1 @ (torch.linalg.inv(S1) @ a - B.T @ b / s**2)
        with torch.no_grad():
            for layer, weight, bias, cov in (
                (self.q_z1, post1 @ B.T / s**2, q_z1_bias, post1),
                (self.q_z2, post2 @ A.T / s1**2, -post2 @ A.T @ a / s1**2, post2),
            ):
                layer.weight.zero_()  # the log-variance does not depend on the input
                layer.weight[:2] = weight
                layer.bias[:2] = bias + shift
                layer.bias[2:] = torch.log(torch.diagonal(cov) * widen**2)
            self.p_z1.weight.zero_()
            self.p_z1.weight[:2] = A
            self.p_z1.bias[:2] = a
            self.p_z1.bias[2:] = math.log(s1**2)
            self.p_x.weight.copy_(B)
            self.p_x.bias.copy_(b)

    def neg_log_likelihood(self, logits, x):  # x | z1 ~ N(B z1 + b, s^2 I): logits = mean
        return -log_normal_diag(x, logits, torch.full_like(logits, 2 * math.log(self.s)))

    def exact_log_px(self, x):
        A, B, s1, s = self.A.double(), self.B.double(), self.s1, self.s
        cov = B @ (A @ A.T + s1**2 * torch.eye(2, dtype=torch.float64)) @ B.T
        cov = cov + s**2 * torch.eye(4, dtype=torch.float64)
        mean = B @ self.a.double() + self.b.double()
        return torch.distributions.MultivariateNormal(mean, cov).log_prob(x.double())


def test_two_layer_log_weights_equal_log_p_x_under_the_exact_posterior():
    model = LinearGaussian2L()
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    parts = model.log_weights(x, model.encode(x), 7, torch.Generator().manual_seed(1))
    log_w = (parts.log_px_given_z + parts.log_pz - parts.log_qz).double()  # (7, 50)
    torch.testing.assert_close(log_w, model.exact_log_px(x).expand(7, -1), atol=2e-4, rtol=0)


def test_the_iwae_estimate_of_a_two_layer_model_converges_to_log_p_x():
    model = LinearGaussian2L(widen=1.6, shift=0.4)  # q is not the posterior
    x = torch.randn(40, 4, generator=torch.Generator().manual_seed(2))
    truth = -model.exact_log_px(x)
    gaps = {}
    for k in (1, 10, 3000):
        g = torch.Generator().manual_seed(k)
        nll = iwae_estimate(model, x, k, batch_size=40, generator=g)["nll_iwae"]
        gaps[k] = float((nll - truth).mean())  # >= 0 in expectation: an upper bound
    assert gaps[1] > gaps[10] > gaps[3000] > -0.01
    assert gaps[1] > 0.3 and abs(gaps[3000]) < 0.02, gaps


# ------------------------------------------------------------- output bias init
@pytest.mark.parametrize("name", ["vae", "ae", "vae-2l"])
def test_output_bias_init_sets_the_mean_pixel(name):
    model = build_model(name, input_shape=(1, 4, 4), latent_dim=2, hidden=8, z1_dim=3)
    pixel_mean = torch.linspace(0, 1, 16).view(1, 4, 4)  # with 0 and 1: clamped
    model.init_output_bias(pixel_mean)
    torch.testing.assert_close(
        torch.sigmoid(model.output_bias()), pixel_mean.flatten().clamp(1e-3, 1 - 1e-3)
    )
    z = torch.zeros(1, 2)
    if name == "vae":  # with zero output weights the decoder draws the mean image
        model.decoder[-1].weight.data.zero_()
        torch.testing.assert_close(model.decode(z)[0], pixel_mean.flatten().clamp(1e-3, 1 - 1e-3))


def test_output_bias_init_of_a_conv_model_is_per_channel():
    model = build_model("conv-vae", input_shape=(2, 8, 8), latent_dim=2, hidden=8)
    pixel_mean = torch.stack([torch.full((8, 8), 0.2), torch.full((8, 8), 0.7)])
    model.init_output_bias(pixel_mean)
    torch.testing.assert_close(torch.sigmoid(model.output_bias()), torch.tensor([0.2, 0.7]))


def test_the_trainer_sets_the_bias_on_a_fresh_run_only(tiny, tmp_path):
    settings = dict(dataset="tiny", latent_dim=2, hidden=16, batch_size=32, output_bias_init=True)
    fresh = train(TrainConfig(epochs=0, **settings), out=tmp_path / "e0", data=tiny, **QUIET)
    bias = load_run(fresh).model.decoder[-1].bias
    mean = tiny.x_train.float().mean(0).flatten().clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(torch.sigmoid(bias), mean)
    # resuming keeps the trained bias: the result is the uninterrupted run's
    full = train(TrainConfig(epochs=2, **settings), out=tmp_path / "full", data=tiny, **QUIET)
    part = train(TrainConfig(epochs=1, **settings), out=tmp_path / "part", data=tiny, **QUIET)
    train(resume=part, epochs=2, data=tiny, **QUIET)
    a, b = load_run(full).model.state_dict(), load_run(part).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "flags, match",
    [
        (["--hidden", "0,200"], "--hidden must be a positive integer or a list of them"),
        (["--hidden", "200,x"], "comma-separated integers"),
        (["--activation", "swish"], "invalid choice: 'swish'"),
        (["--model", "conv-vae", "--activation", "tanh"], "--activation does not apply"),
        (["--model", "conv-vae", "--hidden", "64,32"], "--hidden of a conv model is one size"),
        (["--z1-dim", "10"], "--z1-dim does not apply to model 'vae'"),
        (["--model", "vae-2l", "--z1-dim", "0"], "--z1-dim must be a positive integer"),
        (["--model", "vae-2l", "--condition", "label"], "model 'vae-2l' takes no labels"),
    ],
)
def test_bad_architecture_flags_exit_2_in_one_line(capsys, tmp_path, tiny_npz, flags, match):
    out = tmp_path / "r"
    code, _, err = call_cli(capsys, "train", "--dataset", tiny_npz, "--out", out, *flags)
    assert_one_line_error(code, err, 2, match)
    assert not out.exists()


# ------------------------------------------------ a tiny vae-2l run, end to end
def test_a_tiny_two_layer_run_trains_evaluates_and_draws_every_figure(capsys, tiny_npz, tmp_path):
    run = tmp_path / "r2l"
    flags = ["--model", "vae-2l", "--dataset", str(tiny_npz), "--epochs", "1"]
    flags += ["--binarize", "dynamic", "--batch-size", "100", "--output-bias-init"]
    code, out, err = call_cli(capsys, "train", *flags, "--objective", "iwae", "--iw-k", "3",
                              "--out", run, "--quiet")  # fmt: skip
    assert code == 0, err
    loaded = load_run(run)
    assert isinstance(loaded.model, TwoLayerVAE) and loaded.model.config.z1_dim == 100
    before, after = loaded.metrics[0], loaded.metrics[1]
    assert after["train_kl"] > 0 and before["test_kl"] > 0  # both layers' KL
    assert after["test_loss"] == pytest.approx(after["test_recon"] + after["test_kl"])
    ev = ["--iw-samples", "20", "--no-sample-scores", "--quiet"]
    code, out, err = call_cli(capsys, "evaluate", run, *ev)
    assert code == 0, err
    result = json.loads((run / "eval.json").read_text())
    assert result["nll_iwae"] <= result["neg_elbo"] and result["latent_dim"] == 50
    assert result["neg_elbo"] == pytest.approx(result["recon"] + result["kl"])
    assert len(result["kl_per_dim"]) == 50 and result["kl"] > 0
    # the report draws every figure of the run (samples, reconstructions, interpolations,
    # embeddings, KL per dimension, latent use, traversals, bubbles, the manifold)
    code, _, err = call_cli(capsys, "report", run, "--method", "pca")
    assert code == 0, err
    drawn = {p.stem for p in (run / "figures").glob("*.png")}
    expected = {"samples", "reconstructions", "interpolation-default", "embeddings-pca",
                "kl-per-dim", "latent-use", "traversal", "bubbles", "manifold", "losses"}  # fmt: skip
    assert expected <= drawn, expected - drawn
    code, _, err = call_cli(capsys, "interpolate", run, "--a", "0", "--b", "1")
    assert code == 0, err
