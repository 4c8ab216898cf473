"""How long the main job takes: ``defocus predict`` on the example photos, as ``make demo`` runs it.

Usage::

    python benchmarks/bench_demo.py [--runs 3]

Each run is a fresh ``python -m defocus predict examples -o OUT --save prob,mask,overlay`` process (wall time
until it exits: start-up, model load, decode, infer, write), the bundled model at its own input (512) and,
interleaved so that a busy machine slows both alike, at ``--size 320`` (the paper's input): the baseline of the
ratio. Prints the medians and writes nothing but the temporary outputs.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from defocus.bench import machine_info  # noqa: E402

CASES = {"default (512)": [], "--size 320": ["--size", "320"]}


def run_once(extra: list[str]) -> float:
    """Seconds one ``defocus predict`` process takes on the example photos."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "defocus", "predict", str(REPO / "examples"), "-o", out,
               "--save", "prob,mask,overlay", "--no-progress", *extra]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0


def main() -> None:
    """Time the cases, interleaved, and print their medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="Runs per case (the median is reported).")
    args = ap.parse_args()
    times = {name: [] for name in CASES}
    for _ in range(args.runs):
        for name, extra in CASES.items():
            times[name].append(run_once(extra))
    base = statistics.median(times["--size 320"])
    rows = {name: {"median_s": round(statistics.median(t), 3), "runs_s": [round(x, 3) for x in t],
                   "ratio_to_320": round(statistics.median(t) / base, 2)} for name, t in times.items()}
    photos = [p for p in (REPO / "examples").iterdir() if p.suffix.lower() in (".jpg", ".png")]
    print(json.dumps({"machine": machine_info(), "photos": len(photos),
                      "results": rows}, indent=2))


if __name__ == "__main__":
    main()
