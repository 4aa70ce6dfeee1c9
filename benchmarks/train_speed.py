"""Training speed of the lecture's VAE (784-400-20): vaelab against the well-known data path.

    .venv/bin/python benchmarks/train_speed.py [--epochs 2] [--rounds 2] [--write-docs]

In one process, round by round, each variant trains a fresh model for the same epochs at
the same batch size (128) on MNIST, the variants' epochs in turn, each right after an
epoch of the reference (the speed-up is the median of those adjacent pairs):

- ``reference``: the data path of the PyTorch examples' VAE (written here, faithful to
  it): a per-item Dataset that turns each uint8 image into a PIL image and then a float
  tensor, a shuffling DataLoader, separate fc21/fc22 heads, BCE on sigmoid outputs, and
  ``loss.item()`` every step;
- ``naive``: the same model and loss with the dataset in memory and randperm batches;
- ``vaelab fp32`` / ``vaelab bf16``: ``vaelab.training.loop.train_epoch`` (in-memory batches,
  BCE from logits, fused Adam called directly, ``--precision bf16``); ``--compile`` adds
  torch.compile (compiled before the timed epochs). Further rows take one thing away
  (torch's default Adam, torch's fused ``Adam.step``, one thread).

It prints the CPU model, the measured matmul peak (fp32 and bf16), seconds per epoch
(median), the ratio to the reference, the achieved GFLOP/s as a fraction of the fp32
peak, and every variant's test loss (z = mu, the lecture's) after the same epochs. Then
scaling tables (batch, latent and hidden size, dataset size) with a plot, and the
lecture's 10-epoch run timed end to end as a user starts it (``vaelab train``).
Results go to a JSON file; ``--write-docs`` puts the tables into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os

# As the vaelab command does before torch loads OpenMP (vaelab.cli.OPENMP_SPIN), so that
# every variant here runs with the threads that `vaelab train` gets.
os.environ.setdefault("GOMP_SPINCOUNT", "1000")
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from machine import print_machine
from reference_example import Trainer, run_naive, run_reference
from torch import Tensor

from vaelab.config import TrainConfig
from vaelab.data.datasets import load_dataset
from vaelab.models import build_model
from vaelab.training.epoch_end import evaluate_loss
from vaelab.training.loop import train_epoch
from vaelab.training.optim import make_optimizer
from vaelab.training.step import TrainStep

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- train_speed:begin -->", "<!-- train_speed:end -->"


def epoch_gflop(n: int, D: int = 784, h: int = 400, d: int = 20) -> float:
    """Training FLOPs of one epoch: forward + backward ~ 3 x forward, 2 FLOPs per
    multiply-add of the four weight matrices (D*h, h*2d, d*h, h*D)."""
    return 3 * 2 * n * (D * h + h * 2 * d + d * h + h * D) / 1e9


def run_vaelab(x: Tensor, x_test: Tensor, config: TrainConfig, optimizer=None) -> Trainer:
    """``vaelab.training.loop.train_epoch`` with the trainer's optimiser and step; with
    --compile the step is compiled (full and last batch) before the weights are reset."""
    torch.manual_seed(config.seed)
    model = build_model(
        "vae", input_shape=(1, 28, 28), latent_dim=config.latent_dim, hidden=config.hidden
    )
    make = optimizer or (lambda m: make_optimizer(m, config.lr))
    step = TrainStep(model, make(model), config, x.device)
    if config.compile:
        initial = copy.deepcopy(model.state_dict())
        warm_up = x[: 20 * config.batch_size + len(x) % config.batch_size]
        train_epoch(step, warm_up, config, 1)
        model.load_state_dict(initial)  # in place: the compiled step stays valid
        torch.manual_seed(config.seed)
        step.optimizer = make(model)  # fresh moments for the timed epochs
    done = [0]

    def epoch() -> None:
        done[0] += 1
        train_epoch(step, x, config, done[0])

    return epoch, lambda: evaluate_loss(model, x_test, config)[0]["test_loss"]


class Timed:
    """One variant's training, an epoch at a time, on a random stream of its own, so that
    interleaving variants changes none of them."""

    def __init__(self, make: Callable[[], Trainer]) -> None:
        saved = torch.random.get_rng_state()
        self.epoch, self.test_loss = make()
        self.rng = torch.random.get_rng_state()
        torch.random.set_rng_state(saved)

    def train_epoch(self) -> float:
        saved = torch.random.get_rng_state()
        torch.random.set_rng_state(self.rng)
        t = time.perf_counter()
        self.epoch()
        seconds = time.perf_counter() - t
        self.rng = torch.random.get_rng_state()
        torch.random.set_rng_state(saved)
        return seconds


def one_thread(make: Callable[[], Trainer]) -> Callable[[], Trainer]:
    """The trainer of ``make`` with torch on one thread (intra-op) while it trains."""

    def wrapped() -> Trainer:
        epoch, test_loss = make()

        def single() -> None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                epoch()
            finally:
                torch.set_num_threads(threads)

        return single, test_loss

    return wrapped


REFERENCE = "reference (PIL + DataLoader)"


def compare(data, args) -> list[dict]:
    """The main table. Each round trains every variant from scratch (seed = round) for
    ``args.epochs`` epochs, epoch by epoch in turn, and times a reference epoch right
    before each variant's epoch: the speed-up is the median of those adjacent pairs, since
    these machines drift by 10-40% within minutes."""
    x = data.x_train.flatten(1).contiguous()
    x_test = data.x_test.flatten(1).contiguous()
    x_u8 = (data.x_train * 255).round().to(torch.uint8).view(-1, 28, 28).numpy()
    B, E = args.batch, args.epochs
    lr = TrainConfig().lr

    def vaelab(s: int, optimizer=None, **settings) -> Callable[[], Trainer]:
        config = TrainConfig(batch_size=B, seed=s, **settings)
        return lambda: run_vaelab(x, x_test, config, optimizer)

    variants: dict[str, Callable[[int], Callable[[], Trainer]]] = {
        "naive in-memory loop": lambda s: lambda: run_naive(x, x_test, B, s),
        "vaelab fp32": lambda s: vaelab(s),
        "vaelab fp32, default Adam": lambda s: vaelab(
            s, lambda m: torch.optim.Adam(m.parameters(), lr=lr)
        ),
        "vaelab fp32, torch's fused Adam.step": lambda s: vaelab(
            s, lambda m: torch.optim.Adam(m.parameters(), lr=lr, fused=True)
        ),
        "vaelab fp32, 1 thread": lambda s: one_thread(vaelab(s)),
        "vaelab bf16": lambda s: vaelab(s, precision="bf16"),
    }
    if args.compile:
        for p in ("fp32", "bf16"):
            variants[f"vaelab {p} + compile"] = lambda s, p=p: vaelab(s, precision=p, compile=True)
    names = [REFERENCE, *variants]
    results = {k: {"times": [], "ratios": [], "losses": []} for k in names}
    for r in range(args.rounds):
        seed = 1 + r
        trainers: dict[str, Timed] = {}
        for name, make in list(variants.items()):
            try:
                trainers[name] = Timed(make(seed))
            except Exception as exc:  # torch.compile needs a C++ compiler on CPU
                if "compile" not in name:
                    raise
                print(f"  {name}: skipped ({type(exc).__name__}: {str(exc).splitlines()[0]})")
                del variants[name], results[name]
                names.remove(name)
        new_reference = lambda seed=seed: Timed(lambda: run_reference(x_u8, x_test, B, seed))
        reference, ref_epochs = new_reference(), 0
        for _ in range(E):
            for name, trainer in trainers.items():
                if ref_epochs == E:  # a fresh reference model every E epochs, same seed
                    results[REFERENCE]["losses"].append(reference.test_loss())
                    reference = new_reference()
                    ref_epochs = 0
                t_ref = reference.train_epoch()
                ref_epochs += 1
                t = trainer.train_epoch()
                results[REFERENCE]["times"].append(t_ref)
                results[name]["times"].append(t)
                results[name]["ratios"].append(t_ref / t)
                print(f"  round {r + 1}: {name}: {t:.2f} s (reference {t_ref:.2f} s)", flush=True)
        for name, trainer in trainers.items():
            results[name]["losses"].append(trainer.test_loss())
        if ref_epochs == E:
            results[REFERENCE]["losses"].append(reference.test_loss())
    results[REFERENCE]["ratios"] = [1.0]
    ref_loss = statistics.mean(results[REFERENCE]["losses"])
    gflop = epoch_gflop(len(x))
    rows = []
    for name in names:
        res = results[name]
        sec = statistics.median(res["times"])
        loss = statistics.mean(res["losses"])
        ratios = res["ratios"]
        rows.append(
            {
                "variant": name,
                "s_per_epoch": sec,
                "speedup_vs_reference": statistics.median(ratios),
                "speedup_range": [min(ratios), max(ratios)],
                "gflops": gflop / sec,
                "test_loss": loss,
                "test_loss_vs_reference": loss / ref_loss - 1,
            }
        )
    return rows


def scaling(data, args) -> dict[str, list[dict]]:
    """Seconds per epoch of vaelab fp32 as one size changes, the others at the lecture's."""
    x_all = data.x_train.flatten(1).contiguous()
    grids = {
        "batch size": ("batch_size", [64, 128, 256, 512, 1024, 4096]),
        "latent size (hidden 400)": ("latent_dim", [2, 8, 20, 64, 256]),
        "hidden size": ("hidden", [100, 200, 400, 1000, 2000]),
        "training images": ("limit", [10_000, 20_000, 40_000, 60_000]),
    }
    out: dict[str, list[dict]] = {}
    for title, (field, values) in grids.items():
        out[title] = []
        for v in values:
            settings = {"batch_size": 256, "latent_dim": 20, "hidden": 400, field: v}
            n = settings.pop("limit", len(x_all))
            x = x_all[:n]
            config = TrainConfig(**settings)
            torch.manual_seed(0)
            model = build_model(
                "vae", input_shape=(1, 28, 28), latent_dim=config.latent_dim, hidden=config.hidden
            )
            step = TrainStep(model, make_optimizer(model, config.lr), config, x.device)
            train_epoch(step, x[: 20 * config.batch_size], config, 1)  # warm-up
            t = time.perf_counter()
            train_epoch(step, x, config, 1)
            sec = time.perf_counter() - t
            gflop = epoch_gflop(n, h=config.hidden, d=config.latent_dim)
            out[title].append({"value": v, "s_per_epoch": sec, "gflops": gflop / sec})
            print(f"  {title} = {v}: {sec:.2f} s/epoch, {gflop / sec:.0f} GFLOP/s")
    return out


