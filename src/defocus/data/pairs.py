"""In-focus labels from real photo pairs: a focus bracket (near / far) or an aperture bracket (wide / narrow).

Two captures of one scene from one viewpoint tell, pixel by pixel, which of them is sharper. This module turns
that comparison into a label per image: **in focus**, **blurred**, or **undetermined** (the pair cannot tell:
no texture, both about equally sharp, a boundary between the two, a misaligned part or border).

The steps (every threshold is a field of :class:`PairLabelConfig`):

1. **Align.** Phase correlation (weighted towards the low frequencies both images share) gives a shift per
   tile of a grid; a shift plus a common scale (the slight magnification change of refocusing) is fitted to the
   reliable tiles, refined to sub-pixel precision by Gauss-Newton on smoothed luma, and the second image is
   resampled onto the first. Tiles whose own remaining shift exceeds ``max_residual`` pixels, and the frame band
   the shift uncovers, are undetermined. A pair with no consistent shift raises :class:`PairError`.
2. **Equalise brightness.** A gain and offset fitted on heavily smoothed luma bring the second image to the
   first one's exposure (smoothing removes the difference that focus itself makes).
3. **Focus measure.** Gradient energy of the luma, averaged by a Gaussian window whose width is a fraction
   (``window``) of the image's short side, so that labels do not depend on the resolution.
4. **Compare with a margin.** One image is sharper where its focus measure exceeds the other's by the factor
   ``margin``; nearer to a ratio of 1 nothing is decided. Aperture pairs: the wide-aperture image is in focus
   where it is as sharp as the narrow-aperture one (ratio within ``tolerance``), blurred where the narrow one
   is sharper by ``margin``.
5. **Texture and sharpness floors.** Where even the sharper image has less RMS gradient than ``min_gradient``
   (8-bit grey levels per pixel, measured over half the window so that texture does not leak far into flat
   neighbours), nothing is decided. An image is only called in focus where it is sharp in absolute terms:
   re-blurring it by a 1-pixel Gaussian must divide its windowed gradient energy by at least ``floor``. On the
   kept MFIFB pairs the regions where an image is the sharper one have a median ratio of 2.1 (5th percentile of
   the images) to 8.6 (95th), the regions where it is the blurrier one 1.3 to 3.3; the default 2.0 rejects,
   for example, fine texture blurred by a 2-pixel Gaussian (median 1.4) and accepts it at 1 pixel (median 2.1).
   Where the sharper image fails the floor it is undetermined, and the other image, blurrier still, stays
   blurred. Aperture pairs use ``aperture_floor`` instead (see :class:`PairLabelConfig`).
6. **Clean up, conservatively.** Labelled regions smaller than ``min_region`` of the frame become undetermined;
   so does a band of ``boundary`` window widths on each side of every in-focus / blurred transition, where the
   window mixes both. Nothing undetermined is ever filled in.

Both images of a focus pair are labelled and are complementary by construction: where both are determined,
exactly one is in focus.
"""
from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image
from scipy import ndimage

from .. import imageio
from ..sheets import panel_sheet

log = logging.getLogger(__name__)

FOCUS, APERTURE = "focus", "aperture"
KINDS = (FOCUS, APERTURE)
UNDETERMINED_GREY = 128


class PairError(ValueError):
    """A pair cannot be labelled (unreadable or missing file, different sizes, no consistent alignment)."""


