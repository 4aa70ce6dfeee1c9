"""MkDocs hook: the Concepts page's figures, made by vaelab itself when the site is built.

Two small runs with the library API (a VAE and its plain-AE twin, both with a 2-D latent,
on the first 20,000 MNIST training images; SETTINGS), then vaelab's own figure functions
(:mod:`vaelab.viz.figures`, :mod:`vaelab.viz.plots`) draw the pictures the page explains, and the
page's ``<!-- concept-run -->`` line becomes a sentence saying how they were made. The
figures are cached by a key (this file, vaelab's source, torch's version), so a rebuild
with nothing changed costs nothing; the first build trains for 10-20 s on 2 CPU cores.

Cache folder: ``$VAELAB_DOCS_CACHE`` if set, else ``build/docs-cache/`` beside
mkdocs.yml (ignored by git, removed by ``make clean``); only the current key is kept.
The figures enter the site as ``figures/concepts/<name>`` without touching docs/.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

FOLDER = "figures/concepts"  # where the page finds them, relative to docs/
# the lecture's MLP with a 2-D latent so that it can be drawn; a larger learning rate than
# the lecture's 1e-3 and a fifth of MNIST keep the two trainings to a few seconds
SETTINGS = dict(
    dataset="mnist",
    limit=20_000,
    latent_dim=2,
    hidden=400,
    lr=2e-3,
    epochs=4,
    batch_size=100,
    seed=1,
    device="cpu",
    embed_epochs=[0, 1, 4],
)
MARKER = "<!-- concept-run -->"  # replaced on the Concepts page by what the runs were
# every figure the Concepts page shows; the build fails if one is missing
NAMES = (
    "vae-reconstructions.png",
    "vae-losses.png",
    "vae-bubbles.png",
    "vae-bubbles.gif",
    "ae-bubbles.png",
    "reparameterisation.png",
    "kl-terms.png",
    "vae-samples.png",
    "ae-samples.png",
    "vae-manifold.png",
    "vae-interpolation.png",
    "ae-interpolation.png",
)


def cache_key() -> str:
    """SHA-256 over this file, the source of the vaelab that is imported (but its CLI and
    server) and the torch version: any change that could change a figure makes new ones."""
    import torch

    import vaelab

    digest = hashlib.sha256(Path(__file__).read_bytes())
    digest.update(torch.__version__.encode())
    src = Path(vaelab.__file__).resolve().parent
    for path in sorted(src.rglob("*.py")):
        rel = path.relative_to(src).as_posix()
        if rel.startswith(("cli/", "server/")):
            continue
        digest.update(rel.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _reparameterisation_figure(run, data, path: Path) -> Path:
    """Three test images' posteriors (mu +/- sigma, vaelab.viz.latent_plots.draw_bubbles) with 300
    draws z = mu + eps * sigma each (vaelab.losses.reparameterize)."""
    import numpy as np
    import torch
    from matplotlib.patches import Ellipse

    from vaelab.losses import reparameterize
    from vaelab.viz import analysis, latent_plots, plots
    from vaelab.viz.figures import class_names

    labels = data.y_test.numpy()
    picks = [int(np.flatnonzero(labels == digit)[0]) for digit in (0, 1, 7)]
    with torch.no_grad():
        mu, logvar = run.model.encode(data.x_test[picks])  # (3, 2) each
        eps = torch.randn((300, *mu.shape), generator=torch.Generator().manual_seed(0))
        z = reparameterize(mu, logvar, eps).numpy()  # (300, 3, 2)
    latents = {"mu": mu.numpy(), "logvar": logvar.numpy(), "labels": labels[picks]}
    bubbles = analysis.bubbles(latents, [0, 1], len(picks))
    colours = plots.class_colours(labels, class_names(run))
    reach = float(np.abs(z).max()) * 1.1
    fig = plots.new_figure((5.2, 4.6), layout="constrained")  # no pyplot, no backend switch
    ax = fig.subplots()
    cmap, norm = colours[:2]
    for k, digit in enumerate(latents["labels"]):
        ax.scatter(z[:, k, 0], z[:, k, 1], s=3, color=cmap(norm(digit)), alpha=0.5, linewidths=0)
    latent_plots.draw_bubbles(ax, bubbles, [0, 1], colours, max(3.0, reach), "", stochastic=True)
    for k, digit in enumerate(latents["labels"]):
        width, height = 2 * bubbles["sigma"][k]
        ax.add_patch(Ellipse(bubbles["mu"][k], width, height, fill=False, ec="k", lw=1.2, zorder=5))
        ax.annotate(
            f"a test '{digit}'",
            bubbles["mu"][k],
            xytext=(8, 8),
            textcoords="offset points",
            fontsize=9,
            weight="bold",
        )
    ax.set_title(
        "z = mu + eps * sigma, 300 draws of eps ~ N(0, I) per image;\n"
        "black ellipses: mu ± sigma; dashed circles: the prior's 1 and 2 sigma",
        fontsize=9,
    )
    return plots.save_figure(fig, path)


def _kl_terms_figure(path: Path) -> Path:
    """One latent dimension's KL term, computed by vaelab.losses.gaussian_kl_per_dim,
    against the variance (mu = 0) and against the mean (variance 1)."""
    import torch

    from vaelab.losses import gaussian_kl_per_dim
    from vaelab.viz import plots

    var = torch.linspace(0.02, 4.0, 400, dtype=torch.float64)
    kl_var = gaussian_kl_per_dim(torch.zeros_like(var)[:, None], var.log()[:, None])[:, 0]
    mu = torch.linspace(-3.0, 3.0, 400, dtype=torch.float64)
    kl_mu = gaussian_kl_per_dim(mu[:, None], torch.zeros_like(mu)[:, None])[:, 0]
    fig = plots.new_figure((8.4, 3.2), layout="constrained")
    a, b = fig.subplots(1, 2)
    a.plot(var, kl_var, color="C0")
    a.axvline(1.0, color="0.5", ls="--", lw=0.8)
    a.set_xlabel("posterior variance V = sigma²  (mu = 0)")
    a.set_ylabel("KL term, nats")
    a.set_title("0.5 (V − log V − 1): least at V = 1", fontsize=10)
    a.set_ylim(0, 2.2)
    b.plot(mu, kl_mu, color="C1")
    b.set_xlabel("posterior mean mu  (V = 1)")
    b.set_title("0.5 mu²: a spring towards the origin", fontsize=10)
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.suptitle("KL(N(mu, V) ‖ N(0, 1)) of one latent dimension", fontsize=11)
    return plots.save_figure(fig, path)


def generate(out: Path) -> dict[str, float]:
    """Train the two runs in a temporary folder and write every figure of NAMES to
    ``out``; returns the seconds each stage took."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small matrices: a second thread only waits (docs/benchmarks.md)
    try:
        return _generate(out, times={})
    finally:
        torch.set_num_threads(threads)


