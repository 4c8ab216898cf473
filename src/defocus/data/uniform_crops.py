"""Uniform crops of labelled photos: windows that are blurred everywhere or sharp (almost) everywhere.

The labelled real photos (``defocus data prepare mfifb|dfd``) are mixed scenes: part in focus, part blurred.
A detector must also call a photo that is defocused everywhere blurred, and one that is sharp everywhere in
focus. :func:`uniform_crops` cuts such photos out of the labelled ones: for each image it slides a square window
(side ``side`` x the image's short side, step ``stride`` x the side) and keeps windows where at least
``min_determined`` of the pixels carry a label and at least ``purity`` of those labelled pixels are blurred (a
``blurred`` crop) or in focus (a ``sharp`` crop). Per image and kind the window with the largest labelled share
is kept (the first one in row order on a tie).

The crops are written as a prepared set: ``OUT/images/<stem>_<kind>.png`` (the full-resolution pixels of the
window as the dataset loader reads them beside their masks: as stored, no EXIF rotation, 16-bit scaled to 8 bits;
no resampling; PNG so nothing is re-encoded lossily), ``OUT/masks/<stem>_<kind>.png`` (255 = in focus),
``OUT/ignore/<stem>_<kind>.png`` (255 = undetermined), the stem lists ``OUT/blurred.txt`` and ``OUT/sharp.txt``,
and ``OUT/crops.tsv`` (crop stem, kind, source stem, window ``x y side``, labelled share, purity). Use one output
folder per stem list (split).

With ``whole_label`` the crops are written for training instead: every pixel carries its crop's kind (the mask is
all in focus for a sharp crop, all blurred for a blurred one) and no pixel is undetermined, as a person labels a
photo that is sharp or blurred everywhere. The pair labels leave flat parts of a crop undetermined, and a training
loss that fills undetermined pixels from another model's prediction would otherwise hand a sharp crop's walls to
a model that calls small sharp photos blurred. Evaluation crops keep the pair labels (the default).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .. import imageio
from ..maps import read_mask
from .files import is_image_file
from .registry import DataError

BLURRED, SHARP = "blurred", "sharp"
KINDS = (BLURRED, SHARP)

#: Window side as a fraction of the image's short side.
SIDE = 0.5
#: Window step as a fraction of the window side.
STRIDE = 0.25
#: Least share of a window's pixels that carry a label (the rest is undetermined).
MIN_DETERMINED = 0.4
#: Least share of a window's labelled pixels that must be of its kind.
PURITY = 0.98
#: Smallest window side in pixels: a network enlarges a smaller crop to its input size, and the enlargement
#: itself blurs a sharp crop (a 90-pixel crop squashed to 320 x 320 no longer looks sharp at that scale).
MIN_SIDE_PX = 200


@dataclass(frozen=True)
class UniformCrop:
    """One kept window: the crop's stem, its kind, the source image's stem, the window (x, y, side) in source
    pixels, the share of the window's pixels that carry a label, and the share of those that are of its kind."""

    stem: str
    kind: str
    source: str
    x: int
    y: int
    side: int
    determined: float
    purity: float


def _window_sums(a: np.ndarray, ys: list[int], xs: list[int], side: int) -> np.ndarray:
    """Sum of ``a`` over every side x side window with top-left corner (y, x), y in ``ys``, x in ``xs``."""
    s = np.zeros((a.shape[0] + 1, a.shape[1] + 1), np.int64)
    s[1:, 1:] = a.astype(np.int64).cumsum(0).cumsum(1)
    y0, x0 = np.asarray(ys)[:, None], np.asarray(xs)[None, :]
    return s[y0 + side, x0 + side] - s[y0, x0 + side] - s[y0 + side, x0] + s[y0, x0]


def _starts(length: int, side: int, step: int) -> list[int]:
    starts = list(range(0, length - side + 1, step))
    if starts[-1] != length - side:
        starts.append(length - side)  # the last window touches the far edge
    return starts


def find_uniform_windows(in_focus: np.ndarray, undetermined: np.ndarray, side: float = SIDE,
                         stride: float = STRIDE, min_determined: float = MIN_DETERMINED,
                         purity: float = PURITY, min_side_px: int = MIN_SIDE_PX,
                         ) -> dict[str, tuple[int, int, int, float, float]]:
    """The best uniform window of each kind in one label map (bool HxW arrays, True = in focus / undetermined).

    Returns kind -> ``(x, y, side_px, determined_share, purity)`` for the kinds that have a window meeting
    ``min_determined`` and ``purity`` (see the module docstring); a kind without one is absent. An image whose
    window side would be below ``min_side_px`` pixels has none."""
    _check_options(side, stride, min_determined, purity)
    if in_focus.shape != undetermined.shape:
        raise ValueError(f"mask {in_focus.shape} and ignore mask {undetermined.shape} differ in size")
    h, w = in_focus.shape
    side_px = max(1, int(round(side * min(h, w))))
    if side_px < min_side_px:
        return {}
    step = max(1, int(round(stride * side_px)))
    ys, xs = _starts(h, side_px, step), _starts(w, side_px, step)
    determined = ~undetermined
    det = _window_sums(determined, ys, xs, side_px)
    focus = _window_sums(in_focus & determined, ys, xs, side_px)
    share = det / float(side_px * side_px)
    with np.errstate(invalid="ignore", divide="ignore"):
        pure = {SHARP: focus / det, BLURRED: (det - focus) / det}
    out = {}
    for kind in KINDS:
        ok = (share >= min_determined) & (det > 0) & (pure[kind] >= purity)
        if not ok.any():
            continue
        i, j = np.unravel_index(np.argmax(np.where(ok, share, -1.0)), share.shape)  # first maximum in row order
        out[kind] = (xs[j], ys[i], side_px, float(share[i, j]), float(pure[kind][i, j]))
    return out


