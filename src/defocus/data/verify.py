"""``defocus data verify``: check a prepared dataset and name every problem.

Checks: folders present, expected count, pairing (images without masks, masks without images, duplicate stems,
listed stems missing), every file decodes (corrupt files), image and mask sizes agree, mask values are binary,
ignore masks (labels derived from photo pairs) are present, of the image's size and binary,
and the polarity looks right (blur-fraction report: the mean blurred fraction, overall and along the frame).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from .files import list_images, list_other_files, pair_by_stem, read_list_file
from ..maps import check_polarity, decode_mask, image_values, mask_full_scale
from .registry import DataError, Part, get_spec, resolve_root, split_stems

log = logging.getLogger(__name__)

ERROR, WARNING = "error", "warning"
# Share of mask pixels with grey levels in [16, 239] above which a mask is not a binary mask at all; below it
# (e.g. DUT's JPEG-compressed ground truth, 2-6 %) it is reported as soft and binarised at 128 on load.
SOFT_MASK_LIMIT = 0.10
# The frame band used for the border blur fraction, as a fraction of the shorter side.
BORDER = 0.05
# Datasets made of wide depth-of-field images (all in focus) expect almost no blur.
_WIDE_DOF = {"ebd300"}


@dataclass
class Issue:
    """One problem: its kind (missing, unpaired, duplicate, count, corrupt, size-mismatch, non-binary, soft-mask,
    polarity, stray-file), the file it concerns, details and severity."""

    kind: str
    path: Optional[Path]
    detail: str
    severity: str = ERROR

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path is not None else ""
        return f"[{self.severity}] {self.kind}: {where}{self.detail}"


@dataclass
class VerifyReport:
    """The outcome of :func:`verify_dataset`; ``ok`` is False when any error was found."""

    name: str
    n_pairs: int = 0
    expected: Optional[int] = None
    issues: list = field(default_factory=list)
    blur_fractions: list = field(default_factory=list)
    border_blur_fractions: list = field(default_factory=list)
    polarities: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    undetermined_fractions: list = field(default_factory=list)

    @property
    def errors(self) -> list:
        """Issues of severity error."""
        return [i for i in self.issues if i.severity == ERROR]

    @property
    def warnings(self) -> list:
        """Issues of severity warning."""
        return [i for i in self.issues if i.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when no error was found (warnings allowed)."""
        return not self.errors

    def summary(self, strict: bool = False) -> str:
        """A few human-readable lines: counts, sizes, the polarity report and the verdict (``strict``: warnings
        fail it too)."""
        exp = f" (expected {self.expected})" if self.expected is not None else ""
        lines = [f"{self.name}: {self.n_pairs} pairs{exp}"]
        if self.sizes:
            common = sorted(self.sizes.items(), key=lambda kv: -kv[1])[:3]
            lines.append(f"  image sizes: {len(self.sizes)} distinct, most common "
                         + ", ".join(f"{w}x{h} ({n})" for (w, h), n in common))
        if self.blur_fractions:
            b = np.asarray(self.blur_fractions)
            e = np.asarray(self.border_blur_fractions)
            pol = ", ".join(f"{k}: white = {v}" for k, v in self.polarities.items())
            lines.append(f"  polarity ({pol}): blur fraction mean {b.mean():.3f} (min {b.min():.3f}, "
                         f"max {b.max():.3f}); along the frame {e.mean():.3f}")
        if self.undetermined_fractions:
            u = np.asarray(self.undetermined_fractions)
            lines.append(f"  undetermined pixels (ignore masks): median {np.median(u):.3f} "
                         f"(min {u.min():.3f}, max {u.max():.3f})")
        passed = self.ok and not (strict and self.warnings)
        lines.append(f"  {len(self.errors)} errors, {len(self.warnings)} warnings: "
                     + ("OK" if passed else "PROBLEMS FOUND" + (" (--strict)" if self.ok else "")))
        return "\n".join(lines)


