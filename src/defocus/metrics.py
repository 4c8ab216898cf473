"""Defocus-blur-detection metrics and evaluation protocols (method.md §6), in vectorised NumPy.

Conventions used throughout:

* a *prediction* ``pred`` is a float map in [0, 1] with **1 = in focus** (the network's polarity);
* a *ground truth* ``gt`` is a boolean map with **True = in focus**;
* every score names its **positive class** explicitly: ``positive="blur"`` (the paper's choice) or
  ``positive="in-focus"``. Blur-positive scores use ``1 - pred`` as the score map and ``~gt`` as the target.

The functions on *positive masks* (``fbeta_score``, ``iou_score``, ``pr_counts``) take boolean / score maps that
are already in the positive class, so they are polarity-free building blocks.

A :class:`Protocol` bundles every choice that changes a number (resizing, thresholds, the reference's F-measure
floor, IoU pooling, images without a positive pixel); :class:`Scorer` applies one to a stream of images.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

BETA2 = 0.3
"""beta^2 of the F-measure used throughout the DBD literature (the reference calls this value ``beta``)."""

POSITIVE_CLASSES = ("blur", "in-focus")

# The reference's epsilons (P = TP / (#pred + 1e-20), R = TP / (#gt + 1e-20), F denominator + 1e-10).
_EPS_PR = 1e-20
_EPS_F = 1e-10


def _check_positive(positive: str) -> str:
    if positive not in POSITIVE_CLASSES:
        raise ValueError(f"positive must be one of {POSITIVE_CLASSES}, got {positive!r}")
    return positive


def positive_scores(pred: np.ndarray, positive: str = "blur") -> np.ndarray:
    """Score map of the positive class from an in-focus probability map: ``1 - pred`` for blur, else ``pred``."""
    pred = np.asarray(pred)
    return 1.0 - pred if _check_positive(positive) == "blur" else pred


def positive_mask(in_focus: np.ndarray, positive: str = "blur") -> np.ndarray:
    """Boolean mask of the positive class from a boolean in-focus mask."""
    in_focus = np.asarray(in_focus, dtype=bool)
    return ~in_focus if _check_positive(positive) == "blur" else in_focus


def binarize(pred: np.ndarray, threshold: float = 0.5, inclusive: bool = True) -> np.ndarray:
    """In-focus mask of an in-focus probability map: ``pred >= threshold`` (``inclusive``) or ``pred > threshold``."""
    pred = np.asarray(pred)
    return pred >= threshold if inclusive else pred > threshold


# --------------------------------------------------------------------------------------------------------------
# Per-image scores
# --------------------------------------------------------------------------------------------------------------

def mae(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute error between a continuous map and a (binary or continuous) target of the same shape.

    Polarity-free: ``mae(p, g) == mae(1 - p, 1 - g)``.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs ground truth {gt.shape}")
    return float(np.abs(pred - gt).mean())


def fbeta_from_counts(tp, n_pred, n_gt, beta2: float = BETA2) -> np.ndarray:
    """F-beta from true positives, predicted positives and ground-truth positives (any broadcastable arrays).

    Uses the reference's epsilons: P = TP/(#pred + 1e-20), R = TP/(#gt + 1e-20),
    F = (1 + beta2) P R / (beta2 P + R + 1e-10), which gives 0 (not NaN) when P = R = 0.
    """
    tp = np.asarray(tp, dtype=np.float64)
    precision = tp / (np.asarray(n_pred, dtype=np.float64) + _EPS_PR)
    recall = tp / (np.asarray(n_gt, dtype=np.float64) + _EPS_PR)
    return fbeta_from_pr(precision, recall, beta2)


def fbeta_from_pr(precision, recall, beta2: float = BETA2) -> np.ndarray:
    """F-beta from precision and recall arrays (reference formula, NaN -> 0)."""
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    f = (1.0 + beta2) * precision * recall / (beta2 * precision + recall + _EPS_F)
    return np.nan_to_num(f, nan=0.0)


def precision_recall(pred_pos: np.ndarray, gt_pos: np.ndarray) -> tuple[float, float]:
    """Precision and recall of a boolean positive-class prediction (0 where undefined)."""
    pred_pos, gt_pos = np.asarray(pred_pos, dtype=bool), np.asarray(gt_pos, dtype=bool)
    tp = np.count_nonzero(pred_pos & gt_pos)
    return tp / (np.count_nonzero(pred_pos) + _EPS_PR), tp / (np.count_nonzero(gt_pos) + _EPS_PR)


def fbeta_score(pred_pos: np.ndarray, gt_pos: np.ndarray, beta2: float = BETA2, floor: bool = False) -> float:
    """F-beta of a boolean positive-class prediction against a boolean positive-class target.

    ``floor=True`` reproduces the reference's ``F_score1``: it sweeps the binary map over the 255 thresholds
    linspace(0, 1, 255) and keeps the best F; on a binary map this equals
    ``max(F(pred), F(everything positive))`` since the threshold 0 marks every pixel positive.
    A target without any positive pixel scores 0 either way.
    """
    pred_pos, gt_pos = np.asarray(pred_pos, dtype=bool), np.asarray(gt_pos, dtype=bool)
    if pred_pos.shape != gt_pos.shape:
        raise ValueError(f"shape mismatch: prediction {pred_pos.shape} vs ground truth {gt_pos.shape}")
    n_gt = np.count_nonzero(gt_pos)
    f = float(fbeta_from_counts(np.count_nonzero(pred_pos & gt_pos), np.count_nonzero(pred_pos), n_gt, beta2))
    if floor:
        f = max(f, float(fbeta_from_counts(n_gt, gt_pos.size, n_gt, beta2)))
    return f


def fbeta(pred: np.ndarray, gt: np.ndarray, positive: str = "blur", threshold: float = 0.5,
          inclusive: bool = True, beta2: float = BETA2, floor: bool = False) -> float:
    """F-beta of an in-focus probability map against an in-focus mask, scoring class ``positive``.

    The map is binarised as ``in focus = pred >= threshold`` (``inclusive``, the reference's F rule) or
    ``pred > threshold``. See :func:`fbeta_score` for ``floor``.
    """
    in_focus = binarize(pred, threshold, inclusive)
    return fbeta_score(positive_mask(in_focus, positive), positive_mask(gt, positive), beta2, floor)


def iou_counts(pred_pos: np.ndarray, gt_pos: np.ndarray) -> tuple[int, int]:
    """(intersection, union) pixel counts of two boolean positive-class masks (for pooling over a dataset)."""
    pred_pos, gt_pos = np.asarray(pred_pos, dtype=bool), np.asarray(gt_pos, dtype=bool)
    if pred_pos.shape != gt_pos.shape:
        raise ValueError(f"shape mismatch: prediction {pred_pos.shape} vs ground truth {gt_pos.shape}")
    return int(np.count_nonzero(pred_pos & gt_pos)), int(np.count_nonzero(pred_pos | gt_pos))


def iou_score(pred_pos: np.ndarray, gt_pos: np.ndarray, empty: float = math.nan) -> float:
    """Intersection over union of two boolean positive-class masks; ``empty`` when both masks are empty."""
    inter, union = iou_counts(pred_pos, gt_pos)
    return inter / union if union else empty


def iou(pred: np.ndarray, gt: np.ndarray, positive: str = "blur", threshold: float = 0.5,
        inclusive: bool = False, empty: float = math.nan) -> float:
    """IoU of an in-focus probability map against an in-focus mask on class ``positive``.

    The map is binarised as ``in focus = pred > threshold`` by default (the reference's IoU rule).
    """
    in_focus = binarize(pred, threshold, inclusive)
    return iou_score(positive_mask(in_focus, positive), positive_mask(gt, positive), empty)


# --------------------------------------------------------------------------------------------------------------
# Threshold sweeps: precision-recall and F-threshold curves
# --------------------------------------------------------------------------------------------------------------

def curve_thresholds(n_thresholds: int = 255) -> np.ndarray:
    """Thresholds of a sweep: ``linspace(0, 1, 255)`` (the reference's) or the 256 8-bit levels ``k / 255``."""
    if n_thresholds == 255:
        return np.linspace(0.0, 1.0, 255)
    if n_thresholds == 256:
        return np.arange(256) / 255.0
    raise ValueError(f"n_thresholds must be 255 (linspace(0, 1, 255)) or 256 (8-bit levels), got {n_thresholds}")


def pr_counts(scores: np.ndarray, gt_pos: np.ndarray, n_thresholds: int = 255):
    """Counts of a threshold sweep of a positive-class score map, ``score >= t`` for every threshold t.

    ``n_thresholds=255``: t in linspace(0, 1, 255), compared with the float scores (the reference's sweep).
    ``n_thresholds=256``: the scores are first quantised to 8 bits (``round(255 * s)``) and t = k / 255,
    k = 0..255 (the salient-object-detection toolboxes' convention).

    Returns ``(thresholds, tp, n_pred, n_gt)``: arrays of length ``n_thresholds`` and the positive count.
    """
    thresholds = curve_thresholds(n_thresholds)
    scores = np.asarray(scores, dtype=np.float64).ravel()
    gt_pos = np.asarray(gt_pos, dtype=bool).ravel()
    if scores.shape != gt_pos.shape:
        raise ValueError(f"size mismatch: scores {scores.size} vs ground truth {gt_pos.size} pixels")
    if n_thresholds == 256:
        # number of thresholds <= score = level + 1
        passed = np.clip(np.rint(scores * 255.0), -1, 255).astype(np.int64) + 1
    else:
        passed = np.searchsorted(thresholds, scores, side="right")
    # pixel passes threshold k  <=>  k < passed;  #(passed > k) = total - #(passed <= k)
    hist_all = np.bincount(passed, minlength=n_thresholds + 1)
    hist_pos = np.bincount(passed[gt_pos], minlength=n_thresholds + 1)
    n_pred = scores.size - np.cumsum(hist_all)[:n_thresholds]
    tp = int(gt_pos.sum()) - np.cumsum(hist_pos)[:n_thresholds]
    return thresholds, tp, n_pred, int(gt_pos.sum())


def pr_curve(pred: np.ndarray, gt: np.ndarray, positive: str = "blur", n_thresholds: int = 255):
    """Precision and recall of an in-focus probability map over a threshold sweep on class ``positive``.

    Returns ``(thresholds, precision, recall)`` (the reference's epsilons: 0 where undefined).
    """
    if np.shape(pred) != np.shape(gt):
        raise ValueError(f"shape mismatch: prediction {np.shape(pred)} vs ground truth {np.shape(gt)}")
    thresholds, tp, n_pred, n_gt = pr_counts(positive_scores(pred, positive), positive_mask(gt, positive),
                                             n_thresholds)
    return thresholds, tp / (n_pred + _EPS_PR), tp / (n_gt + _EPS_PR)


def adaptive_threshold(scores: np.ndarray, factor: float = 2.0) -> float:
    """Adaptive threshold of a score map: ``min(factor * mean, 1)`` (Achanta et al.; DD used factor 1.5)."""
    return float(min(factor * float(np.mean(scores)), 1.0))


def adaptive_fbeta(pred: np.ndarray, gt: np.ndarray, positive: str = "blur", factor: float = 2.0,
                   beta2: float = BETA2) -> float:
    """F-beta with the positive-class score map binarised at its adaptive threshold (``score >= t``)."""
    scores = positive_scores(pred, positive)
    return fbeta_score(scores >= adaptive_threshold(scores, factor), positive_mask(gt, positive), beta2)


@dataclass
class Curves:
    """Dataset-level threshold-sweep results: mean per-image precision, recall and F at every threshold.

    ``max_f`` / ``mean_f`` are the maximum / mean over thresholds of the mean F curve, ``adaptive_f`` the mean
    per-image adaptive-threshold F; ``n`` is the number of images averaged.
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    fbeta: np.ndarray
    max_f: float
    mean_f: float
    adaptive_f: float
    n: int
    positive: str = "blur"

    def to_dict(self) -> dict:
        """Plain-Python form (lists and floats) for JSON."""
        out = dataclasses.asdict(self)
        for k in ("thresholds", "precision", "recall", "fbeta"):
            out[k] = [float(v) for v in out[k]]
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "Curves":
        """Inverse of :meth:`to_dict`."""
        d = dict(d)
        for k in ("thresholds", "precision", "recall", "fbeta"):
            d[k] = np.asarray(d[k], dtype=np.float64)
        return cls(**d)


def summarize_curves(precisions, recalls, adaptive_fs, thresholds, positive: str = "blur",
                     beta2: float = BETA2) -> Curves:
    """Average per-image curves (arrays ``(n_images, n_thresholds)``) into a :class:`Curves`."""
    precisions = np.asarray(precisions, dtype=np.float64).reshape(-1, len(thresholds))
    recalls = np.asarray(recalls, dtype=np.float64).reshape(-1, len(thresholds))
    n = precisions.shape[0]
    if n == 0:
        nan = np.full(len(thresholds), math.nan)
        return Curves(np.asarray(thresholds), nan, nan, nan, math.nan, math.nan, math.nan, 0, positive)
    f_curve = fbeta_from_pr(precisions, recalls, beta2).mean(axis=0)
    return Curves(np.asarray(thresholds, dtype=np.float64), precisions.mean(axis=0), recalls.mean(axis=0), f_curve,
                  float(f_curve.max()), float(f_curve.mean()), float(np.mean(adaptive_fs)), n, positive)


# --------------------------------------------------------------------------------------------------------------
# Resizing (part of the protocol)
# --------------------------------------------------------------------------------------------------------------

def nearest_indices(in_size: int, out_size: int) -> np.ndarray:
    """Source indices of PyTorch's ``interpolate(mode="nearest")``: ``floor(i * in/out)`` in float32."""
    if in_size == out_size:
        return np.arange(out_size)
    scale = np.float32(in_size) / np.float32(out_size)
    idx = np.floor(np.arange(out_size, dtype=np.float32) * scale).astype(np.int64)
    return np.minimum(idx, in_size - 1)


def resize_nearest(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a 2-D array to ``size = (H, W)``, exactly as PyTorch's legacy ``nearest``
    (the reference's ``F.interpolate(..., mode='nearest')``), dtype preserved."""
    arr = np.asarray(arr)
    h, w = size
    return arr[nearest_indices(arr.shape[0], h)[:, None], nearest_indices(arr.shape[1], w)[None, :]]


def resize_bilinear(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to ``size = (H, W)`` with Pillow (pixel-centre aligned; antialiased
    when shrinking), returned as float64 clipped to [0, 1]."""
    from PIL import Image

    arr = np.asarray(arr, dtype=np.float32)
    h, w = size
    if arr.shape == (h, w):
        return arr.astype(np.float64)
    out = np.asarray(Image.fromarray(arr, mode="F").resize((w, h), Image.BILINEAR), dtype=np.float64)
    return np.clip(out, 0.0, 1.0)


RESIZERS = {"nearest": resize_nearest, "bilinear": resize_bilinear}


# --------------------------------------------------------------------------------------------------------------
# Protocols
# --------------------------------------------------------------------------------------------------------------

NO_POSITIVE_POLICIES = ("zero", "exclude", "perfect")


def is_ebd_name(dataset: str | None) -> bool:
    """Whether a dataset name means EBD: it starts with "EBD" (any case) and no letter follows (``ebd``,
    ``ebd1305``, ``EBD(300)``, ``EBD-1305``; not ``webdata`` or ``ebdx``)."""
    name = (dataset or "").lower()
    return name.startswith("ebd") and not name[3:4].isalpha()


@dataclass(frozen=True)
class Protocol:
    """Every choice that changes an evaluation number.

    Attributes:
        name: label of the protocol in reports.
        resize: how a prediction is brought to its mask's size: ``"nearest"`` (PyTorch legacy nearest, the
            reference's) or ``"bilinear"``.
        positive: the positive class of F and IoU (``"blur"`` in the paper).
        threshold: binarisation threshold of the in-focus probability for F and IoU.
        f_inclusive: F binarises ``in focus = p >= threshold`` (True, reference) or ``p > threshold``.
        iou_inclusive: IoU binarises ``in focus = p >= threshold`` or ``p > threshold`` (False, reference).
        fbeta_floor: the reference's ``F_score1`` threshold sweep of the binary map, i.e. per-image
            ``F = max(F(binary), F(all positive))``. The reference's script for other methods' saved maps
            (test1.py) does not apply it.
        no_positive: images whose mask has no positive pixel: ``"zero"`` (F = 0 and per-image IoU = 0, the
            reference's outcome), ``"exclude"`` (left out of the per-image means and listed), or ``"perfect"``
            (1 if the prediction has no positive pixel either, else 0).
        ebd_iou_size: for datasets whose name contains "EBD" (the reference's test), compute IoU after
            nearest-resizing the binarised prediction and mask to this square size (320 in the reference;
            None = full resolution).
        iou_size: the same resizing for every dataset (None by default).
        beta2: beta^2 of the F-measure.
        n_thresholds: threshold sweep of the curves: 255 (linspace(0, 1, 255)) or 256 (8-bit levels).
        adaptive_factor: adaptive-threshold factor (threshold = min(factor * mean score, 1)).
        honour_ignore: leave a mask's undetermined pixels (its ignore mask, for labels derived from photo pairs)
            out of MAE, F, IoU and the curves. The paper's protocols have no such pixels and refuse ignore masks.
    """

    name: str = "paper"
    resize: str = "nearest"
    positive: str = "blur"
    threshold: float = 0.5
    f_inclusive: bool = True
    iou_inclusive: bool = False
    fbeta_floor: bool = True
    no_positive: str = "zero"
    ebd_iou_size: int | None = 320
    iou_size: int | None = None
    beta2: float = BETA2
    n_thresholds: int = 255
    adaptive_factor: float = 2.0
    honour_ignore: bool = False

    def __post_init__(self):
        if self.resize not in RESIZERS:
            raise ValueError(f"resize must be one of {sorted(RESIZERS)}, got {self.resize!r}")
        _check_positive(self.positive)
        if self.no_positive not in NO_POSITIVE_POLICIES:
            raise ValueError(f"no_positive must be one of {NO_POSITIVE_POLICIES}, got {self.no_positive!r}")
        curve_thresholds(self.n_thresholds)

    def replace(self, **changes) -> "Protocol":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def iou_size_for(self, dataset: str | None) -> int | None:
        """The IoU resolution for ``dataset`` (the EBD rule, or ``iou_size``)."""
        if self.iou_size is not None:
            return self.iou_size
        if is_ebd_name(dataset):
            return self.ebd_iou_size
        return None

    def to_dict(self) -> dict:
        """All fields, for reports."""
        return dataclasses.asdict(self)


PROTOCOLS = {
    # method.md §6 (test.py + test_iou.py): the protocol of the paper's own numbers.
    "paper": Protocol(),
    # method.md §6.6 (test1.py + test_iou1.py): how the paper scored other methods' saved maps, without the F floor.
    "paper-external": Protocol(name="paper-external", fbeta_floor=False),
    # A clean protocol: bilinear resizing, no F floor, one binarisation rule, explicit handling of images
    # without a positive pixel, IoU at full resolution everywhere.
    # Undetermined pixels (ignore masks) are left out.
    "standard": Protocol(name="standard", resize="bilinear", iou_inclusive=True, fbeta_floor=False,
                         no_positive="exclude", ebd_iou_size=None, honour_ignore=True),
}


def get_protocol(protocol: "str | Protocol" = "paper", **overrides) -> Protocol:
    """Resolve a protocol name (``paper``, ``paper-external``, ``standard``) or instance, with field overrides."""
    if isinstance(protocol, Protocol):
        base = protocol
    else:
        key = str(protocol).lower().replace("_", "-")
        if key not in PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol!r}; available: {', '.join(PROTOCOLS)}")
        base = PROTOCOLS[key]
    return base.replace(**overrides) if overrides else base


# --------------------------------------------------------------------------------------------------------------
# Scoring a dataset under a protocol
# --------------------------------------------------------------------------------------------------------------

@dataclass
class ImageScore:
    """Scores of one image. ``fbeta`` / ``iou`` are NaN for an image excluded by the ``no_positive`` policy;
    ``precision`` / ``recall`` are those of the binarised map (before the reference's F floor);
    ``ignored_fraction`` is the share of undetermined pixels left out (0 without an ignore mask), and
    ``positive_fraction`` is taken over the scored pixels. ``inter`` / ``union`` are the image's pixel counts
    of the IoU's positive class (at the protocol's IoU resolution): the pooled IoU of any set of images is
    their sums' ratio."""

    stem: str
    mae: float
    fbeta: float
    precision: float
    recall: float
    iou: float
    height: int
    width: int
    positive_fraction: float
    resized_from: tuple[int, int] | None = None
    no_positive: bool = False
    adaptive_f: float | None = None
    ignored_fraction: float = 0.0
    inter: int = 0
    union: int = 0

    def to_dict(self) -> dict:
        """Plain-Python form."""
        d = dataclasses.asdict(self)
        d["resized_from"] = list(self.resized_from) if self.resized_from else None
        return d


def _nanmean(values) -> float:
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.mean()) if arr.size else math.nan


def pooled_iou(images: Iterable[ImageScore]) -> float:
    """IoU over all pixels of ``images`` (their summed intersections over their summed unions; NaN when the
    union is empty)."""
    inter = union = 0
    for s in images:
        inter += s.inter
        union += s.union
    return inter / union if union else math.nan


@dataclass
class Scorer:
    """Accumulates per-image scores and the pooled IoU of one dataset under a :class:`Protocol`.

    ``add(stem, pred, gt, ignore=None)`` takes an in-focus probability map (any size: it is resized to the mask
    with the protocol's method, and the image is counted as resized), a boolean in-focus mask and, for labels
    with undetermined pixels, a boolean ignore mask (True = undetermined; needs ``protocol.honour_ignore``):
    every score of the image is then computed over its determined pixels only.
    ``summary()`` gives the dataset numbers: ``n``, ``mae``, ``fbeta``, ``iou`` (pooled over all pixels of all
    images), ``iou_mean`` (mean per-image IoU), ``precision``, ``recall`` and, with ``curves``, ``max_f``,
    ``mean_f``, ``adaptive_f``.
    """

    protocol: Protocol = field(default_factory=Protocol)
    dataset: str | None = None
    curves: bool = False
    images: list = field(default_factory=list, init=False)
    _precisions: list = field(default_factory=list, init=False, repr=False)
    _recalls: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        if isinstance(self.protocol, str):  # a protocol's name, as evaluate() takes it
            self.protocol = get_protocol(self.protocol)

    def add(self, stem: str, pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> ImageScore:
        """Score one image and add it to the dataset totals."""
        p = self.protocol
        pred = np.asarray(pred, dtype=np.float64)
        gt = np.asarray(gt, dtype=bool)
        if pred.ndim != 2 or gt.ndim != 2:
            raise ValueError(f"{stem}: expected 2-D maps, got prediction {pred.shape} and mask {gt.shape}")
        resized_from = None
        if pred.shape != gt.shape:
            resized_from = tuple(pred.shape)
            pred = RESIZERS[p.resize](pred, gt.shape)
        ignored_fraction = 0.0
        size = self.protocol.iou_size_for(self.dataset)
        if ignore is not None:
            ignore = np.asarray(ignore, dtype=bool)
            if not p.honour_ignore:
                raise ValueError(f"{stem}: this mask has undetermined pixels (an ignore mask), which protocol "
                                 f"{p.name!r} cannot score; use the 'standard' protocol")
            if ignore.shape != gt.shape:
                raise ValueError(f"{stem}: ignore mask {ignore.shape} differs from the mask {gt.shape}")
            if size is not None:
                raise ValueError(f"{stem}: ignore masks cannot be combined with a fixed IoU resolution")
            ignored_fraction = float(ignore.mean())
            if ignore.all():
                raise ValueError(f"{stem}: every pixel of the mask is undetermined; nothing to score")
            if ignore.any():
                keep = ~ignore
                pred, gt = pred[keep], gt[keep]
        gt_pos = positive_mask(gt, p.positive)
        no_pos = not gt_pos.any()

        f_pred_pos = positive_mask(binarize(pred, p.threshold, p.f_inclusive), p.positive)
        prec, rec = precision_recall(f_pred_pos, gt_pos)
        f = fbeta_score(f_pred_pos, gt_pos, p.beta2, p.fbeta_floor)

        iou_pred_pos = positive_mask(binarize(pred, p.threshold, p.iou_inclusive), p.positive)
        iou_gt_pos = gt_pos
        if size is not None:
            iou_pred_pos = resize_nearest(iou_pred_pos, (size, size))
            iou_gt_pos = resize_nearest(iou_gt_pos, (size, size))
        inter, union = iou_counts(iou_pred_pos, iou_gt_pos)
        img_iou = inter / union if union else math.nan

        adaptive = None
        if no_pos:
            if p.no_positive == "exclude":
                f = img_iou = math.nan
            else:
                f = float(p.no_positive == "perfect" and not f_pred_pos.any())
                img_iou = float(p.no_positive == "perfect" and not iou_pred_pos.any())
        if self.curves and not (no_pos and p.no_positive == "exclude"):
            scores = positive_scores(pred, p.positive)
            _, tp, n_pred, n_gt = pr_counts(scores, gt_pos, p.n_thresholds)
            self._precisions.append(tp / (n_pred + _EPS_PR))
            self._recalls.append(tp / (n_gt + _EPS_PR))
            adaptive = fbeta_score(scores >= adaptive_threshold(scores, p.adaptive_factor), gt_pos, p.beta2)
        height, width = (gt.shape if ignore is None else ignore.shape)
        score = ImageScore(stem=stem, mae=mae(pred, gt), fbeta=f, precision=float(prec), recall=float(rec),
                           iou=img_iou, height=height, width=width,
                           positive_fraction=float(gt_pos.mean()), resized_from=resized_from, no_positive=no_pos,
                           adaptive_f=adaptive, ignored_fraction=ignored_fraction, inter=inter, union=union)
        self.images.append(score)
        return score

    @property
    def pooled_iou(self) -> float:
        """IoU over all pixels of all images added so far (NaN when the union is empty)."""
        return pooled_iou(self.images)

    def curve_summary(self) -> Curves | None:
        """The dataset's mean PR / F-threshold curves (None unless ``curves``)."""
        if not self.curves:
            return None
        adaptive = [s.adaptive_f for s in self.images if s.adaptive_f is not None]
        return summarize_curves(self._precisions, self._recalls, adaptive, curve_thresholds(self.protocol.n_thresholds),
                                self.protocol.positive, self.protocol.beta2)

    def summary(self) -> dict:
        """Dataset numbers (see the class docstring)."""
        imgs = self.images
        out = {
            "n": len(imgs),
            "mae": _nanmean(s.mae for s in imgs),
            "fbeta": _nanmean(s.fbeta for s in imgs),
            "iou": self.pooled_iou,
            "iou_mean": _nanmean(s.iou for s in imgs),
            "precision": _nanmean(s.precision for s in imgs if not (s.no_positive and math.isnan(s.fbeta))),
            "recall": _nanmean(s.recall for s in imgs if not (s.no_positive and math.isnan(s.fbeta))),
            "n_resized": sum(s.resized_from is not None for s in imgs),
            "n_no_positive": sum(s.no_positive for s in imgs),
        }
        curves = self.curve_summary()
        if curves is not None:
            out.update(max_f=curves.max_f, mean_f=curves.mean_f, adaptive_f=curves.adaptive_f)
        return out
