"""The GPU benchmark: the lecture's run and the K = 5000 evaluation on one CUDA GPU.

    python3 benchmarks/gpu_bench.py --out DIR [--device cuda] [--epochs 10] [--n-eval 10000]

Each row runs ``vaelab`` as a user starts it, in a new process, and records the wall
time (process start to exit) and the training seconds from metrics.jsonl:

- the lecture's run (784-400-20, batch 256, 10 epochs) plain, ``--compile`` (CUDA graphs
  on one GPU) and ``--precision bf16``;
- ``vaelab evaluate`` with K = 5000 importance samples on the 10,000 test images (no
  sample scores): the likelihood seconds it reports;
- ``--nproc 2`` (DDP over NCCL) where there are two GPUs; on one GPU, where NCCL cannot
  put two ranks, ``--nproc 2 --device cuda`` and its one-line refusal (exit code 2).

Targets (issue 18): the 10 epochs in < 1 s of training on one H200, the evaluation in
< 10 s. Writes DIR/gpu.json and DIR/gpu.md. ``--device cpu --epochs 1 --n-eval 200``
is a dry run of the script itself on a machine without a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TARGETS = {"train_seconds": 1.0, "eval_seconds": 10.0}


def gpu_name() -> str:
    if not torch.cuda.is_available():
        return "none"
    return f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"


def vaelab(*args: str, log: Path) -> tuple[int, float, str]:
    """Run ``python -m vaelab ARGS``: (exit code, wall seconds, output tail)."""
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "vaelab", *args], capture_output=True, text=True)
    wall = time.perf_counter() - t
    with open(log, "a") as f:
        f.write(f"$ vaelab {' '.join(args)}\n{proc.stdout}{proc.stderr}\n")
    return proc.returncode, wall, (proc.stdout + proc.stderr).strip()[-300:]


def train_row(name: str, flags: list[str], args, tmp: Path, log: Path) -> dict:
    out = tmp / name
    cmd = ["train", "--out", str(out), "--device", args.device, "--quiet"]
    code, wall, tail = vaelab(*cmd, "--epochs", str(args.epochs), *flags, log=log)
    row = {"row": name, "command": "vaelab " + " ".join(cmd + flags), "exit": code, "wall_s": wall}
    if code == 0:
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        row["train_s"] = sum(r["train_seconds"] or 0 for r in rows)
        row["test_loss"] = rows[-1]["test_loss"]
    else:
        row["error"] = tail
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--n-eval", type=int, default=10000)
    p.add_argument("--k", type=int, default=5000)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "gpu-bench.log"
    info = {
        "gpu": gpu_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device": args.device,
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }
    print(json.dumps(info), flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, flags in (
            ("lecture", []),
            ("compile", ["--compile"]),
            ("bf16", ["--precision", "bf16"]),
        ):
            rows.append(train_row(name, flags, args, tmp, log))
            print(json.dumps(rows[-1]), flush=True)
        if rows[0]["exit"] == 0:
            cmd = [
                "evaluate",
                str(tmp / "lecture"),
                "--iw-samples",
                str(args.k),
                "--no-sample-scores",
            ]
            cmd += ["--device", args.device, "--n-images", str(args.n_eval), "--quiet"]
            code, wall, tail = vaelab(*cmd, log=log)
            row = {
                "row": f"evaluate K={args.k}",
                "command": "vaelab " + " ".join(cmd),
                "exit": code,
            }
            row["wall_s"] = wall
            if code == 0:
                result = json.loads((tmp / "lecture" / "eval.json").read_text())
                row.update(eval_s=result["seconds_likelihood"], nll_iwae=result["nll_iwae"])
            else:
                row["error"] = tail
            rows.append(row)
            print(json.dumps(row), flush=True)
        if torch.cuda.device_count() >= 2:
            rows.append(train_row("ddp-2", ["--nproc", "2"], args, tmp, log))
        else:  # NCCL cannot put two ranks on one GPU: refused in one line, before any rank
            cmd = ["train", "--nproc", "2", "--device", "cuda", "--out", str(tmp / "ddp-2")]
            code, wall, tail = vaelab(*cmd, "--quiet", log=log)
            rows.append(
                {"row": "ddp-2 on one GPU (refused)", "command": "vaelab " + " ".join(cmd),
                 "exit": code, "expected_exit": 2, "wall_s": wall, "message": tail}
            )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    (args.out / "gpu.json").write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    lines = [
        f"GPU run {info['date']}: {info['gpu']}, torch {info['torch']} (CUDA {info['cuda']})",
        "",
        "| row | exit | wall s | train s | eval s | test loss / NLL |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        loss = r.get("test_loss", r.get("nll_iwae"))
        cells = [r.get("train_s"), r.get("eval_s"), loss]
        text = ["" if v is None else f"{v:.2f}" for v in cells]
        lines.append(f"| {r['row']} | {r['exit']} | {r['wall_s']:.1f} | " + " | ".join(text) + " |")
    lines.append("")
    lines.append(
        f"targets: 10 epochs < {TARGETS['train_seconds']} s training; K = 5000 eval < "
        f"{TARGETS['eval_seconds']} s"
    )
    (args.out / "gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    sys.exit(0 if all(r.get("exit", 0) == r.get("expected_exit", 0) for r in rows) else 1)


if __name__ == "__main__":
    os.environ.setdefault("VAELAB_OFFLINE", "1")
    main()
