"""One HTML page per run (``vaelab report``) and one per pair of runs (``vaelab compare``).

The pages assemble figures from :mod:`vaelab.viz.figures` (the PNGs stay in RUN/figures/)
and embed every image as a ``data:`` URI, so a page is one self-contained file: it works
when copied elsewhere, offline, and loads nothing from the network.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vaelab.checksums import read_json
from vaelab.errors import DamagedFileError, VaelabError
from vaelab.fileio import atomic_write_text, make_writable_dir
from vaelab.run import Run, load_run
from vaelab.viz import analysis, dimension_figures, figures, live, plots

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1280px; padding: 1.5rem; color: #222; background: #fff; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd;
     padding-bottom: .2rem; margin-top: 2rem; font-size: 1.25rem; }
p.note, p.sub { color: #555; font-size: .92rem; margin: .3rem 0 .8rem; }
figure { margin: .8rem 0; } figcaption { color: #555; font-size: .88rem; }
img { max-width: 100%; height: auto; }
table { border-collapse: collapse; font-size: .88rem; margin: .5rem 0; }
td, th { border: 1px solid #ddd; padding: .2rem .55rem; text-align: left; }
th { background: #f4f4f4; } td.k, th.k { font-family: monospace; } td.n { text-align: right; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 1.2rem; align-items: start; }
nav a { margin-right: .8rem; font-size: .9rem; }
"""
STYLE += live.STYLE


