"""Training speed of the lecture's VAE (784-400-20): vaelab against the well-known data path.

    .venv/bin/python benchmarks/train_speed.py [--epochs 2] [--rounds 3] [--write-docs]

With no flags it ends with the targets of issue 18, PASS or MISS each: vaelab fp32 (the
default ``vaelab train`` step, with the threads and OpenMP spin that ``--threads auto``
chooses here) at least 4x the reference data path and 1.5x the naive in-memory loop, two
``vaelab train`` runs sharing the cores each within 2.5x of a solo epoch, and the step at
70% or more of this machine's fp32 matmul peak on the lecture's shapes.

In one process, round by round, each variant trains a fresh model for the same epochs at
the same batch size (128) on MNIST, the variants' epochs in turn, each right after an
epoch of the reference (the speed-up is the median of those adjacent pairs):

- ``reference``: the data path of the PyTorch examples' VAE (written here, faithful to
  it): a per-item Dataset that turns each uint8 image into a PIL image and then a float
  tensor, a shuffling DataLoader, separate fc21/fc22 heads, BCE on sigmoid outputs, and
  ``loss.item()`` every step;
- ``naive``: the same model and loss with the dataset in memory and randperm batches;
- ``vaelab fp32`` / ``vaelab bf16``: ``vaelab.training.epoch.train_epoch`` (in-memory batches,
  BCE from logits, fused Adam called directly, ``--precision bf16``, timed only on a CPU
  with native bf16); ``--compile`` adds torch.compile (compiled before the timed epochs).
  Further rows take one thing away (torch's default Adam, torch's fused ``Adam.step``,
  one thread).

Every variant runs with the thread count and spin ``vaelab train --batch-size 128`` would
choose now (vaelab.training.threads: from the calibration cache, measured first if there
is none; the line is printed), set before torch loads. It prints the CPU model, the
measured matmul peaks (1024^3 fp32 and bf16; the products of one lecture step at the
batch size, fp32), seconds per epoch (median), the ratio to the reference, GFLOP/s against
the peaks, and every variant's test loss (z = mu, the lecture's) after the same epochs.
Then: two ``vaelab train`` runs started together against one alone, in interleaved rounds
(``--share-rounds``); the lecture's 10-epoch run end to end; ``--nproc 2``; scaling tables
(batch, latent and hidden size, dataset size) with a plot; the targets. Results go to a
JSON file; ``--write-docs`` puts the tables into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vaelab.training.threads import plan_threads, set_spin

ROOT = Path(__file__).resolve().parents[1]
USER_ENV = dict(os.environ)  # what a user's `vaelab train` starts with (no spin set here)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2, help="epochs per variant and round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--share-rounds", type=int, default=2, help="rounds of one run, then two")
    p.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    p.add_argument("--recalibrate", action="store_true", help="measure the threads again")
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument("--no-end-to-end", action="store_true")
    p.add_argument("--no-processes", action="store_true")
    p.add_argument("--no-sharing", action="store_true")
    p.add_argument(
        "--json", type=Path, default=ROOT / "benchmarks" / "results" / "train_speed.json"
    )
    p.add_argument("--write-docs", action="store_true", help="update docs/benchmarks.md")
    return p.parse_args()


if __name__ == "__main__":  # as `vaelab train --batch-size B` does, before torch loads
    ARGS = parse_args()
    PLAN = plan_threads({"batch_size": ARGS.batch}, recalibrate=ARGS.recalibrate)
    set_spin(PLAN)
    print(PLAN.line, flush=True)

import torch  # noqa: E402
from machine import print_machine, step_gflop  # noqa: E402
from reference_example import Trainer, run_naive, run_reference  # noqa: E402
from torch import Tensor  # noqa: E402

from vaelab.config import TrainConfig  # noqa: E402
from vaelab.data.datasets import load_dataset  # noqa: E402
from vaelab.models import build_model  # noqa: E402
from vaelab.training.epoch import train_epoch  # noqa: E402
from vaelab.training.epoch_end import evaluate_loss  # noqa: E402
from vaelab.training.optim import make_optimizer  # noqa: E402
from vaelab.training.step import TrainStep  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- train_speed:begin -->", "<!-- train_speed:end -->"


def epoch_gflop(n: int, h: int = 400, d: int = 20) -> float:
    """GFLOP of one epoch's matrix products over n images: ``step_gflop`` is linear in the
    batch, and the first layer's input gradient is not computed (the images need none),
    so an epoch does 11 of the 12 products a rule of thumb of 3 x forward counts."""
    return step_gflop(1, h=h, d=d) * n


def run_vaelab(x: Tensor, x_test: Tensor, config: TrainConfig, optimizer=None) -> Trainer:
    """``vaelab.training.epoch.train_epoch`` with the trainer's optimiser and step; with
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
    precisions = ("fp32", "bf16") if args.native_bf16 else ("fp32",)
    if not args.native_bf16:  # emulated bf16 takes minutes an epoch
        del variants["vaelab bf16"]
        print("  vaelab bf16: skipped (this CPU has no native bf16)")
    if args.compile:
        for p in precisions:
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
        subprocess.run(cmd, check=True, env=USER_ENV)
        seconds = time.perf_counter() - t
        return seconds, [json.loads(line) for line in (run / "metrics.jsonl").open()]


