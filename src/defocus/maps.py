"""Stored maps and ground-truth masks: what white means in a file (polarity), and reading either as arrays.

One reader for every part of the package (evaluation, the dataset registry, data verification), so a file reads
the same everywhere:

* 8-bit files are divided by 255, 16-bit ones by 65535; float TIFF and ``.npy`` maps must lie in [0, 1];
  colour is reduced to ITU-R 601 luma as Pillow's ``convert("L")``.
* An RGBA / LA / PA file whose colour is constant but whose alpha varies carries the mask in its alpha channel
  (a cut-out saved by an image editor); the alpha is read. Otherwise the colour is read and alpha ignored.
* A mask is binarised at half scale (``v > 0.5``: the reference's rounding, 128 of 255 is white); an integer mask
  holding only the values 0 and 1 is a 0/1 mask.
* Polarity names: ``"in-focus"`` (white = in focus; also ``in_focus``, ``infocus``, ``sharp``, ``focus``) and
  ``"blur"`` (white = blurred; also ``blurred``, ``defocus``, ``out-of-focus``). The arrays returned always mean
  in focus.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .imageio import IMAGE_SUFFIXES

IN_FOCUS = "in-focus"
BLUR = "blur"
POLARITIES = (IN_FOCUS, BLUR)
_ALIASES = {"in-focus": IN_FOCUS, "in_focus": IN_FOCUS, "infocus": IN_FOCUS, "sharp": IN_FOCUS, "focus": IN_FOCUS,
            "blur": BLUR, "blurred": BLUR, "defocus": BLUR, "out-of-focus": BLUR, "out_of_focus": BLUR}
NUMPY_SUFFIXES = frozenset({".npy"})
#: Suffixes of files read as maps or masks from folders.
MAP_SUFFIXES = IMAGE_SUFFIXES | NUMPY_SUFFIXES

log = logging.getLogger(__name__)


class MapInputError(ValueError):
    """A map, mask or image that is missing, unreadable or unusable; the message names the file."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason

    def as_skip(self, stem: str) -> dict:
        """The record of an image left out because of this error: ``{"stem", "path", "reason"}``."""
        return {"stem": stem, "path": self.path, "reason": self.reason}


def check_polarity(polarity: str) -> str:
    """The canonical polarity name (``"in-focus"`` or ``"blur"``) for ``polarity`` or one of its aliases."""
    key = str(polarity).strip().lower().replace(" ", "-")
    if key not in _ALIASES:
        raise ValueError(f"polarity must be 'in-focus' or 'blur' (what white means in the file), got {polarity!r}")
    return _ALIASES[key]


def image_values(im) -> tuple[np.ndarray, int | None]:
    """The 2-D values of a loaded Pillow image: (integer or bool array, its full-scale value) or (float array,
    None); the alpha channel where it carries the mask (see the module docstring), else the luma."""
    return _full_scale(_pil_array(im))


def _pil_array(im) -> np.ndarray:
    if im.mode in ("1", "L", "F") or im.mode.startswith("I"):
        arr = np.asarray(im)
    elif im.mode in ("RGBA", "LA", "PA"):
        rgba = im.convert("RGBA")
        alpha = np.asarray(rgba)[..., 3]
        colour = np.asarray(rgba.convert("L"))
        arr = alpha if alpha.size and alpha.min() < 255 and colour.min() == colour.max() else colour
    else:  # palette, RGB, CMYK...: ITU-R 601 luma in 8 bits
        arr = np.asarray(im.convert("L"))
    return arr


def _npy_luma(arr: np.ndarray) -> np.ndarray:
    """A 3-D array map (channels last, or first) as one channel: a single channel as it is; RGB(A) reduced to
    luma as Pillow's ``convert("L")`` reduces an image (exactly so for uint8; other types in their own range,
    integers rounded). Other shapes are returned unchanged (and refused by the caller)."""
    if arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    if arr.shape[-1] == 1:
        return arr[..., 0]
    if arr.shape[-1] not in (3, 4):
        return arr
    rgb = np.ascontiguousarray(arr[..., :3])
    if rgb.dtype == np.uint8:
        from PIL import Image

        return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return np.rint(luma).astype(rgb.dtype) if np.issubdtype(rgb.dtype, np.integer) else luma


def _full_scale(arr: np.ndarray, any_integer_width: bool = False) -> tuple[np.ndarray, int | None]:
    """``any_integer_width``: ``arr`` comes from a file whose integer type says nothing of its range (``.npy``
    int32 / int64 ...): values up to 255 are then 8-bit values, larger ones 16-bit values; uint16 is 16-bit."""
    if arr.dtype == bool:
        return arr, 1
    if arr.dtype == np.uint8:
        return arr, 255
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError("integer values outside the 16-bit range [0, 65535]")
        if any_integer_width and arr.dtype != np.uint16 and (not arr.size or arr.max() <= 255):
            return arr.astype(np.int64), 255
        return arr.astype(np.int64), 65535
    arr = arr.astype(np.float64)
    if arr.size and (not np.isfinite(arr).all() or arr.min() < -1e-6 or arr.max() > 1 + 1e-6):
        raise ValueError("floating-point map with values outside [0, 1]")
    return np.clip(arr, 0.0, 1.0), None


