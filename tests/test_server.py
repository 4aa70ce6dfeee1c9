"""The explorer's API (vaelab.server) through FastAPI's test client: what it computes, every
bad input answered with a 4xx and a message, and a property test that no body gives a 5xx."""

from __future__ import annotations

import base64
import io
import json
import shutil
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette asks for httpx2; httpx is what we have
    warnings.filterwarnings("ignore", message=".*httpx2")
    from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

from vaelab.cli import main  # noqa: E402
from vaelab.config import TrainConfig  # noqa: E402
from vaelab.errors import VaelabError  # noqa: E402
from vaelab.run import load_run  # noqa: E402
from vaelab.server.app import MAX_BATCH, create_app  # noqa: E402
from vaelab.server.explorer import Explorer  # noqa: E402
from vaelab.server.images import png_urls  # noqa: E402
from vaelab.server.launch import check_host, check_serve_extra, is_loopback  # noqa: E402
from vaelab.viz import analysis, embeddings, plots  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*httpx2")


def train_tiny(root: Path, data, latent_dim: int, model: str = "vae") -> Path:
    """A 1-epoch run on 500 MNIST images: seconds to train, the real test set."""
    from vaelab.training.loop import train

    config = TrainConfig(
        epochs=1, limit=500, latent_dim=latent_dim, hidden=64, device="cpu", model=model
    )
    out = root / f"{model}{latent_dim}"
    return train(config, out=out, data=data, progress=False, log=lambda m: None)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("serve-runs")
    return {d: train_tiny(root, mnist, d) for d in (2, 5)}


@pytest.fixture(scope="module")
def explorers(runs, mnist) -> dict[int, Explorer]:
    return {
        d: Explorer(load_run(path), mnist.x_test, mnist.y_test, mnist.classes)
        for d, path in runs.items()
    }


@pytest.fixture(scope="module")
def c2(explorers) -> TestClient:
    return TestClient(create_app(explorers[2]))


@pytest.fixture(scope="module")
def c5(explorers) -> TestClient:
    return TestClient(create_app(explorers[5]))


def png_size(url: str) -> tuple[tuple[int, int], str]:
    assert url.startswith("data:image/png;base64,")
    image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    return image.size, image.mode


def assert_4xx(response, status: int = 422) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if isinstance(detail, list):
        assert detail and all(e["msg"] for e in detail)
    else:
        assert detail


# ---------------------------------------------------------------------------- reading
def test_info_describes_the_run(c2, explorers):
    info = c2.get("/api/info").json()
    assert info["latent_dim"] == 2 and info["n_test"] == 10_000
    assert info["input_shape"] == [1, 28, 28]
    assert info["config"]["hidden"] == 64 and info["epoch"] == 1
    assert info["metrics"]["test_loss"] == pytest.approx(explorers[2].run.metrics[-1]["test_loss"])
    assert info["labels"] == list(range(10)) and info["has_report"] is False


def test_map_is_the_latent_itself_for_d2(c2, explorers):
    m = c2.get("/api/map").json()
    cached = explorers[2].run.latents(1)
    assert m["source"] == "latent" and m["epoch"] == 1 and len(m["x"]) == 10_000
    np.testing.assert_allclose(m["x"], cached["mu"][:, 0], atol=1e-4)
    np.testing.assert_allclose(m["sigma_y"], np.exp(0.5 * cached["logvar"][:, 1]), atol=1e-4)
    assert m["indices"][:3] == [0, 1, 2] and m["labels"][:3] == cached["labels"][:3].tolist()


def test_map_for_d5_is_a_pca_computed_by_the_server(c5, explorers):
    m = c5.get("/api/map").json()
    assert m["source"] == "pca-server" and m["sigma_x"] is None
    assert "PCA" in m["note"] and "no cached embedding" in m["note"]
    _, explained = embeddings.pca_2d_explained(explorers[5].run.latents(1)["mu"])
    assert f"explain {explained:.0%} of the variance" in m["note"]


