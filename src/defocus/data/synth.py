"""Synthetic defocus: render realistic depth-of-field from a sharp photo and a foreground mask.

The scene has two depth layers: the masked object in front and the background behind it, optionally with a
depth ramp (a ground plane receding upwards). A thin lens gives every depth a circle of confusion (CoC) whose
radius is linear in inverse depth: ``r = K * |1/d_focus - 1/d|``. Each layer is blurred in linear light with
an exact disk (pillbox) kernel of its radius; the background is first extended behind the object (so no
object colour bleeds into it: a sharp subject leaves no halo) and the object is composited over it with its
*blurred* alpha (so a blurred foreground gets soft, see-through edges, as with a real lens). Highlights are
boosted before blurring so they spread into bokeh disks; sensor noise and JPEG follow.

Scene cases (``SynthConfig`` probabilities):

- ``near``: focus on the object; background blurred. The main case (like CUHK and DUT).
- ``far``: focus on the background; object blurred. Only when the background passes the sharpness test
  everywhere (see :mod:`defocus.data.sharpness`); otherwise the sample falls back to ``near`` or ``full``.
- ``wide``: everything in focus, label all ones. Only when the whole frame passes the sharpness test.
- ``full``: everything defocused, label all zeros.

Background swap (``bg_swap_prob``, off by default): a defocused background may be taken from another source
photo (a random crop of its whole frame, its own objects included) instead of the object's own surroundings.
Salient-object photos mostly have plain or already soft backgrounds; a swapped one puts textured scenes and
blurred object-like distractors behind the subject.

Pasted objects (``paste_prob``, off by default): in the near and full cases, a few more masked objects from other
source photos are placed between the background and the subject, each at its own depth: at the focal depth
(rendered in focus, only if it passes the sharpness test) or defocused by its own radius. A scene then holds
several in-focus objects and blurred objects of the same kind, as real shallow depth-of-field photos often do.

Ground truth follows the physics: a pixel is in focus when the light reaching it comes mostly (>= 50 %) from
layers whose CoC radius is below ``focus_threshold``, and a layer is only ever rendered in focus when the
source is verified sharp there. Blurred radii (``blur_radius``) and in-focus radii (``sharp_radius``) are kept
apart by a gap, so no sample sits near the threshold.
"""
from __future__ import annotations

import io
import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from tqdm import tqdm

from . import depth_layouts, procedural
from .files import list_images, pair_by_stem
from .lens import DiskBlur, disk_blur, fill_holes, linear_to_srgb, resize_channels, srgb_to_linear, window_max
from .masks import in_focus_to_pil
from .sharpness import SharpnessTest, edge_maps, luma, region_is_sharp, region_is_sharp_everywhere

log = logging.getLogger(__name__)

CASES = ("near", "far", "wide", "full")


