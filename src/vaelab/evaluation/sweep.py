"""Experiments: one run per value of a training setting, each evaluated, in one table.

``sweep("beta", [0.5, 1, 2, 4], config, "runs/beta")`` loads the data once, trains
``runs/beta/beta-0.5`` ... with ``vaelab.training.loop.train(data=...)``, evaluates each run
(``vaelab.evaluation.evaluate.evaluate_run``) and writes ``sweep.json``, ``sweep.md`` and
``rate-distortion.png``: reconstruction (distortion) against KL (rate), the trade-off that
beta moves along (Alemi et al. 2018, "Fixing a Broken ELBO",
https://arxiv.org/abs/1711.00464; Higgins et al. 2017 for the beta-VAE).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vaelab.config import TrainConfig
from vaelab.data.datasets import load_dataset
from vaelab.errors import VaelabError
from vaelab.fileio import atomic_write_json, atomic_write_text
from vaelab.run import RunPaths, load_run, read_metrics

COLUMNS = (
    # (heading, key in the row, format)
    ("recon", "recon", "{:.2f}"),
    ("KL", "kl", "{:.2f}"),
    ("-ELBO", "neg_elbo", "{:.2f}"),
    ("NLL (IWAE)", "nll_iwae", "{:.2f}"),
    ("± se", "nll_iwae_se", "{:.2f}"),
    ("active units", "active_units", "{}"),
    ("I(x; z)", "mutual_information", "{:.2f}"),
    ("sample confidence", "mean_confidence", "{:.3f}"),
    ("confident >= 0.9", "confident_fraction", "{:.3f}"),
    ("class entropy", "class_entropy", "{:.3f}"),
    ("Fréchet", "frechet_distance", "{:.2f}"),
)


def run_name(param: str, value: Any) -> str:
    """The run folder of one value, e.g. ``beta-0.5`` or ``latent-dim-2``."""
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{param.replace('_', '-')}-{text}"


def _finished(root: Path, config: TrainConfig) -> bool:
    """True when ``root`` already holds this exact run, trained to the end."""
    paths = RunPaths(root)
    if not paths.config.is_file():
        return False
    try:  # through TrainConfig, so settings an older version saved compare as today's
        meta = json.loads(paths.config.read_text())
        saved = TrainConfig.from_dict(meta["config"])
    except (ValueError, KeyError, TypeError, VaelabError):
        return False
    if config.epochs is None:  # --time-budget: the run says when it has spent it
        return saved == config and "finished" in meta
    done = [r["epoch"] for r in read_metrics(paths.metrics)]
    return saved == config and bool(done) and max(done) >= config.epochs


def sweep(
    param: str,
    values: Sequence[Any],
    config: TrainConfig | None = None,
    out: Path | str = "runs/sweep",
    iw_samples: int = 5000,
    eval_batch_size: int = 100,
    n_samples: int = 10000,
    scores: bool = True,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and evaluate one run per value of the TrainConfig field ``param``.

    Returns one row per value (the evaluation, flattened, plus ``param`` and the value);
    a run already finished in ``out`` with the same settings is evaluated, not retrained.
    """
    from vaelab.evaluation.evaluate import check_arguments, evaluate_run
    from vaelab.training.loop import train

    config = config or TrainConfig()
    if param not in {f.name for f in dataclasses.fields(TrainConfig)}:
        raise VaelabError(f"cannot sweep {param!r}: not a training setting")
    if not values:
        raise VaelabError(f"give at least one value of --{param.replace('_', '-')}")
    check_arguments(iw_samples, eval_batch_size, n_samples, None, "test")  # before training
    derived = {}
    if param == "latent_dim" and config.hidden == config.latent_dim**2:
        derived["hidden"] = None  # keep the lecture's hidden = d^2 for every d
    configs = [dataclasses.replace(config, **derived, **{param: v}) for v in values]
    out = Path(out)
    data = load_dataset(config.dataset, config.data_dir)  # once, shared by every run
    rows = []
    for value, cfg in zip(values, configs):
        root = out / run_name(param, value)
        if _finished(root, cfg):
            log(f"{root}: already trained, evaluating it")
        else:
            log(f"training {root} ({param} = {value})")
            train(cfg, out=root, data=data, progress=progress, log=lambda _m: None)
        result = evaluate_run(
            load_run(root),
            iw_samples=iw_samples,
            batch_size=eval_batch_size,
            n_samples=n_samples,
            scores=scores,
            data=data,
            device=cfg.device,
            seed=seed,
            progress=progress,
            log=log,
        )
        rows.append(flatten(result, param, value))
        log(f"  {format_row(rows[-1])}")
    atomic_write_json(
        out / "sweep.json", {"param": param, "config": config.to_dict(), "rows": rows}
    )
    atomic_write_text(out / "sweep.md", markdown_table(rows, param, config))
    plot_sweep(rows, param, out / "rate-distortion.png")
    log(f"wrote {out / 'sweep.md'}, {out / 'sweep.json'} and {out / 'rate-distortion.png'}")
    return rows


