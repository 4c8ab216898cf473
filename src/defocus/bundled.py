"""Where the bundled default model lives, and the name ``"default"`` that stands for it (no torch import).

The model ships twice: float16 ``safetensors`` weights (the PyTorch backend, training, conversion) and the same
weights exported to ONNX (``defocus export --no-fuse --fp16-weights``), which ONNX Runtime runs without torch.
"""
from __future__ import annotations

import importlib.resources
from pathlib import Path

BUNDLED_WEIGHTS = "weights/default.safetensors"  # inside the installed package
BUNDLED_ONNX = "weights/default.onnx"


def _package_file(name: str) -> Path | None:
    try:
        ref = importlib.resources.files("defocus").joinpath(name)
        if ref.is_file():
            return Path(str(ref))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return None


def bundled_weights() -> Path | None:
    """Path of the bundled default weights (safetensors), or ``None`` when this installation has none."""
    return _package_file(BUNDLED_WEIGHTS)


def bundled_onnx() -> Path | None:
    """Path of the bundled default model exported to ONNX, or ``None`` when this installation has none."""
    return _package_file(BUNDLED_ONNX)


def resolve_default(model):
    """``model`` itself, or the bundled weights' path when it is ``"default"`` (ValueError when none are installed)."""
    if isinstance(model, (str, Path)) and str(model) == "default":
        path = bundled_weights()
        if path is None:
            raise ValueError("model 'default': this installation has no bundled weights")
        return path
    return model
