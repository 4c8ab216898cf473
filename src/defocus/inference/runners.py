"""One small runner per backend behind one factory (:func:`make_runner`).

A runner turns images into in-focus probabilities in two steps, so that :class:`~defocus.inference.Predictor`
needs no per-backend branches:

* :meth:`Runner.prepare` is the per-image work done in the decoding threads: the normalised CHW network input,
  or, for a classical method, its whole map;
* :meth:`Runner.run` is the batched work done in the calling thread: N inputs of one shape -> N HxW maps.
"""
from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..bundled import BUNDLED_ONNX, BUNDLED_WEIGHTS, bundled_onnx, bundled_weights
from ..onnx_runtime import cuda_provider, onnx_device, onnx_session, read_onnx_config
from .loading import ModelInfo, classical_methods, is_module, is_onnx_file, load_network, resolve_device

log = logging.getLogger(__name__)

#: ``"auto"``: the bundled model on ONNX Runtime (from its shipped ``.onnx`` file; measured faster than PyTorch
#: on CPU, and the same maps with or without torch installed), ``.onnx`` files on ONNX Runtime, everything else on
#: PyTorch. PyTorch-only options (``precision``, ``compile``) or a CUDA device that the installed onnxruntime
#: cannot use make ``"auto"`` run the bundled model on PyTorch.
BACKENDS = ("auto", "torch", "onnx")
PRECISIONS = ("fp32", "bf16", "fp16")
DEFAULT_BATCH_SIZE = 4
DEFAULT_WORKERS = 2
#: The mask threshold of a network's in-focus probability when none is given.
NETWORK_THRESHOLD = 0.5
#: Classical methods see the image with its aspect ratio kept and the long side at most this many pixels: the
#: scale (CUHK's ~640 px photos) at which their window sizes were chosen. Smaller images are not enlarged.
CLASSICAL_MAX_SIDE = 640
#: The training-free method used when the installation has no bundled weights.
FALLBACK_METHOD = "lbp"


@dataclass(frozen=True)
class RuntimeOptions:
    """How a model runs. Only ``precision`` changes the outputs (slightly); the rest is speed.

    Attributes:
        batch_size: images per forward pass.
        workers: decoding (and, in :func:`~defocus.inference.predict_files`, writing) threads.
        precision: ``"fp32"``, or autocast to ``"bf16"`` (CUDA or CPU; on a CPU faster only with native bf16
            instructions such as AVX512-BF16 or AMX) / ``"fp16"`` (CUDA); torch backend only.
        fuse: fold conv + BN pairs (outputs equal to the unfused model within float rounding).
        channels_last: run the network on channels-last tensors.
        compile: wrap the network in ``torch.compile``.
        threads: CPU threads of an ONNX Runtime session (default: torch's thread count when torch is imported,
            else one per physical core). PyTorch's own count is process-wide: ``torch.set_num_threads``.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = DEFAULT_WORKERS
    precision: str = "fp32"
    fuse: bool = True
    channels_last: bool = True
    compile: bool = False
    threads: int | None = None

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")
        if self.workers < 1:
            raise ValueError(f"workers must be positive, got {self.workers}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")


class Runner:
    """Base of the runners: ``info`` (the model), ``backend``, ``device``, ``prepare`` and ``run``."""

    info: ModelInfo
    backend: str
    device = "cpu"

    def mask_threshold(self, prob: np.ndarray) -> float:
        """The mask threshold this model's maps use when none is given: 0.5 (a probability)."""
        return NETWORK_THRESHOLD

    def input_size(self, native: tuple[int, int], size: int, keep_aspect: bool,
                   upscale: bool = True) -> tuple[int, int]:
        """Model input (width, height) for an image of native (width, height): ``size`` x ``size`` (the paper's
        squash), or the long side ``size`` with the aspect ratio kept. ``upscale=False`` never enlarges: each
        side at most its native length (squash), or the long side at most ``size`` and at most native (keep)."""
        w, h = native
        if not keep_aspect:
            return (size, size) if upscale else (min(size, w), min(size, h))
        long_side = size if upscale else min(size, max(w, h))
        if w >= h:
            return long_side, max(1, round(h * long_side / w))
        return max(1, round(w * long_side / h)), long_side

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """Per-image work on an HxWx3 uint8 image already at :meth:`input_size`: the normalised CHW float32
        network input."""
        arr = rgb.astype(np.float32) * np.float32(1 / 255.0)
        arr -= self.mean
        arr /= self.std
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N prepared inputs of one shape (stacked) -> NxHxW float32 in-focus probabilities."""
        raise NotImplementedError

    def input_rgb(self, prepared: np.ndarray) -> np.ndarray:
        """The image a prepared network input shows: HxWx3 float32 in [0, 1] (:meth:`prepare` undone)."""
        return np.clip(prepared.transpose(1, 2, 0) * self.std + self.mean, 0.0, 1.0)

    def _set_normalisation(self, mean, std):
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)


class TorchRunner(Runner):
    """A PyTorch network on normalised NCHW float32 batches (folded, channels-last, ``inference_mode``)."""

    backend = "torch"

    def __init__(self, net, info: ModelInfo, device, options: RuntimeOptions):
        import torch

        from ..models.fuse import fuse_model

        self.info, self.device = info, device
        self.channels_last, self.precision = options.channels_last, options.precision
        self._set_normalisation(info.mean, info.std)
        if options.fuse:
            net = fuse_model(net, inplace=True)
        if options.channels_last:
            net = net.to(memory_format=torch.channels_last)
        # freezing: weights become constants, so inductor can prepack them for the CPU kernels
        self.net = torch.compile(net, dynamic=False, options={"freezing": True}) if options.compile else net
        self._lock = threading.Lock()

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N prepared inputs of one shape (stacked) -> NxHxW float32 in-focus probabilities."""
        import torch

        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        # DFFM's products of small values otherwise hit the CPU's slow denormal path; the caller's setting is
        # put back afterwards (torch has no getter: a denormal that survives a multiplication says it is off)
        was_flushing = bool((torch.tensor([1e-39]) * 1.0).item() == 0.0)
        flush = self.device.type == "cpu" and not was_flushing and torch.set_flush_denormal(True)
        try:
            with self._lock, torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype,
                                                                     enabled=dtype is not None):
                logit = self.net(x)[0]
                prob = torch.sigmoid(logit.float())[:, 0]
        finally:
            if flush:
                torch.set_flush_denormal(False)
        return prob.cpu().numpy()


