"""Any-size inference: ``Predictor`` turns photos into native-resolution in-focus maps, masks and overlays.

The default pipeline is the paper's (METHOD §6.1): the image (EXIF orientation applied) is squashed to
``size`` x ``size`` with PIL bilinear resizing, normalised with the model's mean/std, and ``sigmoid`` of the final
logit is resized back to the image's own size. Deviations are named options: ``keep_aspect`` (long side =
``size``, the model pads to a multiple of 32), ``upsample="nearest"`` (the paper's resizing back; the default
``"bilinear"`` gives smooth maps), ``fast_decode`` (JPEG DCT-domain downscaling while decoding).

Speed without changing outputs: conv + BN pairs are folded (:mod:`defocus.models.fuse`), the model runs in
``torch.inference_mode`` with channels-last tensors, decoding runs in a thread pool while the model computes,
and large maps are resized and written with Pillow. ``precision="bf16"`` (CUDA, or a CPU with native bf16
instructions), ``precision="fp16"`` (CUDA) and ``compile=True`` trade exactness or start-up time for speed.
An exported ``.onnx`` model runs on ONNX Runtime without importing torch.
"""
from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps

from . import imageio
from .bundled import BUNDLED_WEIGHTS, bundled_weights, resolve_default
from .imageio import DEFAULT_MAX_PIXELS, OUTPUT_SUFFIXES, ImageDecodeError
from .onnx_runtime import device_type, onnx_device, onnx_session, read_onnx_config

log = logging.getLogger(__name__)

DEFAULT_SIZE = 320
DEFAULT_BATCH_SIZE = 4
SAVE_CHOICES = tuple(OUTPUT_SUFFIXES)
UPSAMPLE_CHOICES = ("bilinear", "nearest")
PRECISIONS = ("fp32", "bf16", "fp16")
#: Classical methods see the image with its aspect ratio kept and the long side at most this many pixels: the
#: scale (CUHK's ~640 px photos) at which their window sizes were chosen. Smaller images are not enlarged.
CLASSICAL_MAX_SIDE = 640
#: ``predict_many(keep_images=True)`` keeps decoded images up to this size; larger ones are decoded again.
KEEP_IMAGE_PIXELS = 8_000_000
#: Overlay colours: blurred regions are dimmed towards this tint; the focus boundary is drawn in this colour.
OVERLAY_TINT = (20, 45, 110)
OVERLAY_DIM = 0.45
BOUNDARY_COLOUR = (255, 214, 0)


# ------------------------------------------------------------------------------------------------- models


@dataclass
class ModelInfo:
    """What a :class:`Predictor` runs: ``kind`` is ``network``, ``onnx`` or ``classical``."""

    kind: str
    name: str
    backbone: str | None = None
    source: str = ""
    mean: tuple | None = None
    std: tuple | None = None
    notes: str = ""

    def to_dict(self) -> dict:
        """A JSON-serialisable description (recorded in ``summary.json``)."""
        d = {"kind": self.kind, "name": self.name, "backbone": self.backbone, "source": self.source}
        if self.notes:
            d["notes"] = self.notes
        return d

    def __str__(self) -> str:
        what = f"{self.name} ({self.backbone})" if self.backbone else self.name
        return f"{self.kind} {what} from {self.source}" if self.source else f"{self.kind} {what}"


def classical_methods() -> dict:
    """The training-free baselines available in this installation (``name -> fn(rgb uint8) -> prob``)."""
    try:
        mod = importlib.import_module("defocus.classical")
    except ImportError:
        return {}
    return dict(getattr(mod, "METHODS", {}) or {})


