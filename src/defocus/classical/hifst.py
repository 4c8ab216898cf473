"""HiFST blur maps (Golestaneh & Karam, "Spatially-varying blur detection based on multiscale fused and sorted
transform coefficients of gradient magnitudes", CVPR 2017).

Pipeline:

1. gradient magnitude G of the gray image, smoothed first by a Gaussian of sigma 0.5 (the authors' code);
2. for every patch size M_r = 2^(2+r) - 1 (7, 15, 31, 63), the 2-D DCT of the M_r x M_r patch of G centred on a
   pixel, keeping the high-frequency coefficients (row + column index >= M_r - 1: (M_r^2 + M_r) / 2 of them);
3. fusion and sorting: the absolute high-frequency coefficients of all scales at a pixel are pooled and sorted in
   increasing order; the t-th sorted value over the image forms layer L_t;
4. each layer is normalised to [0, 1] over the image and the first sum_r M_r layers are max-pooled into T;
5. D = T times the local entropy of T (7x7, 256 levels), smoothed with the domain-transform recursive filter
   (sigma_s 15, sigma_r 0.25, guided by the gray image) and min-max normalised, as in the authors' code.

Deviations (named parameters, see ``docs/classical.md``): step 2 is evaluated on a grid whose step grows with the
patch size (``strides``, default (M_r + 1) / 8, i.e. every 8th pixel for 63x63 patches, but never finer than the
fusion grid) and the sorted coefficient vectors are bilinearly interpolated to the fusion grid (``fusion_stride``,
default 2: every other pixel; an interpolation of sorted vectors stays sorted); T is bilinearly interpolated to
every pixel. ``strides=(1, 1, 1, 1), fusion_stride=1`` computes every pixel exactly (slow).
"""
from __future__ import annotations

import logging
import math
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from ._filters import box_mean, domain_transform_filter, guided_upsample, resize
from ._image import to_gray

logger = logging.getLogger(__name__)

#: Patch sizes M_r = 2^(2+r) - 1, r = 1..4.
PAPER_PATCH_SIZES = (7, 15, 31, 63)
#: Side of the neighbourhood of the local entropy weighting.
ENTROPY_WINDOW = 7
#: Gaussian smoothing (pixels) of the image before its gradient, in the authors' code.
PAPER_PRESMOOTH_SIGMA = 0.5
#: Spatial and range standard deviations of the final domain-transform filter, in the authors' code.
PAPER_SIGMA_S = 15.0
PAPER_SIGMA_R = 0.25

# Upper bound on the floats of one batch of patches (memory of the DCT step).
_BATCH_FLOATS = 1 << 22


@lru_cache(maxsize=16)
def _dct_matrix(m: int) -> np.ndarray:
    """Orthonormal DCT-II matrix: row k is the k-th cosine basis vector of length m."""
    n = np.arange(m)
    mat = np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * m)) * math.sqrt(2.0 / m)
    mat[0] /= math.sqrt(2.0)
    return mat.astype(np.float32)


@lru_cache(maxsize=16)
def _high_frequency_index(m: int) -> np.ndarray:
    """Flat indices of the coefficients (u, v) of an m x m DCT with u + v >= m - 1."""
    u, v = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    return np.flatnonzero((u + v).ravel() >= m - 1)


def _grid(n: int, stride: int) -> np.ndarray:
    return np.arange(0, n, stride)


