"""Synthetic defocus renderer: speed on one CPU core, realism statistics, and a contact sheet.

    OMP_NUM_THREADS=1 python benchmarks/bench_synth.py --shared ../shared

Speed: samples/s rendering 320x320 samples from the natural photos (JPEG decode included), median of several
runs, wall clock and process CPU time (the CPU figure is the one-core cost on a shared machine), against a
baseline measured in the same run: the same renderer with the disk blurs done by direct spatial convolution
(scipy.ndimage.correlate) instead of FFT.
Realism: scene-case mix, blur-radius distribution, in-focus fraction vs the real CUHK masks, edge steepness of
in-focus / blurred regions in real and synthetic samples, sharpness-test pass rates of the sources.
Writes ``synth_contact_sheet.png``, ``synth_stats.png`` and ``synth_results.json`` next to this script and
prints a Markdown summary.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from scipy import ndimage  # noqa: E402

from defocus.data import load_pairs, read_mask  # noqa: E402
from defocus.data import synth  # noqa: E402
from defocus.data.lens import disk_kernel  # noqa: E402
from defocus.data.sharpness import SharpnessTest, edge_maps, luma, region_is_sharp, region_is_sharp_everywhere, \
    region_score  # noqa: E402
from defocus.data.transforms import train_transform  # noqa: E402

HERE = Path(__file__).resolve().parent


def _pct(a, qs=(5, 25, 50, 75, 95)):
    a = np.asarray(a, np.float64)
    return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in qs} | {
        "mean": round(float(a.mean()), 3), "min": round(float(a.min()), 3), "max": round(float(a.max()), 3)}


# --- speed ------------------------------------------------------------------------------------------------------

class _DirectBlur:
    """Baseline: the same blur by direct spatial correlation with the disk kernel."""

    def __init__(self, image, max_radius):
        self.image = np.asarray(image, np.float32)

    def __call__(self, radius):
        k = disk_kernel(radius)
        return np.stack([ndimage.correlate(c, k, mode="reflect") for c in self.image])


def _direct_disk_blur(image, radius):
    return _DirectBlur(image, radius)(radius)


def _time(ds, n, transform=None):
    w, c = time.perf_counter(), time.process_time()
    for i in range(n):
        out = ds.render(i)
        if transform is not None:
            transform(Image.fromarray(out[0]), Image.fromarray(out[1].astype(np.uint8) * 255))
    return n / (time.perf_counter() - w), n / (time.process_time() - c)


def bench_speed(sources, n, runs, n_base):
    torch.set_num_threads(1)
    tf = train_transform(320)
    res = {"ours": [], "ours+transform": [], "baseline_direct_conv": []}
    fft = (synth.DiskBlur, synth.disk_blur)
    for run in range(runs):
        ds = synth.SyntheticDefocusDataset(sources, size=320, length=n, seed=100 + run)
        ds.render(0)  # warm caches (imports, FFT plans)
        res["ours"].append(_time(ds, n))
        res["ours+transform"].append(_time(ds, n, tf))
        synth.DiskBlur, synth.disk_blur = _DirectBlur, _direct_disk_blur
        try:
            res["baseline_direct_conv"].append(_time(ds, n_base))
        finally:
            synth.DiskBlur, synth.disk_blur = fft
    out = {}
    for k, v in res.items():
        v = np.asarray(v)
        out[k] = dict(wall_samples_per_s=round(float(np.median(v[:, 0])), 1),
                      cpu_samples_per_s=round(float(np.median(v[:, 1])), 1), runs=len(v))
    out["speedup_vs_baseline_cpu"] = round(out["ours"]["cpu_samples_per_s"]
                                           / out["baseline_direct_conv"]["cpu_samples_per_s"], 1)
    out["speedup_vs_baseline_wall"] = round(out["ours"]["wall_samples_per_s"]
                                            / out["baseline_direct_conv"]["wall_samples_per_s"], 1)
    out["n"] = n
    out["n_baseline"] = n_base
    return out


# --- statistics ---------------------------------------------------------------------------------------------------

def _region_scores(img, in_focus, test):
    ratio, contrast = edge_maps(luma(img))
    out = {}
    for name, reg in (("in_focus", in_focus), ("blurred", ~in_focus)):
        reg = ndimage.binary_erosion(reg, iterations=4)
        score, npx = region_score(ratio, contrast, reg, test)
        if npx >= test.min_pixels:
            out[name] = score
    return out


def real_samples(shared):
    d = shared / "data"
    pairs = load_pairs("folder", image_dir=d / "CUHK/TE-1_btbnet320_samples/images",
                       mask_dir=d / "CUHK/TE-1_btbnet320_samples/masks")
    pairs += load_pairs("folder", image_dir=d / "DUT/test_samples/images", mask_dir=d / "DUT/test_samples/masks")
    return [(("CUHK " if "out_of_focus" in p.stem else "DUT ") + p.stem.replace("out_of_focus", ""),
             np.asarray(Image.open(p.image).convert("RGB")), read_mask(p.mask, p.mask_white)) for p in pairs]


def source_pass_rates(sources, test):
    rates = {}
    for pair in synth.index_sources(sources, near_only_sets=()):
        name = pair.image.parent.parent.name
        img = Image.open(pair.image).convert("RGB").resize((320, 320), Image.BILINEAR)
        fg = np.asarray(Image.open(pair.mask).convert("L").resize((320, 320), Image.BILINEAR)) >= 128
        ratio, contrast = edge_maps(luma(np.asarray(img)))
        r = rates.setdefault(name, Counter())
        r["n"] += 1
        r["subject"] += region_is_sharp(ratio, contrast, ndimage.binary_erosion(fg, iterations=2), test)
        r["background"] += region_is_sharp_everywhere(ratio, contrast, ~ndimage.binary_dilation(fg, iterations=4), test)
        r["frame"] += region_is_sharp_everywhere(ratio, contrast, np.ones_like(fg), test)
    return {k: {m: round(v[m] / v["n"], 3) for m in ("subject", "background", "frame")} | {"n": v["n"]}
            for k, v in rates.items()}


def calibration(sources, test, per_set=60, radii=(1.0, 1.5, 2.0, 3.0)):
    """Pass rate of the subject test (interior of the object) on sources resized to the render canvas, as
    they are and after an added disk blur of each radius: the test should pass sharp subjects and reject
    blur from about 1.5 px on."""
    rng = np.random.default_rng(0)
    out = {}
    by_set = {}
    for pair in synth.index_sources(sources, near_only_sets=()):
        by_set.setdefault(pair.image.parent.parent.name, []).append(pair)
    for name, pairs in by_set.items():
        hits = Counter()
        chosen = rng.choice(len(pairs), min(per_set, len(pairs)), replace=False)
        for k in chosen:
            img = Image.open(pairs[k].image).convert("RGB").resize((427, 320), Image.BILINEAR)
            fg = np.asarray(Image.open(pairs[k].mask).convert("L").resize((427, 320), Image.BILINEAR)) >= 128
            inner = ndimage.binary_erosion(fg, iterations=2)
            lin = synth.srgb_to_linear(np.asarray(img))
            for r in (0.0,) + tuple(radii):
                y = luma(synth.linear_to_srgb(synth.disk_blur(lin, r)) if r else np.asarray(img))
                hits[r] += region_is_sharp(*edge_maps(y), inner, test)
        out[name] = {f"r={r:g}": round(hits[r] / len(chosen), 3) for r in (0.0,) + tuple(radii)} | {"n": len(chosen)}
    return out


def bench_stats(sources, shared, n):
    ds = synth.SyntheticDefocusDataset(sources, size=320, length=n, seed=0)
    infos, scores, keep = [], [], []
    for i in range(n):
        img, in_focus, info = ds.render(i)
        infos.append(info)
        if i < 300:
            scores.append((info["case"], _region_scores(img, in_focus, ds.cfg.sharpness)))
    cases = Counter(x["case"] for x in infos)
    frac = {c: [x["in_focus_fraction"] for x in infos if x["case"] == c] for c in synth.CASES}
    radii_v, radii_h, sharp_r = [], [], []
    for x in infos:
        w, h = x["canvas"]
        squash = 320 / max(w, h)  # the long side is squashed to 320: horizontal (or vertical) radius shrinks
        blurred = []
        if x["case"] in ("near", "full"):
            blurred += [x["r_bg_far"]] + ([x["r_bg_near"]] if x["ramp"] else [])
        else:
            sharp_r.append(x["r_bg_far"])
        if x["case"] in ("far", "full"):
            blurred.append(x["r_fg"])
        else:
            sharp_r.append(x["r_fg"])
        radii_v += blurred
        radii_h += [r * squash for r in blurred]
    cuhk = [float(np.mean(read_mask(p, "in-focus"))) for p in sorted((shared / "data/CUHK/all/masks").glob("*.png"))]
    real = real_samples(shared)
    real_scores = [_region_scores(img, m, ds.cfg.sharpness) for _, img, m in real]
    out = dict(
        n=n, cases_rendered=dict(cases), cases_drawn=dict(Counter(x["drawn"] for x in infos)),
        mean_attempts=round(float(np.mean([x["attempts"] for x in infos])), 2),
        blur_radius_px_long_axis=_pct(radii_v), blur_radius_px_squashed_axis=_pct(radii_h),
        sharp_radius_px=_pct(sharp_r),
        in_focus_fraction={c: _pct(v) for c, v in frac.items() if v},
        in_focus_fraction_all=_pct([x["in_focus_fraction"] for x in infos]),
        cuhk_masks_in_focus_fraction=_pct(cuhk),
        edge_steepness=dict(
            real_in_focus=_pct([s["in_focus"] for s in real_scores if "in_focus" in s]),
            real_blurred=_pct([s["blurred"] for s in real_scores if "blurred" in s]),
            synth_in_focus=_pct([s["in_focus"] for _, s in scores if "in_focus" in s]),
            synth_blurred=_pct([s["blurred"] for _, s in scores if "blurred" in s]),
            threshold=ds.cfg.sharpness.threshold),
        ramp_fraction_of_blurred_backgrounds=round(float(np.mean([x["ramp"] for x in infos
                                                                   if x["case"] in ("near", "full")])), 3),
        jpeg_fraction=round(float(np.mean([x["jpeg_quality"] is not None for x in infos])), 3),
    )
    _plot(frac["near"], cuhk, radii_v, radii_h, HERE / "synth_stats.png")
    return out, real


def _plot(near_frac, cuhk, radii_v, radii_h, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2), dpi=80)
    bins = np.linspace(0, 1, 21)
    ax[0].hist(cuhk, bins, density=True, alpha=0.5, label=f"real CUHK masks (n={len(cuhk)})")
    ax[0].hist(near_frac, bins, density=True, alpha=0.5, label=f"synthetic, near focus (n={len(near_frac)})")
    ax[0].set_xlabel("in-focus fraction")
    ax[0].legend(fontsize=8)
    rb = np.linspace(0, 14, 29)
    ax[1].hist(radii_v, rb, alpha=0.5, label="CoC radius (px, short-side scale)")
    ax[1].hist(radii_h, rb, alpha=0.5, label="after squash to 320x320")
    ax[1].set_xlabel("blur radius of defocused layers (px at 320)")
    ax[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# --- contact sheet --------------------------------------------------------------------------------------------------

def contact_sheet(sources, real, path, thumb=96, n_synth=20):
    """Real CUHK-TE-1 / DUT samples with their ground truth, then synthetic samples (a few of each case) with
    their labels; white = in focus."""
    ds = synth.SyntheticDefocusDataset(sources, size=320, length=400, seed=0)
    want = {"near": 11, "far": 3, "wide": 2, "full": 4}
    picked = []
    for i in range(400):
        img, m, info = ds.render(i)
        if want.get(info["case"], 0) > 0:
            want[info["case"]] -= 1
            picked.append((info["case"], img, m))
        if len(picked) == n_synth:
            break
    picked.sort(key=lambda t: list(synth.CASES).index(t[0]))
    cols, label_w = 10, 70
    rows = [("real", real[:cols])] + [("synth", picked[k: k + cols]) for k in range(0, len(picked), cols)]
    sheet = Image.new("RGB", (label_w + cols * thumb, len(rows) * (2 * thumb + 14)), "white")
    draw = ImageDraw.Draw(sheet)
    y = 0
    for kind, items in rows:
        draw.text((4, y + thumb // 2), "real" if kind == "real" else "synthetic", fill="black")
        draw.text((4, y + thumb + thumb // 2), "mask", fill="black")
        for j, (name, img, m) in enumerate(items):
            x = label_w + j * thumb
            sheet.paste(Image.fromarray(img).resize((thumb, thumb), Image.BILINEAR), (x, y))
            sheet.paste(Image.fromarray((m * 255).astype(np.uint8)).resize((thumb, thumb)).convert("RGB"),
                        (x, y + thumb))
            draw.text((x + 2, y + 2 * thumb), name, fill="black")
        y += 2 * thumb + 14
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=HERE.parent.parent / "shared")
    ap.add_argument("--n-speed", type=int, default=100)
    ap.add_argument("--n-baseline", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--n-stats", type=int, default=600)
    ap.add_argument("--only", choices=["speed", "stats", "calibration"], action="append",
                    help="run only these parts (repeatable); results are merged into synth_results.json")
    args = ap.parse_args()
    parts = set(args.only or ["speed", "stats", "calibration"])
    sources = synth.list_natural_sources(args.shared / "data/natural")
    path = HERE / "synth_results.json"
    results = json.loads(path.read_text()) if path.exists() and args.only else {}
    command = "OMP_NUM_THREADS=1 python benchmarks/bench_synth.py " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("shared", "only"))
    command += "".join(f" --only {p}" for p in (args.only or []))
    results.setdefault("commands", {}).update({p: command for p in parts})
    if "speed" in parts:
        results["speed"] = bench_speed(sources, args.n_speed, args.runs, args.n_baseline)
    if "stats" in parts:
        stats, real = bench_stats(sources, args.shared, args.n_stats)
        results["stats"] = stats
        results["source_pass_rates"] = source_pass_rates(sources, SharpnessTest())
        contact_sheet(sources, real, HERE / "synth_contact_sheet.png")
    if "calibration" in parts:
        results["subject_test_calibration"] = calibration(sources, SharpnessTest())
    path.write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
