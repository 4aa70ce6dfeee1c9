"""Conditional models (``vaelab train --condition label``): the one-hot label goes into the
encoder and the decoder of every model, and through the interface, the trainer, the
evaluation (IWAE with labels, label accuracy), the figures and the command line; a model
without labels keeps today's signatures and layers."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import assert_one_line_error, call_cli, make_arrays, train_tiny_run
from vaelab.cli.evaluate import format_result
from vaelab.config import CONDITIONAL_BETA, TrainConfig
from vaelab.data.datasets import arrays_to_dataset, label_classes
from vaelab.errors import SettingError, VaelabError
from vaelab.evaluation.bounds import iwae_estimate
from vaelab.evaluation.classifier import label_accuracy, sample_scores
from vaelab.evaluation.evaluate import evaluate_run
from vaelab.models import MODELS, build_model
from vaelab.run import load_run
from vaelab.training.loop import train
from vaelab.viz import analysis, dimension_figures, dimensions, figures
from vaelab.viz.report import _label_accuracy_section, build_report

SHAPE = (1, 8, 8)
# the models that can take a label (their config has n_classes); vae-2l cannot
LABELLED = [
    name
    for name, entry in MODELS.items()
    if "n_classes" in {f.name for f in dataclasses.fields(entry.config_cls)}
]
QUIET = {"progress": False, "log": lambda _m: None}


def small(name: str, n_classes: int = 0):
    torch.manual_seed(0)
    return build_model(name, input_shape=SHAPE, latent_dim=3, hidden=16, n_classes=n_classes)


# ------------------------------------------------------------------------ the models
@pytest.mark.parametrize("name", LABELLED)
def test_without_labels_a_model_keeps_its_layers_and_signatures(name):
    model = small(name)
    assert not model.conditional and model.n_classes == 0
    first = next(m for m in model.encoder.modules() if isinstance(m, nn.Linear))
    if name in ("vae", "ae"):
        assert first.in_features == 64  # D, with no label columns
    x = torch.rand(5, *SHAPE)
    mu, _ = model.encode(x)
    assert model.decode(mu).shape == (5, 64) and model(x)[0].shape == (5, 64)
    with pytest.raises(VaelabError, match="not conditional"):
        model.decode(mu, torch.zeros(5, dtype=torch.long))


@pytest.mark.parametrize("name", LABELLED)
def test_a_conditional_model_takes_the_label_in_its_encoder_and_decoder(name):
    model = small(name, n_classes=3).eval()
    x, z = torch.rand(4, *SHAPE), torch.randn(4, 3)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert model.conditional and model.n_classes == 3
    assert not torch.allclose(model.encode(x, zeros)[0], model.encode(x, ones)[0])
    assert not torch.allclose(model.decode(z, zeros), model.decode(z, ones))
    x_hat, mu, _ = model(x, zeros)
    torch.testing.assert_close(x_hat, model.decode(mu, zeros))  # eval mode: z = mu
    with pytest.raises(VaelabError, match="conditional: pass labels"):
        model.encode(x)
    with pytest.raises(VaelabError, match="conditional: pass labels"):
        model.decode(z)
    with pytest.raises(RuntimeError):  # a label outside 0..K-1 is never read as another
        model.decode(z, torch.tensor([0, 1, 2, 3]))


def test_class_weights_between_two_labels_mix_their_one_hot_rows():
    model = small("vae", n_classes=3).eval()
    z = torch.randn(1, 3)
    half = torch.tensor([[0.5, 0.5, 0.0]])
    first = model.decoder[0]  # linear in the label: the mix's pre-activation is the mean
    pre = [first(model.with_label(z, y)) for y in (torch.tensor([0]), torch.tensor([1]), half)]
    torch.testing.assert_close(pre[2], (pre[0] + pre[1]) / 2)


def test_log_weights_decode_each_sample_with_its_images_label():
    model = small("vae", n_classes=3).eval()
    x, labels = torch.rand(4, 64), torch.tensor([2, 0, 1, 2])
    posterior = mu, logvar = model.encode(x, labels)
    parts = model.log_weights(x, posterior, 5, torch.Generator().manual_seed(3), labels=labels)
    eps = torch.randn((5, 4, 3), generator=torch.Generator().manual_seed(3))
    for s in range(5):
        z = mu + eps[s] * torch.exp(0.5 * logvar)
        expected = -model.neg_log_likelihood(model.decode_logits(z, labels), x)
        torch.testing.assert_close(parts.log_px_given_z[s], expected)


# ------------------------------------------------------------------------ settings, data
def test_condition_setting():
    assert TrainConfig(condition="none").condition is None
    assert TrainConfig(condition="label").condition == "label"
    # beta: the lecture's 1, CONDITIONAL_BETA for a conditional run, or as given
    assert (TrainConfig().beta, TrainConfig(condition="none").beta) == (1.0, 1.0)
    assert TrainConfig(condition="label").beta == CONDITIONAL_BETA == 4.0
    assert TrainConfig(condition="label", beta=1.0).beta == 1.0
    assert TrainConfig.from_dict(TrainConfig(condition="label").to_dict()).beta == 4.0
    with pytest.raises(SettingError, match="unknown condition"):
        TrainConfig(condition="digit")


def test_label_classes_needs_every_label():
    arrays = make_arrays()
    assert label_classes(arrays_to_dataset(arrays, "t", "0" * 64, "")) == 4
    partly = dict(arrays, y_train=arrays["y_train"].astype(np.int64))
    partly["y_train"][:3] = -1
    with pytest.raises(VaelabError, match="3 of the 256 training images of t have none"):
        label_classes(arrays_to_dataset(partly, "t", "0" * 64, ""))


def test_training_on_unlabelled_data_is_refused_in_one_line(tmp_path, capsys):
    npz = tmp_path / "nolabels.npz"
    arrays = make_arrays()
    np.savez(npz, x_train=arrays["x_train"], x_test=arrays["x_test"])
    out = tmp_path / "run"
    code, _, err = call_cli(
        capsys, "train", "--dataset", npz, "--condition", "label", "--out", out, "--quiet"
    )
    assert_one_line_error(code, err, match="--condition label needs a label for every image")
    assert not out.exists()
    code, _, err = call_cli(capsys, "train", "--condition", "digits", "--out", out)
    assert_one_line_error(code, err, match="--condition")


# ------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Conditional MLP and conv VAEs and an unconditional VAE on the synthetic 8x8 data
    (4 classes; class k lights up band k of the image), 10 short epochs each (40 steps:
    lr 1e-2, else the latent still carries the class, as on MNIST; docs/concepts.md)."""
    root = tmp_path_factory.mktemp("conditional")
    settings = {"epochs": 10, "hidden": 32, "latent_dim": 2, "lr": 1e-2}
    return {
        "vae": train_tiny_run(root / "vae", condition="label", **settings),
        "conv-vae": train_tiny_run(root / "conv", condition="label", model="conv-vae", **settings),
        "plain": train_tiny_run(root / "plain", **settings),
    }


