"""Datasets of a training run, built from the ``data`` section of a :class:`~defocus.config.TrainConfig`."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

from torch.utils.data import ConcatDataset

from ..config import DataConfig

log = logging.getLogger(__name__)


def _entry_kwargs(entry: dict, data: DataConfig) -> dict:
    entry = dict(entry)
    if "name" not in entry:
        raise ValueError(f"dataset entry {entry!r} has no 'name'")
    entry.setdefault("root", data.data_root)
    if data.list_file is not None:
        entry.setdefault("list_file", data.list_file)
    return entry


def build_train_dataset(data: DataConfig, mean: Sequence[float], std: Sequence[float], seed: int = 42):
    """The training set: synthetic pairs rendered on the fly (``data.synthetic``), the concatenation of the
    registered datasets in ``data.train``, or both (synthetic first),
    with the paper's training transform (flip, resize, jitter, normalise)."""
    from ..data import transforms

    tf = transforms.train_transform(data.size, mean=mean, std=std, hflip=data.hflip, jitter=data.jitter)
    if data.synthetic is not None and not data.train:
        return build_synthetic(data.synthetic, data.size, tf, seed)
    if not data.train:
        raise ValueError("no training data: set data.train (registered datasets) or data.synthetic")
    from ..data import build_dataset

    sets = [build_dataset(transform=tf, **_entry_kwargs(e, data)) for e in data.train]
    if data.synthetic is not None:  # a mix: registered items always carry ``valid``, so synthetic ones must too
        sets.insert(0, build_synthetic(data.synthetic, data.size, tf, seed, with_valid=True))
    return sets[0] if len(sets) == 1 else ConcatDataset(sets)


def build_synthetic(spec: dict, size: int, transform, seed: int, with_valid: bool = False):
    """A :class:`~defocus.data.synth.SyntheticDefocusDataset` from ``{sources, length, seed, cfg}``."""
    from ..data import synth

    spec = dict(spec)
    sources = spec.pop("sources", None)
    if not sources:
        raise ValueError("data.synthetic needs 'sources': folders, or [images_dir, masks_dir] pairs")
    pairs = []
    for s in sources:
        if synth.procedural.scene_count(s) is not None:
            pairs.append(s)                             # scenes drawn in code, no files
        elif isinstance(s, (list, tuple)):
            pairs.append((Path(s[0]), Path(s[1])))
        elif (Path(s) / "images").is_dir():
            pairs.append((Path(s) / "images", Path(s) / "masks"))
        elif Path(s).is_dir():
            pairs += synth.list_natural_sources(s)      # a folder of <set>/images + <set>/masks
        else:
            raise FileNotFoundError(f"synthetic source {s} not found (relative paths start at {Path.cwd()})")
    length = spec.pop("length", None)
    s_seed = int(spec.pop("seed", seed))
    cfg = synth_config(spec.pop("cfg", None) or {})
    if spec:
        raise ValueError(f"unknown data.synthetic key(s): {', '.join(sorted(spec))}")
    return synth.SyntheticDefocusDataset(sources=pairs, size=size, length=None if length is None else int(length),
                                         seed=s_seed, transform=transform, cfg=cfg, with_valid=with_valid)


def synth_config(values: dict):
    """A ``SynthConfig`` from YAML values (lists become tuples, nested mappings nested dataclasses)."""
    import dataclasses

    from ..data import synth

    base = synth.SynthConfig()
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown data.synthetic.cfg key(s): {', '.join(unknown)}")
    kw = {}
    for k, v in values.items():
        default = getattr(base, k)
        if dataclasses.is_dataclass(default) and isinstance(v, dict):
            v = dataclasses.replace(default, **{a: tuple(b) if isinstance(b, list) else b for a, b in v.items()})
        elif isinstance(v, list):
            v = tuple(v)
        kw[k] = v
    return dataclasses.replace(base, **kw)


def build_val_dataset(data: DataConfig, mean, std) -> Optional[object]:
    """The validation set (``data.val``) at the training size, or None."""
    if not data.val:
        return None
    from ..data import build_dataset, transforms

    tf = transforms.eval_transform(data.size, mean=mean, std=std)
    return build_dataset(transform=tf, **_entry_kwargs(data.val, data))
