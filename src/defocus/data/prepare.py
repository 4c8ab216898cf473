"""``defocus data prepare``: turn the authors' download layouts into the registry layout, without re-encoding.

Recognised download layouts (method.md §7.1; folder names are matched case-insensitively anywhere up to three
levels below ``--src``):

- CUHK: ``image/`` (``out_of_focusNNNN.jpg`` / ``.JPG``; motion-blur files are skipped) and ``gt/`` (``.png``)
- DUT-DBD: ``DUT600S_Training/`` + ``DUT600GT_Training/`` (train), ``image/`` + ``gt/`` (test)
- CTCUG: ``CTCUG_images/`` + ``CTCUG_gt/``
- EBD: ``image/`` + ``gt/``

Generic names (``image/``, ``images/``, ``gt/``) are only taken for DUT-test, CTCUG and EBD when the path from
``--src`` down names the dataset (``.../EBD/image``, ``DUT-DBD_Dataset/image``) or, for DUT, when they sit
beside ``DUT600S_Training``; CUHK's are recognised by their ``out_of_focus`` file names.

Files pair by stem; when the stems differ but the counts agree, they pair by sorted file order (the reference
code's rule) and the mask is stored under the image's stem. Files are copied (or hard/soft linked) byte for byte.
"""
from __future__ import annotations

import filecmp
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from tqdm import tqdm

from ..atomic import atomic_create
from .files import Pairing, list_images, pair_by_stem, pair_folders
from .registry import DataError, get_spec

log = logging.getLogger(__name__)

PAIR_FAMILIES = ("mfifb", "dfd")  # labelled from photo pairs by defocus.data.pair_sets, not copied
MODES = ("copy", "hardlink", "symlink")


@dataclass(frozen=True)
class SourcePart:
    """One image folder / mask folder pair of a download, and where it goes under the data root."""

    label: str
    image_dirs: tuple
    mask_dirs: tuple
    dest: str
    name_prefix: Optional[str] = None
    near: Optional[str] = None
    generic: tuple = ()
    hint: Optional[str] = None


LAYOUTS = {
    "cuhk": (SourcePart("CUHK", ("image", "images"), ("gt", "masks"), "CUHK", name_prefix="out_of_focus"),),
    "dut": (SourcePart("DUT train", ("DUT600S_Training",), ("DUT600GT_Training",), "DUT/train"),
            SourcePart("DUT test", ("image", "images"), ("gt", "masks"), "DUT/test", near="DUT600S_Training",
                       generic=("image", "images"), hint="dut")),
    "ctcug": (SourcePart("CTCUG", ("CTCUG_images", "images", "image"), ("CTCUG_gt", "gt", "masks"), "CTCUG",
                         generic=("images", "image"), hint="ctcug"),),
    "ebd": (SourcePart("EBD", ("image", "images"), ("gt", "masks"), "EBD", generic=("image", "images"), hint="ebd"),),
}


@dataclass
class PrepareReport:
    """What ``prepare`` did: files written or kept per part, pairs renamed, every problem found, and the source
    items left out on purpose (``skipped``, with the reason)."""

    family: str
    root: Path
    written: dict = field(default_factory=dict)
    kept: dict = field(default_factory=dict)
    renamed: int = 0
    parts: list = field(default_factory=list)
    problems: list = field(default_factory=list)
    skipped: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


def family_of(name: str) -> str:
    """The download family (cuhk, dut, ctcug, ebd, mfifb, dfd) a dataset name is prepared from."""
    key = name.strip().lower()
    if key in LAYOUTS or key in PAIR_FAMILIES:
        return key
    fam = get_spec(name).family
    if fam is None:
        raise DataError(f"dataset {name!r} is not prepared from one download; prepare each part "
                        f"({', '.join(LAYOUTS)})")
    return fam


def _find_dirs(src: Path, names: tuple, max_depth: int = 3) -> list[Path]:
    """Folders under ``src`` (``src`` itself included, down to ``max_depth`` levels) named one of ``names``,
    shallowest first."""
    wanted = {n.lower() for n in names}
    found, level = [], [src]
    for _ in range(max_depth + 1):
        found += [d for d in level if d.name.lower() in wanted]
        level = [c for d in level for c in _subfolders(d)]
    return found


def _subfolders(folder: Path) -> list[Path]:
    """The visible sub-folders of ``folder``, sorted; none when it cannot be listed."""
    try:
        return [c for c in sorted(folder.iterdir()) if c.is_dir() and not c.name.startswith(".")]
    except OSError:
        return []


def _hinted(src: Path, folder: Path, part: SourcePart) -> bool:
    """Generic folder names (``image/``, ``gt/``) only count inside a download whose path (from ``src``'s
    name down) names the dataset, or beside ``part.near``: an EBD tree is never taken for DUT's test set."""
    src, folder = Path(os.path.abspath(src)), Path(os.path.abspath(folder))  # "--src ." names its folder too
    rel = str(folder.relative_to(src.parent)).lower()
    near = part.near and any(c.name.lower() == part.near.lower() for c in folder.parent.iterdir())
    return bool(near) or (part.hint is not None and part.hint in rel)


def _locate(src: Path, part: SourcePart) -> Optional[tuple[Path, Path]]:
    """The (images, masks) folders of ``part`` in a download (sibling folders; those beside ``part.near``
    preferred); None if absent."""
    found = []
    for img_name in part.image_dirs:
        for img_dir in _find_dirs(src, (img_name,)):
            if img_name in part.generic and not _hinted(src, img_dir, part):
                continue
            for mask_name in part.mask_dirs:
                mask_dir = next((c for c in img_dir.parent.iterdir()
                                 if c.is_dir() and c.name.lower() == mask_name.lower()), None)
                if mask_dir is not None:
                    found.append((img_dir, mask_dir))
    if part.near:
        near = [f for f in found if any(c.name.lower() == part.near.lower() for c in f[0].parent.iterdir())]
        found = near or found
    if part.name_prefix:  # the folder that holds the part's files, not another download's of the same name
        named = [f for f in found if any(c.name.lower().startswith(part.name_prefix) for c in f[0].iterdir())]
        found = named or found
    return found[0] if found else None


