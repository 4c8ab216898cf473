"""Time and peak memory of ``defocus predict`` on very large JPEGs (results: benchmarks/RESULTS.md, "Large
photos").

Generates JPEGs of the given sizes (default 24, 81 and 150 megapixels; the example dahlia enlarged, with
sensor-like noise so that they compress like photos), then runs
``defocus predict PHOTO -o OUT --save prob,mask,overlay --max-pixels 0`` in a fresh process per run,
alternating the current source and a baseline source tree (``--baseline-src``: e.g.
``git archive <commit> src | tar -x -C /tmp/base``), and reports the median wall time and peak RSS (``VmHWM``
read by the process itself as it ends: a child's ``ru_maxrss`` would include the parent's memory at the fork).
With ``--parity`` it also compares the bundled model's low-resolution map on the first photo: the default's
reduced-scale decode against a full decode (``draft_pixels=0``).

    python benchmarks/bench_large_photos.py [--sizes 24,81,150] [--runs 3] [--baseline-src /tmp/base/src]
        [--baseline-sizes 24,81] [--parity] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "dahlia_flower.jpg"


def make_photo(path: Path, megapixels: float, seed: int = 0) -> tuple[int, int]:
    """A 3:2 JPEG of about ``megapixels`` (quality 90), generated band by band."""
    import numpy as np
    from PIL import Image

    h = int(round((megapixels * 1e6 / 1.5) ** 0.5))
    w = int(round(h * 1.5))
    src = Image.open(EXAMPLE).convert("RGB").resize((w, h), Image.BICUBIC)
    rng = np.random.default_rng(seed)
    out = Image.new("RGB", (w, h))
    step = 512
    for y in range(0, h, step):
        band = np.asarray(src.crop((0, y, w, min(h, y + step))), np.int16)
        band = band + rng.integers(-6, 7, band.shape, dtype=np.int16)
        out.paste(Image.fromarray(np.clip(band, 0, 255).astype(np.uint8), "RGB"), (0, y))
    del src
    out.save(path, quality=90)
    return w, h


# Runs the command line in this process, then records the process's own peak RSS.
WRAPPER = """
import sys
from defocus.cli import main
report, sys.argv = sys.argv[1], ["defocus"] + sys.argv[2:]
try:
    main()
except SystemExit as e:
    code = e.code
else:
    code = 0
with open("/proc/self/status") as f:
    hwm = [line.split()[1] for line in f if line.startswith("VmHWM:")][0]
open(report, "w").write(hwm)
sys.exit(code)
"""


def run_predict(src: Path, photo: Path, out: Path, threads: int) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``defocus predict`` process."""
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS=str(threads))
    report = out.with_suffix(".hwm")
    cmd = [sys.executable, "-c", WRAPPER, str(report), "predict", str(photo), "-o", str(out), "--save",
           "prob,mask,overlay", "--max-pixels", "0", "--no-progress"]
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"{src}: predict {photo.name} failed: {r.stderr.strip()[-500:]}")
    return dt, int(report.read_text()) / 1024


def _in_child(fn, *args):
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def parity(photo: Path) -> dict:
    """Max |prob difference| of the low-resolution map: reduced-scale decode (default) vs full decode."""
    import numpy as np

    sys.path.insert(0, str(REPO / "src"))
    from defocus import Predictor

    a = Predictor(device="cpu").predict(photo).prob_lowres
    b = Predictor(device="cpu", draft_pixels=0).predict(photo).prob_lowres
    return {"max_abs_diff_prob": float(np.abs(a - b).max()), "mean_abs_diff_prob": float(np.abs(a - b).mean()),
            "mask_disagreement": float(np.mean((a >= 0.5) != (b >= 0.5)))}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="24,81,150", help="Megapixels of the generated JPEGs.")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--baseline-src", help="A source tree (folder holding 'defocus') to compare against.")
    ap.add_argument("--baseline-sizes", default="24,81", help="Sizes run with the baseline (its memory grows "
                    "with the photo).")
    ap.add_argument("--parity", action="store_true")
    ap.add_argument("--json")
    args = ap.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    base_sizes = {float(s) for s in args.baseline_sizes.split(",") if s}
    sources = {"current": REPO / "src"}
    if args.baseline_src:
        sources["baseline"] = Path(args.baseline_src)
    results = {"machine": {"cpus": os.cpu_count(), "threads": args.threads, "python": sys.version.split()[0]},
               "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mp in sizes:
            photo = tmp / f"photo_{mp:g}mp.jpg"
            w, h = _in_child(make_photo, photo, mp)  # this process stays small
            srcs = {k: v for k, v in sources.items() if k == "current" or mp in base_sizes}
            times = {k: [] for k in srcs}
            rss = {k: [] for k in srcs}
            for _ in range(args.runs):
                for name, src in srcs.items():
                    dt, peak = run_predict(src, photo, tmp / "out", args.threads)
                    times[name].append(dt)
                    rss[name].append(peak)
            for name in srcs:
                row = {"source": name, "megapixels": round(w * h / 1e6, 1), "size": f"{w}x{h}",
                       "jpeg_mb": round(photo.stat().st_size / 1e6, 1),
                       "median_s": round(statistics.median(times[name]), 2),
                       "median_peak_rss_mb": round(statistics.median(rss[name])),
                       "runs_s": [round(t, 2) for t in times[name]], "runs_peak_rss_mb": [round(r) for r in rss[name]]}
                results["rows"].append(row)
                print(json.dumps(row), flush=True)
            if args.parity and mp == sizes[0]:
                results["parity"] = {"photo": f"{w}x{h}", **_in_child(parity, photo)}
                print(json.dumps(results["parity"]), flush=True)
            photo.unlink()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
