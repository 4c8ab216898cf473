"""What every depth teacher shares: input normalisation, the feature-level contract and the depth helpers."""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ...imagenet import IMAGENET_MEAN, IMAGENET_STD


#: Strides of the four feature levels a teacher returns, deepest first (those of the DFFNet student).
TEACHER_STRIDES = (32, 16, 8, 4)


class DepthTeacher(nn.Module):
    """Base class of the monocular depth teachers.

    ``forward(images01, with_depth=True)`` takes RGB images in [0, 1], shape (B, 3, H, W), normalises them itself
    and returns ``(features, depth)``:

    * ``features``: four tensors, deepest first, at strides 32/16/8/4 of the input (``channels`` lists their
      channel counts in the same order);
    * ``depth``: (B, 1, H, W) relative inverse depth at the input size (larger = nearer), or ``None`` when
      ``with_depth=False`` (the decoder is then skipped, which is all feature distillation needs).

    Subclasses set ``channels`` and implement ``_forward(normalised, size, with_depth)``.
    """

    strides = TEACHER_STRIDES

    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__()
        self.channels: list[int] = []
        # Not persistent: the checkpoint layouts the teachers load must stay exactly the upstream ones.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalize(self, images01: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] RGB images to the teacher's input normalisation."""
        return (images01 - self.mean.to(images01.dtype)) / self.std.to(images01.dtype)

    def forward(self, images01: torch.Tensor, with_depth: bool = True):
        if images01.ndim != 4 or images01.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images01.shape)}")
        size = tuple(images01.shape[-2:])
        features, depth = self._forward(self.normalize(images01), size, with_depth)
        return features, depth

    def _forward(self, x: torch.Tensor, size: tuple, with_depth: bool):
        raise NotImplementedError

    def freeze(self) -> "DepthTeacher":
        """Turn off gradients for every parameter (the teacher is never optimised); returns ``self``."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self


def level_sizes(size: Sequence[int], strides: Sequence[int] = TEACHER_STRIDES) -> list[tuple[int, int]]:
    """Spatial sizes ``ceil(H / s) x ceil(W / s)`` of the feature levels of an ``H x W`` input."""
    h, w = size
    return [(math.ceil(h / s), math.ceil(w / s)) for s in strides]


def resize_to(x: torch.Tensor, size: Sequence[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinearly resize ``x`` to ``size`` (returned unchanged when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=align_corners)


def normalize_depth_minmax(depth: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-image min-max normalisation of a (B, 1, H, W) depth map to [0, 1] (the R-DFFNet pseudo label, method.md §5).

    A constant map becomes all zeros.
    """
    flat = depth.flatten(1)
    lo = flat.min(dim=1).values.view(-1, *([1] * (depth.ndim - 1)))
    hi = flat.max(dim=1).values.view(-1, *([1] * (depth.ndim - 1)))
    return (depth - lo) / (hi - lo).clamp_min(eps)


def check_teacher_output(teacher: DepthTeacher, features: list, size: Optional[Sequence[int]] = None) -> None:
    """Raise ``ValueError`` unless ``features`` has one tensor per level with the channel counts of ``teacher``
    (and the stride-32/16/8/4 sizes of ``size`` when given). Used by the tests and handy when adding a teacher."""
    if len(features) != len(teacher.channels):
        raise ValueError(f"expected {len(teacher.channels)} feature levels, got {len(features)}")
    sizes = level_sizes(size) if size is not None else [None] * len(features)
    for i, (f, c, s) in enumerate(zip(features, teacher.channels, sizes)):
        if f.shape[1] != c or (s is not None and tuple(f.shape[-2:]) != s):
            raise ValueError(f"level {i}: got {tuple(f.shape)}, expected {c} channels at {s}")