def flatten(result: dict[str, Any], param: str, value: Any) -> dict[str, Any]:
    """One table row: the evaluation with its sample scores lifted to the top level."""
    row = {param: value, **{k: v for k, v in result.items() if k != "sample_scores"}}
    scores = result.get("sample_scores") or {}
    for key in ("mean_confidence", "confident_fraction", "class_entropy", "frechet_distance"):
        row[key] = scores.get(key)
    return row


def _cell(value: Any, fmt: str) -> str:
    return "—" if value is None else fmt.format(value)


def format_row(row: dict[str, Any]) -> str:
    return ", ".join(f"{h} {_cell(row.get(k), f)}" for h, k, f in COLUMNS[:7])


def _mi_ceiling(rows: list[dict[str, Any]]) -> str:
    top = next(
        (r.get("mutual_information_max") for r in rows if r.get("mutual_information_max")), None
    )
    return "no posterior" if top is None else f"log N = {top:.2f}"


def markdown_table(rows: list[dict[str, Any]], param: str, config: TrainConfig) -> str:
    """The sweep as a markdown table, with the settings shared by every row."""
    head = [param, *(h for h, _, _ in COLUMNS)]
    defaults = TrainConfig().to_dict()
    shared = ", ".join(
        f"{k}={v}" for k, v in config.to_dict().items() if k != param and v != defaults.get(k)
    )
    note = rows[0]["note"].split("; trained with")[0] if rows else ""
    lines = [
        f"# Sweep over {param}",
        "",
        f"Shared settings (the rest are vaelab's defaults): {shared or 'none'}.",
        "",
        f"Per test image, in nats; NLL with K = {rows[0]['iw_samples'] if rows else '?'} "
        f"importance samples; -ELBO is the beta = 1 bound for every row; I(x; z) is the "
        "mutual information under the aggregate posterior, at most log N for N test images "
        f"({_mi_ceiling(rows)}). {note}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for row in rows:
        cells = [f"{row[param]:g}" if isinstance(row[param], float) else str(row[param])]
        cells += [_cell(row.get(k), f) for _, k, f in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_sweep(rows: list[dict[str, Any]], param: str, path: Path | str) -> Path:
    """Three panels: rate-distortion (recon against KL, one labelled point per run); the
    bounds against the swept value; active units and sample confidence against it."""
    from vaelab.viz import plots

    fig = plots.new_figure((14, 4))
    ax, ax2, ax3 = fig.subplots(1, 3)
    pts = [(r["kl"], r["recon"], r[param]) for r in rows if r.get("kl") is not None]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-")
        for kl, rec, v in pts:
            ax.annotate(f"{param}={v:g}", (kl, rec), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("rate: KL(q(z|x) || p(z)) [nats]")
    ax.set_ylabel("distortion: -E_q log p(x|z) [nats]")
    ax.set_title("Rate-distortion")
    xs = [r[param] for r in rows]

    def series(axis, key, style, label, scale=1.0, **kw):
        ys = [r.get(key) for r in rows]
        if any(y is not None for y in ys):
            axis.plot(
                xs, [float("nan") if y is None else scale * y for y in ys], style, label=label, **kw
            )

    series(ax2, "neg_elbo", "s--", "-ELBO (beta = 1)")
    series(ax2, "nll_iwae", "o-", "NLL, IWAE estimate")
    ax2.set_ylabel("nats per test image")
    ax2.set_title("Bounds on -log p(x)")
    series(ax3, "active_units", "^-", "active units", color="tab:green")
    series(ax3, "mutual_information", "s-", "I(x; z) [nats]", color="tab:orange")
    ax3.set_ylabel("active units; I(x; z) in nats")
    top = max(max(r.get("latent_dim") or 1, r.get("mutual_information_max") or 0) for r in rows)
    ax3.set_ylim(-0.5, top + 0.5)
    ax3.set_title("Latent use and sample quality")
    right = ax3.twinx()
    series(right, "mean_confidence", "d:", "sample confidence", color="tab:red")
    series(right, "confident_fraction", "v:", "fraction >= 0.9", color="tab:purple")
    right.set_ylabel("classifier score of prior samples")
    right.set_ylim(0, 1.02)
    handles, labels = [], []
    for axis in (ax3, right):
        h, lab = axis.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    for axis in (ax2, ax3):
        axis.set_xlabel(param)
        if all(isinstance(x, (int, float)) and x > 0 for x in xs) and max(xs) > 4 * min(xs):
            axis.set_xscale("log")
            axis.minorticks_off()
        axis.set_xticks(xs, [f"{x:g}" for x in xs])
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8)
    ax3.legend(handles, labels, fontsize=8)
    fig.tight_layout()
    return plots.save_figure(fig, path)