def _selected(part: Part, list_file) -> tuple[Optional[list[str]], Optional[tuple[str, int]]]:
    if part.subset is None:
        return None, None
    if part.subset.startswith("split:"):
        return split_stems(part.subset.split(":", 1)[1]), None
    if part.subset == "list":
        if list_file is None:
            raise DataError("this dataset needs a list file of stems (list_file=...)")
        return read_list_file(Path(list_file)), None
    kind, n = part.subset.split(":")
    return None, (kind, int(n))


def _check_part(part: Part, root: Path, list_file, report: VerifyReport) -> list:
    add = report.issues.append
    img_dir, mask_dir = root / part.images, root / part.masks
    missing_dir = False
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            add(Issue("missing", d, "folder not found"))
            missing_dir = True
    if missing_dir:
        return []
    for d in (img_dir, mask_dir):
        for p in list_other_files(d):
            add(Issue("stray-file", p, "not an image file (ignored)", WARNING))
    stems, ends = _selected(part, list_file)
    images, masks = list_images(img_dir), list_images(mask_dir)
    if stems is not None:
        wanted = set(stems)
        images = [p for p in images if p.stem in wanted]
        masks = [p for p in masks if p.stem in wanted]
    res = pair_by_stem(images, masks)
    for p in res.images_without_mask:
        add(Issue("unpaired", p, f"image without a mask in {mask_dir}"))
    for p in res.masks_without_image:
        add(Issue("unpaired", p, f"mask without an image in {img_dir}"))
    for p in res.duplicate_stems:
        add(Issue("duplicate", p, "another file in this folder has the same stem"))
    pairs = res.pairs
    if stems is not None:
        have = {i.stem for i in images} | {m.stem for m in masks}
        for s in stems:
            if s not in have:
                add(Issue("missing", img_dir / s, "listed stem has neither image nor mask"))
        order = {s: k for k, s in enumerate(stems)}
        pairs = sorted(pairs, key=lambda im_m: order[im_m[0].stem])
    if ends is not None:
        kind, n = ends
        if len(pairs) < n:
            add(Issue("count", img_dir, f"{len(pairs)} pairs, fewer than the {n} this subset takes"))
        pairs = pairs[:n] if kind == "first" else pairs[-n:]
    ignores = {}
    if part.ignore is not None:
        ign_dir = root / part.ignore
        if not ign_dir.is_dir():
            add(Issue("missing", ign_dir, "folder of ignore masks not found"))
        ignores = {p.stem: p for p in list_images(ign_dir)}
        for i, _ in pairs:
            if i.stem not in ignores:
                add(Issue("unpaired", i, f"image without an ignore mask in {ign_dir}"))
    return [(i, m, part.mask_white, ignores.get(i.stem)) for i, m in pairs]


def _open(path: Path, report: VerifyReport):
    try:
        im = Image.open(path)
        im.load()
        return im
    except Exception as e:  # any decoder failure means the file is unusable
        report.issues.append(Issue("corrupt", path, f"cannot be decoded ({type(e).__name__}: {e})"))
        return None


def _check_ignore(img: Image.Image, ignore_path: Path, report: VerifyReport) -> None:
    ig = _open(ignore_path, report)
    if ig is None:
        return
    if ig.size != img.size:
        report.issues.append(Issue("size-mismatch", ignore_path, f"ignore mask {ig.size[0]}x{ig.size[1]} vs image "
                                                                 f"{img.size[0]}x{img.size[1]}"))
    values, full = image_values(ig)
    full = mask_full_scale(values, full)
    white = values.astype(np.float64) / (full or 1)  # 0 = determined, 1 = undetermined
    if np.any((white > 16 / 255) & (white < 239 / 255)):
        report.issues.append(Issue("non-binary", ignore_path, "ignore mask is not binary"))
    undetermined = float((white >= 0.5).mean())
    report.undetermined_fractions.append(undetermined)
    if undetermined >= 1.0:
        report.issues.append(Issue("empty-label", ignore_path, "every pixel is undetermined", WARNING))
    ig.close()


