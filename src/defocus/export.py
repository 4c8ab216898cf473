"""ONNX export of defocus networks, with a parity check against PyTorch, and ONNX Runtime sessions.

The exported graph maps a normalised image batch ``image`` (N x 3 x H x W, float32; N, H and W dynamic) to the
final ``logit`` (N x 1 x H x W; ``sigmoid`` gives the in-focus probability). Like the PyTorch model, it pads
H and W to a multiple of the backbone stride (replicate, bottom/right) and crops the logit back, so any size
works. The model's config (name, backbone, mean, std) is stored in the file's metadata, which is how
``Predictor(model="model.onnx")`` knows the normalisation.

``fp16_weights=True`` stores the float32 weights that are exactly float16 values (all of them for a model loaded
from float16 weights, such as the bundled one) as float16 initializers, each followed by a ``Cast`` to float32:
half the file, the same float32 arithmetic (ONNX Runtime folds the casts into constants when it loads the file).
With ``fuse=False`` the weights stay the stored float16 values and ONNX Runtime's own conv + BN fusion does the
folding in float32; folded weights (``fuse=True``) are rarely float16 values and would stay float32.
"""
from __future__ import annotations

import io
import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import imageio
from .defaults import DEFAULT_OPSET, EXPORT_TOLERANCE, PAPER_SIZE
from .errors import first_line
from .models.output import final_logit
from .models.padding import pad_to_multiple
from .models.predict import normalization, paper_preprocess, predict_logits
from .onnx_runtime import CONFIG_KEY, INPUT_NAME, OUTPUT_NAME, onnx_session

log = logging.getLogger(__name__)

#: (batch, height, width) of the random inputs of the parity check: square, odd-sized and batched.
CHECK_SHAPES = ((1, 320, 320), (2, 256, 384), (1, 200, 296))


class ExportGraph(nn.Module):
    """``image -> logit`` for export: pads to a multiple of the stride, runs the network, crops the logit."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.stride = int(getattr(net, "stride", 32))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2], image.shape[-1]
        # padded here unconditionally: the traced graph must pad whatever the example's size
        x = pad_to_multiple(image, self.stride, always=True)
        return final_logit(self.net(x))[..., :h, :w]


def _prepare(net: nn.Module, fuse: bool) -> nn.Module:
    import copy

    from .models.fuse import fuse_model

    net = copy.deepcopy(net).float().cpu().eval()
    return fuse_model(net, inplace=True) if fuse else net


def _metadata(net: nn.Module) -> dict:
    cfg = dict(getattr(net, "config", {}) or {})
    return {CONFIG_KEY: json.dumps(cfg), "output": "logit: sigmoid(logit) = in-focus probability (1 = in focus)"}


def store_fp16_weights(model) -> int:
    """Replace each float32 initializer of the ONNX ``model`` (in place) whose values are all exactly
    representable in float16 by a float16 initializer and a ``Cast`` back to float32 under the original name,
    so that the graph computes exactly as before. Returns the number of initializers converted."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    kept, casts, n = [], [], 0
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            w = numpy_helper.to_array(init)
            half = w.astype(np.float16)
            if w.size > 1 and np.array_equal(half.astype(np.float32), w, equal_nan=True):
                stored = numpy_helper.from_array(half, f"{init.name}__fp16")
                kept.append(stored)
                casts.append(helper.make_node("Cast", [stored.name], [init.name], to=TensorProto.FLOAT,
                                              name=f"{init.name}__cast"))
                n += 1
                continue
        kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    return n


