"""Photos with a measured depth map, a depth source for the depth-aware synthetic renderer.

The aperture pairs with depth (a folder with ``pairs.csv``: columns ``stem``, ``narrow_f8`` (the deep depth-of-field
photo) and ``depth`` (a 16-bit PNG in millimetres, 0 = no reading), paths relative to the folder) give real rooms
whose focal plane can be placed anywhere: :func:`defocus.data.synth.render_depth_photo` blurs the f/8 photo by its
own depth. Scenes are chosen by a split: a stem list shipped with the package (``dfd-train``) or a list file.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image

from .registry import resolve_split


@dataclass(frozen=True)
class DepthPhoto:
    """One scene: its stem, the deep depth-of-field photo and its depth map (16-bit PNG, millimetres)."""

    stem: str
    image: Path
    depth: Path


def list_depth_photos(root, split: Optional[str] = None) -> list[DepthPhoto]:
    """The scenes of ``root/pairs.csv`` that have a depth map, in file order; with ``split`` (a packaged split such
    as ``dfd-train`` or a stem list file: :func:`~defocus.data.registry.resolve_split`) only its stems (stems of the
    split missing from the folder are skipped). Raises ``ValueError`` when none is left."""
    root = Path(root)
    table = root / "pairs.csv"
    if not table.is_file():
        raise FileNotFoundError(f"{table} not found (a folder of photos with depth maps needs a pairs.csv)")
    keep = None if split is None else set(resolve_split(split))
    out = []
    with open(table, newline="") as f:
        for row in csv.DictReader(f):
            stem, image, depth = row.get("stem", ""), row.get("narrow_f8", ""), row.get("depth", "")
            if not depth or (keep is not None and stem not in keep):
                continue
            if (root / image).is_file() and (root / depth).is_file():
                out.append(DepthPhoto(stem, root / image, root / depth))
    if not out:
        raise ValueError(f"no photo with a depth map in {table}" + (f" for split {split!r}" if split else ""))
    return out


def load_depth_photo(photo: DepthPhoto) -> tuple[Image.Image, np.ndarray]:
    """The scene's photo (RGB) and its depth map (HxW uint16 millimetres, 0 = no reading, resized to the photo's
    size by nearest neighbour when it differs)."""
    image = Image.open(photo.image).convert("RGB")
    with Image.open(photo.depth) as d:
        if d.size != image.size:
            d = d.resize(image.size, Image.NEAREST)
        depth = np.asarray(d).astype(np.uint16)
    return image, depth