def _generate(out: Path, times: dict[str, float]) -> dict[str, float]:
    from vaelab.config import TrainConfig
    from vaelab.data.datasets import load_dataset
    from vaelab.run import load_run
    from vaelab.training.loop import train
    from vaelab.viz import figures

    t0 = time.perf_counter()
    data = load_dataset("mnist")
    times["load MNIST"] = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    quiet = dict(data=data, progress=False, log=lambda _m: None)
    with tempfile.TemporaryDirectory(prefix="vaelab-docs-") as tmp:
        t0 = time.perf_counter()
        vae = load_run(train(TrainConfig(model="vae", **SETTINGS), out=Path(tmp) / "vae", **quiet))
        ae = load_run(train(TrainConfig(model="ae", **SETTINGS), out=Path(tmp) / "ae", **quiet))
        times["train VAE + AE"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="vaelab-docs-figs-") as scratch:
            made = {
                "vae-reconstructions.png": figures.make_reconstructions(vae, scratch, n=12),
                "vae-losses.png": figures.make_losses(vae, scratch),
                "vae-samples.png": figures.make_samples(vae, Path(scratch) / "vae", n=48),
                "ae-samples.png": figures.make_samples(ae, Path(scratch) / "ae", n=48),
                "vae-manifold.png": figures.make_manifold(vae, grid=15, out=scratch),
                "vae-interpolation.png": figures.make_interpolations(
                    vae, digits=(3, 8), out=Path(scratch) / "vae", data=data
                ),
                "ae-interpolation.png": figures.make_interpolations(
                    ae, digits=(3, 8), out=Path(scratch) / "ae", data=data
                ),
            }
            vae_png, vae_gif = figures.make_bubbles(vae, n=1000, out=Path(scratch) / "vae")
            ae_png, _ = figures.make_bubbles(
                ae, epochs=[ae.epoch], n=1000, out=Path(scratch) / "ae"
            )
            made.update({"vae-bubbles.png": vae_png, "vae-bubbles.gif": vae_gif})
            made["ae-bubbles.png"] = ae_png
            for name, path in made.items():
                shutil.copyfile(path, out / name)
        _reparameterisation_figure(vae, data, out / "reparameterisation.png")
        _kl_terms_figure(out / "kl-terms.png")
        times["figures"] = time.perf_counter() - t0
        summary = {
            "settings": SETTINGS,
            "vae_metrics": vae.metrics,
            "ae_metrics": ae.metrics,
            "seconds": times,
        }
    missing = [n for n in NAMES if not (out / n).is_file()]
    if missing:
        raise RuntimeError(f"concept figures not written: {', '.join(missing)}")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return times


