"""Apply the bundled-model selection rule (benchmarks/SELECTION_bundled_v2.md) to val-split benchmark rows.

Reads the JSON rows of ``benchmarks/bench_pairs.py --splits val --json ...`` (one or more files) and prints, for
the current model and each candidate: the summary number S (mean MAE of mfifb-val and dfd-val, squash), the mean
IoU (tie-break), the pooled MAE on the blurred and on the sharp uniform crops and whether the candidate passes
the guard (and, with ``--samples``, the boundary guard on the CUHK-5 / DUT-5 samples); then the winner and, for
the winner, squash against keep-aspect.

    python benchmarks/select_bundled.py /work_data/bench_v2/val_*.json --current bundled \\
        --candidates pairs mixed mixed-depth --markdown benchmarks/selection_bundled_v2_val.md
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SETS = ("mfifb", "dfd")
KINDS = ("blurred", "sharp")
GUARD = 0.02          # largest allowed rise of a pooled crop MAE over the current model's
SAMPLE_GUARD = 0.03   # largest allowed rise of the mean MAE over the CUHK-5 / DUT-5 samples (boundary guard)
TIE = 0.002           # S within this: the higher mean IoU wins
KEEP_ASPECT_GAIN = 0.002   # keep-aspect replaces squash only when S is lower by more than this


def index_rows(paths) -> dict:
    """(method, mode, dataset) -> row, from every JSON file (a later file's row replaces an earlier one)."""
    rows = {}
    for p in paths:
        for r in json.loads(Path(p).read_text()):
            rows[(r["method"], r["mode"], r["dataset"])] = r
    return rows


def summary(rows: dict, method: str, mode: str = "squash") -> dict:
    """S, mean IoU and the pooled crop MAEs of one method and input mode on the val split."""
    full = [rows[(method, mode, f"{ds}-val")] for ds in SETS]
    out = {"S": sum(r["mae"] for r in full) / len(full), "iou": sum(r["iou"] for r in full) / len(full)}
    for kind in KINDS:
        crops = [rows[k] for ds in SETS if (k := (method, mode, f"{ds}-{kind}-val")) in rows]
        n = sum(r["n"] for r in crops)
        out[kind] = sum(r["n"] * r["mae"] for r in crops) / n if n else float("nan")
        out[f"{kind}_in_focus"] = sum(r["n"] * r["called_in_focus"] for r in crops) / n if n else float("nan")
        out[f"{kind}_n"] = n
    return out


def select(rows: dict, current: str, candidates: list[str], samples: dict | None = None
           ) -> tuple[list[dict], str, str]:
    """Score every model, apply the guards and pick the winner and its input mode (see the rule). ``samples``:
    model -> mean MAE over the CUHK-5 and DUT-5 samples (the boundary guard; None = no such guard)."""
    base = summary(rows, current)
    table = []
    for name in [current] + candidates:
        s = summary(rows, name)
        s["name"] = name
        s["samples"] = samples.get(name, float("nan")) if samples else float("nan")
        crops_ok = all(s[k] <= base[k] + GUARD for k in KINDS)
        samples_ok = samples is None or s["samples"] <= samples[current] + SAMPLE_GUARD
        s["eligible"] = name == current or (crops_ok and samples_ok)
        table.append(s)
    pool = [s for s in table if s["eligible"]]
    best = min(s["S"] for s in pool)
    close = [s for s in pool if s["S"] <= best + TIE]
    winner = max(close, key=lambda s: s["iou"])["name"]
    mode = "squash"
    if (winner, "keep-aspect", "mfifb-val") in rows:
        keep = summary(rows, winner, "keep-aspect")
        if keep["S"] < summary(rows, winner)["S"] - KEEP_ASPECT_GAIN:
            mode = "keep-aspect"
    return table, winner, mode


def markdown(table: list[dict], winner: str, mode: str, rows: dict) -> str:
    """The selection as a Markdown table and two lines of verdict."""
    lines = ["| model | S (mean val MAE) | mean val IoU | blurred crops MAE / called in focus | sharp crops MAE / "
             "called in focus | CUHK-5 + DUT-5 mean MAE | eligible |", "|---|---|---|---|---|---|---|"]
    for s in table:
        lines.append(f"| {s['name']} | {s['S']:.4f} | {s['iou']:.4f} | {s['blurred']:.3f} / "
                     f"{s['blurred_in_focus']:.3f} ({s['blurred_n']}) | {s['sharp']:.3f} / {s['sharp_in_focus']:.3f} "
                     f"({s['sharp_n']}) | {s['samples']:.4f} | {'yes' if s['eligible'] else 'no'} |")
    lines += ["", f"Winner: **{winner}**."]
    if (winner, "keep-aspect", "mfifb-val") in rows:
        sq, ka = summary(rows, winner)["S"], summary(rows, winner, "keep-aspect")["S"]
        lines.append(f"Input mode for {winner}: squash S {sq:.4f}, keep-aspect S {ka:.4f} -> **{mode}**.")
    return "\n".join(lines) + "\n"


def main():
    """Command line: see the module docstring."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("json", nargs="+", type=Path, help="bench_pairs.py --json outputs (val split).")
    ap.add_argument("--current", default="bundled", help="Label of the current bundled model's rows.")
    ap.add_argument("--candidates", nargs="+", required=True, help="Labels of the candidates' rows.")
    ap.add_argument("--samples", nargs="+", default=None, metavar="MODEL=MAE",
                    help="Mean MAE over the CUHK-5 and DUT-5 samples per model (benchmarks/bench_bundled_accuracy.sh): "
                         "the boundary guard of the second round.")
    ap.add_argument("--markdown", type=Path, help="Write the selection as Markdown.")
    args = ap.parse_args()
    rows = index_rows(args.json)
    samples = None if args.samples is None else {k: float(v) for k, v in (a.split("=", 1) for a in args.samples)}
    table, winner, mode = select(rows, args.current, args.candidates, samples)
    text = markdown(table, winner, mode, rows)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
