"""Is a region of a photo really sharp? An edge-steepness test used before labelling anything "in focus".

At an edge blurred by a disk of radius r the steepest one-pixel step is about 0.64 / r of the edge's contrast,
while an in-focus edge changes by most of its contrast within one pixel. So for every pixel with enough local
contrast (max - min in a small window) we take the ratio of its steepest one-pixel step to that contrast, and
call a region sharp when a high percentile of the ratio over its contrasted pixels is large. Regions with too
few contrasted pixels (flat sky, heavy natural blur) cannot be verified and do not pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .lens import window_max, window_min


@dataclass(frozen=True)
class SharpnessTest:
    """Knobs of the test (defaults calibrated at 320 px, see benchmarks/RESULTS_data.md).

    ``window``: side of the contrast window (px). ``min_contrast``: least local contrast (luma, 0-1) for a pixel
    to count. ``percentile``: the ratio percentile used as the region score. ``threshold``: least score of a
    sharp region. ``min_pixels``: least number of contrasted pixels to decide at all. ``grid``: cells per side
    for the "sharp everywhere" test, in which every cell holding ``min_cell_pixels`` contrasted pixels must pass
    and such cells must cover at least ``min_coverage`` of the region."""

    window: int = 7
    min_contrast: float = 0.08
    percentile: float = 97.0
    threshold: float = 0.42
    min_pixels: int = 40
    grid: int = 4
    min_cell_pixels: int = 30
    min_coverage: float = 0.6


def luma(img_u8: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an sRGB uint8 HxWx3 image as float32 in [0, 1] (gamma-encoded, as a viewer sees it)."""
    img = np.asarray(img_u8, np.float32)
    return (img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114) / 255.0


def edge_maps(y: np.ndarray, window: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel (steepness ratio, local contrast): the largest one-pixel step to a 4-neighbour divided by the
    max - min of ``y`` in a ``window`` x ``window`` neighbourhood."""
    y = np.asarray(y, np.float32)
    dx = np.abs(np.diff(y, axis=1))
    dy = np.abs(np.diff(y, axis=0))
    step = np.zeros_like(y)
    step[:, 1:] = dx
    np.maximum(step[:, :-1], dx, out=step[:, :-1])
    np.maximum(step[1:], dy, out=step[1:])
    np.maximum(step[:-1], dy, out=step[:-1])
    contrast = window_max(y, window) - window_min(y, window)
    ratio = step / np.maximum(contrast, 1e-6)
    return ratio, contrast


def region_score(ratio: np.ndarray, contrast: np.ndarray, region: np.ndarray, test: SharpnessTest) -> tuple[float, int]:
    """(score, number of contrasted pixels) of ``region``; the score is NaN when there are none."""
    sel = region & (contrast >= test.min_contrast)
    n = int(sel.sum())
    if n == 0:
        return float("nan"), 0
    return float(np.percentile(ratio[sel], test.percentile)), n


def region_is_sharp(ratio, contrast, region: np.ndarray, test: SharpnessTest = SharpnessTest()) -> bool:
    """True when ``region`` has enough contrasted pixels and their steepness score passes the threshold."""
    score, n = region_score(ratio, contrast, region, test)
    return n >= test.min_pixels and score >= test.threshold


def region_is_sharp_everywhere(ratio, contrast, region: np.ndarray, test: SharpnessTest = SharpnessTest()) -> bool:
    """The strict test for labelling a whole region in focus: split the frame into ``grid`` x ``grid`` cells;
    every cell with enough contrasted region pixels must be sharp, and those cells must hold at least
    ``min_coverage`` of the region's pixels (so a large flat or smoothly blurred part cannot slip through)."""
    h, w = region.shape
    total = int(region.sum())
    if total == 0:
        return False
    covered = 0
    ys = np.linspace(0, h, test.grid + 1).astype(int)
    xs = np.linspace(0, w, test.grid + 1).astype(int)
    for i in range(test.grid):
        for j in range(test.grid):
            cell = (slice(ys[i], ys[i + 1]), slice(xs[j], xs[j + 1]))
            reg = region[cell]
            score, n = region_score(ratio[cell], contrast[cell], reg, test)
            if n < test.min_cell_pixels:
                continue
            if score < test.threshold:
                return False
            covered += int(reg.sum())
    return covered >= test.min_coverage * total
