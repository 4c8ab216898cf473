"""Inference speed and memory on CPU (results: benchmarks/RESULTS_inference.md).

1. DFFNet on ResNeSt-101 (``resnest101e``, random weights: speed does not depend on them), 320x320, batch 1:
   the optimised path (folded conv+BN and conv+1x1, channels-last, ``inference_mode``) and ONNX Runtime on the
   exported graph (and CPU bf16 autocast, not exact) against the plain eval model, timed alternately in one
   process (so machine load hits all alike), outputs compared. The float32 compute bound: the convolutions'
   multiply-adds over the measured float32 matrix-multiply throughput. Peak memory (``VmHWM``) of each in a fresh process, including a model that also
   carries the authors' unused ``layer3_2`` / ``layer4_2`` copies (their checkpoint's 44.5 M extra
   parameters), of ONNX Runtime alone in a process that never imports torch, and of ``Predictor`` on the
   exported file (a torch-free process) predicting a photo.
2. DFFNet on EfficientNet-Lite0 (``tf_efficientnet_lite0``), 320x320, batch 1 and 8: images/s.
3. A 24-megapixel JPEG end to end (decode, infer, write prob + mask PNGs) with ``Predictor`` and the bundled
   model (``--photo-model``).

Every timing run sets the thread count (default 2) and ``torch.set_flush_denormal(True)`` in all
configurations alike (random weights produce denormal products in the DFFM that real weights rarely do).

    OMP_NUM_THREADS=2 python benchmarks/bench_inference.py [--runs 7] [--threads 2]
        [--only resnest-speed,resnest-bound,resnest-memory,resnest-onnx,lite,photo] [--photo-model default]
        [--json results.json]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dahlia_flower.jpg"


def _in_child(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def _setup(threads: int):
    import torch

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    return torch


def _status_mb(field: str) -> float:
    # /proc/self/status without importing defocus (whose import pulls in torch)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1]) / 1024
    return float("nan")


def _timed(fn):
    """(wall seconds, CPU seconds of this process) of one call. On a machine shared with other jobs the wall
    time measures the competition; with one thread, CPU time is what the call costs an idle core."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def _median_ms(ts):
    return round(1000 * statistics.median(ts), 1)


def _make(backbone: str, randomise: bool = False):
    import torch

    from defocus.models import create_model

    torch.manual_seed(0)
    net = create_model("dffnet", backbone=backbone).eval()
    if randomise:  # non-trivial BatchNorm statistics: spatially varying maps, like a trained model's
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                    m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return net


def speed_pair(backbone: str, size: int, batch: int, runs: int, threads: int, warmup: int = 1,
               with_onnx: bool = True, with_bf16: bool = False) -> dict:
    """Baseline (plain eval model, no_grad) vs optimised PyTorch (and ONNX Runtime on the exported graph, and
    the optimised model under CPU bf16 autocast), timed alternately in this process; output differences
    against the baseline."""
    torch = _setup(threads)
    from defocus.models.fuse import fuse_model

    base = _make(backbone, randomise=True)
    opt = fuse_model(base).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(1))
    xc = x.contiguous(memory_format=torch.channels_last)

    def run_base():
        with torch.no_grad():
            return base(x)[0]

    def run_opt():
        with torch.inference_mode():
            return opt(xc)[0]

    def run_bf16():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return opt(xc)[0].float()

    fns = {"baseline": run_base, "optimised": run_opt}
    if with_bf16:
        fns["bf16"] = run_bf16
    if with_onnx:
        from defocus.export import export_onnx_bytes
        from defocus.onnx_runtime import onnx_session

        sess = onnx_session(export_onnx_bytes(base), threads=threads)
        xn = x.numpy()
        fns["onnx"] = lambda: torch.from_numpy(sess.run(None, {"image": xn})[0])
    ref = run_base()
    out = {"backbone": backbone, "size": size, "batch": batch, "runs": runs, "threads": threads}
    for name, fn in fns.items():
        if name != "baseline":
            got = fn()
            out[f"{name}_max_abs_diff_logit"] = float((ref - got).abs().max())
            out[f"{name}_max_abs_diff_prob"] = float((ref.sigmoid() - got.sigmoid()).abs().max())
    times = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    for i in range(warmup + runs):
        for name, fn in fns.items():
            wall, c = _timed(fn)
            if i >= warmup:
                times[name].append(wall)
                cpu[name].append(c)
    for name, ts in times.items():
        out[f"{name}_ms"] = _median_ms(ts)
        out[f"{name}_cpu_ms"] = _median_ms(cpu[name])
        out[f"{name}_images_per_s"] = round(batch / statistics.median(ts), 2)
        out[f"{name}_images_per_cpu_s"] = round(batch / statistics.median(cpu[name]), 2)
        if name != "baseline":
            out[f"{name}_speedup"] = round(statistics.median(times["baseline"]) / statistics.median(ts), 2)
            out[f"{name}_cpu_speedup"] = round(statistics.median(cpu["baseline"]) / statistics.median(cpu[name]), 2)
    return out


