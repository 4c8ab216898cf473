"""One image's result (:class:`Prediction`, :class:`FailedPrediction`), the pictures made from it (8-bit map,
overlay, focus boundary) and the one function that writes its files (:func:`write_outputs`)."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from .. import imageio
from ..imageio import OUTPUT_SUFFIXES
from .loading import ModelInfo

SAVE_CHOICES = tuple(OUTPUT_SUFFIXES)
UPSAMPLE_CHOICES = ("bilinear", "nearest")
#: Overlay colours: blurred regions are dimmed towards this tint; the focus boundary is drawn in this colour.
OVERLAY_TINT = (20, 45, 110)
OVERLAY_DIM = 0.45
BOUNDARY_COLOUR = (255, 214, 0)
#: Output encoding: PNG zlib level (1: fast; maps compress well anyway) and overlay JPEG quality.
PNG_COMPRESS_LEVEL = 1
JPEG_QUALITY = 90


def check_save(what) -> tuple[str, ...]:
    """The outputs to write, from ``"prob,mask"`` or a sequence of names, in order and without repeats;
    ``ValueError`` for an unknown name or an empty selection."""
    if isinstance(what, str):
        what = [w.strip() for w in what.split(",") if w.strip()]
    bad = [w for w in what if w not in SAVE_CHOICES]
    if bad:
        raise ValueError(f"unknown output(s) {bad}; choose from {', '.join(SAVE_CHOICES)}")
    if not what:
        raise ValueError(f"no outputs chosen; choose from {', '.join(SAVE_CHOICES)}")
    return tuple(dict.fromkeys(what))


def resize_map(prob: np.ndarray, size: tuple[int, int], upsample: str) -> np.ndarray:
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

    ok = True
    error = None

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

    @property
    def prob(self) -> np.ndarray:
        """float32 HxW in-focus probability at native size (computed on first use, then cached; read-only)."""
        with self._lock:
            if self._prob is None:
                self._prob = resize_map(np.ascontiguousarray(self.prob_lowres, np.float32), self.size,
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

    @property
    def default_stem(self) -> str:
        """The input file's stem, or ``"image"`` for an in-memory input."""
        return Path(self.source).stem if self.source and not self.source.startswith("<") else "image"

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

    def save(self, out_dir, what=SAVE_CHOICES, stem: str | None = None, png_compress_level: int = PNG_COMPRESS_LEVEL,
             jpeg_quality: int = JPEG_QUALITY) -> dict[str, Path]:
        """Write ``<stem>_prob.png`` (8-bit, 255 = in focus), ``<stem>_mask.png`` (0/255) and/or
        ``<stem>_overlay.jpg`` into ``out_dir``, each atomically; returns ``{kind: path}`` (see
        :func:`write_outputs`). ``stem`` defaults to the input file's stem."""
        return write_outputs(self, out_dir, stem or self.default_stem, what, png_compress_level, jpeg_quality)

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


def expected_outputs(out_dir, stem: str, save=SAVE_CHOICES) -> dict[str, Path]:
    """``{kind: path}`` of the files written for ``stem`` (which may contain ``/``: a sub-folder of
    ``out_dir``)."""
    return {kind: Path(out_dir) / f"{stem}{OUTPUT_SUFFIXES[kind]}" for kind in check_save(save)}


def encode_output(pred: Prediction, kind: str) -> tuple[Image.Image, str]:
    """The image of one output ``kind`` of ``pred`` and its file format."""
    if kind == "prob":
        return Image.fromarray(prob_to_uint8(pred.prob), "L"), "PNG"
    if kind == "mask":
        return Image.fromarray(pred.mask.view(np.uint8) * np.uint8(255), "L"), "PNG"
    return pred.overlay(), "JPEG"


def write_outputs(pred: Prediction, out_dir, stem: str, save=SAVE_CHOICES,
                  png_compress_level: int = PNG_COMPRESS_LEVEL, jpeg_quality: int = JPEG_QUALITY) -> dict[str, Path]:
    """Write the ``save`` outputs of ``pred`` (see :func:`expected_outputs`), each atomically (a hidden temporary
    file renamed into place, tagged as this tool's output); creates the folders; returns ``{kind: path}``."""
    written = {}
    for kind, path in expected_outputs(out_dir, stem, save).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        img, fmt = encode_output(pred, kind)
        params = imageio.output_save_params(kind)
        params.update({"compress_level": png_compress_level} if fmt == "PNG" else {"quality": jpeg_quality})
        written[kind] = imageio.save_image_atomic(img, path, fmt, **params)
    return written
