"""Where the bundled default model lives, and the name ``"default"`` that stands for it (no torch import)."""
from __future__ import annotations

import importlib.resources
from pathlib import Path

BUNDLED_WEIGHTS = "weights/default.safetensors"  # inside the installed package


def bundled_weights() -> Path | None:
    """Path of the bundled default weights, or ``None`` when this installation has none."""
    try:
        ref = importlib.resources.files("defocus").joinpath(BUNDLED_WEIGHTS)
        if ref.is_file():
            return Path(str(ref))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        pass
    return None


def resolve_default(model):
    """``model`` itself, or the bundled weights' path when it is ``"default"`` (ValueError when none are installed)."""
    if isinstance(model, (str, Path)) and str(model) == "default":
        path = bundled_weights()
        if path is None:
            raise ValueError("model 'default': this installation has no bundled weights")
        return path
    return model
