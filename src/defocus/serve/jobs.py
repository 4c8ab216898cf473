"""The work a request hands to a worker thread: upload -> temporary file -> Predictor -> encoded outputs.

An upload is written to a temporary file and predicted from its path, so it is decoded exactly as
``defocus predict`` decodes a file (EXIF orientation, alpha, 16-bit, the pixel limit): the same image with the same
options gives the same maps.
"""
from __future__ import annotations

import base64
import io
import logging
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from .. import imageio
from ..inference import Prediction, make_overlay, prob_to_uint8
from ..inference.result import JPEG_QUALITY, PNG_COMPRESS_LEVEL
from .predictors import ServerPredictors
from .uploads import EMPTY_UPLOAD, ServeError, Upload

log = logging.getLogger(__name__)

#: The outputs a response can carry and their media types.
OUTPUTS = {"prob": "image/png", "mask": "image/png", "overlay": "image/jpeg"}


@dataclass(frozen=True)
class Options:
    """Per-request prediction options (the server's defaults where the request gives none)."""

    size: int
    keep_aspect: bool
    threshold: float
    upscale: bool = True
    refine: bool = False
    include: tuple[str, ...] = tuple(OUTPUTS)


@contextmanager
def temporary_files(uploads: list[Upload]) -> Iterator[list[Path]]:
    """Write each upload to a private temporary file; all are removed on exit."""
    folder = tempfile.mkdtemp(prefix="defocus-serve-")
    paths: list[Path] = []
    try:
        for i, up in enumerate(uploads):
            suffix = re.sub(r"[^a-z0-9.]", "", Path(up.filename).suffix.lower())[:8]  # a hint for Pillow only
            path = Path(folder) / f"{i}{suffix}"
            path.write_bytes(up.data)
            paths.append(path)
        yield paths
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def check_pixels(path: Path, filename: str, max_pixels: int) -> None:
    """Refuse a non-image (422) or an image above ``max_pixels`` (413) from its header, before any decoding."""
    try:
        with imageio.open_image(path, max_pixels=None) as im:
            w, h = imageio.displayed_size(im)
    except imageio.ImageDecodeError as e:
        raise ServeError(422, f"{filename}: {e.reason}") from None
    if w * h > max_pixels:
        size, limit = imageio.pixel_counts(w * h, max_pixels)
        raise ServeError(413, f"{filename}: image is {w}x{h} = {size}, above this server's limit of {limit}")


def mask_at(pred: Prediction, threshold: float) -> np.ndarray:
    """The prediction's mask at ``threshold`` (the same rule as :attr:`Prediction.mask`: ``prob >= threshold``)."""
    return pred.mask if threshold == pred.threshold else pred.prob >= threshold


def encode(kind: str, pred: Prediction, mask: np.ndarray) -> bytes:
    """``prob`` (8-bit PNG, 255 = in focus), ``mask`` (0/255 PNG) or ``overlay`` (JPEG) as file bytes."""
    buf = io.BytesIO()
    if kind == "prob":
        Image.fromarray(prob_to_uint8(pred.prob), "L").save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif kind == "mask":
        Image.fromarray(mask.view(np.uint8) * np.uint8(255), "L").save(buf, "PNG", compress_level=PNG_COMPRESS_LEVEL)
    elif kind == "overlay":
        make_overlay(pred.image(), mask).save(buf, "JPEG", quality=JPEG_QUALITY)
    else:
        raise ValueError(f"unknown output {kind!r}")
    return buf.getvalue()


def describe(filename: str, pred: Prediction, options: Options, predict_seconds: float) -> dict:
    """The JSON result of one image, its outputs inlined as ``data:`` URLs."""
    t0 = time.perf_counter()
    mask = mask_at(pred, options.threshold)
    images = {kind: f"data:{OUTPUTS[kind]};base64,"
                    + base64.b64encode(encode(kind, pred, mask)).decode("ascii") for kind in options.include}
    return {
        "filename": filename,
        "width": pred.size[0],
        "height": pred.size[1],
        "in_focus_fraction": round(float(np.count_nonzero(mask)) / mask.size, 6),
        "threshold": options.threshold,
        "size": options.size,
        "keep_aspect": options.keep_aspect,
        "upscale": options.upscale,
        "refine": options.refine,
        "model": pred.model.to_dict() if pred.model else None,
        "timings": {"predict_seconds": round(predict_seconds, 4),
                    "encode_seconds": round(time.perf_counter() - t0, 4)},
        "images": images,
        "error": None,
    }


def predict_one(predictors: ServerPredictors, upload: Upload, options: Options, output: str | None = None):
    """Predict one upload; returns its JSON dict, or ``(bytes, media_type)`` of one output when ``output`` is
    given. Raises :class:`ServeError` for an unusable image."""
    predictor = predictors.get(options.size, options.keep_aspect, options.upscale, options.refine)
    with temporary_files([upload]) as (path,):
        check_pixels(path, upload.filename, predictors.settings.max_pixels)
        try:
            pred = predictor.predict(path)
        except imageio.ImageDecodeError as e:
            raise ServeError(422, f"{upload.filename}: {e.reason}") from None
        if output is not None:
            return encode(output, pred, mask_at(pred, options.threshold)), OUTPUTS[output]
        return describe(upload.filename, pred, options, pred.seconds)


def predict_batch(predictors: ServerPredictors, uploads: list[Upload], options: Options) -> list[dict]:
    """Predict several uploads in batches (the predictor's ``predict_many``); an unusable image gets an entry
    with its ``error`` and the others go on."""
    predictor = predictors.get(options.size, options.keep_aspect, options.upscale, options.refine)
    results: list[dict | None] = [None] * len(uploads)
    with temporary_files(uploads) as paths:
        usable = []
        for i, (up, path) in enumerate(zip(uploads, paths)):
            try:
                if not up.data:
                    raise ServeError(400, f"{up.filename}: {EMPTY_UPLOAD}")
                check_pixels(path, up.filename, predictors.settings.max_pixels)
                usable.append(i)
            except ServeError as e:
                results[i] = {"filename": up.filename, "error": e.message}
        preds = predictor.predict_many([paths[i] for i in usable], on_error="return")
        for i, pred in zip(usable, preds):
            if pred.ok:
                try:
                    results[i] = describe(uploads[i].filename, pred, options, pred.seconds)
                except Exception as e:  # an internal fault with this image: logged, and reported in its place
                    log.exception("%s: cannot encode the outputs", uploads[i].filename)
                    results[i] = {"filename": uploads[i].filename,
                                  "error": f"{uploads[i].filename}: cannot encode the outputs ({type(e).__name__})"}
            else:
                results[i] = {"filename": uploads[i].filename, "error": f"{uploads[i].filename}: {pred.error}"}
    return results
