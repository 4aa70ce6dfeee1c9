"""Test NLL against minutes of training: presets under a wall-clock budget, then scored.

    .venv/bin/python benchmarks/nll_per_minute.py [--presets fast-nll,lecture,burda-vae]
        [--minutes 5,15,30,60] [--threads 2] [--k 5000] [--root runs/nll-per-minute]
        [--out benchmarks/results/nll_per_minute.jsonl] [--figure docs/figures/nll-per-minute.png]
        [--train-flags "--prior vamp --pseudo-inputs 500"] [--draw-only]

Each (preset, minutes) pair is one ``vaelab train --preset NAME --time-budget MINUTES``
run (``lecture`` is the lecture's model and settings on the same dynamically binarised
MNIST: ``--binarize dynamic`` and nothing else), so every learning-rate schedule is laid
out over its own budget, then ``vaelab evaluate`` with K importance samples on the full
test set. A row per run goes to ``--out`` (JSON lines: the preset, the budget, the epochs
and steps it did, the seconds, the NLL and its standard error, the CPU and its measured
matmul peak); a finished run in ``--root`` is scored again, not retrained. ``--figure``
draws NLL against minutes from every row in ``--out``. ``--taskset CPUS`` pins the runs
(e.g. ``--taskset 1 --threads 1``: one core of the machine, the other left to other work).
``--train-flags`` adds flags to every ``vaelab train`` (they win over the preset's); a row
records them, and the figure draws such rows as their own line.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_model, matmul_peak

from vaelab.training.cpu import available_cores

ROOT = Path(__file__).resolve().parents[1]
VAELAB = [sys.executable, "-m", "vaelab"]
LECTURE = "lecture"  # not a preset: the lecture's settings on binarised MNIST


def train_command(
    preset: str, minutes: float, out: Path, threads: str, flags: str = ""
) -> list[str]:
    settings = ["--binarize", "dynamic"] if preset == LECTURE else ["--preset", preset]
    return [
        *VAELAB, "train", *settings, *shlex.split(flags), "--time-budget", str(minutes),
        "--out", str(out), "--threads", threads, "--quiet",
    ]  # fmt: skip


def recipe(row: dict) -> str:
    """A row's recipe as the figure names it: the row's own ``recipe`` where it has one (a
    row trained before its preset changed says what it ran), else the preset and the flags
    added to it."""
    if row.get("recipe"):
        return row["recipe"]
    flags = row.get("train_flags")
    return f"{row['preset']} {flags}" if flags else row["preset"]


def cores_used(taskset: str | None) -> int:
    """The cores a run may use: those of ``taskset`` ("0", "0,1", "0-3") or this process's."""
    if not taskset:
        return available_cores()
    count = 0
    for part in taskset.split(","):
        first, _, last = part.partition("-")
        count += int(last or first) - int(first) + 1
    return count


