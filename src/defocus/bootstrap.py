"""How sure a score is: percentile-bootstrap intervals over the images of a dataset, alone and paired.

A DBD test set holds tens to a few hundred photos, and one hard photo moves a dataset's MAE or F by more than
two methods differ. Resampling the images with replacement and scoring each resample the way the dataset was
scored (mean of per-image MAE and F, IoU pooled over all pixels) gives an interval for each number. Two methods
scored on the same images are resampled *together* (the same images in each resample), so the interval of their
difference leaves out what the photos share: a difference is resolved when that interval excludes zero.

    table = defocus.evaluate(pred=["a/", "b/"], gt="masks/")
    results = bootstrap_table(table, n_resamples=2000)
    print(bootstrap_markdown(results))

``defocus evaluate --bootstrap 2000`` prints the same. The intervals describe the sampling of images from a
population like the dataset's; they say nothing about a second training run (seed spread) or other datasets.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from .metrics import ImageScore

#: The dataset numbers that get intervals, as :class:`defocus.metrics.Scorer` computes them.
METRICS = ("mae", "fbeta", "iou")
#: Below this many images the markdown says the intervals understate the uncertainty.
FEW_IMAGES = 10
#: Whether a lower value is better, per metric.
LOWER_IS_BETTER = {"mae": True, "fbeta": False, "iou": False}


@dataclass(frozen=True)
class Interval:
    """A dataset number on its own images (``value``) and its ``level`` percentile-bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of zero (for a difference: the difference is resolved)."""
        return bool(self.low > 0 or self.high < 0)

    def to_dict(self) -> dict:
        """Plain-Python form (NaN as None)."""
        return {k: (None if math.isnan(v) else float(v)) for k, v in
                (("value", self.value), ("low", self.low), ("high", self.high))}


@dataclass
class BootstrapResult:
    """Intervals of one method on one dataset, or (with ``reference``) of its difference ``method - reference``
    on the images both were scored on."""

    dataset: str | None
    method: str | None
    n: int
    intervals: dict[str, Interval]
    reference: str | None = None
    n_resamples: int = 0
    level: float = 0.95
    seed: int = 0
    missing: list[str] = field(default_factory=list)

    @property
    def is_difference(self) -> bool:
        """True for a paired difference against ``reference``."""
        return self.reference is not None

    def to_dict(self) -> dict:
        """Plain-Python form."""
        return {"dataset": self.dataset, "method": self.method, "reference": self.reference, "n": self.n,
                "n_resamples": self.n_resamples, "level": self.level, "seed": self.seed, "missing": self.missing,
                "intervals": {k: v.to_dict() for k, v in self.intervals.items()}}


def _columns(images: Sequence[ImageScore]) -> dict[str, np.ndarray]:
    return {"mae": np.array([s.mae for s in images], dtype=np.float64),
            "fbeta": np.array([s.fbeta for s in images], dtype=np.float64),
            "inter": np.array([s.inter for s in images], dtype=np.float64),
            "union": np.array([s.union for s in images], dtype=np.float64)}


def _scores(cols: dict[str, np.ndarray], idx: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric for each row of image indices ``idx`` (resamples x images)."""
    with warnings.catch_warnings(), np.errstate(invalid="ignore", divide="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of only excluded images has no F: NaN
        return {"mae": np.nanmean(cols["mae"][idx], axis=1),
                "fbeta": np.nanmean(cols["fbeta"][idx], axis=1),
                "iou": cols["inter"][idx].sum(axis=1) / cols["union"][idx].sum(axis=1)}


def _resample(n: int, n_resamples: int, seed: int) -> np.ndarray:
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def _intervals(observed: dict, samples: dict, level: float) -> dict[str, Interval]:
    q = ((1 - level) / 2, (1 + level) / 2)
    out = {}
    for m in METRICS:
        s = samples[m][~np.isnan(samples[m])]
        low, high = (np.quantile(s, q) if s.size else (math.nan, math.nan))
        out[m] = Interval(float(observed[m][0]), float(low), float(high))
    return out


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def bootstrap_report(report, n_resamples: int = 2000, level: float = 0.95, seed: int = 0) -> BootstrapResult:
    """Intervals of the MAE, Fβ and IoU of one :class:`~defocus.evaluation.Report` over its images."""
    _check_level(level)
    images = list(report.images)
    if not images:
        raise ValueError(f"{report.method or report.dataset or 'report'}: no scored image to resample")
    cols = _columns(images)
    observed = _scores(cols, np.arange(len(images))[None])
    samples = _scores(cols, _resample(len(images), n_resamples, seed))
    return BootstrapResult(report.dataset, report.method, len(images), _intervals(observed, samples, level),
                           n_resamples=n_resamples, level=level, seed=seed)


def bootstrap_difference(report, reference, n_resamples: int = 2000, level: float = 0.95,
                         seed: int = 0) -> BootstrapResult:
    """Intervals of ``report - reference`` (MAE, Fβ, IoU), both scored on the images they share, resampled together.

    Images scored for only one of the two are left out and listed in ``missing``; an error if none is shared.
    """
    _check_level(level)
    ours = {s.stem: s for s in report.images}
    theirs = {s.stem: s for s in reference.images}
    stems = [s for s in ours if s in theirs]
    if not stems:
        raise ValueError(f"{report.method!r} and {reference.method!r} share no scored image")
    missing = sorted(set(ours).symmetric_difference(theirs))
    a, b = _columns([ours[s] for s in stems]), _columns([theirs[s] for s in stems])
    idx = _resample(len(stems), n_resamples, seed)
    ident = np.arange(len(stems))[None]
    sa, sb, oa, ob = _scores(a, idx), _scores(b, idx), _scores(a, ident), _scores(b, ident)
    diff = {m: sa[m] - sb[m] for m in METRICS}
    observed = {m: oa[m] - ob[m] for m in METRICS}
    return BootstrapResult(report.dataset, report.method, len(stems), _intervals(observed, diff, level),
                           reference=reference.method, n_resamples=n_resamples, level=level, seed=seed,
                           missing=missing)


def bootstrap_table(reports: Iterable, reference: str | None = None, n_resamples: int = 2000, level: float = 0.95,
                    seed: int = 0) -> list[BootstrapResult]:
    """For every dataset of ``reports`` (a :class:`~defocus.evaluation.ReportTable` or a list of reports): each
    method's intervals, then each other method's paired difference against ``reference`` (a method label; default:
    the dataset's first method)."""
    reports = list(reports)
    out = []
    for dataset in dict.fromkeys(r.dataset for r in reports):
        rows = [r for r in reports if r.dataset == dataset]
        out += [bootstrap_report(r, n_resamples, level, seed) for r in rows]
        ref = rows[0] if reference is None else next((r for r in rows if r.method == reference), None)
        if ref is None:
            raise ValueError(f"no method {reference!r} on dataset {dataset!r}; methods: "
                             f"{', '.join(str(r.method) for r in rows)}")
        out += [bootstrap_difference(r, ref, n_resamples, level, seed) for r in rows if r is not ref]
    return out


def _cell(iv: Interval, digits: int, signed: bool) -> str:
    if math.isnan(iv.value):
        return "n/a"
    sign = "+" if signed else ""
    return f"{iv.value:{sign}.{digits}f} [{iv.low:{sign}.{digits}f}, {iv.high:{sign}.{digits}f}]"


def bootstrap_markdown(results: Sequence[BootstrapResult], digits: int = 3) -> str:
    """The intervals as Markdown: per dataset, a table of each method's numbers, then one of the paired
    differences (a difference whose interval excludes zero is marked: ``better`` or ``worse`` than the reference)."""
    if not results:
        return ""
    first = results[0]
    lines = [f"Intervals: {first.level * 100:g}% percentile bootstrap over images ({first.n_resamples} resamples, "
             f"seed {first.seed}); differences resample both methods' images together."]
    for dataset in dict.fromkeys(r.dataset for r in results):
        rows = [r for r in results if r.dataset == dataset]
        title = f"**{dataset}**" if dataset else "**dataset**"
        lines += ["", title, "", "| method | n | MAE | Fβ | IoU |", "|---|---|---|---|---|"]
        lines += [f"| {r.method or ''} | {r.n} | " + " | ".join(_cell(r.intervals[m], digits, False) for m in METRICS)
                  + " |" for r in rows if not r.is_difference]
        diffs = [r for r in rows if r.is_difference]
        if diffs:
            lines += ["", "| difference | n | ΔMAE | ΔFβ | ΔIoU |", "|---|---|---|---|---|"]
            for r in diffs:
                cells = []
                for m in METRICS:
                    iv = r.intervals[m]
                    verdict = ""
                    if iv.excludes_zero:
                        verdict = " better" if (iv.high < 0) == LOWER_IS_BETTER[m] else " worse"
                    cells.append(_cell(iv, digits, True) + verdict)
                lines.append(f"| {r.method or ''} - {r.reference or ''} | {r.n} | " + " | ".join(cells) + " |")
        if min(r.n for r in rows) < FEW_IMAGES:
            lines += ["", f"Fewer than {FEW_IMAGES} images: a resample can only repeat these few, so the intervals "
                          "understate the uncertainty."]
        if diffs and any(r.missing for r in diffs):
            lines += ["", "Compared on the images both methods were scored on; left out: "
                      + "; ".join(f"{r.method}: {len(r.missing)}" for r in diffs if r.missing)]
    return "\n".join(lines) + "\n"