def _pair(images: list[Path], masks: list[Path]) -> tuple[Pairing, bool]:
    by_stem = pair_by_stem(images, masks)
    if (by_stem.images_without_mask or by_stem.masks_without_image) and len(images) == len(masks) \
            and not by_stem.duplicate_stems:
        return pair_folders(images, masks, "sorted"), True
    return by_stem, False


def _place(src: Path, dst: Path, mode: str, overwrite: bool) -> bool:
    """Put ``src`` at ``dst``; returns False when the same file (or one of the same content) was already there."""
    if dst.exists() or dst.is_symlink():
        if dst.resolve() == src.resolve() or (not overwrite and filecmp.cmp(dst, src, shallow=False)):
            return False
        if not overwrite:
            raise DataError(f"{dst}: exists with different content (use overwrite)")
    if mode == "copy":
        atomic_create(dst, lambda tmp: shutil.copyfile(src, tmp))
    elif mode == "hardlink":
        atomic_create(dst, lambda tmp: os.link(src, tmp))
    else:
        atomic_create(dst, lambda tmp: tmp.symlink_to(src.resolve()))
    return True


def _parts_wanted(name: str, family: str) -> set[str]:
    """The destination folders of ``family``'s parts that ``name`` needs: all of them for a family name, the
    dataset's own for a dataset name (``dut-te``: the DUT test part only)."""
    dests = {part.dest for part in LAYOUTS[family]}
    if name.strip().lower() in LAYOUTS:
        return dests
    folders = {Path(part.images).parent.as_posix() for part in get_spec(name).parts}
    return dests & folders or dests


def prepare_dataset(name: str, src, root, mode: str = "copy", overwrite: bool = False,
                    pair_options: Optional[dict] = None) -> PrepareReport:
    """Copy (``mode="copy"``) or link (``"hardlink"``, ``"symlink"``) a downloaded dataset from ``src`` into the
    registry layout under ``root``. ``name`` is a download family (cuhk, dut, ctcug, ebd) or any dataset name
    prepared from one. Unpaired files are not copied and are listed in the report's ``problems``.

    The photo-pair families ``mfifb`` and ``dfd`` are labelled instead (images copied, masks and ignore masks
    derived; see :func:`defocus.data.pair_sets.prepare_pairs`, which takes ``pair_options``)."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    family = family_of(name)
    if family in PAIR_FAMILIES:
        from .pair_sets import prepare_pairs

        return prepare_pairs(family, src, root, overwrite=overwrite, **(pair_options or {}))
    src, root = Path(src).expanduser(), Path(root).expanduser()
    if not src.is_dir():
        raise DataError(f"{src}: download folder not found")
    report = PrepareReport(family, root)
    wanted = _parts_wanted(name, family)
    for part in LAYOUTS[family]:
        located = _locate(src, part)
        if located is None:
            missing = (f"{part.label}: no {'/'.join(part.image_dirs)} + {'/'.join(part.mask_dirs)} folders found "
                       f"under {src}")
            if part.dest in wanted:
                report.problems.append(missing)
            else:
                log.info("%s (not needed for %s)", missing, name)
            continue
        img_dir, mask_dir = located
        images, masks = list_images(img_dir), list_images(mask_dir)
        if part.name_prefix:
            images = [p for p in images if p.name.lower().startswith(part.name_prefix)]
            masks = [p for p in masks if p.name.lower().startswith(part.name_prefix)]
        pairing, by_order = _pair(images, masks)
        if by_order:
            log.warning("%s: stems differ between %s and %s; paired by sorted file order",
                        part.label, img_dir, mask_dir)
        for p in pairing.images_without_mask:
            report.problems.append(f"{p}: image without a mask (not copied)")
        for p in pairing.masks_without_image:
            report.problems.append(f"{p}: mask without an image (not copied)")
        for p in pairing.duplicate_stems:
            report.problems.append(f"{p}: another file has the same stem (not copied)")
        dest_img, dest_mask = root / part.dest / "images", root / part.dest / "masks"
        dest_img.mkdir(parents=True, exist_ok=True)
        dest_mask.mkdir(parents=True, exist_ok=True)
        written = kept = 0
        for img, mask in tqdm(pairing.pairs, desc=f"prepare {part.label}", unit="pair", leave=False):
            mask_name = img.stem + mask.suffix
            report.renamed += mask_name != mask.name
            for s, d in ((img, dest_img / img.name), (mask, dest_mask / mask_name)):
                if _place(s, d, mode, overwrite):
                    written += 1
                else:
                    kept += 1
        report.written[part.label] = written
        report.kept[part.label] = kept
        report.parts.append(part.label)
        log.info("%s: %d pairs from %s -> %s", part.label, len(pairing.pairs), img_dir, root / part.dest)
    if not report.parts:
        raise DataError(f"no {family} download layout found under {src}: " + "; ".join(report.problems))
    return report


def prepared_datasets(report: PrepareReport) -> list[str]:
    """The registry names to verify after a prepare run."""
    if report.family == "dut":
        return [n for n, lbl in (("dut-tr", "DUT train"), ("dut-te", "DUT test")) if lbl in report.parts]
    return [report.family]