def resolve_device(device="auto") -> "torch.device":
    """``"auto"``: CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    import torch

    if isinstance(device, torch.device):
        return device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available (use --device cpu or auto)")
    return dev


def _registry_spec(spec: str):
    """``NAME`` or ``NAME:BACKBONE`` of a registered model, else ``None``."""
    from .models import list_models

    name, _, backbone = spec.partition(":")
    if name in list_models():
        return name, backbone or None
    return None


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    return torch is not None and isinstance(x, torch.Tensor)


def _is_module(x) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.nn.Module)


def load_network(model, device="cpu") -> tuple["torch.nn.Module", ModelInfo]:
    """Resolve ``model`` (an ``nn.Module``, ``"default"`` for the bundled weights, a checkpoint path, or a registry
    ``NAME[:BACKBONE]``) to an eval-mode network and its description. Registry names give **randomly
    initialised** weights (for speed tests only)."""
    from .models import create_model, list_models, load_model

    model = resolve_default(model)
    if _is_module(model):
        cfg = getattr(model, "config", {}) or {}
        net, source = model, "in-memory model"
    elif Path(str(model)).expanduser().is_file():
        path = Path(str(model)).expanduser()
        try:
            net = load_model(path, device="cpu")
        except Exception as e:  # wrong format, truncated file, mismatching weights ...
            raise ValueError(f"{path}: cannot load this checkpoint ({e})") from None
        cfg, source = net.config, str(path)
    elif isinstance(model, str) and _registry_spec(model):
        name, backbone = _registry_spec(model)
        net = create_model(name, backbone=backbone, pretrained=False).eval()
        cfg, source = net.config, "registry (random initialisation)"
        log.warning("MODEL %r HAS RANDOM WEIGHTS: its maps are meaningless (useful for speed tests only); pass a "
                    "checkpoint path for real predictions", model)
    else:
        raise ValueError(f"unknown model {model!r}: not a file, and not a registered name "
                         f"({', '.join(list_models())}, optionally NAME:BACKBONE)")
    net = net.eval().to(device)
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None:
        raise ValueError(f"model {model!r} has no input normalisation (config 'mean'/'std')")
    info = ModelInfo("network", cfg.get("name", type(net).__name__), cfg.get("backbone"), source,
                     tuple(mean), tuple(std))
    return net, info


# ------------------------------------------------------------------------------------------------ runners


class _TorchRunner:
    """Runs a PyTorch network on normalised NCHW float32 batches; returns NxHxW probabilities."""

    def __init__(self, net, device, fuse=True, channels_last=True, compile=False, precision="fp32"):
        import torch

        from .models.fuse import fuse_model

        self.device, self.channels_last, self.precision = device, channels_last, precision
        if fuse:
            net = fuse_model(net, inplace=True)
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
        # freezing: weights become constants, so inductor can prepack them for the CPU kernels
        self.net = torch.compile(net, dynamic=False, options={"freezing": True}) if compile else net
        self._lock = threading.Lock()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        import torch

        x = torch.from_numpy(batch).to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        flush = self.device.type == "cpu" and torch.set_flush_denormal(True)
        try:
            with self._lock, torch.inference_mode(), torch.autocast(self.device.type, dtype=dtype,
                                                                     enabled=dtype is not None):
                logit = self.net(x)[0]
                prob = torch.sigmoid(logit.float())[:, 0]
        finally:
            if flush:
                torch.set_flush_denormal(False)
        return prob.cpu().numpy()


class _OnnxRunner:
    """Runs an ONNX Runtime session with the ``image -> logit`` signature of :mod:`defocus.export`."""

    def __init__(self, session):
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        logit = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})[0]
        return (1.0 / (1.0 + np.exp(-logit.astype(np.float64))))[:, 0].astype(np.float32)


# ------------------------------------------------------------------------------------------------ results


def _resize_map(prob: np.ndarray, size: tuple[int, int], upsample: str) -> np.ndarray:
    """Resize a float32 HxW map to (width, height) with Pillow (bilinear: pixel-centre aligned, as
    ``align_corners=False``); returns a read-only array."""
    if (prob.shape[1], prob.shape[0]) == tuple(size):
        out = prob.view()
    else:
        resample = Image.BILINEAR if upsample == "bilinear" else Image.NEAREST
        out = np.asarray(Image.fromarray(prob, "F").resize(tuple(size), resample))
    out.flags.writeable = False
    return out


def prob_to_uint8(prob: np.ndarray) -> np.ndarray:
    """In-focus probability in [0, 1] -> 8-bit (255 = in focus), rounded."""
    out = np.multiply(prob, 255.0, dtype=np.float32)
    out += 0.5
    return out.astype(np.uint8)


def focus_boundary(mask: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Pixels on the border between in-focus and blurred regions, dilated to ``thickness`` pixels."""
    from scipy.ndimage import maximum_filter1d

    edge = np.zeros(mask.shape, dtype=bool)
    edge[:-1] |= mask[:-1] != mask[1:]
    edge[1:] |= mask[:-1] != mask[1:]
    edge[:, :-1] |= mask[:, :-1] != mask[:, 1:]
    edge[:, 1:] |= mask[:, :-1] != mask[:, 1:]
    if thickness > 1:
        e = edge.view(np.uint8)
        e = maximum_filter1d(maximum_filter1d(e, thickness, axis=0), thickness, axis=1)
        edge = e.astype(bool)
    return edge


