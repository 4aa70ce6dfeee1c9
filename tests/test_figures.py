"""figures: each of the lecture's figures from a real (tiny) run directory."""

import numpy as np
import pytest
from PIL import Image

from conftest import train_tiny_run
from vaelab.errors import VaelabError
from vaelab.run import load_run
from vaelab.viz import dimension_figures, figures


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return load_run(train_tiny_run(tmp_path_factory.mktemp("figures")))


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    return load_run(train_tiny_run(tmp_path_factory.mktemp("figures-ae"), model="ae"))


def pixels(path):
    with Image.open(path) as im:
        return im.size


def test_samples_grid(run, tmp_path):
    path = figures.make_samples(run, tmp_path, n=16, temperature=0.5)
    assert path == tmp_path / "samples-t0.5.png"
    w, h = pixels(path)
    assert w >= 8 * 8 and h >= 2 * 8


def test_reconstructions_one_row_per_cached_epoch(run, tmp_path):
    one = figures.make_reconstructions(run, tmp_path / "a", epochs=[2])
    both = figures.make_reconstructions(run, tmp_path / "b")
    assert pixels(both)[1] > pixels(one)[1]  # input + 2 rows is taller than input + 1
    more = figures.make_reconstructions(run, tmp_path / "c", n=20)  # beyond the cache
    assert pixels(more)[0] > pixels(both)[0]


def test_epochs_that_are_not_cached_are_named(run, tmp_path):
    with pytest.raises(VaelabError, match="epoch 1 is not cached .*cached epochs: 0, 2"):
        figures.make_reconstructions(run, tmp_path, epochs=[1])


def test_interpolations_by_index_by_label_and_default(run, tmp_path):
    by_index = figures.make_interpolations(run, [(0, 1)], steps=6, mode="slerp", out=tmp_path)
    assert by_index.name == "interpolation-0-1-slerp.png"
    labels = run.latents(2)["labels"]
    a, b = sorted(set(labels.tolist()))[:2]
    by_label = figures.make_interpolations(run, digits=(a, b), out=tmp_path)
    assert by_label.is_file()
    default = figures.make_interpolations(run, out=tmp_path, filename="d.png")
    assert pixels(default)[1] > pixels(by_index)[1]  # two pairs: four rows
    with pytest.raises(VaelabError, match="--b 64 is outside the test set"):
        figures.make_interpolations(run, [(0, 64)], out=tmp_path)
    with pytest.raises(VaelabError, match="no test image has label 7"):
        figures.make_interpolations(run, digits=(0, 7), out=tmp_path)


def test_embeddings_cached_in_the_run(run, tmp_path):
    path = figures.make_embeddings(run, method="pca", n=40, out=tmp_path)
    assert path.name == "embeddings-pca.png"
    for epoch in (0, 2):
        with np.load(run.path / "embeddings" / f"epoch-{epoch:03d}-pca.npz") as npz:
            assert npz["xy"].shape == (40, 2)
    assert figures.make_embeddings(run, [2], "tsne", 30, tmp_path).is_file()
    with pytest.raises(VaelabError, match="unknown embedding method"):
        figures.make_embeddings(run, method="umap", out=tmp_path)


def test_bubbles_png_and_gif(run, tmp_path):
    png, gif = figures.make_bubbles(run, n=64, out=tmp_path)
    assert pixels(png)[0] > 2 * 300
    with Image.open(gif) as im:
        assert im.n_frames == 2


def test_manifold_and_losses_and_kl(run, tmp_path):
    manifold = figures.make_manifold(run, grid=6, out=tmp_path)
    assert min(pixels(manifold)) >= 6 * 8
    assert figures.make_losses(run, tmp_path).is_file()
    assert dimension_figures.make_kl_per_dim(run, tmp_path).is_file()


def test_plain_autoencoder_figures(ae_run, tmp_path):
    png, _ = figures.make_bubbles(ae_run, n=64, out=tmp_path)
    assert png.is_file()
    assert figures.make_manifold(ae_run, grid=4, out=tmp_path).is_file()
    assert figures.make_samples(ae_run, tmp_path, n=4).is_file()
    with pytest.raises(VaelabError, match="plain autoencoder"):
        dimension_figures.make_kl_per_dim(ae_run, tmp_path)


def test_unwritable_out_is_a_one_line_error(run, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(VaelabError, match="cannot write figures to .*pass a writable --out"):
        figures.make_samples(run, blocker / "sub")


def test_traversal_rows_are_the_dimensions_most_used_first(run, tmp_path):
    path = dimension_figures.make_traversal(run, out=tmp_path, steps=5)
    assert path == tmp_path / "traversal.png"
    three = pixels(path)
    one = pixels(
        dimension_figures.make_traversal(run, dims=[1], span=1.0, steps=5, out=tmp_path / "b")
    )
    assert three[1] > one[1]  # 3 rows taller than 1
    by_index = dimension_figures.make_traversal(run, index=5, out=tmp_path, steps=3)
    assert by_index == tmp_path / "traversal-5.png"
    with pytest.raises(VaelabError, match="--index 64 is outside the test set"):
        dimension_figures.make_traversal(run, index=64, out=tmp_path)
    with pytest.raises(VaelabError, match="too many"):
        dimension_figures.make_traversal(run, steps=100, out=tmp_path)


def test_traversal_of_a_model_with_another_prior_starts_at_its_mean(run, tmp_path, monkeypatch):
    import torch

    seen, real = [], dimension_figures.dimensions.traversal
    monkeypatch.setattr(run.model, "prior_mean", lambda: torch.full((3,), 1.5))
    monkeypatch.setattr(
        dimension_figures.dimensions, "traversal", lambda *a: seen.append(a[1]) or real(*a)
    )
    dimension_figures.make_traversal(run, out=tmp_path)
    np.testing.assert_allclose(seen[0], [1.5, 1.5, 1.5])


def test_latent_use_figure(run, ae_run, tmp_path):
    path = dimension_figures.make_latent_use(run, tmp_path)
    assert path == tmp_path / "latent-use.png" and pixels(path)[0] > 500
    with pytest.raises(VaelabError, match="plain autoencoder"):
        dimension_figures.make_latent_use(ae_run, tmp_path)


def test_ae_traversal_sweeps_around_the_mean_code(ae_run, tmp_path):
    assert dimension_figures.make_traversal(ae_run, out=tmp_path, steps=3).is_file()
