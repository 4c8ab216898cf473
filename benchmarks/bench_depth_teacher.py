"""Forward time and peak memory of the MiDaS v2.1 large depth teacher (random weights) under no-grad, with and
without the depth decoder (``with_depth=False`` is what feature distillation needs).

Usage: OMP_NUM_THREADS=2 python benchmarks/bench_depth_teacher.py [--size 320] [--batch 6] [--runs 3] [--mode train]
"""
from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from defocus.models.depth import create_depth_teacher


def time_forward(teacher, x, with_depth: bool, runs: int) -> float:
    """Median wall time of ``runs`` forward passes (after one warm-up)."""
    times = []
    with torch.no_grad():
        teacher(x, with_depth=with_depth)
        for _ in range(runs):
            if x.is_cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            teacher(x, with_depth=with_depth)
            if x.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--batch", type=int, default=6)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mode", choices=["train", "eval"], default="train")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.manual_seed(0)
    teacher = create_depth_teacher("midas_v21").to(args.device).train(args.mode == "train")
    x = torch.rand(args.batch, 3, args.size, args.size, device=args.device)
    enc = time_forward(teacher, x, with_depth=False, runs=args.runs)
    full = time_forward(teacher, x, with_depth=True, runs=args.runs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} size={args.size} "
          f"mode={args.mode} runs={args.runs}")
    print(f"encoder+decoder (with_depth=True):  {full:.3f} s/batch (baseline)")
    print(f"encoder only    (with_depth=False): {enc:.3f} s/batch  ratio {enc / full:.2f}")
    print(f"peak RSS: {peak:.0f} MiB")


if __name__ == "__main__":
    main()
