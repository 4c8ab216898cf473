"""Input checking and conversion shared by the training-free methods."""
from __future__ import annotations

import numpy as np

from ..imageio import FLOAT_TOLERANCE

# ITU-R BT.601 luma weights (the usual RGB -> gray conversion of image toolboxes).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float64)


def to_float_image(image) -> np.ndarray:
    """Return ``image`` as float32 in [0, 1], shaped HxW (gray) or HxWx3 (colour).

    Accepts uint8 (0..255), uint16 (0..65535), bool or floating arrays in [0, 1] (values above 1 by more than
    :data:`FLOAT_TOLERANCE`, e.g. 0..255 floats, are refused rather than clipped to white); shapes HxW, HxWx1,
    HxWx3 and HxWx4 (the alpha channel is dropped).
    """
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] in (1, 3, 4):
        arr = arr[..., 0] if arr.shape[2] == 1 else arr[..., :3]
    elif arr.ndim != 2:
        raise ValueError(f"expected an HxW or HxWx{{1,3,4}} image, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"image is empty (shape {arr.shape})")
    # divided in float64 and rounded once, so that uint8 input and the same values given as float64 / 255 agree
    if arr.dtype == np.uint8:
        return (arr / 255.0).astype(np.float32)
    if arr.dtype == np.uint16:
        return (arr / 65535.0).astype(np.float32)
    if arr.dtype == np.bool_:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
        if not np.all(np.isfinite(out)):
            raise ValueError("image contains NaN or infinite values")
        if out.max(initial=0.0) > 1.0 + FLOAT_TOLERANCE:
            raise ValueError(f"float image has values up to {out.max():g}; expected [0, 1] (divide by 255, or "
                             f"pass uint8)")
        return np.clip(out, 0.0, 1.0)
    raise TypeError(f"unsupported image dtype {arr.dtype}; use uint8, uint16 or float in [0, 1]")


def to_gray(image) -> np.ndarray:
    """Return ``image`` as an HxW float32 gray image in [0, 1] (BT.601 luma for colour input)."""
    img = to_float_image(image)
    if img.ndim == 2:
        return img
    # in float64, so that a colour image with equal channels gives exactly its gray image
    return np.clip(img @ _LUMA, 0.0, 1.0).astype(np.float32)


def to_rgb(image) -> np.ndarray:
    """Return ``image`` as HxWx3 float32 in [0, 1] (gray input is repeated over the three channels)."""
    img = to_float_image(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return img
