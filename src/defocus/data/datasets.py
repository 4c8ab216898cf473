"""Torch datasets over registry pairs: every sample's target is 1 = in focus, whatever the raw polarity."""
from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .masks import in_focus_to_pil, read_mask
from .registry import Pair, load_pairs

log = logging.getLogger(__name__)


def load_image(path) -> Image.Image:
    """Open an image file as RGB (pixels as stored; no EXIF rotation, so it stays aligned with its mask)."""
    with Image.open(path) as im:
        return im.convert("RGB")


class DBDDataset(torch.utils.data.Dataset):
    """Defocus-blur-detection samples from a list of :class:`Pair`.

    Item ``i`` is ``dict(image=..., target=..., stem=str)``. With a ``transform`` (called as
    ``transform(PIL RGB image, PIL 'L' mask with 255 = in focus)``, e.g.
    :func:`~defocus.data.transforms.train_transform`)
    image is a normalised float tensor 3xHxW and target a float tensor 1xHxW in {0, 1}; without one, image is a
    uint8 HxWx3 array and target a uint8 HxW array in {0, 1}. The raw mask is inverted per sample according to
    its pair's polarity, so mixed-polarity (combined) datasets are handled sample by sample."""

    def __init__(self, pairs: Sequence[Pair], transform: Optional[Callable] = None):
        self.pairs = list(pairs)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        pair = self.pairs[i]
        image = load_image(pair.image)
        in_focus = read_mask(pair.mask, pair.mask_white)
        if in_focus.shape != (image.height, image.width):
            log.debug("%s: mask %s differs from image %s", pair.stem, in_focus.shape[::-1], image.size)
        if self.transform is None:
            return dict(image=np.asarray(image), target=in_focus.astype(np.uint8), stem=pair.stem)
        img_t, target = self.transform(image, in_focus_to_pil(in_focus))
        return dict(image=img_t, target=target, stem=pair.stem)


def build_dataset(name: str, root=None, transform: Optional[Callable] = None, **kw) -> DBDDataset:
    """``DBDDataset(load_pairs(name, root, **kw), transform)``: a registered dataset ready for a DataLoader."""
    return DBDDataset(load_pairs(name, root, **kw), transform)


def drop_mismatched_sizes(pairs: Sequence[Pair]) -> tuple[list[Pair], list[Pair]]:
    """Split pairs into (kept, dropped) by whether the image and mask sizes agree (file headers only).

    The reference evaluation silently drops such test images (method.md §9.18); this makes the drop explicit."""
    kept, dropped = [], []
    for p in pairs:
        with Image.open(p.image) as a, Image.open(p.mask) as b:
            (kept if a.size == b.size else dropped).append(p)
    if dropped:
        log.warning("%d pairs have different image and mask sizes, e.g. %s", len(dropped), dropped[0].image)
    return kept, dropped