def read_stored(path) -> tuple[np.ndarray, int | None]:
    """Read a 2-D map as stored: ``(values, full_scale)`` as :func:`image_values` (``.npy`` files too).

    Raises:
        MapInputError: the file is missing, cannot be decoded or holds unusable values.
    """
    path = Path(path)
    if not path.is_file():
        raise MapInputError(path, "file not found")
    try:
        if path.suffix.lower() in NUMPY_SUFFIXES:
            arr = np.load(path, allow_pickle=False)
            if arr.ndim == 3:
                arr = _npy_luma(arr)
        else:
            from PIL import Image

            with Image.open(path) as im:
                im.load()
                arr = _pil_array(im)
    except Exception as e:  # any decoder error: name the file
        raise MapInputError(path, f"cannot read image ({type(e).__name__}: {e})") from e
    if arr.ndim != 2:
        raise MapInputError(path, f"expected a single-channel map, got an array of shape {arr.shape}")
    try:
        return _full_scale(arr, any_integer_width=path.suffix.lower() in NUMPY_SUFFIXES)
    except ValueError as e:
        raise MapInputError(path, str(e)) from None


def decode_map(arr: np.ndarray, full_scale: int | None, polarity: str = IN_FOCUS) -> np.ndarray:
    """In-focus probability map (float64, [0, 1]) from a stored map; a blur-polarity map is inverted exactly
    in its integer domain (``full_scale - v``) before scaling."""
    polarity = check_polarity(polarity)
    if full_scale is None:
        out = np.asarray(arr, dtype=np.float64)
        return 1.0 - out if polarity == BLUR else out
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.int64)
    if polarity == BLUR:
        arr = full_scale - arr.astype(np.int64)
    return arr.astype(np.float64) / full_scale


def mask_full_scale(arr: np.ndarray, full_scale: int | None) -> int | None:
    """The full scale to read a stored mask with: 1 for an integer mask holding only 0 and 1; 255 for a 16-bit
    mask holding only 8-bit values (0 / 255 saved in a 16-bit file: at 16-bit scale it would be all black)."""
    if full_scale is not None and full_scale > 1 and arr.size and arr.max() == 1:
        return 1
    if full_scale == 65535 and arr.size and arr.max() <= 255:
        return 255
    return full_scale


def decode_mask(arr: np.ndarray, full_scale: int | None, polarity: str = IN_FOCUS) -> np.ndarray:
    """Boolean in-focus mask from a stored mask: binarised at half scale (``v > 0.5``, the reference's rounding),
    then inverted for a blur-polarity mask."""
    polarity = check_polarity(polarity)
    arr = np.asarray(arr)
    if full_scale is None:
        white = arr > 0.5
    else:
        # 2v > full: for integers v > full // 2 (no widened copy)
        white = arr > full_scale // 2 if np.issubdtype(arr.dtype, np.integer) else 2 * arr > full_scale
    return ~white if polarity == BLUR else white


def read_map(path, polarity: str = IN_FOCUS) -> np.ndarray:
    """Read a prediction map as an in-focus probability (float64, [0, 1]); ``polarity`` says what white means
    in the file."""
    arr, full = read_stored(path)
    if full == 255 and arr.size and arr.max() == 1:
        log.warning("%s: an 8-bit map whose values are only 0 and 1 is nearly black; if it is a 0/1 mask, "
                    "save it as 0/255", path)
    elif full == 65535 and arr.size and 0 < arr.max() <= 255:
        log.warning("%s: a 16-bit map whose values are all at most 255 reads as nearly black (16-bit full scale "
                    "is 65535); if it holds 8-bit values, save it as an 8-bit image", path)
    return decode_map(arr, full, polarity)


def read_mask(path, polarity: str = IN_FOCUS) -> np.ndarray:
    """Read a ground-truth mask at its stored size as a bool array with **True = in focus**.

    ``polarity`` says what white means in the file: ``"in-focus"`` (DUT, EBD) or ``"blur"`` (CUHK, CTCUG).

    Raises:
        ValueError: an unknown polarity.
        MapInputError: the file is missing, unreadable or holds unusable values.
    """
    polarity = check_polarity(polarity)
    arr, full = read_stored(path)
    return decode_mask(arr, mask_full_scale(arr, full), polarity)