@dataclass
class SynthConfig:
    """Every knob of the renderer. Radii are in pixels of the rendered frame, whose short side is ``size``.

    Scene mix: ``p_near``, ``p_far``, ``p_wide``, ``p_full`` (normalised to sum to 1).
    Lens: ``blur_radius`` (min, max) CoC radius of a defocused layer, drawn log-uniformly; ``sharp_radius``
    (min, max) residual CoC of an in-focus layer; ``focus_threshold`` the CoC radius below which a layer is
    in focus (must lie in the gap between the two ranges). ``ramp_prob``: chance that a blurred background
    recedes (radius linear in inverse depth, its nearest part's radius a ``ramp_ratio`` fraction of the way
    from ``blur_radius[0]`` to the farthest part's);
    ``ramp_levels``: blur levels interpolated for a receding background.
    Framing: ``aspect``: "squash" renders at the source's aspect (short side ``size``, long side at most
    ``max_aspect`` x) and squashes to ``size`` x ``size`` like the benchmark data (elliptical bokeh), "square"
    resizes the source to ``size`` x ``size`` first; ``crop_prob``/``crop_scale``: random crop keeping the
    object's centre (side fraction of the source); ``max_upscale``: largest enlargement of the source allowed.
    Bokeh: ``highlight_prob``, ``highlight_threshold`` (linear luminance), ``highlight_gain`` (min, max)
    boost of near-clipped highlights of a defocused layer; ``bokeh_prob``, ``bokeh_points`` (min, max) point
    lights added to a defocused background, each adding ``bokeh_strength`` (min, max) linear intensity over its
    disk. Sensor: ``noise_prob``, ``noise_shot`` (min, max; log-uniform) signal-dependent variance factor and
    ``noise_read`` (min, max) std, both in linear light; ``jpeg_prob``, ``jpeg_quality`` (min, max).
    Verification: ``sharpness`` (the test), ``verify_subject`` (the object must pass it to be labelled in focus;
    otherwise the sample is rendered fully defocused). ``mask_min_area``: mask specks and pin-holes smaller
    than this (pixels of the rendered frame) are removed first. ``redraws``: when a source cannot support the
    drawn case (it fails verification), the dataset tries up to this many other sources before accepting the
    fallback, so the rendered mix stays close to the configured one. ``bg_swap_prob``: chance that a
    defocused background comes from another source photo (``bg_swap_scale`` (min, max): side fraction of its
    random crop). ``paste_prob``: chance that a near or full scene gets ``paste_count`` (min, max) extra objects
    from other source photos, each scaled so its longer side is a ``paste_scale`` (min, max) fraction of the
    frame's short side and placed at random behind the subject; in the near case each is at the focal depth
    with probability ``paste_sharp_prob``.
    Depth-aware scenes (:func:`render_depth_sample`, off by default): ``depth_prob`` chance that a sample is a
    scene with a per-pixel depth map instead of one of the layered cases; ``depth_layouts`` probabilities of the
    ground / table / wall layouts and ``depth_focus`` of the focal distance on the surface / subject / in front /
    behind (see :mod:`defocus.data.depth_layouts`); ``depth_float_prob`` chance that the subject floats in front
    of the surface instead of standing on it; ``depth_blur`` (min, max) largest CoC radius of the scene's
    background and subject, drawn log-uniformly (it sets the aperture constant A); ``depth_band`` (in, out): a
    pixel is in focus below ``in`` px of CoC (and verified sharp), out of focus above ``out``, undetermined (ignored
    by the losses) in between; ``depth_occluder_prob`` chance of a foreground occluder (another source's object,
    longer side a ``depth_occluder_scale`` fraction of the short side, entering from the frame's edge) nearer than
    everything else. Real depth photos (:func:`render_depth_photo`, used when the dataset is given photos
    with depth maps): ``depth_photo_prob`` share of the depth-aware scenes drawn from them instead of the procedural
    layouts, ``depth_photo_crop`` (min, max) side fraction of their random framing crop, ``depth_photo_focus``
    (min, max) range of the quantile of the frame's measured depths at which the focal distance is put,
    ``depth_photo_median`` side of the median filter that removes isolated wrong readings from their depth maps
    (1 = none)."""

    size: Optional[int] = 320
    p_near: float = 0.65
    p_far: float = 0.10
    p_wide: float = 0.10
    p_full: float = 0.15
    blur_radius: tuple = (2.0, 12.0)
    sharp_radius: tuple = (0.0, 0.6)
    focus_threshold: float = 1.0
    ramp_prob: float = 0.6
    ramp_ratio: tuple = (0.0, 0.8)
    ramp_levels: int = 3
    aspect: str = "squash"
    max_aspect: float = 1.6
    crop_prob: float = 0.7
    crop_scale: tuple = (0.4, 1.0)
    max_upscale: float = 1.6
    highlight_prob: float = 0.7
    highlight_threshold: float = 0.75
    highlight_gain: tuple = (1.5, 6.0)
    bokeh_prob: float = 0.2
    bokeh_points: tuple = (2, 20)
    bokeh_strength: tuple = (0.05, 0.6)
    noise_prob: float = 0.8
    noise_shot: tuple = (1e-5, 5e-4)
    noise_read: tuple = (0.0, 6e-4)
    jpeg_prob: float = 0.7
    jpeg_quality: tuple = (75, 95)
    sharpness: SharpnessTest = field(default_factory=SharpnessTest)
    verify_subject: bool = True
    mask_min_area: int = 100
    redraws: int = 3
    bg_swap_prob: float = 0.0
    bg_swap_scale: tuple = (0.5, 1.0)
    paste_prob: float = 0.0
    paste_count: tuple = (1, 3)
    paste_scale: tuple = (0.2, 0.6)
    paste_sharp_prob: float = 0.5
    depth_prob: float = 0.0
    depth_layouts: tuple = (0.5, 0.25, 0.25)
    depth_focus: tuple = (0.45, 0.25, 0.15, 0.15)
    depth_float_prob: float = 0.3
    depth_blur: tuple = (1.5, 16.0)
    depth_band: tuple = (1.0, 1.6)
    depth_occluder_prob: float = 0.3
    depth_occluder_scale: tuple = (0.3, 0.8)
    depth_photo_prob: float = 0.0
    depth_photo_crop: tuple = (0.7, 1.0)
    depth_photo_focus: tuple = (0.05, 0.95)
    depth_photo_median: int = 5

    def __post_init__(self):
        self._check_shapes_and_ranges()
        if not self.sharp_radius[1] < self.focus_threshold <= self.blur_radius[0]:
            raise ValueError("focus_threshold must lie between sharp_radius[1] and blur_radius[0] "
                             f"(got {self.sharp_radius}, {self.focus_threshold}, {self.blur_radius})")
        if self.aspect not in ("squash", "square"):
            raise ValueError(f"aspect must be 'squash' or 'square', got {self.aspect!r}")
        if min(self.p_near, self.p_far, self.p_wide, self.p_full) < 0 or self.case_probs().sum() == 0:
            raise ValueError("case probabilities must be >= 0 and not all 0")
        if not 0.0 <= self.bg_swap_prob <= 1.0 or not 0.0 < self.bg_swap_scale[0] <= self.bg_swap_scale[1] <= 1.0:
            raise ValueError(f"bg_swap_prob must lie in [0, 1] and bg_swap_scale in (0, 1], got "
                             f"{self.bg_swap_prob}, {self.bg_swap_scale}")
        if not (0.0 <= self.paste_prob <= 1.0 and 0.0 <= self.paste_sharp_prob <= 1.0
                and 1 <= self.paste_count[0] <= self.paste_count[1] and 0.0 < self.paste_scale[0] <= self.paste_scale[1]):
            raise ValueError(f"paste_prob and paste_sharp_prob must lie in [0, 1], paste_count be 1 <= min <= max "
                             f"and paste_scale 0 < min <= max, got {self.paste_prob}, {self.paste_sharp_prob}, "
                             f"{self.paste_count}, {self.paste_scale}")

        if not (0.0 <= self.depth_prob <= 1.0 and 0.0 <= self.depth_occluder_prob <= 1.0
                and 0.0 < self.depth_band[0] <= self.depth_band[1] and 0.0 < self.depth_blur[0] <= self.depth_blur[1]):
            raise ValueError(f"depth_prob and depth_occluder_prob must lie in [0, 1], depth_band and depth_blur be "
                             f"0 < min <= max, got {self.depth_prob}, {self.depth_occluder_prob}, {self.depth_band}, "
                             f"{self.depth_blur}")
        if not (0.0 <= self.depth_photo_prob <= 1.0 and 0.0 < self.depth_photo_crop[0] <= self.depth_photo_crop[1] <= 1.0
                and 0.0 <= self.depth_photo_focus[0] <= self.depth_photo_focus[1] <= 1.0 and self.depth_photo_median >= 1):
            raise ValueError(f"depth_photo_prob must lie in [0, 1], depth_photo_crop in (0, 1] and depth_photo_focus in "
                             f"[0, 1] (min <= max), depth_photo_median be >= 1, got {self.depth_photo_prob}, "
                             f"{self.depth_photo_crop}, {self.depth_photo_focus}, {self.depth_photo_median}")

    def _check_shapes_and_ranges(self) -> None:
        """Every tuple has its default's length, two-value tuples are ranges ``0 <= min <= max``, probabilities lie
        in [0, 1] and no number is negative; a one-line ``ValueError`` names the field otherwise."""
        for f in fields(self):
            value, default = getattr(self, f.name), f.default
            if isinstance(default, tuple):
                if not isinstance(value, tuple) or len(value) != len(default):
                    raise ValueError(f"{f.name} needs {len(default)} numbers, got {value!r}")
                if min(value) < 0:
                    raise ValueError(f"{f.name} must not hold negative numbers, got {value}")
                if len(default) == 2 and value[0] > value[1]:
                    raise ValueError(f"{f.name} is a range (min, max) with min <= max, got {value}")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                if value < 0 or (f.name.endswith("_prob") and value > 1):
                    raise ValueError(f"{f.name} must be " + ("a probability in [0, 1]" if f.name.endswith("_prob")
                                                           else "at least 0") + f", got {value}")
        if self.max_upscale <= 0 or self.ramp_levels < 1 or (self.size is not None and self.size < 1):
            raise ValueError(f"max_upscale must be positive and ramp_levels and size at least 1, got "
                             f"{self.max_upscale}, {self.ramp_levels}, {self.size}")
        if self.noise_shot[0] <= 0:
            raise ValueError(f"noise_shot is a log-uniform range with min > 0, got {self.noise_shot}")
        if not 1 <= self.jpeg_quality[0] <= self.jpeg_quality[1] <= 100:
            raise ValueError(f"jpeg_quality is a range within [1, 100], got {self.jpeg_quality}")

    def case_probs(self) -> np.ndarray:
        """The scene-case probabilities (near, far, wide, full), normalised."""
        p = np.array([self.p_near, self.p_far, self.p_wide, self.p_full], np.float64)
        return p / p.sum() if p.sum() > 0 else p


def config_from_dict(values: dict, key: str = "cfg") -> SynthConfig:
    """A :class:`SynthConfig` from plain values (e.g. parsed YAML): lists become tuples of the defaults' number
    types, ``sharpness`` may be a dict of :class:`~defocus.data.sharpness.SharpnessTest` fields. Unknown keys and
    unusable values raise a one-line ``ValueError`` that starts with the key (``key`` names ``values``)."""
    from ..config import parse_dataclass

    return parse_dataclass(SynthConfig, values, key)


def _loguniform(rng, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi)))) if hi > lo else float(lo)


def _frame_box(box: tuple, cfg: SynthConfig) -> tuple[int, int]:
    """The render canvas size (W, H) for a crop ``box`` (x0, y0, x1, y1) of the source: short side ``cfg.size``, the aspect kept
    (at most ``cfg.max_aspect``) or square (``cfg.aspect``), the crop's own size when ``cfg.size`` is None."""
    bw, bh = box[2] - box[0], box[3] - box[1]
    if cfg.size is None:
        return bw, bh
    if cfg.aspect == "square":
        return cfg.size, cfg.size
    a = min(max(bw, bh) / min(bw, bh), cfg.max_aspect)
    long = int(round(cfg.size * a))
    return (long, cfg.size) if bw >= bh else (cfg.size, long)


def _frame(image: Image.Image, mask: Image.Image, rng, cfg: SynthConfig) -> tuple[np.ndarray, np.ndarray]:
    """Crop (optionally) and resize the source to the render canvas: (uint8 HxWx3, alpha float32 HxW)."""
    w, h = image.size
    box = (0, 0, w, h)
    if cfg.size is not None and rng.random() < cfg.crop_prob:
        fg = np.asarray(mask) >= 128
        if fg.any():
            s = rng.uniform(*cfg.crop_scale)
            s = max(s, cfg.size / (cfg.max_upscale * min(w, h)))
            cw, ch = int(round(w * min(s, 1.0))), int(round(h * min(s, 1.0)))
            ys, xs = np.nonzero(fg)
            cy, cx = ys.mean(), xs.mean()
            x0 = int(np.clip(rng.uniform(cx - cw, cx), 0, w - cw))
            y0 = int(np.clip(rng.uniform(cy - ch, cy), 0, h - ch))
            inside = fg[y0: y0 + ch, x0: x0 + cw].sum()
            if inside >= 0.6 * fg.sum():
                box = (x0, y0, x0 + cw, y0 + ch)
    out = _frame_box(box, cfg)
    img = image.resize(out, Image.BILINEAR, box=box)
    alpha = np.asarray(mask.resize(out, Image.BILINEAR, box=box), np.float32) / 255.0
    return np.asarray(img), alpha