class OnnxRunner(Runner):
    """An ONNX Runtime session with the ``image -> logit`` signature of :mod:`defocus.export`."""

    backend = "onnx"

    def __init__(self, session, info: ModelInfo, device):
        self.session, self.info, self.device = session, info, device
        self.input_name = session.get_inputs()[0].name
        self._set_normalisation(info.mean, info.std)

    @classmethod
    def from_file(cls, path, device="auto", threads: int | None = None) -> "OnnxRunner":
        """A runner for an exported ``.onnx`` file (its config read from the file's metadata); no torch import."""
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such model file")
        dev = onnx_device(device)
        try:
            session = onnx_session(str(path), dev, threads)
        except ImportError:
            raise
        except Exception as e:
            raise ValueError(f"{path}: cannot load this ONNX model ({e})") from None
        try:
            cfg = read_onnx_config(session)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None
        info = ModelInfo.from_config("onnx", cfg, str(path), "onnx")
        return cls(session, info, dev)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """N prepared inputs of one shape (stacked) -> NxHxW float32 in-focus probabilities."""
        logit = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return (1.0 / (1.0 + np.exp(-logit.astype(np.float64))))[:, 0].astype(np.float32)


class ClassicalRunner(Runner):
    """A training-free method (NumPy, CPU): the whole map is computed per image in :meth:`prepare`."""

    backend = "numpy"

    def __init__(self, method: str, fn, notes: str = ""):
        self.method, self.fn = method, fn
        self.info = ModelInfo("classical", method, None, "defocus.classical", notes=notes)

    def input_size(self, native: tuple[int, int], size: int, keep_aspect: bool,
                   upscale: bool = True) -> tuple[int, int]:
        """The image with its aspect ratio kept and the long side at most :data:`CLASSICAL_MAX_SIDE` (``size``,
        ``keep_aspect`` and ``upscale`` apply to networks only)."""
        w, h = native
        scale = min(1.0, CLASSICAL_MAX_SIDE / max(w, h))
        return max(1, round(w * scale)), max(1, round(h * scale))

    def mask_threshold(self, prob: np.ndarray) -> float:
        """The method's own mask threshold for the map ``prob`` (:func:`defocus.classical.mask_threshold`: LBP's
        T_seg, HiFST's adaptive one), 0.5 for a method without one."""
        from ..classical import MASK_THRESHOLDS, mask_threshold

        return mask_threshold(self.method, prob) if self.method in MASK_THRESHOLDS else NETWORK_THRESHOLD

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """The method's HxW float32 map of an HxWx3 uint8 image."""
        prob = np.asarray(self.fn(np.ascontiguousarray(rgb)), np.float32)
        if prob.shape != rgb.shape[:2]:
            raise RuntimeError(f"classical method returned shape {prob.shape}, expected {rgb.shape[:2]}")
        return prob

    def run(self, batch: np.ndarray) -> np.ndarray:
        """The maps :meth:`prepare` computed, unchanged."""
        return batch


