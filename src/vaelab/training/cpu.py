"""The CPU ``vaelab train`` runs on: its model and features, the cores this process may
use, and how many of them other processes keep busy (/proc/stat), for the thread plan
of ``vaelab.training.threads``.

Only the standard library is imported here: the command line plans before torch loads.
"""

from __future__ import annotations

import importlib.metadata
import os
import time
from dataclasses import dataclass
from pathlib import Path


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, e.g. under taskset)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cpu_description(cpuinfo: str | None = None) -> tuple[str, frozenset[str]]:
    """(model name, feature flags) of the first CPU in /proc/cpuinfo; ("unknown", {})
    where there is none (not Linux)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown", frozenset()
    model, flags = "unknown", frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and model == "unknown":
            model = value.strip()
        elif key in ("flags", "Features") and not flags:
            flags = frozenset(value.split())
    return model, flags


def native_bf16(flags: frozenset[str]) -> bool:
    """Whether the CPU computes bfloat16 products natively: AVX512-BF16 or AMX-BF16 (x86).
    Without them PyTorch converts every element and bf16 is usually slower than fp32.

    Examples:
        >>> native_bf16(frozenset({"avx2", "avx512f"})), native_bf16(frozenset({"amx_bf16"}))
        (False, True)
    """
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def bf16_note(flags: frozenset[str]) -> str | None:
    """The one line ``--precision bf16`` prints on a CPU without native bfloat16; None on
    one with it (or where /proc/cpuinfo lists no flags: nothing is known)."""
    if not flags or native_bf16(flags):
        return None
    return (
        "vaelab: note: this CPU has no native bfloat16 (no avx512_bf16 or amx_bf16 in "
        "/proc/cpuinfo), so --precision bf16 will likely be slower than fp32"
    )


def torch_version() -> str:
    """torch's version without importing it."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


# ---------------------------------------------------------- cores busy with other work


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU time counters: ``busy`` and ``idle`` ticks of the cores we may use
    (/proc/stat), this process's CPU seconds (all its threads) and the wall clock."""

    busy: int
    idle: int
    own_seconds: float
    wall_seconds: float


def parse_proc_stat(text: str, cpus: set[int] | None = None) -> tuple[int, int]:
    """(busy, idle) ticks from /proc/stat, summed over the ``cpuN`` lines of ``cpus`` (all
    of them when None). Idle is idle + iowait; busy is the rest (user, nice, system, irq,
    softirq and steal: a core the hypervisor gave to another machine is not ours either).
    """
    busy = idle = 0
    for line in text.splitlines():
        name, *fields = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        if cpus is not None and int(name[3:]) not in cpus:
            continue
        ticks = [int(v) for v in fields[:8]]
        idle += ticks[3] + ticks[4]
        busy += sum(ticks) - ticks[3] - ticks[4]
    return busy, idle


def sample_cpu() -> CpuSample | None:
    """Now's counters; None where /proc/stat cannot be read (not Linux)."""
    try:
        text = Path("/proc/stat").read_text()
        cpus = os.sched_getaffinity(0)
    except (OSError, AttributeError):
        return None
    busy, idle = parse_proc_stat(text, cpus)
    return CpuSample(busy, idle, time.process_time(), time.monotonic())


def others_busy(before: CpuSample, after: CpuSample, cores: int) -> float:
    """Cores kept busy by other processes between two samples: the busy share of the
    cores' ticks times their number, less this process's CPU time per wall second.

        others = cores * d_busy / (d_busy + d_idle) - d_own / d_wall   (at least 0)
    """
    ticks = (after.busy - before.busy) + (after.idle - before.idle)
    wall = after.wall_seconds - before.wall_seconds
    if ticks <= 0 or wall <= 0:
        return 0.0
    total = cores * (after.busy - before.busy) / ticks
    own = (after.own_seconds - before.own_seconds) / wall
    return max(0.0, total - own)


def measure_others(cores: int, seconds: float = 0.1) -> float | None:
    """Cores busy with other work now, over ``seconds``; None where it cannot be read."""
    before = sample_cpu()
    if before is None:
        return None
    time.sleep(seconds)
    after = sample_cpu()
    return None if after is None else others_busy(before, after, cores)