def _clean_mask(alpha: np.ndarray, min_area: int) -> np.ndarray:
    """Drop foreground specks and fill pin-holes smaller than ``min_area`` pixels (matting artefacts that
    would otherwise show the blurred background through a sharp subject)."""
    if min_area <= 0:
        return alpha
    fg = alpha >= 0.5
    alpha = alpha.copy()
    for value, region in ((0.0, fg), (1.0, ~fg)):
        lab, n = ndimage.label(region)
        if n <= 1:
            continue
        area = np.bincount(lab.ravel())
        small = area < min_area
        small[0] = False
        if value == 1.0:  # a background region touching the frame is not a hole
            edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
            small[edge] = False
        if small.any():
            alpha[small[lab]] = value
    return alpha


def draw_case(rng, cfg: SynthConfig) -> str:
    """Draw a scene case (near, far, wide, full) with the configured probabilities."""
    return CASES[int(rng.choice(4, p=cfg.case_probs()))]


def _choose_case(rng, cfg: SynthConfig, sharp_background_ok: bool, checks: Callable,
                 drawn: Optional[str] = None) -> tuple[str, str]:
    """Draw the scene case (unless given), then fall back to what the source supports: (drawn, rendered)."""
    if drawn is None:
        drawn = draw_case(rng, cfg)
    elif drawn not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {drawn!r}")
    case = drawn
    if case in ("far", "wide") and not sharp_background_ok:
        case = "near"
    if case == "wide" and not checks("frame"):
        case = "near"
    if case == "far" and not checks("background"):
        case = "near"
    if case == "near" and cfg.verify_subject and not checks("subject"):
        case = "full"
    return drawn, case


def _ramp(shape: tuple, rng) -> np.ndarray:
    """A depth ramp t in [0, 1] (0 = nearest) across the frame: mostly a ground plane receding upwards."""
    h, w = shape
    theta = rng.normal(math.pi / 2, 0.35) if rng.random() < 0.75 else rng.uniform(0, 2 * math.pi)
    # depth grows along the image direction (cos theta, -sin theta): upwards for theta = pi/2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    proj = (xx - w / 2) * math.cos(theta) - (yy - h / 2) * math.sin(theta)
    t = (proj - proj.min()) / max(float(np.ptp(proj)), 1e-6)
    return (t ** rng.uniform(0.6, 1.8)).astype(np.float32)


def _boost_highlights(lin: np.ndarray, rng, cfg: SynthConfig) -> np.ndarray:
    """Scale up near-clipped highlights of a layer to be blurred (LDR sources clip real highlights)."""
    if rng.random() >= cfg.highlight_prob:
        return lin
    y = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    t = cfg.highlight_threshold
    ramp = np.clip((y - t) / (1.0 - t), 0.0, 1.0) ** 2
    if not ramp.any():
        return lin
    return lin * (1.0 + (rng.uniform(*cfg.highlight_gain) - 1.0) * ramp)[None]


def _add_point_lights(layer: np.ndarray, where: np.ndarray, radius_at: Callable, rng, cfg: SynthConfig) -> None:
    """Add point lights (future bokeh disks) in place, at the brightest tenth of the pixels of ``where``
    (where real lights and specular glints are), brighter ones more likely."""
    ys, xs = np.nonzero(where)
    if len(ys) == 0:
        return
    n = int(rng.integers(cfg.bokeh_points[0], cfg.bokeh_points[1] + 1))
    lum = layer[1, ys, xs]
    top = lum >= np.percentile(lum, 90)
    ys, xs, lum = ys[top], xs[top], lum[top] + 0.02
    p = lum * lum
    idx = rng.choice(len(ys), size=n, p=p / p.sum())
    tint = rng.uniform(0.55, 1.0, (n, 3))
    tint[np.arange(n), rng.integers(0, 3, n)] = 1.0
    for k in range(n):
        y, x = ys[idx[k]], xs[idx[k]]
        r = radius_at(y, x)
        layer[:, y, x] += tint[k] * rng.uniform(*cfg.bokeh_strength) * math.pi * r * r


def _fit_background(image: Image.Image, shape: tuple, rng, scale: tuple) -> np.ndarray:
    """A random crop of ``image`` (side fraction drawn from ``scale``) resized to ``shape`` = (H, W): uint8."""
    w, h = image.size
    s = rng.uniform(*scale)
    cw, ch = max(1, int(round(w * s))), max(1, int(round(h * s)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = image.convert("RGB").resize((shape[1], shape[0]), Image.BILINEAR, box=(x0, y0, x0 + cw, y0 + ch))
    return np.asarray(out)


def _place_object(image: Image.Image, mask: Image.Image, shape: tuple, rng, scale: tuple):
    """Cut the masked object out of ``image`` (its mask's bounding box), scale its longer side to a ``scale``
    fraction of the canvas's short side and place it at a random position on a canvas of ``shape`` = (H, W)
    (up to a third of it may fall outside). Returns (uint8 HxWx3 colour, float32 HxW alpha), or None when the
    mask is empty."""
    m = np.asarray(mask.convert("L"))
    ys, xs = np.nonzero(m >= 128)
    if len(ys) == 0:
        return None
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    h, w = shape
    bw, bh = box[2] - box[0], box[3] - box[1]
    k = rng.uniform(*scale) * min(h, w) / max(bw, bh)
    ow, oh = max(1, min(w, int(round(bw * k)))), max(1, min(h, int(round(bh * k))))
    obj = np.asarray(image.convert("RGB").resize((ow, oh), Image.BILINEAR, box=box))
    a = np.asarray(mask.convert("L").resize((ow, oh), Image.BILINEAR, box=box), np.float32) / 255.0
    x0 = int(rng.integers(-(ow // 3), w - 2 * ow // 3 + 1))
    y0 = int(rng.integers(-(oh // 3), h - 2 * oh // 3 + 1))
    colour = np.zeros((h, w, 3), np.uint8)
    alpha = np.zeros((h, w), np.float32)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + ow, w), min(y0 + oh, h)
    colour[cy0:cy1, cx0:cx1] = obj[cy0 - y0: cy1 - y0, cx0 - x0: cx1 - x0]
    alpha[cy0:cy1, cx0:cx1] = a[cy0 - y0: cy1 - y0, cx0 - x0: cx1 - x0]
    return colour, alpha


def _interior(fg: np.ndarray) -> np.ndarray:
    """An object's interior (its silhouette eroded by 2 px): the region a sharpness test may judge it by, since
    the silhouette against whatever lies behind proves nothing."""
    return ~window_max(~fg, 5)


def _object_is_sharp(colour: np.ndarray, alpha: np.ndarray, test: SharpnessTest) -> bool:
    """Whether a placed object's interior passes the sharpness test at its rendered scale (edge maps over its
    bounding box only; outside it the canvas is empty)."""
    ys, xs = np.nonzero(alpha >= 0.5)
    if len(ys) == 0:
        return False
    m = test.window
    box = np.s_[max(ys.min() - m, 0): ys.max() + m + 1, max(xs.min() - m, 0): xs.max() + m + 1]
    ratio, contrast = edge_maps(luma(colour[box]), test.window)
    return region_is_sharp(ratio, contrast, _interior(alpha[box] >= 0.5), test)


def _blur_background(bg: np.ndarray, r_near: float, r_far: float, t: Optional[np.ndarray], levels: int) -> np.ndarray:
    """Blur the background by a per-pixel radius r_near + (r_far - r_near) * t, interpolating between exact
    disk blurs at a few radii (one shared forward FFT)."""
    span = r_far - r_near
    if t is None or span < 0.5 or levels < 2:
        return disk_blur(bg, r_far)
    levels = min(levels, 2 if span < 3.0 else levels)
    radii = np.linspace(r_near, r_far, levels)
    blur = DiskBlur(bg, r_far)
    u = t * (levels - 1)
    out = np.zeros_like(bg)
    for k, r in enumerate(radii):
        wgt = np.clip(1.0 - np.abs(u - k), 0.0, 1.0)
        if wgt.any():
            out += blur(r) * wgt[None]
    return out


def _add_noise(lin: np.ndarray, rng, cfg: SynthConfig) -> tuple[float, float]:
    if rng.random() >= cfg.noise_prob:
        return 0.0, 0.0
    shot = _loguniform(rng, *cfg.noise_shot)
    read = float(rng.uniform(*cfg.noise_read))
    std = np.sqrt(np.clip(lin, 0, 1) * shot + read * read)
    lin += std * rng.standard_normal(lin.shape, dtype=np.float32)
    return shot, read


class _SharpnessChecks:
    """The sharpness tests of a framed source's regions, run on first use and remembered: ``"subject"`` (the
    object's interior), ``"background"`` (everything 4 px away from the object) and ``"frame"`` (everywhere,
    subject included)."""

    def __init__(self, img: np.ndarray, fg: np.ndarray, test: SharpnessTest):
        self.img, self.fg, self.test = img, fg, test
        self._maps = None
        self.results: dict = {}

    def __call__(self, what: str) -> bool:
        if what not in self.results:
            self.results[what] = self._run(what)
        return self.results[what]

    def maps(self) -> tuple[np.ndarray, np.ndarray]:
        """The frame's (steepness ratio, contrast) edge maps, computed once."""
        if self._maps is None:
            self._maps = edge_maps(luma(self.img), self.test.window)
        return self._maps

    def _run(self, what: str) -> bool:
        ratio, contrast = self.maps()
        if what == "subject":
            return region_is_sharp(ratio, contrast, _interior(self.fg), self.test)
        if what == "background":
            return region_is_sharp_everywhere(ratio, contrast, ~window_max(self.fg, 9), self.test)
        return region_is_sharp_everywhere(ratio, contrast, np.ones_like(self.fg), self.test) and self("subject")


@dataclass
class _Radii:
    """CoC radii of a scene: the subject's (``fg``) and the background's, from ``near`` (where the depth ramp
    ``t`` is 0) to ``far``; ``t`` is None for a flat background (``near == far``)."""

    fg: float
    near: float
    far: float
    t: Optional[np.ndarray] = None

    def at(self, y: int, x: int) -> float:
        """The background's radius at pixel (y, x)."""
        return self.near + (self.far - self.near) * self.t[y, x] if self.t is not None else self.far


def _blur_radius(rng, cfg: SynthConfig) -> float:
    return _loguniform(rng, *cfg.blur_radius)


def _sharp_radius(rng, cfg: SynthConfig) -> float:
    return float(rng.uniform(*cfg.sharp_radius))


def _draw_radii(rng, cfg: SynthConfig, fg_blurred: bool, bg_blurred: bool, shape: tuple) -> _Radii:
    """The subject's and the background's radii, and a receding background (``cfg.ramp_prob``) when it is
    blurred."""
    r_fg = _blur_radius(rng, cfg) if fg_blurred else _sharp_radius(rng, cfg)
    r_far = _blur_radius(rng, cfg) if bg_blurred else _sharp_radius(rng, cfg)
    if bg_blurred and rng.random() < cfg.ramp_prob:
        r_near = cfg.blur_radius[0] + (r_far - cfg.blur_radius[0]) * rng.uniform(*cfg.ramp_ratio)
        return _Radii(r_fg, r_near, r_far, _ramp(shape, rng))
    return _Radii(r_fg, r_far, r_far)


def _background_layer(lin: np.ndarray, a_fg: np.ndarray, case: str, radii: _Radii, rng, cfg: SynthConfig,
                      background) -> tuple[np.ndarray, bool]:
    """The background rendered through the lens (linear light), and whether it was swapped for ``background``.
    Its own version is extended behind the object from background pixels only, so no object colour bleeds in."""
    bg_blurred = case in ("near", "full")
    valid_bg = ~window_max(a_fg > 0.02, 3)
    swapped = background is not None and bg_blurred
    if swapped:
        bg_src = background if isinstance(background, Image.Image) else Image.fromarray(np.asarray(background))
        bg = srgb_to_linear(_fit_background(bg_src, a_fg.shape, rng, cfg.bg_swap_scale))
        valid_bg = np.ones_like(valid_bg)
    else:
        bg = fill_holes(lin, valid_bg) if case != "wide" else lin.copy()
    if bg_blurred:
        bg = _boost_highlights(bg, rng, cfg)
        if rng.random() < cfg.bokeh_prob:
            _add_point_lights(bg, valid_bg, radii.at, rng, cfg)
    return _blur_background(bg, radii.near, radii.far, radii.t, cfg.ramp_levels), swapped


class _Canvas:
    """The light rendered so far (linear RGB, 3xHxW) and, at every pixel, the share of it that comes from
    in-focus layers (the ground truth is where that share is at least one half)."""

    def __init__(self, light: np.ndarray, in_focus: bool):
        self.light = light
        self.sharp_weight = np.full(light.shape[1:], float(in_focus), np.float32)

    def add_layer(self, colour_lin: np.ndarray, a: np.ndarray, radius: float, focus_threshold: float) -> None:
        """Composite a layer "over" the canvas: its premultiplied colour and alpha blurred together by
        ``radius``."""
        layer = disk_blur(np.concatenate([colour_lin * a[None], a[None]]), radius)
        alpha = np.clip(layer[3], 0.0, 1.0)
        self.light = layer[:3] + (1.0 - alpha)[None] * self.light
        self.sharp_weight = alpha * float(radius < focus_threshold) + (1.0 - alpha) * self.sharp_weight


def _add_object(canvas: _Canvas, colour_lin: np.ndarray, a: np.ndarray, radius: float, defocused: bool, rng,
                cfg: SynthConfig) -> None:
    """One object layer onto the canvas; a defocused one gets its highlights boosted first."""
    if defocused:
        colour_lin = _boost_highlights(colour_lin, rng, cfg)
    canvas.add_layer(colour_lin, a, radius, cfg.focus_threshold)


def _paste_objects(canvas: _Canvas, objects: Sequence, case: str, shape: tuple, rng, cfg: SynthConfig) -> list:
    """Extra objects placed behind the subject, each in focus (near case, ``cfg.paste_sharp_prob``, only if it
    passes the sharpness test) or defocused by its own radius. Returns one info dict per pasted object."""
    pasted = []
    for k, (obj_image, obj_mask) in enumerate(objects):
        placed = _place_object(obj_image, obj_mask, shape, rng, cfg.paste_scale)
        if placed is None:
            continue
        colour, a = placed
        sharp = case == "near" and rng.random() < cfg.paste_sharp_prob and _object_is_sharp(colour, a, cfg.sharpness)
        r = _sharp_radius(rng, cfg) if sharp else _blur_radius(rng, cfg)
        _add_object(canvas, srgb_to_linear(colour), a, r, not sharp, rng, cfg)
        pasted.append(dict(object=k, radius=r, in_focus=sharp))
    return pasted


def _jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"))


def _develop(canvas: _Canvas, side: Optional[int], rng, cfg: SynthConfig):
    """The canvas squashed to ``side`` x ``side`` (in linear light), with sensor noise, in sRGB and optionally
    JPEG-compressed: (image uint8, in_focus bool, noise shot, noise read, JPEG quality or None)."""
    out, sharp_weight = canvas.light, canvas.sharp_weight
    if side is not None and out.shape[1:] != (side, side):
        out = resize_channels(out, (side, side))
        sharp_weight = resize_channels(sharp_weight[None].astype(np.float32), (side, side))[0]
    out_u8, shot, read, quality = _sensor_and_jpeg(out, rng, cfg)
    return out_u8, sharp_weight >= 0.5, shot, read, quality


def _sensor_and_jpeg(light: np.ndarray, rng: np.random.Generator, cfg: SynthConfig):
    """Sensor noise on the linear image (in place), sRGB encoding and, with probability ``cfg.jpeg_prob``, a JPEG
    round trip: (image uint8, noise shot, noise read, JPEG quality or None)."""
    shot, read = _add_noise(light, rng, cfg)
    out_u8 = linear_to_srgb(light)
    quality = None
    if rng.random() < cfg.jpeg_prob:
        quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
        out_u8 = _jpeg_roundtrip(out_u8, quality)
    return out_u8, shot, read, quality



def _framed_source(image, fg_mask, rng: np.random.Generator, cfg: SynthConfig):
    """The source photo and its object mask (arrays or PIL images) framed for a sample (:func:`_frame`), the
    mask's specks removed: ``(image, object alpha, object mask)``."""
    src = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image))
    msk = fg_mask if isinstance(fg_mask, Image.Image) else in_focus_to_pil(fg_mask)
    img, a_fg = _frame(src.convert("RGB"), msk.convert("L"), rng, cfg)
    a_fg = _clean_mask(a_fg, cfg.mask_min_area)
    return img, a_fg, a_fg >= 0.5


def render_sample(image_rgb_uint8, fg_mask_bool, rng: np.random.Generator, cfg: Optional[SynthConfig] = None,
                  *, sharp_background_ok: bool = True, case: Optional[str] = None, strict_case: bool = False,
                  background=None, objects: Sequence = (), return_info: bool = False):
    """Render one synthetic defocus sample from a sharp photo and its foreground mask.

    ``image_rgb_uint8``: HxWx3 uint8 (or a PIL image); ``fg_mask_bool``: HxW bool, True = the foreground
    object (or an 'L' PIL image, 255 = object). ``rng``: a numpy Generator (the only source of randomness:
    same generator state, same sample). Returns ``(image uint8 SxSx3, in_focus bool SxS)`` with S =
    ``cfg.size`` (or the source size when ``cfg.size`` is None), plus an info dict (case, radii, ...) when
    ``return_info``. ``sharp_background_ok=False`` forbids the far/wide cases (for sources whose backgrounds
    are known to be naturally blurred). ``case`` forces the scene case instead of drawing it; it still falls
    back when the source fails verification, unless ``strict_case``, which returns None instead (cheaply,
    before rendering) so the caller can try another source. ``background`` (an RGB photo, PIL or uint8):
    when the background is defocused (near and full cases), a random crop of it (``cfg.bg_swap_scale``)
    replaces the object's own surroundings. ``objects``: (photo, mask) PIL pairs of extra objects pasted
    behind the subject in the near and full cases (see ``cfg.paste_*``); ignored in the far and wide cases."""
    cfg = cfg or SynthConfig()
    img, a_fg, fg = _framed_source(image_rgb_uint8, fg_mask_bool, rng, cfg)
    checks = _SharpnessChecks(img, fg, cfg.sharpness)
    drawn, case = _choose_case(rng, cfg, sharp_background_ok, checks, case)
    if strict_case and case != drawn:
        return None
    fg_blurred, bg_blurred = case in ("far", "full"), case in ("near", "full")
    radii = _draw_radii(rng, cfg, fg_blurred, bg_blurred, fg.shape)
    lin = srgb_to_linear(img)
    light, swapped = _background_layer(lin, a_fg, case, radii, rng, cfg, background)
    canvas = _Canvas(light, in_focus=max(radii.far, radii.near) < cfg.focus_threshold)
    pasted = _paste_objects(canvas, objects if bg_blurred else (), case, fg.shape, rng, cfg)
    _add_object(canvas, lin, a_fg, radii.fg, fg_blurred, rng, cfg)
    out_u8, in_focus, shot, read, quality = _develop(canvas, cfg.size, rng, cfg)
    if not return_info:
        return out_u8, in_focus
    h, w = fg.shape
    info = dict(case=case, drawn=drawn, r_fg=radii.fg, r_bg_near=radii.near, r_bg_far=radii.far,
                ramp=radii.t is not None, canvas=(w, h), in_focus_fraction=float(in_focus.mean()), noise_shot=shot,
                noise_read=read, jpeg_quality=quality, subject_sharp=checks.results.get("subject"),
                background_sharp=checks.results.get("background"), frame_sharp=checks.results.get("frame"),
                background_swapped=swapped, pasted=pasted)
    return out_u8, in_focus, info


@dataclass
class DepthSample:
    """A depth-aware sample (:func:`render_depth_sample`), all maps SxS: ``image`` uint8 (x3), ``in_focus`` bool,
    ``ignore`` bool (True = undetermined: CoC in the band between in and out of focus, or in focus where the source
    is not verified sharp), ``depth`` float32 (depth of the visible surface, relative units), ``coc`` float32 (its
    CoC radius in pixels of the output), and ``info`` (layout, focal distance, A, ...)."""

    image: np.ndarray
    in_focus: np.ndarray
    ignore: np.ndarray
    depth: np.ndarray
    coc: np.ndarray
    info: dict


class _DepthCanvas:
    """Layers composited back to front with alpha normalisation: the light, the accumulated alpha and the shares
    of the light that come from in-focus and from out-of-focus layers."""

    def __init__(self, shape: tuple):
        self.light = np.zeros((3,) + tuple(shape), np.float32)
        self.acc = np.zeros(shape, np.float32)
        self.w_in = np.zeros(shape, np.float32)
        self.w_out = np.zeros(shape, np.float32)

    def add_layer(self, colour_lin: np.ndarray, a: np.ndarray, radius: float, in_focus: bool,
                  out_of_focus: bool) -> None:
        """Composite a layer "over" the canvas, its premultiplied colour and alpha blurred together by ``radius``."""
        layer = disk_blur(np.concatenate([colour_lin * a[None], a[None]]), radius)
        alpha = np.clip(layer[3], 0.0, 1.0)
        keep = 1.0 - alpha
        self.light = layer[:3] + keep[None] * self.light
        self.acc = alpha + keep * self.acc
        self.w_in = alpha * float(in_focus) + keep * self.w_in
        self.w_out = alpha * float(out_of_focus) + keep * self.w_out

    def normalised(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(light, in-focus share, out-of-focus share) divided by the accumulated alpha: where neighbouring depth
        slices of one surface both cover a pixel only partly, their sum is brought back to full opacity."""
        acc = np.maximum(self.acc, 1e-6)
        return self.light / acc[None], self.w_in / acc, self.w_out / acc


def _resize_nearest(a: np.ndarray, side: Optional[int]) -> np.ndarray:
    if side is None or a.shape == (side, side):
        return a
    return np.asarray(Image.fromarray(a.astype(np.float32)).resize((side, side), Image.NEAREST))


def _depth_slices(q: np.ndarray, q_focus: float, scale: float, colour: np.ndarray, boosted: np.ndarray,
                  sharp: bool, t_out: float) -> list:
    """A surface of inverse depth ``q`` (HxW) cut into inverse-depth slices (:func:`depth_layouts.slice_edges`), one
    layer per non-empty slice: (mean inverse depth, colour, alpha, CoC radius, source verified sharp). A slice is
    rendered with the mean CoC of its pixels, from ``boosted`` (highlights boosted) when it is out of focus
    (radius above ``t_out``), else from ``colour``."""
    layers = []
    edges = depth_layouts.slice_edges(float(q.min()), float(q.max()), q_focus, scale)
    for k in range(len(edges) - 1):
        last = k == len(edges) - 2
        m = (q >= edges[k]) & ((q <= edges[k + 1]) if last else (q < edges[k + 1]))
        if not m.any():
            continue
        r = float(scale * np.abs(q[m] - q_focus).mean())
        layers.append((float(q[m].mean()), boosted if r > t_out else colour, m.astype(np.float32), r, sharp))
    return layers


def _composite(layers: Sequence, shape: tuple, t_in: float, t_out: float):
    """Layers (inverse depth, colour, alpha, radius, sharp) composited back to front on a :class:`_DepthCanvas`:
    (light, in-focus share, out-of-focus share), alpha-normalised."""
    canvas = _DepthCanvas(shape)
    for q, colour, a, r, sharp in sorted(layers, key=lambda layer: layer[0]):
        canvas.add_layer(colour, a, r, in_focus=r < t_in and sharp, out_of_focus=r > t_out)
    return canvas.normalised()


def _develop_depth(light: np.ndarray, w_in: np.ndarray, w_out: np.ndarray, rng, cfg: SynthConfig):
    """A composited depth-aware frame squashed to ``cfg.size`` square (in linear light, with its label shares),
    with sensor noise, in sRGB and optionally JPEG-compressed: (image uint8, w_in, w_out, noise shot, noise read,
    JPEG quality or None)."""
    side = cfg.size
    if side is not None and light.shape[1:] != (side, side):
        light = resize_channels(light, (side, side))
        w_in, w_out = resize_channels(np.stack([w_in, w_out]).astype(np.float32), (side, side))
    out_u8, shot, read, quality = _sensor_and_jpeg(light, rng, cfg)
    return out_u8, w_in, w_out, shot, read, quality


def render_depth_sample(image_rgb_uint8, fg_mask_bool, rng: np.random.Generator, cfg: Optional[SynthConfig] = None,
                        *, occluder=None) -> DepthSample:
    """Render a depth-aware defocus sample: a procedural depth layout (:mod:`defocus.data.depth_layouts`) behind
    and under the photo's object, blur c = A * |1/d - 1/d_f| per pixel (A set so the largest CoC of background and
    subject is drawn from ``cfg.depth_blur``), rendered back to front in inverse-depth slices with exact disk
    blurs and alpha normalisation, so nearer layers occlude farther ones and a sharp subject leaves no halo.

    Labels follow ``cfg.depth_band``: in focus where at least half the light comes from layers whose CoC is below
    the band and whose source passes the sharpness test, out of focus where at least half comes from layers above
    it, undetermined elsewhere. ``occluder``: an optional (photo, mask) PIL pair placed nearer than everything
    (see ``cfg.depth_occluder_*``). Framing, highlights, noise and JPEG as in :func:`render_sample`."""
    cfg = cfg or SynthConfig()
    img, a_fg, fg = _framed_source(image_rgb_uint8, fg_mask_bool, rng, cfg)
    layout = depth_layouts.draw_layout(fg, rng, cfg.depth_layouts, cfg.depth_focus, cfg.depth_float_prob)
    q_bg, q_f, q_s = 1.0 / layout.background, 1.0 / layout.focus, 1.0 / layout.subject
    scene_depths = np.append(layout.background[~fg], layout.subject if fg.any() else [])
    largest = _loguniform(rng, *cfg.depth_blur)
    scale = depth_layouts.coc_scale(scene_depths, layout.focus, largest)
    t_in, t_out = cfg.depth_band
    coc_bg = scale * np.abs(q_bg - q_f)
    r_s = scale * abs(q_s - q_f)

    checks = _SharpnessChecks(img, fg, cfg.sharpness)
    bg_in = (coc_bg < t_in) & ~window_max(fg, 9)
    bg_sharp = bool(bg_in.any()) and region_is_sharp_everywhere(*checks.maps(), bg_in, cfg.sharpness)
    subject_sharp = bool(fg.any()) and r_s < t_in and checks("subject")

    lin = srgb_to_linear(img)
    valid_bg = ~window_max(a_fg > 0.02, 3)
    bg = fill_holes(lin, valid_bg)
    bg_boosted = _boost_highlights(bg, rng, cfg)
    layers = _depth_slices(q_bg, q_f, scale, bg, bg_boosted, bg_sharp, t_out)
    if fg.any():
        layers.append((q_s, _boost_highlights(lin, rng, cfg) if r_s > t_out else lin, a_fg, r_s, subject_sharp))
    occ = None
    if occluder is not None:
        placed = _place_object(occluder[0], occluder[1], fg.shape, rng, cfg.depth_occluder_scale)
        if placed is not None:
            colour, a_o = placed
            d_o = min(float(scene_depths.min()), layout.focus) * rng.uniform(0.4, 0.85)
            r_o = min(scale * abs(1.0 / d_o - q_f), 2.0 * cfg.depth_blur[1])
            sharp_o = r_o < t_in and _object_is_sharp(colour, a_o, cfg.sharpness)
            colour_lin = srgb_to_linear(colour)
            layers.append((1.0 / d_o, _boost_highlights(colour_lin, rng, cfg) if r_o > t_out else colour_lin, a_o,
                           r_o, sharp_o))
            occ = (a_o, d_o, r_o)
    light, w_in, w_out = _composite(layers, fg.shape, t_in, t_out)

    depth = np.where(fg, np.float32(layout.subject), layout.background).astype(np.float32)
    if occ is not None:
        depth = np.where(occ[0] >= 0.5, np.float32(occ[1]), depth)
    depth = _resize_nearest(depth, cfg.size)
    out_u8, w_in, w_out, shot, read, quality = _develop_depth(light, w_in, w_out, rng, cfg)
    in_focus, blurred = w_in >= 0.5, w_out >= 0.5
    ignore = ~(in_focus | blurred)
    coc = (scale * np.abs(1.0 / depth - q_f)).astype(np.float32)
    h, w = fg.shape
    info = dict(case="depth", layout=layout.kind, focus_mode=layout.focus_mode, focus=layout.focus,
                subject_depth=layout.subject, aperture=scale, largest_coc=largest, r_subject=r_s, slices=len(layers),
                occluder_radius=None if occ is None else occ[2], canvas=(w, h), subject_sharp=subject_sharp,
                background_in_focus_sharp=bg_sharp, in_focus_fraction=float(in_focus.mean()),
                ignore_fraction=float(ignore.mean()), noise_shot=shot, noise_read=read, jpeg_quality=quality)
    return DepthSample(out_u8, in_focus, ignore, depth, coc, info)


def _verified_in_focus(img: np.ndarray, region: np.ndarray, test: SharpnessTest) -> np.ndarray:
    """The pixels of ``region`` (the in-focus part of a frame) where the source is verified sharp: the frame is cut
    into cells (``test.grid`` along the short side) and a cell's part of the region counts only when it passes the
    sharpness test on its own (edge maps of the cell alone, so a neighbouring cell's edges cannot vouch for it); flat
    or soft cells stay unverified."""
    y = luma(img)
    h, w = region.shape
    rows = max(1, int(round(test.grid * h / min(h, w))))
    cols = max(1, int(round(test.grid * w / min(h, w))))
    ys = np.linspace(0, h, rows + 1).astype(int)
    xs = np.linspace(0, w, cols + 1).astype(int)
    out = np.zeros_like(region)
    for y0, y1 in zip(ys[:-1], ys[1:]):
        for x0, x1 in zip(xs[:-1], xs[1:]):
            cell = np.s_[y0:y1, x0:x1]
            if region[cell].any() and region_is_sharp(*edge_maps(y[cell], test.window), region[cell], test):
                out[cell] = region[cell]
    return out


def render_depth_photo(image_rgb_uint8, depth_mm, rng: np.random.Generator,
                       cfg: Optional[SynthConfig] = None) -> DepthSample:
    """Render a depth-aware defocus sample from a deep depth-of-field photo and its measured depth map.

    ``image_rgb_uint8``: HxWx3 uint8 (or a PIL image); ``depth_mm``: HxW depth in millimetres, 0 = no reading
    (e.g. :func:`defocus.data.depth_photos.load_depth_photo`). A random crop (``cfg.depth_photo_crop`` of each side)
    is framed as in :func:`render_sample`; missing depth is filled from the nearest reading and labelled
    undetermined, and the depth map is median-filtered (``cfg.depth_photo_median``). The focal distance is a
    quantile (drawn from ``cfg.depth_photo_focus``) of the frame's measured depths, so the focal plane cuts through
    the room; A is set so that the largest CoC is drawn from ``cfg.depth_blur``. The frame is rendered in inverse-depth slices exactly as the background of
    :func:`render_depth_sample` and labelled by ``cfg.depth_band``: in focus only where the source is verified sharp
    (per cell of the sharpness test's grid), undetermined where it is not. Highlights, noise and JPEG as there.
    The result's ``depth`` is in metres."""
    cfg = cfg or SynthConfig()
    src = image_rgb_uint8 if isinstance(image_rgb_uint8, Image.Image) else Image.fromarray(np.asarray(image_rgb_uint8))
    src = src.convert("RGB")
    w, h = src.size
    depth_mm = np.asarray(depth_mm)
    if depth_mm.shape != (h, w):
        raise ValueError(f"depth map {depth_mm.shape} does not match the photo {(h, w)}")
    measured = depth_mm > 0
    if not measured.any():
        raise ValueError("the depth map has no reading")
    nearest = ndimage.distance_transform_edt(~measured, return_distances=False, return_indices=True)
    filled = depth_mm[nearest[0], nearest[1]].astype(np.float32) / np.float32(1000.0)
    if cfg.depth_photo_median > 1:          # isolated wrong readings would render as speckles of blur
        filled = ndimage.median_filter(filled, size=cfg.depth_photo_median)

    s = rng.uniform(*cfg.depth_photo_crop)
    cw, ch = max(1, int(round(w * s))), max(1, int(round(h * s)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    box = (x0, y0, x0 + cw, y0 + ch)
    out = _frame_box(box, cfg)
    img = np.asarray(src.resize(out, Image.BILINEAR, box=box))
    depth = np.asarray(Image.fromarray(filled).resize(out, Image.NEAREST, box=box), np.float32)
    missing = np.asarray(Image.fromarray((~measured).astype(np.uint8) * 255).resize(out, Image.NEAREST, box=box)) >= 128

    seen = depth[~missing] if (~missing).any() else depth.ravel()
    quantile = float(rng.uniform(*cfg.depth_photo_focus))
    focus = float(np.quantile(seen, quantile))
    largest = _loguniform(rng, *cfg.depth_blur)
    scale = depth_layouts.coc_scale(depth, focus, largest)
    t_in, t_out = cfg.depth_band
    q, q_f = 1.0 / depth, 1.0 / focus

    lin = srgb_to_linear(img)
    layers = _depth_slices(q, q_f, scale, lin, _boost_highlights(lin, rng, cfg), True, t_out)
    light, w_in, w_out = _composite(layers, depth.shape, t_in, t_out)
    focal = scale * np.abs(q - q_f) < t_in
    verified = _verified_in_focus(img, focal, cfg.sharpness)
    w_in = w_in * verified
    depth_out = _resize_nearest(depth, cfg.size)
    missing = _resize_nearest(missing.astype(np.float32), cfg.size) >= 0.5
    out_u8, w_in, w_out, shot, read, quality = _develop_depth(light, w_in, w_out, rng, cfg)
    in_focus, blurred = (w_in >= 0.5) & ~missing, (w_out >= 0.5) & ~missing
    ignore = ~(in_focus | blurred)
    coc = (scale * np.abs(1.0 / depth_out - q_f)).astype(np.float32)
    info = dict(case="depth_photo", focus=focus, focus_quantile=quantile, crop=box, aperture=scale,
                largest_coc=largest, slices=len(layers), canvas=out, missing_fraction=float(missing.mean()),
                verified_fraction=float(verified.sum() / max(int(focal.sum()), 1)),
                in_focus_fraction=float(in_focus.mean()), ignore_fraction=float(ignore.mean()), noise_shot=shot,
                noise_read=read, jpeg_quality=quality)
    return DepthSample(out_u8, in_focus, ignore, depth_out, coc, info)


def list_natural_sources(root) -> list[tuple[Path, Path]]:
    """The (images_dir, masks_dir) pairs under ``root`` laid out as ``<set>/images`` + ``<set>/masks``."""
    root = Path(root)
    return [(d / "images", d / "masks") for d in sorted(root.iterdir())
            if d.is_dir() and (d / "images").is_dir() and (d / "masks").is_dir()]


@dataclass(frozen=True)
class SourcePair:
    """One source photo with its foreground mask; ``sharp_background_ok`` is False for sets whose backgrounds
    are often naturally blurred."""

    image: Path
    mask: Path
    sharp_background_ok: bool = True


def index_sources(sources: Sequence, near_only_sets: Sequence[str] = ("HumanSeg",)) -> list:
    """All image/mask pairs of ``sources`` ((images_dir, masks_dir) pairs), paired by stem. Pairs from a set
    named in ``near_only_sets`` (the folder above ``images``) are only used with a blurred background. A source
    ``"procedural"`` (or ``"procedural:N"``) adds the scenes of :mod:`defocus.data.procedural` instead."""
    out = []
    for source in sources:
        count = procedural.scene_count(source)
        if count is not None:
            out += [procedural.ProceduralPair(i) for i in range(count)]
            continue
        images_dir, masks_dir = source
        images_dir, masks_dir = Path(images_dir), Path(masks_dir)
        res = pair_by_stem(list_images(images_dir), list_images(masks_dir))
        if res.images_without_mask:
            log.warning("%s: %d images without a mask skipped", images_dir, len(res.images_without_mask))
        ok = images_dir.parent.name not in set(near_only_sets)
        out += [SourcePair(i, m, ok) for i, m in res.pairs]
    if not out:
        raise ValueError(f"no image/mask pairs found in {list(sources)}")
    return out


def _foreground_mask(path) -> Image.Image:
    """A foreground mask file as an 8-bit image (255 = foreground), soft edges kept, read as every mask is
    (:mod:`defocus.maps`: 0/1 masks, 16-bit masks and masks in the alpha channel at their own full scale)."""
    from ..maps import mask_full_scale, read_stored

    arr, full = read_stored(path)
    full = mask_full_scale(arr, full)
    if full == 255 and arr.dtype == np.uint8:  # the usual 8-bit mask: as stored
        return Image.fromarray(arr, "L")
    soft = np.asarray(arr, np.float32) if full is None else np.asarray(arr, np.float32) / np.float32(full)
    return Image.fromarray(np.clip(np.rint(soft * 255.0), 0, 255).astype(np.uint8), "L")


def load_source(pair, size: Optional[int]) -> tuple[Image.Image, Image.Image]:
    """Open a source photo (RGB, JPEG decoded at reduced scale when much larger than needed) and its mask (a
    procedural pair draws its scene)."""
    if isinstance(pair, procedural.ProceduralPair):
        return pair.load(size)
    im = Image.open(pair.image)
    if size is not None and im.format == "JPEG":
        im.draft("RGB", (int(size * 1.7), int(size * 1.7)))
    im = im.convert("RGB")
    mask = _foreground_mask(pair.mask)
    if mask.size != im.size:
        mask = mask.resize(im.size, Image.BILINEAR)
    return im, mask


class SyntheticDefocusDataset(torch.utils.data.Dataset):
    """Synthetic defocus rendered on the fly from sharp photos with foreground masks.

    ``sources``: (images_dir, masks_dir) pairs (e.g. :func:`list_natural_sources`) or ``"procedural"``. Item ``i`` is
    deterministic given (``seed``, epoch, ``i``): the source is the ``i``-th of a per-epoch permutation and the
    rendering uses a generator seeded with (seed, epoch, i). Items are ``dict(image, target, stem)`` as in
    :class:`~defocus.data.DBDDataset`: with a paired ``transform`` tensors, without one uint8 arrays (image
    SxSx3, target SxS in {0, 1}, 1 = in focus). ``set_epoch(e)`` changes every sample for a new epoch. Items also
    carry ``valid`` (1 = determined label, as the labelled photo pairs) when depth-aware scenes are enabled
    (``cfg.depth_prob`` > 0) or ``with_valid`` is set (to mix with datasets that have ignore masks), and ``depth``
    (float, depth of the visible surface; 0 = unknown, for the layered cases) with ``with_depth``. ``depth_photos``:
    photos with measured depth maps (:func:`defocus.data.depth_photos.list_depth_photos`); a ``cfg.depth_photo_prob``
    share of the depth-aware scenes is rendered from them (:func:`render_depth_photo`, depth in metres)."""

    def __init__(self, sources: Sequence, size: int = 320, length: Optional[int] = None, seed: int = 0,
                 transform: Optional[Callable] = None, cfg: Optional[SynthConfig] = None,
                 near_only_sets: Sequence[str] = ("HumanSeg",), with_valid: bool = False, with_depth: bool = False,
                 depth_photos: Sequence = ()):
        self.sources = index_sources(sources, near_only_sets)
        self.depth_photos = list(depth_photos)
        self.with_valid = bool(with_valid)
        self.with_depth = bool(with_depth)
        self.cfg = replace(cfg or SynthConfig(), size=size)
        self.length = len(self.sources) if length is None else int(length)
        self.seed = int(seed)
        self.transform = transform
        self.epoch = 0
        self._perm: tuple = (None, None)

    def set_epoch(self, epoch: int) -> None:
        """Mix ``epoch`` into every item's seed (call once per epoch for fresh samples)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def _source_index(self, i: int) -> int:
        if self._perm[0] != self.epoch:
            perm = np.random.default_rng([self.seed, self.epoch, 2 ** 31]).permutation(len(self.sources))
            self._perm = (self.epoch, perm)
        return int(self._perm[1][i % len(self.sources)])

    def render(self, i: int):
        """Item ``i`` before the transform: (image uint8 SxSx3, in_focus bool SxS, info dict)."""
        if not 0 <= i < self.length:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, self.epoch, i])
        if self.cfg.depth_prob > 0 and rng.random() < self.cfg.depth_prob:
            return self._render_depth(i, rng)
        case = draw_case(rng, self.cfg)
        idx = self._source_index(i)
        background, bg_pair = None, None
        # only a defocused background can be swapped: do not decode a photo the render would ignore
        if case in ("near", "full") and self.cfg.bg_swap_prob > 0 and rng.random() < self.cfg.bg_swap_prob:
            bg_pair = self.sources[int(rng.integers(len(self.sources)))]
            background = load_source(bg_pair, self.cfg.size)[0]
        objects, object_pairs = [], []
        if case in ("near", "full") and self.cfg.paste_prob > 0 and rng.random() < self.cfg.paste_prob:
            lo, hi = self.cfg.paste_count
            object_pairs = [self.sources[int(rng.integers(len(self.sources)))]
                            for _ in range(int(rng.integers(lo, hi + 1)))]
            objects = [load_source(p, self.cfg.size) for p in object_pairs]
        for attempt in range(self.cfg.redraws + 1):
            pair = self.sources[idx]
            image, mask = load_source(pair, self.cfg.size)
            res = render_sample(image, mask, rng, self.cfg, sharp_background_ok=pair.sharp_background_ok,
                                case=case, strict_case=attempt < self.cfg.redraws, background=background,
                                objects=objects, return_info=True)
            if res is not None:
                break
            idx = int(rng.integers(len(self.sources)))
        out, in_focus, info = res
        info.update(source=str(pair.image), attempts=attempt + 1,
                    background_source=str(bg_pair.image) if info["background_swapped"] else None)
        for entry in info["pasted"]:
            entry["source"] = str(object_pairs[entry["object"]].image)
        return out, in_focus, info

    def _render_depth(self, i: int, rng):
        """A depth-aware item (:func:`render_depth_sample`, or :func:`render_depth_photo` for a
        ``cfg.depth_photo_prob`` share when the dataset has depth photos): its maps in ``info["maps"]``."""
        if self.depth_photos and self.cfg.depth_photo_prob > 0 and rng.random() < self.cfg.depth_photo_prob:
            from .depth_photos import load_depth_photo

            photo = self.depth_photos[int(rng.integers(len(self.depth_photos)))]
            image, depth_mm = load_depth_photo(photo)
            res = render_depth_photo(image, depth_mm, rng, self.cfg)
            info = dict(res.info, source=str(photo.image), depth_source=str(photo.depth), attempts=1,
                        maps=dict(ignore=res.ignore, depth=res.depth, coc=res.coc))
            return res.image, res.in_focus, info
        pair = self.sources[self._source_index(i)]
        image, mask = load_source(pair, self.cfg.size)
        occluder, occ_pair = None, None
        if self.cfg.depth_occluder_prob > 0 and rng.random() < self.cfg.depth_occluder_prob:
            occ_pair = self.sources[int(rng.integers(len(self.sources)))]
            occluder = load_source(occ_pair, self.cfg.size)
        res = render_depth_sample(image, mask, rng, self.cfg, occluder=occluder)
        info = dict(res.info, source=str(pair.image), attempts=1,
                    occluder_source=None if occ_pair is None else str(occ_pair.image),
                    maps=dict(ignore=res.ignore, depth=res.depth, coc=res.coc))
        return res.image, res.in_focus, info

    @property
    def has_ignore(self) -> bool:
        """Whether items carry a ``valid`` map (depth-aware scenes enabled, or ``with_valid``)."""
        return self.cfg.depth_prob > 0 or self.with_valid or self.with_depth

    def __getitem__(self, i: int) -> dict:
        image, in_focus, info = self.render(i)
        stem = f"synth{self.seed}_e{self.epoch}_{i:06d}"
        maps = info.get("maps")
        ignore = maps["ignore"] if maps else np.zeros_like(in_focus)
        depth = maps["depth"] if maps else np.zeros(in_focus.shape, np.float32)
        if self.transform is None:
            item = dict(image=image, target=in_focus.astype(np.uint8), stem=stem)
            if self.has_ignore:
                item["valid"] = (~ignore).astype(np.uint8)
            if self.with_depth:
                item["depth"] = depth
            return item
        if not self.has_ignore:
            img_t, target = self.transform(Image.fromarray(image), in_focus_to_pil(in_focus))
            return dict(image=img_t, target=target, stem=stem)
        if self.with_depth:
            img_t, target, valid, depth_t = self.transform(Image.fromarray(image), in_focus_to_pil(in_focus),
                                                           in_focus_to_pil(ignore), depth)
            return dict(image=img_t, target=target, valid=valid, depth=depth_t, stem=stem)
        img_t, target, valid = self.transform(Image.fromarray(image), in_focus_to_pil(in_focus), in_focus_to_pil(ignore))
        return dict(image=img_t, target=target, valid=valid, stem=stem)


def _remove_earlier_samples(out_dir: Path, keep: int) -> None:
    """Remove the files of samples ``keep`` and above that an earlier :func:`write_synthetic` left in ``out_dir``,
    and all of its ignore masks and depth maps (only where its ``samples.jsonl`` says a run wrote there)."""
    if not (out_dir / "samples.jsonl").is_file():
        return
    for sub in ("images", "masks", "ignore", "depth"):
        folder = out_dir / sub
        if not folder.is_dir():
            continue
        # ignore masks and depth maps exist only for some runs and scenes: this run writes its own again
        first_removed = 0 if sub in ("ignore", "depth") else keep
        for path in folder.iterdir():
            if path.stem.isdigit() and len(path.stem) == 6 and int(path.stem) >= first_removed and \
                    path.suffix in (".png", ".npy"):
                path.unlink()


def write_synthetic(sources: Sequence, out_dir, n: int, seed: int = 0, size: int = 320,
                    cfg: Optional[SynthConfig] = None, progress: bool = True) -> Path:
    """Render ``n`` samples to ``out_dir/images/NNNNNN.png`` and ``out_dir/masks/NNNNNN.png`` (255 = in
    focus), with one JSON line of render info per sample in ``out_dir/samples.jsonl``; files are written
    atomically. With depth-aware scenes (``cfg.depth_prob`` > 0) every sample also gets ``out_dir/ignore/NNNNNN.png``
    (255 = undetermined) and each depth scene ``out_dir/depth/NNNNNN.npy`` (float32 depth of the visible surface). The result loads as ``load_pairs("folder", image_dir=..., mask_dir=..., mask_white="in-focus")``.
    Written into the folder of an earlier run, the samples of that run beyond ``n`` are removed, so that the
    folder holds this run's samples only."""
    if n < 1 or size < 1:
        raise ValueError(f"need at least one sample of at least 1x1 pixels, got n={n}, size={size}")
    ds = SyntheticDefocusDataset(sources, size=size, length=n, seed=seed, cfg=cfg)
    out_dir = Path(out_dir)
    _remove_earlier_samples(out_dir, n)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    lines = []
    for i in tqdm(range(n), desc="synth", unit="sample", disable=not progress):
        image, in_focus, info = ds.render(i)
        name = f"{i:06d}.png"
        maps = info.pop("maps", None)
        outputs = [(image, "images"), (in_focus_to_pil(in_focus), "masks")]
        if ds.has_ignore:
            ignore = maps["ignore"] if maps else np.zeros_like(in_focus)
            outputs.append((in_focus_to_pil(ignore), "ignore"))
        if maps is not None:
            (out_dir / "depth").mkdir(exist_ok=True)
            dst = out_dir / "depth" / f"{i:06d}.npy"
            tmp = dst.with_name(f".{i:06d}.tmp.npy")
            np.save(tmp, maps["depth"].astype(np.float32))
            os.replace(tmp, dst)
        for arr, sub in outputs:
            (out_dir / sub).mkdir(exist_ok=True)
            dst = out_dir / sub / name
            tmp = dst.with_name(f".{name}.tmp")
            (arr if isinstance(arr, Image.Image) else Image.fromarray(arr)).save(tmp, format="PNG")
            os.replace(tmp, dst)
        lines.append(json.dumps(dict(name=name, **{k: v for k, v in info.items()}), default=str))
    meta = out_dir / "samples.jsonl"
    tmp = meta.with_name(".samples.jsonl.tmp")
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, meta)
    cfg_path = out_dir / "synth_config.json"
    cfg_path.write_text(json.dumps(dict(seed=seed, n=n, **asdict(ds.cfg)), indent=1, default=str))
    return out_dir
