"""Optics primitives for synthetic defocus: sRGB <-> linear light, exact disk (pillbox) blur by FFT, hole filling.

Arrays are float32, channel-first (C, H, W), in linear light unless named otherwise.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import fft as sfft
from scipy import ndimage

_SRGB = np.arange(256, dtype=np.float64) / 255.0
SRGB_TO_LINEAR = np.where(_SRGB <= 0.04045, _SRGB / 12.92, ((_SRGB + 0.055) / 1.055) ** 2.4).astype(np.float32)
_ENC_LEVELS = 16384
_LIN = np.linspace(0.0, 1.0, _ENC_LEVELS)
_ENC = np.where(_LIN <= 0.0031308, 12.92 * _LIN, 1.055 * _LIN ** (1 / 2.4) - 0.055)
LINEAR_TO_SRGB_U8 = np.clip(np.round(_ENC * 255.0), 0, 255).astype(np.uint8)


def srgb_to_linear(img_u8: np.ndarray) -> np.ndarray:
    """uint8 sRGB HxWx3 -> float32 linear light 3xHxW."""
    return SRGB_TO_LINEAR[np.moveaxis(np.asarray(img_u8), -1, 0)]


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """float32 linear light 3xHxW (clipped to [0, 1]) -> uint8 sRGB HxWx3."""
    idx = np.clip(lin, 0.0, 1.0) * (_ENC_LEVELS - 1) + 0.5
    return np.ascontiguousarray(np.moveaxis(LINEAR_TO_SRGB_U8[idx.astype(np.int32)], 0, -1))


def disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    """A normalised pillbox of ``radius`` pixels with anti-aliased rim (pixel coverage by ``supersample``^2
    sub-samples); a radius below half a pixel gives the identity kernel [[1]]."""
    if radius < 0.5:
        return np.ones((1, 1), np.float32)
    half = int(math.ceil(radius - 0.5 + 1e-9))
    n = 2 * half + 1
    s = (np.arange(n * supersample) + 0.5) / supersample - half - 0.5
    inside = (s[:, None] ** 2 + s[None, :] ** 2) <= radius * radius
    k = inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))
    return (k / k.sum()).astype(np.float32)


class DiskBlur:
    """Blur one channel-first image by exact disk kernels of several radii, sharing one forward FFT.

    The image is reflect-padded by the largest radius so nothing wraps around the frame."""

    def __init__(self, image: np.ndarray, max_radius: float):
        image = np.asarray(image, np.float32)
        self.shape = image.shape[-2:]
        self.pad = int(math.ceil(max_radius)) + 2
        h, w = self.shape
        self.full = tuple(sfft.next_fast_len(n + 2 * self.pad, real=True) for n in (h, w))
        # symmetric padding up to the FFT size: the kernel never reaches across the frame
        pads = ((0, 0), (self.pad, self.full[0] - h - self.pad), (self.pad, self.full[1] - w - self.pad))
        self.spectrum = sfft.rfft2(np.pad(image, pads, mode="symmetric"), axes=(-2, -1), workers=1)

    def kernel_spectrum(self, radius: float) -> np.ndarray:
        """FFT of the disk kernel placed with its centre at the origin of the padded frame."""
        k = disk_kernel(radius)
        h = k.shape[0] // 2
        buf = np.zeros(self.full, np.float32)
        buf[: k.shape[0], : k.shape[1]] = k
        buf = np.roll(buf, (-h, -h), axis=(0, 1))
        return sfft.rfft2(buf, workers=1)

    def __call__(self, radius: float) -> np.ndarray:
        """The image blurred by a disk of ``radius`` (radius < 0.5 returns it unchanged)."""
        out = sfft.irfft2(self.spectrum * self.kernel_spectrum(radius), s=self.full, axes=(-2, -1), workers=1,
                          overwrite_x=True)
        p = self.pad
        return np.ascontiguousarray(out[:, p: p + self.shape[0], p: p + self.shape[1]], dtype=np.float32)


def disk_blur(image: np.ndarray, radius: float) -> np.ndarray:
    """Blur a channel-first image (C, H, W) by a disk of ``radius`` pixels (exact, FFT, reflect borders)."""
    image = np.asarray(image, np.float32)
    k = disk_kernel(radius)
    if k.shape[0] == 1:
        return image.copy()
    if k.shape[0] <= 5:  # small kernels: direct correlation is cheaper than an FFT (same symmetric borders)
        return np.stack([ndimage.correlate(c, k, mode="reflect") for c in image])
    return DiskBlur(image, radius)(radius)


def _pool(a: np.ndarray, f: int) -> np.ndarray:
    """Sum-pool the last two axes by ``f`` (sizes not divisible by ``f`` are zero-padded)."""
    h, w = a.shape[-2:]
    ph, pw = -h % f, -w % f
    if ph or pw:
        a = np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)])
    return a.reshape(*a.shape[:-2], (h + ph) // f, f, (w + pw) // f, f).sum(axis=-1).sum(axis=-2)


def _box_sum(a: np.ndarray, f: int) -> np.ndarray:
    """Per-channel sums over ``f`` x ``f`` blocks of a (C, H, W) float array (PIL's box reduction; partial
    blocks at the far edges are scaled up as if full, which keeps colour/weight ratios)."""
    return np.stack([np.asarray(Image.fromarray(np.ascontiguousarray(ch)).reduce(f)) for ch in a]) * float(f * f)


def resize_channels(a: np.ndarray, shape: tuple) -> np.ndarray:
    """Bilinear resize of each channel of a (C, h, w) float array to ``shape`` = (H, W) (PIL, pixel-centre
    aligned, antialiased when shrinking)."""
    out = np.empty((a.shape[0],) + tuple(shape), np.float32)
    for k, ch in enumerate(a):
        out[k] = np.asarray(Image.fromarray(np.ascontiguousarray(ch, np.float32)).resize(
            (shape[1], shape[0]), Image.BILINEAR))
    return out


def window_max(a: np.ndarray, size: int) -> np.ndarray:
    """Maximum over a ``size`` x ``size`` window centred on each pixel of a 2-D array (edges replicated),
    by window doubling: a few vectorised maxima instead of a per-pixel scan."""
    return _window_reduce(_window_reduce(a, size, 0, np.maximum), size, 1, np.maximum)


def window_min(a: np.ndarray, size: int) -> np.ndarray:
    """Minimum over a ``size`` x ``size`` window centred on each pixel (see :func:`window_max`)."""
    return _window_reduce(_window_reduce(a, size, 0, np.minimum), size, 1, np.minimum)


def _window_reduce(a: np.ndarray, size: int, axis: int, op) -> np.ndarray:
    if size <= 1:
        return a
    lo = size // 2  # scipy.ndimage's centring for even sizes
    pad = [(0, 0), (0, 0)]
    pad[axis] = (lo, size - 1 - lo)
    b = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    span = 1
    while span * 2 <= size:  # b[i] = op over b[i : i + span]
        m = b.shape[axis] - span
        sl_a = [slice(None)] * 2
        sl_b = [slice(None)] * 2
        sl_a[axis], sl_b[axis] = slice(0, m), slice(span, span + m)
        b = op(b[tuple(sl_a)], b[tuple(sl_b)])
        span *= 2
    rest = size - span  # combine two overlapping windows of length span
    sl_a = [slice(None)] * 2
    sl_b = [slice(None)] * 2
    sl_a[axis], sl_b[axis] = slice(0, n), slice(rest, rest + n)
    return op(b[tuple(sl_a)], b[tuple(sl_b)])


def fill_holes(image: np.ndarray, valid: np.ndarray, factor: int = 4) -> np.ndarray:
    """Fill the pixels of a channel-first image where ``valid`` is False with a smooth extrapolation of the
    valid pixels (a push-pull pyramid from 1/``factor`` resolution, computed around the holes only); valid
    pixels are kept exactly."""
    image = np.asarray(image, np.float32)
    if valid.all() or not valid.any():
        return image.copy()
    rows, cols = np.nonzero(~valid.all(axis=1))[0], np.nonzero(~valid.all(axis=0))[0]
    h, wd = valid.shape
    mh, mw = max(16, (rows[-1] - rows[0]) // 2), max(16, (cols[-1] - cols[0]) // 2)
    y0, y1 = max(0, rows[0] - mh), min(h, rows[-1] + 1 + mh)
    x0, x1 = max(0, cols[0] - mw), min(wd, cols[-1] + 1 + mw)
    out = image.copy()
    crop, ok = image[:, y0:y1, x0:x1], valid[y0:y1, x0:x1]
    w = ok.astype(np.float32)
    c, w = _box_sum(crop * w, factor), _box_sum(w[None], factor)[0]
    levels = [(c, w)]
    while not (w > 0).all() and min(w.shape) > 1:
        c, w = _pool(c, 2), _pool(w, 2)
        levels.append((c, w))
    est = c / np.maximum(w, 1e-6)
    for c_l, w_l in reversed(levels[:-1]):
        up = est.repeat(2, axis=-2).repeat(2, axis=-1)[..., : w_l.shape[0], : w_l.shape[1]]
        conf = np.minimum(w_l, 1.0)
        est = c_l / np.maximum(w_l, 1e-6) * conf + up * (1.0 - conf)
    full = resize_channels(est, (est.shape[-2] * factor, est.shape[-1] * factor))[:, : y1 - y0, : x1 - x0]
    out[:, y0:y1, x0:x1] = np.where(ok, crop, full)
    return out
