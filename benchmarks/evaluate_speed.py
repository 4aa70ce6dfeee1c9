"""How the IWAE evaluation scales: time against K and against the number of images.

    .venv/bin/python benchmarks/evaluate_speed.py RUN [--threads 1] [--grid 100x500,...]

Times ``vaelab.evaluation.bounds.iwae_estimate`` on the first n test images of RUN with K samples
for each ``n x K`` in the grid, and prints wall and CPU seconds, microseconds of CPU per
decoder row (one image, one sample), and the extrapolation to the full test set at
K = 5000. CPU time (``time.process_time``) is far less sensitive than wall time to other
processes sharing the cores, so it is the number to compare across rows.
"""

from __future__ import annotations

import argparse
import time

import torch
from machine import print_machine

from vaelab import load_run
from vaelab.evaluation.bounds import iwae_estimate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--grid", default="100x500,100x1000,100x5000,200x500,1000x500")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    run = load_run(args.run)
    x = run.dataset().x_test
    print_machine()
    print("| images | K | rows | wall s | CPU s | CPU us/row | nll_iwae |")
    print("|---|---|---|---|---|---|---|")
    per_row = []
    for cell in args.grid.split(","):
        n, k = (int(v) for v in cell.split("x"))
        g = torch.Generator().manual_seed(0)
        t, c = time.perf_counter(), time.process_time()
        out = iwae_estimate(run.model, x[:n], k, generator=g)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        per_row.append(cpu / (n * k))
        print(
            f"| {n} | {k} | {n * k:,} | {wall:.2f} | {cpu:.2f} | {1e6 * cpu / (n * k):.2f} "
            f"| {float(out['nll_iwae'].mean()):.2f} |"
        )
    rows = len(x) * 5000
    best = min(per_row)
    print(
        f"full test set at K = 5000: {rows:,} rows x {1e6 * best:.2f} us = "
        f"{rows * best / 60:.1f} CPU minutes (best row), {rows * best / 60 / args.threads:.1f} "
        f"minutes wall if {args.threads} thread(s) scale perfectly"
    )


if __name__ == "__main__":
    main()
