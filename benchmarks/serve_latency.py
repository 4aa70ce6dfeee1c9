"""Load test of `vaelab serve`: latency of decoding one latent vector, end to end.

Starts the real server (uvicorn, a subprocess on 127.0.0.1), sends a few hundred
POST /api/decode requests with one z ~ N(0, I) each from an httpx client with keep-alive,
and prints p50 / p90 / p99 / max per request as measured by the client (HTTP, JSON,
validation, decoding, PNG encoding and base64 included). Then the same with several
clients at once, and a few other endpoints for context.

    .venv/bin/python benchmarks/serve_latency.py runs/demo [--requests 500] [--clients 4]
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time

import httpx
from machine import print_machine


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vaelab", "serve", run, "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"vaelab serve exited with code {proc.returncode}")
        try:
            if httpx.get(url + "/api/info", timeout=5).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("vaelab serve did not answer within 120 s")


def percentiles(ms: list[float]) -> dict[str, float]:
    q = statistics.quantiles(ms, n=100, method="inclusive")
    return {"n": len(ms), "p50": q[49], "p90": q[89], "p99": q[98], "max": max(ms)}


def timed(client: httpx.Client, method: str, path: str, body=None) -> float:
    t0 = time.perf_counter()
    response = client.request(method, path, json=body)
    elapsed = (time.perf_counter() - t0) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{method} {path}: {response.status_code} {response.text[:200]}")
    return elapsed


def decode_load(url: str, d: int, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    with httpx.Client(base_url=url, timeout=30) as client:
        return [
            timed(client, "POST", "/api/decode", {"z": [[rng.gauss(0, 1) for _ in range(d)]]})
            for _ in range(n)
        ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="run directory to serve")
    parser.add_argument("--requests", type=int, default=500, help="decode requests (default 500)")
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients, second test")
    args = parser.parse_args()
    print_machine()

    proc, url = start_server(args.run)
    try:
        info = httpx.get(url + "/api/info").json()
        d = info["latent_dim"]
        decode_load(url, d, args.warmup, seed=0)
        rows = [("decode 1 vector, 1 client", percentiles(decode_load(url, d, args.requests, 1)))]

        per_client = max(1, args.requests // args.clients)
        results: list[list[float]] = [[] for _ in range(args.clients)]

        def worker(k: int) -> None:
            results[k] = decode_load(url, d, per_client, seed=10 + k)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        together = [ms for r in results for ms in r]
        rows.append((f"decode 1 vector, {args.clients} clients at once", percentiles(together)))

        with httpx.Client(base_url=url, timeout=30) as client:
            rng = random.Random(2)
            batch = [[rng.gauss(0, 1) for _ in range(d)] for _ in range(64)]
            rows.append(
                (
                    "decode a batch of 64",
                    percentiles(
                        [timed(client, "POST", "/api/decode", {"z": batch}) for _ in range(100)]
                    ),
                )
            )
            rows.append(
                (
                    "encode 1 test image (GET)",
                    percentiles(
                        [
                            timed(client, "GET", f"/api/encode/{rng.randrange(info['n_test'])}")
                            for _ in range(200)
                        ]
                    ),
                )
            )
            rows.append(
                (
                    "interpolate, 10 steps",
                    percentiles(
                        [
                            timed(
                                client,
                                "POST",
                                "/api/interpolate",
                                {"a": rng.randrange(1000), "b": rng.randrange(1000)},
                            )
                            for _ in range(100)
                        ]
                    ),
                )
            )
    finally:
        proc.terminate()
        proc.wait(timeout=15)

    print(
        f"run {args.run}: {info['model']}, d={d}, input {info['input_shape']}; {os.cpu_count()} CPUs"
    )
    print("| request | n | p50 ms | p90 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|")
    for name, s in rows:
        print(
            f"| {name} | {s['n']} | {s['p50']:.2f} | {s['p90']:.2f} | {s['p99']:.2f} | {s['max']:.1f} |"
        )


if __name__ == "__main__":
    main()
