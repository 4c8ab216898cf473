"""Procedural depth layouts for synthetic defocus: a per-pixel depth map for a photo with an object mask.

The photo's own geometry is unknown, so a plausible scene is laid behind and around it: planes seen in perspective
(whose inverse depth is linear in image coordinates), combined so that the nearer surface is the visible one.

- ``ground``: a ground plane receding to a horizon (possibly above the frame, possibly rolled a little), with a
  distant backdrop above the horizon.
- ``table``: a nearer, steeper receding surface (a table top, a floor seen from above) closed by a back wall.
- ``wall``: a wall (or any large surface) seen at an angle: depth grows sideways across the frame.

The subject stands on the visible surface at its lowest pixel (or floats in front of it), and the focal distance is
put on the receding surface, on the subject, in front of it or behind it. Depths are relative (arbitrary units);
only their ratios matter for the circle of confusion ``c = A * |1/d - 1/d_f|``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LAYOUTS = ("ground", "table", "wall")
FOCUS_MODES = ("surface", "subject", "front", "behind")


@dataclass
class DepthLayout:
    """One scene's geometry: the background's depth ``background`` (HxW float32, the surface behind everything,
    also behind the subject), the subject's depth ``subject`` and the focal distance ``focus``; ``kind`` is the
    layout and ``focus_mode`` how the focal distance was chosen."""

    kind: str
    background: np.ndarray
    subject: float
    focus: float
    focus_mode: str


def _plane_inverse_depth(shape: tuple, slope_x: float, slope_y: float, offset: float) -> np.ndarray:
    """Inverse depth of a plane, ``offset + slope_x * x + slope_y * y`` with x, y in frame heights from the centre."""
    h, w = shape
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / h
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / h
    return offset + slope_x * x[None, :] + slope_y * y[:, None]


def _receding(shape: tuple, rng, horizon: tuple, near: tuple) -> np.ndarray:
    """Inverse depth of a surface receding upwards to a horizon at a drawn height (fraction of the frame from the
    top, may be outside it), slightly rolled; its lowest visible point at a drawn depth ``near``. Zero at and
    above the horizon."""
    h, w = shape
    y_h = rng.uniform(*horizon) - 0.5                     # horizon height, in frame heights from the centre
    roll = math.radians(rng.normal(0.0, 4.0))
    slope_y, slope_x = math.cos(roll), -math.sin(roll)
    q = _plane_inverse_depth(shape, slope_x, slope_y, -y_h * slope_y)   # 0 on the horizon, grows downwards
    q_max = float(q.max())
    if q_max <= 1e-3:                                     # horizon below the frame: nothing of the surface is seen
        return np.zeros(shape, np.float32)
    d_near = rng.uniform(*near)
    return np.maximum(q, 0.0) / (q_max * d_near)


def background_depth(shape: tuple, rng, kind: str) -> np.ndarray:
    """The depth (HxW float32, all > 0) of a layout ``kind`` (see :data:`LAYOUTS`)."""
    if kind == "ground":
        q = _receding(shape, rng, horizon=(-0.3, 0.6), near=(1.0, 4.0))
        backdrop = 1.0 / rng.uniform(30.0, 200.0)
        q = np.maximum(q, backdrop)
    elif kind == "table":
        q = _receding(shape, rng, horizon=(-0.6, 0.3), near=(0.4, 1.5))
        d_min = 1.0 / max(float(q.max()), 1e-6)
        wall = _plane_inverse_depth(shape, rng.normal(0.0, 0.3), 0.0, 1.0) / (d_min * rng.uniform(2.0, 6.0))
        q = np.maximum(q, np.maximum(wall, 1e-3))
    elif kind == "wall":
        d_mid = rng.uniform(1.0, 6.0)
        slope = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.6)
        q = _plane_inverse_depth(shape, slope, rng.normal(0.0, 0.2), 1.0)
        q = np.maximum(q, 0.05) / d_mid                   # a surface turning away: at most 20x the middle depth
    else:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {kind!r}")
    return (1.0 / q).astype(np.float32)


def _subject_footing(fg: np.ndarray) -> tuple[int, int]:
    """(row, column) of the subject's lowest pixels (the middle of its bottom row)."""
    ys, xs = np.nonzero(fg)
    y = int(ys.max())
    return y, int(np.median(xs[ys == y]))


