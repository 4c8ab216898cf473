"""DFFNet model family (method.md §1): registry, backbones, decoders, checkpoint I/O."""
from .io import average_models, load_model, read_metadata, save_model, with_input_defaults
from .registry import (MODELS, ModelSpec, create_model, default_backbone, describe_model, get_model_spec, list_models,
                       without_depth_heads)

__all__ = ["create_model", "list_models", "describe_model", "default_backbone", "get_model_spec", "ModelSpec",
           "MODELS", "load_model", "save_model", "read_metadata", "without_depth_heads", "average_models",
           "with_input_defaults"]
