"""Speed, scaling and accuracy of the training-free methods (``defocus.classical``: LBP, HiFST).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_classical.py              # everything
    python benchmarks/bench_classical.py --skip-scores --repeats 7      # timings only
    python benchmarks/bench_classical.py --src OLD/src --json old.json  # another version of the package, same run

1. speed: median wall time of each method on a 640x427 photo (examples/dahlia_flower.jpg), after one warm-up
   call whose time (imports, JIT caches) is shown separately; the baseline measured in the same run is a
   Gaussian filter (sigma 2) of the same gray image, so that numbers taken on a loaded machine stay comparable;
2. scaling: the same photo resized to 1/4, 1 and 4 times its pixel count; time per megapixel;
3. accuracy: the 320x320 CUHK-TE-1 and DUT samples of ``../shared/data`` scored under the paper's protocol
   for other methods' saved maps (MAE on the continuous map, per image; F-beta (beta^2 = 0.3) at threshold
   0.5 with blur positive, per-image mean; IoU pooled over the dataset, blur positive, in focus = p > 0.5), next
   to the published AENet / EFENet maps of the same images;
4. real full-resolution pairs: the 13 multi-focus pairs of ``../shared/data/pairs/mfifb/mffw_*`` (real captures
   focused near and far), each image labelled by its partner: in focus where it is clearly sharper (local energy of
   the Laplacian more than twice the partner's), blurred where clearly blurrier, unscored elsewhere; MAE and mask
   accuracy over the labelled pixels, per image;
5. the example photos (``examples/``, long side 640 as ``defocus predict`` runs them): the share of each photo that
   the method's mask marks in focus.
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


def _import_package(src: Path):
    """``defocus.classical`` from the source tree ``src`` (this checkout's by default)."""
    sys.path.insert(0, str(src))
    global METHODS, predict_map, to_gray
    from defocus.classical import METHODS, predict_map  # noqa: F401
    from defocus.classical._image import to_gray  # noqa: F401


DATASETS = {
    "CUHK-TE-1 (5 samples)": ("CUHK/TE-1_btbnet320_samples", "CUHK-TE-1_btbnet320"),
    "DUT (5 samples)": ("DUT/test_samples", "DUT"),
}
PUBLISHED = ("AENet", "EFENet")
# Non-default settings scored beside the defaults: name -> (method, keyword arguments); a version of the package
# without an option skips its row.
VARIANTS = {
    "lbp, fast=True (matting + inference at 20 000 px)": ("lbp", {"fast": True}),
    "lbp, comparison='absolute' (paper text)": ("lbp", {"comparison": "absolute"}),
    "lbp, refine=False (raw metric, 21x21)": ("lbp", {"refine": False}),
}
PAIR_SETS = ("mffw",)


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
    runs.update({k: v for k, v in VARIANTS.items() if "comparison" not in v[1]})
    rows = {}
    for label, (method, kwargs) in runs.items():
        rows[label] = []
        for f in factors:
            size = (round(w * f), round(h * f))
            img = np.asarray(Image.fromarray(image).resize(size, Image.BICUBIC))
            try:
                med = statistics.median(timed(lambda: predict_map(method, img, **kwargs), repeats))
            except TypeError as exc:   # an option this version of the package lacks
                print(f"  {label}: skipped ({exc})")
                break
            mpix = size[0] * size[1] / 1e6
            rows[label].append({"width": size[0], "height": size[1], "megapixels": mpix, "median_s": med,
                                "s_per_megapixel": med / mpix})
            print(f"  {label:50s} {size[0]}x{size[1]} ({mpix:.2f} MP): {med:.3f} s, {med / mpix:.2f} s/MP",
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


def _map_sources() -> dict:
    """name -> fn(image) -> map: the methods with their defaults, then the variants."""
    sources = {name: (lambda img, n=name: predict_map(n, img)) for name in sorted(METHODS)}
    for label_v, (method, kwargs) in VARIANTS.items():
        sources[label_v] = lambda img, m=method, kw=kwargs: predict_map(m, img, **kw)
    return sources


def _predict_all(fn, images) -> list | None:
    """``fn`` on every image, or None when this version of the package lacks the option."""
    try:
        return [fn(img) for img in images]
    except TypeError as exc:
        print(f"  (skipped: {exc})")
        return None


def bench_scores(shared: Path) -> dict:
    out = {}
    for label, (sub, results_sub) in DATASETS.items():
        items = load_dataset(shared, sub)
        stems = [s for s, _, _ in items]
        masks = [m for _, _, m in items]
        sources = {name: (lambda stem, img, f=fn: f(img)) for name, fn in _map_sources().items()}
        for pub in PUBLISHED:
            folder = shared / "data" / "results" / pub / results_sub
            if folder.is_dir():
                sources[pub + " (published maps)"] = (
                    lambda stem, img, f=folder: np.asarray(Image.open(f / f"{stem}.png").convert("L")) / 255.0)
        out[label] = {}
        for name, fn in sources.items():
            t0 = time.perf_counter()
            preds = _predict_all(lambda item, f=fn: f(item[0], item[1]), [(st, img) for st, img, _ in items])
            if preds is None:
                continue
            elapsed = (time.perf_counter() - t0) / len(items)
            local = local_scores(preds, masks)
            lib = library_scores(preds, masks, stems, label)
            row = {"local": local, "library": lib, "s_per_image": elapsed}
            if lib is not None:
                for key in ("mae", "fbeta", "iou"):
                    if abs(lib[key] - local[key]) > 1e-6:
                        print(f"  WARNING {name}: {key} differs: library {lib[key]:.6f} vs local {local[key]:.6f}")
            best = f", best-threshold F {lib['max_f']:.3f}" if lib and "max_f" in lib else ""
            print(f"  {label:22s} {name:50s} MAE {local['mae']:.3f}  F {local['fbeta']:.3f}  IoU {local['iou']:.3f}"
                  f"{best}  {elapsed:.2f} s/image", flush=True)
            out[label][name] = row
    return out


# ---------------------------------------------------------------------------------------------------------------
# Real multi-focus pairs at full resolution
# ---------------------------------------------------------------------------------------------------------------

def _focus_energy(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Local energy of the Laplacian of the gray image (a sharpness measure), Gaussian-weighted."""
    gray = rgb.astype(np.float64).mean(axis=2) / 255.0
    return ndimage.gaussian_filter(ndimage.laplace(gray) ** 2, sigma)


def pair_labels(a: np.ndarray, b: np.ndarray, ratio: float = 2.0, sigma: float = 5.0, floor: float = 1e-4):
    """Labels of image ``a`` from its partner ``b`` (same scene, other focus): (in_focus, labelled) bool maps;
    in focus where ``a``'s focus energy is over ``ratio`` times ``b``'s, blurred where under 1 / ``ratio``, and
    unlabelled elsewhere or where both are textureless (energy below ``floor``)."""
    ea, eb = _focus_energy(a, sigma), _focus_energy(b, sigma)
    textured = np.maximum(ea, eb) > floor
    sharp = textured & (ea > ratio * eb)
    blurred = textured & (eb > ratio * ea)
    return sharp, sharp | blurred


def _mask_of(name: str, method: str, pred: np.ndarray) -> np.ndarray:
    try:
        from defocus.classical import mask_from_map

        return mask_from_map(method, pred)
    except ImportError:   # a version without per-method thresholds: the command line's 0.5
        return pred >= 0.5


def bench_pairs(shared: Path) -> dict:
    base = shared / "data" / "pairs" / "mfifb"
    folders = [d for d in sorted(base.iterdir()) if d.is_dir() and d.name.split("_")[0] in PAIR_SETS]
    images, labels = [], []
    for d in folders:
        a_path, b_path = sorted(p for p in d.iterdir() if p.stem.endswith(("_A", "_B")))
        a, b = load_rgb(a_path), load_rgb(b_path)
        for x, y in ((a, b), (b, a)):
            images.append(x)
            labels.append(pair_labels(x, y))
    cover = np.mean([lab.mean() for _, lab in labels])
    print(f"  {len(images)} images from {len(folders)} pairs, {images[0].shape[1]}x{images[0].shape[0]} to "
          f"{max(i.shape[1] for i in images)}x{max(i.shape[0] for i in images)}; labelled {cover:.0%} of the pixels")
    out = {"images": len(images), "labelled_fraction": float(cover)}
    for name, fn in _map_sources().items():
        method = VARIANTS[name][0] if name in VARIANTS else name
        t0 = time.perf_counter()
        preds = _predict_all(fn, images)
        if preds is None:
            continue
        elapsed = (time.perf_counter() - t0) / len(images)
        maes, accs = [], []
        for pred, (sharp, lab) in zip(preds, labels):
            maes.append(float(np.abs(pred[lab] - sharp[lab]).mean()))
            accs.append(float((_mask_of(name, method, pred)[lab] == sharp[lab]).mean()))
        out[name] = {"mae": float(np.mean(maes)), "mask_accuracy": float(np.mean(accs)), "s_per_image": elapsed}
        print(f"  {name:50s} MAE {np.mean(maes):.3f}  mask accuracy {np.mean(accs):.3f}  {elapsed:.2f} s/image",
              flush=True)
    return out


def bench_examples(folder: Path, max_side: int = 640) -> dict:
    out = {}
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() not in (".jpg", ".png"):
            continue
        img = Image.open(path).convert("RGB")
        scale = min(1.0, max_side / max(img.size))
        img = np.asarray(img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BILINEAR))
        row = {}
        for name in sorted(METHODS):
            pred = predict_map(name, img)
            row[name] = {"mask_fraction": float(_mask_of(name, name, pred).mean()),
                         "fraction_at_0.5": float((pred >= 0.5).mean())}
        out[path.name] = row
        cells = [f"{n}: mask {r['mask_fraction']:.1%} (at 0.5: {r['fraction_at_0.5']:.1%})" for n, r in row.items()]
        print(f"  {path.name:26s} " + "  ".join(cells), flush=True)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, default=REPO / "examples" / "dahlia_flower.jpg")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("DEFOCUS_SHARED", REPO.parent / "shared")))
    parser.add_argument("--src", type=Path, default=REPO / "src", help="source tree of the package to measure")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--skip-scores", action="store_true")
    parser.add_argument("--skip-pairs", action="store_true")
    parser.add_argument("--skip-examples", action="store_true")
    parser.add_argument("--json", type=Path, help="also write all numbers to this file")
    args = parser.parse_args(argv)
    _import_package(args.src)

    report = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "numpy": np.__version__, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                          "loadavg_start": os.getloadavg()}, "src": str(args.src)}
    image = load_rgb(args.image, (640, 427))
    if not args.skip_speed:
        print(f"speed on {args.image.name} resized to 640x427, median of {args.repeats}:")
        report["speed"] = bench_speed(image, args.repeats)
    if not args.skip_scaling:
        print("scaling with the pixel count:")
        report["scaling"] = bench_scaling(image, max(3, args.repeats // 2))
    have_data = (args.shared / "data").is_dir()
    if not args.skip_scores and have_data:
        print("accuracy on the real samples (paper protocol for saved maps):")
        report["scores"] = bench_scores(args.shared)
    if not args.skip_pairs and have_data:
        print("accuracy on real multi-focus pairs at full resolution (labelled pixels only):")
        report["pairs"] = bench_pairs(args.shared)
    if not have_data and not (args.skip_scores and args.skip_pairs):
        print(f"no data at {args.shared}; scores skipped")
    if not args.skip_examples:
        print("share of each example photo marked in focus:")
        report["examples"] = bench_examples(REPO / "examples")
    report["machine"]["loadavg_end"] = os.getloadavg()
    print(f"load average (1, 5, 15 min) at start {report['machine']['loadavg_start']}, "
          f"at end {report['machine']['loadavg_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