def test_the_server_pca_map_is_the_reports_pca_picture(explorers):
    """Same means, same picture: no mirror image between the page and the report."""
    mu = explorers[5].run.latents(1)["mu"]
    xy = explorers[5].map_points().xy
    np.testing.assert_array_equal(xy, embeddings.pca_2d(mu))  # signs included
    np.testing.assert_array_equal(xy, embeddings.embed_2d(mu, "pca"))  # what figures draw


def test_map_uses_the_cached_embedding_when_there_is_one(runs, mnist, tmp_path):
    root = shutil.copytree(runs[5], tmp_path / "run")
    (root / "embeddings").mkdir()
    indices = np.arange(100, 400)
    xy = np.random.default_rng(0).normal(size=(300, 2))
    np.savez(
        root / "embeddings" / "epoch-001-pca.npz", xy=xy, labels=np.zeros(300), indices=indices
    )
    np.savez(
        root / "embeddings" / "epoch-001-tsne.npz", xy=xy, labels=np.zeros(300), indices=indices
    )
    m = Explorer(load_run(root), mnist.x_test, mnist.y_test).map_points()
    assert m.source == "tsne" and "t-SNE" in m.note
    np.testing.assert_array_equal(m.indices, indices)
    np.testing.assert_array_equal(m.labels, mnist.y_test.numpy()[100:400])  # the real labels
    # a broken t-SNE file is skipped for the PCA one; both broken -> computed here
    (root / "embeddings" / "epoch-001-tsne.npz").write_bytes(b"not an npz")
    assert Explorer(load_run(root), mnist.x_test, mnist.y_test).map_points().source == "pca"
    np.savez(
        root / "embeddings" / "epoch-001-pca.npz", xy=xy, labels=xy[:, 0], indices=indices + 9_800
    )
    assert Explorer(load_run(root), mnist.x_test, mnist.y_test).map_points().source == "pca-server"


def test_map_encodes_the_test_set_when_the_epoch_is_not_cached(runs, mnist, tmp_path):
    root = shutil.copytree(runs[2], tmp_path / "run")
    (root / "latents" / "epoch-001.npz").unlink()
    ex = Explorer(load_run(root), mnist.x_test, mnist.y_test)
    m = ex.map_points()
    assert "encoded by the server" in m.note
    mu, _ = ex.encode(np.arange(5))
    np.testing.assert_allclose(m.xy[:5], mu, atol=1e-5)


def test_a_plain_autoencoder_has_no_bubbles_and_no_logvar(tmp_path, mnist):
    ex = Explorer(load_run(train_tiny(tmp_path, mnist, 2, "ae")), mnist.x_test, mnist.y_test)
    client = TestClient(create_app(ex))
    m = client.get("/api/map").json()
    assert m["source"] == "latent" and m["sigma_x"] is None
    out = client.get("/api/encode/0").json()
    assert out["logvar"] is None and len(out["mu"]) == 2
    assert client.get("/api/info").json()["stochastic"] is False


def test_info_shows_the_headline_numbers_of_eval_json(runs, mnist, tmp_path):
    root = shutil.copytree(runs[2], tmp_path / "run")
    evaluation = {"neg_elbo": 150.5, "nll_iwae": 140.25, "active_units": 2, "seconds": 3.0}
    (root / "eval.json").write_text(json.dumps(evaluation))
    ex = Explorer(load_run(root), mnist.x_test, mnist.y_test)
    assert ex.info()["evaluation"] == {"-ELBO": 150.5, "NLL (IWAE)": 140.25, "active units": 2}
    (root / "eval.json").write_text("{not json")
    assert ex.info()["evaluation"] == {}
    from vaelab.checksums import seal_json

    sealed = json.dumps(seal_json(evaluation))
    (root / "eval.json").write_text(sealed)
    assert ex.info()["evaluation"]["NLL (IWAE)"] == 140.25
    (root / "eval.json").write_text(sealed.replace("140.25", "130.25"))  # changed after sealing
    assert ex.info()["evaluation"] == {}