def classical_runner(method: str, backend: str = "auto", fallback: bool = False) -> ClassicalRunner:
    """The runner of a training-free ``method``; ``fallback`` marks it as standing in for missing weights."""
    if backend != "auto":
        raise ValueError(f"classical methods run in NumPy; backend {backend!r} applies to networks only")
    methods = classical_methods()
    method = str(method).lower()
    if method not in methods:
        avail = ", ".join(methods) or "none installed"
        what = "no bundled default weights and the LBP baseline" if fallback else f"method {method!r}"
        raise ValueError(f"{what} is not available (classical methods: {avail}); pass a checkpoint path")
    return ClassicalRunner(method, methods[method], "fallback: no bundled weights installed" if fallback else "")


def network_runner(model, backend: str = "auto", device="auto", options: RuntimeOptions = RuntimeOptions(),
                   source: str | None = None) -> Runner:
    """A PyTorch network (module, checkpoint, registry name) run by PyTorch or, exported in memory, by ONNX
    Runtime. ``source`` overrides the description of where the weights come from."""
    dev = resolve_device(device)
    if options.precision == "fp16" and dev.type != "cuda":
        raise ValueError(f"precision 'fp16' is for CUDA devices; use fp32 or bf16 on {dev.type}")
    if is_module(model):
        model = copy.deepcopy(model)  # folding / channels-last must not change the caller's model
    net, info = load_network(model, dev if backend != "onnx" else "cpu")
    if source:
        info.source = source
    if backend != "onnx":
        return TorchRunner(net, info, dev, options)
    from ..export import export_onnx_bytes

    log.info("exporting the model to ONNX for ONNX Runtime ...")
    info.kind = "onnx"
    return OnnxRunner(onnx_session(export_onnx_bytes(net, fuse=options.fuse), dev, options.threads), info, dev)


def _torch_needed(device, options: RuntimeOptions) -> bool:
    """Whether ``"auto"`` must run the bundled model on PyTorch: PyTorch-only options, or a CUDA device that the
    installed onnxruntime has no provider for."""
    if options.precision != "fp32" or options.compile:
        return True
    kind = getattr(device, "type", None) or str(device).split(":")[0]
    return kind == "cuda" and not cuda_provider()


def bundled_runner(backend: str, device, options: RuntimeOptions) -> Runner:
    """The runner of the bundled model (see :data:`BACKENDS` for what ``"auto"`` picks), or the LBP baseline with
    a warning when this installation has no bundled model."""
    onnx_path, weights = bundled_onnx(), bundled_weights()
    if onnx_path is not None and (backend == "onnx" or backend == "auto" and not _torch_needed(device, options)):
        runner = OnnxRunner.from_file(onnx_path, device, options.threads)
        runner.info.source = f"bundled ({BUNDLED_ONNX})"
        return runner
    if weights is not None:
        return network_runner(weights, backend, device, options, source=f"bundled ({BUNDLED_WEIGHTS})")
    if onnx_path is not None:  # only the ONNX file is installed, and PyTorch was asked for
        raise ValueError(f"the bundled model is installed for ONNX Runtime only ({BUNDLED_ONNX}); "
                         "use backend 'auto' or 'onnx'")
    log.warning("no bundled default weights in this installation: using the training-free LBP "
                "baseline (method='lbp'); pass model=PATH for a trained network")
    # a PyTorch request falls back like 'auto' (the baseline has no backend); an ONNX one is refused
    return classical_runner(FALLBACK_METHOD, "auto" if backend == "torch" else backend, fallback=True)


def make_runner(model="default", method: str | None = None, backend: str = "auto", device="auto",
                options: RuntimeOptions = RuntimeOptions()) -> Runner:
    """The runner for ``model`` or ``method`` (see :class:`~defocus.inference.Predictor` for the values).

    ``"default"`` is the bundled model (see :data:`BACKENDS` for the backend ``"auto"`` picks), or the LBP
    baseline with a warning when the installation has none; an ``.onnx`` file runs on ONNX Runtime without
    importing torch; classical methods run in NumPy; other models need PyTorch.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    onnx_file = method is None and is_onnx_file(model)
    if options.precision != "fp32" and (onnx_file or backend == "onnx"):
        raise ValueError(f"precision {options.precision!r} applies to the torch backend only")
    if method is not None:
        if model not in ("default", None):
            raise ValueError("give either a model or a method, not both")
        if options.precision != "fp32" or options.compile or str(device) not in ("auto", "cpu"):
            raise ValueError("precision, compile and device apply to networks; classical methods run in NumPy "
                             "on the CPU")
        return classical_runner(method, backend)
    if onnx_file:
        if backend == "torch":
            raise ValueError(f"{model}: an .onnx file runs on ONNX Runtime (backend auto or onnx), not on PyTorch")
        return OnnxRunner.from_file(model, device, options.threads)
    if isinstance(model, str) and model == "default":
        return bundled_runner(backend, device, options)
    return network_runner(model, backend, device, options)