def data_uri(path: Path) -> str:
    mime = {".png": "image/png", ".gif": "image/gif", ".svg": "image/svg+xml"}[path.suffix]
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def img(path: Path, alt: str, caption: str = "") -> str:
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{data_uri(path)}" alt="{html.escape(alt)}">{cap}</figure>'


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] = ()) -> str:
    def cell(v: Any, i: int, tag: str = "td") -> str:
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        cls = ' class="k"' if i == 0 else ' class="n"' if number else ""
        if isinstance(v, float):
            v = f"{v:.4g}" if abs(v) < 1e4 else f"{v:.6g}"
        return f"<{tag}{cls}>{html.escape('—' if v is None else str(v))}</{tag}>"

    head = "<tr>" + "".join(cell(h, i, "th") for i, h in enumerate(header)) + "</tr>"
    body = "".join("<tr>" + "".join(cell(v, i) for i, v in enumerate(r)) + "</tr>" for r in rows)
    return f"<table>{head if header else ''}{body}</table>"


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts/lists -> [(dotted key, scalar)], for showing eval.json as a table."""
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in flatten(v, f"{prefix}{k}.")]
    if isinstance(obj, list) and len(obj) <= 32 and all(not isinstance(v, dict) for v in obj):
        return [
            (prefix[:-1], ", ".join(f"{v:.4g}" if isinstance(v, float) else str(v) for v in obj))
        ]
    if isinstance(obj, list):
        return [kv for i, v in enumerate(obj) for kv in flatten(v, f"{prefix}{i}.")]
    return [(prefix[:-1], obj)]


def page(title: str, sections: Sequence[tuple[str, str, str]], subtitle: str = "") -> str:
    """A whole HTML document: ``sections`` are (anchor id, heading, inner HTML)."""
    nav = "".join(f'<a href="#{sid}">{html.escape(h)}</a>' for sid, h, _ in sections)
    body = "".join(
        f'<section id="{sid}"><h2>{html.escape(h)}</h2>{inner}</section>'
        for sid, h, inner in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{html.escape(title)}</h1><p class="sub">{html.escape(subtitle)}</p>'
        f"<nav>{nav}</nav>{body}</body></html>\n"
    )


def _settings(run: Run) -> list[tuple[str, Any]]:
    meta = run.meta
    rows = [(k, v) for k, v in run.config.to_dict().items()]
    rows += [
        ("model_config", json.dumps(meta.get("model_config", {}))),
        (
            "data",
            f"{meta.get('data', {}).get('name', '')} sha256 "
            f"{str(meta.get('data', {}).get('sha256', ''))[:16]}…",
        ),
        ("epochs done", run.epoch),
        ("vaelab / torch", f"{meta.get('vaelab_version')} / {meta.get('torch_version')}"),
        ("trained on", meta.get("device")),
        ("started", meta.get("started")),
    ]
    return rows


def _metrics_table(run: Run) -> str:
    keys = [
        "train_loss",
        "train_recon",
        "train_kl",
        "test_loss",
        "test_recon",
        "test_kl",
        "test_active_units",
        "test_mutual_information",
        "train_seconds",
    ]
    newer = ("test_active_units", "test_mutual_information")  # absent from older runs
    keys = [k for k in keys if k not in newer or any(k in m for m in run.metrics)]
    rows = [[m.get("epoch")] + [m.get(k) for k in keys] for m in run.metrics]
    return table(rows, ["epoch", *keys])


def _out_file(path: Path) -> Path:
    try:
        make_writable_dir(path.parent)
    except OSError as exc:
        raise VaelabError(
            f"cannot write {path}: {exc.strerror or exc}; pass a writable --out"
        ) from None
    return path


CAPTIONS = {
    "losses": "Per-sample losses in nats; test losses use z = mu (the lecture's eval mode).",
    "reconstructions": "Top row: test inputs; below: their means z = mu decoded, per epoch.",
    "samples": "z ~ N(0, I) decoded: digits everywhere once training has filled the space.",
    "samples-conditional": "z ~ N(0, I) decoded with each label: one row per class, the same "
    "z in every row of a column. The label should pick the class, z the style.",
    "relabel": "Each column: a test image (top), encoded with its own label; below, its "
    "posterior mean decoded with every label. What stays along a column is what z carries "
    "(slant, width, stroke); what changes is what the label carries (the class).",
    "interpolation": "Each pair: the decoded linear path between the two posterior means, "
    "and under it the same endpoints blended pixel by pixel.",
    "embeddings": "The cached test means at each cached epoch in 2-D, coloured by class.",
    "kl": "Dimensions with (almost) no KL are unused: their posterior equals the prior.",
    "latent-use": "Posterior collapse shows here: a dimension whose KL stays near 0 is not "
    "used, and I(x; z), the part of the KL that tells test images apart, falls towards 0 "
    "when every image gets the same posterior. I(x; z) is estimated over the first 1000 "
    "test images (vaelab.evaluation.bounds.mutual_information), so it is at most "
    "log 1000 = 6.91 nats: a latent that separates every image reaches that ceiling.",
    "traversal": "Each row moves one latent dimension around the prior mean (the middle "
    "column) with the others fixed, the most used dimension first; inactive rows barely "
    "change.",
    "bubbles": "Each ellipse spans mu ± sigma of one test image's posterior; dashed: the "
    "prior's 1 and 2 sigma circles. Below: the same across epochs, animated.",
    "manifold": "Decoded latent points on a grid; neighbouring cells decode alike.",
}


def _report_figures(run: Run, method: str, n_embed: int, log: Callable[[str], None]):
    """(anchor, heading, [figure paths]) for every figure the run can show, in page order."""
    fig, cached, d = figures.output_dir(run, None), run.cached_epochs(), run.model.latent_dim
    data = run.dataset() if cached else None
    n = min(n_embed, _n_test(run)) if cached else 0
    stochastic = run.model.stochastic
    per_dim_kl = stochastic and run.model.closed_form_kl  # a learned prior's KL has none
    plan = [
        ("losses", "Losses", True, lambda: figures.make_losses(run, fig)),
        (
            "reconstructions",
            "Reconstructions per epoch",
            bool(cached),
            lambda: figures.make_reconstructions(run, fig, data=data),
        ),
        ("samples", "Prior samples", True, lambda: figures.make_samples(run, fig)),
        (
            "relabel",
            "What the label and z carry",
            run.model.conditional,
            lambda: figures.make_relabel(run, out=fig, data=data),
        ),
        (
            "interpolation",
            "Interpolation",
            bool(cached),
            lambda: figures.make_interpolations(
                run, out=fig, data=data, filename="interpolation-default.png"
            ),
        ),
        (
            "embeddings",
            "Embeddings",
            bool(cached),
            lambda: figures.make_embeddings(run, None, method, n, fig),
        ),
        (
            "kl",
            "KL per latent dimension",
            bool(cached) and per_dim_kl,
            lambda: dimension_figures.make_kl_per_dim(run, fig),
        ),
        (
            "latent-use",
            "Is the latent used?",
            bool(cached) and per_dim_kl,
            lambda: dimension_figures.make_latent_use(run, fig),
        ),
        ("traversal", "Traversals", True, lambda: dimension_figures.make_traversal(run, out=fig)),
        (
            "bubbles",
            "Bubbles",
            bool(cached) and d >= 2,
            lambda: figures.make_bubbles(run, None, 1000, fig),
        ),
        ("manifold", "Latent manifold", d >= 2, lambda: figures.make_manifold(run, 20, fig)),
    ]
    for anchor, heading, wanted, make in plan:
        if wanted:
            t = time.perf_counter()
            made = make()
            log(f"  {anchor}: {time.perf_counter() - t:.1f} s")
            yield anchor, heading, made if isinstance(made, list) else [made]


def build_report(
    run_path: Path | str,
    out: Path | str | None = None,
    method: str = "tsne",
    n_embed: int = 1000,
    log: Callable[[str], None] = lambda _m: None,
) -> Path:
    """Write RUN/report.html (or ``out``): every figure of the lecture for one run, the
    settings, the metrics and eval.json. The figures are (re)made into RUN/figures/."""
    run = load_run(run_path)
    target = _out_file(Path(out) if out is not None else run.paths.report)
    t0 = time.perf_counter()
    sections = [("settings", "Settings", table(_settings(run), ["setting", "value"]))]
    for anchor, heading, paths in _report_figures(run, method, n_embed, log):
        inner = "".join(img(p, f"{heading} ({p.name})") for p in paths)
        caption = CAPTIONS[anchor]
        if anchor == "samples" and run.model.conditional:
            caption = CAPTIONS["samples-conditional"]
        caption = _prior_caption(run, anchor, caption)
        inner += f'<p class="note">{html.escape(caption)}</p>'
        if anchor == "losses":
            inner += _metrics_table(run)
        sections.append((anchor, heading, inner))
        if anchor == "samples":  # the decoder to play with, right after its samples
            sections.append(("live", "Walk the latent space (live)", live.section(run)))
        if anchor == "relabel":
            sections.append(_label_accuracy_section(run))
    eval_path = run.paths.eval
    if eval_path.is_file():
        try:
            rows = flatten(read_json(eval_path)[0])
            inner = table(rows, ["quantity", "value"])
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            inner = f"<p>eval.json is not valid JSON: {html.escape(str(exc))}</p>"
        except DamagedFileError as exc:
            inner = f"<p>eval.json is {html.escape(exc.reason)}: run vaelab evaluate again</p>"
        sections.append(("eval", "Evaluation (eval.json)", inner))
    c = run.config
    subtitle = (
        f"{c.model} on {c.dataset}, d = {c.latent_dim}, {run.epoch} epochs · written "
        f"{datetime.datetime.now():%Y-%m-%d %H:%M} in {time.perf_counter() - t0:.1f} s"
    )
    atomic_write_text(target, page(f"vaelab report: {run.path.name}", sections, subtitle))
    return target


def _prior_caption(run: Run, anchor: str, caption: str) -> str:
    """``caption`` for a run with a learned prior: its samples are z ~ p(z), and the
    bubbles show the prior's samples, not N(0, I)'s circles."""
    prior = run.model.learned_prior
    if prior is None:
        return caption
    if anchor == "samples":
        return caption.replace("z ~ N(0, I)", f"z ~ {analysis.prior_label(run.model)}")
    if anchor == "bubbles":
        return caption.replace(
            "dashed: the prior's 1 and 2 sigma circles",
            f"grey dots: samples of the prior, {prior.describe()}",
        )
    if anchor == "manifold":
        return caption + " The grid spans the 5%..95% quantiles of the learned prior's samples."
    return caption


def _label_accuracy_section(run: Run) -> tuple[str, str, str]:
    """A conditional run's label accuracy from eval.json: overall and per label."""
    note = (
        "How often the dataset's classifier reads label k in a prior sample decoded with "
        "label k (N samples z ~ p(z), every label in turn; <code>vaelab evaluate</code>)."
    )
    try:
        acc = json.loads(run.paths.eval.read_text()).get("label_accuracy")
    except (OSError, ValueError, AttributeError):
        acc = None
    if not isinstance(acc, dict) or not acc.get("per_label"):
        command = f"vaelab evaluate {html.escape(str(run.path))}"
        inner = f'<p class="note">{note} No score yet: run <code>{command}</code>.</p>'
        return ("label-accuracy", "Label accuracy", inner)
    worst = acc["worst_label"]
    headline = (
        f"<p><b>{100 * acc['overall']:.1f}%</b> of the samples are read as the label they "
        f"were decoded with; the worst label, {figures.label_name(run, worst)}, "
        f"{100 * acc['worst']:.1f}%.</p>"
    )
    rows = [
        (figures.label_name(run, k), None if v is None else round(100 * v, 1), n)
        for k, (v, n) in enumerate(zip(acc["per_label"], acc["n_per_label"]))
    ]
    inner = headline + table(rows, ["label", "read as the label (%)", "samples"])
    return ("label-accuracy", "Label accuracy", inner + f'<p class="note">{note}</p>')