# ---------------------------------------------------------------------------- decoding
def test_decode_returns_pngs_at_the_true_size(c2):
    out = c2.post("/api/decode", json={"z": [[0.0, 0.0], [1, -2.5]]}).json()
    assert len(out["images"]) == 2 and out["input_shape"] == [1, 28, 28]
    assert png_size(out["images"][0]) == ((28, 28), "L")
    assert out["images"][0] != out["images"][1]


def test_decode_array_format_matches_the_model(c5, explorers):
    z = np.random.default_rng(1).normal(size=(3, 5)).astype(np.float32)
    out = c5.post("/api/decode", json={"z": z.tolist(), "format": "array"}).json()
    with torch.no_grad():
        expected = explorers[5].run.model.decode(torch.from_numpy(z)).numpy()
    np.testing.assert_allclose(np.array(out["pixels"]), expected, atol=1e-4)
    assert "images" not in out


def test_decode_accepts_a_full_batch(c2):
    out = c2.post("/api/decode", json={"z": [[0.1, 0.2]] * MAX_BATCH}).json()
    assert len(out["images"]) == MAX_BATCH


BAD_DECODE = {
    "one number too many": {"z": [[0.0, 0.0, 0.0]]},
    "one number too few": {"z": [[0.0]]},
    "an empty vector": {"z": [[]]},
    "no vectors": {"z": []},
    "z missing": {},
    "z not a list": {"z": 3},
    "a flat vector": {"z": [0.0, 0.0]},
    "a string": {"z": [["0.5", 0.0]]},
    "a boolean": {"z": [[True, 0.0]]},
    "null": {"z": [[None, 0.0]]},
    "too large": {"z": [[1e7, 0.0]]},
    "too many vectors": {"z": [[0.0, 0.0]] * (MAX_BATCH + 1)},
    "unknown format": {"z": [[0.0, 0.0]], "format": "jpeg"},
    "an unknown field": {"z": [[0.0, 0.0]], "path": "/etc/passwd"},
}


@pytest.mark.parametrize("body", BAD_DECODE.values(), ids=BAD_DECODE.keys())
def test_decode_rejects_bad_input_with_a_message(c2, body):
    assert_4xx(c2.post("/api/decode", json=body))


@pytest.mark.parametrize("raw", [b'{"z": [[NaN, 0]]}', b'{"z": [[Infinity, 0]]}', b'{"z": [[-Infinity, 0]]}', b'{"z": [[1e999, 0]]}', b"{", b"", b"[1, 2]"])  # fmt: skip
def test_decode_rejects_non_finite_numbers_and_broken_json(c2, raw):
    response = c2.post("/api/decode", content=raw, headers={"content-type": "application/json"})
    assert_4xx(response)


