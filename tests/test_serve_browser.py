"""The explorer in a real browser: `vaelab serve` in a subprocess on a free loopback port,
driven by Debian's chromium through Playwright (never a downloaded browser). Screenshots
go to test-artifacts/ for people to look at."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")
httpx = pytest.importorskip("httpx")
sync_api = pytest.importorskip("playwright.sync_api")

from conftest import CHROMIUM  # noqa: E402
from vaelab.config import TrainConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

if not os.path.exists(CHROMIUM):
    pytest.skip(f"{CHROMIUM} not installed (make install-dev installs it)", allow_module_level=True)


def train_tiny(root: Path, data, latent_dim: int) -> Path:
    from vaelab.training.loop import train

    config = TrainConfig(epochs=1, limit=500, latent_dim=latent_dim, hidden=64, device="cpu")
    return train(config, out=root / f"d{latent_dim}", data=data, progress=False, log=lambda m: None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(run: Path) -> Iterator[str]:
    """`python -m vaelab serve RUN` on 127.0.0.1; yields its URL once it answers; always
    stopped afterwards."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "serve", str(run), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vaelab serve exited: {proc.stdout.read()}")
            try:
                if httpx.get(url + "/api/info", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("vaelab serve did not answer within 120 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("browser-runs")
    return {d: train_tiny(root, mnist, d) for d in (2, 5)}


class Page:
    """A page on the explorer that records console errors and every request it makes;
    requests to anywhere but the server are aborted and remembered."""

    def __init__(self, browser, url: str, width: int = 1280, height: int = 800) -> None:
        self.url = url
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.goto(url + "/")
        self.page.wait_for_selector("body[data-ready=true]", timeout=60_000)

    def _route(self, route) -> None:
        if route.request.url.startswith(self.url + "/"):
            route.continue_()
        else:
            self.foreign.append(route.request.url)
            route.abort()

    def src(self, selector: str) -> str:
        return self.page.get_attribute(selector, "src") or ""

    def wait_src_change(self, selector: str, before: str) -> str:
        self.page.wait_for_function(
            "([sel, old]) => { const s = document.querySelector(sel).getAttribute('src');"
            " return s && s !== old; }",
            arg=[selector, before],
            timeout=20_000,
        )
        return self.src(selector)

    def point_on_screen(self, k: int) -> tuple[float, float]:
        """Page coordinates of the k-th map point."""
        x, y = self.page.evaluate(f"toScreen(state.map.x[{k}], state.map.y[{k}])")
        box = self.page.locator("#overlay").bounding_box()
        return box["x"] + x, box["y"] + y

    def coloured_pixels(self) -> int:
        return self.page.evaluate(
            """() => { const c = document.getElementById('map');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let n = 0; for (let i = 0; i < d.length; i += 4)
              if (d[i + 3] > 0 && Math.max(d[i], d[i+1], d[i+2]) - Math.min(d[i], d[i+1], d[i+2]) > 60) n++;
            return n; }"""
        )

    def shot(self, name: str, full_page: bool = False) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=full_page)

    def close(self) -> None:
        self.context.close()


def points_apart(p: Page) -> tuple[int, int]:
    """Two map points at least 40 px apart on screen, for clicks that must not collide."""
    first = p.point_on_screen(0)
    for k in range(1, 500):
        q = p.point_on_screen(k)
        if abs(q[0] - first[0]) + abs(q[1] - first[1]) > 40:
            return 0, k
    return 0, 1


def test_d2_map_click_slider_interpolation(browser, runs):
    with serving(runs[2]) as url:
        p = Page(browser, url)
        try:
            page = p.page
            assert p.coloured_pixels() > 500, "the map shows no points"
            assert page.locator("#legend .key").count() == 10
            assert page.locator("#sliders input[type=range]").count() == 2
            p.shot("explorer-d2-1280x800")

            # a click on empty latent space decodes that point at once
            before = p.src("#decoded")
            box = page.locator("#overlay").bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.1)
            after_click = p.wait_src_change("#decoded", before)
            z = page.evaluate("state.z")
            assert z[0] > 0 and z[1] > 0  # upper right of the origin
            assert float(page.locator("#sliders output").first.inner_text()) == pytest.approx(
                z[0], abs=0.011
            )

            # moving a slider decodes again
            page.locator("#sliders input").nth(1).fill("-2.5")
            p.wait_src_change("#decoded", after_click)
            assert page.evaluate("state.z[1]") == -2.5

            # the posterior bubbles redraw the map
            plain = page.evaluate("document.getElementById('map').toDataURL()")
            page.locator("#bubbles").check()
            assert page.evaluate("document.getElementById('map').toDataURL()") != plain
            p.shot("explorer-d2-bubbles")

            # pick a pair on the map: the strip is rebuilt for those two images
            a, b = points_apart(p)
            old_strip = page.locator("#strip-latent img").first.get_attribute("src")
            page.click("#mode-pair")
            page.mouse.click(*p.point_on_screen(a))
            page.mouse.click(*p.point_on_screen(b))
            page.wait_for_function(
                "old => document.querySelector('#strip-latent img').getAttribute('src') !== old",
                arg=old_strip,
                timeout=20_000,
            )
            picked = (page.input_value("#idx-a"), page.input_value("#idx-b"))
            indices = page.evaluate("state.map.indices")
            assert picked == (str(indices[a]), str(indices[b]))
            assert page.locator("#strip-latent img").count() == 10
            assert page.locator("#strip-pixel img").count() == 10

            # by index, with another number of steps; the step slider walks the path
            page.fill("#idx-a", "3")
            page.fill("#idx-b", "7")
            page.fill("#steps", "6")
            page.click("#interp-go")
            page.wait_for_function(
                "() => document.querySelectorAll('#strip-latent img').length === 6"
            )
            big = p.src("#big-latent")
            page.locator("#step").fill("5")
            p.wait_src_change("#big-latent", big)
            assert page.locator("#strip-latent img.current").count() == 1

            # the path selector: linear by default; slerp redraws the strip at once
            assert page.input_value("#interp-mode") == "linear"
            assert "linear path" in page.inner_text("#interp-ends")
            linear = page.evaluate("state.interp.z")
            page.select_option("#interp-mode", "slerp")
            page.wait_for_function(
                "() => document.getElementById('interp-ends').textContent.includes('slerp')"
            )
            slerp = httpx.post(
                f"{url}/api/interpolate", json={"a": 3, "b": 7, "steps": 6, "mode": "slerp"}
            ).json()
            shown = np.array(page.evaluate("state.interp.z"))
            np.testing.assert_allclose(shown, slerp["z"], atol=1e-9)
            assert not np.allclose(shown, linear, atol=1e-3)
            assert page.locator("#strip-latent img").count() == 6
            p.shot("explorer-d2-1280x800-full", full_page=True)

            assert p.errors == [], p.errors
            assert p.foreign == [], p.foreign
        finally:
            p.close()

        narrow = Page(browser, url, width=420, height=900)
        try:
            width = narrow.page.evaluate("document.documentElement.scrollWidth")
            assert width <= 420, f"the narrow page scrolls sideways ({width} px)"
            narrow.shot("explorer-d2-narrow", full_page=True)
            assert narrow.errors == [] and narrow.foreign == []
        finally:
            narrow.close()