def make_overlay(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """``image`` with the blurred regions (``mask`` False) dimmed and tinted and the focus boundary drawn."""
    rgb = np.asarray(image.convert("RGB"))
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image size {rgb.shape[1]}x{rgb.shape[0]} does not match the map "
                         f"{mask.shape[1]}x{mask.shape[0]}")
    tint = np.asarray(OVERLAY_TINT, np.float32) * (1.0 - OVERLAY_DIM)
    dimmed = (rgb.astype(np.float32) * OVERLAY_DIM + tint + 0.5).astype(np.uint8)
    out = np.where(mask[..., None], rgb, dimmed)
    thickness = max(1, round(max(mask.shape) / 500))
    out[focus_boundary(mask, thickness)] = BOUNDARY_COLOUR
    return Image.fromarray(out, "RGB")


class Prediction:
    """One image's result. Maps are at the image's native (displayed) size, 1 = in focus.

    Attributes:
        source: the input path, or a short description of an in-memory input.
        size: native (width, height).
        prob_lowres: the model-resolution probability map (before resizing back).
        seconds: processing time of this image (decode + its share of the batch + resizing).
        model: :class:`ModelInfo` of the model that produced it.
    """

    def __init__(self, source: str, size: tuple[int, int], prob_lowres: np.ndarray, *, threshold: float = 0.5,
                 upsample: str = "bilinear", seconds: float = 0.0, model: ModelInfo | None = None,
                 image: Image.Image | None = None, loader: Callable[[], Image.Image] | None = None):
        self.source, self.size = source, (int(size[0]), int(size[1]))
        self.prob_lowres = prob_lowres
        self.threshold, self.upsample = float(threshold), upsample
        self.seconds, self.model = seconds, model
        self._image, self._loader = image, loader
        self._prob = self._mask = None
        self._lock = threading.Lock()

    ok = True
    error = None

    @property
    def prob(self) -> np.ndarray:
        """float32 HxW in-focus probability at native size (computed on first use, then cached; read-only)."""
        with self._lock:
            if self._prob is None:
                self._prob = _resize_map(np.ascontiguousarray(self.prob_lowres, np.float32), self.size,
                                         self.upsample)
            return self._prob

    @property
    def mask(self) -> np.ndarray:
        """bool HxW: ``prob >= threshold`` (True = in focus; cached, read-only)."""
        if self._mask is None:
            mask = self.prob >= self.threshold
            mask.flags.writeable = False
            self._mask = mask
        return self._mask

    @property
    def in_focus_fraction(self) -> float:
        """Fraction of the image's pixels that are in focus (mean of :attr:`mask`)."""
        return float(np.count_nonzero(self.mask)) / self.mask.size

    def image(self) -> Image.Image:
        """The input as an RGB image at native size (re-decoded from its file when it was not kept)."""
        if self._image is not None and self._image.size == self.size:
            return self._image
        if self._loader is None:
            raise ValueError("the input image is not available for this prediction")
        return self._loader()

    def overlay(self, image: Image.Image | None = None) -> Image.Image:
        """PIL image: blurred regions dimmed and tinted blue, the focus boundary drawn in yellow."""
        return make_overlay(image if image is not None else self.image(), self.mask)

    def save(self, out_dir, what=SAVE_CHOICES, stem: str | None = None, png_compress_level: int = 1,
             jpeg_quality: int = 90) -> dict[str, Path]:
        """Write ``<stem>_prob.png`` (8-bit, 255 = in focus), ``<stem>_mask.png`` (0/255) and/or
        ``<stem>_overlay.jpg`` into ``out_dir``, each atomically; returns ``{kind: path}``.

        ``stem`` defaults to the input file's stem. PNGs use zlib level ``png_compress_level`` (1: fast; maps
        compress well anyway).
        """
        what = _check_save(what)
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        stem = stem or (Path(self.source).stem if self.source and not self.source.startswith("<") else "image")
        written = {}
        for kind in what:
            path = out_dir / f"{stem}{OUTPUT_SUFFIXES[kind]}"
            params = imageio.output_save_params(kind)
            if kind == "prob":
                img, fmt = Image.fromarray(prob_to_uint8(self.prob), "L"), "PNG"
            elif kind == "mask":
                img, fmt = Image.fromarray(self.mask.view(np.uint8) * np.uint8(255), "L"), "PNG"
            else:
                img, fmt = self.overlay(), "JPEG"
            params.update({"compress_level": png_compress_level} if fmt == "PNG" else {"quality": jpeg_quality})
            written[kind] = imageio.save_image_atomic(img, path, fmt, **params)
        return written

    def to_dict(self) -> dict:
        """Summary entry: path, size, in-focus fraction, seconds."""
        return {"path": self.source, "width": self.size[0], "height": self.size[1],
                "in_focus_fraction": round(self.in_focus_fraction, 6), "seconds": round(self.seconds, 4),
                "error": None}

    def __repr__(self):
        return f"Prediction({self.source!r}, size={self.size[0]}x{self.size[1]})"