def compute_bound(backbone: str, size: int, runs: int, threads: int) -> dict:
    """How fast the network could be in float32 on this CPU: the multiply-adds of its convolutions divided by
    the measured float32 matrix-multiply throughput (the best case for any convolution algorithm that does
    every multiply-add), against the baseline's measured time and its convolutions' share of it."""
    torch = _setup(threads)
    from torch import nn

    from defocus.bench import time_calls

    net = _make(backbone, randomise=True)
    macs = []

    def count(mod, inp, out):
        k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
        macs.append(out.numel() * k)

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, nn.Conv2d)]
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        net(x)
    for h in hooks:
        h.remove()
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    gemm = time_calls(lambda: a @ b, runs, warmup=3)[0]
    gemm_gmacs = n ** 3 / statistics.median(gemm) / 1e9
    with torch.no_grad():
        base = time_calls(lambda: net(x), runs, warmup=2)[0]
        with torch.profiler.profile() as prof:
            net(x)
    conv_us = sum(e.self_cpu_time_total for e in prof.key_averages() if "conv" in e.key)
    total_us = sum(e.self_cpu_time_total for e in prof.key_averages())
    conv_gmac = sum(macs) / 1e9
    bound_ms = 1000 * conv_gmac / gemm_gmacs
    base_ms = 1000 * statistics.median(base)
    return {"backbone": backbone, "size": size, "threads": threads, "conv_gmacs": round(conv_gmac, 2),
            "fp32_matmul_gmacs_per_s": round(gemm_gmacs, 1), "baseline_ms": round(base_ms, 1),
            "conv_share_of_baseline": round(conv_us / total_us, 3),
            "baseline_conv_gmacs_per_s": round(conv_gmac / (base_ms / 1000 * conv_us / total_us), 1),
            "fp32_bound_ms": round(bound_ms, 1), "max_fp32_speedup": round(base_ms / bound_ms, 2)}