def test_d5_point_click_loads_its_mean_into_the_sliders(browser, runs):
    with serving(runs[5]) as url:
        p = Page(browser, url)
        try:
            page = p.page
            assert "PCA" in page.inner_text("#map-note")
            assert p.coloured_pixels() > 500
            assert page.locator("#sliders input[type=range]").count() == 5
            assert page.locator("#bubbles-wrap").is_hidden()
            assert page.locator("#label-row").is_hidden()  # not a conditional run

            before = p.src("#decoded")
            page.mouse.click(*p.point_on_screen(42))
            p.wait_src_change("#decoded", before)
            index = page.evaluate("state.selected")
            mu = httpx.get(f"{url}/api/encode/{index}").json()["mu"]
            assert page.evaluate("state.z") == pytest.approx(mu, abs=1e-6)
            shown = [float(v) for v in page.locator("#sliders output").all_inner_texts()]
            assert shown == pytest.approx(mu, abs=0.011)
            assert page.locator("#source-fig").is_visible()

            # sample from the prior, then back to the origin: each decodes
            loaded = p.src("#decoded")
            page.click("#sample")
            sampled = p.wait_src_change("#decoded", loaded)
            page.click("#reset")
            p.wait_src_change("#decoded", sampled)
            assert page.evaluate("state.z") == [0, 0, 0, 0, 0]
            p.shot("explorer-d5-1280x800")
            assert p.errors == [], p.errors
            assert p.foreign == [], p.foreign
        finally:
            p.close()


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory, mnist) -> Path:
    """A 1-epoch conditional run (--condition label, d = 2) on 500 MNIST images."""
    from vaelab.training.loop import train

    config = TrainConfig(
        epochs=1, limit=500, latent_dim=2, hidden=64, device="cpu", condition="label"
    )
    root = tmp_path_factory.mktemp("browser-conditional") / "cvae"
    return train(config, out=root, data=mnist, progress=False, log=lambda m: None)


def test_conditional_run_decodes_with_the_chosen_label(browser, conditional_run):
    with serving(conditional_run) as url:
        p = Page(browser, url)
        try:
            page = p.page
            buttons = page.locator("#labels button")
            assert page.locator("#label-row").is_visible() and buttons.count() == 10
            assert page.evaluate("state.label") == 0
            assert page.locator("#labels button.on").inner_text() == "0"

            # a label: the same z decoded as a 7, exactly what the API decodes
            before = p.src("#decoded")
            buttons.nth(7).click()
            shown = p.wait_src_change("#decoded", before)
            z = page.evaluate("state.z")
            served = httpx.post(f"{url}/api/decode", json={"z": [z], "label": 7}).json()
            assert shown == served["images"][0]
            assert page.locator("#labels button.on").inner_text() == "7"
            assert "label 7" in page.inner_text("#decoded-caption")

            # a test image: its own label is chosen, its mean is decoded with it
            page.mouse.click(*p.point_on_screen(11))
            page.wait_for_function("() => state.selected !== null")
            index = page.evaluate("state.selected")
            encoded = httpx.get(f"{url}/api/encode/{index}").json()
            page.wait_for_function(f"() => state.label === {encoded['label']}")
            assert p.src("#decoded") == encoded["recon"]

            # then another label: the same handwriting drawn as another digit
            other = (encoded["label"] + 5) % 10
            recon = p.src("#decoded")
            buttons.nth(other).click()
            as_other = p.wait_src_change("#decoded", recon)
            served = httpx.post(
                f"{url}/api/decode", json={"z": [encoded["mu"]], "label": other}
            ).json()
            assert as_other == served["images"][0]
            assert page.locator("#source-fig").is_visible()
            assert f"test image #{index}" in page.inner_text("#decoded-caption")
            p.shot("explorer-conditional-1280x800")
            assert p.errors == [], p.errors
            assert p.foreign == [], p.foreign
        finally:
            p.close()