def vaelab_train(*flags: str) -> tuple[float, list[dict]]:
    """``vaelab train --out RUN --quiet FLAGS`` in a new process, as a user starts it:
    (wall seconds from process start to finish, the run's metrics rows)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "vaelab", "train", "--out", str(run), "--quiet", *flags]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=dict(os.environ))
        seconds = time.perf_counter() - t
        return seconds, [json.loads(line) for line in (run / "metrics.jsonl").open()]


def end_to_end(args) -> list[dict]:
    """The lecture's run (10 epochs, batch 256) end to end, figures included, no report."""
    rows = []
    for precision in ("fp32", "bf16"):
        sec, metrics = vaelab_train("--precision", precision)
        train_s = sum(r["train_seconds"] or 0 for r in metrics)
        rows.append(
            {
                "precision": precision,
                "wall_s": sec,
                "train_s": train_s,
                "test_loss_epoch_10": metrics[-1]["test_loss"],
            }
        )
        print(f"  lecture run, {precision}: {sec:.1f} s end to end ({train_s:.1f} s training)")
    return rows


def processes(args) -> list[dict]:
    """One process against ``vaelab train --nproc 2`` (DDP over gloo), the lecture's
    model and batch (256, global), 3 epochs: seconds per training epoch (median)."""
    rows = []
    for nproc in (1, 2):
        _, metrics = vaelab_train("--epochs", "3", "--nproc", str(nproc))
        sec = statistics.median(r["train_seconds"] for r in metrics[1:])
        loss = metrics[-1]["test_loss"]
        rows.append({"processes": nproc, "s_per_epoch": sec, "test_loss": loss})
        print(f"  {nproc} process(es): {sec:.2f} s/epoch, test loss {loss:.2f}")
    return rows


