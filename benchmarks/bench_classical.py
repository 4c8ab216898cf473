"""Speed, scaling and accuracy of the training-free methods (``defocus.classical``: LBP, HiFST).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_classical.py              # everything
    python benchmarks/bench_classical.py --skip-scores --repeats 7      # timings only

1. speed: median wall time of each method on a 640x427 photo (examples/dahlia_flower.jpg), after one warm-up
   call whose time (imports, JIT caches) is shown separately; the baseline measured in the same run is a
   Gaussian filter (sigma 2) of the same gray image, so that numbers taken on a loaded machine stay comparable;
2. scaling: the same photo resized to 1/4, 1 and 4 times its pixel count; time per megapixel;
3. accuracy: the 320x320 CUHK-TE-1 and DUT samples of ``../shared/data`` scored under the paper's protocol
   for other methods' saved maps (MAE on the continuous map, per image; F-beta (beta^2 = 0.3) at threshold
   0.5 with blur positive, per-image mean; IoU pooled over the dataset, blur positive, in focus = p > 0.5), next
   to the published AENet / EFENet maps of the same images.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from defocus.classical import METHODS, predict_map  # noqa: E402
from defocus.classical._image import to_gray  # noqa: E402

DATASETS = {
    "CUHK-TE-1 (5 samples)": ("CUHK/TE-1_btbnet320_samples", "CUHK-TE-1_btbnet320"),
    "DUT (5 samples)": ("DUT/test_samples", "DUT"),
}
PUBLISHED = ("AENet", "EFENet")
# Non-default settings scored beside the defaults: name -> (method, keyword arguments).
VARIANTS = {
    "lbp, refine=False (raw metric, 21x21)": ("lbp", {"refine": False}),
}


def timed(fn, repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls of ``fn``."""
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def load_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    img = Image.open(path).convert("RGB")
    if size is not None and img.size != size:
        img = img.resize(size, Image.BICUBIC)
    return np.asarray(img)


def bench_speed(image: np.ndarray, repeats: int) -> dict:
    gray = to_gray(image)
    baseline = statistics.median(timed(lambda: ndimage.gaussian_filter(gray, 2.0), repeats))
    rows = {"baseline_gaussian_s": baseline}
    for name in sorted(METHODS):
        t0 = time.perf_counter()
        predict_map(name, image)
        first = time.perf_counter() - t0
        times = timed(lambda: predict_map(name, image), repeats)
        med = statistics.median(times)
        rows[name] = {"first_call_s": first, "median_s": med, "min_s": min(times), "max_s": max(times),
                      "ratio_to_baseline": med / baseline}
        print(f"  {name:6s} median {med:.3f} s (min {min(times):.3f}, max {max(times):.3f}, first call {first:.2f} s)"
              f"  = {med / baseline:.0f} x baseline", flush=True)
    print(f"  baseline gaussian_filter(sigma=2): {baseline * 1e3:.1f} ms")
    return rows


