"""Training losses of DFFNet / D-DFFNet / R-DFFNet (method.md §3.2, §4.5, §5).

* :func:`dof_edge_loss` - the DOF-edge (Dice on Laplacian edges) term, with the reference's quirks as defaults:
  zero padding (in-focus pixels on the image frame count as edges) and a Dice **summed over the batch**.
* :func:`dbd_loss` - mean BCE-with-logits + ``beta`` x DOF-edge loss on one output.
* :class:`DBDLoss` - deep supervision over the final logit and the side logits (upsampled to the label size).
* :func:`depth_target` / :func:`depth_loss` - R-DFFNet's response distillation of a depth teacher.
* :func:`scene_depth_target` - the same target from a rendered scene's own depth (``distill.depth_teacher: scene``).

Polarity: logits and labels are **1 = in focus**. All losses are computed in float32.

Labels with undetermined pixels (derived from photo pairs) come with ``valid`` (B,1,H,W, 1 = determined): BCE is
then averaged over the valid pixels only, and the DOF-edge Dice only looks at pixels whose 3x3 Laplacian
neighbourhood is all valid. ``valid=None`` (every pixel labelled) is the reference's loss exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

EDGE_REDUCTIONS = ("sum", "mean")
EDGE_PADDINGS = ("zeros", "replicate")
DEPTH_LOSSES = ("l1", "l2")
DEPTH_ACTIVATIONS = ("sigmoid", "none")


def laplacian_kernel(device=None, dtype=torch.float32) -> torch.Tensor:
    """The 3x3 8-neighbour Laplacian (off-centre entries +1, centre -8) as a (1,1,3,3) conv weight."""
    k = torch.ones(1, 1, 3, 3, device=device, dtype=dtype)
    k[0, 0, 1, 1] = -8.0
    return k


def laplacian(x: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Same-size 8-neighbour Laplacian response of a (B,1,H,W) map.

    ``padding="zeros"`` is the reference (the frame outside the image reads as 0); ``"replicate"`` repeats the
    border so that a constant region has no response at the frame.
    """
    if padding not in EDGE_PADDINGS:
        raise ValueError(f"edge padding must be one of {EDGE_PADDINGS}, got {padding!r}")
    k = laplacian_kernel(x.device, x.dtype)
    if padding == "zeros":
        return F.conv2d(x, k, padding=1)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k)


def label_edges(target: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Label edge map: 1 where the Laplacian response of the label is non-zero (exact comparison), else 0."""
    return (laplacian(target.float(), padding) != 0).float()


def soft_edges(logit: torch.Tensor, alpha: float = 1.0, padding: str = "zeros") -> torch.Tensor:
    """Predicted soft edge map g^2 / (g^2 + alpha) with g the Laplacian of sigmoid(logit)."""
    g = laplacian(torch.sigmoid(logit.float()), padding)
    g2 = g * g
    return g2 / (g2 + alpha)


def valid_interior(valid: torch.Tensor) -> torch.Tensor:
    """Pixels whose whole 3x3 neighbourhood inside the image is valid (the support of a Laplacian response)."""
    return -F.max_pool2d(-valid.float(), 3, stride=1, padding=1)


def dof_edge_loss(logit: torch.Tensor, target: torch.Tensor, alpha: float = 1.0, smooth: float = 1.0,
                  reduction: str = "sum", padding: str = "zeros", valid=None) -> torch.Tensor:
    """DOF-edge loss (method.md §3.2): per-sample Dice ``1 - (2 sum(Ep*Ey) + s) / (sum(Ep^2) + sum(Ey^2) + s)``.

    Args:
        logit: (B,1,H,W) logits, 1 = in focus.
        target: (B,1,H,W) labels in {0,1}.
        alpha: softness of the predicted edge (the reference passes 1).
        smooth: Dice smoothing constant.
        reduction: ``"sum"`` over the batch (reference) or ``"mean"`` (batch-size independent).
        padding: Laplacian border handling, ``"zeros"`` (reference) or ``"replicate"``.
        valid: optional (B,1,H,W) map, 1 = determined label; edges are compared only where the Laplacian's
            3x3 support is all determined.
    """
    if reduction not in EDGE_REDUCTIONS:
        raise ValueError(f"edge reduction must be one of {EDGE_REDUCTIONS}, got {reduction!r}")
    ep = soft_edges(logit, alpha, padding)
    ey = label_edges(target, padding)
    if valid is not None:
        keep = valid_interior(valid)
        ep, ey = ep * keep, ey * keep
    ep, ey = ep.flatten(1), ey.flatten(1)
    dice = 1.0 - (2.0 * (ep * ey).sum(1) + smooth) / ((ep * ep).sum(1) + (ey * ey).sum(1) + smooth)
    return dice.sum() if reduction == "sum" else dice.mean()


def dbd_loss(logit: torch.Tensor, target: torch.Tensor, beta: float = 0.5, alpha: float = 1.0,
             smooth: float = 1.0, edge_reduction: str = "sum", edge_padding: str = "zeros",
             valid=None) -> torch.Tensor:
    """Loss of one output: mean BCE-with-logits + ``beta`` x :func:`dof_edge_loss` (``beta=0``: BCE only).

    With ``valid`` (1 = determined label) the BCE is the mean over valid pixels and the edge term is masked."""
    logit, target = logit.float(), target.float()
    if valid is None:
        loss = F.binary_cross_entropy_with_logits(logit, target)
    else:
        valid = valid.float()
        bce = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
        loss = (bce * valid).sum() / valid.sum().clamp_min(1.0)
    if beta:
        loss = loss + beta * dof_edge_loss(logit, target, alpha, smooth, edge_reduction, edge_padding, valid)
    return loss


def resize_to(x: torch.Tensor, size) -> torch.Tensor:
    """Bilinear resize (align_corners=False, as the reference does for side outputs); no-op if already ``size``."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


@dataclass
class DBDLoss:
    """Deep supervision: ``final_weight * L(Z) + side_weight * sum_k L(up(S_k))`` with L = :func:`dbd_loss`.

    Stage 1 uses ``final_weight=1``; the reference's stage 2 uses ``final_weight=1.1``. ``beta=0`` is the
    "bce only" ablation. Side logits are upsampled bilinearly (align_corners=False) to the label size.
    """

    beta: float = 0.5
    final_weight: float = 1.0
    side_weight: float = 1.0
    alpha: float = 1.0
    smooth: float = 1.0
    edge_reduction: str = "sum"
    edge_padding: str = "zeros"

    def __post_init__(self):
        if self.edge_reduction not in EDGE_REDUCTIONS:
            raise ValueError(f"edge_reduction must be one of {EDGE_REDUCTIONS}, got {self.edge_reduction!r}")
        if self.edge_padding not in EDGE_PADDINGS:
            raise ValueError(f"edge_padding must be one of {EDGE_PADDINGS}, got {self.edge_padding!r}")

    def single(self, logit: torch.Tensor, target: torch.Tensor, valid=None) -> torch.Tensor:
        """:func:`dbd_loss` of one output with this object's settings."""
        return dbd_loss(logit, target, self.beta, self.alpha, self.smooth, self.edge_reduction, self.edge_padding,
                        valid)

    def __call__(self, logit: torch.Tensor, sides: Sequence[torch.Tensor], target: torch.Tensor, valid=None):
        """Return ``(total, parts)``; ``parts`` holds the unweighted ``final`` and ``side1..`` losses (detached).
        ``valid`` (1 = determined label, the target's size) leaves undetermined pixels out of every term."""
        size = target.shape[-2:]
        final = self.single(resize_to(logit, size), target, valid)
        total = self.final_weight * final
        parts = {"final": final.detach()}
        for k, side in enumerate(sides, 1):
            s = self.single(resize_to(side, size), target, valid)
            total = total + self.side_weight * s
            parts[f"side{k}"] = s.detach()
        return total, parts


def depth_target(depth: torch.Tensor, size, eps: float = 1e-8) -> torch.Tensor:
    """Pseudo depth label for R-DFFNet: the teacher's relative inverse depth resized (bilinear, align_corners=False)
    to ``size`` and min-max normalised to [0, 1] per image (a constant map becomes 0)."""
    d = resize_to(depth.float(), size)
    flat = d.flatten(1)
    lo = flat.min(1, keepdim=True).values
    hi = flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(eps)).view_as(d)


