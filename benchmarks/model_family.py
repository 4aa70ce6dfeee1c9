"""The model family against the lecture's MLP VAE on dynamically binarised MNIST.

    .venv/bin/python benchmarks/model_family.py [--epochs 10] [--root runs/model-family]
        [--n-test 500] [--k 5000] [--only vae,conv-vae,iwae]

Trains each variant with ``vaelab train`` (the exact command is printed and kept; an
existing finished run is reused), then estimates the test negative log-likelihood with
the importance-weighted bound at K samples (Burda et al. 2015, eq. 8):

    nll_iwae = -mean_x [logsumexp_k log w_k - log K],
    log w_k = log p(x|z_k) + log p(z_k) - log q(z_k|x),  z_k ~ q(z|x),

on the first ``--n-test`` images of the fixed binarised test set, with the same noise
for every model (``vaelab.evaluation.bounds.iwae_estimate``). Also prints the -ELBO (mean
recon over the K samples + closed-form KL), the paired difference to the MLP VAE with its
standard error, seconds per training epoch and minutes of evaluation.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from machine import print_machine

from vaelab.evaluation.bounds import iwae_estimate
from vaelab.run import RunPaths, load_run, read_metrics

VARIANTS = {  # name -> vaelab train flags (besides --binarize dynamic --epochs E)
    "vae": [],
    "conv-vae": ["--model", "conv-vae"],
    "iwae": ["--objective", "iwae", "--iw-k", "5"],
}


def train_variant(name: str, root: Path, epochs: int) -> tuple[Path, str]:
    out = root / name
    cmd = ["vaelab", "train", "--binarize", "dynamic", "--epochs", str(epochs), "--seed", "1"]
    cmd += [*VARIANTS[name], "--device", "cpu", "--quiet", "--out", str(out)]
    rows = read_metrics(RunPaths(out).metrics)
    if not rows or rows[-1]["epoch"] < epochs:
        if RunPaths(out).last.exists():
            cmd = ["vaelab", "train", "--resume", str(out), "--epochs", str(epochs), "--quiet"]
        print("$", " ".join(cmd), flush=True)
        subprocess.run([sys.executable, "-m", "vaelab", *cmd[1:]], check=True)
    return out, " ".join(cmd)


@torch.no_grad()
def iwae_nll(run, x: torch.Tensor, K: int) -> torch.Tensor:
    """Per-image -L_K and -ELBO, (2, N), in float64."""
    t = iwae_estimate(run.model, x, K, generator=torch.Generator().manual_seed(0))
    return torch.stack([t["nll_iwae"], t["recon"] + t["kl"]])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--root", type=Path, default=Path("runs/model-family"))
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--k", type=int, default=5000)
    p.add_argument("--only", default=",".join(VARIANTS))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    print_machine()
    torch.set_num_threads(args.threads)
    names = args.only.split(",")
    results = {}
    for name in names:
        root, cmd = train_variant(name, args.root, args.epochs)
        run = load_run(root)
        x = run.dataset().x_test[: args.n_test]
        t0 = time.perf_counter()
        nll = iwae_nll(run, x, args.k)
        minutes = (time.perf_counter() - t0) / 60
        rows = read_metrics(run.paths.metrics)
        epoch_s = [r["train_seconds"] for r in rows if r["train_seconds"]]
        results[name] = {
            "command": cmd,
            "nll_iwae": nll[0].mean().item(),
            "elbo": nll[1].mean().item(),
            "test_loss_z_mu": rows[-1]["test_loss"],
            "seconds_per_epoch": sum(epoch_s) / len(epoch_s),
            "train_minutes": sum(epoch_s) / 60,
            "eval_minutes": minutes,
            "per_image": nll[0].tolist(),
        }
        print(json.dumps({k: v for k, v in results[name].items() if k != "per_image"}), flush=True)
    base = torch.tensor(results[names[0]]["per_image"])
    cpu = platform.processor() or platform.machine()
    print(f"\n{args.epochs} epochs, K={args.k}, first {args.n_test} test images, {cpu}")
    print("| model | nll_iwae | vs " + names[0] + " (± s.e.) | -ELBO | test loss z=mu | s/epoch |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        diff = torch.tensor(r["per_image"]) - base
        se = diff.std().item() / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        print(
            f"| {name} | {r['nll_iwae']:.2f} | {diff.mean().item():+.2f} ± {se:.2f} "
            f"| {r['elbo']:.2f} | {r['test_loss_z_mu']:.2f} | {r['seconds_per_epoch']:.1f} |"
        )
    (args.root / "model_family.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
