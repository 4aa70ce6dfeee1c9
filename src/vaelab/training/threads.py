"""CPU threads and OpenMP waiting for ``vaelab train``, chosen by measurement (issue 18).

PyTorch's CPU kernels run on GNU OpenMP (libgomp) threads that spin while they wait for
each other (``GOMP_SPINCOUNT`` iterations, 300,000 by default, then they sleep). On a
quiet machine a long spin is fastest (no wake-up after every operation); when other
processes want the same cores, a spinning thread holds the core its partner needs and a
step can take 20x longer. No constant wins both cases, so ``--threads auto`` decides:

1. **Before torch loads** (the spin is read once, when libgomp starts), ``plan_threads``
   takes the best setting for this CPU and model shape from the user cache
   (``vaelab.training.calibration_cache``) or measures it (``vaelab.training.calibrate``:
   the real training step in two child processes, one per spin, at 1, 2, 4, ...
   threads), and measures how many cores other processes keep busy right now
   (/proc/stat over 0.1 s). It starts with the threads those leave free (``threads_for``),
   at most the calibrated best.
2. **While training**, ``ThreadGovernor`` samples /proc/stat every 0.25 s and lowers the
   thread count as soon as other processes take cores (one thread does not wait for
   anyone, so it never collapses, whatever the spin), and raises it again after 1 s of
   free cores. The training loop applies the new count between steps (``adjust``).

An explicit environment always wins: ``OMP_NUM_THREADS`` fixes the threads,
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY`` the waiting. ``--threads N`` fixes N threads
with the short spin (``SPIN_LOW``), as vaelab did before. ``VAELAB_AUTO_THREADS=0`` turns
the automatic choice off (torch's default threads, the short spin: the behaviour before
it); the test suite sets it, so no test calibrates by accident.

Only the standard library is imported here: the command line plans before torch loads.
"""

from __future__ import annotations

import datetime
import math
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vaelab.errors import VaelabError
from vaelab.training.calibration_cache import (
    cache_key,
    cache_path,
    cached_calibration,
    calibration_lock,
    step_shape,
    store_calibration,
)
from vaelab.training.cpu import (
    CpuSample,
    available_cores,
    cpu_description,
    measure_others,
    others_busy,
    sample_cpu,
    torch_version,
)

SPIN_LOW = 1000  # GOMP_SPINCOUNT: a few microseconds, then sleep (safe when shared)
SPIN_HIGH = 300_000  # libgomp's default: fastest alone
# How much other work a core may carry and still count as free: up to 0.4 of a core of
# other work, our threads still get it nearly always; beyond, one of them waits too often.
FREE_CORE_SLACK = 0.4
QUIET_CORES = 0.5  # calibrate only when other processes keep less than this busy
MIN_CALIBRATION_STEPS = 500  # shorter runs would not repay the few seconds it takes
KNOWN_TRAIN_SIZES = {"mnist": 60_000, "fashion-mnist": 60_000}
AUTO_ENV = "VAELAB_AUTO_THREADS"  # "0": no calibration, no adjustment (the old behaviour)
WAIT_ENV = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def threads_for(cores: int, others: float, best: int) -> int:
    """The busy-core rule: as many threads as cores other work leaves free, at most
    ``best`` (the calibrated count), at least one.

        threads = clamp(floor(cores - others + FREE_CORE_SLACK), 1, best)

    Examples:
        >>> threads_for(2, 0.0, 2), threads_for(2, 0.3, 2), threads_for(2, 0.5, 2)
        (2, 2, 1)
        >>> threads_for(2, 1.9, 2), threads_for(16, 3.2, 16), threads_for(16, 0.0, 4)
        (1, 13, 4)
    """
    free = math.floor(cores - others + FREE_CORE_SLACK)
    return max(1, min(best, free))


def next_threads(current: int, allowed: int, calm: int, raise_after: int) -> tuple[int, int]:
    """One governor decision: (threads, calm samples so far). Fewer threads at once when
    other work takes cores (a collapse costs far more than a missed speed-up); more only
    after ``raise_after`` samples in a row that all allowed more, then the least of them.

    Examples:
        >>> next_threads(2, 1, 0, 4)
        (1, 0)
        >>> next_threads(1, 2, 0, 4), next_threads(1, 2, 3, 4)
        ((1, 1), (2, 0))
    """
    if allowed < current:
        return allowed, 0
    if allowed == current:
        return current, 0
    calm += 1
    return (allowed, 0) if calm >= raise_after else (current, calm)


# ---------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class ThreadPlan:
    """What a run does with threads. ``threads``: torch's thread count to start with
    (None: torch's default, i.e. OMP_NUM_THREADS or the cores); ``best``: the most
    threads the governor may use (None: no governor); ``spin``: the GOMP_SPINCOUNT to set
    before torch loads (None: the environment's); ``line``: what was chosen and why."""

    threads: int | None
    best: int | None
    spin: int | None
    line: str


