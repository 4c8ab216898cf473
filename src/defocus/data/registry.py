"""The dataset registry: where each benchmark lives under a data root, how it pairs, its raw mask polarity.

Registry layout under a data root (what ``defocus data prepare`` writes; file names and bytes are kept)::

    ROOT/CUHK/images/out_of_focusNNNN.jpg|.JPG   ROOT/CUHK/masks/out_of_focusNNNN.png   704, white = blur
    ROOT/DUT/train/{images,masks}/               600, white = in focus
    ROOT/DUT/test/{images,masks}/                500, white = in focus
    ROOT/CTCUG/{images,masks}/                   150, white = blur
    ROOT/EBD/{images,masks}/                     1605, white = in focus (sorted: 1305 shallow DOF, then 300 wide DOF)
    ROOT/MFIFB/{images,masks,ignore}/            focus-pair labels (``defocus data prepare mfifb``), white = in focus
    ROOT/DFD/{images,masks,ignore}/              aperture-pair labels (``defocus data prepare dfd``), white = in focus

Labels derived from photo pairs (:mod:`defocus.data.pairs`) come with an ignore mask per image (white =
undetermined: the pair cannot tell), paired by stem like the mask; evaluation and training leave those pixels out.

Images and masks pair by file stem. Masks keep their raw polarity on disk; every :class:`Pair` carries it, and
:func:`~defocus.data.masks.read_mask` turns it into True = in focus per sample.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Optional

from ..listfiles import parse_list, read_list_lines
from .files import list_images, pair_folders, read_list_file
from .masks import BLUR, IN_FOCUS, check_polarity

log = logging.getLogger(__name__)

DATA_ROOT_ENV = "DEFOCUS_DATA"


class DataError(ValueError):
    """A dataset cannot be loaded as asked (missing folder, unpaired files, missing split stems)."""


@dataclass(frozen=True)
class Pair:
    """One image and its ground-truth mask; ``mask_white`` says what white means in the raw mask
    ("blur" or "in-focus"), so combined datasets can invert per sample; ``ignore`` is the sample's ignore mask
    (white = undetermined pixels, left out of scores and losses), or None when every pixel is labelled."""

    image: Path
    mask: Path
    stem: str
    mask_white: str
    ignore: Optional[Path] = None


@dataclass(frozen=True)
class Part:
    """One folder pair of a dataset, optionally restricted to a subset of its files.

    ``subset`` is None (all files), ``"split:<file>"`` (stems in a package split file, file order),
    ``"list"`` (stems in the user's list file), ``"first:<n>"`` or ``"last:<n>"`` (by sorted file name).
    ``ignore`` is the folder of ignore masks (white = undetermined), one per image, for derived labels."""

    images: str
    masks: str
    mask_white: str
    subset: Optional[str] = None
    ignore: Optional[str] = None


@dataclass(frozen=True)
class DatasetSpec:
    """A registered dataset: its parts, the expected number of pairs, and the download it is prepared from."""

    name: str
    description: str
    parts: tuple
    expected: Optional[int] = None
    family: Optional[str] = None


_CUHK = ("CUHK/images", "CUHK/masks", BLUR)
_DUT_TR = ("DUT/train/images", "DUT/train/masks", IN_FOCUS)
_DUT_TE = ("DUT/test/images", "DUT/test/masks", IN_FOCUS)
_CTCUG = ("CTCUG/images", "CTCUG/masks", BLUR)
_EBD = ("EBD/images", "EBD/masks", IN_FOCUS)
_MFIFB = ("MFIFB/images", "MFIFB/masks", IN_FOCUS)
_DFD = ("DFD/images", "DFD/masks", IN_FOCUS)

_SPECS = [
    DatasetSpec("cuhk", "CUHK defocus blur detection set, all 704 images (Shi et al. 2014)",
                (Part(*_CUHK),), 704, "cuhk"),
    DatasetSpec("cuhk-tr1", "CUHK-TR-1: the 604 CUHK images outside BTBNet's test list",
                (Part(*_CUHK, "split:TR-1.txt"),), 604, "cuhk"),
    DatasetSpec("cuhk-te1", "CUHK-TE-1: BTBNet's 100 CUHK test images",
                (Part(*_CUHK, "split:TE-1.txt"),), 100, "cuhk"),
    DatasetSpec("cuhk2-tr", "CUHK-TR-2 (MA-GANet split): CUHK stems from a user-given list file",
                (Part(*_CUHK, "list"),), None, "cuhk"),
    DatasetSpec("cuhk2-te", "CUHK-TE-2 (MA-GANet split): CUHK stems from a user-given list file",
                (Part(*_CUHK, "list"),), None, "cuhk"),
    DatasetSpec("dut-tr", "DUT-DBD training set (Zhao et al., BTBNet)", (Part(*_DUT_TR),), 600, "dut"),
    DatasetSpec("dut-te", "DUT-DBD test set", (Part(*_DUT_TE),), 500, "dut"),
    DatasetSpec("ctcug", "CTCUG test set (Tang et al., DeFusionNet)", (Part(*_CTCUG),), 150, "ctcug"),
    DatasetSpec("ebd", "EBD, all 1605 images (D-DFFNet)", (Part(*_EBD),), 1605, "ebd"),
    DatasetSpec("ebd1305", "EBD(1305): the first 1305 (sorted) shallow-DOF images",
                (Part(*_EBD, "first:1305"),), 1305, "ebd"),
    DatasetSpec("ebd300", "EBD(300): the last 300 (sorted) wide-DOF images", (Part(*_EBD, "last:300"),), 300, "ebd"),
    DatasetSpec("cuhk-tr1+dut-tr", "CUHK-TR-1 & DUT-TR (1204 images; CUHK labels inverted per sample)",
                (Part(*_CUHK, "split:TR-1.txt"), Part(*_DUT_TR)), 1204, None),
    DatasetSpec("cuhk2-tr+dut-tr", "CUHK-TR-2 & DUT-TR (user list for CUHK-TR-2)",
                (Part(*_CUHK, "list"), Part(*_DUT_TR)), None, None),
    DatasetSpec("mfifb", "MFIFB focus pairs: real optical pairs, labels derived from the pair (both images)",
                (Part(*_MFIFB, ignore="MFIFB/ignore"),), 78, "mfifb"),
    *[DatasetSpec(f"mfifb-{split}", f"MFIFB focus pairs, {split} split (by scene)",
                  (Part(*_MFIFB, f"split:mfifb-{split}.txt", ignore="MFIFB/ignore"),), n, "mfifb")
      for split, n in (("train", 38), ("val", 24), ("test", 16))],
    DatasetSpec("dfd", "Indoor aperture pairs (Carvalho et al. 2018): f/2.8 images, labels from the f/8 partner",
                (Part(*_DFD, ignore="DFD/ignore"),), 81, "dfd"),
    *[DatasetSpec(f"dfd-{split}", f"Indoor aperture pairs, {split} split (by scene)",
                  (Part(*_DFD, f"split:dfd-{split}.txt", ignore="DFD/ignore"),), n, "dfd")
      for split, n in (("train", 41), ("val", 24), ("test", 16))],
    DatasetSpec("folder", "any folder of images plus a folder of masks with a declared polarity", (), None, None),
]
REGISTRY = {s.name: s for s in _SPECS}


def _key(name: str) -> str:
    return str(name).strip().lower().replace("_", "-")


def canonical_name(name: str) -> str:
    """A dataset name as the registry compares names: case, ``-`` and ``_`` aside (``DUT_TE`` -> ``dutte``)."""
    return _key(name).replace("-", "")


_ALIASES = {canonical_name(n): n for n in REGISTRY}


def list_datasets() -> list[str]:
    """Names of the registered datasets (any ``a+b`` combination of them also loads)."""
    return list(REGISTRY)


def get_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name`` (case, '-' and '_' are ignored: ``CUHK-TE-1`` is ``cuhk-te1``)."""
    canon = canonical_name(name)
    if canon in _ALIASES:
        return REGISTRY[_ALIASES[canon]]
    raise DataError(f"unknown dataset {name!r}; registered: {', '.join(list_datasets())}")


def is_registered(name: str) -> bool:
    """Whether ``name`` loads from the registry: a registered name, or an ``a+b`` combination of them."""
    return all(canonical_name(part) in _ALIASES for part in str(name).split("+"))


def split_stems(split_file: str) -> list[str]:
    """Stems of a split shipped with the package (``TE-1.txt``, ``TR-1.txt``), in file order."""
    return parse_list(resources.files("defocus.data").joinpath("splits", split_file).read_text())


def packaged_splits() -> list[str]:
    """Names of the splits shipped with the package (``dfd-train``, ``mfifb-val``, ``TE-1``, ...), sorted."""
    return sorted(p.name[:-4] for p in resources.files("defocus.data").joinpath("splits").iterdir()
                  if p.name.endswith(".txt") and p.name != "mfifb-excluded.txt")


def resolve_split(split: str) -> list[str]:
    """The stems of ``split``: a split shipped with the package (``dfd-train``, with or without ``.txt``) or the
    path of a stem list file. ``ValueError`` naming the packaged splits when it is neither."""
    name = split[:-4] if split.endswith(".txt") else split
    if "/" not in split and name in packaged_splits():
        return split_stems(f"{name}.txt")
    if Path(split).is_file():
        return read_list_lines(split)
    raise ValueError(f"unknown split {split!r}: neither a list file nor a packaged split "
                     f"({', '.join(packaged_splits())})")


def resolve_root(root) -> Path:
    """The data root: the argument, else the ``DEFOCUS_DATA`` environment variable."""
    if root is None:
        root = os.environ.get(DATA_ROOT_ENV)
        if not root:
            raise DataError(f"no data root given and {DATA_ROOT_ENV} is not set")
    return Path(root).expanduser()


def _subset_stems(subset: str, list_file) -> Optional[list[str]]:
    if subset.startswith("split:"):
        return split_stems(subset.split(":", 1)[1])
    if subset == "list":
        if list_file is None:
            raise DataError("this dataset needs a list file of stems (--list-file, list_file=...); the CUHK-2 split "
                            "is not shipped")
        return read_list_file(Path(list_file))
    return None


def _ignore_masks(part: Part, root: Path) -> dict:
    """Stem -> ignore-mask file of a part ({} when the part has none)."""
    if part.ignore is None:
        return {}
    folder = root / part.ignore
    if not folder.is_dir():
        raise DataError(f"{folder}: folder of ignore masks not found (run `defocus data prepare` or check --root)")
    return {p.stem: p for p in list_images(folder)}


def _part_pairs(part: Part, root: Path, list_file, strict: bool, pairing: str = "stem") -> list[Pair]:
    img_dir, mask_dir = root / part.images, root / part.masks
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"{d}: folder not found (run `defocus data prepare` or check --root)")
    images, masks = list_images(img_dir), list_images(mask_dir)
    res = pair_folders(images, masks, pairing)
    ignores = _ignore_masks(part, root)
    pairs = [Pair(i, m, i.stem, part.mask_white, ignores.get(i.stem)) for i, m in res.pairs]
    problems = []
    if part.ignore is not None:
        lacking = [p.stem for p in pairs if p.ignore is None]
        if lacking:
            problems.append(f"{len(lacking)} images without an ignore mask in {root / part.ignore}, "
                            f"e.g. {lacking[0]}")
            pairs = [p for p in pairs if p.ignore is not None]
    stems = _subset_stems(part.subset, list_file) if part.subset else None
    if stems is not None:
        by_stem = {p.stem: p for p in pairs}
        missing = [s for s in stems if s not in by_stem]
        if missing:
            problems.append(f"{len(missing)} listed stems have no image/mask pair in {img_dir.parent}, "
                            f"e.g. {', '.join(missing[:5])}")
        pairs = [by_stem[s] for s in stems if s in by_stem]
    else:
        if res.images_without_mask:
            problems.append(f"{len(res.images_without_mask)} images without a mask, "
                            f"e.g. {res.images_without_mask[0]}")
        if res.masks_without_image:
            problems.append(f"{len(res.masks_without_image)} masks without an image, "
                            f"e.g. {res.masks_without_image[0]}")
        if part.subset and part.subset.startswith(("first:", "last:")):
            kind, n = part.subset.split(":")
            n = int(n)
            if len(pairs) < n:
                problems.append(f"{img_dir}: {len(pairs)} pairs, fewer than the {n} this subset takes")
            pairs = pairs[:n] if kind == "first" else pairs[-n:]
    if res.duplicate_stems:
        problems.append(f"{len(res.duplicate_stems)} files share a stem with another file, "
                        f"e.g. {res.duplicate_stems[0]}")
    for msg in problems:
        if strict:
            raise DataError(f"{msg} (`defocus data verify` lists every problem; strict=False skips them)")
        log.warning("%s; skipped", msg)
    return pairs