def band_brightness(images: np.ndarray) -> np.ndarray:
    """(n, 64) 8x8 images -> (n, 4): the mean of each class's band of two rows."""
    return images.reshape(-1, 4, 2 * 8).mean(-1)


@pytest.mark.parametrize("name", ["vae", "conv-vae"])
def test_a_conditional_run_trains_and_the_label_decides_the_class(runs, name):
    run = load_run(runs[name])
    assert run.model.conditional and run.model.n_classes == 4
    assert run.meta["model_config"]["n_classes"] == 4 and run.config.condition == "label"
    assert run.metrics[-1]["test_loss"] < run.metrics[0]["test_loss"]
    images = analysis.samples_by_label(run.model, 200)  # (K, 200, D)
    bands = band_brightness(images.reshape(-1, 64)).reshape(4, 200, 4)  # [label, z, band]
    # the same z: label k lights band k more than every other label does
    for k in range(4):
        assert (bands[k, :, k] > np.delete(bands[:, :, k], k, axis=0).max(0)).all()
    assert (bands.argmax(2) == np.arange(4)[:, None]).mean() > 0.8  # and mostly the most


def test_resuming_a_conditional_run_gives_the_same_weights(tmp_path):
    straight = train_tiny_run(tmp_path / "a", condition="label", epochs=2)
    first = train_tiny_run(tmp_path / "b", condition="label", epochs=1)
    resumed = train(resume=first, epochs=2, **QUIET)
    a, b = load_run(straight).model.state_dict(), load_run(resumed).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_iwae_objective_trains_a_conditional_model(tmp_path):
    run = load_run(train_tiny_run(tmp_path, condition="label", objective="iwae", epochs=1))
    assert math.isfinite(run.metrics[-1]["train_loss"]) and run.model.conditional


