"""Where the seconds of one `vaelab train` go: the run in this process, each stage timed.

    .venv/bin/python benchmarks/lecture_breakdown.py [vaelab train flags...]

With no flags it is the lecture's run (`vaelab train --out runs/breakdown`). The stages
are the library's own functions (vaelab.training.loop and .epoch_end), wrapped here with
a wall-clock timer; what is not in a listed stage (argument parsing, the threads plan) is
the rest of "total". The threads plan runs as in `vaelab train`, before torch loads.
The table is printed at exit (docs/benchmarks.md, "The lecture's run end to end").
"""

from __future__ import annotations

import atexit
import sys
import time
from collections.abc import Callable
from types import ModuleType

from vaelab.cli.train import prepare_train

STARTED = time.perf_counter()
SECONDS: dict[str, float] = {}


def timed(module: ModuleType, name: str, label: str) -> None:
    """Replace ``module.name`` by a wrapper that adds its wall time to SECONDS[label]."""
    function: Callable = getattr(module, name)

    def wrapper(*args, **kwargs):
        began = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            SECONDS[label] = SECONDS.get(label, 0.0) + time.perf_counter() - began

    setattr(module, name, wrapper)


def report() -> None:
    total = time.perf_counter() - STARTED
    print(f"\n{'stage':<42} seconds", file=sys.stderr)
    for label, seconds in SECONDS.items():
        print(f"{label:<42} {seconds:7.2f}", file=sys.stderr)
    rest = total - sum(s for k, s in SECONDS.items() if not k.startswith("  "))
    print(f"{'the rest (CLI, threads plan, ...)':<42} {rest:7.2f}", file=sys.stderr)
    print(f"{'total (after the interpreter started)':<42} {total:7.2f}", file=sys.stderr)


def install_timers(args) -> None:
    """After the threads plan (``prepare_train``, before torch loads, as `vaelab train`
    does): import torch, timed, and wrap the stages."""
    prepare_train(args)
    began = time.perf_counter()
    import torch  # noqa: F401  (the import every run pays)

    SECONDS["import torch"] = time.perf_counter() - began
    from vaelab.training import epoch_end, loop

    timed(loop, "prepare_data", "the data")
    timed(loop, "train_epoch", "training epochs")
    timed(loop, "end_of_epoch", "epoch ends (below)")
    timed(epoch_end, "evaluate_loss", "  test-set passes")
    timed(epoch_end, "_reconstruction_figure", "  reconstruction figures")
    timed(epoch_end, "write_latents", "  latents of cached epochs")
    timed(epoch_end, "save_checkpoint", "  weights of cached epochs")
    timed(loop, "save_last", "last.pt after each epoch")
    timed(loop, "finish", "final figures, 'finished'")


def main() -> None:
    from vaelab.cli import train as train_cli

    train_cli.prepare_train = install_timers  # the parser reads it when it is built
    from vaelab.cli import main as vaelab_main

    atexit.register(report)
    sys.exit(vaelab_main(["train", *(sys.argv[1:] or ["--out", "runs/breakdown"])]))


if __name__ == "__main__":
    main()
