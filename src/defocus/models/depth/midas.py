"""MiDaS v2.1 large ("MidasNet", method.md §2): ResNeXt-101 32x8d encoder + RefineNet-style decoder, 256 features.

The module tree reproduces the key layout of the released ``midas_v21-f6b98070.pt`` so that the file loads
strictly: ``pretrained.layer1`` = (conv1, bn1, ReLU, max-pool, layer1) of torchvision's ResNeXt, ``pretrained.layer2-4``
= its later stages, ``scratch.*`` = the decoder. The encoder is built with ``weights=None`` (nothing is downloaded).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import read_state_dict
from .base import IMAGENET_MEAN, IMAGENET_STD, DepthTeacher, resize_to

log = logging.getLogger(__name__)

MIDAS_V21_FILE = "midas_v21-f6b98070.pt"


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit: ``relu(x) + conv2(relu(conv1(relu(x))))`` (3x3 convs with bias).

    The residual branch adds ``relu(x)``, not ``x``: upstream applies an in-place ReLU to the input before keeping it
    for the skip connection, and the released weights were trained that way.
    """

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1, bias=True)

    def forward(self, x):
        x = F.relu(x)
        return x + self.conv2(F.relu(self.conv1(x)))


class FeatureFusionBlock(nn.Module):
    """RefineNet fusion: ``resConfUnit2(path + resConfUnit1(skip))``, then bilinear 2x (align_corners=True).

    ``size`` replaces the 2x factor (the next skip's size) so that inputs whose sides are not multiples of 32 work;
    for multiples of 32 the two are the same operation.
    """

    def __init__(self, features: int):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, path, skip=None, size=None):
        if skip is not None:
            path = path + self.resConfUnit1(skip)
        path = self.resConfUnit2(path)
        if size is None:
            size = (path.shape[-2] * 2, path.shape[-1] * 2)
        return F.interpolate(path, size=tuple(size), mode="bilinear", align_corners=True)


class Upsample2x(nn.Module):
    """Bilinear 2x upsampling (align_corners=False), the parameter-free slot 1 of MiDaS' output head."""

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