# ------------------------------------------------------------------------ evaluation
def test_label_accuracy_on_a_constructed_case():
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2, 2, 2, 3])
    predicted = torch.tensor([0, 0, 0, 1, 1, 1, 0, 2, 1, 3])
    acc = label_accuracy(predicted, labels, n_classes=5)
    assert acc["overall"] == pytest.approx(0.7)
    assert acc["per_label"] == pytest.approx([0.75, 1.0, 1 / 3, 1.0, None])
    assert (acc["worst"], acc["worst_label"]) == (pytest.approx(1 / 3), 2)
    assert acc["n_per_label"] == [4, 2, 3, 1, 0]


class BandModel(nn.Module):
    """A fake conditional decoder: label k draws band k, except label 3, drawn as band 0."""

    conditional, n_classes, latent_dim = True, 4, 2

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def sample_prior(self, n, generator=None, temperature=1.0):
        return torch.randn(n, 2, generator=generator)

    def decode(self, z, labels):
        bands = torch.zeros(len(z), 4, 16)
        bands[torch.arange(len(z)), torch.where(labels == 3, 0, labels)] = 1.0
        return bands.flatten(1)


class BandClassifier(nn.Module):
    """Reads the brightest band."""

    def features(self, x):
        return torch.as_tensor(band_brightness(x.numpy()))

    def head(self, f):
        return 10 * f


def test_prior_samples_are_scored_against_the_labels_they_were_decoded_with():
    model, classifier = BandModel(), BandClassifier()
    labels = analysis.balanced_labels(100, 4)
    samples = torch.from_numpy(analysis.prior_samples(model, 100, labels=labels))
    scores = sample_scores(classifier, samples, samples, labels=torch.from_numpy(labels))
    acc = scores["label_accuracy"]
    assert acc["per_label"] == [1.0, 1.0, 1.0, 0.0] and acc["overall"] == 0.75
    assert (acc["worst"], acc["worst_label"], acc["n_per_label"]) == (0.0, 3, [25] * 4)