def bench_scaling(image: np.ndarray, repeats: int, factors=(0.5, 1.0, 2.0)) -> dict:
    h, w = image.shape[:2]
    runs = {name: (name, {}) for name in sorted(METHODS)}
    runs.update(VARIANTS)
    rows = {}
    for label, (method, kwargs) in runs.items():
        rows[label] = []
        for f in factors:
            size = (round(w * f), round(h * f))
            img = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
            med = statistics.median(timed(lambda: predict_map(method, img, **kwargs), repeats))
            mpix = size[0] * size[1] / 1e6
            rows[label].append({"width": size[0], "height": size[1], "megapixels": mpix, "median_s": med,
                                "s_per_megapixel": med / mpix})
            print(f"  {label:38s} {size[0]}x{size[1]} ({mpix:.2f} MP): {med:.3f} s, {med / mpix:.2f} s/MP",
                  flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------------------------

def local_scores(preds: list[np.ndarray], masks: list[np.ndarray]) -> dict:
    """The paper's protocol for saved maps, written out (used when ``defocus.metrics`` is not available)."""
    maes, fs = [], []
    inter = union = 0
    for pred, in_focus in zip(preds, masks):
        maes.append(float(np.abs(pred.astype(np.float64) - in_focus).mean()))
        blur_gt = ~in_focus
        blur_f = ~(pred >= 0.5)
        tp = np.count_nonzero(blur_f & blur_gt)
        p = tp / (np.count_nonzero(blur_f) + 1e-20)
        r = tp / (np.count_nonzero(blur_gt) + 1e-20)
        fs.append(1.3 * p * r / (0.3 * p + r + 1e-10))
        blur_iou = ~(pred > 0.5)
        inter += np.count_nonzero(blur_iou & blur_gt)
        union += np.count_nonzero(blur_iou | blur_gt)
    return {"mae": float(np.mean(maes)), "fbeta": float(np.mean(fs)), "iou": inter / union if union else float("nan")}


def library_scores(preds, masks, stems, dataset) -> dict | None:
    """The same numbers from ``defocus.metrics`` (plus the best F over thresholds), or None if unavailable."""
    try:
        from defocus.metrics import Scorer, get_protocol

        scorer = Scorer(get_protocol("paper-external"), dataset=dataset, curves=True)
        for stem, pred, mask in zip(stems, preds, masks):
            scorer.add(stem, pred, mask)
        return scorer.summary()
    except Exception as exc:  # the metrics module is optional for this script
        print(f"  (defocus.metrics not used: {type(exc).__name__}: {exc})")
        return None


def load_dataset(shared: Path, sub: str):
    base = shared / "data" / sub
    items = []
    for path in sorted((base / "images").iterdir()):
        mask = np.asarray(Image.open(base / "masks" / f"{path.stem}.png").convert("L")) > 127  # 255 = in focus
        items.append((path.stem, load_rgb(path), mask))
    return items


def bench_scores(shared: Path) -> dict:
    out = {}
    for label, (sub, results_sub) in DATASETS.items():
        items = load_dataset(shared, sub)
        stems = [s for s, _, _ in items]
        masks = [m for _, _, m in items]
        sources = {name: (lambda img, n=name: predict_map(n, img)) for name in sorted(METHODS)}
        for label_v, (method, kwargs) in VARIANTS.items():
            sources[label_v] = lambda img, stem, m=method, kw=kwargs: predict_map(m, img, **kw)
        for pub in PUBLISHED:
            folder = shared / "data" / "results" / pub / results_sub
            if folder.is_dir():
                sources[pub + " (published maps)"] = (
                    lambda img, stem, f=folder: np.asarray(Image.open(f / f"{stem}.png").convert("L")) / 255.0)
        out[label] = {}
        for name, fn in sources.items():
            t0 = time.perf_counter()
            if name in METHODS:
                preds = [fn(img) for _, img, _ in items]
            else:
                preds = [fn(img, stem) for stem, img, _ in items]
            elapsed = (time.perf_counter() - t0) / len(items)
            local = local_scores(preds, masks)
            lib = library_scores(preds, masks, stems, label)
            row = {"local": local, "library": lib, "s_per_image": elapsed}
            if lib is not None:
                for key in ("mae", "fbeta", "iou"):
                    if abs(lib[key] - local[key]) > 1e-6:
                        print(f"  WARNING {name}: {key} differs: library {lib[key]:.6f} vs local {local[key]:.6f}")
            best = f", best-threshold F {lib['max_f']:.3f}" if lib and "max_f" in lib else ""
            print(f"  {label:22s} {name:38s} MAE {local['mae']:.3f}  F {local['fbeta']:.3f}  IoU {local['iou']:.3f}"
                  f"{best}", flush=True)
            out[label][name] = row
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "dahlia_flower.jpg")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("DEFOCUS_SHARED", REPO.parent / "shared")))
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-scores", action="store_true")
    parser.add_argument("--json", type=Path, help="also write all numbers to this file")
    args = parser.parse_args(argv)

    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "numpy": np.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          "loadavg_start": os.getloadavg()}}
    image = load_rgb(args.image, (640, 427))
    if not args.skip_speed:
        print(f"speed on {args.image.name} resized to 640x427, median of {args.repeats}:")
        report["speed"] = bench_speed(image, args.repeats)
    if not args.skip_scaling:
        print("scaling with the pixel count:")
        report["scaling"] = bench_scaling(image, max(3, args.repeats // 2))
    if not args.skip_scores:
        if (args.shared / "data").is_dir():
            print("accuracy on the real samples (paper protocol for saved maps):")
            report["scores"] = bench_scores(args.shared)
        else:
            print(f"no data at {args.shared}; scores skipped")
    report["machine"]["loadavg_end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {report['machine']['loadavg_start']}, "
          f"at end {report['machine']['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
