"""Inference throughput, latency and peak memory, with the machine they were measured on.

Each configuration runs in a fresh process (``isolate=True``) so that its peak resident memory (Linux
``VmHWM``) is its own. Backends: ``auto`` (the one ``defocus predict`` runs the model on: ONNX Runtime for the
bundled model and ``.onnx`` files, PyTorch for other models), ``torch`` (the optimised path of
:class:`~defocus.inference.Predictor`: folded conv + BN, channels-last, ``inference_mode``), ``onnx`` (ONNX Runtime
on the exported graph) and ``torch-baseline`` (the plain eval model under ``torch.no_grad``: the reference point).
"""
from __future__ import annotations

import logging
import os
import platform
import statistics
import sys
import time
from functools import partial

import numpy as np

from .defaults import PAPER_SIZE

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "torch-baseline")


def machine_info() -> dict:
    """CPU model, core counts, load, library versions and thread settings."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {"cpu": cpu, "logical_cpus": os.cpu_count(), "python": platform.python_version(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        info["load_avg_1min"] = round(os.getloadavg()[0], 2)
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _status_kb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return float(line.split()[1])
    except OSError:
        return None
    return None


def rss_mb() -> float | None:
    """Current resident memory of this process in MB (Linux), else ``None``."""
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MB (``VmHWM`` on Linux; ``ru_maxrss`` elsewhere)."""
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    try:
        import resource
        import sys

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r / 1024 / 1024 if sys.platform == "darwin" else r / 1024
    except (ImportError, OSError):
        return None