@dataclass
class FailedPrediction:
    """An input that could not be processed (yielded by ``predict_many(..., on_error="return")``)."""

    source: str
    error: str
    seconds: float = 0.0
    ok = False

    def to_dict(self) -> dict:
        """Summary entry with the error."""
        return {"path": self.source, "width": None, "height": None, "in_focus_fraction": None,
                "seconds": round(self.seconds, 4), "error": self.error}


def _check_save(what) -> tuple[str, ...]:
    if isinstance(what, str):
        what = [w.strip() for w in what.split(",") if w.strip()]
    bad = [w for w in what if w not in SAVE_CHOICES]
    if bad:
        raise ValueError(f"unknown output(s) {bad}; choose from {', '.join(SAVE_CHOICES)}")
    return tuple(dict.fromkeys(what))


# ---------------------------------------------------------------------------------------------- predictor


@dataclass
class _Item:
    source: str
    size: tuple[int, int]
    array: np.ndarray                    # network: normalised CHW float32; classical: the probability map
    seconds: float
    image: Image.Image | None = None
    loader: Callable | None = None
    ready: bool = False                  # array already holds the probability map


def _describe(x) -> str:
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    if isinstance(x, Image.Image):
        return f"<PIL image {x.size[0]}x{x.size[1]} {x.mode}>"
    shape = "x".join(map(str, getattr(x, "shape", ())))
    return f"<{type(x).__name__} {shape}>"


