"""Padding an input to a multiple of a network's stride (replicate, bottom/right), the one place that does it."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int, always: bool = False) -> torch.Tensor:
    """``x`` (..., H, W) padded at the bottom and right by replicating its last row / column until H and W are
    multiples of ``multiple``; unchanged when they already are, unless ``always`` (a traced graph for export must
    contain the padding whatever the example's size)."""
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = (multiple - h % multiple) % multiple, (multiple - w % multiple) % multiple
    if always or ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x
