"""Datasets of a training run, built from the ``data`` section of a :class:`~defocus.config.TrainConfig`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import ConcatDataset, Dataset, default_collate

from ..config import DataConfig, SyntheticData

log = logging.getLogger(__name__)


def build_train_dataset(data: DataConfig, mean: Sequence[float], std: Sequence[float], seed: int = 42,
                        with_depth: bool = False):
    """The training set: synthetic pairs rendered on the fly (``data.synthetic``), the concatenation of the
    registered datasets in ``data.train``, or both (synthetic first),
    with the paper's training transform (flip, resize, jitter, normalise; ``data.zoom`` adds a random crop,
    ``data.upscale: false`` mirrors small photos out to the size instead of enlarging them; an entry with
    ``full_frame`` keeps its whole resized frames where ``data.crop`` cuts the others, so items differ in shape:
    :func:`shape_keys` tells them apart for batching). ``with_depth``: every item carries
    ``depth`` (the synthetic scenes' depth, 0 = unknown; all 0 for the registered datasets)."""
    from ..data import transforms

    def transform(full_frame: bool = False):
        crop = None if full_frame else data.crop
        pad_to = data.crop if full_frame and not data.upscale else None
        return transforms.train_transform(data.size, mean=mean, std=std, hflip=data.hflip, jitter=data.jitter,
                                          zoom=data.zoom, zoom_prob=data.zoom_prob, upscale=data.upscale,
                                          crop=crop, pad_to=pad_to)

    tf = transform()
    if with_depth and data.synthetic is None:
        raise ValueError("a scene-depth target needs rendered scenes: set data.synthetic")
    if data.synthetic is not None and not data.train:
        return build_synthetic(data.synthetic, data.size, tf, seed, with_depth=with_depth)
    if not data.train:
        raise ValueError("no training data: set data.train (registered datasets) or data.synthetic")
    from ..data import build_dataset

    sets = [build_dataset(transform=transform(e.full_frame), **e.dataset_kwargs(data.data_root, data.list_file))
            for e in data.train]
    if with_depth:
        sets = [UnknownDepth(s) for s in sets]
    if data.synthetic is not None:  # a mix: registered items always carry ``valid``, so synthetic ones must too
        sets.insert(0, build_synthetic(data.synthetic, data.size, tf, seed, with_valid=True, with_depth=with_depth))
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


def shape_keys(data: DataConfig, dataset) -> Optional[list]:
    """For each item of ``build_train_dataset(data, ...)``, a key that items coming out of the transform in one
    shape share (a ``data.crop`` window, or a ``full_frame`` entry's frame size read from its image header); None
    when no entry is ``full_frame`` (every item has one shape)."""
    if not any(e.full_frame for e in data.train):
        return None
    sets = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    entries = ([None] if data.synthetic is not None else []) + list(data.train)
    keys = []
    for entry, ds in zip(entries, sets):
        if entry is None or not entry.full_frame:
            keys += [(data.crop, data.crop)] * len(ds)
            continue
        for pair in (ds.base if isinstance(ds, UnknownDepth) else ds).pairs:
            with Image.open(pair.image) as im:
                width, height = im.size
            if data.upscale:
                keys.append((data.size, data.size))
            else:
                keys.append((max(min(height, data.size), data.crop), max(min(width, data.size), data.crop)))
    return keys


def collate_by_shape(items: list):
    """Collate a batch whose items may differ in image shape: a plain batch (a dict) when all share one shape, else
    a list of such batches, one per shape in order of first appearance (the trainer takes one step over them)."""
    groups: dict = {}
    for item in items:
        groups.setdefault(tuple(item["image"].shape), []).append(item)
    batches = [default_collate(g) for g in groups.values()]
    return batches[0] if len(batches) == 1 else batches


def batch_items(batch) -> int:
    """The number of samples in a batch from :func:`collate_by_shape`."""
    groups = batch if isinstance(batch, list) else [batch]
    return sum(len(g["image"]) for g in groups)


class UnknownDepth(Dataset):
    """A labelled dataset whose items gain ``depth`` = 0 (unknown) at the target's size, so they batch with
    synthetic scenes that carry their depth."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        item = dict(self.base[i])
        item["depth"] = torch.zeros_like(item["target"])
        return item


def build_synthetic(spec: SyntheticData, size: int, transform, seed: int, with_valid: bool = False,
                    with_depth: bool = False):
    """A :class:`~defocus.data.synth.SyntheticDefocusDataset` rendering ``spec`` at ``size`` (the renderer's seed:
    ``spec.seed``, else ``seed``); ``with_valid``: items carry a ``valid`` map (to mix with labelled pairs);
    ``with_depth``: items carry the scene's ``depth`` (0 = unknown). The scenes of ``spec.depth_photos`` (only
    those of ``spec.depth_photos_split`` when given) are its depth photos."""
    from ..data import synth

    pairs = []
    for s in spec.sources:
        if synth.procedural.scene_count(s) is not None:
            pairs.append(s)                             # scenes drawn in code, no files
        elif isinstance(s, tuple):
            pairs.append((Path(s[0]), Path(s[1])))
        elif (Path(s) / "images").is_dir():
            pairs.append((Path(s) / "images", Path(s) / "masks"))
        elif Path(s).is_dir():
            pairs += synth.list_natural_sources(s)      # a folder of <set>/images + <set>/masks
        else:
            raise FileNotFoundError(f"synthetic source {s} not found (relative paths start at {Path.cwd()})")
    photos = []
    if spec.depth_photos is not None:
        from ..data.depth_photos import list_depth_photos

        if not Path(spec.depth_photos).is_dir():
            raise FileNotFoundError(f"depth photos {spec.depth_photos} not found (relative paths start at {Path.cwd()})")
        photos = list_depth_photos(spec.depth_photos, spec.depth_photos_split)
        log.info("depth photos: %d scenes from %s (split %s)", len(photos), spec.depth_photos, spec.depth_photos_split)
    return synth.SyntheticDefocusDataset(sources=pairs, size=size, length=spec.length,
                                         seed=seed if spec.seed is None else spec.seed, transform=transform,
                                         cfg=spec.cfg, with_valid=with_valid, with_depth=with_depth,
                                         depth_photos=photos)


def build_val_dataset(data: DataConfig, mean, std) -> Optional[object]:
    """The validation set (``data.val``) at the training size, or None. With ``data.upscale: false`` a photo
    smaller than that keeps its own size on that side, as the network will be run (items then differ in size)."""
    if data.val is None:
        return None
    from ..data import build_dataset, transforms

    tf = transforms.eval_transform(data.size, mean=mean, std=std, upscale=data.upscale)
    return build_dataset(transform=tf, **data.val.dataset_kwargs(data.data_root, data.list_file))
