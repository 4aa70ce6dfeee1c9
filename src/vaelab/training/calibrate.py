"""The thread calibration: the run's real training step timed at each candidate setting.

The OpenMP spin (GOMP_SPINCOUNT) is read once, when torch loads, so each spin needs a
process of its own: ``calibrate`` starts two children (``python -m
vaelab.training.calibrate SETTINGS``), one with the short spin (``SPIN_LOW``) and one
with libgomp's default (``SPIN_HIGH``). Each builds the run's data, model, optimiser and
``TrainStep`` exactly as the trainer does (without --compile: compiling takes longer than
the whole calibration; the eager step stands in for it) and then answers requests on its
stdin, "THREADS STEPS", with the seconds per step of STEPS steps at THREADS threads.

The two children start side by side (loading torch and the data is most of the time), then
take turns: only one measures at a time while the other waits on its pipe, asleep. The
candidates (1 thread; 2, 4, ... up to the cores, with each spin) are visited round by
round in a rotating order, so a machine whose speed drifts shifts them all alike, and each
candidate's median over the rounds decides (``choose``). About 1.5 s of measuring plus the
children's start-up (1-2 s), once per CPU, core count, torch version and model shape.

A choice of fewer threads than cores must hold in further windows of rounds, after pauses
(``CONFIRM_PAUSE``, then twice that; at most ``MAX_WINDOWS``), and each candidate keeps
the fastest of its medians (``fastest_medians``): other work can only slow a measurement,
never speed it up. (Not after a window that ran far over its budget, ``SLOW_WINDOW``: that
is threads collapsing under other processes' work, where fewer threads are right.) A run
that reads such a choice from the cache measures once more (``confirmed``,
``vaelab.training.threads.needs_confirming``), since a spell can outlast the windows. One
window is not enough: on 2026-12-05 a 2-core AMD EPYC virtual machine, with nothing else
running in it, measured 7.3 ms a step at 2 threads in one 1.5 s window (6.1 ms at 1
thread) and 3.8-4.4 ms in three windows minutes later; the machine has spells of 20 s to
minutes in which its 2-thread steps take 6.2-6.9 ms instead of 3.5-3.8
(docs/benchmarks.md, "Spells"). That one-window calibration cached "1 thread", and every
later run of that shape trained 1.4x slower than it could.
"""

from __future__ import annotations

import json
import os
import re
import select
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

from vaelab.training.threads import SPIN_HIGH, SPIN_LOW

TOLERANCE = 0.03  # a setting within 3% of the fastest counts as as fast
MEASURE_SECONDS = 0.05  # one measurement: at least this long (whole steps)
BUDGET_SECONDS = 1.5  # all the rounds together, roughly
COMPUTE_BOUND_STEP = 0.5  # a one-thread step this long is all arithmetic: every core
START_TIMEOUT = 60.0  # loading torch and the data on a very busy machine
CONFIRM_PAUSE = 1.0  # seconds before the second window of rounds (twice that before a third)
MAX_WINDOWS = 3
SLOW_WINDOW = 3 * BUDGET_SECONDS  # a window this long met other work: not measured again


def thread_counts(cores: int) -> list[int]:
    """1, 2, 4, ... below ``cores``, and ``cores``.

    Examples:
        >>> thread_counts(1), thread_counts(2), thread_counts(6), thread_counts(16)
        ([1], [1, 2], [1, 2, 4, 6], [1, 2, 4, 8, 16])
    """
    counts = [1]
    while counts[-1] * 2 < cores:
        counts.append(counts[-1] * 2)
    return counts if cores == 1 else [*counts, cores]


def candidates(cores: int) -> list[tuple[int, int]]:
    """(threads, spin) pairs worth timing: one thread waits for no one, so its spin does
    not matter and it is timed once."""
    return [(1, SPIN_LOW)] + [
        (n, s) for n in thread_counts(cores)[1:] for s in (SPIN_LOW, SPIN_HIGH)
    ]


def choose(
    medians: Mapping[tuple[int, int], float], tolerance: float = TOLERANCE
) -> tuple[int, int]:
    """The setting to use: of those within ``tolerance`` of the fastest median, the one
    with the fewest threads and then the shorter spin (it leaves more to other work).

    Examples:
        >>> choose({(1, 1000): 3.0, (2, 1000): 2.5, (2, 300000): 2.0})
        (2, 300000)
        >>> choose({(1, 1000): 3.0, (2, 1000): 2.03, (2, 300000): 2.0})
        (2, 1000)
        >>> choose({(1, 1000): 2.0, (2, 1000): 2.5, (2, 300000): 2.02})
        (1, 1000)
    """
    fastest = min(medians.values())
    return min(c for c, t in medians.items() if t <= fastest * (1 + tolerance))


