"""analysis: interpolation paths, embeddings and their cache, KL per dimension, bubbles,
the manifold grid and sample generation, on small arrays and stub models."""

import numpy as np
import pytest
import torch
from torch import nn

from vaelab.errors import VaelabError
from vaelab.losses import gaussian_kl
from vaelab.models import build_model
from vaelab.viz import analysis, embeddings


class Identity(nn.Module):
    """decode(z) = z: shows exactly which z a function decoded."""

    latent_dim = 2

    def decode(self, z):
        return z

    def encode(self, x):
        return x.flatten(1)[:, :2], torch.zeros(len(x), 2)


def test_linear_path_runs_from_a_to_b():
    za, zb = np.array([0.0, 2.0]), np.array([4.0, -2.0])
    path = analysis.latent_path(za, zb, 5, "linear")
    assert path.shape == (5, 2)
    np.testing.assert_allclose(path[0], za)
    np.testing.assert_allclose(path[-1], zb)
    np.testing.assert_allclose(path[2], [2.0, 0.0])


def test_slerp_keeps_the_norm_between_the_endpoint_norms():
    za, zb = np.array([3.0, 0.0]), np.array([0.0, 3.0])
    path = analysis.latent_path(za, zb, 7, "slerp")
    np.testing.assert_allclose(path[0], za, atol=1e-12)
    np.testing.assert_allclose(path[-1], zb, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 3.0)
    # linear would cut the corner: its midpoint has norm 3 / sqrt(2)
    assert np.linalg.norm(analysis.latent_path(za, zb, 3, "linear")[1]) < 2.2


def test_bad_path_arguments_are_one_line_errors():
    with pytest.raises(VaelabError, match="unknown interpolation mode 'cubic'"):
        analysis.latent_path(np.zeros(2), np.ones(2), 5, "cubic")
    with pytest.raises(VaelabError, match="steps must be at least 2"):
        analysis.path_weights(1)


def test_interpolate_decodes_the_means_and_blends_pixels():
    xa, xb = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0.0, 1.0, 0.5])
    out = analysis.interpolate(Identity(), xa, xb, steps=3)
    np.testing.assert_allclose(out["latent"][0], [1.0, 0.0])
    np.testing.assert_allclose(out["latent"][-1], [0.0, 1.0])
    np.testing.assert_allclose(out["pixel"][1], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(out["z"], out["latent"])  # the path, before decoding
    np.testing.assert_allclose(out["t"], [0.0, 0.5, 1.0])
    slerp = analysis.interpolate(Identity(), xa, xb, steps=3, mode="slerp")
    np.testing.assert_allclose(slerp["z"][1], [0.5**0.5, 0.5**0.5])


def test_labels_pick_test_images_and_unknown_labels_fail():
    labels = np.array([7, 3, 8, 3, 5, 4])
    assert analysis.pick_by_label(labels, (3, 8)) == (1, 2)
    assert analysis.default_pairs(labels) == [(4, 5), (1, 2)]
    with pytest.raises(VaelabError, match="no test image has label 9; labels in this run: 3, 4"):
        analysis.pick_by_label(labels, (3, 9))
    with pytest.raises(VaelabError, match=r"--a 6 is outside the test set; use an index in 0..5"):
        analysis.check_index(6, 6, "--a")


def test_pca_is_deterministic_and_finds_the_main_axis():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5)) * [10, 1, 0.1, 0.1, 0.1]
    xy = embeddings.pca_2d(x)
    assert xy.shape == (200, 2) and xy.dtype == np.float32
    np.testing.assert_array_equal(xy, embeddings.pca_2d(x))
    assert np.corrcoef(xy[:, 0], x[:, 0])[0, 1] > 0.99


def test_pca_explained_fraction_and_signs():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 4)) * [3.0, 2.0, 1.0, 1.0]
    xy, explained = embeddings.pca_2d_explained(x)
    np.testing.assert_array_equal(xy, embeddings.pca_2d(x))
    var = np.linalg.svd(x - x.mean(0), compute_uv=False) ** 2
    assert explained == pytest.approx(var[:2].sum() / var.sum())
    assert embeddings.pca_2d_explained(np.ones((5, 3)))[1] == 1.0  # no variance at all
    # the sign convention: a point far along the largest loading lands on the + side
    axis = np.zeros((1, 4))
    axis[0, 0] = 20.0
    assert embeddings.pca_2d(np.vstack([x, axis]))[-1, 0] > 0
    assert embeddings.pca_2d(np.vstack([-x, axis]))[-1, 0] > 0


