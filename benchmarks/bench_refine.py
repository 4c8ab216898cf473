"""Time cost of the edge-aware refinement (``Predictor(refine=True)``, ``defocus predict --refine``).

The bundled model on the example photos, each photo predicted with and without the refinement in alternation
(decode, network, refinement, map resized to the photo; no files written), after one untimed pass of each.
Reports the median over ``--runs`` of each photo's seconds, their sum, and the ratio refined / plain:

    PYTHONPATH=src python benchmarks/bench_refine.py --runs 3 [--json refine.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import defocus

ROOT = Path(__file__).resolve().parents[1]


def seconds(predictor, photo: Path) -> float:
    """Wall time of one prediction of ``photo``."""
    t0 = time.perf_counter()
    predictor.predict(photo)
    return time.perf_counter() - t0


def main() -> None:
    """Time every example photo with and without the refinement; print a Markdown table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--model", default="default")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    plain = defocus.Predictor(args.model, device="cpu")
    refined = plain.with_options(refine=True)
    photos = sorted(p for p in (ROOT / "examples").iterdir() if p.suffix.lower() in {".jpg", ".png"})
    rows = []
    for photo in photos:
        seconds(plain, photo), seconds(refined, photo)  # warm-up
        times = {"plain": [], "refine": []}
        for _ in range(args.runs):
            times["plain"].append(seconds(plain, photo))
            times["refine"].append(seconds(refined, photo))
        rows.append({"photo": photo.name, "plain_s": statistics.median(times["plain"]),
                     "refine_s": statistics.median(times["refine"]), "input": "x".join(
                         map(str, plain.input_size(defocus.imageio.decode_rgb(photo)[0].size)))})
    total = {k: sum(r[k] for r in rows) for k in ("plain_s", "refine_s")}
    print("| photo | network input | plain s | refined s | ratio |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['photo']} | {r['input']} | {r['plain_s']:.2f} | {r['refine_s']:.2f} | "
              f"{r['refine_s'] / r['plain_s']:.1f}x |")
    print(f"| all {len(rows)} | | {total['plain_s']:.2f} | {total['refine_s']:.2f} | "
          f"{total['refine_s'] / total['plain_s']:.1f}x |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "total": total, "runs": args.runs}, indent=2))


if __name__ == "__main__":
    main()