def _check_pair(img_path: Path, mask_path: Path, mask_white: str, report: VerifyReport,
                ignore_path: Optional[Path] = None) -> None:
    add = report.issues.append
    im, mk = _open(img_path, report), _open(mask_path, report)
    if im is None or mk is None:
        return
    if ignore_path is not None:
        _check_ignore(im, ignore_path, report)
    report.sizes[im.size] = report.sizes.get(im.size, 0) + 1
    if im.size != mk.size:
        add(Issue("size-mismatch", mask_path, f"mask {mk.size[0]}x{mk.size[1]} vs image {im.size[0]}x{im.size[1]} "
                                              f"({img_path.name})"))
    try:
        values, full = image_values(mk)
    except ValueError as e:
        add(Issue("corrupt", mask_path, f"unusable values ({e})"))
        return
    full = mask_full_scale(values, full)
    white = values / full if full is not None else values
    grey = float(np.mean((white > 16 / 255) & (white < 239 / 255)))
    if grey > SOFT_MASK_LIMIT:
        add(Issue("non-binary", mask_path, f"{grey:.1%} of pixels are grey levels in [16, 239]: not a binary mask"))
    elif grey > 0 or not np.all((white == 0) | (white == 1)):
        add(Issue("soft-mask", mask_path, f"not strictly binary ({grey:.2%} grey pixels); binarised at 128 on load",
                  WARNING))
    blur = ~decode_mask(values, full, mask_white)
    report.blur_fractions.append(float(blur.mean()))
    b = max(1, int(round(BORDER * min(blur.shape))))
    frame = np.concatenate([blur[:b].ravel(), blur[-b:].ravel(), blur[:, :b].ravel(), blur[:, -b:].ravel()])
    report.border_blur_fractions.append(float(frame.mean()))
    im.close()
    mk.close()


def _polarity_check(spec_name: str, report: VerifyReport) -> None:
    if not report.blur_fractions:
        return
    blur = float(np.mean(report.blur_fractions))
    edge = float(np.mean(report.border_blur_fractions))
    declared = ", ".join(f"white = {v}" for v in report.polarities.values())
    if spec_name in _WIDE_DOF:
        suspicious = blur > 0.5
        expect = "wide depth-of-field images should be almost all in focus"
    else:
        suspicious = blur < 0.35 and edge < 0.5
        expect = "defocus images are mostly blurred, above all along the frame"
    if suspicious:
        report.issues.append(Issue(
            "polarity", None, f"mean blur fraction {blur:.3f} (frame {edge:.3f}) with {declared}: {expect}; "
                              "the masks may use the opposite polarity", WARNING))


def verify_dataset(name: str, root=None, list_file=None, image_dir=None, mask_dir=None, mask_white: str = "in-focus",
                   progress: bool = True) -> VerifyReport:
    """Check a dataset of the registry (or ``"folder"`` with ``image_dir``/``mask_dir``/``mask_white``) and
    return a :class:`VerifyReport` naming every problem found."""
    spec = get_spec(name)
    report = VerifyReport(spec.name, expected=spec.expected)
    if spec.name == "folder":
        if image_dir is None or mask_dir is None:
            base = resolve_root(root)
            image_dir, mask_dir = image_dir or base / "images", mask_dir or base / "masks"
        parts, base = [Part(str(Path(image_dir).resolve()), str(Path(mask_dir).resolve()),
                            check_polarity(mask_white))], Path("/")
    else:
        parts, base = list(spec.parts), resolve_root(root)
    pairs = []
    for part in parts:
        report.polarities[f"{part.images}"] = part.mask_white
        pairs += _check_part(part, base, list_file, report)
    report.n_pairs = len(pairs)
    if spec.expected is not None and len(pairs) != spec.expected:
        report.issues.append(Issue("count", None, f"{len(pairs)} pairs, expected {spec.expected}"))
    elif not pairs:
        report.issues.append(Issue("count", None, "no image and mask pairs found"))
    for img, mask, pol, ignore in tqdm(pairs, desc=f"verify {spec.name}", unit="pair", disable=not progress,
                                       leave=False):
        _check_pair(img, mask, pol, report, ignore)
    _polarity_check(spec.name, report)
    for issue in report.issues:
        log.debug("%s", issue)
    return report
