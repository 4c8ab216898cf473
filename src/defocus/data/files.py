"""Image-file listing and image/mask pairing shared by the registry, ``prepare`` and ``verify``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..imageio import IMAGE_SUFFIXES  # one list of readable image suffixes for the whole package
from ..listfiles import read_list_stems


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix (any case) is a readable image format."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by file name (the reference code's pairing order)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def list_other_files(folder: Path) -> list[Path]:
    """Visible files in ``folder`` that are not images (stray files a download may carry)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in IMAGE_SUFFIXES)


@dataclass
class Pairing:
    """The result of matching two folders' files: pairs plus everything that did not match."""

    pairs: list[tuple[Path, Path]] = field(default_factory=list)
    images_without_mask: list[Path] = field(default_factory=list)
    masks_without_image: list[Path] = field(default_factory=list)
    duplicate_stems: list[Path] = field(default_factory=list)


def _by_stem(files: list[Path], dups: list[Path]) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in files:
        if p.stem in out:
            dups.append(p)
        else:
            out[p.stem] = p
    return out


def pair_by_stem(images: list[Path], masks: list[Path]) -> Pairing:
    """Pair files with equal stems (``a.JPG`` with ``a.png``); keeps the images' sorted order."""
    res = Pairing()
    im = _by_stem(images, res.duplicate_stems)
    mk = _by_stem(masks, res.duplicate_stems)
    for stem, p in im.items():
        if stem in mk:
            res.pairs.append((p, mk[stem]))
        else:
            res.images_without_mask.append(p)
    res.masks_without_image = [p for s, p in mk.items() if s not in im]
    return res


def pair_folders(images: list[Path], masks: list[Path], pairing: str = "stem") -> Pairing:
    """Pair image and mask files by ``"stem"`` or by ``"sorted"`` file order (the reference code's rule for
    DUT, CTCUG and EBD; only sound when the counts are equal)."""
    if pairing == "stem":
        return pair_by_stem(images, masks)
    if pairing == "sorted":
        res = Pairing(pairs=list(zip(images, masks)))
        res.images_without_mask = images[len(masks):]
        res.masks_without_image = masks[len(images):]
        return res
    raise ValueError(f"unknown pairing {pairing!r} (use 'stem' or 'sorted')")


def read_list_file(path: Path) -> list[str]:
    """Stems listed in a split file, in file order (see :func:`defocus.listfiles.read_list_stems`: one name per
    line, with or without extension, or the ``<k>.bmp--<name>.jpg`` lines of the reference ``split.txt``; blank
    lines and ``#`` comment lines are skipped)."""
    return read_list_stems(path)