@pytest.fixture(scope="module")
def evaluated(runs, tmp_path_factory) -> dict[str, dict]:
    """``vaelab evaluate`` of the conditional MLP run and the plain one, with a classifier
    trained into a cache of their own."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
        quiet = {"log": lambda _m: None}
        return {
            "vae": evaluate_run(runs["vae"], iw_samples=10, n_samples=200, **quiet),
            "plain": evaluate_run(runs["plain"], iw_samples=2, n_samples=20, **quiet),
        }


def test_evaluating_a_conditional_run(runs, evaluated):
    result = evaluated["vae"]
    assert math.isfinite(result["nll_iwae"]) and result["nll_iwae"] <= result["neg_elbo"] + 1
    acc = result["label_accuracy"]
    assert acc == result["sample_scores"]["label_accuracy"]
    assert acc["n_per_label"] == [50] * 4 and len(acc["per_label"]) == 4
    assert acc["overall"] > 0.6  # chance: 0.25
    assert "label acc." in format_result(result)
    assert json.loads((runs["vae"] / "eval.json").read_text())["label_accuracy"] == acc
    plain = evaluated["plain"]
    assert "label_accuracy" not in plain and "label_accuracy" not in plain["sample_scores"]


def test_the_iwae_bound_reads_the_right_labels(runs):
    run = load_run(runs["vae"])
    data = run.dataset()
    x, y = data.x_test, data.y_test

    def nll(labels):
        g = torch.Generator().manual_seed(0)
        return iwae_estimate(run.model, x, 20, generator=g, labels=labels)["nll_iwae"].mean()

    assert nll(y) < nll((y + 1) % 4) - 1.0


# ------------------------------------------------------------------------ figures, CLI
def test_relabel_keeps_z_and_changes_the_label(runs):
    run = load_run(runs["vae"])
    data = run.dataset()
    x, y = data.x_test[:6], data.y_test[:6]
    images = analysis.relabel(run.model, x, y)  # (K, 6, D)
    own = images[y.numpy(), np.arange(6)]
    np.testing.assert_allclose(own, analysis.reconstruct(run.model, x, y), atol=1e-6)
    bands = band_brightness(images.reshape(-1, 64)).reshape(4, 6, 4)  # [label, image, band]
    for k in range(4):  # the same image's z: label k lights band k more than the others do
        assert (bands[k, :, k] > np.delete(bands[:, :, k], k, axis=0).max(0)).all()
    path = figures.make_relabel(run, n=6)
    assert path.name == "relabel.png" and path.stat().st_size > 1000


def test_interpolating_a_conditional_run_ends_at_the_reconstructions(runs):
    run = load_run(runs["vae"])
    data = run.dataset()
    a, b = 0, int(np.flatnonzero(data.y_test.numpy() != data.y_test[0].item())[0])
    ends = (int(data.y_test[a]), int(data.y_test[b]))
    path = analysis.interpolate(run.model, data.x_test[a], data.x_test[b], 5, labels=ends)
    recon = analysis.reconstruct(run.model, data.x_test[[a, b]], data.y_test[[a, b]])
    np.testing.assert_allclose(path["latent"][[0, -1]], recon, atol=1e-6)


def test_sample_with_a_label_and_with_all_labels(runs, capsys):
    code, out, _ = call_cli(capsys, "sample", runs["vae"], "--label", "2", "--n", "12")
    assert code == 0 and out.strip().endswith("samples-label-2.png")
    code, out, _ = call_cli(capsys, "sample", runs["vae"], "--label", "all")
    assert code == 0 and out.strip().endswith("samples.png")
    code, out, _ = call_cli(capsys, "relabel", runs["conv-vae"], "--n", "4")
    assert code == 0 and out.strip().endswith("relabel.png")
    code, out, _ = call_cli(capsys, "manifold", runs["vae"], "--label", "3", "--grid", "4")
    assert code == 0 and out.strip().endswith("manifold.png")


@pytest.mark.parametrize(
    "run, argv, match",
    [
        ("vae", ["sample", "--label", "4"], "not one of the run's classes; use one of 0..3"),
        ("vae", ["sample", "--label", "-1"], "not one of the run's classes"),
        ("vae", ["sample", "--label", "seven"], "expected a class number or all"),
        ("vae", ["manifold", "--label", "9"], "not one of the run's classes"),
        ("plain", ["sample", "--label", "1"], "needs a conditional run"),
        ("plain", ["sample", "--label", "all"], "needs a conditional run"),
        ("plain", ["relabel"], "needs a conditional run"),
    ],
)
def test_bad_labels_are_one_line_errors(runs, capsys, run, argv, match):
    code, _, err = call_cli(capsys, argv[0], runs[run], *argv[1:])
    assert_one_line_error(code, err, match=match)


def test_the_report_of_a_conditional_run(runs, evaluated, tmp_path):
    text = build_report(runs["vae"], tmp_path / "report.html", "pca", 50).read_text()
    assert 'id="relabel"' in text and "same z in every row" in text
    assert 'id="label-accuracy"' in text and "read as the label (%)" in text
    assert "of the samples are read as the label they were decoded with" in text
    _, _, before = _label_accuracy_section(load_run(runs["conv-vae"]))  # no eval.json yet
    assert "No score yet: run <code>vaelab evaluate" in before


def test_traversals_of_a_conditional_run_decode_with_a_label(runs, tmp_path):
    run = load_run(runs["vae"])
    base = np.zeros(run.model.latent_dim)
    as0, as1 = (dimensions.traversal(run.model, base, [0], steps=3, label=k) for k in (0, 1))
    assert not np.allclose(as0["images"], as1["images"])  # the label changes the picture
    assert dimension_figures.make_traversal(
        run, out=tmp_path, steps=3
    ).is_file()  # label 0 by default
    assert dimension_figures.make_traversal(run, out=tmp_path, steps=3, index=0, label=2).is_file()
    with pytest.raises(VaelabError, match="not one of the run's classes"):
        dimension_figures.make_traversal(run, out=tmp_path, label=run.model.n_classes)
