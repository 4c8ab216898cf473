"""From an image to the network's logit: the paper's preprocessing and the one forward path that evaluation,
training validation, export checks and inference share."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..defaults import PAPER_SIZE
from ..imagenet import IMAGENET_MEAN, IMAGENET_STD
from .output import final_logit


def normalization(model: nn.Module) -> tuple[tuple, tuple]:
    """``(mean, std)`` a network expects, from its ``config`` (ImageNet's when it has none)."""
    cfg = getattr(model, "config", None) or {}
    return tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def normalize_rgb(rgb01: np.ndarray, mean, std) -> torch.Tensor:
    """An (H, W, 3) float32 RGB array in [0, 1] as a normalised (1, 3, H, W) float32 tensor."""
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    return torch.from_numpy(((rgb01 - mean) / std).transpose(2, 0, 1)[None].copy())


def paper_preprocess(rgb, mean, std, size: int | None = PAPER_SIZE) -> torch.Tensor:
    """The paper's test-time preprocessing of a Pillow RGB image: bilinear resize (Pillow) to ``size`` x ``size``
    without keeping the aspect ratio (``None``: no resize), scale to [0, 1], normalise. Returns (1, 3, S, S)."""
    from PIL import Image

    if size is not None:
        rgb = rgb.resize((size, size), Image.BILINEAR)
    return normalize_rgb(np.asarray(rgb, dtype=np.float32) / 255.0, mean, std)


def predict_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The final logit of ``model`` for a normalised batch ``x``, without gradients; ``x`` is moved to the model's
    device and floating dtype first."""
    param = next(model.parameters(), None)
    if param is not None:
        x = x.to(device=param.device, dtype=param.dtype)
    with torch.inference_mode():
        return final_logit(model(x))


def predict_probs(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """In-focus probabilities (float32 sigmoid of :func:`predict_logits`)."""
    return torch.sigmoid(predict_logits(model, x).float())
