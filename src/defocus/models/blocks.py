"""Building blocks of the DFFNet decoder: conv+BN without activation, and the CPD-style RFB."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBN(nn.Sequential):
    """Bias-free convolution followed by BatchNorm and **no activation** (method.md §0, §9.12).

    The reference's conv block defines a ReLU it never applies; reproducing that keeps the decoder linear.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size=3, padding=None, dilation: int = 1):
        if padding is None:
            padding = (kernel_size // 2) if isinstance(kernel_size, int) else tuple(k // 2 for k in kernel_size)
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=padding, dilation=dilation, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)


def _rfb_branch(in_ch: int, out_ch: int, k: int) -> nn.Sequential:
    """1x1 reduction, 1xk, kx1, then a 3x3 convolution with dilation k (all conv+BN, no ReLU)."""
    return nn.Sequential(
        ConvBN(in_ch, out_ch, 1),
        ConvBN(out_ch, out_ch, (1, k), padding=(0, k // 2)),
        ConvBN(out_ch, out_ch, (k, 1), padding=(k // 2, 0)),
        ConvBN(out_ch, out_ch, 3, padding=k, dilation=k),
    )


class RFB(nn.Module):
    """Multi-scale receptive-field block (method.md §1.2): four branches, merge conv, 1x1 residual, one ReLU."""

    def __init__(self, in_ch: int, out_ch: int = 32):
        super().__init__()
        self.branch0 = nn.Sequential(ConvBN(in_ch, out_ch, 1))
        self.branch1 = _rfb_branch(in_ch, out_ch, 3)
        self.branch2 = _rfb_branch(in_ch, out_ch, 5)
        self.branch3 = _rfb_branch(in_ch, out_ch, 7)
        self.conv_cat = ConvBN(4 * out_ch, out_ch, 3)
        self.conv_res = ConvBN(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        merged = self.conv_cat(torch.cat([self.branch0(x), self.branch1(x), self.branch2(x), self.branch3(x)], 1))
        return F.relu(merged + self.conv_res(x))


def up2(x: torch.Tensor, times: int = 1) -> torch.Tensor:
    """Bilinear 2x upsampling with align_corners=True, applied `times` times in sequence (method.md §0: U2^n)."""
    for _ in range(times):
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
    return x
