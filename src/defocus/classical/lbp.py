"""LBP-based defocus segmentation (Yi & Eramian, "LBP-based segmentation of defocus blur", IEEE TIP 2016).

Pipeline:

1. rotation-invariant uniform LBP(8,1) codes with a small intensity threshold (``|n_p - n_c| >= 0.016`` on [0, 1]
   intensities sets bit p), :func:`lbp_riu2_codes`;
2. sharpness metric = local fraction of the codes 6, 7, 8 and 9 in a square window, at several window sizes
   (11, 15, 21), computed with integral images so that the cost does not depend on the window,
   :func:`lbp_sharpness`;
3. per scale, matting initialisation: alpha = 1 where the metric > T_m1, 0 where it < T_m2, unknown elsewhere;
   closed-form matting propagates these constraints along the image's colour edges;
4. multi-scale inference: an L1 energy coupling the per-scale alpha maps within and across scales
   (:mod:`defocus.classical._inference`); the map of the largest window is the sharpness map, :func:`lbp_map`;
5. segmentation: the sharpness map thresholded at T_seg, :func:`lbp_segment`.

Deviations (named parameters, see ``docs/classical.md``): steps 3-4 run at a reduced resolution (at most
``work_pixels`` pixels, 20 000 by default) and the result is brought back to full size with a guided upsampling
(the matting model itself: alpha locally linear in the image); the inference uses a continuous primal-dual solver
instead of discrete loopy belief propagation.
"""
from __future__ import annotations

import logging
import math

import numpy as np

from ._filters import box_mean, guided_upsample, resize
from ._image import to_gray, to_rgb
from ._inference import multiscale_inference
from ._matting import matte_from_constraints

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


def _lbp_bits(gray: np.ndarray, threshold: float) -> np.ndarray:
    """(8, H, W) bool: bit p of LBP(8,1) with the thresholded absolute difference of the paper."""
    g = to_gray(gray)
    h, w = g.shape
    padded = np.pad(g, 1, mode="edge")
    thr = np.float32(threshold)
    return np.stack([np.abs(_neighbour(padded, dy, dx, h, w) - g) >= thr for dy, dx in _OFFSETS])


def lbp_riu2_codes(gray, threshold: float = PAPER_LBP_THRESHOLD) -> np.ndarray:
    """Rotation-invariant uniform LBP(8,1) codes (0..9) of a gray (or colour, converted) image.

    Bit p is set when ``|n_p - n_c| >= threshold`` (intensities in [0, 1]; neighbours on the unit circle,
    diagonal ones bilinearly interpolated, borders replicated). A pattern with at most two 0/1 transitions around
    the circle gets the number of its set bits (0..8), any other pattern gets 9. Returns uint8 HxW.
    """
    bits = _lbp_bits(gray, threshold)
    ones = bits.sum(axis=0, dtype=np.uint8)
    transitions = (bits != np.roll(bits, 1, axis=0)).sum(axis=0, dtype=np.uint8)
    return np.where(transitions <= 2, ones, np.uint8(9)).astype(np.uint8)


def _sharp_patterns(gray, threshold: float) -> np.ndarray:
    """HxW float32: 1 where the riu2 code is 6, 7, 8 or 9."""
    return (lbp_riu2_codes(gray, threshold) >= 6).astype(np.float32)


def _sharpness_stack(gray, windows, threshold: float) -> np.ndarray:
    pattern = _sharp_patterns(gray, threshold)
    out = np.empty((len(windows),) + pattern.shape, dtype=np.float32)
    for i, win in enumerate(windows):
        if win < 1 or win % 2 == 0:
            raise ValueError(f"LBP windows must be odd positive sizes, got {win}")
        out[i] = box_mean(pattern, win // 2)
    return out


def lbp_sharpness(gray, window: int = PAPER_WINDOWS[0], threshold: float = PAPER_LBP_THRESHOLD) -> np.ndarray:
    """The paper's LBP sharpness metric m_LBP at every pixel: the fraction of pixels whose riu2 code is 6, 7, 8 or 9
    in the ``window`` x ``window`` neighbourhood (odd size; clipped at the image border).

    ``gray``: HxW (or colour, converted) image, uint8 or float in [0, 1]. Returns float32 HxW in [0, 1],
    high = sharp. The cost does not depend on ``window`` (integral images).
    """
    return _sharpness_stack(gray, (int(window),), threshold)[0]


def _work_size(h: int, w: int, work_pixels: int | None) -> tuple[int, int]:
    if not work_pixels or h * w <= work_pixels:
        return h, w
    scale = math.sqrt(work_pixels / (h * w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def lbp_map(image, *, windows=PAPER_WINDOWS, threshold: float = PAPER_LBP_THRESHOLD, t_m1: float = PAPER_T_M1,
            t_m2: float = PAPER_T_M2, beta: float = PAPER_BETA, refine: bool = True, n_iter: int = 100,
            work_pixels: int | None = 20_000, upsample_radius: int = 1, upsample_eps: float = 1e-3) -> np.ndarray:
    """Sharpness map of the LBP method (1 = in focus), float32 HxW in [0, 1], same size as ``image``.

    Parameters
    ----------
    image: HxWx3 (RGB) or HxW array, uint8 or float in [0, 1].
    windows: odd window sizes of the scales (paper: 11, 15, 21); the last one gives the output map.
    threshold: LBP intensity threshold on [0, 1] intensities (paper: 0.016).
    t_m1, t_m2: matting initialisation; metric > t_m1 is fixed to alpha = 1 (sharp), metric < t_m2 to 0 (blurred).
    beta: smoothness weight of the multi-scale inference (paper: 0.5); 0 disables the inference.
    refine: run matting and inference (paper); ``False`` returns the raw metric of the last window.
    n_iter: primal-dual iterations of the inference.
    work_pixels: matting and inference run on the image shrunk to at most this many pixels (``None``: full size,
        slow on large images: sparse solves on every pixel); the result is upsampled with a guided filter of
        ``upsample_radius`` (pixels at the working size) and ``upsample_eps``.
    """
    windows = tuple(int(w) for w in windows)
    gray = to_gray(image)
    metrics = _sharpness_stack(gray, windows, threshold)
    if not refine:
        return metrics[-1]
    h, w = gray.shape
    hs, ws = _work_size(h, w, work_pixels)
    logger.debug("LBP matting and inference at %dx%d for a %dx%d image", hs, ws, h, w)
    rgb_small = np.moveaxis(resize(np.moveaxis(to_rgb(image), 2, 0), (hs, ws)), 0, 2)
    m_small = resize(metrics, (hs, ws))
    sharp = m_small > t_m1
    blurred = m_small < t_m2
    init = np.where(sharp, 1.0, np.where(blurred, 0.0, m_small)).astype(np.float32)
    alpha = matte_from_constraints(np.clip(rgb_small, 0.0, 1.0), init, sharp | blurred)
    fused = multiscale_inference(alpha, beta=beta, n_iter=n_iter)[-1]
    if (hs, ws) != (h, w):
        fused = guided_upsample(gray, fused, upsample_radius, upsample_eps)
    return np.clip(fused, 0.0, 1.0).astype(np.float32)


def lbp_segment(image, t_seg: float = PAPER_T_SEG, **kwargs) -> np.ndarray:
    """Binary segmentation of the LBP method: ``lbp_map(image, **kwargs) > t_seg`` (paper threshold 0.3).
    Returns bool HxW, True = in focus."""
    return lbp_map(image, **kwargs) > t_seg
