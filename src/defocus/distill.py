"""Feature distillation pieces of stage 2 (method.md §4.2-§4.4): projectors, the normalised feature distance, the
summed multi-level loss and the lambda schedule. All lists of levels are ordered deepest first."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class Projectors(nn.Module):
    """One bias-free 1x1 convolution per level mapping student channels to teacher channels, Xavier-normal
    initialised ("feature-alignment projectors", method.md §4.2). ``forward(features)`` maps a list of student maps
    (deepest first) to a list of projected maps."""

    def __init__(self, student_channels: Sequence[int], teacher_channels: Sequence[int]):
        super().__init__()
        if len(student_channels) != len(teacher_channels):
            raise ValueError(f"{len(student_channels)} student levels but {len(teacher_channels)} teacher levels")
        self.student_channels = [int(c) for c in student_channels]
        self.teacher_channels = [int(c) for c in teacher_channels]
        self.convs = nn.ModuleList(
            nn.Conv2d(s, t, kernel_size=1, bias=False) for s, t in zip(self.student_channels, self.teacher_channels))
        for conv in self.convs:
            nn.init.xavier_normal_(conv.weight)

    def forward(self, features: Sequence[torch.Tensor]) -> list:
        if len(features) != len(self.convs):
            raise ValueError(f"expected {len(self.convs)} feature levels, got {len(features)}")
        return [conv(f) for conv, f in zip(self.convs, features)]


def channel_normalize(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-pixel L2 normalisation over channels: ``x / sqrt(sum_c x^2 + eps)`` for (B, C, H, W) ``x``."""
    return x / torch.sqrt(x.pow(2).sum(dim=1, keepdim=True) + eps)


def feature_distance(student: torch.Tensor, teacher: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over (batch, height, width) of ``sum_c (N(student) - N(teacher))^2`` with N = :func:`channel_normalize`.

    ``teacher`` is detached, and bilinearly resized (align_corners=False) to the student's spatial size if the sizes
    differ. Computed in float32 (sums of squares over 2048 channels overflow float16).
    """
    if student.shape[1] != teacher.shape[1]:
        raise ValueError(f"channel mismatch: student {student.shape[1]} vs teacher {teacher.shape[1]} "
                         "(project the student first)")
    teacher = teacher.detach()
    if teacher.shape[-2:] != student.shape[-2:]:
        teacher = F.interpolate(teacher.float(), size=student.shape[-2:], mode="bilinear", align_corners=False)
    diff = channel_normalize(student.float(), eps) - channel_normalize(teacher.float(), eps)
    return diff.pow(2).sum(dim=1).mean()


def feature_distillation_loss(projected: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                              eps: float = 1e-6) -> torch.Tensor:
    """Sum over levels of :func:`feature_distance` (projected student level l vs teacher level l)."""
    if len(projected) != len(teacher):
        raise ValueError(f"{len(projected)} student levels but {len(teacher)} teacher levels")
    if not projected:
        raise ValueError("no feature levels given")
    return sum(feature_distance(s, t, eps) for s, t in zip(projected, teacher))


def distill_lambda(epoch: int, epochs: int = 75, switch: int = 15, value: float = 3.0) -> float:
    """Weight of the distillation terms at ``epoch`` (counted from 1; method.md §4.4): ``value`` before ``switch``,
    then ``value * (epoch - switch) / (epochs - switch)`` (0 at the switch, rising linearly).

    The reference configures ``epochs=75`` but trains epochs 1..74, so the last value used is 2.95.
    """
    if epoch < switch:
        return float(value)
    if epochs <= switch:
        raise ValueError(f"epochs ({epochs}) must exceed switch ({switch})")
    return float(value) * (epoch - switch) / (epochs - switch)
