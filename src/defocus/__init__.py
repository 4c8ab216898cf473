"""defocus: defocus blur detection (D-DFFNet, ICME 2023) - models, training, evaluation, any-size inference.

Public API::

    import defocus
    model = defocus.create_model("dffnet", backbone="tf_efficientnet_lite0")
    pred = defocus.Predictor().predict("photo.jpg")     # pred.prob: HxW float32, 1 = in focus
"""
from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

# Imported on first use, so that ``import defocus`` stays light (a process running an exported ONNX model
# never imports torch).
_LAZY = {
    "create_model": ("defocus.models", "create_model"),
    "list_models": ("defocus.models", "list_models"),
    "load_model": ("defocus.models", "load_model"),
    "save_model": ("defocus.models", "save_model"),
    "average_models": ("defocus.models", "average_models"),
    "list_pretrained": ("defocus.pretrained", "list_pretrained"),
    "pretrained_models": ("defocus.pretrained", "pretrained_models"),
    "Predictor": ("defocus.inference", "Predictor"),
    "evaluate": ("defocus.evaluation", "evaluate"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'defocus' has no attribute {name!r}")


__all__ = ["create_model", "list_models", "list_pretrained", "pretrained_models", "load_model", "save_model",
           "average_models", "Predictor", "evaluate", "__version__"]
