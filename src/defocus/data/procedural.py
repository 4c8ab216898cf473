"""Procedural source scenes for synthetic defocus: sharp "dead leaves" textures (random overlapping discs, whose
sizes follow a power law, the classic scale-invariant model of natural images) with a foreground shape in front
of a background, drawn in code.

They need no files, so the training presets that use them (``data.synthetic.sources: [procedural]``) run on a
fresh clone or an installed package, with no data set at hand. Scene ``i`` is always the same picture.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, ImageDraw

#: Name of the procedural source in ``data.synthetic.sources``: ``procedural`` or ``procedural:N`` (N scenes).
PROCEDURAL = "procedural"
#: Number of distinct scenes of a plain ``procedural`` source.
DEFAULT_COUNT = 64
# Short side of a scene relative to the rendered size (the renderer crops and resizes it).
_MARGIN = 1.25


@dataclass(frozen=True)
class ProceduralPair:
    """Scene ``index`` of the procedural source, in place of an image/mask file pair."""

    index: int
    sharp_background_ok: bool = True

    @property
    def image(self) -> str:
        """The scene's name (where a file pair gives its image path)."""
        return f"{PROCEDURAL}:{self.index}"

    def load(self, size: Optional[int]) -> tuple[Image.Image, Image.Image]:
        """The scene for a render of short side ``size``: (RGB photo, 'L' foreground mask, 255 = object)."""
        return procedural_scene(self.index, size)


def scene_count(spec) -> Optional[int]:
    """How many scenes the source ``spec`` names (``procedural`` -> 64, ``procedural:N`` -> N), or None when
    ``spec`` is not the procedural source. A malformed count raises ``ValueError``."""
    if not isinstance(spec, str) or spec.split(":", 1)[0] != PROCEDURAL:
        return None
    _, _, count = spec.partition(":")
    if not count:
        return DEFAULT_COUNT
    if not count.isdigit() or int(count) < 1:
        raise ValueError(f"procedural source {spec!r}: the count after ':' must be a positive integer")
    return int(count)


def _palette(rng, n: int) -> np.ndarray:
    """``n`` uint8 RGB colours around one random hue, with varied saturation and lightness."""
    hue = rng.random()
    cols = [colorsys.hsv_to_rgb((hue + rng.normal(0, 0.08)) % 1.0, rng.uniform(0.2, 0.9), rng.uniform(0.15, 1.0))
            for _ in range(n)]
    return (np.array(cols) * 255).round().astype(np.uint8)


def dead_leaves(rng, width: int, height: int, r_min: float = 1.5, r_max: Optional[float] = None,
                cover: float = 3.0) -> Image.Image:
    """A dead-leaves texture: opaque discs of random colours dropped on the canvas, radii drawn from a density
    proportional to r^-3 on [``r_min``, ``r_max``], until their total area is ``cover`` times the canvas. Edges
    are hard (no anti-aliasing): every disc boundary is an in-focus edge."""
    r_max = r_max or max(width, height) / 4
    img = Image.new("RGB", (width, height), tuple(int(c) for c in _palette(rng, 1)[0]))
    draw = ImageDraw.Draw(img)
    colours = _palette(rng, 12)
    area, target = 0.0, cover * width * height
    while area < target:
        # inverse CDF of p(r) ~ r^-3 on [r_min, r_max]
        u = rng.random()
        r = 1.0 / math.sqrt(1.0 / r_min ** 2 - u * (1.0 / r_min ** 2 - 1.0 / r_max ** 2))
        x, y = rng.uniform(-r, width + r), rng.uniform(-r, height + r)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c) for c in colours[rng.integers(len(colours))]))
        area += math.pi * r * r
    return img


def blob_mask(rng, width: int, height: int) -> Image.Image:
    """A random star-shaped object (a polygon with smoothly varying radius) near the centre: 'L', 255 = object,
    covering roughly 10 to 45 % of the frame."""
    n = 48
    angles = np.linspace(0, 2 * math.pi, n, endpoint=False)
    wobble = sum(rng.uniform(0, 0.25) * np.cos(k * angles + rng.uniform(0, 2 * math.pi)) for k in (2, 3, 5))
    scale = rng.uniform(0.22, 0.38) * min(width, height)
    cx = width * rng.uniform(0.35, 0.65)
    cy = height * rng.uniform(0.35, 0.65)
    stretch = rng.uniform(1.0, 1.4) if width > height else 1.0
    pts = [(cx + stretch * scale * (1 + w) * math.cos(a), cy + scale * (1 + w) * math.sin(a))
           for a, w in zip(angles, wobble)]
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).polygon(pts, fill=255)
    return mask


def procedural_scene(index: int, size: Optional[int] = 320) -> tuple[Image.Image, Image.Image]:
    """Scene ``index``: a dead-leaves background, and a foreground object (:func:`blob_mask`) with its own
    dead-leaves texture, for a render of short side ``size`` (320 when None). Returns (RGB photo, 'L' mask,
    255 = object); the same ``index`` always gives the same scene."""
    rng = np.random.default_rng([int(index), 7919])
    short = int(math.ceil((size or 320) * _MARGIN))
    long = int(round(short * rng.uniform(1.0, 1.5)))
    width, height = (long, short) if rng.random() < 0.7 else (short, long)
    background = dead_leaves(rng, width, height)
    texture = dead_leaves(rng, width, height, r_max=min(width, height) / 8)
    mask = blob_mask(rng, width, height)
    return Image.composite(texture, background, mask), mask