def export_onnx_bytes(net: nn.Module, opset: int = DEFAULT_OPSET, fuse: bool = True,
                      size: int = PAPER_SIZE, fp16_weights: bool = False) -> bytes:
    """Export ``net`` (a defocus network) to an in-memory ONNX model with dynamic batch, height and width.

    ``fuse`` folds conv + BN first (without it, BN stays a node of the graph and ONNX Runtime folds it when it
    loads the file); ``size`` is the side of the example input used for tracing;
    ``fp16_weights`` stores the weights that are float16 values as float16 (see :func:`store_fp16_weights`).
    """
    import onnx

    graph = ExportGraph(_prepare(net, fuse)).eval()
    example = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    buf = io.BytesIO()
    dynamic = {INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch", 2: "height", 3: "width"}}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about shape arithmetic (exercised by the parity check)
        torch.onnx.export(graph, (example,), buf, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=dynamic, opset_version=opset, do_constant_folding=True, dynamo=False,
                          # unfused: BN stays a node (the exporter's eval mode would fold it into the conv)
                          training=torch.onnx.TrainingMode.EVAL if fuse else torch.onnx.TrainingMode.PRESERVE)
    model = onnx.load_from_string(buf.getvalue())
    for k, v in _metadata(net).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = k, v
    if fp16_weights:
        log.info("%d initializers stored as float16", store_fp16_weights(model))
    model.producer_name = "defocus"
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _torch_logits(net: nn.Module, x: np.ndarray) -> np.ndarray:
    return predict_logits(net, torch.from_numpy(x)).numpy()


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z.astype(np.float64)))


def validate_onnx(net: nn.Module, model, images=(), size: int = PAPER_SIZE, shapes=CHECK_SHAPES,
                  seed: int = 0) -> dict:
    """Compare ONNX Runtime on ``model`` (path or bytes) with the unfused PyTorch ``net`` in float32.

    Inputs: random normalised batches of ``shapes`` and the real ``images`` (paths, preprocessed as the
    Predictor does: squashed to ``size``). Returns ``{"cases": [...], "max_abs_diff_prob", "max_abs_diff_logit"}``
    (each case: its name, shape and the two differences).
    """
    net = net.float().cpu().eval()
    session = onnx_session(model, torch.device("cpu"))
    mean, std = normalization(net)
    rng = np.random.default_rng(seed)
    cases = [(f"random {n}x3x{h}x{w}", rng.standard_normal((n, 3, h, w)).astype(np.float32)) for n, h, w in shapes]
    for p in images:
        rgb, _ = imageio.decode_rgb(p)
        cases.append((f"image {Path(p).name}", paper_preprocess(rgb, mean, std, size).numpy()))
    out = []
    for name, x in cases:
        ref = _torch_logits(net, x)
        got = session.run(None, {INPUT_NAME: x})[0]
        if got.shape != ref.shape:
            raise AssertionError(f"{name}: ONNX output shape {got.shape} != PyTorch {ref.shape}")
        out.append({"case": name, "shape": list(x.shape),
                    "max_abs_diff_logit": float(np.abs(got - ref).max()),
                    "max_abs_diff_prob": float(np.abs(_sigmoid(got) - _sigmoid(ref)).max())})
    return {"cases": out,
            "max_abs_diff_prob": max(c["max_abs_diff_prob"] for c in out),
            "max_abs_diff_logit": max(c["max_abs_diff_logit"] for c in out)}


def export_onnx(net: nn.Module, path, opset: int = DEFAULT_OPSET, fuse: bool = True, check: bool = True,
                check_images=(), tolerance: float = EXPORT_TOLERANCE, fp16_weights: bool = False) -> dict:
    """Export ``net`` to ``path`` (atomically) and, with ``check``, validate it against the unfused PyTorch
    model (see :func:`validate_onnx`); ``fp16_weights``: see :func:`store_fp16_weights`. Raises
    ``AssertionError`` when the probability difference exceeds ``tolerance``, leaving no file behind. Returns
    the validation report (empty without ``check``). A missing check image or an output folder that cannot be
    made fails before the export."""
    missing = [str(p) for p in check_images if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"check image not found: {', '.join(missing)}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        data = export_onnx_bytes(net, opset=opset, fuse=fuse, fp16_weights=fp16_weights)
    except Exception as e:  # the exporter's own errors (an opset it does not support ...) span many lines
        raise ValueError(f"ONNX export failed at opset {opset}: {first_line(e)}") from e
    report: dict = {}
    if check:
        report = validate_onnx(net, data, images=check_images)
        if report["max_abs_diff_prob"] > tolerance:
            raise AssertionError(f"ONNX output differs from PyTorch by {report['max_abs_diff_prob']:.3g} "
                                 f"(> {tolerance:g}); not written")
    imageio.write_bytes_atomic(data, path)
    report["path"] = str(path)
    report["bytes"] = len(data)
    return report
