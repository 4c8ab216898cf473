"""``Predictor``: photos (paths, PIL images, arrays, tensors) -> native-resolution in-focus maps.

The default pipeline is the paper's (method.md §6.1): the image (EXIF orientation applied) is squashed to
``size`` x ``size`` with PIL bilinear resizing, normalised with the model's mean/std, and ``sigmoid`` of the final
logit is resized back to the image's own size. Deviations are named options (:class:`PredictOptions`):
``keep_aspect`` (long side = ``size``, the model pads to a multiple of 32), ``upsample="nearest"`` (the paper's
resizing back; the default ``"bilinear"`` gives smooth maps), ``fast_decode`` (JPEG DCT-domain downscaling
while decoding), ``draft_pixels`` (the same for large JPEGs only, on by default: bounded memory for any photo).
How the model runs is :class:`~defocus.inference.runners.RuntimeOptions`.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import os
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
from PIL import Image, ImageOps

from .. import imageio
from ..imageio import DEFAULT_MAX_PIXELS, ImageDecodeError
from ..matting import refine_map
from .result import UPSAMPLE_CHOICES, FailedPrediction, Prediction
from .runners import CLASSICAL_MAX_SIDE, NETWORK_THRESHOLD, Runner, RuntimeOptions, make_runner

log = logging.getLogger(__name__)

#: JPEGs above this many pixels are decoded for the network at a reduced DCT scale (see ``draft_pixels``).
DRAFT_PIXELS = 16_000_000
#: ... keeping at least this many times the network input on each side.
DRAFT_FACTOR = 4
#: ``predict_many(keep_images=True)`` keeps decoded images up to this size; larger ones are decoded again.
KEEP_IMAGE_PIXELS = 8_000_000


@dataclass(frozen=True)
class PredictOptions:
    """What shapes the outputs (recorded in ``summary.json``).

    Attributes:
        size: network input size. ``None`` (default): the model's own - the paper's 320, or the size recorded
            in the network's file (the bundled model's 512, chosen on real photos: its model card). Classical
            methods instead see the image with its aspect ratio kept and the long side reduced to at most
            :data:`~defocus.inference.runners.CLASSICAL_MAX_SIDE`.
        keep_aspect: resize the long side to ``size`` and keep the aspect ratio (the paper squashes to a square).
        upscale: resize images smaller than the input size up to it (the paper's). ``False`` never enlarges a
            side: a photo smaller than ``size`` runs at its own size on that side (enlarging a sharp photo
            softens it, and a network fine-tuned on enlarged photos then calls it blurred;
            benchmarks/RESULTS_pairs.md). ``None`` (default): the model's own - ``False`` for a network trained
            without enlarging (its file says so, e.g. the bundled model), else the paper's ``True``.
        threshold: mask threshold on the probability (``prob >= threshold`` is in focus). ``None`` (default):
            the model's own - 0.5 for networks, each classical method's from its paper (LBP's T_seg = 0.3; HiFST,
            whose paper fixes none, Otsu's threshold of each map; see docs/classical.md).
        upsample: ``"bilinear"`` (default) or ``"nearest"`` (the paper's) to resize maps to native size.
        fast_decode: decode JPEGs at a reduced DCT scale that keeps at least twice the network input size.
        draft_pixels: decode JPEGs above this many pixels for the network at the reduced DCT scale (1/2, 1/4,
            1/8) that keeps at least :data:`DRAFT_FACTOR` times the network input on each side, so that the
            network input never needs the full-size photo in memory (outputs are still native-size; the overlay
            decodes the photo once more at full size). A deviation from the paper's full decode, on by default:
            on a 24-MP JPEG the bundled model's map moves by 4e-4 on average and 0.05 % of the mask's pixels
            differ (benchmarks/RESULTS.md); 0 or None decodes every photo in full.
        max_pixels: refuse larger images (decompression-bomb guard; 0 or None disables).
        flip_tta: also run each image mirrored left to right and average the two maps (test-time augmentation,
            not in the paper; networks only). Twice the network's time; on the real benchmark's val split it
            lowers the bundled model's MAE a little (benchmarks/RESULTS_pairs.md, "Mirrored second pass").
        refine: refine each map along the colour edges of the network's input image before it is resized to the
            photo (:func:`defocus.matting.refine_map`: closed-form matting that carries the network's confident
            calls into its unsure pixels; not in the paper; networks only). Fills grey insides of sharp subjects
            and snaps grey fringes to edges; a few seconds an image on a CPU (benchmarks/RESULTS_pairs.md,
            "Edge-aware refinement").
    """

    size: int | None = None
    keep_aspect: bool = False
    upscale: bool | None = None
    threshold: float | None = None
    upsample: str = "bilinear"
    fast_decode: bool = False
    draft_pixels: int | None = DRAFT_PIXELS
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    flip_tta: bool = False
    refine: bool = False

    def __post_init__(self):
        if self.size is not None and (isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer))):
            raise TypeError(f"size must be an int (pixels), got {self.size!r}")
        if self.size is not None and self.size < 1:
            raise ValueError(f"size must be positive, got {self.size}")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {self.threshold}")
        if self.upsample not in UPSAMPLE_CHOICES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_CHOICES}, got {self.upsample!r}")


def split_options(options: PredictOptions | None, runtime: RuntimeOptions | None, overrides: dict
                  ) -> tuple[PredictOptions, RuntimeOptions]:
    """``options`` and ``runtime`` (defaults when ``None``) with the fields named in ``overrides`` replaced;
    ``TypeError`` for a name that is a field of neither."""
    predict_fields = {f.name for f in dataclasses.fields(PredictOptions)}
    runtime_fields = {f.name for f in dataclasses.fields(RuntimeOptions)}
    unknown = sorted(set(overrides) - predict_fields - runtime_fields)
    if unknown:
        raise TypeError(f"Predictor got unexpected keyword argument(s) {unknown}; options: "
                        f"{', '.join(sorted(predict_fields | runtime_fields))}")
    options = dataclasses.replace(options or PredictOptions(),
                                  **{k: v for k, v in overrides.items() if k in predict_fields})
    runtime = dataclasses.replace(runtime or RuntimeOptions(),
                                  **{k: v for k, v in overrides.items() if k in runtime_fields})
    return options, runtime


@dataclass
class _Item:
    """A decoded, prepared input waiting for its batch."""

    source: str
    size: tuple[int, int]
    array: np.ndarray                    # what the runner's ``run`` takes (stacked with the others)
    seconds: float
    image: Image.Image | None = None
    loader: Callable | None = None


def describe_input(x) -> str:
    """A short name for an input: its path, or its type and shape."""
    if isinstance(x, (str, os.PathLike)):
        return str(x)
    if isinstance(x, Image.Image):
        return f"<PIL image {x.size[0]}x{x.size[1]} {x.mode}>"
    shape = "x".join(map(str, getattr(x, "shape", ())))
    return f"<{type(x).__name__} {shape}>"


def _is_tensor(x) -> bool:
    torch = sys.modules.get("torch")  # a tensor can only exist if torch is imported
    return torch is not None and isinstance(x, torch.Tensor)


def tensor_to_array(t: "torch.Tensor") -> np.ndarray:
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


class NotAnImageInput(TypeError):
    """An input that is no image type at all: a programming error, never one image's failure."""


class _FileLoader:
    """Decodes a file again at full size (for overlays of images that were not kept)."""

    def __init__(self, path: Path, max_pixels):
        self.path, self.max_pixels = path, max_pixels

    def __call__(self) -> Image.Image:
        return imageio.decode_rgb(self.path, self.max_pixels)[0]


class Predictor:
    """Defocus-blur prediction for images of any size.

    Args:
        model: ``"default"`` (the bundled weights; the LBP baseline when none are installed), a checkpoint path
            (defocus ``.safetensors``, the authors' ``.pth``, or an exported ``.onnx``), a registry name
            ``NAME[:BACKBONE]`` (random weights: speed tests only), or an ``nn.Module``.
        method: a training-free baseline (``"lbp"``, ``"hifst"``) instead of a network.
        device: ``"auto"`` (CUDA if available), ``"cpu"``, ``"cuda"``, ...
        backend: ``"auto"`` (the bundled model and ``.onnx`` files on ONNX Runtime, other models on PyTorch;
            see :data:`~defocus.inference.runners.BACKENDS`), ``"torch"`` or ``"onnx"`` (ONNX Runtime; a
            PyTorch model is exported in memory first).
        options: what shapes the outputs (:class:`PredictOptions`: size, keep_aspect, threshold, upsample,
            fast_decode, max_pixels).
        runtime: how the model runs (:class:`~defocus.inference.runners.RuntimeOptions`: batch_size, workers,
            precision, fuse, channels_last, compile, threads).
        **overrides: any field of either by name, e.g. ``Predictor(size=512, batch_size=8)``.
    """

    def __init__(self, model="default", *, method: str | None = None, device="auto", backend: str = "auto",
                 options: PredictOptions | None = None, runtime: RuntimeOptions | None = None, **overrides):
        options, self.runtime = split_options(options, runtime, overrides)
        self.runner: Runner = make_runner(model, method, backend, device, self.runtime)
        self.options = self._resolved(options)
        self._method_named = method is not None
        self._refuse_input_size(options.size, options.upscale)
        log.info("predictor: %s, backend %s, device %s, input %s", self.info, self.backend, self.device,
                 self._input_description())

    # -- what runs, and how
    @property
    def info(self):
        """:class:`~defocus.inference.ModelInfo` of the model that runs."""
        return self.runner.info

    @property
    def backend(self) -> str:
        """``"torch"``, ``"onnx"`` or ``"numpy"`` (classical methods)."""
        return self.runner.backend

    @property
    def device(self):
        """The device the model runs on."""
        return self.runner.device

    @property
    def workers(self) -> int:
        """Decoding (and writing) threads."""
        return self.runtime.workers

    def settings(self) -> dict:
        """The settings that shape the outputs (recorded in ``summary.json``). A classical method has no input
        size (``size`` and ``upscale`` are ``None``); its own threshold (``None``: per map, see each image's
        ``threshold``)."""
        o = self.options
        classical = self.info.kind == "classical"
        threshold = o.threshold if o.threshold is not None or classical else NETWORK_THRESHOLD
        return {"size": None if classical else o.size, "keep_aspect": o.keep_aspect,
                "upscale": None if classical else o.upscale, "threshold": threshold,
                "upsample": o.upsample, "fast_decode": o.fast_decode, "draft_pixels": o.draft_pixels,
                "backend": self.backend, "device": str(self.device),
                "batch_size": self.runtime.batch_size, "max_pixels": o.max_pixels, "flip_tta": o.flip_tta,
                "refine": o.refine}

    def with_options(self, **changes) -> "Predictor":
        """A predictor that runs this one's loaded model (nothing is loaded again) with the named
        :class:`PredictOptions` fields changed, e.g. ``predictor.with_options(size=512, keep_aspect=True)``; any
        other name is a ``TypeError``."""
        options = self._resolved(dataclasses.replace(self.options, **changes))
        self._refuse_input_size(changes.get("size"), changes.get("upscale"))
        variant = copy.copy(self)
        variant.options = options
        return variant

    def _input_description(self) -> str:
        """What the model sees of an image, in words (for the log)."""
        o = self.options
        if self.info.kind == "classical":
            return f"aspect kept, long side at most {CLASSICAL_MAX_SIDE}"
        shape = f"long side {o.size}" if o.keep_aspect else f"{o.size}x{o.size}"
        return shape if o.upscale else f"{shape}, smaller photos not enlarged"

    def _refuse_input_size(self, size, upscale) -> None:
        """Refuses a ``size`` or ``upscale`` given for a classical method asked for by name (for the LBP
        baseline standing in for missing weights they are the network's settings and are kept unused)."""
        if self._method_named and (size is not None or upscale is not None):
            raise ValueError(f"size and upscale apply to networks; a classical method sees the image with its "
                             f"aspect ratio kept and the long side at most {CLASSICAL_MAX_SIDE} px")

    def _resolved(self, options: PredictOptions) -> PredictOptions:
        """``options`` with ``size=None`` and ``upscale=None`` replaced by the model's own input defaults."""
        info = self.runner.info
        if options.flip_tta and info.kind == "classical":
            raise ValueError("flip_tta applies to networks; a classical method's map is computed once per image")
        if options.refine and info.kind == "classical":
            raise ValueError("refine applies to networks; the classical methods refine their maps their own way")
        return dataclasses.replace(options, size=info.size if options.size is None else options.size,
                                   upscale=info.upscale if options.upscale is None else options.upscale)

    # -- preprocessing
    def input_size(self, native: tuple[int, int]) -> tuple[int, int]:
        """Model input (width, height) for an image of native (width, height)."""
        return self.runner.input_size(native, self.options.size, self.options.keep_aspect, self.options.upscale)

    def draft_size(self, native: tuple[int, int]) -> tuple[int, int] | None:
        """The smallest decoded size accepted for the network input: twice the model input on each side with
        ``fast_decode``, :data:`DRAFT_FACTOR` times for photos above ``draft_pixels``, else ``None`` (full
        decode)."""
        tw, th = self.input_size(native)
        if self.options.fast_decode:
            return 2 * tw, 2 * th
        if self.options.draft_pixels and native[0] * native[1] > self.options.draft_pixels:
            return DRAFT_FACTOR * tw, DRAFT_FACTOR * th
        return None

    def _decode(self, x) -> tuple[Image.Image, tuple[int, int], Callable | None]:
        max_pixels = self.options.max_pixels
        if isinstance(x, (str, os.PathLike)):
            path = Path(x)
            img, native = imageio.decode_rgb(path, max_pixels, self.draft_size)
            return img, native, _FileLoader(path, max_pixels)
        if isinstance(x, Image.Image):
            if x.size[0] < 1 or x.size[1] < 1:
                raise ImageDecodeError(describe_input(x), f"image has no pixels ({x.size[0]}x{x.size[1]})")
            if max_pixels and x.size[0] * x.size[1] > max_pixels:
                raise ImageDecodeError(describe_input(x), imageio._pixel_limit_message(*x.size, max_pixels))
            img = imageio.to_rgb(ImageOps.exif_transpose(x))
            return img, img.size, None
        if _is_tensor(x):
            x = tensor_to_array(x)
        if isinstance(x, np.ndarray):
            img = imageio.image_from_array(x)
            if max_pixels and img.size[0] * img.size[1] > max_pixels:
                raise ImageDecodeError(describe_input(x), imageio._pixel_limit_message(*img.size, max_pixels))
            return img, img.size, None
        raise NotAnImageInput(f"cannot predict on {type(x).__name__}: pass a path, PIL image, numpy array or "
                              f"tensor")

    def _prepare(self, x, keep_image: bool) -> _Item:
        t0 = time.perf_counter()
        source = describe_input(x)
        try:
            img, native, loader = self._decode(x)
        except (ImageDecodeError, NotAnImageInput):
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
        array = self.runner.prepare(small)
        return _Item(source, native, array, time.perf_counter() - t0, keep, loader)

    # -- prediction
    def predict(self, x) -> Prediction:
        """Predict one image: a path, a PIL image, an HxWx3 uint8 RGB array (HxW grey, HxWx4 RGBA, uint16 and
        float [0, 1] arrays also work) or a CxHxW tensor (uint8, or float in [0, 1]).
        Raises :class:`~defocus.imageio.ImageDecodeError` for unusable inputs."""
        item = self._prepare(x, keep_image=False)
        return self._run([item])[0]

    def predict_many(self, inputs: Iterable, on_error: str = "raise", keep_images: bool = False
                     ) -> Iterator[Prediction | FailedPrediction]:
        """Predict an iterable of inputs, in order, batching the network and decoding in a thread pool while
        the network computes. ``on_error="return"`` yields a :class:`FailedPrediction` for each unusable input
        and carries on; ``"raise"`` raises on the first one. ``keep_images`` keeps each decoded image (up to
        :data:`KEEP_IMAGE_PIXELS`) on its result for :meth:`Prediction.overlay` instead of decoding it again.
        An input that is no image type at all raises ``TypeError`` in either case."""
        if on_error not in ("raise", "return"):
            raise ValueError(f"on_error must be 'raise' or 'return', got {on_error!r}")
        if isinstance(inputs, (str, os.PathLike, Image.Image)):
            raise TypeError("predict_many takes an iterable of inputs; for one image use predict()")
        pool = ThreadPoolExecutor(self.runtime.workers, thread_name_prefix="defocus-decode")
        try:
            prepared = _Prefetcher(pool, self._prepare, iter(inputs), keep_images,
                                   self.runtime.batch_size + self.runtime.workers)
            batch: list[_Item] = []
            for x, fut in prepared:
                try:
                    item = fut.result()
                except Exception as e:  # one unusable input: report it in its place and go on
                    if on_error == "raise" or isinstance(e, NotAnImageInput):
                        raise
                    yield from self._run(batch)
                    batch = []
                    yield _failure(x, e)
                    continue
                if batch and item.array.shape != batch[0].array.shape:
                    yield from self._run(batch)
                    batch = []
                batch.append(item)
                if len(batch) >= self.runtime.batch_size:
                    yield from self._run(batch)
                    batch = []
            yield from self._run(batch)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _run(self, items: list[_Item]) -> list[Prediction]:
        if not items:
            return []
        t0 = time.perf_counter()
        batch = np.stack([it.array for it in items])
        probs = self.runner.run(batch)
        if self.options.flip_tta:               # N x C x H x W: mirror the width, and the maps back
            probs = (probs + self.runner.run(np.ascontiguousarray(batch[..., ::-1]))[..., ::-1]) * np.float32(0.5)
        if self.options.refine:
            probs = np.stack([refine_map(self.runner.input_rgb(it.array), p) for it, p in zip(items, probs)])
        share = (time.perf_counter() - t0) / len(items)
        o = self.options
        return [Prediction(it.source, it.size, p, upsample=o.upsample,
                           threshold=self.runner.mask_threshold(p) if o.threshold is None else o.threshold,
                           seconds=it.seconds + share, model=self.info, image=it.image, loader=it.loader)
                for it, p in zip(items, probs)]


class _Prefetcher:
    """Iterates ``(input, future)`` pairs, keeping up to ``depth`` inputs submitted to ``pool`` ahead."""

    def __init__(self, pool: ThreadPoolExecutor, prepare, inputs: Iterator, keep_images: bool, depth: int):
        self.pool, self.prepare, self.inputs = pool, prepare, inputs
        self.keep_images, self.depth = keep_images, depth
        self.pending: deque = deque()

    def __iter__(self):
        return self

    def __next__(self):
        self._refill()
        if not self.pending:
            raise StopIteration
        head = self.pending.popleft()
        self._refill()
        return head

    def _refill(self):
        while len(self.pending) < self.depth:
            try:
                x = next(self.inputs)
            except StopIteration:
                return
            self.pending.append((x, self.pool.submit(self.prepare, x, self.keep_images)))


def _failure(x, e: Exception) -> FailedPrediction:
    if isinstance(e, ImageDecodeError):
        return FailedPrediction(e.path, e.reason)
    return FailedPrediction(describe_input(x), f"{type(e).__name__}: {e}")
