"""Which model names load trained weights in this installation (``defocus models``; no torch import).

The registry (:func:`defocus.list_models`) names architectures, which start from random weights; this module
names the models that come with weights, as ``timm.list_models(pretrained=True)`` does: today the bundled
``"default"`` model, shipped as ONNX (ONNX Runtime) and as safetensors (PyTorch).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .bundled import bundled_onnx, bundled_weights
from .defaults import input_size_of

CONFIG_KEY = "defocus_config"  # as written by defocus.models.save_model
_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class PretrainedModel:
    """A name that loads trained weights.

    Attributes:
        name: what ``Predictor(model=...)`` / ``--model`` accept.
        architecture: its registry name (``defocus.create_model``).
        backbone: its backbone.
        parameters: number of trained parameters (BN statistics not counted), when known.
        files: ``{"onnx" | "safetensors": path}`` of the files that hold it.
        description: one line.
    """

    name: str
    architecture: str
    backbone: str | None
    parameters: int | None
    files: dict = field(default_factory=dict)
    description: str = ""

    def size_bytes(self, fmt: str) -> int:
        """Size on disk of the file of format ``fmt``."""
        return Path(self.files[fmt]).stat().st_size

    def to_dict(self) -> dict:
        """A JSON-serialisable description."""
        return {"name": self.name, "architecture": self.architecture, "backbone": self.backbone,
                "parameters": self.parameters, "description": self.description,
                "files": {k: {"path": str(v), "bytes": self.size_bytes(k)} for k, v in self.files.items()}}


def _safetensors_config(path: Path) -> tuple[dict, int]:
    """The defocus config and the trained parameter count of a safetensors file (its header only)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
        count = 0
        for key in f.keys():
            if not key.endswith(_BUFFERS):
                n = 1
                for d in f.get_slice(key).get_shape():
                    n *= d
                count += n
    return json.loads(meta.get(CONFIG_KEY, "{}")), count


def _onnx_config(path: Path) -> dict:
    from .onnx_runtime import onnx_session, read_onnx_config

    return read_onnx_config(onnx_session(str(path), "cpu", threads=1))


def _bundled() -> PretrainedModel | None:
    onnx_path, weights = bundled_onnx(), bundled_weights()
    if onnx_path is None and weights is None:
        return None
    files, params = {}, None
    if onnx_path is not None:
        files["onnx"] = onnx_path
    if weights is not None:
        files["safetensors"] = weights
        cfg, params = _safetensors_config(weights)
    else:
        cfg = _onnx_config(onnx_path)
    side = input_size_of(cfg)
    return PretrainedModel("default", cfg.get("name", "?"), cfg.get("backbone"), params, files,
                           "the bundled model (weights/default.md): synthetic defocus, then real photo pairs; "
                           f"{side}x{side} input")


def pretrained_models() -> list[PretrainedModel]:
    """The models of this installation that come with trained weights."""
    found = _bundled()
    return [found] if found is not None else []


def list_pretrained() -> list[str]:
    """Names that load trained weights (``Predictor(model=NAME)``), as ``timm.list_models(pretrained=True)``."""
    return [m.name for m in pretrained_models()]


def get_pretrained(name: str) -> PretrainedModel:
    """The :class:`PretrainedModel` called ``name``; ``ValueError`` when there is none."""
    for m in pretrained_models():
        if m.name == name:
            return m
    raise ValueError(f"no pretrained model {name!r} in this installation (available: "
                     f"{', '.join(list_pretrained()) or 'none'})")