def test_tsne_and_unknown_method():
    x = np.random.default_rng(0).normal(size=(60, 4))
    xy = embeddings.embed_2d(x, "tsne")
    assert xy.shape == (60, 2) and np.isfinite(xy).all()
    with pytest.raises(VaelabError, match="unknown embedding method 'umap'; choose one of tsne"):
        embeddings.embed_2d(x, "umap")


def test_embedding_cache_format_and_reuse(tmp_path):
    rng = np.random.default_rng(1)
    latents = {"mu": rng.normal(size=(50, 3)).astype(np.float32), "labels": np.arange(50) % 4}
    first = embeddings.cached_embedding(tmp_path, 5, latents, "pca", n=40)
    path = tmp_path / "embeddings" / "epoch-005-pca.npz"
    with np.load(path) as npz:
        assert set(npz.files) == {"xy", "labels", "indices"}
        assert npz["xy"].shape == (40, 2) and npz["xy"].dtype == np.float32
        assert npz["labels"].dtype == np.int64 and npz["indices"].dtype == np.int64
        np.testing.assert_array_equal(npz["indices"], np.arange(40))
        np.testing.assert_array_equal(npz["labels"], latents["labels"][:40])
    stamp = path.stat().st_mtime_ns
    again = embeddings.cached_embedding(tmp_path, 5, latents, "pca", n=40)
    assert path.stat().st_mtime_ns == stamp  # read, not recomputed
    np.testing.assert_array_equal(again["xy"], first["xy"])
    assert len(embeddings.cached_embedding(tmp_path, 5, latents, "pca", n=50)["xy"]) == 50
    with pytest.raises(VaelabError, match="n 51 is more than the 50 cached test points; use n 50"):
        embeddings.cached_embedding(tmp_path, 5, latents, "pca", n=51)


def write_embedding(path, n=6, **override):
    arrays = {"xy": np.zeros((n, 2)), "labels": np.arange(n), "indices": np.arange(n)}
    np.savez(path, **{**arrays, **override})
    return path


def test_read_embedding_checks_the_file(tmp_path):
    good = embeddings.read_embedding(write_embedding(tmp_path / "good.npz"), n_test=6)
    assert good["xy"].dtype == np.float32 and good["xy"].shape == (6, 2)
    assert good["labels"].dtype == good["indices"].dtype == np.int64
    assert embeddings.read_embedding(tmp_path / "good.npz", n_test=5) is None  # index 5 too big
    assert embeddings.read_embedding(tmp_path / "missing.npz") is None
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    assert embeddings.read_embedding(tmp_path / "junk.npz") is None
    damaged = {
        "3 columns": {"xy": np.zeros((6, 3))},
        "a flat xy": {"xy": np.zeros(12)},
        "a scalar xy": {"xy": np.float64(1.0)},
        "no points": {"xy": np.zeros((0, 2)), "labels": [], "indices": []},
        "NaN": {"xy": np.full((6, 2), np.nan)},
        "short labels": {"labels": np.arange(5)},
        "2-D indices": {"indices": np.zeros((6, 1))},
        "a negative index": {"indices": np.arange(6) - 1},
        "text indices": {"indices": np.array(list("abcdef"))},
        "pickled objects": {"labels": np.array([object()] * 6)},
    }
    for name, override in damaged.items():
        path = write_embedding(tmp_path / f"{name}.npz", **override)
        assert embeddings.read_embedding(path) is None, name
    np.savez(tmp_path / "keys.npz", xy=np.zeros((6, 2)), labels=np.arange(6))
    assert embeddings.read_embedding(tmp_path / "keys.npz") is None