def load_pairs(name: str, root=None, list_file=None, image_dir=None, mask_dir=None, mask_white: str = IN_FOCUS,
               *, strict: bool = True, pairing: str = "stem", ignore_dir=None) -> list:
    """The (image, mask) pairs of a registered dataset under ``root`` (see the module docstring for the layout).

    ``name`` may combine datasets with ``+`` (``"cuhk-tr1+dut-tr"``); each :class:`Pair` keeps its own polarity.
    ``"cuhk2-tr"``/``"cuhk2-te"`` need ``list_file`` (one stem or file name per line). ``"folder"`` pairs
    ``image_dir`` with ``mask_dir`` (default ``root/images`` and ``root/masks``) by stem, or by sorted order with
    ``pairing="sorted"``, with the declared ``mask_white`` polarity. With ``strict`` (default) unpaired files or
    missing listed stems raise :class:`DataError`; otherwise they are logged and skipped. ``ignore_dir`` gives a
    ``"folder"`` dataset its ignore masks (white = undetermined, by stem; e.g. ``defocus data pairs`` output)."""
    names = [n for n in str(name).split("+") if n.strip()]
    if len(names) > 1 and canonical_name(name) not in _ALIASES:
        return [p for n in names for p in load_pairs(n, root, list_file, image_dir, mask_dir, mask_white,
                                                     strict=strict, pairing=pairing, ignore_dir=ignore_dir)]
    spec = get_spec(name)
    if spec.name == "folder":
        if image_dir is None or mask_dir is None:
            base = resolve_root(root)
            image_dir = image_dir or base / "images"
            mask_dir = mask_dir or base / "masks"
        part = Part(str(Path(image_dir).resolve()), str(Path(mask_dir).resolve()), check_polarity(mask_white),
                    ignore=None if ignore_dir is None else str(Path(ignore_dir).resolve()))
        pairs = _part_pairs(part, Path("/"), None, strict, pairing)
    else:
        base = resolve_root(root)
        pairs = [p for part in spec.parts for p in _part_pairs(part, base, list_file, strict)]
    if not pairs:
        raise DataError(f"dataset {name!r}: no image/mask pairs found")
    return pairs
