"""Monocular depth teachers for depth feature distillation (method.md §2, §4) and R-DFFNet's pseudo labels (§5).

Every teacher takes RGB images in [0, 1], normalises them itself and returns ``(features, depth)``: four feature
maps deepest first at strides 32/16/8/4 (``teacher.channels`` gives their channel counts) and a (B, 1, H, W)
relative inverse depth map at the input size. See :class:`DepthTeacher`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

from .base import TEACHER_STRIDES, DepthTeacher, level_sizes, normalize_depth_minmax
from .midas import MIDAS_V21_FILE, MidasTeacher, load_midas_state_dict

log = logging.getLogger(__name__)

DEPTH_TEACHERS = ("midas_v21", "hf")
_ALIASES = {"midas": "midas_v21", "midas_v21_large": "midas_v21", "transformers": "hf"}


def create_depth_teacher(kind: str = "midas_v21", weights: Optional[Union[str, Path]] = None, *,
                         frozen: bool = True, **kwargs) -> DepthTeacher:
    """Build a depth teacher.

    * ``kind="midas_v21"``: MiDaS v2.1 large (ResNeXt-101 32x8d + RefineNet decoder). ``weights`` is the path of
      ``midas_v21-f6b98070.pt`` (loaded strictly). Options: ``tiny=True`` (a very small random network with the
      same interface, for fast tests; ``tiny_width`` sets its size), ``features`` (decoder width), ``mean``/``std``.
    * ``kind="hf"``: a ``transformers`` depth-estimation model saved with ``save_pretrained``; ``weights`` is its
      local directory. Options: ``features="neck"|"fusion"``, ``input_size``, ``mean``/``std``, ``config`` (a
      transformers config for a random model when ``weights`` is None). See :mod:`defocus.models.depth.hf`.

    Without ``weights`` the teacher is randomly initialised and a warning is logged (except for ``tiny=True``,
    which is random by design). Nothing is ever downloaded. ``frozen=True`` turns off the parameters' gradients
    (teachers are never optimised). The teacher is returned in train mode like any new module; the caller chooses
    the BatchNorm mode (the reference runs its teachers in train mode under ``torch.no_grad()``).
    """
    kind = _ALIASES.get(kind, kind)
    if kind == "midas_v21":
        teacher = MidasTeacher(**kwargs)
        if weights is not None:
            if teacher.tiny:
                raise ValueError("tiny=True builds a random test network; it cannot load MiDaS weights")
            teacher.load_weights(weights)
        elif not teacher.tiny:
            log.warning("MiDaS v2.1 depth teacher: no weights given, using random initialisation "
                        "(pass weights=path/to/%s)", MIDAS_V21_FILE)
    elif kind == "hf":
        from .hf import load_hf_teacher

        teacher = load_hf_teacher(weights, **kwargs)
    else:
        raise ValueError(f"unknown depth teacher {kind!r}; choose one of {DEPTH_TEACHERS}")
    if frozen:
        teacher.freeze()
    return teacher


__all__ = [
    "create_depth_teacher",
    "DepthTeacher",
    "MidasTeacher",
    "load_midas_state_dict",
    "normalize_depth_minmax",
    "level_sizes",
    "DEPTH_TEACHERS",
    "TEACHER_STRIDES",
    "MIDAS_V21_FILE",
]