def test_a_damaged_embedding_cache_is_recomputed(tmp_path):
    latents = {"mu": np.random.default_rng(4).normal(size=(20, 3)), "labels": np.arange(20) % 4}
    path = embeddings.embedding_file(tmp_path, 2, "pca")
    path.parent.mkdir()
    write_embedding(path, n=10, xy=np.full((10, 2), np.inf))  # the right indices, bad xy
    out = embeddings.cached_embedding(tmp_path, 2, latents, "pca", n=10)
    np.testing.assert_array_equal(out["xy"], embeddings.pca_2d(latents["mu"][:10]))
    np.testing.assert_array_equal(embeddings.read_embedding(path)["xy"], out["xy"])


def test_an_unwritable_embedding_cache_is_skipped_with_a_note(tmp_path, capsys):
    latents = {"mu": np.random.default_rng(0).normal(size=(20, 3)), "labels": np.arange(20)}
    (tmp_path / "embeddings").write_text("a file where the folder should be")
    out = embeddings.cached_embedding(tmp_path, 0, latents, "pca", n=20)
    assert out["xy"].shape == (20, 2)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vaelab: note: could not cache the embedding")


def test_kl_per_dim_sums_to_the_kl_and_ranks_dimensions():
    rng = np.random.default_rng(2)
    mu = rng.normal(size=(100, 4)) * [0.01, 2.0, 0.01, 1.0]
    logvar = np.zeros((100, 4)) + [0.0, -3.0, 0.0, -1.0]
    kl = analysis.kl_per_dim(mu, logvar)
    total = gaussian_kl(torch.tensor(mu), torch.tensor(logvar)).mean().item()
    assert kl.sum() == pytest.approx(total)
    assert analysis.top_dims({"mu": mu, "logvar": logvar}) == ([1, 3], "highest KL")
    ae = {"mu": mu, "logvar": np.full_like(mu, -np.inf)}
    assert analysis.top_dims(ae) == ([1, 3], "highest variance")


def test_bubbles_are_sigma_of_the_chosen_dims_and_zero_for_an_ae():
    lat = {
        "mu": np.arange(12, dtype=np.float32).reshape(4, 3),
        "logvar": np.log(np.full((4, 3), 4.0, dtype=np.float32)),
        "labels": np.array([0, 1, 2, 3]),
    }
    b = analysis.bubbles(lat, [0, 2], 3)
    np.testing.assert_allclose(b["mu"], [[0, 2], [3, 5], [6, 8]])
    np.testing.assert_allclose(b["sigma"], 2.0)
    lat["logvar"][:] = -np.inf
    assert (analysis.bubbles(lat, [0, 2], 3)["sigma"] == 0).all()


def test_manifold_grid_layout_and_quantiles():
    q = analysis.grid_values(5)
    np.testing.assert_allclose(q, -q[::-1], atol=1e-12)
    assert q[0] == pytest.approx(-1.6449, abs=1e-4) and (np.diff(q) > 0).all()
    out = analysis.manifold(Identity(), [0, 1], grid=5)
    z = out["images"].reshape(5, 5, 2)
    np.testing.assert_allclose(z[0, :, 0], q)  # x grows left to right
    np.testing.assert_allclose(z[:, 0, 1], q[::-1])  # y grows bottom to top
    with pytest.raises(VaelabError, match="grid must be at least 2"):
        analysis.grid_values(1)


def test_manifold_fixes_the_other_dimensions():
    model = build_model("vae", input_shape=(1, 4, 4), latent_dim=5, hidden=8).eval()
    seen = []
    model.decode = lambda z: seen.append(z) or torch.zeros(len(z), 16)
    analysis.manifold(model, [1, 3], grid=3)
    z = seen[0]
    assert z.shape == (9, 5)
    assert (z[:, [0, 2, 4]] == 0).all() and len(set(z[:, 1].tolist())) == 3


def test_prior_samples_are_reproducible_and_checked():
    model = build_model("vae", input_shape=(1, 4, 4), latent_dim=3, hidden=8).eval()
    a = analysis.prior_samples(model, 6, seed=3)
    assert a.shape == (6, 16) and ((a >= 0) & (a <= 1)).all()
    np.testing.assert_array_equal(a, analysis.prior_samples(model, 6, seed=3))
    with pytest.raises(VaelabError, match="temperature must be"):
        analysis.prior_samples(model, 6, temperature=0)
    with pytest.raises(VaelabError, match="n must be a positive integer"):
        analysis.prior_samples(model, 0)
