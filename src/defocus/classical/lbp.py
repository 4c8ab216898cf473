"""LBP-based defocus segmentation (Yi & Eramian, "LBP-based segmentation of defocus blur", IEEE TIP 2016), as the
authors' released code (which produced the paper's numbers) runs it.

Pipeline:

1. rotation-invariant uniform LBP(8,1) codes with a small intensity threshold: bit p is set when the neighbour is
   brighter than the centre by more than 0.016 on [0, 1] intensities (the code; the paper's text writes an absolute
   difference, ``comparison="absolute"``), :func:`lbp_riu2_codes`;
2. sharpness metric = local fraction of the codes 6, 7, 8 and 9 in a square window, at several window sizes
   (11, 15, 21), computed with integral images so that the cost does not depend on the window,
   :func:`lbp_sharpness`; each map is then min-max normalised over the image;
3. per scale, matting initialisation: alpha = 1 where the normalised metric > T_m1, 0 where it < T_m2, unknown
   elsewhere; closed-form matting, solved at a quarter of the side (Levin's coarse-to-fine solver in the code) and
   brought to full size by its local linear model, propagates these constraints along the image's edges;
4. multi-scale inference: a two-label field over the three matted maps, solved for its marginals by loopy belief
   propagation (:mod:`defocus.classical._inference`); the in-focus belief of the largest window is the sharpness
   map, :func:`lbp_map`;
5. segmentation: the sharpness map thresholded at T_seg, :func:`lbp_segment`.

``fast=True`` is the named approximation: steps 3-4 on a copy of at most ``work_pixels`` pixels (20 000 by
default) and the belief brought back with a guided upsampling. See ``docs/classical.md`` for every difference from
the paper and the code.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ._filters import box_mean, guided_upsample, resize
from ._image import to_gray, to_rgb
from ._inference import multiscale_beliefs
from ..matting import matte_from_constraints

logger = logging.getLogger(__name__)

#: Intensity threshold of the LBP comparisons, on [0, 1] intensities.
PAPER_LBP_THRESHOLD = 0.016
#: Window sizes of the three scales.
PAPER_WINDOWS = (11, 15, 21)
#: Matting initialisation: alpha = 1 above T_m1, alpha = 0 below T_m2.
PAPER_T_M1 = 0.3
PAPER_T_M2 = 0.01
#: Weight of the smoothness terms of the multi-scale inference.
PAPER_BETA = 0.5
#: Segmentation threshold on the final sharpness map.
PAPER_T_SEG = 0.3
#: Side ratio of the matting solve (the authors' code: Levin's coarse-to-fine solver, three levels, one active).
PAPER_MATTING_SCALE = 0.25
#: How the LBP threshold is applied: the authors' code (signed) or the paper's text (absolute difference).
COMPARISONS = ("signed", "absolute")
# Regulariser of the guided upsampling of mattes and maps (gray guide in [0, 1]).
UPSAMPLE_EPS = 1e-3

# Unit-circle offsets (dy, dx) of the 8 neighbours, counter-clockwise from the right (image rows grow downwards).
_ANGLES = 2.0 * np.pi * np.arange(8) / 8.0
_OFFSETS = [(-math.sin(a), math.cos(a)) for a in _ANGLES]


def _neighbour(padded: np.ndarray, dy: float, dx: float, h: int, w: int) -> np.ndarray:
    """Bilinearly interpolated samples at (row + dy, col + dx) for every pixel; ``padded`` has a 1-pixel border."""
    def shifted(oy: int, ox: int) -> np.ndarray:
        return padded[1 + oy:1 + oy + h, 1 + ox:1 + ox + w]

    y0, x0 = math.floor(round(dy, 12)), math.floor(round(dx, 12))
    fy, fx = round(dy - y0, 12), round(dx - x0, 12)
    out = (1 - fy) * (1 - fx) * shifted(y0, x0)
    if fx:
        out = out + (1 - fy) * fx * shifted(y0, x0 + 1)
    if fy:
        out = out + fy * (1 - fx) * shifted(y0 + 1, x0)
    if fx and fy:
        out = out + fy * fx * shifted(y0 + 1, x0 + 1)
    return out


def _lbp_bits(gray: np.ndarray, threshold: float, comparison: str) -> np.ndarray:
    """(8, H, W) bool: bit p of LBP(8,1), set when the neighbour exceeds the centre by more than ``threshold``
    (``"signed"``) or differs from it by at least ``threshold`` (``"absolute"``)."""
    if comparison not in COMPARISONS:
        raise ValueError(f"LBP comparison must be one of {', '.join(COMPARISONS)}, got {comparison!r}")
    g = to_gray(gray)
    h, w = g.shape
    padded = np.pad(g, 1, mode="edge")
    thr = np.float32(threshold)
    if comparison == "signed":
        return np.stack([_neighbour(padded, dy, dx, h, w) - g > thr for dy, dx in _OFFSETS])
    return np.stack([np.abs(_neighbour(padded, dy, dx, h, w) - g) >= thr for dy, dx in _OFFSETS])


def lbp_riu2_codes(gray, threshold: float = PAPER_LBP_THRESHOLD, comparison: str = "signed") -> np.ndarray:
    """Rotation-invariant uniform LBP(8,1) codes (0..9) of a gray (or colour, converted) image.

    Bit p is set when ``n_p - n_c > threshold`` (``comparison="signed"``, the authors' code) or when
    ``|n_p - n_c| >= threshold`` (``"absolute"``, the paper's text); intensities in [0, 1], neighbours on the
    unit circle, diagonal ones bilinearly interpolated, borders replicated. A pattern with at most two 0/1
    transitions around the circle gets the number of its set bits (0..8), any other pattern gets 9.
    Returns uint8 HxW.
    """
    bits = _lbp_bits(gray, threshold, comparison)
    ones = bits.sum(axis=0, dtype=np.uint8)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(axis=0, dtype=np.uint8)
    return np.where(transitions <= 2, ones, np.uint8(9)).astype(np.uint8)


def _sharp_patterns(gray, threshold: float, comparison: str) -> np.ndarray:
    """HxW float32: 1 where the riu2 code is 6, 7, 8 or 9."""
    return (lbp_riu2_codes(gray, threshold, comparison) >= 6).astype(np.float32)


def _sharpness_stack(gray, windows, threshold: float, comparison: str) -> np.ndarray:
    pattern = _sharp_patterns(gray, threshold, comparison)
    out = np.empty((len(windows),) + pattern.shape, dtype=np.float32)
    for i, win in enumerate(windows):
        if win < 1 or win % 2 == 0:
            raise ValueError(f"LBP windows must be odd positive sizes, got {win}")
        out[i] = box_mean(pattern, win // 2)
    return out


def lbp_sharpness(gray, window: int = PAPER_WINDOWS[0], threshold: float = PAPER_LBP_THRESHOLD,
                  comparison: str = "signed") -> np.ndarray:
    """The paper's LBP sharpness metric m_LBP at every pixel: the fraction of pixels whose riu2 code is 6, 7, 8 or 9
    in the ``window`` x ``window`` neighbourhood (odd size; clipped at the image border).

    ``gray``: HxW (or colour, converted) image, uint8 or float in [0, 1]; ``threshold``, ``comparison``: see
    :func:`lbp_riu2_codes`. Returns float32 HxW in [0, 1], high = sharp, not normalised. The cost does not depend
    on ``window`` (integral images).
    """
    return _sharpness_stack(gray, (int(window),), threshold, comparison)[0]


def _min_max(x: np.ndarray) -> np.ndarray:
    """Each map of the stack ``x`` (S, H, W) scaled to [0, 1] over its pixels; a constant map becomes 0."""
    lo = x.min(axis=(1, 2), keepdims=True)
    span = x.max(axis=(1, 2), keepdims=True) - lo
    return np.where(span > 1e-12, (x - lo) / np.where(span > 1e-12, span, 1.0), 0.0).astype(np.float32)


def _shrunk(h: int, w: int, factor: float) -> tuple[int, int]:
    return max(1, round(h * factor)), max(1, round(w * factor))


def _fast_size(h: int, w: int, work_pixels: int) -> tuple[int, int]:
    if h * w <= work_pixels:
        return h, w
    return _shrunk(h, w, math.sqrt(work_pixels / (h * w)))


def _resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """HxWx3 float image resized to ``size`` (area when shrinking)."""
    return np.moveaxis(resize(np.moveaxis(rgb, 2, 0), size), 0, 2)


def _matte_scales(rgb: np.ndarray, metrics: np.ndarray, t_m1: float, t_m2: float,
                  matting_size: tuple[int, int]) -> np.ndarray:
    """Per-scale matting (S, H, W) at the size of ``rgb``: the constraints (normalised metric > t_m1: in focus,
    < t_m2: blurred) are set and the matte solved at ``matting_size``, then brought to the size of ``rgb`` with the
    matting model itself (alpha locally linear in the image: a guided upsampling)."""
    h, w = rgb.shape[:2]
    m_small = resize(metrics, matting_size)
    sharp = m_small > t_m1
    blurred = m_small < t_m2
    init = np.where(sharp, 1.0, np.where(blurred, 0.0, m_small)).astype(np.float32)
    alpha = matte_from_constraints(np.clip(_resize_rgb(rgb, matting_size), 0.0, 1.0), init, sharp | blurred)
    if matting_size == (h, w):
        return alpha
    gray = to_gray(rgb)
    return np.stack([np.clip(guided_upsample(gray, a, 1, UPSAMPLE_EPS), 0.0, 1.0) for a in alpha])


def lbp_map(image, *, windows=PAPER_WINDOWS, threshold: float = PAPER_LBP_THRESHOLD, comparison: str = "signed",
            normalise: bool = True, t_m1: float = PAPER_T_M1, t_m2: float = PAPER_T_M2, beta: float = PAPER_BETA,
            refine: bool = True, matting_scale: float = PAPER_MATTING_SCALE, n_iter: int = 100, fast: bool = False,
            work_pixels: int = 20_000) -> np.ndarray:
    """Sharpness map of the LBP method (1 = in focus), float32 HxW in [0, 1], same size as ``image``.

    Parameters
    ----------
    image: HxWx3 (RGB) or HxW array, uint8 or float in [0, 1].
    windows: odd window sizes of the scales (paper: 11, 15, 21); the last one gives the output map.
    threshold, comparison: LBP intensity threshold on [0, 1] intensities (paper: 0.016) and how it is applied
        (``"signed"``: the authors' code; ``"absolute"``: the paper's text), see :func:`lbp_riu2_codes`.
    normalise: scale each metric map to [0, 1] over the image before the matting thresholds (the authors' code);
        ``False`` thresholds the raw fractions.
    t_m1, t_m2: matting initialisation; metric > t_m1 is fixed to alpha = 1 (sharp), metric < t_m2 to 0 (blurred).
    beta: coupling of the multi-scale inference (paper: 0.5); 0 leaves each pixel to its own matted value.
    refine: run matting and inference (paper); ``False`` returns the metric of the last window (normalised when
        ``normalise``).
    matting_scale: side ratio at which the matting is solved (the authors' code: 1/4, Levin's coarse-to-fine
        solver with three levels); the matte is brought back to full size by its local linear model.
    n_iter: most message updates of the inference.
    fast: named approximation: matting and inference on a copy of at most ``work_pixels`` pixels and the map
        brought back with a guided upsampling; the cost then hardly grows with the image.
    """
    windows = tuple(int(w) for w in windows)
    if not windows or any(w < 1 or w % 2 == 0 for w in windows):
        raise ValueError(f"LBP windows must be one or more odd positive sizes, got {windows}")
    if not 0 < matting_scale <= 1:
        raise ValueError(f"matting_scale must be in (0, 1], got {matting_scale}")
    if fast and work_pixels < 1:
        raise ValueError(f"work_pixels must be positive, got {work_pixels}")
    gray = to_gray(image)
    metrics = _sharpness_stack(gray, windows, threshold, comparison)
    if normalise:
        metrics = _min_max(metrics)
    if not refine:
        return metrics[-1]
    h, w = gray.shape
    size = _fast_size(h, w, int(work_pixels)) if fast else (h, w)
    rgb = to_rgb(image)
    if size != (h, w):
        rgb, metrics = _resize_rgb(rgb, size), resize(metrics, size)
        logger.debug("LBP matting and inference at %dx%d for a %dx%d image", size[0], size[1], h, w)
    matting_size = _shrunk(*size, float(matting_scale)) if not fast else size
    alpha = _matte_scales(rgb, metrics, t_m1, t_m2, matting_size)
    fused = multiscale_beliefs(alpha, beta=beta, n_iter=n_iter)[-1]
    if size != (h, w):
        fused = guided_upsample(gray, fused, 1, UPSAMPLE_EPS)
    return np.clip(fused, 0.0, 1.0).astype(np.float32)


def lbp_segment(image, t_seg: float = PAPER_T_SEG, **kwargs) -> np.ndarray:
    """Binary segmentation of the LBP method: ``lbp_map(image, **kwargs) > t_seg`` (paper threshold 0.3).
    Returns bool HxW, True = in focus."""
    return lbp_map(image, **kwargs) > t_seg
