"""What a request with other preprocessing options costs a running ``defocus serve``: the latency of the first and
of a repeated request for each option set, and the server's resident memory after each first request. Results:
benchmarks/RESULTS.md ("HTTP server").

Each source tree given with ``--tree NAME=SRC`` (a ``src`` folder of this package, e.g. of an older commit checked
out with ``git worktree``) runs its own server process (``PYTHONPATH=SRC``); the trees alternate within each run,
so that they share the machine's conditions.

    OMP_NUM_THREADS=2 python benchmarks/bench_serve_options.py --tree now=src --tree before=/tmp/old/src [--runs 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import free_port, start_server  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PHOTO = REPO / "examples" / "dahlia_flower.jpg"
OPTION_SETS = [("default", {}), ("size 256, keep_aspect", {"size": 256, "keep_aspect": "true"}),
               ("size 640, no upscale", {"size": 640, "upscale": "false"}), ("size 384", {"size": 384})]


def rss_mib(pid: int) -> float:
    """Resident memory of a process (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one_server(src: str) -> dict:
    """Start a server on ``src``, send each option set twice; first / repeat latency (s) and RSS (MiB) per set."""
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    port = free_port()
    proc = start_server(port, workers=1, queue=4, env=env)
    out = {"rss_ready": rss_mib(proc.pid)}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            for name, params in OPTION_SETS:
                times = []
                for _ in range(2):
                    t0 = time.perf_counter()
                    r = client.post("/v1/predict", params={**params, "include": ""},
                                    files={"file": (PHOTO.name, PHOTO.read_bytes())})
                    r.raise_for_status()
                    times.append(time.perf_counter() - t0)
                out[name] = {"first": times[0], "repeat": times[1], "rss": rss_mib(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def main() -> None:
    """Run every tree's server ``--runs`` times, alternating, and print the medians as a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tree", action="append", required=True, metavar="NAME=SRC")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    trees = dict(t.split("=", 1) for t in args.tree)
    results = {name: [] for name in trees}
    for _ in range(args.runs):
        for name, src in trees.items():
            results[name].append(one_server(src))
    print("| tree | options (in this order) | first request | repeated request | server RSS after it |")
    print("|---|---|---|---|---|")
    for name, runs in results.items():
        ready = statistics.median(r["rss_ready"] for r in runs)
        print(f"| {name} | (model loaded, before any request) | - | - | {ready:.0f} MiB |")
        for opt, _ in OPTION_SETS:
            first = statistics.median(r[opt]["first"] for r in runs)
            repeat = statistics.median(r[opt]["repeat"] for r in runs)
            rss = statistics.median(r[opt]["rss"] for r in runs)
            print(f"| {name} | {opt} | {first * 1000:.0f} ms | {repeat * 1000:.0f} ms | {rss:.0f} MiB |")


if __name__ == "__main__":
    main()
