"""Checking a weight file's tensors against a model's before loading them: one report of what is missing, what
has the wrong shape and what is left over."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional


@dataclass
class StateDictMismatch:
    """Names of the tensors a model needs but a file lacks (``missing``), has with another shape
    (``wrong_shape``: ``"name: file (..), expected (..)"``) or has beyond the model's (``unexpected``)."""

    missing: list = field(default_factory=list)
    wrong_shape: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing or self.wrong_shape or self.unexpected)

    def summary(self) -> str:
        """One line: ``missing N (e.g. name); wrong shape N (e.g. ...); unexpected N (e.g. name)``."""
        kinds = (("missing", self.missing), ("wrong shape", self.wrong_shape), ("unexpected", self.unexpected))
        return "; ".join(f"{what} {len(names)} (e.g. {names[0]})" for what, names in kinds if names)


def compare_state_dicts(expected: Mapping, found: Mapping,
                        ignore_missing: Optional[Callable[[str], bool]] = None,
                        ignore_unexpected: Optional[Callable[[str], bool]] = None) -> StateDictMismatch:
    """Compare ``found`` (name -> tensor, from a file) with ``expected`` (name -> tensor or shape, the model's);
    names for which ``ignore_missing`` / ``ignore_unexpected`` is true are not reported."""
    shapes = {k: tuple(getattr(v, "shape", v)) for k, v in expected.items()}
    return StateDictMismatch(
        missing=[k for k in shapes if k not in found and not (ignore_missing and ignore_missing(k))],
        wrong_shape=[f"{k}: file {tuple(found[k].shape)}, expected {s}" for k, s in shapes.items()
                     if k in found and tuple(found[k].shape) != s],
        unexpected=[k for k in found if k not in shapes and not (ignore_unexpected and ignore_unexpected(k))],
    )