def _n_test(run: Run) -> int:
    return len(run.latents(run.cached_epochs()[-1])["mu"])


def _side_by_side(
    runs: Sequence[Run], names: Sequence[str], folder: Path, method: str, n_embed: int
) -> list[tuple[str, str, str]]:
    """Samples, interpolations (the same test pairs) and last-epoch embeddings per run,
    as sections with one column per run."""
    cols: dict[str, list[str]] = {"samples": [], "interpolation": [], "embeddings": []}
    labelled = [r for r in runs if r.cached_epochs()]
    pairs = (
        analysis.default_pairs(labelled[0].latents(labelled[0].cached_epochs()[-1])["labels"])
        if labelled
        else None
    )
    for i, (run, name) in enumerate(zip(runs, names)):
        out = folder / str(i)
        cols["samples"].append(img(figures.make_samples(run, out), f"samples {name}", name))
        if run.cached_epochs():
            inter = figures.make_interpolations(run, pairs, out=out)
            cols["interpolation"].append(img(inter, f"interpolation {name}", name))
            last, n = run.cached_epochs()[-1], min(n_embed, _n_test(run))
            emb = figures.make_embeddings(run, [last], method, n, out)
            cols["embeddings"].append(img(emb, f"embedding {name}", name))
    headings = {
        "samples": "Prior samples z ~ p(z), each run's own prior",
        "interpolation": "Interpolation (latent path over pixel blend)",
        "embeddings": "Embedding of the test means, last cached epoch",
    }
    return [
        (key, headings[key], '<div class="cols">' + "".join(items) + "</div>")
        for key, items in cols.items()
        if items
    ]


