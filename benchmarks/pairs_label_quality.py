"""Label quality of the photo-pair labels (defocus.data.pairs): coverage, agreement, depth check, stability.

For each subset of the prepared sets (MFIFB by source collection, and the indoor aperture pairs):
- images kept, median undetermined fraction, median in-focus fraction (of the determined pixels);
- focus pairs: the agreement of A's and B's labels where both are determined (exactly one in focus);
- aperture pairs: the share of in-focus pixels (with a depth reading) inside the scene's dominant depth band
  (the +-``BAND`` relative depth interval holding most in-focus pixels), and the share of blurred pixels inside
  that same band (a control: it should be much lower);
- stability: every pair relabelled with the window halved / doubled and the margin at 1.5 / 3; per setting the
  agreement with the default labels over pixels determined in both, and the determined fraction.

    PYTHONPATH=src python benchmarks/pairs_label_quality.py --root ROOT --mfifb-src ../shared/data/pairs/mfifb \\
        --dfd-src ../shared/data/pairs/dfd_indoor --json runs/pairs_quality.json
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

from defocus.data import load_pairs
from defocus.data.pair_sets import mfifb_collection, mfifb_scene
from defocus.data.pairs import FOCUS, PairError, PairLabelConfig, label_files, read_ignore

BAND = 0.25
VARIANTS = {"window x0.5": {"window": 0.01}, "window x2": {"window": 0.04},
            "margin 1.5": {"margin": 1.5}, "margin 3": {"margin": 3.0}}


def read_label(pair) -> tuple[np.ndarray, np.ndarray]:
    """(in focus, undetermined) of a prepared sample."""
    with Image.open(pair.mask) as m:
        focus = np.asarray(m.convert("L")) >= 128
    return focus, read_ignore(pair.ignore)


def dominant_band_share(depth: np.ndarray, focus: np.ndarray, blur: np.ndarray, band: float = BAND):
    """(share of in-focus pixels, share of blurred pixels) with a depth reading inside the relative depth band
    ``[d / (1 + band), d * (1 + band)]`` that holds the most in-focus pixels; None without enough readings."""
    ok = depth > 0
    d_focus, d_blur = depth[focus & ok].astype(np.float64), depth[blur & ok].astype(np.float64)
    if d_focus.size < 100:
        return None
    logs = np.sort(np.log(d_focus))
    width = np.log(1 + band)
    # the best window of log-width 2 * width over the sorted in-focus depths
    hi = np.searchsorted(logs, logs + 2 * width, side="right")
    k = int(np.argmax(hi - np.arange(logs.size)))
    lo_d, hi_d = np.exp(logs[k]), np.exp(logs[k] + 2 * width)
    inside = lambda d: float(np.mean((d >= lo_d) & (d <= hi_d))) if d.size else float("nan")
    return inside(d_focus), inside(d_blur)


def subset_rows(root: Path, dfd_src: Path | None) -> list[dict]:
    """Coverage, agreement and depth-band rows per subset."""
    rows = []
    mf = load_pairs("mfifb", root)
    groups: dict = {}
    for p in mf:
        groups.setdefault(mfifb_collection(mfifb_scene(p.stem)), []).append(p)
    for name, pairs in sorted(groups.items()):
        labels = {p.stem: read_label(p) for p in pairs}
        und = [u.mean() for _, u in labels.values()]
        inf = [f[~u].mean() for f, u in labels.values() if (~u).any()]
        agree = []
        for stem, (fa, ua) in labels.items():
            if stem.endswith("_A") and stem[:-2] + "_B" in labels:
                fb, ub = labels[stem[:-2] + "_B"]
                both = ~ua & ~ub
                if both.any():
                    agree.append(float(np.mean(fa[both] != fb[both])))
        rows.append({"subset": f"mfifb/{name}", "images": len(pairs), "median_undetermined": float(np.median(und)),
                     "median_in_focus": float(np.median(inf)), "pair_agreement_min": float(np.min(agree)),
                     "pairs": len(agree)})
    dfd = load_pairs("dfd", root)
    labels = {p.stem: read_label(p) for p in dfd}
    row = {"subset": "dfd", "images": len(dfd),
           "median_undetermined": float(np.median([u.mean() for _, u in labels.values()])),
           "median_in_focus": float(np.median([f[~u].mean() for f, u in labels.values() if (~u).any()]))}
    if dfd_src is not None:
        shares = []
        with (dfd_src / "pairs.csv").open(newline="") as f:
            depth_of = {r["stem"]: dfd_src / r["depth"] for r in csv.DictReader(f) if r.get("depth")}
        for stem, (focus, und) in labels.items():
            path = depth_of.get(stem)
            if path is None or not path.is_file():
                continue
            depth = np.asarray(Image.open(path))
            if depth.shape != focus.shape:
                continue
            s = dominant_band_share(depth, focus & ~und, ~focus & ~und)
            if s is not None:
                shares.append(s)
        sh = np.asarray(shares)
        row.update(depth_scenes=len(sh), in_focus_in_band_median=float(np.median(sh[:, 0])),
                   blurred_in_band_median=float(np.nanmedian(sh[:, 1])))
    rows.append(row)
    return rows


def stability_rows(mfifb_src: Path, dfd_src: Path, root: Path) -> list[dict]:
    """Agreement of relabelled pairs (window / margin changed) with the default labels."""
    from defocus.data.pair_sets import aperture_pairs, excluded_pairs, focus_pairs

    kept = {p.stem for p in load_pairs("mfifb", root)} | {p.stem for p in load_pairs("dfd", root)}
    excl = excluded_pairs()
    pairs = [p for p in focus_pairs(mfifb_src) if p.scene not in excl] + aperture_pairs(dfd_src)
    pairs = [p for p in pairs if p.stems[0] in kept]
    default = PairLabelConfig()
    stats = {name: {"mfifb": [], "dfd": []} for name in VARIANTS}
    for p in pairs:
        kind = "mfifb" if p.kind == FOCUS else "dfd"
        try:
            _, _, base = label_files(p.first, p.second, p.kind, default)
        except PairError:
            continue
        for name, change in VARIANTS.items():
            try:
                _, _, alt = label_files(p.first, p.second, p.kind, default.replace(**change))
            except PairError:
                stats[name][kind].append((float("nan"), 0.0, base.first.determined_fraction))
                continue
            both = ~base.first.undetermined & ~alt.first.undetermined
            agree = float(np.mean(base.first.in_focus[both] == alt.first.in_focus[both])) if both.any() else np.nan
            stats[name][kind].append((agree, alt.first.determined_fraction, base.first.determined_fraction))
    rows = []
    for name, by_kind in stats.items():
        for kind, vals in by_kind.items():
            v = np.asarray(vals)
            rows.append({"variant": name, "set": kind, "images": len(v),
                         "agreement_median": float(np.nanmedian(v[:, 0])), "agreement_min": float(np.nanmin(v[:, 0])),
                         "determined_median": float(np.median(v[:, 1])),
                         "default_determined_median": float(np.median(v[:, 2]))})
    return rows


def main():
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--mfifb-src", type=Path)
    ap.add_argument("--dfd-src", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    out = {"subsets": subset_rows(args.root, args.dfd_src)}
    for r in out["subsets"]:
        print(json.dumps(r))
    if args.mfifb_src and args.dfd_src:
        out["stability"] = stability_rows(args.mfifb_src, args.dfd_src, args.root)
        for r in out["stability"]:
            print(json.dumps(r))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
