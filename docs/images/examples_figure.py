"""Draw docs/images/examples_bundled.jpg: each example photo above its in-focus probability (white = in focus).

    python docs/images/examples_figure.py [--model default] [--out docs/images/examples_bundled.jpg]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import defocus

ROOT = Path(__file__).resolve().parents[2]
ORDER = ["dahlia_flower.jpg", "kodak23_parrots.png", "dpdd_yellow_pole.png", "dpdd_tree_trunk.png",
         "pcb_and_coin.jpg", "dpdd_park_bench.png", "cat_chelsea.png", "coffee_cup.png", "kodak17_living_statue.png",
         "dpdd_ivy_wall.png", "dpdd_magazine_rack.png"]


def main() -> None:
    """Predict every example photo and save the photo/map grid."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="default")
    ap.add_argument("--out", default=str(ROOT / "docs" / "images" / "examples_bundled.jpg"))
    ap.add_argument("--height", type=int, default=150)
    ap.add_argument("--per-row", type=int, default=6)
    args = ap.parse_args()
    predictor = defocus.Predictor(args.model, device="cpu")
    tiles = []
    for name in ORDER:
        photo = Image.open(ROOT / "examples" / name).convert("RGB")
        prob = predictor.predict(photo).prob
        w = round(photo.width * args.height / photo.height)
        top = photo.resize((w, args.height), Image.BILINEAR)
        bottom = Image.fromarray((prob * 255).round().astype(np.uint8)).resize((w, args.height), Image.BILINEAR)
        tiles.append((top, bottom.convert("RGB")))
    rows = [tiles[i: i + args.per_row] for i in range(0, len(tiles), args.per_row)]
    width = max(sum(t.width for t, _ in row) for row in rows)
    sheet = Image.new("RGB", (width, 2 * args.height * len(rows)), "white")
    for r, row in enumerate(rows):
        x = 0
        for top, bottom in row:
            sheet.paste(top, (x, 2 * r * args.height))
            sheet.paste(bottom, (x, (2 * r + 1) * args.height))
            x += top.width
    sheet.save(args.out, quality=88)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height})")


if __name__ == "__main__":
    main()