def run_one(preset: str, minutes: float, args: argparse.Namespace) -> dict:
    tag = "-".join(a.lstrip("-") for a in shlex.split(args.train_flags))
    out = Path(args.root) / "-".join(filter(None, [preset, tag, f"{minutes:g}min"]))
    pin = ["taskset", "-c", args.taskset] if args.taskset else []
    started = time.perf_counter()
    if not (out / "checkpoints" / "last.pt").exists():
        subprocess.run(
            [*pin, *train_command(preset, minutes, out, args.threads, args.train_flags)],
            check=True,
            cwd=ROOT,
        )
    trained = time.perf_counter() - started
    eval_started = time.perf_counter()
    subprocess.run(
        [*pin, *VAELAB, "evaluate", str(out), "--iw-samples", str(args.k), "--no-sample-scores"],
        check=True,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    evaluated = time.perf_counter() - eval_started
    meta = json.loads((out / "config.json").read_text())
    result = json.loads((out / "eval.json").read_text())
    budget = meta.get("budget") or {}
    return {
        "preset": preset,
        **({"train_flags": args.train_flags} if args.train_flags else {}),
        "recipe": recipe({"preset": preset, "train_flags": args.train_flags}),
        "preset_settings": (meta.get("preset") or {}).get("settings"),
        "minutes": minutes,
        "epochs": budget.get("epochs"),
        "steps": budget.get("steps"),
        "train_seconds": budget.get("seconds"),
        "wall_seconds_this_call": round(trained, 1),
        "eval_seconds": round(evaluated, 1),
        "nll": result.get("nll_iwae"),
        "nll_se": result.get("nll_iwae_se"),
        "k": args.k,
        "threads": args.threads,
        "taskset": args.taskset,
        "cores": cores_used(args.taskset),
        "cpu": cpu_model(),
        "load_average": os.getloadavg(),
        "run": str(out),
    }


TOP_SPAN = 25.0  # nats above the lowest row that the figure's axis shows


def draw(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(row: dict) -> str:  # one line per preset and core count
        cores = row["cores"]
        return f"{recipe(row)} ({'one core' if cores == 1 else f'{cores} cores'})"

    # A row far above the rest (a recipe that needs hours, at 5 minutes) would squeeze the
    # others into a sliver: the axis stops TOP_SPAN nats above the lowest NLL and a row
    # beyond it is drawn at the edge with its value.
    top = min(r["nll"] for r in rows) + TOP_SPAN
    fig, ax = plt.subplots(figsize=(9, 5))
    off_scale: dict[float, int] = {}  # labels already at each budget: stack, not overlap
    # a recipe keeps its colour on one core and on two; one core is dashed, hollow marks
    recipes = sorted({recipe(r) for r in rows})
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(recipes)}
    for name in sorted({series(r) for r in rows}):
        mine = sorted((r for r in rows if series(r) == name), key=lambda r: r["minutes"])
        one_core = mine[0]["cores"] == 1
        line = ax.errorbar(
            [r["minutes"] for r in mine],
            [min(r["nll"], top) for r in mine],
            yerr=[(r["nll_se"] or 0) if r["nll"] <= top else 0 for r in mine],
            marker="o",
            capsize=3,
            color=colours[recipe(mine[0])],
            ls="--" if one_core else "-",
            mfc="white" if one_core else None,
            label=name,
        )
        for r in (r for r in mine if r["nll"] > top):
            color = line.lines[0].get_color()
            ax.plot(r["minutes"], top, marker="^", ms=9, color=color, clip_on=False)
            below = off_scale[r["minutes"]] = off_scale.get(r["minutes"], -1) + 1
            ax.annotate(
                f"{r['nll']:.1f} (off scale)", (r["minutes"], top), xytext=(8, -4 - 10 * below),
                textcoords="offset points", fontsize=7, color=color, va="top",
            )  # fmt: skip
    ax.axhline(86.76, color="grey", ls="--", lw=1, label="Burda et al. VAE (3280 epochs)")
    ax.axhline(84.78, color="grey", ls=":", lw=1, label="Burda et al. IWAE k=50")
    ax.set_ylim(top=top + 0.5)  # after every line: the bottom is autoscaled from them all
    minutes = sorted({r["minutes"] for r in rows})
    ax.set_xscale("log")
    ax.set_xticks(minutes, [f"{m:g}" for m in minutes])
    ax.minorticks_off()
    ax.set_xlim(minutes[0] / 1.3, minutes[-1] * 1.3)
    ax.set_xlabel("training budget (minutes, wall clock)")
    ax.set_ylabel("test NLL, K = 5000 (nats)")
    ax.set_title("Dynamically binarised MNIST: NLL per minute of CPU training")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", default=f"fast-nll,{LECTURE}")
    p.add_argument("--minutes", default="5,15,30,60")
    p.add_argument("--threads", default="auto")
    p.add_argument("--taskset", default=None, metavar="CPUS")
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--root", default="runs/nll-per-minute")
    p.add_argument("--out", default="benchmarks/results/nll_per_minute.jsonl")
    p.add_argument("--figure", default=None)
    p.add_argument("--train-flags", default="", help="more flags for every vaelab train")
    p.add_argument("--draw-only", action="store_true", help="redraw --figure from --out")
    args = p.parse_args()
    out = Path(args.out)
    if args.draw_only:
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        return draw(rows, Path(args.figure or "docs/figures/nll-per-minute.png"))
    print(f"cpu: {cpu_model()}, {os.cpu_count()} cores")
    import torch

    print(f"fp32 matmul peak: {matmul_peak(torch.float32):.0f} GFLOP/s")
    out.parent.mkdir(parents=True, exist_ok=True)
    for preset in args.presets.split(","):
        for minutes in (float(m) for m in args.minutes.split(",")):
            row = run_one(preset, minutes, args)
            print(json.dumps(row))
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
    if args.figure:
        rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
        draw(rows, Path(args.figure))


if __name__ == "__main__":
    main()
