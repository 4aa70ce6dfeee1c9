"""The documentation site: built with ``mkdocs build --strict`` into a temporary folder,
served by a real HTTP server on 127.0.0.1 and opened in Debian's headless Chromium
through Playwright (never a downloaded browser). Every page is visited; its images must
load, its console must stay clean and no request may leave 127.0.0.1. Screenshots go to
test-artifacts/ for people to look at.

The Concepts page's figures are trained and drawn by vaelab during the build
(docs/hooks/concept_figures.py) and cached in build/docs-cache/ by a key of the source,
so only the first build after a change pays for the training (about 20-30 s here)."""

from __future__ import annotations

import argparse
import functools
import html as html_lib
import http.server
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))
from concept_figures import NAMES  # noqa: E402  (the figures the Concepts page shows)

ARTIFACTS = ROOT / "test-artifacts"
BUILD_ENV = dict(os.environ, NO_MKDOCS_2_WARNING="1")


def mkdocs_build(site: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml")]
        + ["-d", str(site), *extra],
        capture_output=True,
        text=True,
        env=BUILD_ENV,
        cwd=ROOT,
        timeout=400,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("docs") / "site"
    start = time.monotonic()
    result = mkdocs_build(site)
    seconds = time.monotonic() - start
    assert result.returncode == 0, result.stdout + result.stderr
    print(f"site built in {seconds:.1f} s")
    return site


def pages(site: Path) -> list[str]:
    """Every page of the built site, as a path below the site root ("" is the home)."""
    found = []
    for html in sorted(site.rglob("index.html")):
        rel = html.parent.relative_to(site).as_posix()
        found.append("" if rel == "." else rel + "/")
    return found


# ---------------------------------------------------------------------- static checks


ASSET = re.compile(
    r"<(?:script|img|iframe|source|audio|video|embed|track)\b[^>]*\bsrc=\"([^\"]*)\""
    r"|<link\b[^>]*\bhref=\"([^\"]*)\""
)


def test_every_asset_is_local(site):
    """No CDN, no web fonts, no analytics: every script, stylesheet, image and icon the
    pages reference is a file in the site; the stylesheets import nothing remote."""
    html_files = list(site.rglob("*.html"))
    assert len(html_files) >= 20
    for html in html_files:
        text = html.read_text()
        for src, href in ASSET.findall(text):
            ref = src or href
            assert not re.match(r"(?i)^(https?:)?//", ref), f"{html}: {ref}"
            if ref.startswith(("data:", "#")):
                continue
            path = ref.split("#")[0].split("?")[0]
            base = site if path.startswith("/") else html.parent  # 404.html: root-relative
            target = (base / path.lstrip("/")).resolve()
            if target.is_dir():
                target = target / "index.html"
            assert target.is_file(), f"{html.relative_to(site)} refers to missing {ref}"
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, html
        assert "googletagmanager" not in text and "google-analytics" not in text, html
    for css in site.rglob("*.css"):
        text = css.read_text()
        assert not re.search(r"(?i)(@import|url\()\s*[\"']?(https?:)?//", text), css


def test_strict_build_fails_on_a_broken_link(tmp_path):
    """--strict is what turns a broken link into a failed build: a copy of the docs with
    one bad link must not build."""
    import shutil

    docs = tmp_path / "docs"
    shutil.copytree(ROOT / "docs", docs, ignore=shutil.ignore_patterns("__pycache__"))
    page = docs / "reliability.md"
    page.write_text(page.read_text() + "\nSee [the missing page](no-such-page.md).\n")
    script = (
        "import logging, sys\n"
        "from mkdocs.commands.build import build\n"
        "from mkdocs.config import load_config\n"
        "from mkdocs.exceptions import Abort\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        f"cfg = load_config({str(ROOT / 'mkdocs.yml')!r}, docs_dir={str(docs)!r},"
        f" site_dir={str(tmp_path / 'site')!r}, strict=True)\n"
        "try:\n"
        "    build(cfg)\n"
        "except Abort as exc:\n"
        "    print('ABORTED', exc)\n"
        "    sys.exit(7)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env=BUILD_ENV,
        cwd=ROOT,
        timeout=400,
    )
    assert result.returncode == 7, result.stdout + result.stderr
    assert "no-such-page.md" in result.stderr, result.stderr


# --------------------------------------------------------------- the CLI reference page


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ("vaelab",)):
    """(command words, parser) of the real parser and every subcommand, nested ones too."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, (*path, name))


def section(html: str, anchor: str) -> str:
    """The HTML of the h2 with this id, up to the next h2."""
    match = re.search(rf'<h2 id="{re.escape(anchor)}"', html)
    assert match, f"no section #{anchor} on the CLI page"
    end = html.find("<h2 ", match.end())
    return html[match.start() : end if end > 0 else len(html)]


def test_cli_reference_lists_every_subcommand_and_flag(site):
    from vaelab.cli import build_parser

    html = (site / "cli" / "index.html").read_text()
    commands = list(walk(build_parser()))
    assert len(commands) >= 17  # vaelab, 15 subcommands, classifier train
    for path, parser in commands:
        anchor = "-".join(path)
        if len(path) > 1:
            assert f'href="#{anchor}"' in html, f"{anchor} is not in the command table"
        text = section(html, anchor)
        plain = " ".join(html_lib.unescape(re.sub(r"<[^>]+>", "", text)).split())
        assert f"usage: {' '.join(path)}" in text, anchor
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            names = action.option_strings or [action.metavar or action.dest]
            for name in names:
                assert f"<code>{name}</code>" in text, f"{' '.join(path)}: {name} missing"
            if action.help:  # and its help, as words
                words = " ".join(action.help.replace("`", "").split()[:4])
                assert words in plain, f"{' '.join(path)}: help of {names[0]} missing"


# ------------------------------------------------------------------------ the browser


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def served(site):
    """The built site on a free port of 127.0.0.1, by Python's own HTTP server."""
    handler = functools.partial(QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


SHOTS = {"": "docs-home", "concepts/": "docs-concepts", "cli/": "docs-cli"}
SHOTS["api/losses/"] = "docs-api-losses"

IMAGES_STATE = """() => Array.from(document.images).map(
    im => [im.getAttribute('src'), im.complete, im.naturalWidth])"""


def test_every_page_loads_in_chromium(site, served, browser):
    all_pages = pages(site)
    assert "concepts/" in all_pages and "cli/" in all_pages and "api/losses/" in all_pages
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    foreign: list[str] = []
    failed: list[str] = []

    def route(r) -> None:
        if r.request.url.startswith(served + "/"):
            r.continue_()
        else:
            foreign.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: m.type == "error" and errors.append(f"{page.url}: {m.text}"))
    page.on("pageerror", lambda e: errors.append(f"{page.url}: {e}"))
    page.on("response", lambda r: r.status >= 400 and failed.append(f"{r.status} {r.url}"))
    try:
        # the navigation reaches every page, and every link in it is a page
        page.goto(served + "/", wait_until="load")
        hrefs = page.eval_on_selector_all(
            ".md-nav--primary a.md-nav__link[href]", "els => els.map(e => e.href)"
        )
        nav = {h.split("#")[0].removeprefix(served + "/") for h in hrefs}
        assert nav == set(all_pages), (sorted(nav ^ set(all_pages)), "nav and pages differ")

        images_seen = {}
        for rel in all_pages:
            page.goto(f"{served}/{rel}", wait_until="load")
            page.wait_for_load_state("networkidle")
            assert page.locator("article h1").count() >= 1, f"{rel}: no title"
            images = page.evaluate(IMAGES_STATE)
            broken = [src for src, complete, width in images if not (complete and width > 0)]
            assert broken == [], f"{rel}: images that did not load: {broken}"
            images_seen[rel] = len(images)
            if rel in SHOTS:
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / f"{SHOTS[rel]}.png"), full_page=True)

        # every <img> of every page was seen by the browser; the figure pages have theirs
        for rel, seen in images_seen.items():
            assert seen == (site / rel / "index.html").read_text().count("<img "), rel
        # the hook's figures, and the figures stored in docs/figures/collapse and
        # docs/figures/conditional (each shown once on the Concepts page)
        stored = [ROOT / "docs" / "figures" / name for name in ("collapse", "conditional")]
        kept = sum(len(list(folder.glob("*.png"))) for folder in stored)
        assert images_seen["concepts/"] == len(NAMES) + kept
        assert images_seen[""] >= 6 and images_seen["results/"] >= 2

        # search works offline: its index and worker are local
        page.goto(served + "/", wait_until="load")
        page.locator("label.md-search__icon, .md-search__input").first.click()
        page.wait_for_function(  # the worker has loaded search/search_index.json
            "() => document.querySelector('.md-search-result__meta')"
            ".textContent.includes('Type to start')",
            timeout=30_000,
        )
        page.locator(".md-search__input").press_sequentially("reparameterisation", delay=20)
        page.wait_for_selector(".md-search-result__item", timeout=30_000)
        found = page.eval_on_selector_all(".md-search-result__link", "els => els.map(e => e.href)")
        assert any("/concepts/" in h for h in found), found
    finally:
        context.close()
    assert errors == [], errors
    assert failed == [], failed
    assert foreign == [], foreign


def test_concepts_page_says_how_its_figures_were_made(site):
    html = (site / "concepts" / "index.html").read_text()
    assert "concept-run" not in html
    match = re.search(
        r"How these figures were made:.*?VAE ([\d.]+) untrained, ([\d.]+) after", html
    )
    assert match, "the run description is missing"
    untrained, trained = map(float, match.groups())
    assert untrained > 400 and trained < 0.5 * untrained  # training really happened
    for name in ("vae-bubbles.png", "reparameterisation.png", "ae-samples.png"):
        assert f"figures/concepts/{name}" in html
        assert (site / "concepts" / ".." / "figures" / "concepts" / name).resolve().is_file()