def scene_depth_target(depth: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:
    """R-DFFNet's depth target from known scene depth instead of a teacher: ``depth`` (B,1,H,W, metric or relative
    depth, 0 = unknown) becomes inverse depth min-max normalised to [0, 1] per image over its known pixels (the
    form of :func:`depth_target`: near = 1). Returns ``(target, known)``, ``known`` 1 where the depth is known;
    an image without any known depth has an all-zero ``known`` map."""
    d = depth.float()
    known = d > 0
    inv = torch.where(known, 1.0 / d.clamp_min(eps), torch.zeros_like(d))
    flat, k = inv.flatten(1), known.flatten(1)
    big = torch.finfo(flat.dtype).max
    lo = torch.where(k, flat, torch.full_like(flat, big)).min(1, keepdim=True).values
    hi = torch.where(k, flat, torch.full_like(flat, -big)).max(1, keepdim=True).values
    lo = torch.where(k.any(1, keepdim=True), lo, torch.zeros_like(lo))
    hi = torch.where(k.any(1, keepdim=True), hi, torch.zeros_like(hi))
    target = ((flat - lo) / (hi - lo).clamp_min(eps)).clamp(0, 1) * k
    return target.view_as(d), known.float()


def depth_loss(depth_logits: Sequence[torch.Tensor], target: torch.Tensor, kind: str = "l1",
               activation: str = "sigmoid", known: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Sum over depth outputs of the mean L1 (or L2) distance to ``target`` (B,1,H,W in [0,1]).

    Each output is upsampled to the target size (bilinear, align_corners=False) and mapped to [0,1] with a
    sigmoid (``activation="none"`` regresses the raw head output). ``known`` (B,1,H,W, 1 = the target is known)
    restricts the mean to those pixels (a batch without any known pixel adds zero). Returns ``(total, parts)``.
    """
    if kind not in DEPTH_LOSSES:
        raise ValueError(f"depth loss must be one of {DEPTH_LOSSES}, got {kind!r}")
    if activation not in DEPTH_ACTIVATIONS:
        raise ValueError(f"depth activation must be one of {DEPTH_ACTIVATIONS}, got {activation!r}")
    size = target.shape[-2:]
    total = target.new_zeros(())
    parts = {}
    for k, d in enumerate(depth_logits, 1):
        d = resize_to(d.float(), size)
        if activation == "sigmoid":
            d = torch.sigmoid(d)
        if known is None:
            term = F.l1_loss(d, target) if kind == "l1" else F.mse_loss(d, target)
        else:
            err = (d - target).abs() if kind == "l1" else (d - target) ** 2
            term = (err * known).sum() / known.sum().clamp_min(1.0)
        total = total + term
        parts[f"depth{k}"] = term.detach()
    return total, parts
