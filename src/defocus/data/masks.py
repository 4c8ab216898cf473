"""Ground-truth masks for training: the shared reader (:mod:`defocus.maps`, True = in focus whatever the raw
polarity) and the conversion back to the transforms' 'L' image convention."""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..maps import BLUR, IN_FOCUS, POLARITIES, check_polarity, read_mask

__all__ = ["IN_FOCUS", "BLUR", "POLARITIES", "check_polarity", "read_mask", "in_focus_to_pil"]


def in_focus_to_pil(in_focus: np.ndarray) -> Image.Image:
    """A bool in-focus array as an 'L' image with 255 = in focus (the transforms' mask convention)."""
    return Image.fromarray(np.where(np.asarray(in_focus, dtype=bool), 255, 0).astype(np.uint8))