class MidasDecoder(nn.Module):
    """The ``scratch`` part of MidasNet: 3x3 bias-free reductions of the four encoder levels to ``features``
    channels, four fusion blocks (deep -> shallow) and the output head
    conv3x3(features->128), up 2x, conv3x3(128->32), ReLU, conv1x1(32->1), ReLU (non-negative output)."""

    def __init__(self, in_channels: Sequence[int], features: int = 256, head_channels: Sequence[int] = (128, 32),
                 non_negative: bool = True):
        super().__init__()
        c1, c2, c3, c4 = in_channels  # shallow -> deep
        self.layer1_rn = nn.Conv2d(c1, features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(c2, features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(c3, features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(c4, features, 3, padding=1, bias=False)
        self.refinenet4 = FeatureFusionBlock(features)
        self.refinenet3 = FeatureFusionBlock(features)
        self.refinenet2 = FeatureFusionBlock(features)
        self.refinenet1 = FeatureFusionBlock(features)
        h1, h2 = head_channels
        self.output_conv = nn.Sequential(
            nn.Conv2d(features, h1, 3, padding=1),
            Upsample2x(),
            nn.Conv2d(h1, h2, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(h2, 1, 1),
            nn.ReLU() if non_negative else nn.Identity(),
        )

    def forward(self, l1, l2, l3, l4):
        r1, r2, r3, r4 = self.layer1_rn(l1), self.layer2_rn(l2), self.layer3_rn(l3), self.layer4_rn(l4)
        p4 = self.refinenet4(r4, size=r3.shape[-2:])
        p3 = self.refinenet3(p4, r3, size=r2.shape[-2:])
        p2 = self.refinenet2(p3, r2, size=r1.shape[-2:])
        p1 = self.refinenet1(p2, r1)
        return self.output_conv(p1)


class ResNetEncoder(nn.Module):
    """A torchvision ResNet/ResNeXt regrouped the MiDaS way: ``layer1`` = stem (conv1, bn1, ReLU, max-pool) + stage 1;
    ``layer2-4`` = stages 2-4. The four outputs are post-ReLU stage outputs at strides 4/8/16/32."""

    def __init__(self, resnet):
        """``resnet``: anything with torchvision ResNet's ``conv1, bn1, relu, maxpool, layer1-4`` attributes."""
        super().__init__()
        self.layer1 = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1)
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

    def forward(self, x):
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        l4 = self.layer4(l3)
        return l1, l2, l3, l4


def resnext101_32x8d_encoder() -> ResNetEncoder:
    """The MiDaS v2.1 large encoder: torchvision ResNeXt-101 32x8d, randomly initialised (never downloads)."""
    from torchvision.models import resnext101_32x8d

    return ResNetEncoder(resnext101_32x8d(weights=None))


def tiny_encoder(width: int = 8) -> ResNetEncoder:
    """A very small randomly initialised ResNet (one basic block per stage) with the MiDaS layout; its stage widths
    are ``2, 4, 8, 16 x width`` channels (16/32/64/128 for ``width=8``). For fast tests of training code."""
    from types import SimpleNamespace

    from torchvision.models.resnet import BasicBlock

    def stage(cin, cout, stride):
        down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        return nn.Sequential(BasicBlock(cin, cout, stride=stride, downsample=down))

    widths = [2 * width, 4 * width, 8 * width, 16 * width]
    parts = SimpleNamespace(
        conv1=nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False),
        bn1=nn.BatchNorm2d(width),
        relu=nn.ReLU(inplace=True),
        maxpool=nn.MaxPool2d(3, stride=2, padding=1),
        layer1=stage(width, widths[0], 1),
        layer2=stage(widths[0], widths[1], 2),
        layer3=stage(widths[1], widths[2], 2),
        layer4=stage(widths[2], widths[3], 2),
    )
    return ResNetEncoder(parts)


class MidasTeacher(DepthTeacher):
    """MiDaS v2.1 as a depth teacher (see :class:`DepthTeacher` for the call contract).

    Features are the four encoder stage outputs, deepest first: layer4 (2048 @ 1/32), layer3 (1024 @ 1/16),
    layer2 (512 @ 1/8), layer1 (256 @ 1/4). Depth is MidasNet's output (relative inverse depth), bilinearly resized
    to the input size when the input sides are not multiples of 32.

    ``tiny=True`` builds a very small random network with the same interface instead (channels 128/64/32/16 for
    ``tiny_width=8``, decoder with 16 features); it cannot load the released checkpoint.
    """

    def __init__(self, tiny: bool = False, features: Optional[int] = None, non_negative: bool = True,
                 tiny_width: int = 8, mean=IMAGENET_MEAN, std=IMAGENET_STD):
        super().__init__(mean=mean, std=std)
        if tiny:
            self.pretrained = tiny_encoder(tiny_width)
            features = features or 2 * tiny_width
            head = (max(features // 2, 4), max(features // 8, 2))
        else:
            self.pretrained = resnext101_32x8d_encoder()
            features = features or 256
            head = (128, 32)
        enc_channels = [self._stage_channels(getattr(self.pretrained, f"layer{i}")) for i in range(1, 5)]
        self.scratch = MidasDecoder(enc_channels, features=features, head_channels=head, non_negative=non_negative)
        self.channels = list(reversed(enc_channels))
        self.tiny = tiny

    @staticmethod
    def _stage_channels(stage: nn.Module) -> int:
        last_bn = [m for m in stage.modules() if isinstance(m, nn.BatchNorm2d)][-1]
        return last_bn.num_features

    def _forward(self, x, size, with_depth):
        l1, l2, l3, l4 = self.pretrained(x)
        features = [l4, l3, l2, l1]
        if not with_depth:
            return features, None
        depth = resize_to(self.scratch(l1, l2, l3, l4), size)
        return features, depth

    def load_weights(self, weights: Union[str, Path, Mapping[str, torch.Tensor]]) -> "MidasTeacher":
        """Load a MidasNet v2.1 state dict (a path or a mapping) strictly; see :func:`load_midas_state_dict`."""
        load_midas_state_dict(self, weights)
        return self


def load_midas_state_dict(model: nn.Module, weights: Union[str, Path, Mapping[str, torch.Tensor]]) -> None:
    """Load MiDaS weights into ``model`` strictly.

    ``weights`` is a ``.pt``/``.pth`` file (read with ``torch.load(weights_only=True)``, ``{"model": ...}`` /
    ``{"state_dict": ...}`` containers unwrapped), a ``.safetensors`` file, or an in-memory state dict. A leading
    ``module.`` (DataParallel) is stripped. Only missing BatchNorm ``num_batches_tracked`` counters are tolerated;
    any other missing or unexpected key, or a shape mismatch, raises ``ValueError`` naming the keys.
    """
    if isinstance(weights, (str, Path)):
        source = str(weights)
        state = read_state_dict(weights)
    else:
        source, state = "state dict", dict(weights)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_preview(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_preview(unexpected)}")
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if wrong:
        problems.append(f"{len(wrong)} shape mismatch(es): {_preview(wrong)}")
    if problems:
        raise ValueError(f"{source} is not a MiDaS v2.1 large checkpoint for this model: " + "; ".join(problems))
    model.load_state_dict(state, strict=False)
    log.info("loaded MiDaS weights from %s (%d tensors)", source, len(state))


def _preview(items: list, n: int = 5) -> str:
    shown = ", ".join(items[:n])
    return shown + (f", ... (+{len(items) - n} more)" if len(items) > n else "")
