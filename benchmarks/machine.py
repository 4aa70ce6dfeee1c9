"""What every benchmark prints first: the CPU, the threads, and the matmul peak measured
on it now (timings on these machines are only comparable as ratios in one run)."""

from __future__ import annotations

import os
import platform
import time

import torch

from vaelab.training.cpu import available_cores, cpu_description, native_bf16


def cpu_model() -> str:
    model = cpu_description()[0]
    if model == "unknown":  # no /proc/cpuinfo (not Linux)
        return platform.processor() or model
    return model


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


def step_products(
    batch: int, D: int = 784, h: int = 400, d: int = 20
) -> list[tuple[int, int, int]]:
    """The (m, k, n) matrix products of one training step of the lecture's MLP VAE
    (784-400-2d encoder, d-400-784 decoder) at ``batch``: four forward products, then
    for each layer the weight gradient (out x batch @ batch x in) and, but for the first
    layer (the images need no gradient), the input gradient (batch x out @ out x in)."""
    layers = [(D, h), (h, 2 * d), (d, h), (h, D)]  # (in, out)
    forward = [(batch, i, o) for i, o in layers]
    weight_grads = [(o, batch, i) for i, o in layers]
    input_grads = [(batch, o, i) for i, o in layers[1:]]
    return forward + weight_grads + input_grads


def step_gflop(batch: int, **sizes: int) -> float:
    """GFLOP of those products: 2 m k n each."""
    return sum(2 * m * k * n for m, k, n in step_products(batch, **sizes)) / 1e9


def lecture_matmul_peak(batch: int, seconds: float = 1.0) -> float:
    """GFLOP/s of one training step's products alone (``step_products``), in a loop on
    preallocated fp32 operands: the most a step of this size can reach on this CPU with
    torch's current threads (1024^3 products run faster than these small ones)."""
    operands = [(torch.randn(m, k), torch.randn(k, n)) for m, k, n in step_products(batch)]
    outs = [torch.empty(a.shape[0], b.shape[1]) for a, b in operands]

    def one_step() -> None:
        for (a, b), out in zip(operands, outs):
            torch.mm(a, b, out=out)

    for _ in range(20):
        one_step()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        t = time.perf_counter()
        for _ in range(20):
            one_step()
        best = max(best, 20 * step_gflop(batch) / (time.perf_counter() - t))
    return best


def machine(batch: int = 128) -> dict:
    """The machine's description, measured now, as a dict (for JSON results). bf16 is
    only timed on a CPU that computes it natively (without, one 1024^3 product can take
    seconds)."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    flags = cpu_description()[1]
    native = native_bf16(flags) or not flags  # no flags listed: time it to find out
    return {
        "cpu": cpu_model(),
        "cores": available_cores(),
        "native_bf16": native,
        "threads": torch.get_num_threads(),
        "spin": os.environ.get("GOMP_SPINCOUNT", "libgomp default"),
        "torch": torch.__version__,
        "fp32_gflops": matmul_peak(torch.float32),
        "bf16_gflops": matmul_peak(torch.bfloat16) if native else None,
        "lecture_batch": batch,
        "lecture_fp32_gflops": lecture_matmul_peak(batch),
        "load_before": " ".join(f"{v:.2f}" for v in load),
    }


def describe(m: dict) -> str:
    bf16 = (
        f"{m['bf16_gflops']:.0f} GFLOP/s bf16"
        if m.get("bf16_gflops")
        else "bf16 not timed (no native bf16)"
    )
    lecture = (
        f"; the lecture's step products at batch {m['lecture_batch']}: "
        f"{m['lecture_fp32_gflops']:.0f} GFLOP/s fp32"
        if m.get("lecture_fp32_gflops")
        else ""
    )
    return (
        f"CPU: {m['cpu']}, {m['threads']} torch thread(s), torch {m['torch']}; matmul peak "
        f"{m['fp32_gflops']:.0f} GFLOP/s fp32, {bf16} (1024^3, best of 1 s){lecture}; "
        f"load average {m['load_before']}"
    )


def print_machine(batch: int = 128) -> dict:
    """Measure, print one line, and return the description."""
    m = machine(batch)
    print(describe(m), flush=True)
    return m