def sorted_high_frequency(grad: np.ndarray, patch: int, stride: int = 1, keep: int | None = None) -> np.ndarray:
    """Sorted absolute high-frequency DCT coefficients of the ``patch`` x ``patch`` neighbourhoods of ``grad``
    (odd ``patch``; mirrored borders) centred on the grid points (every ``stride``-th row and column, from 0).

    Returns float32 (len(rows), len(cols), k): the ``keep`` smallest of the (patch^2 + patch) / 2 values (all of
    them when ``keep`` is None), in increasing order.
    """
    h, w = grad.shape
    r = patch // 2
    padded = np.pad(grad.astype(np.float32), r, mode="symmetric")
    windows = sliding_window_view(padded, (patch, patch))  # (h, w, patch, patch) view, centred on each pixel
    ys, xs = _grid(h, stride), _grid(w, stride)
    dct = _dct_matrix(patch)
    index = _high_frequency_index(patch)
    k = index.size if keep is None else min(int(keep), index.size)
    out = np.empty((ys.size, xs.size, k), dtype=np.float32)
    rows_per_batch = max(1, _BATCH_FLOATS // (xs.size * patch * patch))
    for start in range(0, ys.size, rows_per_batch):
        y_batch = ys[start:start + rows_per_batch]
        p = windows[y_batch[:, None], xs[None, :]].reshape(-1, patch, patch)
        n = p.shape[0]
        # C = D P D^T with two large matrix products; the second yields C^T, whose high-frequency set is the same
        # (the condition u + v >= patch - 1 is symmetric).
        half = (p.reshape(n * patch, patch) @ dct.T).reshape(n, patch, patch)
        coeffs = np.ascontiguousarray(half.transpose(0, 2, 1)).reshape(n * patch, patch) @ dct.T
        high = np.abs(coeffs.reshape(n, patch * patch)[:, index])
        if k < high.shape[1]:
            high = np.partition(high, k - 1, axis=1)[:, :k]
        high.sort(axis=1)
        out[start:start + y_batch.size] = high.reshape(y_batch.size, xs.size, k)
    return out


def _interp_axis(arr: np.ndarray, src_stride: int, positions: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation along ``axis`` of samples taken at multiples of ``src_stride`` to the pixel
    ``positions`` (clamped beyond the last sample)."""
    n_src = arr.shape[axis]
    pos = positions / float(src_stride)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n_src - 1)
    i1 = np.minimum(i0 + 1, n_src - 1)
    wgt = np.clip(pos - i0, 0.0, 1.0).astype(np.float32)
    if not wgt.any():
        return np.take(arr, i0, axis=axis)
    shape = [1] * arr.ndim
    shape[axis] = len(positions)
    wgt = wgt.reshape(shape)
    return np.take(arr, i0, axis=axis) * (1 - wgt) + np.take(arr, i1, axis=axis) * wgt


def _fuse_and_sort(per_scale, ys: np.ndarray, xs: np.ndarray, n_layers: int) -> np.ndarray:
    """(len(ys), len(xs), n_layers): at each fusion-grid pixel, the n_layers smallest values of all scales'
    sorted coefficients (interpolated from each scale's grid), in increasing order. Built in row strips to bound
    the memory."""
    total = sum(c.shape[2] for c, _ in per_scale)
    t = min(n_layers, total)
    out = np.empty((ys.size, xs.size, t), dtype=np.float32)
    rows = max(1, _BATCH_FLOATS // max(1, xs.size * total))
    for y0 in range(0, ys.size, rows):
        parts = [_interp_axis(_interp_axis(c, s, ys[y0:y0 + rows], 0), s, xs, 1) for c, s in per_scale]
        strip = np.concatenate(parts, axis=2)
        if t < total:
            strip = np.partition(strip, t - 1, axis=2)[:, :, :t]
        strip.sort(axis=2)
        out[y0:y0 + rows] = strip
    return out


def local_entropy(gray: np.ndarray, window: int = ENTROPY_WINDOW, bins: int = 32) -> np.ndarray:
    """Shannon entropy (bits) of the gray-level histogram in the ``window`` x ``window`` neighbourhood of each
    pixel (clipped at the border); gray levels are the image min-max normalised and quantised to ``bins`` levels.
    Returns float32 HxW."""
    g = gray.astype(np.float32)
    lo, hi = float(g.min()), float(g.max())
    if hi <= lo:
        return np.zeros(g.shape, dtype=np.float32)
    q = np.minimum(((g - lo) / (hi - lo) * bins).astype(np.int64), bins - 1)
    ent = np.zeros(g.shape, dtype=np.float64)
    for b in np.unique(q):
        p = box_mean((q == b).astype(np.float32), window // 2)
        ent -= p * np.log2(np.where(p > 0, p, 1.0))
    return ent.astype(np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 1e-12:
        return np.zeros_like(x, dtype=np.float32)
    return ((x - lo) / (hi - lo)).astype(np.float32)


def hifst_map(image, *, patch_sizes=PAPER_PATCH_SIZES, n_layers: int | None = None, strides=None,
              fusion_stride: int = 2, presmooth_sigma: float = PAPER_PRESMOOTH_SIGMA,
              entropy_window: int = ENTROPY_WINDOW, entropy_bins: int = 256,
              sigma_s: float = PAPER_SIGMA_S, sigma_r: float = PAPER_SIGMA_R,
              work_pixels: int | None = 2_000_000) -> np.ndarray:
    """HiFST sharpness map (1 = in focus), float32 HxW in [0, 1], same size as ``image``.

    Parameters
    ----------
    image: HxWx3 (RGB) or HxW array, uint8 or float in [0, 1].
    patch_sizes: odd DCT patch sizes M_r (paper: 7, 15, 31, 63).
    n_layers: number of smallest sorted coefficients max-pooled (paper: sum of the patch sizes, 116).
    strides: grid step of the DCT of each scale (default (M_r + 1) // 8; never finer than ``fusion_stride``).
    fusion_stride: grid step at which the scales are fused, sorted and max-pooled; the max-pooled map is then
        bilinearly interpolated to every pixel.
    presmooth_sigma: Gaussian smoothing of the image before the gradient (the authors' code: 0.5 pixel).
    entropy_window, entropy_bins: neighbourhood and level quantisation of the local entropy of the max-pooled map
        that weights it (the authors' code: 7x7, 256 levels).
    sigma_s, sigma_r: domain-transform filter of the final smoothing (the authors' code: 15 pixels, 0.25), guided
        by the smoothed gray image.
    work_pixels: larger images are processed shrunk to this many pixels (memory: about 400 bytes per processed
        pixel) and the map is brought back with a guided upsampling; ``None`` never shrinks.
    """
    patch_sizes = tuple(int(m) for m in patch_sizes)
    if not patch_sizes or any(m < 1 or m % 2 == 0 for m in patch_sizes):
        raise ValueError(f"HiFST patch sizes must be odd positive sizes, got {patch_sizes}")
    strides = tuple(max(1, (m + 1) // 8) for m in patch_sizes) if strides is None else tuple(int(s) for s in strides)
    if len(strides) != len(patch_sizes) or min(strides) < 1:
        raise ValueError(f"need one positive stride per patch size, got {strides}")
    n_layers = sum(patch_sizes) if n_layers is None else int(n_layers)
    if n_layers < 1 or int(entropy_bins) < 2:
        raise ValueError(f"HiFST needs n_layers >= 1 and entropy_bins >= 2, got {n_layers} and {entropy_bins}")
    gray_full = to_gray(image)
    h_full, w_full = gray_full.shape
    gray = gray_full
    if work_pixels and h_full * w_full > work_pixels:
        scale = math.sqrt(work_pixels / (h_full * w_full))
        gray = resize(gray_full, (max(1, round(h_full * scale)), max(1, round(w_full * scale))))
        logger.debug("HiFST on a %dx%d copy of the %dx%d image", gray.shape[0], gray.shape[1], h_full, w_full)
    h, w = gray.shape
    if presmooth_sigma > 0:
        gray = ndimage.gaussian_filter(gray, float(presmooth_sigma), mode="nearest")
    grad = np.hypot(ndimage.sobel(gray, axis=1, mode="nearest"), ndimage.sobel(gray, axis=0, mode="nearest"))

    fs = max(1, int(fusion_stride))
    ys, xs = _grid(h, fs), _grid(w, fs)
    # a scale sampled more densely than the fusion grid would only be subsampled again
    per_scale = [(sorted_high_frequency(grad, m, max(s, fs), keep=n_layers), max(s, fs))
                 for m, s in zip(patch_sizes, strides)]
    layers = _fuse_and_sort(per_scale, ys, xs, n_layers)
    del per_scale
    lo = layers.min(axis=(0, 1))
    span = layers.max(axis=(0, 1)) - lo
    span[span <= 1e-12] = np.inf  # a constant layer carries no information: it normalises to 0
    layers -= lo
    layers /= span
    pooled = layers.max(axis=2)  # max-pooling over the normalised layers: T of the authors' code
    del layers
    if pooled.shape != (h, w):
        pooled = _interp_axis(_interp_axis(pooled, fs, np.arange(h), 0), fs, np.arange(w), 1)
    pooled = _normalise(pooled)
    weighted = local_entropy(pooled, entropy_window, entropy_bins) * pooled  # D of the paper
    guide = ndimage.gaussian_filter(_normalise(gray), 1.0, truncate=1.0, mode="nearest")
    smooth = domain_transform_filter(weighted, guide, sigma_s, sigma_r)
    if (h, w) != (h_full, w_full):
        smooth = guided_upsample(_normalise(gray_full), smooth, 1, 1e-3)
    return _normalise(smooth)