def _check_options(side, stride, min_determined, purity) -> None:
    if not 0 < side <= 1:
        raise ValueError(f"side {side}: expected a fraction of the short side in (0, 1]")
    if not 0 < stride <= 1:
        raise ValueError(f"stride {stride}: expected a fraction of the window side in (0, 1]")
    for name, v in (("min_determined", min_determined), ("purity", purity)):
        if not 0 <= v <= 1:
            raise ValueError(f"{name} {v}: expected a fraction in [0, 1]")


def _set_files(set_dir: Path, stem: str) -> tuple[Path, Path, Path]:
    images = [p for p in (set_dir / "images").glob(f"{glob.escape(stem)}.*") if p.stem == stem and is_image_file(p)]
    if len(images) != 1:
        raise DataError(f"{set_dir / 'images' / stem}.*: " + ("image not found" if not images else
                                                              "more than one image with this stem"))
    mask, ignore = set_dir / "masks" / f"{stem}.png", set_dir / "ignore" / f"{stem}.png"
    for p in (mask, ignore):
        if not p.is_file():
            raise DataError(f"{p}: not found")
    return images[0], mask, ignore


def _remove_earlier_crops(out: Path, keep: set) -> None:
    """Remove the crops an earlier run listed in ``out/crops.tsv`` that this run does not write again."""
    try:
        rows = (out / "crops.tsv").read_text().splitlines()[1:]
    except OSError:
        return
    for stem in {row.split("\t")[0] for row in rows if row.strip()} - keep:
        if "/" in stem or "\\" in stem or stem.startswith("."):
            continue
        for sub in ("images", "masks", "ignore"):
            (out / sub / f"{stem}.png").unlink(missing_ok=True)


def _save_png(arr: np.ndarray, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    Image.fromarray(arr).save(tmp, format="PNG")
    os.replace(tmp, path)


def uniform_crops(set_dir, stems, out, side: float = SIDE, stride: float = STRIDE,
                  min_determined: float = MIN_DETERMINED, purity: float = PURITY,
                  min_side_px: int = MIN_SIDE_PX, whole_label: bool = False) -> list[UniformCrop]:
    """Cut the uniform crops of the images ``stems`` of the prepared set ``set_dir`` (``images/``, ``masks/``
    255 = in focus, ``ignore/`` 255 = undetermined) and write them as a prepared set under ``out`` (layout in the
    module docstring). At most one crop of each kind per image. Returns the crops, in stem order, blurred first.
    ``whole_label``: label every pixel of a crop as its kind, none undetermined (training crops; module
    docstring).

    Raises:
        DataError: a missing folder or file, or a mask whose size differs from its image.
        ValueError: an option outside its range.
    """
    _check_options(side, stride, min_determined, purity)
    set_dir, out = Path(set_dir).expanduser(), Path(out).expanduser()
    for sub in ("images", "masks", "ignore"):
        if not (set_dir / sub).is_dir():
            raise DataError(f"{set_dir / sub}: not found (expected a prepared set: images/, masks/, ignore/)")
    stems = list(stems)
    if not stems:
        raise DataError("no images listed")
    if out.resolve() == set_dir.resolve():
        raise DataError(f"{out}: the output folder is the input set")
    crops: list[UniformCrop] = []
    pending = []
    for stem in stems:
        image_path, mask_path, ignore_path = _set_files(set_dir, stem)
        in_focus, undetermined = read_mask(mask_path), read_mask(ignore_path)  # white = True
        with Image.open(image_path) as im:
            size = im.size
        if (size[1], size[0]) != in_focus.shape or in_focus.shape != undetermined.shape:
            raise DataError(f"{stem}: image {size[0]}x{size[1]}, mask {in_focus.shape[1]}x{in_focus.shape[0]}, "
                            f"ignore mask {undetermined.shape[1]}x{undetermined.shape[0]}: sizes differ")
        found = find_uniform_windows(in_focus, undetermined, side, stride, min_determined, purity, min_side_px)
        for kind in KINDS:
            if kind in found:
                x, y, s, share, pure = found[kind]
                crops.append(UniformCrop(f"{stem}_{kind}", kind, stem, x, y, s, share, pure))
                pending.append((image_path, in_focus, undetermined))
    _remove_earlier_crops(out, {c.stem for c in crops})
    for sub in ("images", "masks", "ignore"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    for c, (image_path, in_focus, undetermined) in zip(crops, pending):
        with Image.open(image_path) as im:
            im.load()
            rgb = np.asarray(imageio.to_rgb(im))  # the dataset loader's pixels, 16-bit scaled rather than clipped
        win = np.s_[c.y:c.y + c.side, c.x:c.x + c.side]
        _save_png(rgb[win], out / "images" / f"{c.stem}.png")
        mask, ignore = in_focus[win], undetermined[win]
        if whole_label:
            mask, ignore = np.full_like(mask, c.kind == SHARP), np.zeros_like(ignore)
        _save_png(mask.astype(np.uint8) * 255, out / "masks" / f"{c.stem}.png")
        _save_png(ignore.astype(np.uint8) * 255, out / "ignore" / f"{c.stem}.png")
    for kind in KINDS:
        (out / f"{kind}.txt").write_text("".join(f"{c.stem}\n" for c in crops if c.kind == kind))
    rows = ["stem\tkind\tsource\tx\ty\tside\tdetermined\tpurity"]
    rows += [f"{c.stem}\t{c.kind}\t{c.source}\t{c.x}\t{c.y}\t{c.side}\t{c.determined:.4f}\t{c.purity:.4f}"
             for c in crops]
    (out / "crops.tsv").write_text("\n".join(rows) + "\n")
    return crops