def draw_layout(fg: np.ndarray, rng, layout_probs=(0.5, 0.25, 0.25), focus_probs=(0.45, 0.25, 0.15, 0.15),
                float_prob: float = 0.3) -> DepthLayout:
    """A scene for a frame whose subject is ``fg`` (HxW bool, may be empty): the layout drawn with
    ``layout_probs`` (over :data:`LAYOUTS`), the subject standing on the surface at its lowest pixel (or, with
    ``float_prob``, in front of it at 50-95 % of that depth), and the focal distance drawn with ``focus_probs``
    (over :data:`FOCUS_MODES`): on the visible surface at a random pixel (the focal plane then cuts through a
    receding surface), on the subject, in front of it (30-80 % of its depth) or behind it (1.3-4x). The
    background behind the subject is pushed behind it."""
    p = np.asarray(layout_probs, np.float64)
    kind = LAYOUTS[int(rng.choice(len(LAYOUTS), p=p / p.sum()))]
    bg = background_depth(fg.shape, rng, kind)
    if fg.any():
        y, x = _subject_footing(fg)
        d_s = float(bg[y, x])
        if rng.random() < float_prob:
            d_s *= rng.uniform(0.5, 0.95)
        bg = np.where(fg, np.maximum(bg, d_s * 1.05), bg).astype(np.float32)
    else:
        d_s = float(np.median(bg))
    p = np.asarray(focus_probs, np.float64)
    mode = FOCUS_MODES[int(rng.choice(len(FOCUS_MODES), p=p / p.sum()))]
    if mode == "surface":
        ys, xs = np.nonzero(~fg)
        k = int(rng.integers(len(ys))) if len(ys) else None
        d_f = float(bg[ys[k], xs[k]]) if k is not None else d_s
    elif mode == "subject":
        d_f = d_s
    elif mode == "front":
        d_f = d_s * rng.uniform(0.3, 0.8)
    else:
        d_f = d_s * rng.uniform(1.3, 4.0)
    return DepthLayout(kind, bg, d_s, d_f, mode)


def coc_scale(depths: np.ndarray, focus: float, largest: float) -> float:
    """The aperture constant A such that the largest circle of confusion over ``depths`` is ``largest`` pixels
    (c = A * |1/d - 1/focus|); 0 when every depth is at the focal distance."""
    spread = float(np.max(np.abs(1.0 / depths - 1.0 / focus)))
    return largest / spread if spread > 0 else 0.0


def slice_edges(q_lo: float, q_hi: float, q_focus: float, scale: float, step: float = 0.35,
                relative: float = 0.15, max_slices: int = 40) -> np.ndarray:
    """Edges of inverse-depth slices covering [q_lo, q_hi]: one edge on the focal plane, and slices whose CoC
    ranges are at most ``max(step, relative * c)`` pixels wide, so every slice is rendered with one radius that
    stays close to the CoC of all its pixels; the step grows if more than ``max_slices`` slices would be needed."""
    if scale <= 0 or q_hi <= q_lo:
        return np.array([q_lo, q_hi + 1e-9])
    for _ in range(8):
        edges = [q_focus]
        for sign, bound in ((1.0, q_hi), (-1.0, q_lo)):
            e = q_focus
            while (e <= bound) if sign > 0 else (e >= bound):
                c = scale * abs(e - q_focus)
                e += sign * max(step, relative * c) / scale
                edges.append(e)
        edges = np.array(sorted(edges))
        used = np.nonzero((edges[1:] > q_lo) & (edges[:-1] <= q_hi))[0]
        edges = edges[used[0]: used[-1] + 2]
        if len(edges) - 1 <= max_slices:
            break
        step, relative = step * 1.5, relative * 1.5
    return edges