def test_oversized_bodies_are_refused_before_parsing(c2):
    big = b'{"z": [' + b"[0.0, 0.0]," * 900_000 + b"[0, 0]]}"
    response = c2.post("/api/decode", content=big, headers={"content-type": "application/json"})
    assert_4xx(response, 413)

    def chunks():  # no content-length: counted as it streams in
        for _ in range(9):
            yield b" " * 2**20

    response = c2.post(
        "/api/decode", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_4xx(response, 413)


# ---------------------------------------------------------------------------- encoding
def test_encode_one_gives_the_model_posterior(c2, explorers, mnist):
    out = c2.get("/api/encode/7").json()
    with torch.no_grad():
        mu, logvar = explorers[2].run.model.encode(mnist.x_test[7:8])
    np.testing.assert_allclose(out["mu"], mu[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(out["logvar"], logvar[0].numpy(), atol=1e-5)
    assert out["index"] == 7 and out["label"] == int(mnist.y_test[7])
    assert png_size(out["image"]) == png_size(out["recon"]) == ((28, 28), "L")


def test_encode_many(c5):
    items = c5.post("/api/encode", json={"indices": [0, 9999, 0]}).json()["items"]
    assert [i["index"] for i in items] == [0, 9999, 0] and len(items[1]["mu"]) == 5
    assert items[0]["mu"] == items[2]["mu"]


@pytest.mark.parametrize("index", ["-1", "10000", "abc", "1.5", "1e3", "99999999999999999999999"])
def test_encode_one_rejects_bad_indices(c2, index):
    assert_4xx(c2.get(f"/api/encode/{index}"))


@pytest.mark.parametrize(
    "body",
    [{"indices": []}, {"indices": [-1]}, {"indices": [10_000]}, {"indices": [1.0]},
     {"indices": ["3"]}, {"indices": [True]}, {"indices": 3}, {},
     {"indices": [0] * (MAX_BATCH + 1)}, {"indices": [2**70]}],
)  # fmt: skip
def test_encode_many_rejects_bad_indices(c2, body):
    assert_4xx(c2.post("/api/encode", json=body))


# ---------------------------------------------------------------------------- interpolating
def test_interpolate_runs_from_one_mean_to_the_other(c2, explorers):
    out = c2.post("/api/interpolate", json={"a": 3, "b": 8, "steps": 7}).json()
    ex = explorers[2]
    mu = ex.encode(np.array([3, 8]))[0]
    assert out["t"][0] == 0 and out["t"][-1] == 1 and len(out["t"]) == 7
    np.testing.assert_allclose(out["z"][0], mu[0], atol=1e-6)
    np.testing.assert_allclose(out["z"][-1], mu[1], atol=1e-6)
    assert len(out["latent"]["images"]) == len(out["pixel"]["images"]) == 7
    recon = c2.get("/api/encode/3").json()
    assert out["latent"]["images"][0] == recon["recon"]  # step 0 decodes mu_a
    assert out["pixel"]["images"][0] == recon["image"]  # and the blend starts at x_a
    assert out["labels"] == ex.y_test[[3, 8]].tolist()


def test_interpolate_array_format_blends_pixels_linearly(c2, mnist):
    out = c2.post("/api/interpolate", json={"a": 0, "b": 1, "steps": 3, "format": "array"}).json()
    middle = np.array(out["pixel"]["pixels"][1])
    expected = (mnist.x_test[0].flatten() + mnist.x_test[1].flatten()).numpy() / 2
    np.testing.assert_allclose(middle, expected, atol=1e-4)


def test_interpolate_defaults_to_linear_and_follows_slerp_on_request(c5, explorers):
    mu = explorers[5].encode(np.array([3, 8]))[0]
    linear = c5.post("/api/interpolate", json={"a": 3, "b": 8, "steps": 5}).json()
    assert linear["mode"] == "linear"
    np.testing.assert_allclose(linear["z"], analysis.latent_path(mu[0], mu[1], 5), atol=1e-6)
    slerp = c5.post("/api/interpolate", json={"a": 3, "b": 8, "steps": 5, "mode": "slerp"}).json()
    assert slerp["mode"] == "slerp" and slerp["t"] == linear["t"]
    expected = analysis.latent_path(mu[0], mu[1], 5, "slerp")
    np.testing.assert_allclose(slerp["z"], expected, atol=1e-6)
    assert not np.allclose(slerp["z"][2], linear["z"][2], atol=1e-3)  # a different path
    assert slerp["latent"]["images"][2] != linear["latent"]["images"][2]
    assert slerp["pixel"] == linear["pixel"]  # the pixel blend has no mode


@pytest.mark.parametrize(
    "body",
    [{"a": 0, "b": 1, "steps": 1}, {"a": 0, "b": 1, "steps": 65}, {"a": 0, "b": 10_000},
     {"a": -1, "b": 1}, {"a": 0}, {"a": "0", "b": 1}, {"a": 0, "b": 1, "steps": 2.5},
     {"a": 0, "b": 1, "mode": "cubic"}, {"a": 0, "b": 1, "mode": None},
     {"a": 0, "b": 1, "mode": "Slerp"}],
)  # fmt: skip
def test_interpolate_rejects_bad_input(c2, body):
    assert_4xx(c2.post("/api/interpolate", json=body))


# ---------------------------------------------------------------------------- never a 5xx
def json_values(depth: int = 3):
    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
        ),
        max_leaves=30,
    )


def vectors(d: int):
    number = st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(2**80), 2**80)
    return st.lists(st.lists(number, min_size=max(0, d - 1), max_size=d + 1), max_size=5)


