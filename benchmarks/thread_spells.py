"""One thread against all of them, block by block, for minutes: does the best count change?

    .venv/bin/python benchmarks/thread_spells.py [--seconds 180] [--steps 60] [--out FILE]

The lecture's training step (784-400-20, batch 128, fp32, vaelab's ``TrainStep``) runs in
blocks of ``--steps`` steps, alternately on one torch thread and on every core, for
``--seconds``. Each line gives the time, the milliseconds per step of both blocks and,
for the block on every core, the CPU each busy thread ran on and its CPU time per wall
second (from /proc/self/task), so a slow block on all cores can be told from threads
sharing a core. A calibration (``vaelab.training.calibrate``) times the same step for
about 1.5 s; this shows whether the machine stays as it found it.

Written for the 2026-12-05 2-core AMD EPYC virtual machine, whose 2-thread steps had spells
of 6.2-6.9 ms among 3.5-3.8 ms ones, while one thread took 5.8-6.1 ms throughout
(docs/benchmarks.md, "Spells"). The OpenMP spin is the environment's (GOMP_SPINCOUNT).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from machine import print_machine

from vaelab.config import TrainConfig
from vaelab.models import build_model
from vaelab.training.cpu import available_cores
from vaelab.training.optim import make_optimizer
from vaelab.training.step import TrainStep


def thread_ticks() -> dict[int, tuple[int, int]]:
    """Each thread of this process: (utime + stime in clock ticks, the CPU it last ran on)."""
    ticks = {}
    for tid in os.listdir("/proc/self/task"):
        fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks[int(tid)] = (int(fields[11]) + int(fields[12]), int(fields[36]))
    return ticks


def busy_threads(before: dict, after: dict, seconds: float) -> list[tuple[int, float]]:
    """(CPU, CPU seconds per wall second) of the threads that worked between two samples."""
    hz = os.sysconf("SC_CLK_TCK")
    used = [(after[t][1], (after[t][0] - before.get(t, (0, 0))[0]) / hz) for t in after]
    return sorted((cpu, round(s / seconds, 2)) for cpu, s in used if s / seconds > 0.05)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=180.0)
    p.add_argument("--steps", type=int, default=60, help="steps per block")
    p.add_argument("--out", type=Path, help="also write one JSON line per pair of blocks")
    args = p.parse_args()
    cores = available_cores()
    torch.set_num_threads(cores)
    print_machine()
    print(f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'libgomp default')}", flush=True)
    torch.manual_seed(0)
    x = (torch.rand(20_000, 784) < 0.2).float() * torch.rand(20_000, 784)
    config = TrainConfig(batch_size=128)
    model = build_model("vae", input_shape=(1, 28, 28), latent_dim=20, hidden=400)
    step = TrainStep(model, make_optimizer(model, config.lr), config, x.device)
    batches = len(x) // config.batch_size
    done = [0]

    def block(threads: int) -> tuple[float, list]:
        torch.set_num_threads(threads)
        step(x[: config.batch_size], 1.0, 1, 0)  # the new team of threads starts here
        before, start = thread_ticks(), time.perf_counter()
        for _ in range(args.steps):
            i = done[0] % batches
            step(x[i * config.batch_size : (i + 1) * config.batch_size], 1.0, 1, i)
            done[0] += 1
        seconds = time.perf_counter() - start
        return seconds / args.steps * 1e3, busy_threads(before, thread_ticks(), seconds)

    rows, end = [], time.monotonic() + args.seconds
    out = args.out.open("w") if args.out else None
    while time.monotonic() < end:
        one, _ = block(1)
        every, busy = block(cores)
        row = {"time": time.strftime("%H:%M:%S"), "ms_1": one, f"ms_{cores}": every, "busy": busy}
        rows.append(row)
        print(f"{row['time']}  1 thread {one:5.2f} ms  {cores} threads {every:5.2f} ms  "
              f"busy (cpu, share) {busy}", flush=True)  # fmt: skip
        if out:
            out.write(json.dumps(row) + "\n")
    if out:
        out.close()
    ones, alls = [r["ms_1"] for r in rows], [r[f"ms_{cores}"] for r in rows]
    faster = sum(a < o for a, o in zip(alls, ones))
    print(f"{len(rows)} pairs of blocks: 1 thread median {statistics.median(ones):.2f} ms "
          f"(range {min(ones):.2f}-{max(ones):.2f}); {cores} threads median "
          f"{statistics.median(alls):.2f} ms (range {min(alls):.2f}-{max(alls):.2f}); "
          f"{cores} threads faster in {faster} of {len(rows)}", file=sys.stdout)  # fmt: skip


if __name__ == "__main__":
    main()