def reset_peak_rss() -> bool:
    """Reset the peak-RSS counter to the current RSS (Linux >= 4.0); ``False`` when not supported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def time_calls(fn, runs: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall and process-CPU seconds per call of ``fn()`` over ``runs`` calls after ``warmup`` untimed ones.

    On a machine shared with other jobs, wall time measures the competition too; CPU time (meaningful with one
    thread: spinning worker threads also burn CPU) is what the work costs an idle core."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def latency_stats(seconds: list[float], batch: int) -> dict:
    """images/s (from the median latency) and p50 / p90 batch latency in ms."""
    p50 = statistics.median(seconds)
    p90 = float(np.percentile(seconds, 90))
    return {"images_per_s": round(batch / p50, 3), "p50_ms": round(1000 * p50, 2), "p90_ms": round(1000 * p90, 2)}


def run_config(model="default", size: int | None = None, batch: int = 1, backend: str = "auto", runs: int = 10,
               warmup: int = 2, threads: int | None = None, device: str = "cpu", method: str | None = None) -> dict:
    """Measure one configuration in this process: build the model, time ``runs`` forward passes of a random
    ``batch`` x 3 x ``size`` x ``size`` input (classical methods: one ``size`` x ``size`` image per call).
    ``size=None`` takes the model's own input size (512 for the bundled model, 320 for most others).
    An exported ``.onnx`` model runs on ONNX Runtime without importing torch (its peak memory is then that of
    an ONNX-only deployment)."""
    from .inference import Predictor

    if method is not None and backend not in ("auto", "torch"):
        raise ValueError(f"backend {backend!r} applies to networks; a classical method runs in NumPy")
    onnx_file = str(model).lower().endswith(".onnx")
    if onnx_file and backend == "torch-baseline":
        raise ValueError("an exported .onnx model runs on ONNX Runtime only (backend 'onnx')")
    if not onnx_file:
        import torch

        if threads:
            torch.set_num_threads(int(threads))
    reset_peak_rss()
    rss0 = rss_mb()
    rng = np.random.default_rng(0)
    if backend == "torch-baseline":
        from .inference import load_network, resolve_device

        dev = resolve_device(device)
        net, info = load_network(model, dev)
        size = size or info.size
        x = torch.from_numpy(rng.standard_normal((batch, 3, size, size), dtype=np.float32)).to(dev)

        def fn():
            with torch.no_grad():
                torch.sigmoid(net(x)[0]).cpu()
        desc = str(info)
    else:
        classical = method is not None
        pred = Predictor(model=model, method=method, device=device, backend="auto" if classical else backend,
                         size=None if classical else size, batch_size=batch, threads=threads)
        desc, backend = str(pred.info), pred.runner.backend
        size = (size or PAPER_SIZE) if classical else pred.options.size
        fn, batch = _core_call(pred.runner, size, batch, rng)
    seconds, cpu = time_calls(fn, runs, warmup)
    row = {"model": desc, "backend": backend, "batch": batch, "size": size, "runs": runs,
           "threads": (int(threads) if threads else None) if onnx_file else torch.get_num_threads(),
           **latency_stats(seconds, batch), "torch_imported": "torch" in sys.modules,
           "cpu_p50_ms": round(1000 * statistics.median(cpu), 2),
           "rss_before_mb": round(rss0, 1) if rss0 else None,
           "peak_rss_mb": round(peak_rss_mb() or 0, 1) or None}
    return row


def _core_call(runner, size: int, batch: int, rng) -> tuple:
    """The call to time for a runner and its batch size: a classical method on one ``size`` x ``size`` image
    with a focus contrast (:func:`focus_contrast_image`), else the network on a random ``batch`` x 3 x ``size`` x
    ``size`` input."""
    from .inference import ClassicalRunner

    if isinstance(runner, ClassicalRunner):
        return partial(runner.prepare, focus_contrast_image(size, rng)), 1
    x = rng.standard_normal((batch, 3, size, size), dtype=np.float32)
    return partial(runner.run, x), batch


def focus_contrast_image(size: int, rng) -> np.ndarray:
    """A ``size`` x ``size`` uint8 RGB test image whose left half is sharp texture and right half the same
    texture blurred. The classical methods' cost depends on the content: an image of noise alone is sharp
    everywhere, and their matting and inference then have nothing to solve."""
    from scipy.ndimage import uniform_filter

    texture = uniform_filter(rng.random((size, size, 3)), size=(3, 3, 1))
    blurred = uniform_filter(texture, size=(9, 9, 1))
    img = np.concatenate([texture[:, :size // 2], blurred[:, size // 2:]], axis=1)
    img = (img - img.min()) / max(float(np.ptp(img)), 1e-12)
    return np.rint(255 * img).astype(np.uint8)


def _run_isolated(kwargs: dict) -> dict:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(run_config, kwds=kwargs)


#: Batch sizes a network is timed at unless told otherwise.
DEFAULT_BATCH_SIZES = (1, 8)


def benchmark(model="default", size: int | None = None, batch_sizes=None, backends=("auto",), runs: int = 10,
              warmup: int = 2, threads: int | None = None, device: str = "cpu", method: str | None = None,
              isolate: bool = True) -> dict:
    """Measure every (backend, batch size) combination at input side ``size`` (``None``: the model's own;
    ``batch_sizes=None``: :data:`DEFAULT_BATCH_SIZES`; ``backends=("auto",)``: the backend ``defocus predict`` runs
    the model on; a classical ``method`` is timed once, and refuses network options);
    returns ``{"machine": ..., "results": [rows]}`` (rows: images/s, p50/p90 latency per batch, RSS before
    loading and peak RSS in MB)."""
    bad = [b for b in backends if b not in BACKENDS]
    if bad:
        raise ValueError(f"unknown backend(s) {bad}; choose from {', '.join(BACKENDS)}")
    if method is not None:  # one row: a classical method computes one image per call, in NumPy
        one_image = batch_sizes is None or tuple(batch_sizes) == (1,)
        if tuple(backends) not in (("auto",), ("torch",)) or not one_image or threads:
            raise ValueError("backends, batch sizes and threads apply to networks; a classical method is timed "
                             "once, one image per call, in NumPy")
        batch_sizes = (1,)
    elif str(model).lower().endswith(".onnx") and "torch" in backends:
        raise ValueError(f"{model}: an exported .onnx model runs on ONNX Runtime: --backend onnx")
    batch_sizes = DEFAULT_BATCH_SIZES if batch_sizes is None else batch_sizes
    rows = []
    for backend in backends:
        for batch in batch_sizes:
            kwargs = dict(model=model, size=size, batch=int(batch), backend=backend, runs=runs, warmup=warmup,
                          threads=threads, device=device, method=method)
            log.info("benchmark: %s", kwargs)
            rows.append(_run_isolated(kwargs) if isolate else run_config(**kwargs))
    machine = machine_info()
    if threads:
        machine["torch_threads"] = int(threads)
    return {"machine": machine, "results": rows}


def format_table(report: dict) -> str:
    """A plain-text table of a :func:`benchmark` report, machine first."""
    m = report["machine"]
    lines = [f"machine: {m.get('cpu')} | {m.get('usable_cpus', m.get('logical_cpus'))} usable CPUs | "
             f"threads {m.get('torch_threads')} | load {m.get('load_avg_1min')} | torch {m.get('torch')}"
             + (f" | onnxruntime {m['onnxruntime']}" if "onnxruntime" in m else ""),
             f"model: {report['results'][0]['model'] if report['results'] else '-'}",
             f"{'backend':15s} {'batch':>5s} {'size':>5s} {'images/s':>9s} {'p50 ms':>9s} {'p90 ms':>9s} "
             f"{'CPU p50 ms':>10s} {'peak RSS MB':>11s}"]
    for r in report["results"]:
        lines.append(f"{r['backend']:15s} {r['batch']:5d} {r['size']:5d} {r['images_per_s']:9.2f} "
                     f"{r['p50_ms']:9.1f} {r['p90_ms']:9.1f} {r['cpu_p50_ms']:10.1f} "
                     f"{r['peak_rss_mb'] or float('nan'):11.0f}")
    return "\n".join(lines)