def figures_folder(repo: Path, log=print) -> Path:
    """The cached folder of figures for the current source, generated if missing."""
    root = Path(os.environ.get("VAELAB_DOCS_CACHE") or repo / "build" / "docs-cache")
    folder = root / f"concepts-{cache_key()}"
    if all((folder / n).is_file() for n in (*NAMES, "summary.json")):
        return folder
    partial = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    t0 = time.perf_counter()
    times = generate(partial)
    shutil.rmtree(folder, ignore_errors=True)
    try:
        partial.rename(folder)
    except OSError:  # a build running at the same time renamed its own copy first
        shutil.rmtree(partial, ignore_errors=True)
        if not (folder / "summary.json").is_file():
            raise
    for old in root.glob("concepts-*"):  # figures of older source: never used again
        if old != folder and ".tmp-" not in old.name:
            shutil.rmtree(old, ignore_errors=True)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in times.items())
    log(f"vaelab concept figures generated in {time.perf_counter() - t0:.1f} s ({stages})")
    return folder


def describe(summary: dict) -> str:
    """The paragraph that says how the figures on the page were made, from summary.json."""
    s = summary["settings"]
    vae, ae = summary["vae_metrics"], summary["ae_metrics"]
    seconds = sum(summary["seconds"].values())
    return (
        f"*How these figures were made:* when this site was built, `vaelab.training.loop` trained the "
        f"lecture's MLP VAE with a {s['latent_dim']}-D latent (hidden {s['hidden']}) and its "
        f"plain-autoencoder twin on the first {s['limit']:,} MNIST training images for "
        f"{s['epochs']} epochs each (batch {s['batch_size']}, Adam lr {s['lr']:g}, seed "
        f"{s['seed']}, CPU), then `vaelab.viz.figures` and `vaelab.viz.plots` drew them; "
        f"{seconds:.0f} s in all. Test loss per image (z = mu): VAE {vae[0]['test_loss']:.1f} "
        f"untrained, {vae[-1]['test_loss']:.1f} after epoch {vae[-1]['epoch']} (reconstruction "
        f"{vae[-1]['test_recon']:.1f} + KL {vae[-1]['test_kl']:.1f}); plain AE "
        f"{ae[-1]['test_loss']:.1f}. The code is `docs/hooks/concept_figures.py`."
    )


# ----------------------------------------------------------------------- the mkdocs hooks

_folder: Path | None = None


def on_files(files, config):
    import logging

    from mkdocs.structure.files import File

    global _folder
    logger = logging.getLogger("mkdocs.hooks.concept_figures")
    repo = Path(config.config_file_path).resolve().parent
    _folder = figures_folder(repo, log=logger.info)
    for name in NAMES:
        files.append(File.generated(config, f"{FOLDER}/{name}", abs_src_path=str(_folder / name)))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != "concepts.md":
        return markdown
    from mkdocs.exceptions import PluginError

    if MARKER not in markdown:
        raise PluginError(f"concepts.md lost its {MARKER} line (where the run is described)")
    summary = json.loads((_folder / "summary.json").read_text())
    return markdown.replace(MARKER, describe(summary))
