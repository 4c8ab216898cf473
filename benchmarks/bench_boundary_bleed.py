"""Boundary bleed on the 10 human-masked samples: how far a model's in-focus region spills past the true boundary.

For each of the 5 CUHK-TE-1 and 5 DUT test samples (320x320, human masks, 255 = in focus), two rings of ``--width``
pixels around the in-focus region of the mask:

* **outside**: the mean in-focus probability just outside the region (ideal 0; a fringe or blob raises it);
* **inside**: the mean blur probability just inside it (ideal 0; a region drawn too small raises it).

Both are averaged over the images that have such a ring. MAE over whole images hides this: the rings are a few
percent of the pixels.

    PYTHONPATH=src python benchmarks/bench_boundary_bleed.py default weights/bundled_v1.safetensors
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
from scipy import ndimage

import defocus
from defocus.maps import read_mask

SAMPLES = {"CUHK": "CUHK/TE-1_btbnet320_samples", "DUT": "DUT/test_samples"}


def rings(in_focus: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(outside, inside)``: the pixels within ``width`` of the region's boundary, outside it and inside it."""
    outside = ndimage.binary_dilation(in_focus, iterations=width) & ~ndimage.binary_dilation(in_focus)
    inside = in_focus & ~ndimage.binary_erosion(in_focus, iterations=width)
    return outside, inside


def bleed(model: str, data: Path, width: int) -> dict:
    """Mean in-focus probability in the outside rings and mean blur probability in the inside rings."""
    predictor = defocus.Predictor(model=model, device="cpu")
    out, inn = [], []
    for folder in SAMPLES.values():
        for mask in sorted((data / folder / "masks").iterdir()):
            image = next((data / folder / "images").glob(mask.stem + ".*"))
            in_focus = read_mask(mask)
            prob = predictor.predict(str(image)).prob
            outside, inside = rings(in_focus, width)
            if outside.any():
                out.append(float(prob[outside].mean()))
            if inside.any():
                inn.append(float(1.0 - prob[inside].mean()))
    return {"model": model, "outside": float(np.mean(out)), "inside": float(np.mean(inn)),
            "images": len(out)}


def main():
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+", help="default, or checkpoint paths.")
    ap.add_argument("--width", type=int, default=8, help="Ring width in pixels (the samples are 320x320).")
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("DEFOCUS_SHARED", "../shared")) / "data")
    args = ap.parse_args()
    print(f"| model | outside ring, in-focus prob. (ideal 0) | inside ring, blur prob. (ideal 0) |\n|---|---|---|")
    for model in args.models:
        r = bleed(model, args.data, args.width)
        print(f"| {r['model']} | {r['outside']:.3f} | {r['inside']:.3f} |")


if __name__ == "__main__":
    main()
