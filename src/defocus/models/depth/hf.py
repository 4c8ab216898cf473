"""Hugging Face ``transformers`` depth-estimation models (DPT, Depth Anything V1/V2, ...) as depth teachers.

The model is read from a local directory written by ``save_pretrained`` (``local_files_only=True``: nothing is
downloaded). Features come from the model's DPT-style neck, captured with forward hooks while the unmodified model
runs:

* ``features="neck"`` (default): the four per-level maps that enter the neck's fusion convolutions, i.e. the
  backbone hidden states after DPT's *reassemble* stage (tokens reshaped to a grid, projected to
  ``config.neck_hidden_sizes`` channels and resampled to patch-grid strides 4/8/16/32 - for ViT-style backbones) or
  the backbone's own maps (for hierarchical backbones). Channels: ``reversed(config.neck_hidden_sizes)``.
* ``features="fusion"``: the four outputs of the neck's fusion stage (``config.fusion_hidden_size`` channels each;
  natively at patch-grid strides 16/8/4/2, so each is downsampled by 2).

Either way the maps are bilinearly resized (align_corners=False) to strides 32/16/8/4 of the input image,
deepest first. Depth is the model's ``predicted_depth`` resized to the input size.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from .base import IMAGENET_MEAN, IMAGENET_STD, DepthTeacher, level_sizes, resize_to

log = logging.getLogger(__name__)

FEATURE_SOURCES = ("neck", "fusion")


def read_image_normalization(directory: Union[str, Path]):
    """``(mean, std)`` from a saved image processor's ``preprocessor_config.json`` in ``directory``, or ``None``
    when there is no such file. A processor with ``do_normalize: false`` gives mean 0 / std 1."""
    path = Path(directory) / "preprocessor_config.json"
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text())
    if not cfg.get("do_normalize", True):
        return (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    mean, std = cfg.get("image_mean"), cfg.get("image_std")
    if mean is None or std is None:
        return None
    mean = [float(mean)] * 3 if isinstance(mean, (int, float)) else [float(v) for v in mean]
    std = [float(std)] * 3 if isinstance(std, (int, float)) else [float(v) for v in std]
    return tuple(mean), tuple(std)


def patch_size_of(config) -> int:
    """The token grid's patch size the model divides its input by (backbone config first, as DPT does); 1 if none."""
    for cfg in (getattr(config, "backbone_config", None), config):
        p = getattr(cfg, "patch_size", None) if cfg is not None else None
        if isinstance(p, int) and p > 0:
            return p
    return 1


def needs_square_input(config) -> bool:
    """True for DPT on transformers' built-in ViT / hybrid path, whose neck reshapes tokens to a square grid."""
    return getattr(config, "model_type", None) == "dpt" and (
        getattr(config, "backbone_config", None) is None or bool(getattr(config, "is_hybrid", False)))


