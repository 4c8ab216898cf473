"""Evaluation: score saved maps of any method, or run a model the paper's way, under a named protocol.

* :func:`evaluate_maps` scores a folder of prediction maps against a folder of masks (paired by file stem).
* :func:`evaluate_model` runs a model on registry datasets or local folders: the paper's 320x320 inference, or
  (``inference="model"``) the model's own input defaults, as ``defocus predict`` runs it.
* :func:`evaluate` is the public entry point (``defocus.evaluate``) dispatching to either.

Results come back as a :class:`Report` (one dataset) or a :class:`ReportTable` (several methods / datasets, the
paper's MAE / F / IoU table layout), each with ``to_json()``, ``to_markdown()`` and ``to_csv()``.
The protocols themselves live in :mod:`defocus.metrics`.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

import numpy as np

from .atomic import write_bytes_atomic
from .defaults import INPUT_DEFAULT_KEYS, PAPER_SIZE, UPSCALE_KEY, input_size_of
from .devices import resolve_device
from .listfiles import read_list_stems
from .maps import MAP_SUFFIXES, MapInputError, check_polarity, read_map, read_mask
from .metrics import Curves, ImageScore, Protocol, Scorer, get_protocol

log = logging.getLogger(__name__)

#: How :func:`evaluate_model` runs a model: the paper's test-time pipeline, or the model's own input defaults.
INFERENCE_MODES = ("paper", "model")

#: Every input problem (a missing or unreadable prediction, mask, image, folder or list file) raises this.
EvaluationInputError = MapInputError


# --------------------------------------------------------------------------------------------------------------
# Pairing files
# --------------------------------------------------------------------------------------------------------------

def index_folder(folder, suffix: str = "") -> dict[str, Path]:
    """Map file stem -> path for the image files of ``folder`` (an error if two files share a stem); hidden files
    (``.*``, such as macOS's ``._name`` companions) are not taken.

    With ``suffix`` (e.g. ``"_prob"`` for ``defocus predict`` outputs), only files whose stem ends with it are
    taken, and it is removed from the key.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EvaluationInputError(folder, "not a folder (give the folder of files)" if folder.exists() else
                                   "folder not found")
    index: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if (path.name.startswith(".") or not path.is_file() or path.suffix.lower() not in MAP_SUFFIXES
                or not path.stem.endswith(suffix)):
            continue
        stem = path.stem[:len(path.stem) - len(suffix)]
        if stem in index:
            raise EvaluationInputError(path, f"two files with the stem {stem!r} (the other is {index[stem].name})")
        index[stem] = path
    return index


def read_stem_list(path) -> list[str]:
    """Stems from a list file (:func:`defocus.listfiles.read_list_stems`: one per line, ``#`` comment lines and
    blank lines ignored, a known image or ``.npy`` extension dropped: ``a.jpg`` -> ``a``)."""
    path = Path(path)
    if not path.is_file():
        raise EvaluationInputError(path, "list file not found")
    stems = read_list_stems(path, MAP_SUFFIXES)
    unique = list(dict.fromkeys(stems))
    if len(unique) < len(stems):
        log.warning("%s: %d repeated stem(s) scored once", path, len(stems) - len(unique))
    return unique


# --------------------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------------------

def _clean(value):
    """JSON-safe value: NaN -> None, NumPy scalars -> Python."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return None if math.isnan(v) else v
    if isinstance(value, np.integer):
        return int(value)
    return value


#: Columns of the per-image CSV rows (:meth:`Report.to_csv`, :meth:`ReportTable.images_to_csv`).
IMAGE_COLUMNS = ["stem", "mae", "fbeta", "precision", "recall", "iou", "height", "width", "positive_fraction",
                 "resized_from", "no_positive", "adaptive_f"]


def _csv_text(rows) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


@dataclass
class Report:
    """Evaluation result of one method on one dataset.

    Attributes:
        metrics: dataset numbers (``n``, ``mae``, ``fbeta``, ``iou`` (pooled), ``iou_mean``, ``precision``,
            ``recall``, ``n_resized``, ``n_no_positive``; ``max_f``, ``mean_f``, ``adaptive_f`` with curves).
        images: per-image :class:`~defocus.metrics.ImageScore` rows.
        skipped: ``{"stem", "path", "reason"}`` for every image left out (only with ``skip_missing`` or
            ``drop_mismatched``).
        notes: other per-image events worth reporting (e.g. an image whose size differs from its mask).
        curves: mean PR / F-threshold curves when requested.
    """

    protocol: Protocol
    metrics: dict
    images: list[ImageScore] = field(default_factory=list)
    dataset: str | None = None
    method: str | None = None
    skipped: list[dict] = field(default_factory=list)
    notes: list[dict] = field(default_factory=list)
    curves: Curves | None = None

    @property
    def n(self) -> int:
        """Number of images scored."""
        return self.metrics["n"]

    @property
    def mae(self) -> float:
        """Dataset MAE (mean of per-image MAEs)."""
        return self.metrics["mae"]

    @property
    def fbeta(self) -> float:
        """Dataset F-beta (mean of per-image F)."""
        return self.metrics["fbeta"]

    @property
    def iou(self) -> float:
        """Dataset IoU pooled over all pixels."""
        return self.metrics["iou"]

    @property
    def resized(self) -> list[str]:
        """Stems of the predictions resized to their mask's size."""
        return [s.stem for s in self.images if s.resized_from is not None]

    @property
    def no_positive(self) -> list[str]:
        """Stems whose mask has no pixel of the positive class."""
        return [s.stem for s in self.images if s.no_positive]

    @property
    def iou_size(self) -> int | None:
        """The side of the square the IoU was computed at (the EBD rule or the protocol's ``iou_size``), or
        ``None``: at the mask's resolution."""
        return self.protocol.iou_size_for(self.dataset)

    def _iou_size_note(self) -> str:
        rule = "the protocol's iou_size" if self.protocol.iou_size is not None else "the EBD rule"
        return (f"IoU at {self.iou_size}x{self.iou_size} ({rule}): binarised map and mask nearest-resized to "
                f"that size first")

    def to_dict(self, images: bool = True, curves: bool = True) -> dict:
        """JSON-ready dict: the dataset numbers at the top level, then labels, lists and (optionally) rows."""
        out = dict(self.metrics)
        out.update(method=self.method, dataset=self.dataset, protocol=self.protocol.name,
                   protocol_settings=self.protocol.to_dict(), iou_size=self.iou_size, resized=self.resized, no_positive=self.no_positive,
                   skipped=self.skipped, notes=self.notes)
        if images:
            out["images"] = [s.to_dict() for s in self.images]
        if curves and self.curves is not None:
            out["curves"] = self.curves.to_dict()
        return _clean(out)

    def to_json(self, indent: int | None = 2, images: bool = True) -> str:
        """The report as one JSON object (NaN written as null)."""
        return json.dumps(self.to_dict(images=images), indent=indent)

    def to_markdown(self, digits: int = 4) -> str:
        """Dataset numbers as a Markdown table, followed by what was resized, skipped or special."""
        m = self.metrics
        title = " on ".join(x for x in (self.method, self.dataset) if x) or "evaluation"
        lines = [f"**{title}** (protocol `{self.protocol.name}`, positive class: {self.protocol.positive})", "",
                 "| n | MAE | Fβ | IoU (pooled) | IoU (per-image mean) |", "|---|---|---|---|---|",
                 f"| {m['n']} | {_fmt(m['mae'], digits)} | {_fmt(m['fbeta'], digits)} | {_fmt(m['iou'], digits)} "
                 f"| {_fmt(m['iou_mean'], digits)} |"]
        if self.curves is not None:
            lines += ["", f"max-F {_fmt(m['max_f'], digits)}, mean-F {_fmt(m['mean_f'], digits)}, "
                          f"adaptive F {_fmt(m['adaptive_f'], digits)}"]
        if self.iou_size:
            lines += ["", self._iou_size_note()]
        if self.resized:
            lines += ["", f"Resized to the mask size ({self.protocol.resize}): {len(self.resized)} "
                          f"({', '.join(self.resized)})"]
        if self.no_positive:
            lines += ["", f"No {self.protocol.positive} pixel in the mask ({self.protocol.no_positive}): "
                          f"{len(self.no_positive)} ({', '.join(self.no_positive)})"]
        if self.skipped:
            lines += ["", f"Skipped: {len(self.skipped)}"] + [f"- {s['stem']}: {s['reason']}" for s in self.skipped]
        return "\n".join(lines) + "\n"

    def image_rows(self) -> list[list]:
        """Per-image rows in the order of :data:`IMAGE_COLUMNS` (undefined values as empty strings)."""
        rows = []
        for s in self.images:
            d = s.to_dict()
            d["resized_from"] = "x".join(map(str, s.resized_from)) if s.resized_from else ""
            rows.append(["" if d[c] is None else d[c] for c in IMAGE_COLUMNS])
        return rows

    def to_csv(self) -> str:
        """Per-image rows as CSV (stem, mae, fbeta, precision, recall, iou, size, ...)."""
        return _csv_text([IMAGE_COLUMNS] + self.image_rows())


@dataclass
class ReportTable:
    """Several reports (methods x datasets) in the paper's layout: one row per method, MAE / Fβ / IoU per dataset."""

    reports: list[Report] = field(default_factory=list)

    def __iter__(self):
        return iter(self.reports)

    def __len__(self) -> int:
        return len(self.reports)

    def __getitem__(self, key) -> Report:
        """A report by position, by dataset name, or by ``(method, dataset)``."""
        if isinstance(key, int):
            return self.reports[key]
        for r in self.reports:
            if key == r.dataset or key == (r.method, r.dataset):
                return r
        raise KeyError(key)

    @property
    def methods(self) -> list:
        """Method labels in order of appearance."""
        return list(dict.fromkeys(r.method for r in self.reports))

    @property
    def datasets(self) -> list:
        """Dataset labels in order of appearance."""
        return list(dict.fromkeys(r.dataset for r in self.reports))

    def _cell(self, method, dataset) -> Report | None:
        return next((r for r in self.reports if r.method == method and r.dataset == dataset), None)

    def to_markdown(self, digits: int = 4) -> str:
        """The table as Markdown; each cell is ``MAE / Fβ / IoU``."""
        datasets = self.datasets
        head = "| method | " + " | ".join(f"{d or 'dataset'} (n)" for d in datasets) + " |"
        lines = [head, "|---" * (len(datasets) + 1) + "|"]
        for method in self.methods:
            cells = []
            for d in datasets:
                r = self._cell(method, d)
                cells.append("" if r is None else
                             f"{_fmt(r.mae, digits)} / {_fmt(r.fbeta, digits)} / {_fmt(r.iou, digits)} ({r.n})")
            lines.append(f"| {method or ''} | " + " | ".join(cells) + " |")
        protocols = sorted({r.protocol.name for r in self.reports})
        legend = f"Cells: MAE / Fβ (β²=0.3) / IoU (n images); protocol: {', '.join(protocols)}."
        resized_iou = sorted({f"{r.dataset or 'dataset'} at {r.iou_size}x{r.iou_size}" for r in self.reports
                              if r.iou_size})
        if resized_iou:
            legend += f" IoU on nearest-resized map and mask: {', '.join(resized_iou)}."
        return "\n".join(lines) + "\n\n" + legend + "\n"

    def to_csv(self, digits: int | None = None) -> str:
        """The table as CSV: ``method``, then ``<dataset> n``, ``MAE``, ``Fbeta``, ``IoU`` columns per dataset."""
        header = ["method"]
        for d in self.datasets:
            d = d or "dataset"
            header += [f"{d} n", f"{d} MAE", f"{d} Fbeta", f"{d} IoU"]
        rows = [header]
        rnd = (lambda v: v) if digits is None else (lambda v: round(v, digits))
        for method in self.methods:
            row = [method or ""]
            for d in self.datasets:
                r = self._cell(method, d)
                row += ["", "", "", ""] if r is None else [r.n, rnd(r.mae), rnd(r.fbeta), rnd(r.iou)]
            rows.append(row)
        return _csv_text(rows)

    def images_to_csv(self) -> str:
        """Every report's per-image rows as one CSV, each led by its ``method`` and ``dataset``."""
        rows = [["method", "dataset"] + IMAGE_COLUMNS]
        for r in self.reports:
            rows += [[r.method or "", r.dataset or ""] + row for row in r.image_rows()]
        return _csv_text(rows)

    def to_dict(self, images: bool = False) -> dict:
        """All reports as ``{"results": [...]}`` (per-image rows only if ``images``)."""
        return {"results": [r.to_dict(images=images) for r in self.reports]}

    def to_json(self, indent: int | None = 2, images: bool = False) -> str:
        """All reports as one JSON object ``{"results": [...]}`` (per-image rows only if ``images``)."""
        return json.dumps(self.to_dict(images=images), indent=indent)


def _progress(iterable, desc: str, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=None, leave=False)


def _finish(scorer: Scorer, method, skipped, notes) -> Report:
    report = Report(protocol=scorer.protocol, metrics=scorer.summary(), images=list(scorer.images),
                    dataset=scorer.dataset, method=method, skipped=skipped, notes=notes,
                    curves=scorer.curve_summary())
    if report.resized:
        log.info("%s: %d prediction(s) resized to their mask's size (%s)", scorer.dataset or "maps",
                 len(report.resized), scorer.protocol.resize)
    if skipped:
        log.warning("%s: %d image(s) skipped: %s", scorer.dataset or "maps", len(skipped),
                    ", ".join(s["stem"] for s in skipped))
    return report


# --------------------------------------------------------------------------------------------------------------
# Saved maps
# --------------------------------------------------------------------------------------------------------------

def evaluate_maps(pred_dir, gt_dir, list_file=None, protocol: "str | Protocol" = "paper",
                  pred_polarity: str = "in-focus", gt_polarity: str = "in-focus", skip_missing: bool = False,
                  curves: bool = False, dataset: str | None = None, method: str | None = None,
                  pred_suffix: str = "", ignore_dir=None) -> Report:
    """Score a folder of prediction maps against a folder of masks.

    Files pair by stem, whatever their extensions. The images scored are the stems of ``list_file`` if given,
    else every mask in ``gt_dir``. A prediction whose size differs from its mask is resized with the
    protocol's method and listed in ``Report.resized``.

    Args:
        pred_dir: prediction maps (grayscale or RGB, 8- or 16-bit, float TIFF or ``.npy`` in [0, 1]).
        gt_dir: masks.
        list_file: text file of stems to score (one per line).
        protocol: ``"paper"``, ``"paper-external"``, ``"standard"`` or a :class:`~defocus.metrics.Protocol`.
        pred_polarity / gt_polarity: what white means in the maps / masks (``"in-focus"`` or ``"blur"``).
        skip_missing: leave out (and list in ``Report.skipped``) images whose prediction or mask is missing or
            unreadable instead of raising :class:`EvaluationInputError`.
        curves: also compute PR / F-threshold curves and max-F, mean-F, adaptive F.
        dataset: dataset label (a name containing "EBD" turns on the protocol's EBD IoU resolution).
        method: method label (default: the prediction folder's name).
        pred_suffix: end of the prediction file stems to remove before pairing (``"_prob"`` pairs
            ``defocus predict``'s ``x_prob.png`` with the mask ``x.png``).
        ignore_dir: ignore masks paired by stem (white = undetermined; for labels derived from photo pairs):
            those pixels are left out of every score. Needs a protocol that honours them (``"standard"``).
    """
    proto = get_protocol(protocol)
    check_polarity(pred_polarity)
    check_polarity(gt_polarity)
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    preds, gts = index_folder(pred_dir, pred_suffix), index_folder(gt_dir)
    ignores = _ignore_index(ignore_dir, proto)
    stems = read_stem_list(list_file) if list_file is not None else sorted(gts)
    if not stems:
        raise EvaluationInputError(list_file or gt_dir, "no images to evaluate")
    extra = sorted(set(preds) - set(stems))
    if extra:
        log.info("%s: %d prediction(s) without a listed mask ignored", pred_dir, len(extra))
    scorer = Scorer(proto, dataset=dataset, curves=curves)
    skipped: list[dict] = []
    for stem in _progress(stems, desc=f"evaluate {pred_dir.name}"):
        try:
            if stem not in gts:
                raise EvaluationInputError(f"{gt_dir / stem}.*", "mask not found")
            if stem not in preds:
                raise EvaluationInputError(f"{pred_dir / stem}{pred_suffix}.*", "prediction not found")
            gt = read_mask(gts[stem], gt_polarity)
            pred = read_map(preds[stem], pred_polarity)
            ignore = _read_ignore(ignores, stem, ignore_dir)
        except EvaluationInputError as e:
            if not skip_missing:
                raise
            skipped.append(e.as_skip(stem))
            continue
        _add(scorer, stem, pred, gt, ignore, skip_missing, skipped)
    return _finish(scorer, method or pred_dir.name, skipped, [])


def _ignore_index(ignore_dir, proto: Protocol) -> dict | None:
    if ignore_dir is None:
        return None
    if not proto.honour_ignore:
        raise ValueError(f"protocol {proto.name!r} scores every pixel and cannot use ignore masks; "
                         "use the 'standard' protocol")
    return index_folder(ignore_dir)


def _read_ignore(ignores: dict | None, stem: str, ignore_dir) -> np.ndarray | None:
    if ignores is None:
        return None
    if stem not in ignores:
        raise EvaluationInputError(f"{Path(ignore_dir) / stem}.*", "ignore mask not found")
    return read_mask(ignores[stem], "in-focus")


def _add(scorer: Scorer, stem: str, pred, gt, ignore, skip_missing: bool, skipped: list) -> None:
    """Score one image; an unusable ignore mask (wrong size, nothing determined) is an input error."""
    try:
        scorer.add(stem, pred, gt, ignore)
    except ValueError as e:
        if ignore is None or not skip_missing:
            raise EvaluationInputError(stem, str(e).split(": ", 1)[-1]) from None
        skipped.append({"stem": stem, "path": stem, "reason": str(e).split(": ", 1)[-1]})


# --------------------------------------------------------------------------------------------------------------
# Running a model (the paper's inference)
# --------------------------------------------------------------------------------------------------------------

class FolderDataset(NamedTuple):
    """A local dataset for :func:`evaluate_model`: images and masks paired by stem, with the masks' polarity and
    optionally a folder of ignore masks (white = undetermined)."""

    name: str
    images: Path
    masks: Path
    mask_polarity: str = "in-focus"
    ignore: Path | None = None


class _Sample(NamedTuple):
    stem: str
    image: Path | None  # None: no image with this mask's stem
    mask: Path
    mask_polarity: str
    ignore: Path | None = None


def _samples(dataset, root, list_file=None) -> tuple[str, list[_Sample]]:
    """Resolve a registry name (``defocus.data``) or a :class:`FolderDataset` into (name, samples); a registry
    dataset that needs a list of stems (``cuhk2-te``) takes ``list_file``."""
    if isinstance(dataset, tuple) and len(dataset) in (3, 4, 5):
        ds = FolderDataset(*dataset)
        polarity = check_polarity(ds.mask_polarity)
        images, masks = index_folder(ds.images), index_folder(ds.masks)
        ignores = index_folder(ds.ignore) if ds.ignore is not None else {}
        missing = ds.ignore is not None and sorted(set(masks) - set(ignores))
        if missing:
            raise EvaluationInputError(f"{Path(ds.ignore) / missing[0]}.*", "ignore mask not found")
        return ds.name, [_Sample(stem, images.get(stem), path, polarity, ignores.get(stem))
                         for stem, path in sorted(masks.items())]
    if not isinstance(dataset, str):
        raise TypeError(f"a dataset is a registry name or a FolderDataset, got {dataset!r}")
    from . import data as data_registry

    try:
        pairs = data_registry.load_pairs(dataset, root, list_file=list_file)
    except (ValueError, OSError) as e:
        raise EvaluationInputError(f"dataset {dataset!r}", str(e)) from e
    return dataset, [_Sample(p.stem, Path(p.image), Path(p.mask), p.mask_white, p.ignore) for p in pairs]


def paper_inference(model, image, device="cpu", size: int = PAPER_SIZE) -> tuple[np.ndarray, tuple[int, int]]:
    """The paper's test-time inference of one image (docs/method.md, "Evaluation").

    RGB, Pillow bilinear resize to ``size`` x ``size`` (no aspect preservation), normalisation with
    ``model.config`` mean/std, sigmoid of the final logit (:mod:`defocus.models.predict`). Returns the ``size`` x
    ``size`` in-focus probability (float32) and the original image size ``(H, W)``. ``device`` is unused: the
    input goes to the model's device.
    """
    from PIL import Image

    from .models.predict import normalization, paper_preprocess, predict_probs

    try:
        with Image.open(image) as im:
            rgb = im.convert("RGB")
    except Exception as e:
        raise EvaluationInputError(image, f"cannot read image ({type(e).__name__}: {e})") from e
    mean, std = normalization(model)
    prob = predict_probs(model, paper_preprocess(rgb, mean, std, size))
    return prob[0, 0].cpu().numpy(), (rgb.height, rgb.width)


def _model_label(model_or_path) -> str:
    """A model's label in reports: its checkpoint's file stem, or its config name, or its class name."""
    if isinstance(model_or_path, (str, Path)):
        return Path(model_or_path).stem
    return getattr(model_or_path, "config", {}).get("name", type(model_or_path).__name__)


def _paper_inference(model_or_path, device, size: int):
    """image -> (map, image size), running ``model_or_path`` with :func:`paper_inference`."""
    dev = resolve_device(device)
    if isinstance(model_or_path, (str, Path)):
        from .models import load_model

        model = load_model(model_or_path, device=dev)
    else:
        model = model_or_path.to(dev).eval()
    config = getattr(model, "config", {})
    if input_size_of(config) != size or config.get(UPSCALE_KEY, True) is False:
        own = {k: v for k, v in config.items() if k in INPUT_DEFAULT_KEYS}
        log.warning("%s records its own input (%s) but runs here the paper's way (%dx%d); inference='model' "
                    "(--inference model) scores it as defocus predict runs it", _model_label(model_or_path),
                    ", ".join(f"{k}: {v}" for k, v in own.items()), size, size)
    return lambda image: paper_inference(model, image, dev, size)


def _predictor_inference(model_or_path, device, size: int | None, refine: bool = False):
    """image -> (map, image size), running ``model_or_path`` as :class:`~defocus.inference.Predictor` does with
    its own input defaults (``size`` overrides the input size; ``refine``: the map's edge-aware refinement)."""
    from .imageio import ImageDecodeError
    from .inference import Predictor

    if isinstance(model_or_path, Path):  # the command line passes its --model as a Path, 'default' too
        model_or_path = str(model_or_path)
    predictor = Predictor(model_or_path, device=device, refine=refine, **({} if size is None else {"size": size}))

    def infer(image):
        try:
            prob = predictor.predict(image).prob
        except ImageDecodeError as e:
            raise EvaluationInputError(image, f"cannot read image ({e})") from e
        return prob, prob.shape

    return infer


def evaluate_model(model_or_path, datasets, root=None, protocol: "str | Protocol" = "paper", device="auto",
                   skip_missing: bool = False, drop_mismatched: bool = False, curves: bool = False,
                   method: str | None = None, size: int | None = None, inference: str = "paper",
                   refine: bool = False, list_file=None) -> ReportTable:
    """Run a model on datasets and score it (one :class:`Report` per dataset).

    Args:
        model_or_path: a model (``forward`` returning the in-focus logit first; it is put in eval mode), a
            checkpoint path, or ``"default"`` (the bundled weights).
        datasets: registry names (``defocus.data``, data under ``root``) and/or :class:`FolderDataset` s.
        root: data root of the registry datasets.
        protocol: ``"paper"``, ``"paper-external"``, ``"standard"`` or a :class:`~defocus.metrics.Protocol`;
            its resizing brings each map to its mask's size.
        device: ``"auto"`` (CUDA, else Apple MPS, else the CPU), ``"cpu"``, ``"cuda:0"``, ``"mps"``...
        skip_missing: leave out (and list) unreadable or unpaired images instead of raising.
        drop_mismatched: leave out (and list) images whose size differs from their mask's, as the reference
            does silently; by default they are scored against the mask and listed in ``Report.notes``.
        curves: also compute PR / F-threshold curves.
        method: method label (default: the checkpoint's file stem or the model's config name).
        size: input size (default: the paper's 320, or with ``inference="model"`` the model's own).
        inference: ``"paper"`` (default): the paper's test-time pipeline (:func:`paper_inference`: a 320x320
            squash, small images enlarged, the map resized to the mask by the protocol). ``"model"``: the model
            runs as ``defocus predict`` and :class:`~defocus.inference.Predictor` run it, with the input size and
            enlarging its file records (the bundled model: squash 512, smaller sides not enlarged; docs
            evaluation.md), its backend, and the map returned at the image's own size.
        refine: with ``inference="model"``, refine each map along its image's colour edges as ``defocus predict
            --refine`` does (:func:`defocus.matting.refine_map`; not in the paper).
        list_file: the stems to score (one per line): the list of a registry dataset that needs one (``cuhk2-te``,
            the paper's CUHK-TE-2), else a subset of each dataset; a listed stem a dataset lacks is an error.
    """
    if inference not in INFERENCE_MODES:
        raise ValueError(f"inference must be one of {INFERENCE_MODES}, got {inference!r}")
    if refine and inference != "model":
        raise ValueError("refine applies to inference='model' (the map as defocus predict makes it)")
    proto = get_protocol(protocol)
    label = method or _model_label(model_or_path)
    if inference == "model":
        infer = _predictor_inference(model_or_path, device, size, refine)
    else:
        infer = _paper_inference(model_or_path, device, size or PAPER_SIZE)
    if isinstance(datasets, (str, FolderDataset)):
        datasets = [datasets]
    table = ReportTable()
    listed = set(read_stem_list(list_file)) if list_file is not None else None
    for item in datasets:
        name, samples = _samples(item, root, list_file)
        if listed is not None:
            absent = sorted(listed - {smp.stem for smp in samples})
            if absent:
                raise EvaluationInputError(list_file, f"{len(absent)} listed stem(s) not in dataset {name!r} "
                                                      f"(e.g. {absent[0]})")
            samples = [smp for smp in samples if smp.stem in listed]
        if not proto.honour_ignore and any(smp.ignore is not None for smp in samples):
            raise ValueError(f"dataset {name!r} has undetermined pixels (ignore masks), which protocol "
                             f"{proto.name!r} cannot score; use the 'standard' protocol")
        scorer = Scorer(proto, dataset=name, curves=curves)
        skipped, notes = [], []
        for s in _progress(samples, desc=f"evaluate {name}"):
            try:
                if s.image is None:
                    raise EvaluationInputError(s.mask, "no image with this mask's stem")
                gt = read_mask(s.mask, s.mask_polarity)
                ignore = None if s.ignore is None else read_mask(s.ignore, "in-focus")
                prob, image_size = infer(s.image)
            except EvaluationInputError as e:
                if not skip_missing:
                    raise
                skipped.append(e.as_skip(s.stem))
                continue
            if image_size != gt.shape:
                event = {"stem": s.stem, "path": str(s.image),
                         "reason": f"image size {image_size} differs from mask size {gt.shape}"}
                if drop_mismatched:
                    skipped.append(event)
                    continue
                notes.append(event)
            _add(scorer, s.stem, prob, gt, ignore, skip_missing, skipped)
        table.reports.append(_finish(scorer, label, skipped, notes))
    return table


# --------------------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------------------

def default_labels(folders: Sequence[Path]) -> list[str]:
    """Method labels for prediction folders: their names, with as many parent folders as make them unique
    (``results/AENet/DUT`` and ``results/EFENet/DUT`` -> ``AENet/DUT``, ``EFENet/DUT``)."""
    folders = [Path(f).resolve() for f in folders]
    for depth in range(1, max(len(f.parts) for f in folders) + 1):
        labels = ["/".join(f.parts[-depth:]) for f in folders]
        if len(set(labels)) == len(labels):
            return labels
    return [str(f) for f in folders]


def evaluate(*, pred=None, gt=None, model=None, datasets=None, root=None, list_file=None,
             protocol: "str | Protocol" = "paper", pred_polarity: str = "in-focus", gt_polarity: str = "in-focus",
             skip_missing: bool = False, curves: bool = False, device="auto", **options):
    """Evaluate saved maps or a model; the one public entry point (``defocus.evaluate``).

    Saved maps of any method::

        report = defocus.evaluate(pred="maps/", gt="masks/")              # -> Report
        report.mae, report.fbeta, report.iou

    A model (checkpoint path or module) with the paper's 320x320 inference (``inference="model"``: as
    ``defocus predict`` runs it)::

        table = defocus.evaluate(model="dffnet.safetensors", datasets=["CUHK-TE-1", "DUT-TE"], root="data")
        print(table.to_markdown())                                        # -> ReportTable

    ``pred`` may also be a list of folders (several methods on one mask folder): the result is then a
    :class:`ReportTable`, and ``method`` may be one label per folder (default: the folders' distinguishing names,
    :func:`default_labels`). Other keyword ``options`` go to :func:`evaluate_maps` (``dataset``, ``method``) or
    :func:`evaluate_model` (``drop_mismatched``, ``method``, ``size``, ``inference``, ``refine``).
    """
    if (pred is None) == (model is None):
        raise ValueError("give exactly one of pred= (a folder of maps) or model= (a model or checkpoint)")
    if pred is not None:
        if gt is None:
            raise ValueError("pred= needs gt= (the folder of masks)")
        kwargs = dict(list_file=list_file, protocol=protocol, pred_polarity=pred_polarity, gt_polarity=gt_polarity,
                      skip_missing=skip_missing, curves=curves, **options)
        if isinstance(pred, (str, Path)):
            return evaluate_maps(pred, gt, **kwargs)
        pred = [Path(p) for p in pred]
        labels = kwargs.pop("method", None)
        if labels is None:
            labels = default_labels(pred)
        elif isinstance(labels, str):
            labels = [labels] * len(pred)
        elif len(labels) != len(pred):
            raise ValueError(f"give one method label per prediction folder ({len(pred)}), got {len(labels)}")
        return ReportTable([evaluate_maps(p, gt, method=m, **kwargs) for p, m in zip(pred, labels)])
    if datasets is None:
        raise ValueError("model= needs datasets= (registry names or FolderDataset entries)")
    maps_only = {"gt": gt is not None, "pred_polarity": pred_polarity != "in-focus",
                 "gt_polarity": gt_polarity != "in-focus"}
    if any(maps_only.values()):
        raise ValueError(f"{', '.join(k for k, v in maps_only.items() if v)} apply to saved maps (pred=); with "
                         f"model=, a folder's masks and their polarity go in FolderDataset(name, images, masks, "
                         f"mask_polarity)")
    return evaluate_model(model, datasets, root=root, protocol=protocol, device=device, skip_missing=skip_missing,
                          curves=curves, list_file=list_file, **options)


def load_curves(path) -> dict[str, Curves]:
    """Read a curves file written by ``defocus evaluate --curves`` (``{label: curves}``) back."""
    data = json.loads(Path(path).read_text())
    return {label: Curves.from_dict(c) for label, c in data.items()}


def write_curves(reports: Iterable[Report], path) -> Path:
    """Write the curves of ``reports`` to ``path`` (atomically): JSON ``{label: curves}``, or CSV (label, threshold,
    precision, recall, fbeta) when the suffix is ``.csv``."""
    path = Path(path)
    items = {_label(r): r.curves for r in reports if r.curves is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".csv":
        rows = [["label", "threshold", "precision", "recall", "fbeta"]]
        for label, c in items.items():
            rows += [[label, *(float(v) for v in row)] for row in zip(c.thresholds, c.precision, c.recall, c.fbeta)]
        text = _csv_text(rows)
    else:
        text = json.dumps(_clean({k: c.to_dict() for k, c in items.items()}), indent=1)
    return write_bytes_atomic(text.encode("utf-8"), path)


def _label(report: Report) -> str:
    parts = [p for p in (report.method, report.dataset) if p]
    return " / ".join(parts) if parts else "predictions"


def curves_of(reports: Sequence[Report]) -> dict[str, Curves]:
    """``{label: curves}`` of the reports that have curves (label = method, plus dataset when given)."""
    return {_label(r): r.curves for r in reports if r.curves is not None}
