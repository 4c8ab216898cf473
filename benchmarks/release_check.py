"""Release check of a model on photos kept aside from training and selection: one command, one verdict.

    python benchmarks/release_check.py --images PHOTOS --gt MASKS --out OUT [--blurred BLURRED_PHOTOS]

* Runs the model as ``defocus predict`` runs it (the bundled model: 512, small photos not enlarged; ``--refine``:
  with the map's edge-aware refinement, as ``defocus predict --refine``) and the training-free baselines (HiFST,
  LBP) on every photo with a mask, writing ``OUT/maps/<label>/<stem>_prob.png`` (maps already there are reused,
  so an interrupted check resumes).
* Scores them under the paper protocol (human masks, no ignore masks), checks the model against the release
  bounds (``--require``, default ``mae<=0.08`` and ``iou>=0.92``) and gives each baseline's paired bootstrap
  difference to the model.
* ``--blurred DIR``: photos blurred everywhere (no masks needed: every pixel is blurred), scored with all-blur
  masks, so that a model that wins on the masked photos by calling more of everything sharp is seen.
* Draws the photos the model gets most wrong (photo, mask, model, baselines) to ``OUT/worst.png``.

Writes ``OUT/report.md`` and ``OUT/per_image.csv``, prints the report, and exits with status 3 when a bound is
missed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import defocus
from defocus.acceptance import check_requirements
from defocus.bootstrap import bootstrap_markdown, bootstrap_table
from defocus.evaluation import ReportTable, index_folder
from defocus.imageio import decode_rgb, displayed_size
from defocus.maps import read_map, read_mask
from defocus.sheets import panel_sheet

RELEASE_BOUNDS = ("mae<=0.08", "iou>=0.92")
THUMB_HEIGHT = 160


def predict_maps(predictor, photos: dict[str, Path], out_dir: Path) -> Path:
    """Write ``<stem>_prob.png`` for every photo that has none yet; returns ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, path in sorted(photos.items()):
        if not (out_dir / f"{stem}_prob.png").exists():
            predictor.predict(path).save(out_dir, what=("prob",), stem=stem)
    return out_dir


def all_blur_masks(photos: dict[str, Path], out_dir: Path) -> Path:
    """A black (blurred everywhere) mask of each photo's displayed size, for photos blurred everywhere."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stem, path in photos.items():
        with Image.open(path) as im:
            Image.new("L", displayed_size(im), 0).save(out_dir / f"{stem}.png")
    return out_dir


def as_panel(in_focus) -> Image.Image:
    """A [0, 1] map or a boolean mask as an 8-bit image (white = in focus)."""
    return Image.fromarray((np.asarray(in_focus, np.float32) * 255).round().astype(np.uint8))


def worst_sheet(table: ReportTable, model_label: str, photos, gt_dir: Path, gt_polarity: str, map_dirs: dict,
                path: Path, n: int):
    """Photo | mask | each method's map, for the ``n`` photos with the model's highest MAE; returns their stems."""
    report = next(r for r in table if r.method == model_label)
    worst = sorted(report.images, key=lambda s: s.mae, reverse=True)[:n]
    masks = index_folder(gt_dir)
    rows = []
    for s in worst:
        in_focus = read_mask(masks[s.stem])
        rows.append([decode_rgb(photos[s.stem])[0], as_panel(~in_focus if gt_polarity == "blur" else in_focus)]
                    + [as_panel(read_map(d / f"{s.stem}_prob.png")) for d in map_dirs.values()])
    if rows:
        panel_sheet(rows, THUMB_HEIGHT, nearest=(1,)).save(path)
    return [(s.stem, s.mae) for s in worst]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=Path, required=True, help="photos kept aside, with human masks")
    ap.add_argument("--gt", type=Path, required=True, help="their masks (255 = in focus unless --gt-polarity blur)")
    ap.add_argument("--gt-polarity", default="in-focus", choices=("in-focus", "blur"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--model", default="default", help="the model to check (default: the bundled one)")
    ap.add_argument("--label", default="model")
    ap.add_argument("--refine", action="store_true", help="check the model with its maps refined (--refine)")
    ap.add_argument("--baselines", nargs="*", default=["hifst", "lbp"])
    ap.add_argument("--blurred", type=Path, help="photos blurred everywhere (no masks)")
    ap.add_argument("--require", nargs="*", default=list(RELEASE_BOUNDS))
    ap.add_argument("--bootstrap", type=int, default=2000)
    ap.add_argument("--worst", type=int, default=8)
    args = ap.parse_args(argv)

    masks = index_folder(args.gt)
    photos = {s: p for s, p in index_folder(args.images).items() if s in masks}
    if not photos:
        ap.error(f"no photo in {args.images} has a mask in {args.gt}")
    predictors = {args.label: defocus.Predictor(args.model, refine=args.refine)}
    predictors.update({m: defocus.Predictor(method=m) for m in args.baselines})

    map_dirs = {label: predict_maps(p, photos, args.out / "maps" / label) for label, p in predictors.items()}
    labels = list(map_dirs)
    table = defocus.evaluate(pred=list(map_dirs.values()), gt=args.gt, gt_polarity=args.gt_polarity,
                             method=labels, dataset="kept-aside", pred_suffix="_prob")
    verdicts = check_requirements([table[args.label, "kept-aside"]], args.require)
    refined = ", maps refined" if args.refine else ""
    parts = [f"# Release check: {args.label} ({args.model}{refined}) on {len(photos)} photos kept aside", "",
             "Paper protocol (MAE of the continuous map, Fβ and IoU at 0.5, blur the positive class).", "",
             table.to_markdown(), "## Bounds", ""]
    parts += [f"- {v.to_line()}" for v in verdicts]
    if len(labels) > 1 and args.bootstrap:
        parts += ["", "## Paired bootstrap (each baseline minus the model, same photos)", "",
                  bootstrap_markdown(bootstrap_table(table, reference=args.label, n_resamples=args.bootstrap))]
    (args.out / "per_image.csv").write_text(table.images_to_csv())

    if args.blurred is not None:
        blurred = index_folder(args.blurred)
        blur_masks = all_blur_masks(blurred, args.out / "blurred_masks")
        blur_dirs = [predict_maps(p, blurred, args.out / "maps_blurred" / label) for label, p in predictors.items()]
        blur_table = defocus.evaluate(pred=blur_dirs, gt=blur_masks, method=labels, dataset="blurred-everywhere",
                                      pred_suffix="_prob")
        parts += ["", f"## {len(blurred)} photos blurred everywhere (MAE = mean in-focus probability)", "",
                  "| method | MAE |", "|---|---|"]
        parts += [f"| {r.method} | {r.mae:.4f} |" for r in blur_table]

    worst = worst_sheet(table, args.label, photos, args.gt, args.gt_polarity, map_dirs, args.out / "worst.png", args.worst)
    parts += ["", f"## The {len(worst)} photos with the model's highest MAE (worst.png: photo, mask, "
                  f"{', '.join(labels)})", ""]
    parts += [f"- {stem}: {mae:.3f}" for stem, mae in worst]
    text = "\n".join(parts) + "\n"
    (args.out / "report.md").write_text(text)
    print(text)
    return 0 if all(v.met for v in verdicts) else 3


if __name__ == "__main__":
    sys.exit(main())
