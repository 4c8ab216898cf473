"""The optional PyTorch stack (``pip install 'defocus[torch]'``): one clear error where it is needed and missing.

The light install predicts with the bundled ONNX model on ONNX Runtime; training, conversion, export, checkpoint
files and the PyTorch backend need torch, torchvision and timm.
"""
from __future__ import annotations

import re

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
    if not isinstance(e, ImportError):
        return False
    name = getattr(e, "name", None)
    if not name:  # e.g. re-raised from a worker process, where only the message survives
        found = re.match(r"No module named '([\w.]+)'", str(e))
        name = found.group(1) if found else ""
    return name.split(".")[0] in TORCH_MODULES


def error_text(e: BaseException, what: str = "this command") -> str:
    """The one-line text of an error: the install command when it is a missing PyTorch module."""
    if is_missing_torch(e) and not isinstance(e, MissingTorchError):
        return torch_missing_message(what)
    return str(e)


def require_torch(what: str = "this"):
    """``import torch`` and return it, or raise :class:`MissingTorchError` naming ``what`` needs it."""
    try:
        import torch
    except ImportError as e:
        if not is_missing_torch(e):
            raise
        raise MissingTorchError(torch_missing_message(what)) from None
    return torch
