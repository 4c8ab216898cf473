"""Acceptance checks on evaluation results: ``mae<=0.08``, ``DUT-TE:iou>=0.92``.

A release check, or a CI job that guards a model, states the numbers a model must reach and wants a verdict, not
a table to read::

    table = defocus.evaluate(model="default", datasets=[...], inference="model")
    results = check_requirements(table, ["mae<=0.08", "iou>=0.92"])
    all(r.met for r in results)

``defocus evaluate --require "mae<=0.08" --require "iou>=0.92"`` prints the same verdicts and exits with status 3
when one is not met.
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import dataclass
from typing import Iterable

#: Dataset numbers a requirement may name (keys of ``Report.metrics``); the last three need curves.
REQUIRABLE_METRICS = ("mae", "fbeta", "iou", "iou_mean", "precision", "recall", "max_f", "mean_f", "adaptive_f")
#: Metrics that exist only when the evaluation computed PR curves.
CURVE_METRICS = ("max_f", "mean_f", "adaptive_f")

_OPERATORS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}
_PATTERN = re.compile(r"^\s*(?:(?P<dataset>[^:<>=]+):)?\s*(?P<metric>[A-Za-z_]+)\s*(?P<op><=|>=|<|>)\s*"
                      r"(?P<value>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*$")


def _defined(value) -> bool:
    return value is not None and not math.isnan(float(value))


@dataclass(frozen=True)
class Requirement:
    """A bound on one dataset number: ``metric op value``, on one dataset label or (``dataset=None``) on all."""

    metric: str
    op: str
    value: float
    dataset: str | None = None

    def __str__(self) -> str:
        prefix = f"{self.dataset}:" if self.dataset else ""
        return f"{prefix}{self.metric}{self.op}{self.value:g}"

    def holds(self, actual: float | None) -> bool:
        """Whether ``actual`` satisfies the bound (an undefined number, None or NaN, never does)."""
        return _defined(actual) and bool(_OPERATORS[self.op](actual, self.value))


@dataclass(frozen=True)
class RequirementResult:
    """One requirement checked on one report (method x dataset)."""

    requirement: Requirement
    method: str | None
    dataset: str | None
    actual: float | None  # None when the number is undefined (NaN)
    met: bool

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return {"requirement": str(self.requirement), "metric": self.requirement.metric, "op": self.requirement.op,
                "value": self.requirement.value, "method": self.method, "dataset": self.dataset, "actual": self.actual,
                "met": self.met}

    def to_line(self, digits: int = 4) -> str:
        """One human-readable line: what was required, on what, the number reached and the verdict."""
        where = " / ".join(str(x) for x in (self.method, self.dataset) if x) or "evaluation"
        actual = "n/a" if self.actual is None else f"{self.actual:.{digits}f}"
        verdict = "met" if self.met else "NOT met"
        r = self.requirement
        return f"{r.metric} {r.op} {r.value:g} on {where}: {actual} ({verdict})"


def parse_requirement(text: str) -> Requirement:
    """Parse ``[DATASET:]METRIC OP VALUE`` (OP one of ``<= >= < >``), e.g. ``mae<=0.08`` or ``DUT-TE:iou>=0.9``."""
    m = _PATTERN.match(text)
    if m is None:
        raise ValueError(f"requirement {text!r}: expected [DATASET:]METRIC<=VALUE or >= (e.g. 'mae<=0.08')")
    metric = m["metric"].lower()
    if metric not in REQUIRABLE_METRICS:
        raise ValueError(f"requirement {text!r}: unknown metric {metric!r}; one of {', '.join(REQUIRABLE_METRICS)}")
    dataset = m["dataset"].strip() if m["dataset"] else None
    return Requirement(metric=metric, op=m["op"], value=float(m["value"]), dataset=dataset)


def needs_curves(requirements: Iterable[Requirement]) -> bool:
    """Whether any requirement names a number that only PR curves give (max-F, mean-F, adaptive F)."""
    return any(r.metric in CURVE_METRICS for r in requirements)


def same_dataset(a: str | None, b: str | None) -> bool:
    """Whether two dataset labels name the same set, as the registry reads names
    (:func:`defocus.data.registry.canonical_name`: ``dut-te``, ``DUT_TE`` and ``DUT-TE`` are one)."""
    from .data.registry import canonical_name

    if a is None or b is None:
        return a is b
    return canonical_name(a) == canonical_name(b)


def check_requirements(reports, requirements) -> list[RequirementResult]:
    """Check every requirement on every report it applies to (a ``Report``, a ``ReportTable`` or a list of them).

    ``requirements`` may be :class:`Requirement` objects or their text. A requirement naming a dataset that no
    report has (compared as :func:`same_dataset` does) raises ``ValueError`` (a typo would otherwise pass
    silently), as does a curve metric on reports scored without curves.
    """
    reports = [reports] if hasattr(reports, "metrics") else list(reports)
    results = []
    for req in requirements:
        req = parse_requirement(req) if isinstance(req, str) else req
        matching = [r for r in reports if req.dataset is None or same_dataset(r.dataset, req.dataset)]
        if not matching:
            known = sorted({r.dataset for r in reports if r.dataset})
            have = f"datasets: {', '.join(known)}" if known else "the results carry no dataset label"
            raise ValueError(f"requirement {req}: no result on dataset {req.dataset!r} ({have})")
        for report in matching:
            if req.metric not in report.metrics:
                raise ValueError(f"requirement {req}: {req.metric} needs curves (evaluate with curves=True)")
            actual = report.metrics[req.metric]
            actual = float(actual) if _defined(actual) else None
            results.append(RequirementResult(req, report.method, report.dataset, actual, req.holds(actual)))
    return results