def fastest_medians(
    windows: list[Mapping[tuple[int, int], float]],
) -> dict[tuple[int, int], float]:
    """Each candidate's fastest median over windows of rounds: a disturbance (other work,
    a core the hypervisor lends elsewhere) only ever adds time.

    Examples:
        >>> fastest_medians([{(1, 1000): 6.1, (2, 1000): 7.3}, {(1, 1000): 6.2, (2, 1000): 4.3}])
        {(1, 1000): 6.1, (2, 1000): 4.3}
    """
    return {c: min(w[c] for w in windows) for c in windows[0]}


def setting_label(threads: int, spin: int) -> str:
    """How a cache entry's ``seconds_per_step`` names a setting (``parse_setting_label``
    reads it back)."""
    return f"{threads} threads, spin {spin}"


def parse_setting_label(label: str) -> tuple[int, int]:
    """(threads, spin) from ``setting_label``'s text.

    Examples:
        >>> parse_setting_label(setting_label(2, 300000))
        (2, 300000)
    """
    threads, spin = re.fullmatch(r"(\d+) threads, spin (\d+)", label).groups()
    return int(threads), int(spin)


def confirmed(cached: Mapping[str, Any], fresh: Mapping[str, Any]) -> dict:
    """A cached choice of fewer threads than cores, measured again by a later run: each
    setting keeps the faster of its two times and the choice is made again
    (``choose``); the result is ``confirmed`` and is not measured again.

    Examples:
        >>> cached = {"threads": 1, "spin": 1000, "seconds_per_step": {
        ...     "1 threads, spin 1000": 0.0061, "2 threads, spin 1000": 0.0073}}
        >>> fresh = {"threads": 2, "spin": 1000, "seconds_per_step": {
        ...     "1 threads, spin 1000": 0.0062, "2 threads, spin 1000": 0.0043}}
        >>> entry = confirmed(cached, fresh)
        >>> entry["threads"], entry["seconds_per_step"]["2 threads, spin 1000"], entry["confirmed"]
        (2, 0.0043, True)
    """
    before = cached.get("seconds_per_step") or {}
    times = {
        label: min(t, before.get(label, t))
        for label, t in (fresh.get("seconds_per_step") or {}).items()
    }
    entry = {**fresh, "seconds_per_step": times, "confirmed": True}
    if times:
        entry["threads"], entry["spin"] = choose(
            {parse_setting_label(label): t for label, t in times.items()}
        )
    return entry


class Unusable(Exception):
    """The settings cannot train here (a bad setting, data not available offline): the
    run itself will say so, in one line, or fetch the data; no calibration this time."""


class Child:
    """One timing process with a fixed spin, spoken to line by line."""

    def __init__(self, settings: Mapping[str, Any], spin: int) -> None:
        import vaelab

        env = {
            k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")
        }
        env["GOMP_SPINCOUNT"] = str(spin)
        env["VAELAB_OFFLINE"] = "1"  # two children must not both download the data
        src = str(Path(vaelab.__file__).resolve().parents[1])  # the vaelab this process runs
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
        self.errors: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vaelab.training.calibrate", json.dumps(dict(settings))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.errors,
            env=env,
            bufsize=0,
        )
        self._buffer = b""

    def read(self, deadline: float) -> str:
        """The next line the child writes; RuntimeError when it ends or ``deadline`` (a
        time.monotonic value) passes first."""
        out = self.proc.stdout
        assert out is not None
        while b"\n" not in self._buffer:
            wait = deadline - time.monotonic()
            if wait <= 0 or not select.select([out], [], [], wait)[0]:
                raise RuntimeError("the timing process did not answer in time")
            chunk = os.read(out.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"the timing process stopped: {self.last_error()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def ask(self, threads: int, steps: int, deadline: float) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{threads} {steps}\n".encode())
        return float(self.read(deadline))

    def last_error(self) -> str:
        self.errors.seek(0)
        lines = self.errors.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else "no message"

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # EOF: the child exits
            self.proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        self.errors.close()


def calibrate(settings: Mapping[str, Any], cores: int) -> dict | None:
    """The best (threads, spin) for a run with ``settings`` on this machine, with the
    medians it was chosen from: {"threads", "spin", "seconds_per_step", "rounds", "steps"}
    ("device": "cuda" for a run on a GPU, "how" for a compute-bound step), or None when
    a child failed (the message printed as a note) or the settings cannot train here."""
    children: dict[int, Child] = {}
    try:
        for spin in (SPIN_LOW, SPIN_HIGH):
            children[spin] = Child(settings, spin)
        return _calibrate(children, cores)
    except Unusable:
        return None
    except (RuntimeError, ValueError, IndexError, OSError) as exc:
        print(f"vaelab: note: thread calibration failed ({exc}); using defaults", file=sys.stderr)
        return None
    finally:
        for child in children.values():
            child.close()


