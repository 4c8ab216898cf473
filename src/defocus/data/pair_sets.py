"""``defocus data prepare mfifb|dfd``: label the real photo pairs and write them in the registry layout.

Recognised downloads (``--src``):

- ``mfifb``: focus pairs, one folder per scene ``<set>_NN/`` holding ``<set>_NN_A.<ext>`` and ``<set>_NN_B.<ext>``
  (the test set of the MFIFB benchmark). Both images of a pair are labelled and stored under their own stems.
  Pairs listed in the package file ``splits/mfifb-excluded.txt`` are not optical focus pairs (digitally blurred
  regions of one photo, or a duplicate of another pair) and are skipped, with the reason, unless
  ``keep_excluded``.
- ``dfd``: aperture pairs with a ``pairs.csv`` (columns ``stem``, ``wide_f2.8``, ``narrow_f8``; paths relative to
  the file), as in the indoor depth-from-defocus set of Carvalho et al. 2018. The wide-aperture image is labelled.

A pair is also left out, and reported with the reason, when it cannot be read or aligned, or when less than
``min_determined`` of an image's pixels get a label (nothing worth scoring). Images are copied byte for byte; masks (255 = in focus)
and ignore masks (255 = undetermined) are PNG files of the image's size.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from tqdm import tqdm

from .files import is_image_file
from .pairs import (APERTURE, FOCUS, PairError, PairLabelConfig, labelled_images, label_files, pair_sheet,
                    write_labelled)
from .prepare import PrepareReport
from .registry import DataError

log = logging.getLogger(__name__)

PAIR_FAMILIES = {"mfifb": "MFIFB", "dfd": "DFD"}
MIN_DETERMINED = 0.02


@dataclass(frozen=True)
class SourcePair:
    """One pair of a download: its scene name, the two files, and the stems the labelled images get."""

    scene: str
    first: Path
    second: Path
    kind: str
    stems: tuple


def excluded_pairs() -> dict[str, str]:
    """Scene -> reason of the MFIFB pairs that are not real optical focus pairs (package file)."""
    text = resources.files("defocus.data").joinpath("splits", "mfifb-excluded.txt").read_text()
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            scene, _, reason = line.partition("\t")
            out[scene.strip()] = reason.strip()
    return out


def focus_pairs(src: Path) -> list[SourcePair]:
    """The ``<scene>/<scene>_A.* + <scene>_B.*`` pairs under ``src`` (sorted by scene)."""
    pairs = []
    for folder in sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = {p.stem: p for p in folder.iterdir() if is_image_file(p)}
        a, b = files.get(f"{folder.name}_A"), files.get(f"{folder.name}_B")
        if a is None and b is None:
            continue
        if a is None or b is None:
            raise DataError(f"{folder}: one image of the pair is missing ({folder.name}_A and {folder.name}_B "
                            "are expected)")
        pairs.append(SourcePair(folder.name, a, b, FOCUS, (a.stem, b.stem)))
    return pairs


def aperture_pairs(src: Path) -> list[SourcePair]:
    """The pairs listed in ``src/pairs.csv`` (columns stem, wide_f2.8, narrow_f8)."""
    table = src / "pairs.csv"
    if not table.is_file():
        raise DataError(f"{table}: not found (an aperture-pair download lists its pairs in pairs.csv)")
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"stem", "wide_f2.8", "narrow_f8"}
    if not rows or not need <= set(rows[0]):
        raise DataError(f"{table}: expected the columns {', '.join(sorted(need))}")
    return [SourcePair(r["stem"], src / r["wide_f2.8"], src / r["narrow_f8"], APERTURE, (r["stem"],)) for r in rows]


def prepare_pairs(family: str, src, root, cfg: PairLabelConfig = PairLabelConfig(), sheets=None,
                  keep_excluded: bool = False, min_determined: float = MIN_DETERMINED,
                  overwrite: bool = True) -> PrepareReport:
    """Label every pair of a ``mfifb`` or ``dfd`` download and write ``root/MFIFB`` or ``root/DFD``
    (``images/``, ``masks/``, ``ignore/``); contact sheets go to ``sheets`` when given. Skipped pairs are
    listed with the reason in the report's ``skipped``; ``written`` counts the files written (image, mask and
    ignore mask per labelled image)."""
    if family not in PAIR_FAMILIES:
        raise DataError(f"{family!r} is not a pair download ({', '.join(PAIR_FAMILIES)})")
    src, root = Path(src).expanduser(), Path(root).expanduser()
    if not src.is_dir():
        raise DataError(f"{src}: download folder not found")
    pairs = focus_pairs(src) if family == "mfifb" else aperture_pairs(src)
    if not pairs:
        raise DataError(f"{src}: no image pairs found")
    excluded = excluded_pairs() if family == "mfifb" and not keep_excluded else {}
    dest = root / PAIR_FAMILIES[family]
    report = PrepareReport(family, root)
    label = PAIR_FAMILIES[family]
    written = 0
    for pair in tqdm(pairs, desc=f"label {family}", unit="pair", leave=False):
        if pair.scene in excluded:
            report.skipped.append(f"{pair.scene}: {excluded[pair.scene]}")
            continue
        try:
            first, second, labels = label_files(pair.first, pair.second, pair.kind, cfg)
        except PairError as e:
            report.skipped.append(f"{pair.scene}: {str(e).split(': ', 1)[-1]}")
            continue
        items = labelled_images(pair.first, pair.second, labels, pair.stems)
        thin = [it.stem for it in items if it.label.determined_fraction < min_determined]
        if thin:
            report.skipped.append(f"{pair.scene}: under {min_determined:.0%} of the pixels of {', '.join(thin)} "
                                  "get a label")
            continue
        sheet = pair_sheet([first, second], labels) if sheets is not None else None
        written += len(write_labelled(items, dest, overwrite=overwrite))
        if sheet is not None:
            Path(sheets).mkdir(parents=True, exist_ok=True)
            sheet.save(Path(sheets) / f"{pair.scene}.png")
    report.written[label] = written
    report.kept[label] = 0
    report.parts.append(label)
    if not written:
        raise DataError(f"{src}: no pair could be labelled: " + "; ".join(report.skipped[:3]))
    return report


SPLIT_FRACTIONS = (("val", 0.3), ("test", 0.2))
SPLIT_SEED = 16


def split_scenes(scenes, group=lambda s: "", seed: int = SPLIT_SEED, fractions=SPLIT_FRACTIONS) -> dict:
    """Assign scenes to train / val / test: within each group (e.g. MFIFB's source collections) the scenes are
    shuffled with ``seed`` and the first ``round(f * n)`` go to each split of ``fractions``, the rest to train.
    Splitting scenes, not images, keeps both images of a pair on the same side. Returns scene -> split."""
    import random

    by_group: dict = {}
    for s in sorted(set(scenes)):
        by_group.setdefault(group(s), []).append(s)
    out = {}
    rng = random.Random(seed)
    for g in sorted(by_group):
        members = by_group[g][:]
        rng.shuffle(members)
        start = 0
        for name, frac in fractions:
            n = int(round(frac * len(members)))
            out.update({s: name for s in members[start:start + n]})
            start += n
        out.update({s: "train" for s in members[start:]})
    return out


def mfifb_collection(scene: str) -> str:
    """The source collection of an MFIFB scene (``savic_03`` -> ``savic``; single pairs -> ``single``)."""
    head, _, tail = scene.rpartition("_")
    return head if head and tail.isdigit() else "single"


def mfifb_scene(stem: str) -> str:
    """The scene of an MFIFB image stem (``savic_03_A`` -> ``savic_03``)."""
    return stem.rsplit("_", 1)[0]
