"""Seconds per training iteration and peak memory of stage 1 and stage 2 (D-DFFNet distillation).

Each (backbone, stage) runs in its own process so that its peak memory is its own. Weights are random (speed and
memory do not depend on them); the depth teacher is the full MiDaS v2.1 large network, the defocus teacher a
DFFNet on the same backbone. Data are random tensors already in memory, so the numbers are the optimisation
step alone (forward, losses, backward, clamp, Adam).

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --iters 3 --out benchmarks/RESULTS_training.md
    python benchmarks/bench_train.py --device cuda --iters 20      # on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time


def run_one(backbone: str, stage: str, size: int, batch: int, iters: int, device: str, amp: str) -> dict:
    """Time ``iters`` optimisation steps after one warm-up step; return the measurements."""
    import torch

    from defocus.config import load_config
    from defocus.engine import Trainer
    from defocus.models import create_model, save_model

    class RandomBatches(torch.utils.data.Dataset):
        def __len__(self):
            return batch

        def __getitem__(self, i):
            return dict(image=torch.randn(3, size, size), target=(torch.rand(1, size, size) > 0.5).float())

    tmp = tempfile.mkdtemp(prefix="bench_train_")
    sets = [f"stage={stage}", f"backbone={backbone}", "pretrained=false", f"batch_size={batch}", f"size={size}",
            "num_workers=0", f"output_dir={tmp}", "progress=false", "tensorboard=false", f"device={device}",
            f"amp={amp}"]
    if stage == "stage2":
        teacher = os.path.join(tmp, "teacher.safetensors")
        save_model(create_model("dffnet", backbone=backbone), teacher)
        sets.append(f"teacher_checkpoint={teacher}")
    trainer = Trainer(load_config(None, sets), train_dataset=RandomBatches())
    data = RandomBatches()
    items = [data[i] for i in range(batch)]
    fixed = {k: torch.stack([it[k] for it in items]) for k in ("image", "target")}
    cuda = trainer.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step():
        t0 = time.perf_counter()
        trainer.train_step(fixed)
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    warm = step()
    times = [step() for _ in range(iters)]
    out = {"backbone": backbone, "stage": stage, "size": size, "batch": batch, "device": str(trainer.device),
           "amp": amp, "warmup_s": warm, "times_s": times, "median_s": statistics.median(times),
           "threads": torch.get_num_threads(),
           "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20}
    if cuda:
        out["peak_cuda_gib"] = torch.cuda.max_memory_allocated() / 2 ** 30
        out["gpu"] = torch.cuda.get_device_name()
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbones", nargs="+", default=["resnest101e", "tf_efficientnet_lite0"])
    p.add_argument("--stages", nargs="+", default=["stage1", "stage2"])
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--batch", type=int, default=6)
    p.add_argument("--iters", type=int, default=3, help="timed iterations (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default="none")
    p.add_argument("--out", help="write a Markdown table here")
    p.add_argument("--one", nargs=2, metavar=("BACKBONE", "STAGE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.one:
        print(json.dumps(run_one(a.one[0], a.one[1], a.size, a.batch, a.iters, a.device, a.amp)))
        return
    rows = []
    for bb in a.backbones:
        for st in a.stages:
            cmd = [sys.executable, __file__, "--one", bb, st, "--size", str(a.size), "--batch", str(a.batch),
                   "--iters", str(a.iters), "--device", a.device, "--amp", a.amp]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            row = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores; device "
             f"{rows[0]['device']}" + (f" ({rows[0].get('gpu')})" if rows[0].get("gpu") else "")
             + f"; torch threads {rows[0]['threads']}; input {a.size}x{a.size}, batch {a.batch}, amp {a.amp}.",
             f"Command: `{' '.join(['python', 'benchmarks/bench_train.py'] + sys.argv[1:])}`",
             "",
             "| backbone | stage | s / iteration (median) | runs (s) | ratio vs stage 1 | peak memory (GiB) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        base = next((x for x in rows if x["backbone"] == r["backbone"] and x["stage"] == "stage1"), None)
        ratio = f"{r['median_s'] / base['median_s']:.2f}x" if base else "-"
        mem = r.get("peak_cuda_gib", r["peak_rss_gib"])
        kind = "CUDA allocated" if "peak_cuda_gib" in r else "process RSS"
        lines.append(f"| {r['backbone']} | {r['stage']} | {r['median_s']:.2f} | "
                     f"{', '.join(f'{t:.2f}' for t in r['times_s'])} | {ratio} | {mem:.2f} ({kind}) |")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        with open(a.out, "a", encoding="utf-8") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
