"""In-focus masks from the training-free maps, with each method's own threshold.

* LBP: the paper's segmentation threshold T_seg = 0.3 on the final map (Yi & Eramian, TIP 2016).
* HiFST: the paper and its released evaluation fix no threshold (they sweep all 256 levels of the min-max
  normalised map); the mask uses a parameter-free threshold computed from the map itself, Otsu's (the level that
  best separates the map's histogram into two classes, in focus and blurred).
"""
from __future__ import annotations

import numpy as np

from .lbp import PAPER_T_SEG

#: Mask thresholds by method: a number, or ``"adaptive"`` for :func:`adaptive_threshold`.
MASK_THRESHOLDS: dict[str, float | str] = {"lbp": PAPER_T_SEG, "hifst": "adaptive"}


def adaptive_threshold(prob: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of the map ``prob`` (values in [0, 1]): the bin edge that maximises the between-class
    variance of its ``bins``-bin histogram. A constant map has no two classes: its threshold is half a bin above
    its value, so that none of its pixels is marked in focus (with ``>`` as with ``>=``)."""
    p = np.clip(np.asarray(prob, dtype=np.float64).ravel(), 0.0, 1.0)
    hist = np.bincount(np.minimum((p * bins).astype(np.int64), bins - 1), minlength=bins).astype(np.float64)
    centres = (np.arange(bins) + 0.5) / bins
    w0 = np.cumsum(hist)                 # pixels at or below each bin
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1.0)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1.0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    if not between.any():
        return float(p.max()) + 0.5 / bins
    return float((np.argmax(between) + 1) / bins)


def mask_threshold(method: str, prob: np.ndarray) -> float:
    """The threshold above which ``method``'s map ``prob`` (float HxW in [0, 1], 1 = in focus) marks a pixel in
    focus: LBP's T_seg (0.3), HiFST's adaptive one (Otsu's threshold of the map)."""
    key = str(method).lower()
    if key not in MASK_THRESHOLDS:
        raise ValueError(f"no mask threshold for {method!r}; methods: {', '.join(sorted(MASK_THRESHOLDS))}")
    value = MASK_THRESHOLDS[key]
    return adaptive_threshold(prob) if value == "adaptive" else float(value)


def mask_from_map(method: str, prob: np.ndarray) -> np.ndarray:
    """bool HxW, True = in focus: ``prob > mask_threshold(method, prob)`` (an all-zero map has no in-focus
    pixel)."""
    prob = np.asarray(prob)
    return prob > mask_threshold(method, prob)