def end_to_end(args) -> list[dict]:
    """The lecture's run (10 epochs, batch 256) end to end, figures included, no report."""
    rows = []
    for precision in ("fp32", "bf16") if args.native_bf16 else ("fp32",):
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


def epoch_seconds(metrics: list[dict]) -> float:
    """The median training epoch of a run's metrics rows (epoch 0 trains nothing)."""
    return statistics.median(r["train_seconds"] for r in metrics if r["epoch"] > 0)


def sharing(args) -> dict:
    """Two ``vaelab train`` runs started at the same moment against one alone (batch
    ``args.batch``, 3 epochs each, ``--threads auto`` as a user gets it), in interleaved
    rounds: each run's median epoch over the solo epochs' median (rounds pooled)."""
    flags = ["--batch-size", str(args.batch), "--epochs", "3", "--quiet"]
    solo, pair = [], [[], []]
    with tempfile.TemporaryDirectory() as tmp:

        def start(name: str) -> tuple[subprocess.Popen, Path]:
            out = Path(tmp) / name
            cmd = [sys.executable, "-m", "vaelab", "train", "--out", str(out), *flags]
            return subprocess.Popen(cmd, env=USER_ENV), out

        for r in range(args.share_rounds):
            runs = [start(f"solo-{r}")]
            runs[0][0].wait()
            runs += [start(f"a-{r}"), start(f"b-{r}")]
            for proc, _ in runs:
                if proc.wait() != 0:
                    raise SystemExit(f"vaelab train failed ({proc.args})")
            seconds = [epoch_seconds(read_metrics(out)) for _, out in runs]
            solo.append(seconds[0])
            for i in (0, 1):
                pair[i].append(seconds[1 + i])
            print(f"  round {r + 1}: one run {seconds[0]:.2f} s/epoch; two at once "
                  f"{seconds[1]:.2f} and {seconds[2]:.2f} s/epoch")  # fmt: skip
    alone = statistics.median(solo)
    shared = [statistics.median(p) for p in pair]
    return {"solo_s": alone, "shared_s": shared, "ratios": [s / alone for s in shared]}


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


