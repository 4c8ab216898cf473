"""Reading ground-truth masks with an explicit polarity: the result is always True = in focus."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

IN_FOCUS = "in-focus"
BLUR = "blur"
POLARITIES = (IN_FOCUS, BLUR)
_ALIASES = {"in-focus": IN_FOCUS, "in_focus": IN_FOCUS, "infocus": IN_FOCUS, "sharp": IN_FOCUS, "focus": IN_FOCUS,
            "blur": BLUR, "blurred": BLUR, "defocus": BLUR, "out-of-focus": BLUR}


def check_polarity(mask_white: str) -> str:
    """Normalise a raw-mask polarity name ("in-focus" or "blur": what white means in the raw file)."""
    key = str(mask_white).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"mask polarity must be 'in-focus' or 'blur' (what white means in the raw mask), "
                         f"got {mask_white!r}")
    return _ALIASES[key]


def mask_white_fraction_array(im: Image.Image) -> np.ndarray:
    """The mask image as a float array in [0, 1] (1 = white), whatever its mode.

    RGBA/LA masks whose colour is constant but whose alpha varies carry the mask in the alpha channel; otherwise
    the colour's luminance is used. Integer masks holding only {0, 1} are read as 0/1 masks."""
    mode = im.mode
    if mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        arr = np.asarray(rgba)
        alpha = arr[..., 3]
        colour = np.asarray(rgba.convert("L"))
        if alpha.min() < 255 and colour.min() == colour.max():
            return alpha.astype(np.float32) / 255.0
        return colour.astype(np.float32) / 255.0
    if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(im).astype(np.float64)
        peak = arr.max() if arr.size else 0.0
        scale = 1.0 if peak <= 1.0 else (255.0 if peak <= 255.0 else 65535.0)
        return (arr / scale).astype(np.float32)
    if mode == "1":
        return np.asarray(im, dtype=np.float32)
    arr = np.asarray(im.convert("L"))
    if arr.size and arr.max() == 1:  # a {0,1} mask stored in 8 bits
        return arr.astype(np.float32)
    return arr.astype(np.float32) / 255.0


def white_mask(path: Path) -> np.ndarray:
    """The raw mask at ``path`` binarised at half intensity (>= 128 of 255, the reference code's rounding):
    True where the file is white, whatever that means for this dataset."""
    with Image.open(path) as im:
        return mask_white_fraction_array(im) >= 0.5


def read_mask(path, mask_white: str) -> np.ndarray:
    """Read a ground-truth mask at its original size as a bool array with **True = in focus**.

    ``mask_white`` says what white means in the raw file: ``"in-focus"`` (DUT, EBD) or ``"blur"`` (CUHK, CTCUG).
    Grey levels are binarised at 128 (0.5), as the reference rounds; L, 1, P, RGB, RGBA and 16-bit masks work."""
    white = white_mask(Path(path))
    return white if check_polarity(mask_white) == IN_FOCUS else ~white


def in_focus_to_pil(in_focus: np.ndarray) -> Image.Image:
    """A bool in-focus array as an 'L' image with 255 = in focus (the transforms' mask convention)."""
    return Image.fromarray(np.where(np.asarray(in_focus, dtype=bool), 255, 0).astype(np.uint8))