def onnx_predictor(onnx_path: str, image: str, runs: int, threads: int) -> dict:
    """``defocus.Predictor`` on an exported file in a process that never imports torch: a real photo end to end
    (decode, infer, maps at native size), its time and the process's peak RSS."""
    import numpy as np

    from defocus.bench import time_calls
    from defocus.inference import Predictor

    pred = Predictor(onnx_path, device="cpu", threads=threads)
    ts = time_calls(lambda: pred.predict(image).mask, runs, warmup=1)[0]
    x = np.random.default_rng(1).standard_normal((1, 3, 320, 320), dtype=np.float32)
    net = time_calls(lambda: pred.runner.run(x), runs, warmup=0)[0]
    return {"photo_ms": _median_ms(ts), "network_ms": _median_ms(net), "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "torch_imported": "torch" in sys.modules}


def onnx_speed(onnx_path: str, size: int, batch: int, runs: int, threads: int) -> dict:
    """ONNX Runtime alone (no torch import in this process): images/s and peak RSS."""
    import numpy as np

    from defocus.bench import time_calls
    from defocus.onnx_runtime import onnx_session

    rss0 = _status_mb("VmRSS")
    sess = onnx_session(onnx_path, "cpu", threads)
    x = np.random.default_rng(1).standard_normal((batch, 3, size, size), dtype=np.float32)
    ts, cs = time_calls(lambda: sess.run(None, {"image": x}), runs, warmup=1)
    return {"batch": batch, "onnx_ms": _median_ms(ts), "onnx_cpu_ms": _median_ms(cs),
            "onnx_images_per_s": round(batch / statistics.median(ts), 2),
            "rss_after_imports_mb": round(rss0, 1), "peak_rss_mb": round(_status_mb("VmHWM"), 1),
            "torch_imported": "torch" in sys.modules}


def memory(kind: str, backbone: str, size: int, threads: int) -> dict:
    """Peak RSS of building a model and running two forward passes, in this (fresh) process."""
    torch = _setup(threads)
    import copy

    from defocus.bench import peak_rss_mb, reset_peak_rss, rss_mb
    from defocus.models.fuse import fuse_model

    rss0 = rss_mb()
    reset_peak_rss()
    net = _make(backbone)
    if kind == "authors":  # the reference model also allocates unused copies of layer3 and layer4
        body = net.backbone.body
        net.unused_layer3_2, net.unused_layer4_2 = copy.deepcopy(body.layer3), copy.deepcopy(body.layer4)
    x = torch.randn(1, 3, size, size)
    if kind == "optimised":
        net = fuse_model(net, inplace=True).to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    ctx = torch.inference_mode if kind == "optimised" else torch.no_grad
    with ctx():
        for _ in range(2):
            net(x)
    n_params = sum(p.numel() for p in net.parameters())
    return {"kind": kind, "params_m": round(n_params / 1e6, 2), "rss_after_imports_mb": round(rss0, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1), "model_and_run_mb": round(peak_rss_mb() - rss0, 1)}


def export_onnx_file(backbone: str, path: str) -> dict:
    from defocus.export import export_onnx

    return export_onnx(_make(backbone, randomise=True), path, check=True)


def photo_e2e(path: str, runs: int, threads: int, fast_decode: bool, save_dir: str, model: str = "default",
              size: int | None = None) -> dict:
    """Predictor on one large JPEG: decode, infer, write prob + mask; then each stage timed once more.

    ``model``: a name or file for ``Predictor`` ("default" = the bundled model), or "random-lite0" (a randomly
    initialised DFFNet-Lite0 with spatially varying maps, the measurement before a model was bundled).
    ``size``: the network input size (None: the model's own)."""
    _setup(threads)
    from PIL import Image

    from defocus import imageio
    from defocus.bench import peak_rss_mb, reset_peak_rss, rss_mb, time_calls
    from defocus.inference import Predictor

    net = _make("tf_efficientnet_lite0", randomise=True) if model == "random-lite0" else model
    pred = Predictor(net, device="cpu", fast_decode=fast_decode, size=size)
    side = pred.options.size
    rss0 = rss_mb()
    reset_peak_rss()

    def one():
        res = pred.predict(path)
        res.save(save_dir, what=("prob", "mask"), stem="photo")

    ts, cs = time_calls(one, runs, warmup=1)
    stages, stages_cpu = {}, {}

    def stage(name, fn):
        wall, c = _timed(fn)
        stages[name], stages_cpu[name] = wall, c

    box = {}
    stage("decode", lambda: box.update(img=imageio.decode_rgb(
        path, draft_min_size=pred.draft_size if fast_decode else None)[0]))
    stage("resize_to_input", lambda: box.update(small=box["img"].resize((side, side), Image.BILINEAR)))
    stage("infer", lambda: pred.predict(box["small"]))
    res2 = pred.predict(path)
    stage("map_to_native", lambda: (res2.prob, res2.mask))
    stage("write_pngs", lambda: res2.save(save_dir, what=("prob", "mask"), stem="photo"))
    sizes = {p.name: os.path.getsize(p) for p in Path(save_dir).glob("photo_*")}
    return {"model": model, "size": side, "fast_decode": fast_decode, "runs": runs, "threads": threads,
            "median_s": round(statistics.median(ts), 3),
            "min_s": round(min(ts), 3), "median_cpu_s": round(statistics.median(cs), 3),
            "stages_s": {k: round(v, 3) for k, v in stages.items()},
            "stages_cpu_s": {k: round(v, 3) for k, v in stages_cpu.items()},
            "output_bytes": sizes, "peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_mb": round(rss0, 1)}


def make_24mp_jpeg(path: Path):
    """A 6000x4000 JPEG (an example photo upscaled, with sensor-like noise so it compresses like a photo)."""
    import numpy as np
    from PIL import Image

    base = Image.open(EXAMPLE).convert("RGB").resize((6000, 4000), Image.BICUBIC)
    a = np.asarray(base).astype(np.int16)
    a += np.random.default_rng(0).integers(-6, 7, a.shape, dtype=np.int16)
    Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)).save(path, quality=92)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default="resnest-speed,resnest-bound,resnest-memory,resnest-onnx,lite,photo")
    ap.add_argument("--photo-model", default="default",
                    help="Model of the 24-MP photo run: 'default' (bundled), a file, or 'random-lite0'.")
    ap.add_argument("--photo-sizes", default="",
                    help="Network input sizes of the 24-MP photo run, comma-separated (default: the model's own).")
    ap.add_argument("--json", default=None, help="Also write the results to this file.")
    args = ap.parse_args()
    parts = set(args.only.split(","))
    from defocus.bench import machine_info

    out = {"machine": machine_info(), "threads": args.threads, "runs": args.runs}
    out["machine"]["torch_threads"] = args.threads
    tmp = Path(tempfile.mkdtemp(prefix="defocus-bench-"))
    if "resnest-speed" in parts:
        out["resnest_speed"] = _in_child(speed_pair, "resnest101e", 320, 1, args.runs, args.threads, 1, True, True)
        print(json.dumps(out["resnest_speed"]), flush=True)
    if "resnest-bound" in parts:
        out["resnest_bound"] = _in_child(compute_bound, "resnest101e", 320, args.runs, args.threads)
        print(json.dumps(out["resnest_bound"]), flush=True)
    if "resnest-memory" in parts:
        out["resnest_memory"] = [_in_child(memory, k, "resnest101e", 320, args.threads)
                                 for k in ("authors", "baseline", "optimised")]
        print(json.dumps(out["resnest_memory"]), flush=True)
    if "resnest-onnx" in parts:
        onnx_path = str(tmp / "resnest.onnx")
        out["resnest_onnx_export"] = {k: v for k, v in _in_child(export_onnx_file, "resnest101e", onnx_path).items()
                                      if k != "cases"}
        out["resnest_onnx_alone"] = _in_child(onnx_speed, onnx_path, 320, 1, max(3, args.runs // 2), args.threads)
        print(json.dumps(out["resnest_onnx_alone"]), flush=True)
        out["resnest_onnx_predictor"] = _in_child(onnx_predictor, onnx_path, str(EXAMPLE), max(3, args.runs // 2),
                                                  args.threads)
        print(json.dumps(out["resnest_onnx_predictor"]), flush=True)
    if "lite" in parts:
        out["lite0_speed"] = [_in_child(speed_pair, "tf_efficientnet_lite0", 320, b, args.runs, args.threads)
                              for b in (1, 8)]
        print(json.dumps(out["lite0_speed"]), flush=True)
        onnx_path = str(tmp / "lite0.onnx")
        _in_child(export_onnx_file, "tf_efficientnet_lite0", onnx_path)
        out["lite0_onnx_alone"] = [_in_child(onnx_speed, onnx_path, 320, b, args.runs, args.threads) for b in (1, 8)]
        print(json.dumps(out["lite0_onnx_alone"]), flush=True)
    if "photo" in parts:
        jpg = tmp / "photo_24mp.jpg"
        make_24mp_jpeg(jpg)
        sizes = [int(s) for s in args.photo_sizes.split(",") if s] or [None]
        out["photo_24mp"] = [_in_child(photo_e2e, str(jpg), args.runs, args.threads, fd, str(tmp / "out"),
                                       args.photo_model, size)
                             for size in sizes for fd in (False, True)]
        print(json.dumps(out["photo_24mp"]), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    out["machine"]["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
