"""The report's live panel: the decoder embedded in report.html and run by plain
JavaScript, opened from a file: URL in Debian's chromium (Playwright), with every request
outside the file refused. Moving a slider or clicking the map must change the picture and
give the Python decoder's output for the same z (float16 weights: within 0.02 per pixel).
Screenshots go to test-artifacts/."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, train_tiny_run
from vaelab.config import TrainConfig
from vaelab.run import load_run
from vaelab.training.loop import train
from vaelab.viz import live
from vaelab.viz.report import build_report, page

ARTIFACTS = ROOT / "test-artifacts"
TOLERANCE = 0.02  # per pixel in [0, 1]: float16 weights against the float32 decoder


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist):
    """A d = 2 VAE (Bernoulli), a d = 5 VAE (continuous Bernoulli) and a conditional d = 3
    VAE: 500 MNIST images."""
    root = tmp_path_factory.mktemp("live")
    quiet = dict(data=mnist, progress=False, log=lambda _m: None)
    settings = dict(limit=500, epochs=1, hidden=64, batch_size=100, device="cpu")
    d2 = train(TrainConfig(latent_dim=2, **settings), out=root / "d2", **quiet)
    cb = TrainConfig(latent_dim=5, likelihood="continuous-bernoulli", **settings)
    d5 = train(cb, out=root / "d5", **quiet)
    conditional = TrainConfig(latent_dim=3, condition="label", **settings)
    cond = train(conditional, out=root / "cond", **quiet)
    deep = dict(settings, hidden=[32, 32], activation="tanh")  # as the likelihood presets
    tanh = train(TrainConfig(latent_dim=3, **deep), out=root / "tanh", **quiet)
    return {"d2": d2, "d5": d5, "cond": cond, "tanh": tanh}


def python_decode(run_dir: Path, z, label: int | None = None) -> np.ndarray:
    model = load_run(run_dir).model
    zs = torch.tensor([z], dtype=torch.float32)
    with torch.no_grad():
        if label is None:
            return model.decode(zs)[0].numpy()
        return model.decode(zs, torch.tensor([label]))[0].numpy()


# ------------------------------------------------------------------ without a browser
def test_payload_is_float16_weights_of_the_mlp_decoder(runs):
    run = load_run(runs["d2"])
    payload, why = live.decoder_payload(run)
    assert why == "" and payload["dtype"] == "float16" and payload["latent_dim"] == 2
    first, second = payload["layers"]
    assert (first["rows"], first["cols"], second["rows"], second["cols"]) == (64, 2, 784, 64)
    weight = np.frombuffer(base64.b64decode(second["weight"]), "<f2").reshape(784, 64)
    expected = run.model.decoder[2].weight.detach().numpy()
    np.testing.assert_allclose(weight, expected, rtol=1e-3, atol=1e-4)
    assert payload["parameters"] == 2 * 64 + 64 + 64 * 784 + 784
    assert len(payload["map"]["x"]) == live.MAP_POINTS and payload["labels"] == []


def test_a_conv_decoder_or_a_large_one_points_to_vaelab_serve(tmp_path, runs, monkeypatch):
    conv = load_run(train_tiny_run(tmp_path, model="conv-vae", epochs=1))
    text = live.section(conv)
    assert "is not an MLP" in text and "vaelab serve" in text and "live-data" not in text
    payload, _ = live.decoder_payload(load_run(runs["cond"]))  # a conditional MLP: embedded
    assert payload["labels"] == [str(k) for k in range(10)]
    assert payload["layers"][0]["cols"] == 3 + 10  # z and the one-hot label
    monkeypatch.setattr(live, "MAX_PARAMETERS", 1000)
    text = live.section(load_run(runs["d2"]))
    assert "51,152 parameters, more than the 1,000" in text and "vaelab serve" in text


def test_a_deeper_tanh_decoder_is_embedded_with_its_activation(runs, monkeypatch):
    payload, why = live.decoder_payload(load_run(runs["tanh"]))
    assert why == "" and payload["activation"] == "tanh"
    assert [(layer["rows"], layer["cols"]) for layer in payload["layers"]] == [
        (32, 3), (32, 32), (784, 32)
    ]  # fmt: skip
    # a decoder the page would not reproduce (here: a ReLU run as if it were tanh) is refused
    monkeypatch.setitem(live.TORCH_ACTIVATIONS, "relu", torch.tanh)
    payload, why = live.decoder_payload(load_run(runs["d2"]))
    assert payload is None and "is not an MLP from z with one of the activations" in why


def test_the_embedded_json_cannot_end_its_script_element():
    assert live._script_json({"a": "</script><b>"}) == '{"a":"\\u003c/script>\\u003cb>"}'
    assert json.loads(live._script_json({"a": "</script>"})) == {"a": "</script>"}


# ------------------------------------------------------------------ in chromium
@pytest.fixture(scope="module")
def reports(runs):
    d2 = build_report(runs["d2"], method="pca", n_embed=100)
    d5 = runs["d5"] / "live.html"  # the panel alone: the report around it is tested above
    d5.write_text(page("live", [("live", "Live", live.section(load_run(runs["d5"])))]))
    cond = runs["cond"] / "live.html"
    cond.write_text(page("live", [("live", "Live", live.section(load_run(runs["cond"])))]))
    tanh = runs["tanh"] / "live.html"
    tanh.write_text(page("live", [("live", "Live", live.section(load_run(runs["tanh"])))]))
    return {"d2": d2, "d5": d5, "cond": cond, "tanh": tanh}


class Panel:
    """The report in a fresh page; requests for anything but the file are refused."""

    def __init__(self, browser, path: Path) -> None:
        self.context = browser.new_context(viewport={"width": 1300, "height": 900})
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(path.as_uri())
        self.page.wait_for_selector("#live-panel[data-ready=true]", timeout=30_000)

    def _route(self, route) -> None:
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def z(self) -> list[float]:
        return self.page.evaluate("window.vaelabLive.z")

    def pixels(self) -> np.ndarray:
        return np.array(self.page.evaluate("Array.from(window.vaelabLive.pixels)"))

    def canvas(self) -> np.ndarray:
        """The red channel of the drawn image, in [0, 1]."""
        js = """() => { const c = document.getElementById('live-image');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            return Array.from(d).filter((_, i) => i % 4 === 0); }"""
        return np.array(self.page.evaluate(js)) / 255

    def wait_for_z(self, dim: int, value: float) -> None:
        self.wait_drawn("([j, v]) => Math.abs(window.vaelabLive.z[j] - v) < 1e-9", [dim, value])

    def wait_drawn(self, condition: str = "() => true", arg=None) -> None:
        """Wait until `condition` holds and the change it waits for is on screen.

        A change decodes on the next animation frame, which a loaded machine may delay
        by far more than any fixed sleep: the page says when it has drawn.
        """
        self.page.wait_for_function(
            f"(arg) => ({condition})(arg) && window.vaelabLive.drawn", arg=arg
        )


def test_sliders_and_map_decode_like_python_from_a_file_url(browser, runs, reports):
    run = runs["d2"]
    panel = Panel(browser, reports["d2"])
    start = panel.pixels()
    assert panel.z() == [0.0, 0.0]
    np.testing.assert_allclose(start, python_decode(run, [0.0, 0.0]), atol=TOLERANCE)

    first = panel.page.locator("#live-sliders input").first
    dim = int(first.get_attribute("data-dim"))
    first.fill("1.7")
    panel.wait_for_z(dim, 1.7)
    z = [1.7 if j == dim else 0.0 for j in range(2)]
    moved = panel.pixels()
    assert np.abs(moved - start).sum() > 1.0  # the picture changed
    expected = python_decode(run, z)
    assert np.abs(moved - expected).max() < TOLERANCE
    assert np.abs(panel.canvas() - expected).max() < TOLERANCE + 1 / 255  # what is drawn

    panel.page.locator("#live-map").click(position={"x": 60, "y": 250})  # lower left
    panel.wait_drawn("() => window.vaelabLive.z[0] < 0 && window.vaelabLive.z[1] < 0")
    clicked = panel.z()
    np.testing.assert_allclose(panel.pixels(), python_decode(run, clicked), atol=TOLERANCE)
    ARTIFACTS.mkdir(exist_ok=True)
    panel.page.locator("section#live").screenshot(path=str(ARTIFACTS / "report-live-d2.png"))
    assert panel.errors == [] and panel.foreign == []
    panel.context.close()


def test_continuous_bernoulli_means_and_every_slider(browser, runs, reports):
    panel = Panel(browser, reports["d5"])
    sliders = panel.page.locator("#live-sliders input")
    assert sliders.count() == 5
    z = [0.0] * 5
    for k, value in enumerate([-2.0, 1.5, 2.5]):
        slider = sliders.nth(k)
        dim = int(slider.get_attribute("data-dim"))
        slider.fill(str(value))
        panel.wait_for_z(dim, value)
        z[dim] = value
    expected = python_decode(runs["d5"], z)
    assert np.abs(panel.pixels() - expected).max() < TOLERANCE
    # the continuous-Bernoulli mean is not the sigmoid: a wrong mean would be far off
    logits = load_run(runs["d5"]).model.decode_logits(torch.tensor([z])).detach()[0].numpy()
    assert np.abs(1 / (1 + np.exp(-logits)) - expected).max() > 5 * TOLERANCE
    panel.page.click("#live-reset")
    panel.wait_drawn("() => window.vaelabLive.z.every((v) => v === 0)")
    assert re.search(r"z = the prior mean", panel.page.text_content("#live-z"))
    ARTIFACTS.mkdir(exist_ok=True)
    panel.page.screenshot(path=str(ARTIFACTS / "report-live-d5.png"), full_page=True)
    assert panel.errors == [] and panel.foreign == []
    panel.context.close()


def test_a_conditional_run_decodes_with_the_picked_label(browser, runs, reports):
    run = runs["cond"]
    panel = Panel(browser, reports["cond"])
    picker = panel.page.locator("#live-label")
    assert panel.page.locator("#live-label-box").is_visible() and picker.input_value() == "0"
    as_zero = panel.pixels()
    np.testing.assert_allclose(as_zero, python_decode(run, panel.z(), 0), atol=TOLERANCE)
    picker.select_option("7")
    panel.wait_drawn()
    as_seven = panel.pixels()
    assert np.abs(as_seven - as_zero).sum() > 1.0  # the label changed the picture
    np.testing.assert_allclose(as_seven, python_decode(run, panel.z(), 7), atol=TOLERANCE)
    ARTIFACTS.mkdir(exist_ok=True)
    panel.page.screenshot(path=str(ARTIFACTS / "report-live-conditional.png"), full_page=True)
    assert panel.errors == [] and panel.foreign == []
    panel.context.close()


def test_a_tanh_decoder_decodes_like_python_and_every_activation_matches_torch(
    browser, runs, reports
):
    run = runs["tanh"]
    panel = Panel(browser, reports["tanh"])
    np.testing.assert_allclose(panel.pixels(), python_decode(run, [0.0] * 3), atol=TOLERANCE)
    slider = panel.page.locator("#live-sliders input").first
    dim = int(slider.get_attribute("data-dim"))
    slider.fill("-2.2")
    panel.wait_for_z(dim, -2.2)
    z = [-2.2 if j == dim else 0.0 for j in range(3)]
    np.testing.assert_allclose(panel.pixels(), python_decode(run, z), atol=TOLERANCE)
    grid = np.linspace(-30.0, 30.0, 601)
    for name, function in live.TORCH_ACTIVATIONS.items():
        page_values = panel.page.evaluate(
            "([name, xs]) => window.vaelabLive.activate(name, xs)", [name, grid.tolist()]
        )
        expected = function(torch.tensor(grid, dtype=torch.float64)).numpy()
        np.testing.assert_allclose(page_values, expected, atol=1e-6, err_msg=name)
    assert panel.errors == [] and panel.foreign == []
    panel.context.close()