class HFDepthTeacher(DepthTeacher):
    """A ``transformers`` depth-estimation model with a DPT-style neck as a depth teacher (contract:
    :class:`DepthTeacher`; feature sources: module docstring).

    ``input_size``: ``None`` (default) feeds the image at its own size, bilinearly resized to the nearest multiple of
    the patch size (e.g. 320 -> 322 for patch 14); an int ``s`` or a pair ``(h, w)`` resizes it to that size instead
    (rounded the same way), e.g. 518 for Depth Anything's native resolution. DPT models on transformers' built-in
    ViT / hybrid path only accept square token grids, so with ``input_size=None`` they get a square input whose side
    is the image's longer side. Features and depth always refer to the caller's image size.
    """

    def __init__(self, model: nn.Module, features: str = "neck", input_size=None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        super().__init__(mean=mean, std=std)
        if features not in FEATURE_SOURCES:
            raise ValueError(f"features must be one of {FEATURE_SOURCES}, got {features!r}")
        config = model.config
        neck = getattr(model, "neck", None)
        sizes = list(getattr(config, "neck_hidden_sizes", None) or [])
        if neck is None or not hasattr(neck, "convs") or not hasattr(neck, "fusion_stage") or len(sizes) != 4:
            raise ValueError(
                f"{type(model).__name__} has no DPT-style neck with four levels; supported are models such as "
                "DPTForDepthEstimation and DepthAnythingForDepthEstimation")
        self.model = model
        self.feature_source = features
        self.input_size = input_size
        self.patch_size = patch_size_of(config)
        self.square_input = needs_square_input(config)
        if features == "neck":
            self.channels = list(reversed(sizes))
        else:
            self.channels = [int(config.fusion_hidden_size)] * 4
        self.train()

    def model_input_size(self, size: Sequence[int]) -> tuple:
        """The (h, w) the wrapped model is run at for an input of ``size``."""
        if self.input_size is None:
            h, w = size
            if self.square_input:
                h = w = max(h, w)
        elif isinstance(self.input_size, int):
            h = w = self.input_size
        else:
            h, w = self.input_size
        p = self.patch_size
        return max(p, int(h / p + 0.5) * p), max(p, int(w / p + 0.5) * p)  # nearest multiple, halves up

    def _forward(self, x, size, with_depth):
        x = resize_to(x, self.model_input_size(size))
        captured: list = []
        neck = self.model.neck
        if self.feature_source == "neck":
            handles = [conv.register_forward_pre_hook(lambda _m, args: captured.append(args[0]))
                       for conv in neck.convs]
        else:
            handles = [neck.fusion_stage.register_forward_hook(lambda _m, _a, out: captured.extend(out))]
        try:
            out = self.model(pixel_values=x)
        finally:
            for h in handles:
                h.remove()
        if len(captured) != 4:
            raise RuntimeError(f"captured {len(captured)} neck feature maps instead of 4")
        # The neck's inputs are ordered shallow -> deep; the fusion stage already emits deepest first.
        maps = captured[::-1] if self.feature_source == "neck" else captured
        features = [resize_to(f, s) for f, s in zip(maps, level_sizes(size))]
        depth = resize_to(out.predicted_depth.unsqueeze(1), size) if with_depth else None
        return features, depth


def load_hf_teacher(weights: Optional[Union[str, Path]] = None, config=None, features: str = "neck",
                    input_size=None, mean: Optional[Sequence[float]] = None,
                    std: Optional[Sequence[float]] = None) -> HFDepthTeacher:
    """Build an :class:`HFDepthTeacher` from a local ``save_pretrained`` directory (``weights``), or randomly
    initialised from a ``transformers`` config object (``config``) when ``weights`` is ``None``.

    The input normalisation is, in order of precedence: ``mean``/``std`` given here, the directory's
    ``preprocessor_config.json``, ImageNet. The model is kept in float32 whatever dtype it was saved in.
    """
    try:
        from transformers import AutoModelForDepthEstimation
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the 'hf' depth teacher needs transformers: pip install 'defocus[depth]'") from exc

    norm = None
    if weights is not None:
        directory = Path(weights)
        if not directory.is_dir():
            raise FileNotFoundError(f"{directory}: expected a local directory written by save_pretrained")
        model = AutoModelForDepthEstimation.from_pretrained(str(directory), local_files_only=True)
        norm = read_image_normalization(directory)
    elif config is not None:
        log.warning("hf depth teacher: no weights given, using a randomly initialised %s", type(config).__name__)
        model = AutoModelForDepthEstimation.from_config(config)
    else:
        raise ValueError("the 'hf' depth teacher needs weights=<local model directory> (or config=... for a "
                         "randomly initialised model)")
    if norm is None:
        norm = (IMAGENET_MEAN, IMAGENET_STD)
        log.info("hf depth teacher: no image-processor normalisation found, using ImageNet mean/std")
    mean = tuple(mean) if mean is not None else norm[0]
    std = tuple(std) if std is not None else norm[1]
    return HFDepthTeacher(model.float(), features=features, input_size=input_size, mean=mean, std=std)