def parse_threads(text: str) -> int | str:
    """``--threads``: 'auto' or a positive integer."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"expected 'auto' or a positive number of threads, got {text!r}")
    return value


def long_enough(settings: Mapping[str, Any]) -> bool:
    """Whether a run has the MIN_CALIBRATION_STEPS training steps that repay a
    calibration; a dataset of unknown size counts as long (calibrated once per shape)."""
    n = settings.get("limit") or KNOWN_TRAIN_SIZES.get(str(settings.get("dataset", "mnist")))
    epochs, batch = settings.get("epochs", 10), settings.get("batch_size", 256)
    if n is None or not isinstance(batch, int) or batch < 1 or not isinstance(epochs, int):
        return True
    return epochs * math.ceil(n / batch) >= MIN_CALIBRATION_STEPS


Calibrate = Callable[[Mapping[str, Any], int], dict | None]


def plan_threads(
    settings: Mapping[str, Any],
    threads: int | str = "auto",
    recalibrate: bool = False,
    env: Mapping[str, str] | None = None,
    calibrate: Calibrate | None = None,
    others: float | None | str = "measure",
    cache: Path | None = None,
) -> ThreadPlan:
    """The thread plan of a run with ``settings`` (TrainConfig fields, as given). Reads
    and writes the calibration cache; ``calibrate(settings, cores)`` measures (default
    ``vaelab.training.calibrate.calibrate``); ``others``: cores busy with other work
    (measured now unless given). Raises VaelabError for --recalibrate that cannot apply."""
    env = os.environ if env is None else env
    fixed = env.get("OMP_NUM_THREADS")
    wait_fixed = next((f"{k}={env[k]}" for k in WAIT_ENV if k in env), None)
    spin_low = None if wait_fixed else SPIN_LOW
    if recalibrate and (fixed or threads != "auto"):
        why = f"OMP_NUM_THREADS={fixed} in the environment" if fixed else f"--threads {threads}"
        raise VaelabError(f"--recalibrate measures for --threads auto, but {why} fixes them")
    if fixed:
        told = "" if threads == "auto" else f"; --threads {threads} ignored"
        return ThreadPlan(
            None, None, spin_low, f"threads: OMP_NUM_THREADS={fixed} (environment{told})"
        )
    if threads != "auto":
        return ThreadPlan(int(threads), None, spin_low, f"threads: {threads} (--threads)")
    if env.get(AUTO_ENV) == "0" and not recalibrate:
        return ThreadPlan(None, None, spin_low, f"threads: torch's default ({AUTO_ENV}=0)")

    cores = available_cores()
    if others == "measure":
        others = measure_others(cores)
    busy = 0.0 if others is None else float(others)
    cpu, flags = cpu_description()
    key = cache_key(cpu, flags, cores, torch_version(), step_shape(settings))
    path = cache or cache_path()
    entry, how, measured_now = None, "not calibrated", False
    if not recalibrate:
        entry, how = cached_calibration(path, key), "calibrated, cached"
    if entry is None and cores > 1:
        if not (recalibrate or long_enough(settings)):
            how = "not calibrated: a short run"
        elif busy >= QUIET_CORES and not recalibrate:
            how = f"not calibrated: {busy:.1f} cores busy with other work"
        else:
            with calibration_lock(path):
                entry = None if recalibrate else cached_calibration(path, key)
                how = "calibrated, cached"
                if entry is None:
                    entry, measured_now = _measure(settings, cores, busy, calibrate), True
                    how = "calibrated now" if entry else "calibration failed"
                    if entry:
                        if recalibrate:  # the user's own choice: not measured again
                            entry = {**entry, "confirmed": True}
                        store_calibration(path, key, entry)
    later_run = entry is not None and not measured_now  # read from the cache
    if (
        later_run
        and needs_confirming(entry, cores)
        and long_enough(settings)
        and busy < QUIET_CORES
    ):
        entry, how = _confirm(settings, cores, busy, calibrate, path, key, entry)
    if entry and entry.get("device") == "cuda":
        return ThreadPlan(None, None, spin_low, "threads: torch's default (training on a GPU)")
    best = entry["threads"] if entry else cores
    spin = None if wait_fixed else (entry["spin"] if entry else SPIN_LOW)
    start = threads_for(cores, busy, best)
    wait = wait_fixed or f"OpenMP spin {spin}"
    load = f", {busy:.1f} busy with other work" if busy >= 0.05 else ""
    line = (
        f"threads: {start} of {cores} cores{load} (best {best}, {wait}; {how}); "
        "fewer while other processes need the cores"
    )
    return ThreadPlan(start, best if best > 1 else None, spin, line)


def needs_confirming(entry: Mapping[str, Any], cores: int) -> bool:
    """Whether a cached choice of fewer threads than cores is still to be measured again
    by a later run: one calibration can fall in a spell of a virtual machine whose threads
    work together badly for minutes (docs/benchmarks.md, "Spells"), and its choice would
    slow every run after it. A choice from --recalibrate is the user's: kept as it is.

    Examples:
        >>> needs_confirming({"threads": 1, "spin": 1000}, 2)
        True
        >>> needs_confirming({"threads": 1, "spin": 1000, "confirmed": True}, 2)
        False
        >>> needs_confirming({"threads": 2, "spin": 1000}, 2)
        False
    """
    fewer = isinstance(entry.get("threads"), int) and entry["threads"] < cores
    return fewer and entry.get("device") != "cuda" and not entry.get("confirmed")


def _confirm(
    settings: Mapping[str, Any],
    cores: int,
    busy: float,
    calibrate: Calibrate | None,
    path: Path,
    key: str,
    entry: dict,
) -> tuple[dict, str]:
    """Measure a cached choice of fewer threads again (``needs_confirming``) and cache the
    merged result; (entry, how the plan line tells it)."""
    from vaelab.training.calibrate import confirmed

    with calibration_lock(path):
        current = cached_calibration(path, key)  # another run may have confirmed it
        if current is not None and not needs_confirming(current, cores):
            return current, "calibrated, cached"
        why = f"again: a run before chose {entry['threads']} thread(s), to be confirmed"
        fresh = _measure(settings, cores, busy, calibrate, why)
        if fresh is None:
            return entry, "calibrated, cached"
        entry = confirmed(current or entry, fresh)
        store_calibration(path, key, entry)
    return entry, "calibrated again to confirm fewer threads"


def _measure(
    settings: Mapping[str, Any],
    cores: int,
    busy: float,
    calibrate: Calibrate | None,
    why: str = "once, cached",
) -> dict | None:
    if calibrate is None:
        from vaelab.training.calibrate import calibrate
    print(
        f"vaelab: calibrating threads for this CPU and model ({cores} cores; {why})",
        file=sys.stderr,
        flush=True,
    )
    entry = calibrate(settings, cores)
    if entry is not None:
        entry = {
            **entry,
            "others_busy": round(busy, 2),
            "date": datetime.datetime.now().isoformat(timespec="seconds"),
        }
    return entry


def set_spin(plan: ThreadPlan, env: dict[str, str] | None = None) -> None:
    """Put the plan's spin into the environment, where libgomp reads it when torch loads
    (too late once torch is loaded: then nothing changes)."""
    env = os.environ if env is None else env
    if plan.spin is not None and "torch" not in sys.modules:
        env["GOMP_SPINCOUNT"] = str(plan.spin)


# ------------------------------------------------------------------------ the governor


class ThreadGovernor:
    """Keeps torch's thread count within the cores that other processes leave free.

    A daemon thread samples the CPU counters every ``period`` seconds and sets ``wanted``
    (``threads_for`` with ``next_threads``'s hysteresis); the training thread applies it
    between steps (``adjust``): torch's thread count belongs to the thread that calls
    ``torch.set_num_threads``."""

    def __init__(
        self,
        cores: int,
        best: int,
        start: int,
        sample: Callable[[], CpuSample | None] = sample_cpu,
        period: float = 0.25,
        raise_after: int = 4,
    ) -> None:
        self.cores, self.best, self.period, self.raise_after = cores, best, period, raise_after
        self.wanted = self.applied = start
        self.changes = 0
        self._sample, self._calm = sample, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vaelab-threads", daemon=True)

    def update(self, others: float) -> int:
        """One decision from a measurement of the cores busy with other work."""
        allowed = threads_for(self.cores, others, self.best)
        self.wanted, self._calm = next_threads(self.wanted, allowed, self._calm, self.raise_after)
        return self.wanted

    def _run(self) -> None:
        before = self._sample()
        while before is not None and not self._stop.wait(self.period):
            after = self._sample()
            if after is None:
                return
            self.update(others_busy(before, after, self.cores))
            before = after

    def start(self) -> ThreadGovernor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


_governor: ThreadGovernor | None = None


def adjust() -> None:
    """Apply the running governor's thread count (the training loop calls this between
    steps; without a governor it is one global read)."""
    g = _governor
    if g is not None and g.wanted != g.applied:
        import torch

        torch.set_num_threads(g.wanted)
        g.applied = g.wanted
        g.changes += 1


@contextmanager
def governed(plan: ThreadPlan, cores: int | None = None) -> Iterator[ThreadGovernor | None]:
    """Run the body with the plan's threads: torch's count set to ``plan.threads`` and,
    when the plan has a ``best``, a governor that follows the load; torch's count is
    restored afterwards (the command may run inside a longer-lived process)."""
    global _governor
    import torch

    before = torch.get_num_threads()
    if plan.threads is not None:
        torch.set_num_threads(plan.threads)
    governor = None
    if plan.best is not None and plan.threads is not None:
        governor = ThreadGovernor(cores or available_cores(), plan.best, plan.threads).start()
        _governor = governor
    try:
        yield governor
    finally:
        if governor is not None:
            governor.stop()
            _governor = None
        torch.set_num_threads(before)
