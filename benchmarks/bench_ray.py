"""Images/s of `defocus predict` in one process against `defocus predict --ray` (results: benchmarks/RESULTS.md).

The inputs are the example photos at several scales, copied until there are ``--images`` of them, in a temporary
folder. Every configuration runs the whole command in a fresh process (start-up, Ray's included, is part of what
a user waits for), writes the default outputs (prob, mask, overlay) into a fresh folder, and is timed ``--runs``
times; the configurations take turns, so machine load hits all alike. Reported: the median wall time, images/s
and the ratio to the single-process command measured in the same session.

    python benchmarks/bench_ray.py [--images 198] [--runs 3] [--scales 0.25,0.5,1.0]
        [--configs single,ray1,ray2,ray1x2] [--model default] [--json results.json]

Configurations: ``single`` (no Ray; PyTorch on all cores), ``single1t`` (no Ray, one PyTorch thread), ``rayN``
(N actors of 1 CPU each: Ray gives each actor one thread), ``ray1x2`` (one actor of 2 CPUs). Ray starts a local
instance with one CPU per core.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
#: name -> (extra command-line arguments, extra environment)
CONFIGS = {
    "single": ([], {}),
    "single1t": ([], {"OMP_NUM_THREADS": "1"}),
    "ray1": (["--ray", "--ray-concurrency", "1", "--ray-cpus", "1"], {}),
    "ray2": (["--ray", "--ray-concurrency", "2", "--ray-cpus", "1"], {}),
    "ray1x2": (["--ray", "--ray-concurrency", "1", "--ray-cpus", "2"], {}),
}


def make_inputs(folder: Path, n: int, scales: list[float]) -> int:
    """Write ``n`` images: every example photo at every scale, repeated; returns how many were written."""
    photos = sorted(p for p in EXAMPLES.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    variants = []
    for p in photos:
        with Image.open(p) as im:
            im = im.convert("RGB")
            for s in scales:
                size = (max(32, round(im.width * s)), max(32, round(im.height * s)))
                variants.append((f"{p.stem}_{int(s * 100)}", im.resize(size, Image.BILINEAR)))
    folder.mkdir(parents=True)
    for i in range(n):
        name, im = variants[i % len(variants)]
        im.save(folder / f"{i:04d}_{name}.jpg", quality=92)
    return n


def run_once(config: str, inputs: Path, out: Path, model: str) -> float:
    """Wall seconds of one ``defocus predict`` command."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "defocus", "predict", str(inputs), "-o", str(out), "--model", model,
           "--no-progress", "--device", "cpu", *CONFIGS[config][0]]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env={**os.environ, **CONFIGS[config][1]})
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{config} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=198)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scales", default="0.25,0.5,1.0")
    ap.add_argument("--configs", default="single,ray1,ray2,ray1x2")
    ap.add_argument("--model", default="default")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")

    with tempfile.TemporaryDirectory(prefix="bench_ray_") as tmp:
        tmp = Path(tmp)
        n = make_inputs(tmp / "in", args.images, [float(s) for s in args.scales.split(",")])
        pixels = sum(Image.open(p).size[0] * Image.open(p).size[1] for p in (tmp / "in").iterdir())
        print(f"{n} images, {pixels / n / 1e6:.2f} MP on average; {args.runs} runs per configuration", flush=True)
        times: dict[str, list[float]] = {c: [] for c in configs}
        for r in range(args.runs):
            for c in configs:
                times[c].append(run_once(c, tmp / "in", tmp / f"out_{c}", args.model))
                print(f"run {r + 1} {c}: {times[c][-1]:.1f} s", flush=True)

    base = statistics.median(times[configs[0]])
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"python {platform.python_version()}")
    print("| configuration | median wall s | images/s | ratio |\n|---|---|---|---|")
    results = {}
    for c in configs:
        med = statistics.median(times[c])
        results[c] = {"seconds": times[c], "median_s": med, "images_per_s": n / med, "ratio": base / med}
        print(f"| {c} | {med:.1f} | {n / med:.2f} | {base / med:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"images": n, "results": results}, indent=2))


if __name__ == "__main__":
    main()