def _tensor_to_array(t: "torch.Tensor") -> np.ndarray:
    """CHW (or 1xCxHxW) tensor -> HxWxC array; uint8 stays 0..255, floats are taken as [0, 1]."""
    import torch

    t = t.detach().cpu()
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2:
        return t.numpy()
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        raise ValueError(f"expected a CxHxW image tensor (C = 1, 3 or 4), got shape {tuple(t.shape)}")
    if t.dtype not in (torch.uint8, torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise ValueError(f"unsupported tensor dtype {t.dtype} (use uint8 or float in [0, 1])")
    if t.is_floating_point():
        t = t.float()
    return t.permute(1, 2, 0).numpy()


class Predictor:
    """Defocus-blur prediction for images of any size.

    Args:
        model: ``"default"`` (the bundled weights; the LBP baseline when none are installed), a checkpoint path
            (defocus ``.safetensors``, the authors' ``.pth``, or an exported ``.onnx``), a registry name
            ``NAME[:BACKBONE]`` (random weights: speed tests only), or an ``nn.Module``.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
        size: network input size (the paper's 320). Classical methods instead see the image with its aspect
            ratio kept and the long side reduced to at most :data:`CLASSICAL_MAX_SIDE`.
        backend: ``"torch"`` or ``"onnx"`` (ONNX Runtime; a torch model is exported in memory first).
        method: a training-free baseline (``"lbp"``, ``"hifst"``) instead of a network.
        keep_aspect: resize the long side to ``size`` and keep the aspect ratio (the paper squashes to a square).
        threshold: mask threshold on the probability (``prob >= threshold`` is in focus).
        batch_size: images per forward pass in :meth:`predict_many`.
        max_pixels: refuse larger images (decompression-bomb guard; 0 or None disables).
        upsample: ``"bilinear"`` (default) or ``"nearest"`` (the paper's) to resize maps to native size.
        fast_decode: decode JPEGs at a reduced DCT scale that keeps at least twice the network input size.
        precision: ``"fp32"``, or autocast to ``"bf16"`` (CUDA or CPU; on a CPU faster only with native bf16
            instructions such as AVX512-BF16 or AMX) / ``"fp16"`` (CUDA); outputs then differ slightly.
        fuse: fold conv + BN pairs (outputs equal to the unfused model within float rounding).
        channels_last: run the network on channels-last tensors.
        compile: wrap the network in ``torch.compile``.
        workers: decoding threads of :meth:`predict_many`.
        threads: CPU threads of an ONNX Runtime session (default: torch's thread count when torch is imported,
            else one per physical core). PyTorch's own count is process-wide: ``torch.set_num_threads``.
    """

    def __init__(self, model="default", device="auto", size: int = DEFAULT_SIZE, backend: str = "torch",
                 method: str | None = None, keep_aspect: bool = False, threshold: float = 0.5,
                 batch_size: int = DEFAULT_BATCH_SIZE, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 upsample: str = "bilinear", fast_decode: bool = False, precision: str = "fp32",
                 fuse: bool = True, channels_last: bool = True, compile: bool = False, workers: int = 2,
                 threads: int | None = None):
        if size < 1:
            raise ValueError(f"size must be positive, got {size}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        if upsample not in UPSAMPLE_CHOICES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_CHOICES}, got {upsample!r}")
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.size, self.keep_aspect, self.threshold = int(size), bool(keep_aspect), float(threshold)
        self.batch_size, self.max_pixels, self.upsample = int(batch_size), max_pixels, upsample
        self.fast_decode, self.workers = bool(fast_decode), max(1, int(workers))
        self.threads = int(threads) if threads else None
        onnx_file = method is None and isinstance(model, (str, os.PathLike)) and str(model).lower().endswith(".onnx")
        # an exported .onnx file runs on ONNX Runtime alone: torch is never imported for it
        self.device = onnx_device(device) if onnx_file else resolve_device(device)
        self.backend = backend
        if precision == "fp16" and device_type(self.device) != "cuda":
            raise ValueError(f"precision 'fp16' is for CUDA devices; use fp32 or bf16 on {device_type(self.device)}")
        if precision != "fp32" and (onnx_file or backend == "onnx"):
            raise ValueError(f"precision {precision!r} applies to the torch backend only")
        self._classical = None
        self._runner = None
        if method is not None:
            if model not in ("default", None):
                raise ValueError("give either a model or a method, not both")
            self._set_classical(method, fallback=False)
        elif isinstance(model, str) and model == "default":
            path = bundled_weights()
            if path is None:
                log.warning("no bundled default weights in this installation: using the training-free LBP "
                            "baseline (method='lbp'); pass model=PATH for a trained network")
                self._set_classical("lbp", fallback=True)
            else:
                self._set_network(path, backend, fuse, channels_last, compile, precision, bundled=True)
        elif onnx_file:
            self._set_onnx_file(Path(model))
        else:
            if _is_module(model):
                model = copy.deepcopy(model)  # folding / channels-last must not change the caller's model
            self._set_network(model, backend, fuse, channels_last, compile, precision)
        log.info("predictor: %s, backend %s, device %s, input %s", self.info, self.backend, self.device,
                 f"long side {self.size}" if self.keep_aspect else f"{self.size}x{self.size}")

    # -- model set-up
    def _set_classical(self, method: str, fallback: bool):
        methods = classical_methods()
        if method not in methods:
            avail = ", ".join(methods) or "none installed"
            what = "no bundled default weights and the LBP baseline" if fallback else f"method {method!r}"
            raise ValueError(f"{what} is not available (classical methods: {avail}); pass a checkpoint path")
        if self.backend != "torch":
            raise ValueError("classical methods run in NumPy; backend 'onnx' applies to networks only")
        self._classical = methods[method]
        self.backend = "numpy"
        notes = "fallback: no bundled weights installed" if fallback else ""
        self.info = ModelInfo("classical", method, None, "defocus.classical", notes=notes)

    def _set_network(self, model, backend, fuse, channels_last, compile, precision, bundled=False):
        net, info = load_network(model, self.device if backend == "torch" else "cpu")
        if bundled:
            info.source = f"bundled ({BUNDLED_WEIGHTS})"
        self.info, self.mean, self.std = info, np.asarray(info.mean, np.float32), np.asarray(info.std, np.float32)
        if backend == "torch":
            self._runner = _TorchRunner(net, self.device, fuse, channels_last, compile, precision)
        else:
            from .export import export_onnx_bytes

            log.info("exporting the model to ONNX for ONNX Runtime ...")
            self._runner = _OnnxRunner(onnx_session(export_onnx_bytes(net, fuse=fuse), self.device, self.threads))
            self.info.kind = "onnx"

    def _set_onnx_file(self, path: Path):
        if not path.is_file():
            raise ValueError(f"{path}: no such model file")
        try:
            session = onnx_session(str(path), self.device, self.threads)
        except ImportError:
            raise
        except Exception as e:
            raise ValueError(f"{path}: cannot load this ONNX model ({e})") from None
        cfg = read_onnx_config(session)
        self.backend = "onnx"
        self.info = ModelInfo("onnx", cfg.get("name", "onnx"), cfg.get("backbone"), str(path),
                              tuple(cfg["mean"]), tuple(cfg["std"]))
        self.mean, self.std = np.asarray(cfg["mean"], np.float32), np.asarray(cfg["std"], np.float32)
        self._runner = _OnnxRunner(session)

    # -- preprocessing
    def input_size(self, native: tuple[int, int]) -> tuple[int, int]:
        """Model input (width, height) for an image of native (width, height)."""
        w, h = native
        if self._classical is not None:
            scale = min(1.0, CLASSICAL_MAX_SIDE / max(w, h))
            return max(1, round(w * scale)), max(1, round(h * scale))
        if not self.keep_aspect:
            return self.size, self.size
        if w >= h:
            return self.size, max(1, round(h * self.size / w))
        return max(1, round(w * self.size / h)), self.size

    def _draft_size(self, native):
        tw, th = self.input_size(native)
        return 2 * tw, 2 * th

    def _decode(self, x) -> tuple[Image.Image, tuple[int, int], Callable | None]:
        if isinstance(x, (str, os.PathLike)):
            path = Path(x)
            draft = self._draft_size if self.fast_decode else None
            img, native = imageio.decode_rgb(path, self.max_pixels, draft)
            loader = (lambda: imageio.decode_rgb(path, self.max_pixels)[0])
            return img, native, loader
        if isinstance(x, Image.Image):
            if self.max_pixels and x.size[0] * x.size[1] > self.max_pixels:
                raise ImageDecodeError(_describe(x), imageio._pixel_limit_message(*x.size, self.max_pixels))
            img = imageio.to_rgb(ImageOps.exif_transpose(x))
            return img, img.size, None
        if _is_tensor(x):
            x = _tensor_to_array(x)
        if isinstance(x, np.ndarray):
            img = imageio.image_from_array(x)
            if self.max_pixels and img.size[0] * img.size[1] > self.max_pixels:
                raise ImageDecodeError(_describe(x), imageio._pixel_limit_message(*img.size, self.max_pixels))
            return img, img.size, None
        raise TypeError(f"cannot predict on {type(x).__name__}: pass a path, PIL image, numpy array or tensor")

    def _prepare(self, x, keep_image: bool) -> _Item:
        t0 = time.perf_counter()
        source = _describe(x)
        try:
            img, native, loader = self._decode(x)
        except ImageDecodeError:
            raise
        except (ValueError, TypeError) as e:
            raise ImageDecodeError(source, str(e)) from None
        except OSError as e:
            raise ImageDecodeError(source, f"cannot read ({e})") from None
        tw, th = self.input_size(native)
        small = np.asarray(img.resize((tw, th), Image.BILINEAR) if img.size != (tw, th) else img)
        # decoded images are kept for overlays unless they are large (bounded memory: re-decoded when needed)
        keep_ok = loader is None or (keep_image and native[0] * native[1] <= KEEP_IMAGE_PIXELS)
        keep = img if keep_ok and img.size == native else None
        if self._classical is not None:
            prob = np.asarray(self._classical(np.ascontiguousarray(small)), np.float32)
            if prob.shape != (th, tw):
                raise RuntimeError(f"classical method returned shape {prob.shape}, expected {(th, tw)}")
            return _Item(source, native, prob, time.perf_counter() - t0, keep, loader, ready=True)
        arr = small.astype(np.float32) * np.float32(1 / 255.0)
        arr -= self.mean
        arr /= self.std
        return _Item(source, native, np.ascontiguousarray(arr.transpose(2, 0, 1)), time.perf_counter() - t0,
                     keep, loader)

    # -- prediction
    def predict(self, x) -> Prediction:
        """Predict one image: a path, a PIL image, an HxWx3 uint8 RGB array (HxW grey, HxWx4 RGBA, uint16 and
        float [0, 1] arrays also work) or a CxHxW tensor (uint8, or float in [0, 1]).
        Raises :class:`~defocus.imageio.ImageDecodeError` for unusable inputs."""
        item = self._prepare(x, keep_image=False)
        return next(self._run([item]))

    def predict_many(self, inputs: Iterable, on_error: str = "raise", keep_images: bool = False
                     ) -> Iterator[Prediction | FailedPrediction]:
        """Predict an iterable of inputs, in order, batching the network and decoding in a thread pool while
        the network computes. ``on_error="return"`` yields a :class:`FailedPrediction` for each unusable input
        and carries on; ``"raise"`` raises on the first one. ``keep_images`` keeps each decoded image (up to
        :data:`KEEP_IMAGE_PIXELS`) on its result for :meth:`Prediction.overlay` instead of decoding it again."""
        if on_error not in ("raise", "return"):
            raise ValueError(f"on_error must be 'raise' or 'return', got {on_error!r}")
        it = iter(inputs)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="defocus-decode")
        pending: deque = deque()
        prefetch = self.batch_size + self.workers

        def refill():
            while len(pending) < prefetch:
                try:
                    x = next(it)
                except StopIteration:
                    return
                pending.append((x, pool.submit(self._prepare, x, keep_images)))

        try:
            refill()
            batch: list[_Item] = []
            while pending:
                x, fut = pending.popleft()
                refill()
                try:
                    item = fut.result()
                except Exception as e:  # one unusable input: report it in its place and go on
                    if on_error == "raise":
                        raise
                    yield from self._run(batch)
                    batch = []
                    if isinstance(e, ImageDecodeError):
                        yield FailedPrediction(e.path, e.reason)
                    else:
                        yield FailedPrediction(_describe(x), f"{type(e).__name__}: {e}")
                    continue
                if batch and item.array.shape != batch[0].array.shape:
                    yield from self._run(batch)
                    batch = []
                batch.append(item)
                if len(batch) >= self.batch_size:
                    yield from self._run(batch)
                    batch = []
            yield from self._run(batch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, items: list[_Item]) -> Iterator[Prediction]:
        if not items:
            return
        t0 = time.perf_counter()
        if items[0].ready:
            probs = [it.array for it in items]
        else:
            out = self._runner(np.stack([it.array for it in items]))
            probs = list(out)
        share = (time.perf_counter() - t0) / len(items)
        for it, p in zip(items, probs):
            yield Prediction(it.source, it.size, p, threshold=self.threshold, upsample=self.upsample,
                             seconds=it.seconds + share, model=self.info, image=it.image, loader=it.loader)

    def settings(self) -> dict:
        """The settings that shape the outputs (recorded in ``summary.json``)."""
        return {"size": self.size, "keep_aspect": self.keep_aspect, "threshold": self.threshold,
                "upsample": self.upsample, "fast_decode": self.fast_decode, "backend": self.backend,
                "device": str(self.device), "batch_size": self.batch_size, "max_pixels": self.max_pixels}