@dataclass(frozen=True)
class PairLabelConfig:
    """Every threshold of the labelling (defaults chosen by looking at the contact sheets of the MFIFB and
    indoor depth-from-defocus pairs; see docs/data.md and benchmarks/RESULTS_pairs.md for their stability).

    Attributes:
        window: standard deviation of the Gaussian averaging window, as a fraction of the short side.
        min_window: least window standard deviation in pixels.
        margin: focus-measure ratio above which one image is sharper than the other.
        tolerance: aperture pairs: the wide image is "as sharp" where narrow / wide is below this ratio.
        min_gradient: least RMS luma gradient (8-bit grey levels per pixel) of the sharper image to decide.
        floor: least re-blur ratio (gradient energy over that after a ``reblur``-pixel Gaussian) of an image
            called in focus.
        aperture_floor: the same floor for the wide image of an aperture pair. Being as sharp as a partner whose
            circle of confusion is several times smaller already bounds its blur, so this floor only rejects what
            is plainly blurred (JPEG photos downscaled by their camera often stay below 2 even where sharp).
        reblur: standard deviation (px) of the re-blurring Gaussian of the sharpness floor.
        boundary: half-width, in window standard deviations, of the undetermined band at label transitions.
        min_region: least area of a labelled region, as a fraction of the frame.
        grid: tiles per side for alignment.
        max_shift: largest shift accepted, as a fraction of the short side.
        max_residual: largest disagreement (px) of a tile with the fitted alignment before it is undetermined.
        min_peak: least phase-correlation peak (0-1) of a tile whose shift is trusted.
        min_tiles: least number of trusted tiles to fit shift and scale (fewer: a global shift only).
    """

    window: float = 0.02
    min_window: float = 2.0
    margin: float = 2.0
    tolerance: float = 1.3
    min_gradient: float = 1.5
    floor: float = 2.0
    aperture_floor: float = 1.5
    reblur: float = 1.0
    boundary: float = 2.0
    min_region: float = 0.002
    grid: int = 4
    max_shift: float = 0.05
    max_residual: float = 1.0
    min_peak: float = 0.15
    min_tiles: int = 6

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number, not negative, got {value}")
        if min(self.margin, self.tolerance, self.floor, self.aperture_floor) < 1:
            raise ValueError("margin, tolerance, floor and aperture_floor are ratios of at least 1")
        if self.min_region > 1:
            raise ValueError(f"min_region is a fraction of the frame (at most 1), got {self.min_region}")
        if self.grid < 1:
            raise ValueError(f"grid must be at least 1, got {self.grid}")

    def replace(self, **changes) -> "PairLabelConfig":
        """A copy with some fields changed."""
        return replace(self, **changes)

    def sigma(self, shape) -> float:
        """The averaging window's standard deviation in pixels for an image of ``shape`` (H, W)."""
        return max(self.min_window, self.window * min(shape[:2]))


@dataclass
class Alignment:
    """How the second image was brought onto the first: ``aligned(p) = second(p - shift - scale * (p - centre))``.

    ``valid`` is False where the alignment cannot be trusted (uncovered frame band, tiles off the fit)."""

    shift: tuple
    scale: float
    tiles_used: int
    max_residual: float
    valid: np.ndarray = field(repr=False)


@dataclass
class Label:
    """The label of one image: ``in_focus`` and ``undetermined`` boolean maps (never both True)."""

    in_focus: np.ndarray
    undetermined: np.ndarray

    @property
    def determined_fraction(self) -> float:
        """Share of pixels with a label."""
        return float(1.0 - self.undetermined.mean())

    @property
    def in_focus_fraction(self) -> float:
        """Share of the determined pixels labelled in focus (NaN when none is determined)."""
        det = ~self.undetermined
        return float(self.in_focus[det].mean()) if det.any() else math.nan

    def mask_u8(self) -> np.ndarray:
        """The mask as written: 255 in focus, 0 blurred or undetermined."""
        return np.where(self.in_focus & ~self.undetermined, 255, 0).astype(np.uint8)

    def ignore_u8(self) -> np.ndarray:
        """The ignore mask as written: 255 undetermined, 0 labelled."""
        return np.where(self.undetermined, 255, 0).astype(np.uint8)

    def preview_u8(self) -> np.ndarray:
        """White in focus, black blurred, grey undetermined (for contact sheets)."""
        out = self.mask_u8()
        out[self.undetermined] = UNDETERMINED_GREY
        return out


@dataclass
class PairLabels:
    """Labels of a pair: ``first`` / ``second`` (``second`` is None for an aperture pair, whose narrow image
    is not labelled), the alignment, and the shared comparison map (1 first sharper, -1 second sharper,
    0 undetermined; aperture: 1 wide as sharp, -1 wide blurred)."""

    kind: str
    first: Label
    second: Optional[Label]
    alignment: Alignment
    comparison: np.ndarray = field(repr=False)


# ----------------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------------

