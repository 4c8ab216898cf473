"""Small photos mirrored out at inference: the bundled model on the real-pair benchmark, each image with a side
under ``--mirror-to`` px first mirrored out at the bottom and right to that length by the training transform
``MirrorPad`` (as ``data.upscale: false`` trains), predicted, and its map cropped back to the image.

The model runs in its own input mode (squash without enlarging, ``--size``); images at least ``--mirror-to`` px on
both sides are predicted unchanged. Maps are cached as ``benchmarks/bench_pairs.py`` caches them, under the mode
``squash-no-upscale@SIZE+mirror-to-N`` of the model's folder, so ``benchmarks/pairs_intervals.sh`` can pair them
with that script's maps:

    PYTHONPATH=src python benchmarks/bench_mirror_small.py --root ROOT --cache CACHE --splits val
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from bench_pairs import SETS, SPLITS, cache_folder, parse_method, score, score_uniform, uniform_pairs
from defocus.data import load_pairs
from defocus.imageio import decode_rgb


def mirror_out(rgb: np.ndarray, length: int) -> np.ndarray:
    """``rgb`` (H, W, 3) with each side shorter than ``length`` mirrored out to it, as training does."""
    import torch

    from defocus.data.transforms import MirrorPad

    chw = MirrorPad(length)(torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1))
    return chw.permute(1, 2, 0).numpy()


def predict_mirrored(predictor, pairs, cache: Path, length: int) -> float:
    """Predict every pair's image not yet in ``cache``, small ones mirrored out to ``length``; seconds spent."""
    todo = [p for p in pairs if not (cache / f"{p.stem}.npy").exists()]
    cache.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for p in todo:
        image, _ = decode_rgb(p.image)
        rgb = np.asarray(image)
        h, w = rgb.shape[:2]
        prob = predictor.predict(mirror_out(rgb, length)).prob[:h, :w]
        np.save(cache / f"{p.stem}.npy", np.clip(prob, 0, 1).astype(np.float16))
    return time.perf_counter() - t0


def main():
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, required=True, help="Data root holding MFIFB/ and DFD/.")
    ap.add_argument("--cache", type=Path, required=True, help="bench_pairs.py's prediction cache.")
    ap.add_argument("--model", default="default", help="default (bundled) or a checkpoint path.")
    ap.add_argument("--size", type=int, default=512, help="Network input size (squash, never enlarging).")
    ap.add_argument("--mirror-to", type=int, default=320, help="Mirror a side shorter than this out to it.")
    ap.add_argument("--splits", nargs="+", default=["val"], choices=SPLITS)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads.")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch

    from defocus.inference import Predictor

    torch.set_num_threads(args.threads)
    label, kwargs = parse_method(args.model)
    mode = f"squash-no-upscale@{args.size}+mirror-to-{args.mirror_to}"
    folder = args.cache / cache_folder(label, kwargs) / mode
    predictor = Predictor(device="cpu", size=args.size, keep_aspect=False, upscale=False, **kwargs)
    for ds in SETS:
        for split in args.splits:
            name = f"{ds}-{split}"
            pairs = load_pairs(name, args.root)
            secs = predict_mirrored(predictor, pairs, folder / ds, args.mirror_to)
            row = score(folder / ds, pairs, name)
            logging.info("%s %s %s: MAE %.4f F %.4f IoU %.4f (%d images, %.0f s)", label, mode, name, row["mae"],
                         row["fbeta"], row["iou"], row["n"], secs)
            for kind, crops in uniform_pairs(args.root, args.cache, ds, split).items():
                if crops:
                    predict_mirrored(predictor, crops, folder / f"{ds}-uniform", args.mirror_to)
                    row = score_uniform(folder / f"{ds}-uniform", crops, f"{ds}-{kind}-{split}")
                    logging.info("%s %s %s-%s-%s: MAE %.4f, called in focus %.4f (%d crops)", label, mode, ds,
                                 kind, split, row["mae"], row["called_in_focus"], row["n"])


if __name__ == "__main__":
    main()