def body_for(path: str):
    index = st.integers(-5, 10_005) | st.floats() | st.text(max_size=4) | st.none()
    shaped = {
        "/api/decode": st.fixed_dictionaries(
            {"z": vectors(2)}, optional={"format": st.sampled_from(["png", "array", "gif"])}
        ),
        "/api/encode": st.fixed_dictionaries({"indices": st.lists(index, max_size=5)}),
        "/api/interpolate": st.fixed_dictionaries(
            {"a": index, "b": index},
            optional={
                "steps": st.integers(-3, 70) | st.floats(),
                "mode": st.sampled_from(["linear", "slerp", "cubic", ""]),
            },
        ),
    }[path]
    return shaped | json_values()


def post_raw(client: TestClient, path: str, body) -> int:
    # allow_nan: send NaN and Infinity as Python's json writes them, to be refused
    raw = json.dumps(body, allow_nan=True).encode()
    return client.post(path, content=raw, headers={"content-type": "application/json"}).status_code


@pytest.mark.parametrize("path", ["/api/decode", "/api/encode", "/api/interpolate"])
def test_no_body_gives_a_server_error(c2, path):
    @settings(
        max_examples=120,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=body_for(path))
    def check(body):
        status = post_raw(c2, path, body)
        assert status < 500, body
        assert status in (200, 413, 422), (status, body)

    check()


def test_valid_bodies_succeed(c5):
    @settings(max_examples=40, deadline=None)
    @given(
        z=st.lists(
            st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=5, max_size=5),
            min_size=1,
            max_size=8,
        ),
        a=st.integers(0, 9999),
        b=st.integers(0, 9999),
        steps=st.integers(2, 64),
    )
    def check(z, a, b, steps):
        out = c5.post("/api/decode", json={"z": z})
        assert out.status_code == 200 and len(out.json()["images"]) == len(z)
        out = c5.post("/api/interpolate", json={"a": a, "b": b, "steps": steps})
        assert out.status_code == 200 and len(out.json()["t"]) == steps

    check()


# ---------------------------------------------------------------------------- the page
def test_the_page_and_its_files_are_served_with_a_strict_policy(c2):
    page = c2.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert "http" not in page.text.replace("http-equiv", "")  # no external URL at all
    for name, kind in [("/app.js", "javascript"), ("/style.css", "text/css")]:
        response = c2.get(name)
        assert response.status_code == 200 and kind in response.headers["content-type"]
        assert "//cdn" not in response.text and "https://" not in response.text


@pytest.mark.parametrize(
    "path",
    ["/config.json", "/checkpoints/last.pt", "/static/../app.py", "/%2e%2e/config.json",
     "/report.html/../config.json", "/app.js/..%2f..%2fconfig.json", "/docs", "/redoc"],
)  # fmt: skip
def test_no_route_names_a_file(c2, path):
    assert c2.get(path).status_code == 404


def test_report_is_served_by_its_fixed_route_only(runs, mnist, tmp_path):
    root = shutil.copytree(runs[2], tmp_path / "run")
    client = TestClient(create_app(Explorer(load_run(root), mnist.x_test, mnist.y_test)))
    assert_4xx(client.get("/report.html"), 404)
    (root / "report.html").write_text("<html><body>the report</body></html>")
    response = client.get("/report.html")
    assert response.status_code == 200 and "the report" in response.text
    assert client.get("/api/info").json()["has_report"] is True


