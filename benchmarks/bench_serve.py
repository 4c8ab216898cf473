"""HTTP overhead of ``defocus serve``: requests/s and p50/p95 latency for 1, 4 and 16 concurrent clients against a
local server running the bundled model, beside ``Predictor`` in-process on the same photos (the baseline, measured
in the same run). Results: benchmarks/RESULTS.md.

The server runs in its own process (``python -m defocus serve``) on a free loopback port; the clients are threads
of this process sending each photo as a multipart upload. Two response kinds are timed: ``include=`` (JSON only:
fraction, size, timings; the overhead of HTTP, upload and temporary file) and ``include=prob`` (the 8-bit map as a
base64 PNG, what the web page asks for). The baseline is ``Predictor.predict(path)`` plus the in-focus fraction
in-process, called from the same number of threads.

    OMP_NUM_THREADS=2 python benchmarks/bench_serve.py [--runs 3] [--requests 48] [--clients 1,4,16]
        [--workers 2] [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
PHOTOS = [REPO / "examples" / name for name in
          ("dahlia_flower.jpg", "cat_chelsea.png", "coffee_cup.png", "kodak23_parrots.png", "dpdd_park_bench.png")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int, queue: int, env: dict | None = None) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "defocus", "serve", "--port", str(port), "--device", "cpu",
           "--workers", str(workers), "--queue", str(queue)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server exited during start-up")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become ready within 120 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summarise(latencies: list[float], wall: float) -> dict:
    return {"per_s": len(latencies) / wall, "p50_ms": 1000 * percentile(latencies, 0.5),
            "p95_ms": 1000 * percentile(latencies, 0.95)}


def time_in_process(predictor, n: int, clients: int) -> dict:
    def one(i: int) -> float:
        t0 = time.perf_counter()
        predictor.predict(PHOTOS[i % len(PHOTOS)]).in_focus_fraction
        return time.perf_counter() - t0

    t_start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(n)))
    return summarise(latencies, time.perf_counter() - t_start)


def time_server(url: str, n: int, clients: int, include: str, bodies: dict) -> dict:
    http = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=clients))
    refused = 0

    def one(i: int) -> float:
        nonlocal refused
        photo = PHOTOS[i % len(PHOTOS)]
        t0 = time.perf_counter()
        r = http.post(f"{url}/v1/predict", params={"include": include},
                      files={"file": (photo.name, bodies[photo])})
        if r.status_code != 200:
            refused += 1
            raise RuntimeError(f"{r.status_code}: {r.text}")
        r.json()
        return time.perf_counter() - t0

    t_start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(n)))
    out = summarise(latencies, time.perf_counter() - t_start)
    http.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--requests", type=int, default=48, help="Requests per client level and run.")
    ap.add_argument("--clients", default="1,4,16")
    ap.add_argument("--workers", type=int, default=2, help="Server inference threads.")
    ap.add_argument("--json", help="Write all runs here.")
    args = ap.parse_args()
    levels = [int(c) for c in args.clients.split(",")]

    import torch

    from defocus.inference import Predictor

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    predictor = Predictor(device="cpu", workers=1)
    bodies = {p: p.read_bytes() for p in PHOTOS}
    port = free_port()
    server = start_server(port, args.workers, queue=max(levels) * 2)
    url = f"http://127.0.0.1:{port}"
    runs: list[dict] = []
    try:
        for kind in ("", "prob"):  # warm-up: first calls of both paths
            time_server(url, len(PHOTOS), 1, kind, bodies)
        time_in_process(predictor, len(PHOTOS), 1)
        for run in range(args.runs):
            row = {}
            for c in levels:  # interleaved, so that a change of machine load hits all configurations alike
                row[f"in-process c={c}"] = time_in_process(predictor, args.requests, c)
                for include in ("", "prob"):
                    row[f"http include={include or 'none'} c={c}"] = time_server(url, args.requests, c, include,
                                                                                 bodies)
            runs.append(row)
            print(f"run {run + 1}/{args.runs} done (load {os.getloadavg()[0]:.1f})", file=sys.stderr)
    finally:
        server.terminate()
        server.wait(timeout=30)

    print(f"{len(PHOTOS)} photos (300x451 .. 840x560), {args.requests} requests per level, median of {args.runs} "
          f"runs; server --workers {args.workers}; load average now {os.getloadavg()[0]:.1f}\n")
    print("| clients | configuration | requests/s (ratio to in-process) | p50 latency | p95 latency |")
    print("|---|---|---|---|---|")
    for c in levels:
        base = statistics.median(r[f"in-process c={c}"]["per_s"] for r in runs)
        for key in [k for k in runs[0] if k.endswith(f" c={c}")]:
            per_s = statistics.median(r[key]["per_s"] for r in runs)
            p50 = statistics.median(r[key]["p50_ms"] for r in runs)
            p95 = statistics.median(r[key]["p95_ms"] for r in runs)
            name = {"in-process": "`Predictor.predict` in-process (baseline)", "http include=none":
                    "HTTP, JSON only (`include=`)", "http include=prob": "HTTP, map inlined (`include=prob`)"}[
                        key.rsplit(" ", 1)[0]]
            print(f"| {c} | {name} | {per_s:.2f} ({per_s / base:.2f}x) | {p50:.0f} ms | {p95:.0f} ms |")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "args": vars(args)}, indent=2))


if __name__ == "__main__":
    main()