# ------------------------------------------------------------------------------------------- file batches


def predict_files(predictor: Predictor, inputs, out_dir="outputs", save=SAVE_CHOICES, recursive: bool = False,
                  progress: bool = True, on_error: Callable[[str, str], None] | None = None,
                  png_compress_level: int = 1) -> dict:
    """Run ``predictor`` on files / folders / globs / ``.txt`` lists and write the outputs into ``out_dir``.

    Writes ``<stem>_prob.png``, ``<stem>_mask.png`` and ``<stem>_overlay.jpg`` (as chosen by ``save``) per image
    and ``summary.json``; output stems are unique (see :func:`defocus.imageio.output_stems`) and never name an
    input file. Every failure is reported through ``on_error(path, reason)`` (default: logged) and recorded in
    the summary; the batch carries on. Raises ``OSError`` when ``out_dir`` cannot be written.

    Returns the summary dict (``images``: one entry per input, ``failed``: the number of failures).
    """
    from tqdm import tqdm

    save = _check_save(save)
    report = on_error or (lambda path, reason: log.error("%s: %s", path, reason))
    t_start = time.perf_counter()
    out_dir = imageio.check_writable_dir(out_dir)
    found = imageio.collect_inputs(inputs, recursive=recursive)
    stems = imageio.output_stems(found.files, out_dir, avoid=[out_dir / imageio.SUMMARY_NAME])
    entries: list[dict] = []
    for item, reason in found.errors:
        report(item, reason)
        entries.append(FailedPrediction(item, reason).to_dict())
    writer = ThreadPoolExecutor(max(1, predictor.workers), thread_name_prefix="defocus-write")
    saving: deque = deque()

    def finish_one():
        entry, fut = saving.popleft()
        try:
            entry["outputs"] = {k: p.name for k, p in fut.result().items()}
        except Exception as e:  # a write failure is this image's failure
            reason = f"cannot write outputs ({e})"
            entry.update(error=reason, in_focus_fraction=None)
            report(entry["path"], reason)

    def save_one(pred: Prediction, stem: str):
        t0 = time.perf_counter()
        written = pred.save(out_dir, save, stem=stem, png_compress_level=png_compress_level)
        pred.seconds += time.perf_counter() - t0
        return written

    bar = tqdm(total=len(found.files), unit="img", disable=not progress or len(found.files) <= 1,
               dynamic_ncols=True)
    try:
        results = predictor.predict_many(found.files, on_error="return", keep_images="overlay" in save)
        for res, stem in zip(results, stems):
            if not res.ok:
                report(res.source, res.error)
                entries.append(res.to_dict())
            else:
                entry = {"path": res.source, "output": stem}
                entries.append(entry)
                saving.append((entry, writer.submit(_save_and_describe, save_one, res, stem, entry)))
                while len(saving) > predictor.workers:
                    finish_one()
            bar.update(1)
        while saving:
            finish_one()
    finally:
        bar.close()
        writer.shutdown(wait=True)
    failed = sum(1 for e in entries if e.get("error"))
    summary = {
        "model": predictor.info.to_dict(),
        "settings": predictor.settings(),
        "outputs": list(save),
        "out_dir": str(out_dir),
        "n_images": len(entries),
        "failed": failed,
        "seconds_total": round(time.perf_counter() - t_start, 3),
        "images": entries,
    }
    imageio.write_bytes_atomic(json.dumps(summary, indent=2, ensure_ascii=False).encode("utf-8"),
                               out_dir / imageio.SUMMARY_NAME)
    return summary


def _save_and_describe(save_one, pred: Prediction, stem: str, entry: dict) -> dict:
    written = save_one(pred, stem)
    entry.update({k: v for k, v in pred.to_dict().items() if k != "path"})
    return written
