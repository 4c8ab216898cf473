"""What a :class:`~defocus.inference.Predictor` runs: model names and files resolved to a network, and the
description of the result (:class:`ModelInfo`)."""
from __future__ import annotations

import importlib
import logging
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

from ..bundled import resolve_default
from ..defaults import PAPER_SIZE, UPSCALE_KEY, input_size_of
from ..devices import resolve_device  # noqa: F401  (part of this module's API)
from ..errors import first_line
from ..optional import require_torch

log = logging.getLogger(__name__)

#: Suffixes of model files: a ``--model`` value ending in one of them names a file, never a registry model.
MODEL_FILE_SUFFIXES = (".safetensors", ".pth", ".pt", ".pth.tar", ".ckpt", ".onnx")


@dataclass
class ModelInfo:
    """What a :class:`~defocus.inference.Predictor` runs: ``kind`` is ``network``, ``onnx`` or ``classical``."""

    kind: str
    name: str
    backbone: str | None = None
    source: str = ""
    mean: tuple | None = None
    std: tuple | None = None
    notes: str = ""
    size: int = PAPER_SIZE      # the model's own input size (defaults.INPUT_SIZE_KEY)
    upscale: bool = True        # the model's input default for small photos (defaults.UPSCALE_KEY)

    @classmethod
    def from_config(cls, kind: str, cfg: dict, source: str, default_name: str) -> "ModelInfo":
        """What a network's config says of it: name, backbone, input normalisation and input defaults."""
        return cls(kind, cfg.get("name", default_name), cfg.get("backbone"), source, tuple(cfg["mean"]),
                   tuple(cfg["std"]), size=input_size_of(cfg),
                   upscale=bool(cfg.get(UPSCALE_KEY, True)))

    def to_dict(self) -> dict:
        """A JSON-serialisable description (recorded in ``summary.json``)."""
        d = {"kind": self.kind, "name": self.name, "backbone": self.backbone, "source": self.source}
        if self.notes:
            d["notes"] = self.notes
        return d

    def __str__(self) -> str:
        what = f"{self.name} ({self.backbone})" if self.backbone else self.name
        return f"{self.kind} {what} from {self.source}" if self.source else f"{self.kind} {what}"


def classical_methods() -> dict:
    """The training-free baselines of this installation (``name -> fn(rgb uint8) -> prob``)."""
    from ..classical import METHODS

    return dict(METHODS)


def is_module(x) -> bool:
    """Whether ``x`` is a ``torch.nn.Module`` (without importing torch: a module can only exist if it is)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.nn.Module)


def is_onnx_file(model) -> bool:
    """Whether ``model`` names an exported ``.onnx`` file (run by ONNX Runtime, without torch)."""
    return isinstance(model, (str, Path)) and str(model).lower().endswith(".onnx")


def check_model_spec(model) -> None:
    """Fail fast, before torch is imported, for a ``model`` that names a model file that does not exist."""
    if isinstance(model, (str, Path)) and str(model).lower().endswith(MODEL_FILE_SUFFIXES):
        path = Path(str(model)).expanduser()
        if not path.is_file():
            raise ValueError(f"unknown model {str(model)!r}: no such file")


def _registry_spec(spec: str):
    """``(NAME, BACKBONE or None)`` for a registered ``NAME[:BACKBONE]``, else ``None``."""
    from ..models import list_models

    name, _, backbone = spec.partition(":")
    if name in list_models():
        return name, backbone or None
    return None


def load_network(model, device="cpu") -> tuple["torch.nn.Module", ModelInfo]:
    """Resolve ``model`` (an ``nn.Module``, ``"default"`` for the bundled weights, a checkpoint path, or a registry
    ``NAME[:BACKBONE]``) to an eval-mode network and its description. Registry names give **randomly
    initialised** weights (for speed tests only)."""
    require_torch(f"model {str(model)!r} (PyTorch weights; the bundled model and .onnx files run without it)")
    from ..models import create_model, list_models, load_model

    model = resolve_default(model)
    if is_module(model):
        cfg = getattr(model, "config", {}) or {}
        net, source = model, "in-memory model"
    elif Path(str(model)).expanduser().is_file():
        path = Path(str(model)).expanduser()
        try:
            net = load_model(path, device="cpu")
        except Exception as e:  # wrong format, truncated file, mismatching weights ...
            reason = first_line(e)
            raise ValueError(reason if reason.startswith(f"{path}:") else
                             f"{path}: cannot load this checkpoint ({reason})") from None
        cfg, source = net.config, str(path)
    elif isinstance(model, str) and _registry_spec(model):
        name, backbone = _registry_spec(model)
        net = create_model(name, backbone=backbone, pretrained=False).eval()
        cfg, source = net.config, "registry (random initialisation)"
        warnings.warn(f"MODEL {model!r} HAS RANDOM WEIGHTS: its maps are meaningless (useful for speed tests only); "
                      f"pass a checkpoint path for real predictions", UserWarning, stacklevel=2)
    else:
        raise ValueError(f"unknown model {model!r}: not a file, and not a registered name "
                         f"({', '.join(list_models())}, optionally NAME:BACKBONE)")
    net = net.eval().to(device)
    mean, std = cfg.get("mean"), cfg.get("std")
    if mean is None or std is None:
        raise ValueError(f"model {model!r} has no input normalisation (config 'mean'/'std')")
    info = ModelInfo.from_config("network", cfg, source, type(net).__name__)
    return net, info
