"""report: the per-run page and the comparison page are self-contained, reference only
images that exist, and load in a real browser (headless Debian Chromium) without errors."""

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from conftest import CHROMIUM, CHROMIUM_ARGS, ROOT
from vaelab.config import TrainConfig
from vaelab.training.loop import train
from vaelab.viz.report import build_compare, build_report, flatten

ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, mnist):
    """A VAE with a 2-D latent and its plain-AE twin: 500 MNIST images, 2 epochs."""
    root = tmp_path_factory.mktemp("report")
    settings = dict(limit=500, epochs=2, latent_dim=2, hidden=64, batch_size=100)
    quiet = dict(data=mnist, progress=False, log=lambda _m: None)
    vae = train(TrainConfig(**settings), out=root / "vae", **quiet)
    ae = train(TrainConfig(model="ae", **settings), out=root / "ae", **quiet)
    (vae / "eval.json").write_text(json.dumps({"iwae": {"k": 5000, "nll": 123.456}, "au": 2}))
    report = build_report(vae, n_embed=200)
    compare = build_compare(ae, vae, n_embed=200)
    return {"vae": vae, "ae": ae, "report": report, "compare": compare}


def image_sources(page: Path) -> list[str]:
    return re.findall(r'<img [^>]*src="([^"]+)"', page.read_text())


def check_images(page: Path) -> int:
    """Every <img> is an embedded image that decodes, or a relative file that exists."""
    sources = image_sources(page)
    for src in sources:
        if src.startswith("data:"):
            header, payload = src.split(",", 1)
            assert header in ("data:image/png;base64", "data:image/gif;base64"), header
            with Image.open(io.BytesIO(base64.b64decode(payload))) as im:
                assert im.size[0] > 0 and im.size[1] > 0
        else:
            assert (page.parent / src).is_file(), src
    return len(sources)


def test_report_has_every_section_and_only_existing_images(runs):
    page = runs["report"]
    assert page == runs["vae"] / "report.html"
    text = page.read_text()
    for heading in (
        "Settings",
        "Losses",
        "Reconstructions per epoch",
        "Prior samples",
        "Interpolation",
        "Embeddings",
        "KL per latent dimension",
        "Is the latent used?",
        "Traversals",
        "Walk the latent space (live)",
        "Bubbles",
        "Latent manifold",
        "Evaluation (eval.json)",
    ):
        assert f">{heading}</h2>" in text, heading
    assert check_images(page) == 11  # bubbles: the panels and the GIF
    assert 'id="live-data"' in text and "test_mutual_information" in text
    assert "123.5" in text and "iwae.nll" in text
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing from the network
    names = ("losses", "samples", "manifold", "bubbles", "kl-per-dim", "embeddings-tsne")
    for name in (*names, "latent-use", "traversal"):
        assert list((runs["vae"] / "figures").glob(f"{name}.*")), name


def test_report_works_when_copied_elsewhere(runs, tmp_path):
    copy = tmp_path / "copy.html"
    shutil.copy(runs["report"], copy)
    assert check_images(copy) == 11


def test_compare_puts_the_runs_side_by_side(runs):
    page = runs["compare"]
    assert page == runs["ae"] / "compare.html"
    text = page.read_text()
    assert check_images(page) == 7  # losses + 2 x (samples, interpolation, embedding)
    assert "plain AE" in text and "VAE" in text


def test_eval_json_is_flattened():
    assert flatten({"a": {"b": 1, "c": [1.0, 2.0]}, "d": "x"}) == [
        ("a.b", 1),
        ("a.c", "1, 2"),
        ("d", "x"),
    ]


@pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make install-dev)"
)
@pytest.mark.parametrize("name", ["report", "compare"])
def test_page_loads_in_headless_chromium(runs, name):
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs the dev extra")
    errors = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 900})
            page.on("console", lambda m: m.type == "error" and errors.append(m.text))
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: r.url.startswith("http") and errors.append(r.url))
            page.goto(runs[name].as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
        finally:
            browser.close()
    assert widths and all(w > 0 for w in widths), widths
    assert errors == []
