"""Integral-image box filters, the guided filter and resizing, shared by the training-free methods.

Every filter here costs a fixed number of operations per pixel, whatever the window size.
"""
from __future__ import annotations

import numpy as np
from PIL import Image


def _window_sum_1d(x: np.ndarray, radius: int, axis: int) -> np.ndarray:
    """Sum of ``x`` over [i - radius, i + radius] along ``axis``, the window clipped at the borders."""
    n = x.shape[axis]
    shape = list(x.shape)
    shape[axis] = 1
    c = np.concatenate([np.zeros(shape, dtype=np.float64), np.cumsum(x, axis=axis, dtype=np.float64)], axis=axis)
    idx = np.arange(n)
    hi = np.minimum(idx + radius + 1, n)
    lo = np.maximum(idx - radius, 0)
    return np.take(c, hi, axis=axis) - np.take(c, lo, axis=axis)


def _window_count_1d(n: int, radius: int) -> np.ndarray:
    idx = np.arange(n)
    return (np.minimum(idx + radius + 1, n) - np.maximum(idx - radius, 0)).astype(np.float64)


def box_sum(x: np.ndarray, radius_y: int, radius_x: int | None = None) -> np.ndarray:
    """Sum over the (2*radius_y+1) x (2*radius_x+1) window centred on each pixel of the last two axes of ``x``
    (windows are clipped at the image border), via cumulative sums. Returns float64."""
    radius_x = radius_y if radius_x is None else radius_x
    return _window_sum_1d(_window_sum_1d(x, int(radius_y), -2), int(radius_x), -1)


def box_mean(x: np.ndarray, radius_y: int, radius_x: int | None = None) -> np.ndarray:
    """Mean over the window of :func:`box_sum`, counting only the pixels inside the image. Returns float64."""
    radius_x = radius_y if radius_x is None else radius_x
    h, w = x.shape[-2:]
    count = np.outer(_window_count_1d(h, int(radius_y)), _window_count_1d(w, int(radius_x)))
    return box_sum(x, radius_y, radius_x) / count


def _guided_coefficients(guide: np.ndarray, src: np.ndarray, radius: int, eps: float):
    mean_i = box_mean(guide, radius)
    mean_p = box_mean(src, radius)
    cov_ip = box_mean(guide * src, radius) - mean_i * mean_p
    var_i = box_mean(guide * guide, radius) - mean_i * mean_i
    a = cov_ip / (np.maximum(var_i, 0.0) + eps)
    b = mean_p - a * mean_i
    return box_mean(a, radius), box_mean(b, radius)


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Edge-preserving smoothing of ``src`` steered by the gray image ``guide`` (He, Sun & Tang, ECCV 2010).

    ``radius``: half-size of the square window; ``eps``: regularisation (edges whose guide variance is well above
    ``eps`` are kept). Returns float32 of the same HxW shape.
    """
    mean_a, mean_b = _guided_coefficients(guide.astype(np.float64), src.astype(np.float64), radius, eps)
    return (mean_a * guide + mean_b).astype(np.float32)


def guided_upsample(guide: np.ndarray, src_small: np.ndarray, radius_small: int, eps: float) -> np.ndarray:
    """Upsample ``src_small`` to the size of ``guide`` with the fast guided filter (He & Sun, arXiv 2015):
    the linear coefficients are fitted at the small size against a box-downsampled guide, then bilinearly
    upsampled and applied to the full-size guide, so edges follow the full-resolution image."""
    h, w = guide.shape
    hs, ws = src_small.shape
    if (hs, ws) == (h, w):
        return guided_filter(guide, src_small, radius_small, eps)
    guide_small = resize(guide, (hs, ws))
    mean_a, mean_b = _guided_coefficients(guide_small.astype(np.float64), src_small.astype(np.float64),
                                          radius_small, eps)
    mean_a = resize(mean_a.astype(np.float32), (h, w))
    mean_b = resize(mean_b.astype(np.float32), (h, w))
    return (mean_a * guide + mean_b).astype(np.float32)


def resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float array of shape (..., H, W) to (..., h, w): box (area) filter when shrinking, bilinear when
    enlarging (pixel-centre aligned). Returns float32."""
    h, w = size
    x = np.asarray(x, dtype=np.float32)
    if x.shape[-2:] == (h, w):
        return x.copy()
    shrink = h <= x.shape[-2] and w <= x.shape[-1]
    method = Image.BOX if shrink else Image.BILINEAR
    planes = x.reshape(-1, *x.shape[-2:])
    out = np.empty((planes.shape[0], h, w), dtype=np.float32)
    for i, plane in enumerate(planes):
        out[i] = np.asarray(Image.fromarray(np.ascontiguousarray(plane)).resize((w, h), method))
    return out.reshape(*x.shape[:-2], h, w)


def _recursive_pass(f: np.ndarray, feedback: np.ndarray) -> None:
    """In place, along each row of ``f``: left-to-right then right-to-left first-order recursive filtering with
    per-pixel feedback ``feedback`` (the weight of the previous output)."""
    for i in range(1, f.shape[1]):
        f[:, i] += feedback[:, i] * (f[:, i - 1] - f[:, i])
    for i in range(f.shape[1] - 2, -1, -1):
        f[:, i] += feedback[:, i + 1] * (f[:, i + 1] - f[:, i])


def domain_transform_filter(src: np.ndarray, guide: np.ndarray, sigma_s: float, sigma_r: float,
                            n_iter: int = 3) -> np.ndarray:
    """Edge-preserving smoothing of ``src`` steered by ``guide`` (both HxW): the recursive filter of the domain
    transform (Gastal & Oliveira, SIGGRAPH 2011). ``sigma_s``: spatial standard deviation in pixels; ``sigma_r``:
    range standard deviation in guide units (a guide step much larger than ``sigma_r`` stops the smoothing);
    ``n_iter`` horizontal + vertical passes with shrinking spatial sigmas. Returns float32 HxW."""
    g = np.asarray(guide, dtype=np.float64)
    f = np.array(src, dtype=np.float64)
    # derivatives of the horizontal and vertical transformed domains: 1 + sigma_s / sigma_r * |dI|
    dx = np.ones_like(g)
    dy = np.ones_like(g)
    dx[:, 1:] += sigma_s / sigma_r * np.abs(np.diff(g, axis=1))
    dy[1:, :] += sigma_s / sigma_r * np.abs(np.diff(g, axis=0))
    dy_t = np.ascontiguousarray(dy.T)
    for i in range(int(n_iter)):
        sigma_i = sigma_s * np.sqrt(3.0) * 2.0 ** (n_iter - (i + 1)) / np.sqrt(4.0 ** n_iter - 1)
        a = np.exp(-np.sqrt(2.0) / sigma_i)
        _recursive_pass(f, a ** dx)
        f_t = np.ascontiguousarray(f.T)
        _recursive_pass(f_t, a ** dy_t)
        f = np.ascontiguousarray(f_t.T)
    return f.astype(np.float32)
