"""What every benchmark prints first: the CPU, the threads, and the matmul peak measured
on it now (timings on these machines are only comparable as ratios in one run)."""

from __future__ import annotations

import os
import platform
import time

import torch


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def matmul_peak(dtype: torch.dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """GFLOP/s of an n x n x n matmul in ``dtype``: the best of timed batches of 5."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def machine() -> dict:
    """The machine's description, measured now, as a dict (for JSON results)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "fp32_gflops": matmul_peak(torch.float32),
        "bf16_gflops": matmul_peak(torch.bfloat16),
        "load_before": " ".join(f"{v:.2f}" for v in load),
    }


def describe(m: dict) -> str:
    return (
        f"CPU: {m['cpu']}, {m['threads']} torch thread(s), torch {m['torch']}; matmul peak "
        f"{m['fp32_gflops']:.0f} GFLOP/s fp32, {m['bf16_gflops']:.0f} GFLOP/s bf16 "
        f"(1024^3, best of 1 s); load average {m['load_before']}"
    )


def print_machine() -> dict:
    """Measure, print one line, and return the description."""
    m = machine()
    print(describe(m), flush=True)
    return m
