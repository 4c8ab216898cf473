"""One image's result (:class:`Prediction`, :class:`FailedPrediction`), the pictures made from it (8-bit map,
overlay, focus boundary) and the one function that writes its files (:func:`write_outputs`).

Files are written in bands of rows (:data:`STRIP_PIXELS` at a time): the native-size map is resized band by band
(:class:`MapResizer`, the same values as Pillow resizing the whole map) and streamed into the PNGs, and the
overlay is drawn band by band into the decoded photo, so memory does not grow with the photo beyond the decoded
photo itself (for the overlay only).
"""
from __future__ import annotations

import math
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
#: Outputs are computed and written this many pixels (rows x width) at a time.
STRIP_PIXELS = 1_000_000
#: Overlays of photos above this many pixels are drawn one at a time (each holds its full-size photo).
LARGE_OVERLAY_PIXELS = 16_000_000
_LARGE_OVERLAY = threading.Lock()


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


def _bilinear_coefficients(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """First source index and float64 weights of each output pixel, computed as Pillow's bilinear resampling
    computes them (triangle filter widened by the scale when shrinking, weights normalised to sum 1)."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = filterscale  # the bilinear filter's support is 1
    ksize = int(math.ceil(support)) * 2 + 1
    first = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, ksize))
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)  # C's truncating cast, as Pillow
        n = min(int(center + support + 0.5), in_size) - lo
        x = np.abs((np.arange(n) + lo - center + 0.5) / filterscale)
        w = np.where(x < 1.0, 1.0 - x, 0.0)
        total = 0.0
        for v in w:  # summed in order, as Pillow
            total += v
        weights[i, :n] = w / total if total != 0.0 else w
        first[i] = lo
    return first, weights


class MapResizer:
    """Resizes a low-resolution float32 map to ``size`` (width, height) a band of rows at a time, with the values
    of Pillow's ``Image.resize`` of the whole map (``"bilinear"``: its horizontal pass, then the vertical pass
    computed here as Pillow does in float64; ``"nearest"``: Pillow's own row and column choices). Exact when the
    map is enlarged vertically (every photo larger than the network input); a map shrunk vertically in more than
    one band may differ in the last bit."""

    def __init__(self, lowres: np.ndarray, size: tuple[int, int], upsample: str = "bilinear"):
        self.lowres = np.ascontiguousarray(lowres, np.float32)
        self.width, self.height = int(size[0]), int(size[1])
        self.upsample = upsample
        h, w = self.lowres.shape
        self._whole = None
        if self.width * self.height <= STRIP_PIXELS:  # one band: Pillow itself
            self._whole = resize_map(self.lowres, size, upsample)
        elif upsample == "nearest":
            self._cols = self._nearest_table(w, self.width)
            self._rows = self._nearest_table(h, self.height)
        else:
            self._horizontal = (np.asarray(Image.fromarray(self.lowres, "F").resize((self.width, h), Image.BILINEAR))
                                if self.width != w else self.lowres)
            if self.height != h:
                self._first, self._weights = _bilinear_coefficients(h, self.height)
                pad = np.zeros((self._weights.shape[1], self.width), np.float32)  # taps past the end weigh 0
                self._horizontal = np.concatenate([self._horizontal, pad])

    @staticmethod
    def _nearest_table(in_size: int, out_size: int) -> np.ndarray:
        """Pillow's nearest-neighbour source index of each output position (from a resized index image)."""
        index = Image.fromarray(np.arange(in_size, dtype=np.int32)[None], "I")
        return np.asarray(index.resize((out_size, 1), Image.NEAREST))[0].astype(np.int64)

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` of the resized map (float32)."""
        if self._whole is not None:
            return self._whole[y0:y1]
        if self.upsample == "nearest":
            return self.lowres[self._rows[y0:y1]][:, self._cols]
        h = self.lowres.shape[0]
        if self.height == h:
            return self._horizontal[y0:y1]
        # the band's buffers are allocated once, not per tap: on a multi-megapixel photo fresh temporaries cost
        # more in page faults than the arithmetic itself
        first, weights = self._first[y0:y1], self._weights[y0:y1]
        out = np.zeros((y1 - y0, self.width), np.float64)
        term = np.empty_like(out)
        tap = np.empty((y1 - y0, self.width), np.float32)
        for t in range(weights.shape[1]):
            np.take(self._horizontal, first + t, axis=0, out=tap)
            out += np.multiply(tap, weights[:, t, None], out=term)
        return out.astype(np.float32)


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


def _dim(rgb: np.ndarray) -> np.ndarray:
    tint = np.asarray(OVERLAY_TINT, np.float32) * (1.0 - OVERLAY_DIM)
    return (rgb.astype(np.float32) * OVERLAY_DIM + tint + 0.5).astype(np.uint8)


def boundary_thickness(size: tuple[int, int]) -> int:
    """Width in pixels of the focus boundary drawn on an overlay of ``size`` (width, height)."""
    return max(1, round(max(size) / 500))


def make_overlay(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """``image`` with the blurred regions (``mask`` False) dimmed and tinted and the focus boundary drawn."""
    rgb = np.asarray(image.convert("RGB"))
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image size {rgb.shape[1]}x{rgb.shape[0]} does not match the map "
                         f"{mask.shape[1]}x{mask.shape[0]}")
    out = np.where(mask[..., None], rgb, _dim(rgb))
    out[focus_boundary(mask, boundary_thickness(image.size))] = BOUNDARY_COLOUR
    return Image.fromarray(out, "RGB")


def draw_overlay_in_place(image: Image.Image, mask_rows, strips) -> Image.Image:
    """Draw the overlay of :func:`make_overlay` into the RGB ``image`` itself, one band of rows at a time (no
    second full-size picture); ``mask_rows(y0, y1)`` gives the mask's rows, ``strips`` the ``(y0, y1)`` bands.
    Returns ``image``."""
    width, height = image.size
    thickness = boundary_thickness(image.size)
    halo = thickness + 1  # rows beyond the band that decide its boundary pixels
    for y0, y1 in strips:
        a, b = max(0, y0 - halo), min(height, y1 + halo)
        mask = mask_rows(a, b)
        edge = focus_boundary(mask, thickness)[y0 - a:y1 - a]
        mask = mask[y0 - a:y1 - a]
        rgb = np.asarray(image.crop((0, y0, width, y1)))
        out = np.where(mask[..., None], rgb, _dim(rgb))
        out[edge] = BOUNDARY_COLOUR
        image.paste(Image.fromarray(out, "RGB"), (0, y0))
    return image


class Prediction:
    """One image's result. Maps are at the image's native (displayed) size, 1 = in focus.

    Attributes:
        source: the input path, or a short description of an in-memory input.
        size: native (width, height).
        prob_lowres: the model-resolution probability map (before resizing back).
        seconds: processing time of this image (decode + its share of the batch + resizing).
        model: :class:`ModelInfo` of the model that produced it.
        source_tag: the input as the written maps record it (``None``, the default: not recorded), for a caller
            that resumes from maps (Ray batch prediction: the path or URI of its row).
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
        self._prob = self._mask = self._resizer = self._in_focus = None
        self._lock = threading.Lock()
        self.source_tag: str | None = None

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

    def prob_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` of :attr:`prob`, computed without the full-size map unless it is already cached."""
        if self._prob is not None:
            return self._prob[y0:y1]
        with self._lock:
            if self._resizer is None:
                self._resizer = MapResizer(self.prob_lowres, self.size, self.upsample)
        return self._resizer.rows(y0, y1)

    def mask_rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows ``y0:y1`` of :attr:`mask`."""
        if self._mask is not None:
            return self._mask[y0:y1]
        return self.prob_rows(y0, y1) >= self.threshold

    def strips(self, pixels: int | None = None) -> list[tuple[int, int]]:
        """``(y0, y1)`` bands of about ``pixels`` (default :data:`STRIP_PIXELS`) pixels covering the native-size
        maps."""
        step = max(1, (pixels or STRIP_PIXELS) // self.size[0])
        return [(y, min(self.size[1], y + step)) for y in range(0, self.size[1], step)]

    @property
    def in_focus_fraction(self) -> float:
        """Fraction of the image's pixels that are in focus (mean of :attr:`mask`; counted band by band)."""
        if self._in_focus is None:
            n = sum(int(np.count_nonzero(self.mask_rows(y0, y1))) for y0, y1 in self.strips())
            self._in_focus = n / (self.size[0] * self.size[1])
        return self._in_focus

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
        """Summary entry: path, size, in-focus fraction, the mask threshold it used, seconds."""
        return {"path": self.source, "width": self.size[0], "height": self.size[1],
                "in_focus_fraction": round(self.in_focus_fraction, 6), "threshold": round(self.threshold, 6),
                "seconds": round(self.seconds, 4), "error": None}

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
        return {"path": self.source, "width": None, "height": None, "in_focus_fraction": None, "threshold": None,
                "seconds": round(self.seconds, 4), "error": self.error}


def expected_outputs(out_dir, stem: str, save=SAVE_CHOICES) -> dict[str, Path]:
    """``{kind: path}`` of the files written for ``stem`` (which may contain ``/``: a sub-folder of
    ``out_dir``)."""
    return {kind: Path(out_dir) / f"{stem}{OUTPUT_SUFFIXES[kind]}" for kind in check_save(save)}


def write_output(pred: Prediction, kind: str, path: Path, png_compress_level: int = PNG_COMPRESS_LEVEL,
                 jpeg_quality: int = JPEG_QUALITY) -> Path:
    """Write one output ``kind`` of ``pred`` to ``path`` atomically, band by band (see the module notes)."""
    tag = imageio.output_save_params(kind)
    width, height = pred.size
    if kind == "prob":
        bands = (prob_to_uint8(pred.prob_rows(y0, y1)) for y0, y1 in pred.strips())
    elif kind == "mask":
        bands = (pred.mask_rows(y0, y1).view(np.uint8) * np.uint8(255) for y0, y1 in pred.strips())
    else:
        large = width * height > LARGE_OVERLAY_PIXELS
        if large:
            _LARGE_OVERLAY.acquire()
        try:
            image = pred.image()
            if image is pred._image or image.mode != "RGB":  # a kept image stays as it is: draw on a copy
                image = image.convert("RGB") if image.mode != "RGB" else image.copy()
            if image.size != pred.size:
                raise ValueError(f"image size {image.size[0]}x{image.size[1]} does not match the map "
                                 f"{width}x{height}")
            draw_overlay_in_place(image, pred.mask_rows, pred.strips())
            return imageio.save_image_atomic(image, path, "JPEG", quality=jpeg_quality, **tag)
        finally:
            if large:
                _LARGE_OVERLAY.release()
    text = {imageio.OUTPUT_TAG: kind}
    if pred.source_tag is not None:
        text[imageio.OUTPUT_SOURCE_TAG] = imageio.source_id(pred.source_tag)
    return imageio.write_png_strips(path, width, height, bands, text, png_compress_level)


def write_outputs(pred: Prediction, out_dir, stem: str, save=SAVE_CHOICES,
                  png_compress_level: int = PNG_COMPRESS_LEVEL, jpeg_quality: int = JPEG_QUALITY) -> dict[str, Path]:
    """Write the ``save`` outputs of ``pred`` (see :func:`expected_outputs`), each atomically (a hidden temporary
    file renamed into place, tagged as this tool's output); creates the folders; returns ``{kind: path}``."""
    written = {}
    for kind, path in expected_outputs(out_dir, stem, save).items():
        path.parent.mkdir(parents=True, exist_ok=True)
        written[kind] = write_output(pred, kind, path, png_compress_level, jpeg_quality)
    return written
