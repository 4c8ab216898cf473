"""Figures of evaluation curves: precision-recall and F-threshold curves of several methods on one figure.

Needs matplotlib (the ``viz`` extra: ``pip install "defocus[viz]"``); it is imported only when a figure is made.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .metrics import Curves

PLOT_KINDS = ("pr", "f")


def _figure_class():
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError('plotting needs matplotlib: pip install "defocus[viz]"') from e
    return Figure


def plot_curves(curves: Mapping[str, Curves], path=None, kinds: Sequence[str] = PLOT_KINDS,
                title: str | None = None, dpi: int = 150):
    """Draw PR curves (``"pr"``: precision against recall) and F-threshold curves (``"f"``: F-beta against the
    threshold, max-F marked) for every labelled :class:`~defocus.metrics.Curves`, one panel per kind.

    Args:
        curves: ``{label: curves}``, e.g. from :func:`defocus.evaluation.curves_of` or ``load_curves``.
        path: if given, save the figure there; the format follows the suffix (``.png``, ``.svg``, ``.pdf``).
        kinds: panels to draw, in order.
        title: figure title.
        dpi: resolution of raster output.

    Returns:
        the matplotlib ``Figure`` (built without pyplot, so no display is needed).
    """
    if not curves:
        raise ValueError("no curves to plot (evaluate with curves=True / --curves)")
    kinds = list(kinds)
    unknown = [k for k in kinds if k not in PLOT_KINDS]
    if unknown or not kinds:
        raise ValueError(f"kinds must be a non-empty subset of {PLOT_KINDS}, got {kinds}")
    fig = _figure_class()(figsize=(5.0 * len(kinds), 4.4), layout="constrained")
    axes = fig.subplots(1, len(kinds), squeeze=False)[0]
    positives = {c.positive for c in curves.values()}
    positive = positives.pop() if len(positives) == 1 else "mixed"
    for ax, kind in zip(axes, kinds):
        for label, c in curves.items():
            if kind == "pr":
                ax.plot(c.recall, c.precision, label=f"{label} (max-F {c.max_f:.3f})")
            else:
                line, = ax.plot(c.thresholds, c.fbeta, label=f"{label} (mean-F {c.mean_f:.3f})")
                best = int(c.fbeta.argmax())
                ax.plot([c.thresholds[best]], [c.fbeta[best]], "o", color=line.get_color(), markersize=4)
        if kind == "pr":
            ax.set(xlabel="recall", ylabel="precision", title=f"precision-recall ({positive} positive)")
        else:
            ax.set(xlabel="threshold", ylabel="F-beta (beta² = 0.3)", title=f"F-threshold ({positive} positive)")
        ax.set_xlim(0, 1)
        low = min(float(np.nanmin(c.precision if kind == "pr" else c.fbeta)) for c in curves.values())
        ax.set_ylim(max(0.0, min(0.5, low - 0.05)), 1.01)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower left", fontsize="small")
    if title:
        fig.suptitle(title)
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig
