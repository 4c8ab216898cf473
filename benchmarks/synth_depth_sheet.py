"""Depth-aware synthetic scenes: a contact sheet for looking at them, scene statistics and rendering speed.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/synth_depth_sheet.py --shared ../shared [--config configs/synth_depth_lite2.yaml]

Renders depth-aware samples (``depth_prob`` forced to 1, the rest of the SynthConfig from the preset) from the
natural photos with object masks. Sheet tiles per sample: image | label (white in focus, black out of focus, grey
undetermined) | depth of the visible surface (bright = near, log scale) | CoC radius (black 0 px, white >= 8 px, the
in-focus band's edges in red). Statistics over ``--n`` samples: layouts and focus modes, label fractions, the share
of scenes where the focal plane cuts through the background (in-focus and out-of-focus background pixels both
present), the CoC distribution of visible pixels. Speed: samples/s on one core, median of ``--runs`` runs, against
the layered renderer (``depth_prob`` 0, same preset) in the same run. Writes ``synth_depth_sheet.png`` and
``synth_depth_results.json`` next to this script.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import replace  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import yaml  # noqa: E402
from PIL import Image  # noqa: E402

from defocus.data import synth  # noqa: E402
from defocus.engine.data import synth_config  # noqa: E402

HERE = Path(__file__).resolve().parent


def _tiles(image, in_focus, ignore, depth, coc, band) -> list:
    label = np.where(in_focus, 255, 0).astype(np.uint8)
    label[ignore] = 128
    inv = np.log(depth.min()) - np.log(depth)
    inv = 1.0 - inv / min(inv.min(), -1e-6)
    d = (255 * np.clip(inv, 0, 1)).astype(np.uint8)
    c = (255 * np.clip(coc / 8.0, 0, 1)).astype(np.uint8)
    c_rgb = np.stack([c, c, c], -1)
    edge = (np.abs(coc - band[0]) < 0.08) | (np.abs(coc - band[1]) < 0.08)
    c_rgb[edge] = (255, 0, 0)
    return [image, np.stack([label] * 3, -1), np.stack([d] * 3, -1), c_rgb]


def contact_sheet(ds, n: int, path: Path, per_row: int = 2, gap: int = 4) -> None:
    """Tiles of the first ``n`` samples of ``ds`` (depth-aware), ``per_row`` samples per row."""
    rows = []
    for i in range(n):
        image, in_focus, info = ds.render(i)
        m = info["maps"]
        rows.append(_tiles(image, in_focus, m["ignore"], m["depth"], m["coc"], ds.cfg.depth_band))
    s = rows[0][0].shape[0]
    cols = per_row * 4
    h = (n + per_row - 1) // per_row
    sheet = np.full((h * (s + gap), cols * (s + gap) + (per_row - 1) * 3 * gap, 3), 255, np.uint8)
    for k, tiles in enumerate(rows):
        r, c0 = divmod(k, per_row)
        for j, t in enumerate(tiles):
            x = (c0 * 4 + j) * (s + gap) + c0 * 3 * gap
            sheet[r * (s + gap): r * (s + gap) + s, x: x + s] = t
    Image.fromarray(sheet).save(path)


def statistics(ds, n: int) -> dict:
    """Scene and label statistics over ``n`` depth-aware samples."""
    layouts, modes = Counter(), Counter()
    fin, fign, cuts, cocs, occl = [], [], 0, [], 0
    band = ds.cfg.depth_band
    for i in range(n):
        _, in_focus, info = ds.render(i)
        m = info["maps"]
        layouts[info["layout"]] += 1
        modes[info["focus_mode"]] += 1
        fin.append(float(in_focus.mean()))
        fign.append(float(m["ignore"].mean()))
        c = m["coc"]
        cuts += bool((c < band[0]).mean() > 0.05 and (c > band[1]).mean() > 0.05)
        occl += info["occluder_radius"] is not None
        cocs.append(c.ravel()[::7])
    c = np.concatenate(cocs)
    bins = [0, 1, 1.6, 3, 6, 12, np.inf]
    hist = np.histogram(c, bins=bins)[0] / c.size
    return dict(n=n, layouts=dict(layouts), focus_modes=dict(modes), scenes_with_occluder=occl,
                in_focus_fraction_median=float(np.median(fin)), undetermined_fraction_median=float(np.median(fign)),
                scenes_with_both_in_and_out_of_focus_over_5pct=cuts / n,
                coc_share_of_pixels={f"{bins[k]}-{bins[k + 1]}": round(float(hist[k]), 3) for k in range(len(hist))})


def speed(ds, n: int, runs: int) -> float:
    """Median samples/s of rendering ``n`` samples, over ``runs`` runs (fresh epochs)."""
    rates = []
    for r in range(runs):
        ds.set_epoch(100 + r)
        t0 = time.perf_counter()
        for i in range(n):
            ds.render(i)
        rates.append(n / (time.perf_counter() - t0))
    return float(np.median(rates))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shared", default="../shared")
    ap.add_argument("--config", default=str(HERE.parent / "configs" / "synth_depth_lite2.yaml"))
    ap.add_argument("--sheet", type=int, default=16)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--speed-n", type=int, default=20)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    values = yaml.safe_load(Path(args.config).read_text())["data"]["synthetic"]["cfg"]
    cfg = synth_config(values)
    sources = synth.list_natural_sources(Path(args.shared) / "data" / "natural")
    depth = synth.SyntheticDefocusDataset(sources, size=320, length=max(args.n, args.sheet), seed=7,
                                          cfg=replace(cfg, depth_prob=1.0))
    contact_sheet(depth, args.sheet, HERE / "synth_depth_sheet.png")
    stats = statistics(depth, args.n)
    layered = synth.SyntheticDefocusDataset(sources, size=320, length=args.speed_n, seed=7,
                                            cfg=replace(cfg, depth_prob=0.0))
    stats["samples_per_s_depth"] = round(speed(depth, args.speed_n, args.runs), 2)
    stats["samples_per_s_layered"] = round(speed(layered, args.speed_n, args.runs), 2)
    stats["speed_ratio_depth_vs_layered"] = round(stats["samples_per_s_depth"] / stats["samples_per_s_layered"], 2)
    (HERE / "synth_depth_results.json").write_text(json.dumps(stats, indent=1))
    print(json.dumps(stats, indent=1))


if __name__ == "__main__":
    main()