def test_openapi_documents_the_limits(c2):
    spec = c2.get("/openapi.json").json()
    assert {"/api/decode", "/api/encode", "/api/encode/{index}", "/api/interpolate", "/api/map"} <= set(spec["paths"])  # fmt: skip
    z = spec["components"]["schemas"]["DecodeRequest"]["properties"]["z"]
    assert z["maxItems"] == MAX_BATCH and z["items"]["minItems"] == z["items"]["maxItems"] == 2
    mode = spec["components"]["schemas"]["InterpolateRequest"]["properties"]["mode"]
    assert mode["enum"] == list(analysis.INTERPOLATION_MODES) and mode["default"] == "linear"


def test_unknown_hosts_are_refused_when_trusted_hosts_are_set(explorers):
    client = TestClient(
        create_app(explorers[2], trusted_hosts=["127.0.0.1"]), base_url="http://127.0.0.1"
    )
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/info", headers={"host": "evil.example"}).status_code == 400


# ---------------------------------------------------------------------------- images, CLI
def decoded_png(url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))


@pytest.mark.parametrize(
    "shape,size,mode",
    [((1, 28, 28), (28, 28), "L"), ((3, 4, 5), (5, 4), "RGB"), ((4, 4, 5), (5, 4), "RGB"),
     ((2, 4, 5), (5, 4), "L"), ((4, 5), (5, 4), "L"), ((10,), (4, 4), "L")],
)  # fmt: skip
def test_pngs_are_the_figures_images(shape, size, mode):
    flat = np.random.default_rng(0).uniform(-0.2, 1.2, (3, int(np.prod(shape))))
    flat[0, 0] = np.nan
    urls = png_urls(flat, shape)
    assert len(urls) == 3 and all(png_size(u) == (size, mode) for u in urls)
    expected = (plots.to_images(flat, shape) * 255 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(np.stack([decoded_png(u) for u in urls]), expected)
    assert decoded_png(urls[0]).flat[0] == 0  # NaN is drawn black


@pytest.mark.parametrize("host,loop", [("127.0.0.1", True), ("127.3.2.1", True), ("::1", True), ("[::1]", True), ("localhost", True), ("0.0.0.0", False), ("::", False), ("192.168.1.5", False), ("example.org", False)])  # fmt: skip
def test_is_loopback(host, loop):
    assert is_loopback(host) is loop


def test_a_remote_host_needs_the_flag_and_warns(capsys):
    with pytest.raises(VaelabError, match="--allow-remote"):
        check_host("0.0.0.0", allow_remote=False)
    assert check_host("0.0.0.0", allow_remote=True) is False
    assert "warning" in capsys.readouterr().err
    assert check_host("127.0.0.1", allow_remote=False) is True


def test_serve_errors_are_one_line(runs, capsys, monkeypatch):
    assert main(["serve", str(runs[2]), "--host", "0.0.0.0"]) == 2
    assert main(["serve", str(runs[2].parent / "missing")]) == 2
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        assert main(["serve", str(runs[2]), "--port", str(taken.getsockname()[1])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(line.startswith("vaelab: error: ") for line in err)
    assert "--allow-remote" in err[0] and "no such run" in err[1] and "--port" in err[2]


def test_serve_without_fastapi_says_how_to_install(monkeypatch, capsys, runs):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    with pytest.raises(VaelabError, match=r"pip install 'vaelab\[serve\]'"):
        check_serve_extra()
    assert main(["serve", str(runs[2])]) == 2
    assert "vaelab[serve]" in capsys.readouterr().err


# ---------------------------------------------------------------------------- conditional runs
@pytest.fixture(scope="module")
def conditional(tmp_path_factory, mnist) -> Explorer:
    """A 1-epoch conditional run (--condition label) on 500 MNIST images, d = 2."""
    from vaelab.training.loop import train

    config = TrainConfig(
        epochs=1, limit=500, latent_dim=2, hidden=64, device="cpu", condition="label"
    )
    root = tmp_path_factory.mktemp("serve-conditional") / "cvae"
    train(config, out=root, data=mnist, progress=False, log=lambda m: None)
    return Explorer(load_run(root), mnist.x_test, mnist.y_test, mnist.classes)


def test_a_conditional_run_decodes_with_the_label_it_is_given(conditional):
    client = TestClient(create_app(conditional))
    assert client.get("/api/info").json()["n_classes"] == 10
    z = [[0.5, -0.5], [0.0, 1.0]]
    out = {k: client.post("/api/decode", json={"z": z, "label": k, "format": "array"}).json()
           for k in (3, 8)}  # fmt: skip
    model = conditional.run.model
    for k, answer in out.items():
        with torch.no_grad():
            expected = model.decode(torch.tensor(z), torch.full((2,), k)).numpy()
        np.testing.assert_allclose(np.array(answer["pixels"]), expected, atol=1e-4)
    assert not np.allclose(out[3]["pixels"], out[8]["pixels"], atol=1e-2)


def test_a_conditional_run_encodes_and_interpolates_with_the_test_labels(conditional, mnist):
    client = TestClient(create_app(conditional))
    model, x, y = conditional.run.model, mnist.x_test, mnist.y_test
    e = client.get("/api/encode/7").json()
    with torch.no_grad():
        mu, _ = model.encode(x[7:8], y[7:8])
    assert e["label"] == int(y[7]) and e["mu"] == pytest.approx(mu[0].tolist(), abs=1e-5)
    assert e["recon"] == png_urls(analysis.reconstruct(model, x[7:8], y[7:8]), [1, 28, 28])[0]
    out = client.post("/api/interpolate", json={"a": 0, "b": 1, "steps": 3, "format": "array"})
    ends = np.array(out.json()["latent"]["pixels"])[[0, -1]]
    expected = analysis.reconstruct(model, x[:2], y[:2])
    np.testing.assert_allclose(ends, expected, atol=1e-4)


@pytest.mark.parametrize(
    "body, match",
    [
        ({"z": [[0.0, 0.0]]}, "this run is conditional: give a label in 0..9"),
        ({"z": [[0.0, 0.0]], "label": 10}, "less than or equal to 9"),
        ({"z": [[0.0, 0.0]], "label": -1}, "greater than or equal to 0"),
        ({"z": [[0.0, 0.0]], "label": "3"}, "valid integer"),
        ({"z": [[0.0, 0.0]], "label": 2.5}, "valid integer"),
    ],
)
def test_a_conditional_run_refuses_a_missing_or_bad_label(conditional, body, match):
    response = TestClient(create_app(conditional)).post("/api/decode", json=body)
    assert_4xx(response)
    assert match in response.json()["detail"][0]["msg"]


def test_an_unconditional_run_refuses_a_label(c2):
    response = c2.post("/api/decode", json={"z": [[0.0, 0.0]], "label": 1})
    assert_4xx(response)
    assert "not conditional" in response.json()["detail"][0]["msg"]
    assert c2.get("/api/info").json()["n_classes"] == 0


def test_info_shows_the_label_accuracy_of_eval_json(conditional, tmp_path, mnist):
    root = shutil.copytree(conditional.run.path, tmp_path / "run")
    accuracy = {"overall": 0.9312, "worst": 0.8, "worst_label": 8, "per_label": [0.9] * 10}
    (root / "eval.json").write_text(json.dumps({"nll_iwae": 140.0, "label_accuracy": accuracy}))
    ex = Explorer(load_run(root), mnist.x_test, mnist.y_test)
    assert ex.info()["evaluation"] == {
        "NLL (IWAE)": 140.0,
        "label accuracy %": 93.1,
        "worst label %": 80.0,
    }
