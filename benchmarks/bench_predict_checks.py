"""How long ``defocus predict`` takes to refuse a wrong path, from a cold process.

Usage::

    python benchmarks/bench_predict_checks.py [--runs 7]
    # the same cases with an earlier source tree too, in the same run:
    mkdir /tmp/before && git archive COMMIT src | tar -x -C /tmp/before
    python benchmarks/bench_predict_checks.py --compare-src /tmp/before/src

Each case is a fresh ``python -m defocus predict ...`` process (wall time until it exits, median of ``--runs``,
cases interleaved so that a busy machine slows them alike). The baseline, measured in the same run, is the
same command predicting one real photo (``examples/dahlia_flower.jpg``) with the bundled model: the start-up a
wrong path cost when the model was built before the paths were checked.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from defocus.bench import machine_info  # noqa: E402
PHOTO = REPO / "examples" / "dahlia_flower.jpg"
BASELINE = "baseline: one photo, bundled model"


def cases(tmp: Path) -> dict[str, list[str]]:
    """Name -> ``defocus predict`` arguments."""
    blocker = tmp / "a_file"
    blocker.write_text("not a folder")
    return {
        "missing input": [str(tmp / "missing.jpg"), "-o", str(tmp / "o1")],
        "unwritable output folder": [str(PHOTO), "-o", str(blocker / "out")],
        "unknown --save": [str(PHOTO), "-o", str(tmp / "o2"), "--save", "prob,depth"],
        "missing --model file": [str(PHOTO), "-o", str(tmp / "o3"), "--model", str(tmp / "missing.safetensors")],
        BASELINE: [str(PHOTO), "-o", str(tmp / "o4"), "--device", "cpu"],
    }


def time_process(args: list[str], src: Path) -> tuple[float, int]:
    """Wall seconds of one ``python -m defocus predict ARGS`` process running the package in ``src``, and its
    exit status."""
    env = {**os.environ, "PYTHONPATH": str(src) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "defocus", "predict", *args, "--no-progress"],
                          capture_output=True, env=env)
    return time.perf_counter() - t0, proc.returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--compare-src", type=Path, help="Also time the wrong-path cases with the package in this "
                    "source folder (e.g. an earlier commit's src/).")
    ap.add_argument("--json", help="Also write the results to this file.")
    args = ap.parse_args()
    trees = {"": REPO / "src"}
    if args.compare_src:
        trees[" [compare-src]"] = args.compare_src
    with tempfile.TemporaryDirectory() as tmp:
        todo = cases(Path(tmp))
        runs = [(name + tag, argv, src) for name, argv in todo.items() for tag, src in trees.items()
                if tag == "" or not name.startswith(BASELINE)]
        times: dict[str, list[float]] = {name: [] for name, _, _ in runs}
        codes: dict[str, int] = {}
        for _ in range(args.runs):
            for name, argv, src in runs:
                seconds, codes[name] = time_process(argv, src)
                times[name].append(seconds)
    base = statistics.median(times[BASELINE])
    rows = [{"case": name, "exit": codes[name], "median_s": round(statistics.median(t), 3),
             "min_s": round(min(t), 3), "max_s": round(max(t), 3),
             "x_faster_than_baseline": round(base / statistics.median(t), 1)} for name, t in times.items()]
    machine = machine_info()
    print(f"machine: {machine['cpu']} | {machine.get('usable_cpus')} usable CPUs | load {machine.get('load_avg_1min')}"
          f" | python {machine['python']} | {args.runs} runs per case")
    print(f"{'case':52s} {'exit':>4s} {'median s':>9s} {'min s':>7s} {'max s':>7s} {'x faster':>9s}")
    for r in rows:
        print(f"{r['case']:52s} {r['exit']:4d} {r['median_s']:9.3f} {r['min_s']:7.3f} {r['max_s']:7.3f} "
              f"{r['x_faster_than_baseline']:9.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "runs": args.runs, "results": rows}, indent=2))


if __name__ == "__main__":
    main()