def _calibrate(children: dict[int, Child], cores: int) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    ready = [child.read(deadline).split() for child in children.values()]  # "ready DEVICE"
    if any(r[0] == "unusable" for r in ready):
        raise Unusable()
    if any(r[1] == "cuda" for r in ready):  # the CPU threads hardly matter: torch's default
        return {"device": "cuda", "threads": cores, "spin": SPIN_LOW}
    step = children[SPIN_LOW].ask(1, 2, deadline)  # one thread: the slowest candidate
    if step >= COMPUTE_BOUND_STEP:
        return {"threads": cores, "spin": SPIN_LOW, "how": f"compute-bound ({step:.2f} s a step)"}
    options = candidates(cores)
    steps = max(1, min(50, round(MEASURE_SECONDS / step)))
    rounds = max(3, min(7, int(BUDGET_SECONDS / (len(options) * steps * step))))
    deadline = time.monotonic() + 20 * MAX_WINDOWS * BUDGET_SECONDS  # a machine 20x slower
    medians, took = _window(children, options, rounds, steps, deadline)
    windows = [medians]
    # Fewer threads must hold again, unless the window ran far over its budget: threads
    # collapsing under other work, for which fewer threads are right (and the governor
    # follows the load anyway).
    while choose(medians)[0] < cores and len(windows) < MAX_WINDOWS and took < SLOW_WINDOW:
        time.sleep(CONFIRM_PAUSE * len(windows))
        window, took = _window(children, options, rounds, steps, deadline)
        windows.append(window)
        medians = fastest_medians(windows)
    threads, spin = choose(medians)
    return {
        "threads": threads,
        "spin": spin,
        "seconds_per_step": {setting_label(n, s): round(t, 6) for (n, s), t in medians.items()},
        "rounds": rounds,
        "steps": steps,
        "windows": len(windows),
    }


def _window(
    children: Mapping[int, Any],
    options: list[tuple[int, int]],
    rounds: int,
    steps: int,
    deadline: float,
) -> tuple[dict[tuple[int, int], float], float]:
    """Each candidate's median seconds per step over ``rounds`` rounds, visited in a
    rotating order, and the seconds the window took."""
    start = time.monotonic()
    times: dict[tuple[int, int], list[float]] = {c: [] for c in options}
    for r in range(rounds):
        for threads, spin in options[r % len(options) :] + options[: r % len(options)]:
            times[threads, spin].append(children[spin].ask(threads, steps, deadline))
    return {c: statistics.median(t) for c, t in times.items()}, time.monotonic() - start


# ------------------------------------------------------------------- the child's side


def worker(settings: dict[str, Any]) -> None:
    """Build the run's step, say "ready DEVICE" (or "unusable MESSAGE"), then answer
    "THREADS STEPS" lines with the seconds per step until stdin ends. Until asked, one
    thread: the two children start side by side and must not fight over the cores."""
    import torch

    from vaelab.errors import VaelabError

    protocol, sys.stdout = sys.stdout, sys.stderr  # stray prints must not break the protocol

    def say(line: str) -> None:
        protocol.write(line + "\n")
        protocol.flush()

    torch.set_num_threads(1)

    try:
        step_fn, config, data, n_classes = _build_step(settings)
    except VaelabError as exc:
        say(f"unusable {exc}")
        return
    if step_fn is None:
        say("ready cuda")
        return
    from vaelab.objectives import kl_weight

    x, labels = data.x_train, data.y_train if n_classes else None
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(config.seed))
    # the KL weight of a run's first step (progress 0: also under --time-budget, where a
    # warm-up given as a share of the run has no epochs to count)
    batch, weight, done = min(config.batch_size, len(x)), kl_weight(config, 1, progress=0.0), [0]

    def run(steps: int) -> float:
        start = time.perf_counter()
        for _ in range(steps):
            first = done[0] * batch % max(1, len(x) - batch + 1)
            rows = order[first : first + batch]
            step_fn(
                x.index_select(0, rows),
                weight,
                1,
                done[0],
                None if labels is None else labels[rows],
            )
            done[0] += 1
        return (time.perf_counter() - start) / steps

    run(2)  # warm-up: the allocator, Adam's moments
    say("ready cpu")
    while line := sys.stdin.readline():  # a line as soon as it comes; "" at the end
        threads, steps = (int(v) for v in line.split())
        torch.set_num_threads(threads)
        run(1)  # the new team of threads starts up outside the timing
        say(f"{run(steps):.6f}")


def _build_step(settings: dict[str, Any]):
    """(step, config, data, classes) as the trainer builds them; step None on a GPU."""
    import torch

    from vaelab.config import TrainConfig
    from vaelab.data.datasets import label_classes, prepare_data
    from vaelab.models import build_model
    from vaelab.training.optim import make_optimizer
    from vaelab.training.step import TrainStep, select_device

    config = TrainConfig.from_dict({**settings, "compile": False, "tensorboard": False})
    device = select_device(config.device)
    if device.type == "cuda":
        return None, config, None, 0
    data = prepare_data(config)
    n_classes = label_classes(data) if config.condition == "label" else 0
    torch.manual_seed(config.seed)
    model = build_model(
        config.model, input_shape=data.input_shape, n_classes=n_classes, **config.to_dict()
    )
    return (
        TrainStep(model, make_optimizer(model, config.lr), config, device),
        config,
        data,
        n_classes,
    )


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
