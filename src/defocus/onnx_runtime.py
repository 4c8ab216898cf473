"""ONNX Runtime sessions for exported defocus models, without importing PyTorch.

A process that only runs an exported ``.onnx`` file (``Predictor("model.onnx")`` or
``defocus predict --model model.onnx``) never imports torch through this module, so it needs a fraction of the
memory of a PyTorch process (see ``benchmarks/RESULTS.md``).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

CONFIG_KEY = "defocus_config"
INPUT_NAME, OUTPUT_NAME = "image", "logit"


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("the ONNX backend needs onnxruntime: pip install onnxruntime") from None
    return ort


def device_type(device) -> str:
    """``"cpu"`` or ``"cuda"`` for a device given as a string (``"cuda:1"``) or a ``torch.device``."""
    return getattr(device, "type", None) or str(device).split(":")[0]


def cuda_provider() -> bool:
    """Whether the installed onnxruntime can run on CUDA."""
    return "CUDAExecutionProvider" in _ort().get_available_providers()


def onnx_device(device="auto") -> str:
    """The device an ONNX Runtime session runs on: ``"auto"`` is CUDA when the installed onnxruntime provides it,
    else CPU; ``"cpu"`` / ``"cuda[:N]"`` are checked against the installed providers."""
    cuda = cuda_provider()
    if device in (None, "auto"):
        return "cuda" if cuda else "cpu"
    kind = device_type(device)
    if kind not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r} (use auto, cpu or cuda)")
    if kind == "cuda" and not cuda:
        raise ValueError("device 'cuda' requested but this onnxruntime has no CUDA provider (use --device cpu)")
    return str(device)


def onnx_session(model, device="cpu", threads: int | None = None):
    """An ONNX Runtime session for a file path or serialized bytes; CUDA when ``device`` is CUDA and the
    installed onnxruntime provides it. ``threads`` defaults to PyTorch's intra-op thread count when torch is
    already imported, else to ONNX Runtime's default (one per physical core)."""
    ort = _ort()
    opts = ort.SessionOptions()
    torch = sys.modules.get("torch")
    if threads is None and torch is not None:
        threads = torch.get_num_threads()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    if device_type(device) == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    if isinstance(model, (str, Path)):
        model = str(model)
    return ort.InferenceSession(model, sess_options=opts, providers=providers)


def read_onnx_config(session) -> dict:
    """The defocus model config stored in an exported file's metadata (via an ONNX Runtime session)."""
    meta = session.get_modelmeta().custom_metadata_map
    if CONFIG_KEY not in meta:
        raise ValueError("this ONNX file was not exported by defocus (no model config in its metadata)")
    return json.loads(meta[CONFIG_KEY])
