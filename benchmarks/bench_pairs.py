"""Real-photo yardstick: score methods on the labelled photo pairs (MFIFB focus pairs, indoor aperture pairs).

Every method predicts each image of the val and test splits once per input mode; the maps are cached on disk
(``--cache``, float16 ``.npy``) so a rerun only computes what is missing (delete a method's folder after changing
it, e.g. when a classical method changes). Scores: MAE / F-beta / IoU over the determined pixels (ignore masks),
standard protocol, blur as the positive class.

Uniform subsets: the crops of the same photos that are blurred everywhere (``<set>-blurred-<split>``) or sharp
almost everywhere (``<set>-sharp-<split>``), cut by :func:`defocus.data.uniform_crops.uniform_crops` with its
defaults into ``CACHE/uniform/<set>-<split>/`` on first use (``--no-uniform`` leaves them out). F-beta and IoU
are degenerate there (a sharp crop has no blurred pixel, the positive class), so these rows report MAE and the
mean share of determined pixels the method calls in focus (probability >= 0.5): ideally 0 on blurred crops and
1 on sharp ones.

Input modes: ``squash`` (the paper's 320x320 resize) and ``keep-aspect`` (long side 320) for networks, each also
``-no-upscale`` (a side shorter than the input size is not enlarged; ``Predictor(upscale=False)``), at each of
``--sizes`` (a size other than 320 is named in the mode: ``squash@416``), with ``--flip-tta`` each also with
the mirrored second pass (``squash@416+flip``), and with ``--refine`` each also with the edge-aware refinement of
the map (``squash@416+refine``); classical methods always see the image
with its aspect ratio kept (long side at most 640), so they have one mode, ``native``. A network's maps are
cached under its label and the first hex digits of its weights file's SHA-256, so new weights under the same
name (``default`` after an update) are predicted afresh.

    PYTHONPATH=src python benchmarks/bench_pairs.py --root /data/pairs-root --cache runs/bench_pairs \\
        --markdown benchmarks/pairs_table.md

Needs the prepared sets (``defocus data prepare mfifb|dfd --src ... --root ROOT``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np

from defocus.data import load_pairs
from defocus.data.uniform_crops import KINDS, uniform_crops
from defocus.evaluation import evaluate_maps
from defocus.maps import read_mask

NETWORK_MODES = {"squash": {"keep_aspect": False, "upscale": True},
                 "keep-aspect": {"keep_aspect": True, "upscale": True},
                 "squash-no-upscale": {"keep_aspect": False, "upscale": False},
                 "keep-aspect-no-upscale": {"keep_aspect": True, "upscale": False}}
SETS = ("mfifb", "dfd")
SPLITS = ("val", "test")


def parse_method(spec: str) -> tuple[str, dict]:
    """``default`` / a checkpoint path (network) or ``lbp`` / ``hifst`` (classical) -> (label, Predictor kwargs)."""
    if spec in ("lbp", "hifst"):
        return spec, {"method": spec}
    label = "bundled" if spec == "default" else Path(spec).stem
    return label, {"model": spec}


def cache_folder(label: str, kwargs: dict) -> str:
    """The cache folder of a method: its label, and for a network the first 10 hex digits of the SHA-256 of its
    files: the weights, and for ``default`` also the bundled ONNX file that ``defocus predict`` runs where ONNX
    Runtime is installed (so maps of an earlier export are never read back as the current model's)."""
    if "model" not in kwargs:
        return label
    from defocus.bundled import bundled_onnx, resolve_default

    digest = hashlib.sha256(Path(resolve_default(kwargs["model"])).read_bytes())
    onnx_path = bundled_onnx() if str(kwargs["model"]) == "default" else None
    if onnx_path is not None:
        digest.update(onnx_path.read_bytes())
    return f"{label}-{digest.hexdigest()[:10]}"


def network_modes(modes, sizes, flip_tta: bool = False, refine: bool = False) -> dict:
    """Mode name -> Predictor options for every input mode at every size (320 is not named); with ``flip_tta``
    each also with the mirrored second pass (named ``+flip``), with ``refine`` each also with the map's edge-aware
    refinement (named ``+refine``)."""
    out = {(m if size == 320 else f"{m}@{size}"): {**NETWORK_MODES[m], "size": size} for size in sizes for m in modes}
    base = dict(out)
    if flip_tta:
        out |= {f"{name}+flip": {**options, "flip_tta": True} for name, options in base.items()}
    if refine:
        out |= {f"{name}+refine": {**options, "refine": True} for name, options in base.items()}
    return out


def predict_cached(kwargs: dict, options: dict, pairs, cache: Path) -> float:
    """Predict every pair's image not yet in ``cache``; returns the seconds spent."""
    from defocus.inference import Predictor

    todo = [p for p in pairs if not (cache / f"{p.stem}.npy").exists()]
    if not todo:
        return 0.0
    cache.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(device="cpu", **options, **kwargs)
    t0 = time.perf_counter()
    for p in todo:
        prob = predictor.predict(str(p.image)).prob
        tmp = cache / f".{p.stem}.tmp.npy"
        np.save(tmp, np.clip(prob, 0, 1).astype(np.float16))
        tmp.replace(cache / f"{p.stem}.npy")
    return time.perf_counter() - t0


def score(cache: Path, pairs, name: str) -> dict:
    """Standard-protocol scores of the cached maps over the determined pixels of ``pairs``."""
    stems = cache / f"{name}.txt"
    stems.write_text("\n".join(p.stem for p in pairs) + "\n")
    gt_dir, ignore_dir = pairs[0].mask.parent, pairs[0].ignore.parent
    rep = evaluate_maps(cache, gt_dir, list_file=stems, protocol="standard", ignore_dir=ignore_dir,
                        dataset=name, skip_missing=True)
    return {k: rep.metrics[k] for k in ("n", "mae", "fbeta", "iou")} | {"skipped": len(rep.skipped)}


def uniform_pairs(root: Path, cache: Path, ds: str, split: str) -> dict:
    """Kind -> the (image, mask) pairs of the uniform crops of ``<ds>-<split>`` (cut into the cache once)."""
    out = cache / "uniform" / f"{ds}-{split}"
    if not all((out / f"{k}.txt").is_file() for k in KINDS):
        pairs = load_pairs(f"{ds}-{split}", root)
        uniform_crops(pairs[0].image.parent.parent, [p.stem for p in pairs], out)
    every = {p.stem: p for p in load_pairs("folder", image_dir=out / "images", mask_dir=out / "masks",
                                            ignore_dir=out / "ignore")}
    return {k: [every[s] for s in (out / f"{k}.txt").read_text().split()] for k in KINDS}


def in_focus_calls(cache: Path, pairs, threshold: float = 0.5) -> float:
    """Mean over ``pairs`` of the share of determined pixels whose cached in-focus probability is >= threshold."""
    shares = []
    for p in pairs:
        prob = np.load(cache / f"{p.stem}.npy").astype(np.float32)
        determined = ~read_mask(p.ignore)
        if prob.shape != determined.shape:
            raise ValueError(f"{p.stem}: prediction {prob.shape} and mask {determined.shape} differ in size")
        shares.append(float((prob[determined] >= threshold).mean()))
    return float(np.mean(shares))


def score_uniform(cache: Path, pairs, name: str) -> dict:
    """MAE over the determined pixels (standard protocol) and the share of them called in focus."""
    mae = score(cache, pairs, name)
    return {"n": mae["n"], "mae": mae["mae"], "called_in_focus": in_focus_calls(cache, pairs),
            "skipped": mae["skipped"]}


def run(args) -> list[dict]:
    """Predict (cached) and score every method x mode x set x split; returns one row per combination."""
    import torch

    torch.set_num_threads(args.threads)
    rows = []
    for spec in args.methods:
        label, kwargs = parse_method(spec)
        folder = args.cache / cache_folder(label, kwargs)
        modes = ({"native": {}} if "method" in kwargs
                 else network_modes(args.modes, args.sizes, args.flip_tta, args.refine))
        for mode, options in modes.items():
            for ds in SETS:
                for split in args.splits:
                    name = f"{ds}-{split}"
                    pairs = load_pairs(name, args.root)
                    cache = folder / mode / ds
                    secs = predict_cached(kwargs, options, pairs, cache)
                    row = {"method": label, "mode": mode, "dataset": name, **score(cache, pairs, name)}
                    rows.append(row)
                    logging.info("%s %s %s: MAE %.4f F %.4f IoU %.4f (%d images, %.0f s predicting)", label, mode,
                                 name, row["mae"], row["fbeta"], row["iou"], row["n"], secs)
                    if not args.uniform:
                        continue
                    for kind, crops in uniform_pairs(args.root, args.cache, ds, split).items():
                        if not crops:
                            continue
                        sub = f"{ds}-{kind}-{split}"
                        secs = predict_cached(kwargs, options, crops, folder / mode / f"{ds}-uniform")
                        row = {"method": label, "mode": mode, "dataset": sub,
                               **score_uniform(folder / mode / f"{ds}-uniform", crops, sub)}
                        rows.append(row)
                        logging.info("%s %s %s: MAE %.4f, called in focus %.4f (%d crops, %.0f s predicting)",
                                     label, mode, sub, row["mae"], row["called_in_focus"], row["n"], secs)
    return rows


def _table_lines(rows: list[dict], cols: list[str], header: str, cell) -> list[str]:
    """One Markdown table: a line per (method, mode), a cell per dataset in ``cols`` (``cell(row)``, "-" if none)."""
    lines = ["| method | input | " + " | ".join(f"{c} {header}" for c in cols) + " |", "|" + "---|" * (2 + len(cols))]
    for method, mode in dict.fromkeys((r["method"], r["mode"]) for r in rows):
        cells = []
        for c in cols:
            r = next((r for r in rows if (r["method"], r["mode"], r["dataset"]) == (method, mode, c)), None)
            cells.append("-" if r is None else cell(r))
        lines.append(f"| {method} | {mode} | " + " | ".join(cells) + " |")
    return lines


def markdown(rows: list[dict]) -> str:
    """One line per method and mode, MAE / F / IoU per set and split; then the uniform crops' MAE / called in
    focus."""
    cols = [f"{ds}-{sp}" for ds in SETS for sp in SPLITS]
    lines = _table_lines(rows, cols, "MAE / F / IoU", lambda r: f"{r['mae']:.3f} / {r['fbeta']:.3f} / {r['iou']:.3f}")
    uniform = [f"{ds}-{k}-{sp}" for sp in SPLITS for ds in SETS for k in KINDS]
    uniform = [c for c in uniform if any(r["dataset"] == c for r in rows)]
    if uniform:
        lines += [""] + _table_lines(rows, uniform, "MAE / called in focus",
                                     lambda r: f"{r['mae']:.3f} / {r['called_in_focus']:.3f}")
    return "\n".join(lines) + "\n"


def main():
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="Data root holding MFIFB/ and DFD/.")
    ap.add_argument("--cache", type=Path, default=Path("runs/bench_pairs"), help="Prediction cache.")
    ap.add_argument("--methods", nargs="+", default=["default", "lbp", "hifst"],
                    help="default (bundled), checkpoint paths, lbp, hifst.")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    ap.add_argument("--splits", nargs="+", default=list(SPLITS), choices=SPLITS,
                    help="Splits to score (model selection: val only).")
    ap.add_argument("--modes", nargs="+", default=["squash", "keep-aspect"], choices=list(NETWORK_MODES),
                    help="Input modes of the networks.")
    ap.add_argument("--sizes", nargs="+", type=int, default=[320],
                    help="Network input sizes (square side, or long side with keep-aspect).")
    ap.add_argument("--flip-tta", action="store_true",
                    help="Also score each network mode with the mirrored second pass (Predictor(flip_tta=True)).")
    ap.add_argument("--refine", action="store_true",
                    help="Also score each network mode with the map's edge-aware refinement (Predictor(refine=True)).")
    ap.add_argument("--uniform", action=argparse.BooleanOptionalAction, default=True,
                    help="Also score the uniform crops (blurred everywhere / sharp almost everywhere).")
    ap.add_argument("--json", type=Path, help="Write the rows as JSON.")
    ap.add_argument("--markdown", type=Path, help="Write the table as Markdown.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("defocus").setLevel(logging.WARNING)
    rows = run(args)
    table = markdown(rows)
    print(table)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    if args.markdown:
        args.markdown.write_text(table)


if __name__ == "__main__":
    main()