def plot_scaling(scales: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(scales), figsize=(4 * len(scales), 3.2))
    for ax, (title, rows) in zip(axes, scales.items()):
        ax.plot([r["value"] for r in rows], [r["s_per_epoch"] for r in rows], "o-")
        if "images" not in title:  # sizes that grow by factors; the dataset grows linearly
            ax.set_xscale("log")
        ax.set_xlabel(title)
        ax.set_ylabel("s / epoch")
        ax.grid(alpha=0.3)
    fig.suptitle("vaelab fp32: one MNIST training epoch (others at 784-400-20, batch 256)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"Measured {result['date']} with `make bench` (benchmarks/train_speed.py): "
        f"{m['cpu']}, {m['threads']} torch threads, torch {m['torch']}; matmul peak "
        f"{m['fp32_gflops']:.0f} GFLOP/s fp32 and {m['bf16_gflops']:.0f} GFLOP/s bf16 "
        f"(1024³, best of 1 s); load average {m['load_before']} before the run. "
        f"Batch {result['batch']}, {result['epochs']} epoch(s) per variant and round, "
        f"{result['rounds']} round(s), the variants' epochs in turn; median seconds per "
        "epoch; the speed-up is the median, over the variant's epochs, of a reference epoch "
        "timed just before it over the variant's epoch (the range in brackets); test loss "
        "(z = μ) after the same epochs, mean over rounds.",
        "",
        "| variant | s / epoch | vs reference | GFLOP/s | of its peak | test loss | Δ loss |",
        "|---|---|---|---|---|---|---|",
    ]

    def peak(variant: str) -> float:  # the matmul peak of the variant's precision
        return m["bf16_gflops"] if "bf16" in variant else m["fp32_gflops"]

    for r in result["compare"]:
        lines.append(
            f"| {r['variant']} | {r['s_per_epoch']:.2f} | {r['speedup_vs_reference']:.2f}x "
            f"({r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}) "
            f"| {r['gflops']:.0f} | {r['gflops'] / peak(r['variant']):.0%} "
            f"| {r['test_loss']:.2f} "
            f"| {r['test_loss_vs_reference']:+.1%} |"
        )
    if result.get("end_to_end"):
        lines += ["", "The lecture's 10-epoch run (batch 256), `vaelab train` end to end:", ""]
        lines += ["| precision | wall s (process start to finish) | training s | test loss |"]
        lines += ["|---|---|---|---|"]
        for r in result["end_to_end"]:
            lines.append(
                f"| {r['precision']} | {r['wall_s']:.1f} | {r['train_s']:.1f} "
                f"| {r['test_loss_epoch_10']:.2f} |"
            )
    if result.get("processes"):
        lines += [
            "",
            "Processes (`vaelab train --nproc N`, DDP over gloo, global batch 256, 3 epochs):",
        ]
        lines += [
            "",
            "| processes | s / training epoch | test loss after 3 epochs |",
            "|---|---|---|",
        ]
        for r in result["processes"]:
            lines.append(f"| {r['processes']} | {r['s_per_epoch']:.2f} | {r['test_loss']:.2f} |")
    if result.get("scaling"):
        lines += ["", "Scaling (vaelab fp32, one epoch; the other sizes at 784-400-20, batch 256):"]
        for title, rows in result["scaling"].items():
            lines += ["", f"| {title} | " + " | ".join(str(r["value"]) for r in rows) + " |"]
            lines += ["|---|" + "---|" * len(rows)]
            lines += ["| s / epoch | " + " | ".join(f"{r['s_per_epoch']:.2f}" for r in rows) + " |"]
            lines += ["| GFLOP/s | " + " | ".join(f"{r['gflops']:.0f}" for r in rows) + " |"]
        lines += ["", "![Epoch time against each size](figures/train-scaling.png)"]
    return "\n".join(lines)


def write_docs(text: str) -> None:
    doc = DOCS.read_text()
    if BEGIN in doc:
        head, rest = doc.split(BEGIN, 1)
        doc = head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1]
    else:
        doc += f"\n## Training speed\n\n{BEGIN}\n{text}\n{END}\n"
    DOCS.write_text(doc)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="epochs per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--no-end-to-end", action="store_true")
    p.add_argument("--no-processes", action="store_true")
    p.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "train_speed.json"
    )
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    args = p.parse_args()
    machine = print_machine()
    data = load_dataset("mnist")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "batch": args.batch,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "compare": compare(data, args),
    }
    if not args.no_end_to_end:
        result["end_to_end"] = end_to_end(args)
    if not args.no_processes:
        result["processes"] = processes(args)
    if not args.no_scaling:
        result["scaling"] = scaling(data, args)
        plot_scaling(result["scaling"], ROOT / "docs" / "figures" / "train-scaling.png")
    text = markdown(result)
    print(text)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main()