def read_rgb(path) -> np.ndarray:
    """An image file as uint8 HxWx3 as it is displayed (EXIF orientation applied; 16-bit scaled to 8 bits, not
    clipped; greyscale repeated; alpha composited as for prediction). Raises :class:`PairError`."""
    path = Path(path)
    if not path.is_file():
        raise PairError(f"{path}: file not found")
    try:
        rgb, _ = imageio.decode_rgb(path, max_pixels=None)
        return np.asarray(rgb)
    except Exception as e:  # any decoder failure: the file is unusable
        reason = e.reason if isinstance(e, imageio.ImageDecodeError) else f"{type(e).__name__}: {e}"
        raise PairError(f"{path}: cannot read image ({reason})") from None


def stored_upright(path) -> bool:
    """Whether the file's pixels are stored the way they are displayed (no EXIF rotation or mirroring), so that
    a reader that ignores EXIF, as the dataset loader does, sees what was labelled."""
    with Image.open(path) as im:
        if im.format == "PNG":  # its EXIF may follow the pixel data (any other format's is in its header)
            im.load()
        return imageio.exif_orientation(im) == 1 and not imageio.size_already_oriented(im)


def luma(img_u8: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of a uint8 HxWx3 image as float32 in [0, 1]."""
    img = np.asarray(img_u8, np.float32)
    if img.ndim == 2:
        return img / 255.0
    return (img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114) / 255.0


# ----------------------------------------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------------------------------------

def _hann2d(shape) -> np.ndarray:
    return np.outer(np.hanning(shape[0]), np.hanning(shape[1])).astype(np.float32)


def _subpixel(c: np.ndarray, peak: tuple, axis: int) -> float:
    """Parabolic offset of the correlation peak along ``axis`` (circular neighbours)."""
    n = c.shape[axis]
    lo, hi = list(peak), list(peak)
    lo[axis], hi[axis] = (peak[axis] - 1) % n, (peak[axis] + 1) % n
    a, b, d = c[tuple(lo)], c[tuple(peak)], c[tuple(hi)]
    den = a - 2 * b + d
    return 0.0 if den >= 0 else float(0.5 * (a - d) / den)


def phase_shift(ref: np.ndarray, mov: np.ndarray, cutoff: float = 0.1) -> tuple[np.ndarray, float]:
    """Shift ``d`` (dy, dx) with ``mov(p - d) ~ ref(p)`` by phase correlation, and the correlation peak height
    in [0, 1] (1: identical content; near 0: nothing in common). The whitened cross-spectrum is weighted by a
    Gaussian low-pass of ``cutoff`` cycles per pixel: the frequencies a focus difference removes from one image
    would otherwise drown the peak in noise."""
    win = _hann2d(ref.shape)
    a = (ref - ref.mean()) * win
    b = (mov - mov.mean()) * win
    cross = np.fft.rfft2(a) * np.conj(np.fft.rfft2(b))
    cross /= np.maximum(np.abs(cross), 1e-12)
    fy = np.fft.fftfreq(ref.shape[0])[:, None]
    fx = np.fft.rfftfreq(ref.shape[1])[None, :]
    weight = np.exp(-(fy * fy + fx * fx) / (2 * cutoff * cutoff))
    c = np.fft.irfft2(cross * weight, s=ref.shape)
    c /= np.fft.irfft2(weight.astype(complex), s=ref.shape)[0, 0]
    iy, ix = np.unravel_index(int(np.argmax(c)), c.shape)
    peak = float(c[iy, ix])
    dy = iy + _subpixel(c, (iy, ix), 0)
    dx = ix + _subpixel(c, (iy, ix), 1)
    h, w = ref.shape
    dy = dy - h if dy > h / 2 else dy
    dx = dx - w if dx > w / 2 else dx
    return np.array([dy, dx]), peak


def _tiles(shape, grid: int):
    h, w = shape
    ys = np.linspace(0, h, grid + 1).astype(int)
    xs = np.linspace(0, w, grid + 1).astype(int)
    for i in range(grid):
        for j in range(grid):
            yield slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1])


def _fit_similarity(points: np.ndarray, shifts: np.ndarray, centre: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares ``shift + scale * (p - centre)`` through the tile shifts."""
    rel = (points - centre).ravel()
    rows = np.zeros((2 * len(points), 3))
    rows[0::2, 0] = 1.0
    rows[1::2, 1] = 1.0
    rows[:, 2] = rel
    sol, *_ = np.linalg.lstsq(rows, shifts.ravel(), rcond=None)
    return sol[:2], float(sol[2])


def align(ref: np.ndarray, mov: np.ndarray, cfg: PairLabelConfig = PairLabelConfig()) -> tuple[np.ndarray, Alignment]:
    """Bring luma image ``mov`` onto ``ref`` (same shape): returns the resampled ``mov`` and the
    :class:`Alignment`. Raises :class:`PairError` when no consistent shift is found."""
    h, w = ref.shape
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    limit = max(2.0, cfg.max_shift * min(h, w))
    global_d, global_peak = phase_shift(ref, mov)
    points, shifts, tiles = [], [], []
    for sl in _tiles(ref.shape, cfg.grid):
        if min(sl[0].stop - sl[0].start, sl[1].stop - sl[1].start) < 16:
            continue
        d, peak = phase_shift(ref[sl], mov[sl])
        tiles.append((sl, d, peak))
        if peak >= cfg.min_peak and np.all(np.abs(d) <= limit):
            points.append([(sl[0].start + sl[0].stop - 1) / 2, (sl[1].start + sl[1].stop - 1) / 2])
            shifts.append(d)
    points, shifts = np.asarray(points).reshape(-1, 2), np.asarray(shifts).reshape(-1, 2)
    scale = 0.0
    shift = global_d
    used = 0
    if len(points) >= cfg.min_tiles:
        keep = np.linalg.norm(shifts - np.median(shifts, axis=0), axis=1) <= max(2.0, 0.01 * min(h, w))
        if keep.sum() >= cfg.min_tiles:
            shift, scale = _fit_similarity(points[keep], shifts[keep], centre)
            resid = np.linalg.norm(shifts[keep] - (shift + scale * (points[keep] - centre)), axis=1)
            keep_idx = np.flatnonzero(keep)[resid <= 2 * cfg.max_residual]
            if len(keep_idx) >= cfg.min_tiles:
                shift, scale = _fit_similarity(points[keep_idx], shifts[keep_idx], centre)
                used = len(keep_idx)
    if used == 0:
        if global_peak < cfg.min_peak or np.any(np.abs(global_d) > limit):
            raise PairError(f"the two images cannot be aligned (phase-correlation peak {global_peak:.3f}, "
                            f"shift {global_d[0]:+.1f}, {global_d[1]:+.1f} px): not one scene from one viewpoint?")
        shift, scale = global_d, 0.0
    if np.any(np.abs(shift) > limit) or abs(scale) * max(h, w) / 2 > limit:
        raise PairError(f"the two images are too far apart to align (shift {shift[0]:+.1f}, {shift[1]:+.1f} px, "
                        f"scale {1 + scale:.4f}; at most {limit:.0f} px)")
    # refine from the tile fit and from the global estimate; keep the better (tile shifts can be noisy where
    # both images are blurred)
    starts = [(shift, scale)] + ([(global_d, 0.0)] if np.all(np.abs(global_d) <= limit) else [])
    candidates = [refine_alignment(ref, mov, s, k, centre) for s, k in starts]
    shift, scale = min(candidates, key=lambda c: alignment_error(ref, mov, c[0], c[1], centre))
    aligned = warp(mov, shift, scale, centre)
    valid = np.ones(ref.shape, bool)
    corners = np.array([[0, 0], [0, w - 1], [h - 1, 0], [h - 1, w - 1]], float)
    reach = np.abs(shift + scale * (corners - centre)).max()
    band = int(math.ceil(reach)) + 1 if reach > 0.05 else 0
    if band:
        valid[:band], valid[-band:], valid[:, :band], valid[:, -band:] = False, False, False, False
    worst = 0.0
    for sl, d, peak in tiles:
        if peak < cfg.min_peak:
            continue  # no texture to check the tile against: the texture floor decides there
        tile_centre = np.array([(sl[0].stop - sl[0].start - 1) / 2, (sl[1].stop - sl[1].start - 1) / 2])
        local, _ = refine_alignment(ref[sl], aligned[sl], np.zeros(2), 0.0, tile_centre, with_scale=False)
        r = float(np.linalg.norm(local))
        worst = max(worst, r)
        if r > cfg.max_residual:
            valid[sl] = False
    return aligned, Alignment((float(shift[0]), float(shift[1])), float(scale), used, worst, valid)


def warp(mov: np.ndarray, shift, scale: float, centre) -> np.ndarray:
    """``mov`` resampled (bilinear) at ``p - shift - scale * (p - centre)`` for every pixel ``p``."""
    centre = np.asarray(centre, float)
    return ndimage.affine_transform(mov, np.full(2, 1.0 - scale), offset=scale * centre - np.asarray(shift),
                                    order=1, mode="nearest")


def alignment_error(ref: np.ndarray, mov: np.ndarray, shift, scale: float, centre, smooth: float = 1.5) -> float:
    """Mean squared difference of the smoothed images inside the frame's inner 88 % after warping ``mov``."""
    r = ndimage.gaussian_filter(ref, smooth)
    m = warp(ndimage.gaussian_filter(mov, smooth), shift, scale, centre)
    h, w = ref.shape
    inner = (slice(int(0.06 * h), int(0.94 * h) + 1), slice(int(0.06 * w), int(0.94 * w) + 1))
    return float(np.mean((r[inner] - m[inner]) ** 2))


def refine_alignment(ref: np.ndarray, mov: np.ndarray, shift, scale: float, centre, iterations: int = 4,
                     smooth: float = 1.5, with_scale: bool = True) -> tuple[np.ndarray, float]:
    """Gauss-Newton refinement of ``shift`` and ``scale`` on smoothed luma (smoothing evens out the focus
    difference; a symmetric blur does not move edges). Phase correlation alone is biased towards whole pixels.
    ``with_scale=False`` refines the shift only."""
    r = ndimage.gaussian_filter(ref, smooth)
    m = ndimage.gaussian_filter(mov, smooth)
    h, w = ref.shape
    step = max(1, int(math.sqrt(h * w / 60000)))
    yy, xx = np.mgrid[0:h:step, 0:w:step]
    ry, rx = yy - centre[0], xx - centre[1]
    inner = (yy > 0.06 * h) & (yy < 0.94 * h) & (xx > 0.06 * w) & (xx < 0.94 * w)
    shift = np.asarray(shift, float)
    for _ in range(iterations):
        cur = warp(m, shift, scale, centre)
        gy, gx = np.gradient(cur)
        gy, gx, cur_s = gy[::step, ::step], gx[::step, ::step], cur[::step, ::step]
        cols = [gy[inner], gx[inner]] + ([(gy * ry + gx * rx)[inner]] if with_scale else [])
        jac = np.stack(cols, axis=1)
        res = (cur_s - r[::step, ::step])[inner]
        delta, *_ = np.linalg.lstsq(jac, res, rcond=None)
        if not with_scale:
            delta = np.append(delta, 0.0)
        if not np.all(np.isfinite(delta)) or np.abs(delta[:2]).max() > 2.0:
            break
        shift, scale = shift + delta[:2], scale + float(delta[2])
        if np.abs(delta[:2]).max() < 0.01:
            break
    return shift, scale


def equalise(ref: np.ndarray, mov: np.ndarray, sigma: float) -> np.ndarray:
    """``gain * mov + offset`` fitted (least squares) so that its smoothed luma matches ``ref``'s."""
    a = ndimage.gaussian_filter(ref, sigma).ravel()
    b = ndimage.gaussian_filter(mov, sigma).ravel()
    var = float(b.var())
    if var < 1e-8:
        return mov + float(a.mean() - b.mean())
    gain = float(((a - a.mean()) * (b - b.mean())).mean() / var)
    gain = min(max(gain, 0.5), 2.0)
    return gain * mov + float(a.mean() - gain * b.mean())


# ----------------------------------------------------------------------------------------------------------------
# Focus measures
# ----------------------------------------------------------------------------------------------------------------

def gradient_energy(y: np.ndarray, sigma: float) -> np.ndarray:
    """Squared luma gradient (central differences) averaged by a Gaussian window of ``sigma`` pixels."""
    gy, gx = np.gradient(np.asarray(y, np.float32))
    return ndimage.gaussian_filter(gx * gx + gy * gy, sigma, mode="reflect")


def local_detail(a: np.ndarray, b: np.ndarray, sigma: float) -> np.ndarray:
    """RMS luma gradient of the more detailed of two images over half the averaging window."""
    half = max(1.0, 0.5 * sigma)
    return np.sqrt(np.maximum(gradient_energy(a, half), gradient_energy(b, half)))


def reblur_ratio(y: np.ndarray, sigma: float, reblur: float = 1.0) -> np.ndarray:
    """Windowed gradient energy of ``y`` over that of ``y`` re-blurred by a ``reblur``-pixel Gaussian: large
    where ``y`` is sharp (re-blurring removes detail), near 1 where it is already blurred."""
    e = gradient_energy(y, sigma)
    e_blur = gradient_energy(ndimage.gaussian_filter(y, reblur), sigma)
    return e / np.maximum(e_blur, 1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Clean-up
# ----------------------------------------------------------------------------------------------------------------

def _drop_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    if min_area <= 1 or not mask.any():
        return mask
    lab, n = ndimage.label(mask)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    keep = sizes >= min_area
    keep[0] = False
    return keep[lab]


def clean_comparison(comp: np.ndarray, band: float, min_area: int) -> np.ndarray:
    """Conservative clean-up of a comparison map (1 / -1 / 0): regions smaller than ``min_area`` pixels
    become 0, and so does every labelled pixel closer than ``band`` pixels to a pixel of the other label."""
    pos = _drop_small(comp == 1, min_area)
    neg = _drop_small(comp == -1, min_area)
    if band > 0 and pos.any() and neg.any():
        near_neg = ndimage.distance_transform_edt(~neg) < band
        near_pos = ndimage.distance_transform_edt(~pos) < band
        pos, neg = pos & ~near_neg, neg & ~near_pos
    pos = _drop_small(pos, min_area)
    neg = _drop_small(neg, min_area)
    return pos.astype(np.int8) - neg.astype(np.int8)


# ----------------------------------------------------------------------------------------------------------------
# Labelling
# ----------------------------------------------------------------------------------------------------------------

def _prepare(first: np.ndarray, second: np.ndarray, cfg: PairLabelConfig):
    if first.shape[:2] != second.shape[:2]:
        raise PairError(f"the two images differ in size ({first.shape[1]}x{first.shape[0]} vs "
                        f"{second.shape[1]}x{second.shape[0]})")
    if min(first.shape[:2]) < 32:
        raise PairError(f"images of {first.shape[1]}x{first.shape[0]} are too small to label (at least 32 px)")
    ya, yb = luma(first), luma(second)
    yb, alignment = align(ya, yb, cfg)
    sigma = cfg.sigma(ya.shape)
    yb = equalise(ya, yb, 4 * sigma)
    return ya, yb, alignment, sigma


def _decide(ratio_first: np.ndarray, detail: np.ndarray, valid: np.ndarray, up: float, down: float,
            cfg: PairLabelConfig, sigma: float) -> np.ndarray:
    comp = np.zeros(ratio_first.shape, np.int8)
    comp[ratio_first >= up] = 1
    comp[ratio_first <= down] = -1
    comp[(detail < cfg.min_gradient / 255.0) | ~valid] = 0
    min_area = int(round(cfg.min_region * comp.size))
    return clean_comparison(comp, cfg.boundary * sigma, min_area)


def label_focus_pair(first: np.ndarray, second: np.ndarray, cfg: PairLabelConfig = PairLabelConfig()) -> PairLabels:
    """Label both images of a focus bracket (uint8 HxWx3 or HxW arrays of one scene, focused at two distances).

    Returns :class:`PairLabels` whose ``first`` / ``second`` are complementary where both are determined."""
    ya, yb, alignment, sigma = _prepare(first, second, cfg)
    ea, eb = gradient_energy(ya, sigma), gradient_energy(yb, sigma)
    ratio = ea / np.maximum(eb, 1e-12)
    detail = local_detail(ya, yb, sigma)
    comp = _decide(ratio, detail, alignment.valid, cfg.margin, 1.0 / cfg.margin, cfg, sigma)
    sharp_a = reblur_ratio(ya, sigma, cfg.reblur) >= cfg.floor
    sharp_b = reblur_ratio(yb, sigma, cfg.reblur) >= cfg.floor
    a_focus, b_focus = (comp == 1) & sharp_a, (comp == -1) & sharp_b
    label_a = Label(a_focus, ~(a_focus | (comp == -1)))
    label_b = Label(b_focus, ~(b_focus | (comp == 1)))
    return PairLabels(FOCUS, label_a, label_b, alignment, comp)


def label_aperture_pair(wide: np.ndarray, narrow: np.ndarray,
                        cfg: PairLabelConfig = PairLabelConfig()) -> PairLabels:
    """Label the wide-aperture image of an aperture bracket (same scene, same focus, wide and narrow aperture):
    in focus where it is as sharp as the narrow-aperture image, blurred where that one is clearly sharper."""
    yw, yn, alignment, sigma = _prepare(wide, narrow, cfg)
    ew, en = gradient_energy(yw, sigma), gradient_energy(yn, sigma)
    ratio = ew / np.maximum(en, 1e-12)
    detail = local_detail(yw, yn, sigma)
    comp = _decide(ratio, detail, alignment.valid, 1.0 / cfg.tolerance, 1.0 / cfg.margin, cfg, sigma)
    sharp = reblur_ratio(yw, sigma, cfg.reblur) >= cfg.aperture_floor
    focus = (comp == 1) & sharp
    return PairLabels(APERTURE, Label(focus, ~(focus | (comp == -1))), None, alignment, comp)


def label_pair(first: np.ndarray, second: np.ndarray, kind: str = FOCUS,
               cfg: PairLabelConfig = PairLabelConfig()) -> PairLabels:
    """:func:`label_focus_pair` (``kind="focus"``) or :func:`label_aperture_pair` (``kind="aperture"``).
    Raises :class:`PairError` when no pixel of either image gets a label (e.g. the same photo twice)."""
    if kind == FOCUS:
        labels = label_focus_pair(first, second, cfg)
    elif kind == APERTURE:
        labels = label_aperture_pair(first, second, cfg)
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not any(lab.determined_fraction > 0 for lab in (labels.first, labels.second) if lab is not None):
        raise PairError("no pixel could be labelled: the two images differ nowhere in sharpness (the same photo "
                        "twice, or two shots at the same focus and aperture?)")
    return labels


def label_files(first, second, kind: str = FOCUS, cfg: PairLabelConfig = PairLabelConfig()):
    """Read two image files and label them: returns ``(first image, second image, PairLabels)``."""
    a, b = read_rgb(first), read_rgb(second)
    try:
        return a, b, label_pair(a, b, kind, cfg)
    except PairError as e:
        raise PairError(f"{first} + {second}: {e}") from None


# ----------------------------------------------------------------------------------------------------------------
# Agreement and contact sheets
# ----------------------------------------------------------------------------------------------------------------

def complementarity(labels: PairLabels) -> float:
    """Share of the pixels determined in both images of a focus pair where exactly one is in focus
    (1.0 by construction; NaN when no pixel is determined in both)."""
    if labels.second is None:
        raise ValueError("complementarity applies to focus pairs")
    both = ~labels.first.undetermined & ~labels.second.undetermined
    if not both.any():
        return math.nan
    return float(np.mean(labels.first.in_focus[both] != labels.second.in_focus[both]))


def overlay(image: np.ndarray, label: Label) -> np.ndarray:
    """The image with in-focus pixels tinted green, blurred ones red, undetermined ones left grey-dimmed."""
    img = np.asarray(image, np.float32)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    out = img.copy()
    focus = label.in_focus & ~label.undetermined
    blur = ~label.in_focus & ~label.undetermined
    out[focus] = 0.55 * img[focus] + 0.45 * np.array([40, 220, 40], np.float32)
    out[blur] = 0.55 * img[blur] + 0.45 * np.array([220, 40, 40], np.float32)
    grey = img[label.undetermined].mean(axis=-1, keepdims=True)
    out[label.undetermined] = 0.6 * grey + 0.4 * 128
    return np.clip(out, 0, 255).astype(np.uint8)


def contact_sheet(images, labels, height: int = 240) -> Image.Image:
    """One row per labelled image: image | mask (white in focus, black blurred, grey undetermined) | overlay,
    each scaled to ``height`` pixels."""
    rows = []
    for image, label in zip(images, labels):
        image = np.asarray(image)
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        rows.append([Image.fromarray(x) for x in (image, label.preview_u8(), overlay(image, label))])
    return panel_sheet(rows, height, nearest=(1,))


def pair_sheet(images, labels: PairLabels, height: int = 240) -> Image.Image:
    """The contact sheet of a labelled pair (both images of a focus pair, the wide image of an aperture pair)."""
    labs = [labels.first] if labels.second is None else [labels.first, labels.second]
    return contact_sheet(list(images)[:len(labs)], labs, height)


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------

def _save_png_atomic(arr_or_img, path: Path) -> None:
    img = arr_or_img if isinstance(arr_or_img, Image.Image) else Image.fromarray(arr_or_img)
    tmp = path.with_name(f".{path.name}.tmp")
    img.save(tmp, format="PNG")
    os.replace(tmp, path)


def _copy_atomic(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


@dataclass(frozen=True)
class LabelledImage:
    """One image to write: its source file, the stem it is stored under, and its label."""

    source: Path
    stem: str
    label: Label


def labelled_images(first, second, labels: PairLabels, stems=None) -> list[LabelledImage]:
    """The images of a labelled pair that carry a label (both of a focus pair; the wide one of an aperture pair),
    stored under ``stems`` (default: the files' own stems)."""
    first, second = Path(first), Path(second)
    stems = stems or (first.stem, second.stem)
    out = [LabelledImage(first, stems[0], labels.first)]
    if labels.second is not None:
        out.append(LabelledImage(second, stems[1], labels.second))
    return out


def write_labelled(items, out_dir, sheet: Optional[Image.Image] = None, sheet_name: Optional[str] = None,
                   overwrite: bool = True) -> list[Path]:
    """Write each :class:`LabelledImage` as ``out_dir/images/<stem><ext>`` (the source bytes, unchanged; a photo
    stored rotated, with an EXIF orientation, is written upright as ``<stem>.png``, so that its pixels line up with
    its masks for every reader), ``out_dir/masks/<stem>.png`` (255 = in focus) and ``out_dir/ignore/<stem>.png``
    (255 = undetermined), and an optional contact sheet as ``out_dir/sheets/<sheet_name>.png``. An image of the
    same stem with another extension, left by an earlier run, is removed (never one of the sources). Files are
    written atomically; returns them."""
    out_dir = Path(out_dir)
    written = []
    for sub in ("images", "masks", "ignore") + (("sheets",) if sheet is not None else ()):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    sources = {item.source.resolve() for item in items}
    for item in items:
        upright = stored_upright(item.source)
        img_dst = out_dir / "images" / f"{item.stem}{item.source.suffix if upright else '.png'}"
        if not overwrite and img_dst.exists():
            raise PairError(f"{img_dst}: exists (use overwrite)")
        if img_dst.exists() and img_dst.resolve() in sources:
            if not upright:
                raise PairError(f"{img_dst}: would replace a source photo with its upright copy; write to "
                                "another folder")
        elif upright:
            _copy_atomic(item.source, img_dst)
        else:
            _save_png_atomic(read_rgb(item.source), img_dst)
        for suffix in imageio.IMAGE_SUFFIXES | {s.upper() for s in imageio.IMAGE_SUFFIXES}:
            old = out_dir / "images" / f"{item.stem}{suffix}"  # by name: the folder may hold thousands
            if old.is_file() and not old.samefile(img_dst) and old.resolve() not in sources:
                old.unlink()
        mask_dst, ignore_dst = out_dir / "masks" / f"{item.stem}.png", out_dir / "ignore" / f"{item.stem}.png"
        _save_png_atomic(item.label.mask_u8(), mask_dst)
        _save_png_atomic(item.label.ignore_u8(), ignore_dst)
        written += [img_dst, mask_dst, ignore_dst]
    if sheet is not None:
        dst = out_dir / "sheets" / f"{sheet_name or items[0].stem}.png"
        _save_png_atomic(sheet, dst)
        written.append(dst)
    return written


def read_ignore(path) -> np.ndarray:
    """An ignore mask file as a bool array, True = undetermined (white), read as every mask is
    (:func:`defocus.maps.read_mask`: binarised at half scale; 0/1, 16-bit and alpha-channel masks too)."""
    from ..maps import read_mask

    return read_mask(path)
