"""Training-free defocus blur detectors: no weights, NumPy/SciPy only.

* ``"lbp"``: LBP-based defocus segmentation (Yi & Eramian, IEEE TIP 2016), :func:`lbp_map`;
* ``"hifst"``: high-frequency multiscale fusion and sort transform of gradient magnitudes (Golestaneh & Karam,
  CVPR 2017), :func:`hifst_map`.

Every method maps an RGB uint8 HxWx3 (or gray HxW) image to a float32 HxW map in [0, 1] of the same size,
**1 = in focus**::

    from defocus.classical import predict_map
    sharp = predict_map("lbp", image)       # float32 HxW, 1 = in focus
    mask = predict_mask("lbp", image)       # bool HxW, with the method's own threshold (LBP: T_seg = 0.3)
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from .hifst import PAPER_PATCH_SIZES, hifst_map, local_entropy, sorted_high_frequency
from .lbp import (PAPER_BETA, PAPER_LBP_THRESHOLD, PAPER_T_M1, PAPER_T_M2, PAPER_T_SEG, PAPER_WINDOWS,
                  lbp_map, lbp_riu2_codes, lbp_segment, lbp_sharpness)
from .masks import MASK_THRESHOLDS, adaptive_threshold, mask_from_map, mask_threshold

#: The training-free methods by name: image -> float32 HxW map in [0, 1], 1 = in focus.
METHODS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "lbp": lbp_map,
    "hifst": hifst_map,
}


def predict_map(method: str, image, **kwargs) -> np.ndarray:
    """Sharpness map of ``image`` by the training-free ``method`` (a key of :data:`METHODS`).

    ``image``: HxWx3 RGB or HxW gray array, uint8 or float in [0, 1]; ``kwargs`` go to the method's function
    (:func:`lbp_map`, :func:`hifst_map`). Returns float32 HxW in [0, 1], same size as the image, 1 = in focus.
    """
    key = str(method).lower()
    if key not in METHODS:
        raise ValueError(f"unknown classical method {method!r}; choose one of: {', '.join(sorted(METHODS))}")
    return np.clip(METHODS[key](image, **kwargs), 0.0, 1.0).astype(np.float32, copy=False)


def predict_mask(method: str, image, **kwargs) -> np.ndarray:
    """In-focus mask of ``image`` by ``method``: its :func:`predict_map` above the method's own threshold
    (:func:`mask_threshold`). Returns bool HxW, True = in focus."""
    return mask_from_map(method, predict_map(method, image, **kwargs))


__all__ = [
    "METHODS", "predict_map", "predict_mask", "MASK_THRESHOLDS", "mask_threshold", "mask_from_map",
    "adaptive_threshold",
    "lbp_map", "lbp_segment", "lbp_sharpness", "lbp_riu2_codes",
    "hifst_map", "sorted_high_frequency", "local_entropy",
    "PAPER_LBP_THRESHOLD", "PAPER_WINDOWS", "PAPER_T_M1", "PAPER_T_M2", "PAPER_BETA", "PAPER_T_SEG",
    "PAPER_PATCH_SIZES",
]