def build_compare(
    path_a: Path | str,
    path_b: Path | str,
    out: Path | str | None = None,
    method: str = "tsne",
    n_embed: int = 1000,
) -> Path:
    """Two runs side by side (e.g. the VAE against a plain AE trained with the same
    settings): settings, losses, prior samples, interpolations between the same test
    images and the last cached epoch's embedding. Written to ``out`` (RUN_A/compare.html)."""
    a, b = load_run(path_a), load_run(path_b)
    target = _out_file(Path(out) if out is not None else a.path / "compare.html")
    names = [f"{r.path.name} ({figures.model_kind(r)})" for r in (a, b)]
    if names[0] == names[1]:
        names = [f"A: {names[0]}", f"B: {names[1]}"]
    cfg_a, cfg_b = a.config.to_dict(), b.config.to_dict()
    rows = [
        (k + (" ≠" if cfg_a.get(k) != cfg_b.get(k) else ""), cfg_a.get(k), cfg_b.get(k))
        for k in cfg_a
    ]
    sections = [("settings", "Settings", table(rows, ["setting", *names]))]
    with tempfile.TemporaryDirectory(prefix="vaelab-compare-") as tmp:
        losses = plots.plot_losses(
            [(names[0], a.metrics), (names[1], b.metrics)],
            "Losses per epoch (solid: first run, dashed: second; test: z = mu)",
            Path(tmp) / "losses.png",
        )
        sections.append(("losses", "Losses", img(losses, "losses of both runs")))
        sections += _side_by_side([a, b], names, Path(tmp), method, n_embed)
    title = f"vaelab compare: {a.path.name} vs {b.path.name}"
    atomic_write_text(target, page(title, sections, " · ".join(names)))
    return target
