"""Torch datasets over registry pairs: every sample's target is 1 = in focus, whatever the raw polarity."""
from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image

from .. import imageio
from .lens import disk_blur, linear_to_srgb, srgb_to_linear
from .masks import in_focus_to_pil, read_mask
from .pairs import read_ignore
from .registry import Pair, load_pairs

log = logging.getLogger(__name__)

#: Masks whose size differs from their image's, already reported.
_SIZE_WARNED: set = set()


def load_image(path) -> Image.Image:
    """Open an image file as 8-bit RGB (pixels as stored: no EXIF rotation, so it stays aligned with its mask;
    16-bit scaled and alpha composited as for prediction, :func:`defocus.imageio.to_rgb`)."""
    with Image.open(path) as im:
        im.load()
        return imageio.to_rgb(im)


def _resized(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A bool mask resized to ``size`` (width, height), nearest neighbour."""
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) >= 128


class DBDDataset(torch.utils.data.Dataset):
    """Defocus-blur-detection samples from a list of :class:`Pair`.

    Item ``i`` is ``dict(image=..., target=..., valid=..., stem=str)``. With a ``transform`` (called as
    ``transform(PIL RGB image, PIL 'L' mask with 255 = in focus[, PIL 'L' ignore mask with 255 = undetermined])``,
    e.g. :func:`~defocus.data.transforms.train_transform`)
    image is a normalised float tensor 3xHxW, target and valid float tensors 1xHxW in {0, 1}; without one, image
    is a uint8 HxWx3 array, target and valid uint8 HxW arrays in {0, 1}. ``valid`` is 0 on the undetermined
    pixels of a pair with an ignore mask (labels derived from photo pairs) and 1 everywhere else. The raw mask is inverted per sample according to
    its pair's polarity, so mixed-polarity (combined) datasets are handled sample by sample.

    ``blur_everywhere`` (not in the paper): ``(low, high)`` in pixels: every image is blurred in linear light by a
    disk whose radius is drawn uniformly from that range (torch's generator, so DataLoader seeding applies) at the
    photo's own resolution, before the transform, and labelled blurred everywhere (its ignore mask is kept). Sharp
    photos made softer by a known, moderate amount: the label follows from the blur itself."""

    def __init__(self, pairs: Sequence[Pair], transform: Optional[Callable] = None,
                 blur_everywhere: Optional[tuple[float, float]] = None):
        self.pairs = list(pairs)
        self.transform = transform
        if blur_everywhere is not None and not 0 < blur_everywhere[0] <= blur_everywhere[1]:
            raise ValueError(f"blur_everywhere: expected (low, high) with 0 < low <= high, got {blur_everywhere}")
        self.blur_everywhere = None if blur_everywhere is None else tuple(map(float, blur_everywhere))

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        pair = self.pairs[i]
        image = load_image(pair.image)
        in_focus = read_mask(pair.mask, pair.mask_white)
        if self.blur_everywhere is not None:
            image, in_focus = blurred_everywhere(image, in_focus.shape, *self.blur_everywhere)
        ignore = read_ignore(pair.ignore) if pair.ignore is not None else None
        if ignore is not None and ignore.shape != in_focus.shape:
            raise ValueError(f"{pair.ignore}: ignore mask {ignore.shape[::-1]} differs from the mask "
                             f"{in_focus.shape[::-1]}")
        if in_focus.shape != (image.height, image.width):
            if pair.mask not in _SIZE_WARNED:
                _SIZE_WARNED.add(pair.mask)  # once per file, not every epoch
                log.warning("%s: mask %s differs from the image %s in size: resized to the image (nearest)",
                            pair.mask, in_focus.shape[::-1], image.size)
            in_focus = _resized(in_focus, image.size)
            ignore = None if ignore is None else _resized(ignore, image.size)
        if self.transform is None:
            valid = np.ones_like(in_focus, np.uint8) if ignore is None else (~ignore).astype(np.uint8)
            return dict(image=np.asarray(image), target=in_focus.astype(np.uint8), valid=valid, stem=pair.stem)
        if ignore is None:
            img_t, target = self.transform(image, in_focus_to_pil(in_focus))
            valid = torch.ones_like(target)
        else:
            img_t, target, valid = self.transform(image, in_focus_to_pil(in_focus), in_focus_to_pil(ignore))
        return dict(image=img_t, target=target, valid=valid, stem=pair.stem)


def blurred_everywhere(image: Image.Image, shape: tuple, low: float, high: float) -> tuple[Image.Image, np.ndarray]:
    """``image`` blurred by a disk of a radius drawn from [low, high] px in linear light, and an all-blurred
    label of ``shape`` (the mask's)."""
    radius = low + (high - low) * float(torch.rand(()))
    lin = disk_blur(srgb_to_linear(np.asarray(image)), radius)
    return Image.fromarray(linear_to_srgb(lin)), np.zeros(shape, bool)


def build_dataset(name: str, root=None, transform: Optional[Callable] = None, *,
                  blur_everywhere: Optional[tuple[float, float]] = None, **kw) -> DBDDataset:
    """``DBDDataset(load_pairs(name, root, **kw), transform, blur_everywhere)``: a registered dataset ready for a
    DataLoader."""
    return DBDDataset(load_pairs(name, root, **kw), transform, blur_everywhere)


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