def targets(result: dict) -> list[dict]:
    """Issue 18's targets from the measurements, each with PASS or MISS."""
    rows = {r["variant"]: r for r in result["compare"]}
    fp32 = rows["vaelab fp32"]
    naive = rows["naive in-memory loop"]
    peak = result["machine"]["lecture_fp32_gflops"]
    achieved = step_gflop(1) * 60_000 / fp32["s_per_epoch"]  # the step's products only
    out = [
        ("vaelab fp32 against the reference data path", fp32["speedup_vs_reference"], 4.0,
         ">=", "{:.2f}x"),
        ("vaelab fp32 against the naive in-memory loop",
         fp32["speedup_vs_reference"] / naive["speedup_vs_reference"], 1.5, ">=", "{:.2f}x"),
        ("vaelab fp32 step: share of the matmul peak on the lecture's shapes",
         achieved / peak, 0.70, ">=", "{:.0%}"),
    ]  # fmt: skip
    if result.get("sharing"):
        worst = max(result["sharing"]["ratios"])
        out.append(("two runs sharing the cores: the slower one's epoch / a solo epoch",
                    worst, 2.5, "<=", "{:.2f}x"))  # fmt: skip
    return [
        {
            "target": name,
            "value": value,
            "goal": f"{op} {fmt.format(goal)}",
            "text": fmt.format(value),
            "pass": value >= goal if op == ">=" else value <= goal,
        }
        for name, value, goal, op, fmt in out
    ]


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
    bf16 = f"{m['bf16_gflops']:.0f} GFLOP/s bf16" if m.get("bf16_gflops") else "no native bf16"
    lines = [
        f"Measured {result['date']} with `make bench` (benchmarks/train_speed.py): "
        f"{m['cpu']}, {m['threads']} torch threads (`{result.get('threads', '')}`), torch "
        f"{m['torch']}; matmul peak {m['fp32_gflops']:.0f} GFLOP/s fp32 and {bf16} "
        f"(1024³, best of 1 s), {m['lecture_fp32_gflops']:.0f} GFLOP/s fp32 for the products "
        f"of one lecture step at batch {m['lecture_batch']}; load average "
        f"{m['load_before']} before the run. "
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
        return (m["bf16_gflops"] or float("nan")) if "bf16" in variant else m["fp32_gflops"]

    for r in result["compare"]:
        lines.append(
            f"| {r['variant']} | {r['s_per_epoch']:.2f} | {r['speedup_vs_reference']:.2f}x "
            f"({r['speedup_range'][0]:.2f}-{r['speedup_range'][1]:.2f}) "
            f"| {r['gflops']:.0f} | {r['gflops'] / peak(r['variant']):.0%} "
            f"| {r['test_loss']:.2f} "
            f"| {r['test_loss_vs_reference']:+.1%} |"
        )
    if result.get("sharing"):
        sh = result["sharing"]
        lines += [
            "",
            f"Two `vaelab train` runs started together (batch {result['batch']}, 3 epochs, "
            f"`--threads auto`), {result['share_rounds']} round(s) interleaved with one run "
            f"alone: {sh['shared_s'][0]:.2f} and {sh['shared_s'][1]:.2f} s per epoch against "
            f"{sh['solo_s']:.2f} s alone ({sh['ratios'][0]:.2f}x, {sh['ratios'][1]:.2f}x).",
        ]
    if result.get("targets"):
        lines += ["", "| target (issue 18) | measured | goal | |", "|---|---|---|---|"]
        for t in result["targets"]:
            verdict = "PASS" if t["pass"] else "MISS"
            lines.append(f"| {t['target']} | {t['text']} | {t['goal']} | {verdict} |")
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


def main(args: argparse.Namespace) -> None:
    if PLAN.threads is not None:
        torch.set_num_threads(PLAN.threads)  # as `vaelab train` starts (no governor here)
    machine = print_machine(args.batch)
    args.native_bf16 = machine["native_bf16"]
    data = load_dataset("mnist")
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine,
        "threads": PLAN.line,
        "batch": args.batch,
        "epochs": args.epochs,
        "rounds": args.rounds,
        "share_rounds": args.share_rounds,
        "compare": compare(data, args),
    }
    if not args.no_sharing:
        result["sharing"] = sharing(args)
    if not args.no_end_to_end:
        result["end_to_end"] = end_to_end(args)
    if not args.no_processes:
        result["processes"] = processes(args)
    if not args.no_scaling:
        result["scaling"] = scaling(data, args)
        plot_scaling(result["scaling"], ROOT / "docs" / "figures" / "train-scaling.png")
    result["targets"] = targets(result)
    text = markdown(result)
    print(text)
    print(f"\nCPU: {machine['cpu']}; fp32 matmul peak {machine['fp32_gflops']:.0f} GFLOP/s "
          f"(1024^3), {machine['lecture_fp32_gflops']:.0f} GFLOP/s (the lecture's step "
          f"products, batch {args.batch}); {PLAN.line}")  # fmt: skip
    for t in result["targets"]:
        verdict = "PASS" if t["pass"] else "MISS"
        print(f"{verdict}  {t['target']}: {t['text']} (goal {t['goal']})")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    if args.write_docs:
        write_docs(text)


if __name__ == "__main__":
    main(ARGS)
