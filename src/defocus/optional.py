"""The optional PyTorch stack (``pip install 'defocus[torch]'``): one clear error where it is needed and missing.

The light install predicts with the bundled ONNX model on ONNX Runtime; training, conversion, export, checkpoint
files and the PyTorch backend need torch, torchvision and timm.
"""
from __future__ import annotations

#: The modules the ``torch`` extra installs.
TORCH_MODULES = frozenset({"torch", "torchvision", "timm"})
TORCH_INSTALL = "pip install 'defocus[torch]'"


class MissingTorchError(ImportError):
    """Something needs the PyTorch stack and this installation has none; ``str(e)`` is one line with the
    install command."""


def torch_missing_message(what: str = "this") -> str:
    """``"<what> needs PyTorch, which is not installed: pip install 'defocus[torch]'"``."""
    return f"{what} needs PyTorch, which is not installed: {TORCH_INSTALL}"


def is_missing_torch(e: BaseException) -> bool:
    """Whether ``e`` is the failure to import one of :data:`TORCH_MODULES`."""
    if isinstance(e, MissingTorchError):
        return True
    name = getattr(e, "name", None) or ""
    return isinstance(e, ModuleNotFoundError) and name.split(".")[0] in TORCH_MODULES


def require_torch(what: str = "this"):
    """``import torch`` and return it, or raise :class:`MissingTorchError` naming ``what`` needs it."""
    try:
        import torch
    except ImportError as e:
        if not is_missing_torch(e):
            raise
        raise MissingTorchError(torch_missing_message(what)) from None
    return torch
