"""Self-describing checkpoints: safetensors with the model config in the metadata."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..atomic import atomic_create, give_usual_permissions
from ..bundled import resolve_default
from ..defaults import INPUT_DEFAULT_KEYS, INPUT_SIZE_KEY, UPSCALE_KEY
from .authors import load_authors_checkpoint
from .registry import create_model

CONFIG_KEY = "defocus_config"


def with_input_defaults(model, *, size: int | None = None, upscale: bool | None = None):
    """``model`` with its own input defaults recorded in its config, so that it is saved (:func:`save_model`)
    and exported to ONNX with them and ``Predictor`` runs it that way unless told otherwise: ``size``, the input
    size it was chosen to run at (absent: the paper's 320); ``upscale``, whether photos smaller than the input are
    enlarged (``False`` for a network trained with ``data.upscale: false``; absent: the paper's enlargement).
    ``None`` leaves a default as it is. Returns the same model."""
    if size is not None:
        if int(size) < 1:
            raise ValueError(f"input size must be positive, got {size}")
        model.config = {**model.config, INPUT_SIZE_KEY: int(size)}
    if upscale is not None:
        model.config = {**model.config, UPSCALE_KEY: bool(upscale)}
    return model


def input_defaults(config: dict) -> dict:
    """The input defaults a network's config records, as :func:`with_input_defaults` keywords."""
    return {"size": config.get(INPUT_SIZE_KEY), "upscale": config.get(UPSCALE_KEY)}


def architecture_of(config: dict) -> dict:
    """A network's config without its input defaults: what two files must share to hold the same network."""
    return {k: v for k, v in config.items() if k not in INPUT_DEFAULT_KEYS}


def save_model(model, path, dtype: torch.dtype | None = None, metadata: dict | None = None) -> Path:
    """Write ``model``'s weights and config to ``path`` (safetensors, atomic). ``dtype`` casts floating tensors
    (e.g. ``torch.float16`` for shipping); extra ``metadata`` strings are stored beside the config."""
    path = Path(path)
    sd = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        sd[k] = v.contiguous()
    meta = {CONFIG_KEY: json.dumps(model.config)}
    meta.update({k: str(v) for k, v in (metadata or {}).items()})
    path.parent.mkdir(parents=True, exist_ok=True)

    def create(tmp):
        save_file(sd, str(tmp), metadata=meta)
        give_usual_permissions(tmp)  # safetensors creates its files private

    return atomic_create(path, create)


def read_metadata(path) -> dict:
    """Return the safetensors metadata of ``path`` (config parsed into ``config``)."""
    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata() or {})
    if CONFIG_KEY not in meta:
        raise ValueError(f"{path}: not a defocus checkpoint (no '{CONFIG_KEY}' in its metadata)")
    meta["config"] = json.loads(meta.pop(CONFIG_KEY))
    return meta


def is_safetensors(path) -> bool:
    """Whether ``path`` is a safetensors file (by content: an 8-byte header length followed by a JSON header)."""
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def is_defocus_file(path) -> bool:
    """Whether ``path`` is a defocus safetensors file (one whose metadata holds its model config)."""
    if not is_safetensors(path):
        return False
    try:
        with safe_open(str(path), framework="pt") as f:
            return CONFIG_KEY in (f.metadata() or {})
    except Exception:  # a damaged header: not one that loads
        return False


def load_model(path, device="cpu", dtype: torch.dtype = torch.float32, arch: str | None = None):
    """Rebuild a model from a checkpoint file alone, strictly.

    ``path`` is a defocus safetensors file (config from its metadata), ``"default"`` (the bundled model) or one
    of the authors' released ``.pth`` files (or their tensors saved as safetensors), converted on the fly (see :mod:`defocus.models.authors`; ``arch``
    picks ``dffnet`` / ``dffnet_no_dffm`` where the file cannot tell them apart). The model is returned in eval mode on ``device``, with
    floating tensors in ``dtype``.
    """
    from safetensors.torch import load_file

    path = resolve_default(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    if not is_defocus_file(path):
        model, _ = load_authors_checkpoint(path, arch)
        return model.to(device=device, dtype=dtype).eval()
    cfg = dict(read_metadata(path)["config"])
    name, backbone = cfg.pop("name"), cfg.pop("backbone")
    cfg.pop("mean", None)
    cfg.pop("std", None)
    defaults = input_defaults(cfg)
    cfg = architecture_of(cfg)
    sd = load_file(str(path))
    sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    model = _build_without_storage(name, backbone, cfg)
    if model is not None:
        # the file's tensors become the weights (no random initialisation to overwrite)
        model.load_state_dict(sd, strict=True, assign=True)
        if any(t.is_meta for t in list(model.parameters()) + list(model.buffers())):
            model = None  # a backbone with buffers outside the state dict
    if model is None:
        model = create_model(name, backbone=backbone, pretrained=False, **cfg)
        model.load_state_dict(sd, strict=True)
    with_input_defaults(model, **defaults)
    return model.to(device=device, dtype=dtype).eval()


def average_models(paths, device="cpu", *, size: int | None = None, upscale: bool | None = None):
    """The element-wise mean of the weights in ``paths`` (defocus safetensors files of one architecture, e.g.
    fine-tuning runs from the same start: a "model soup"): every floating parameter and buffer (BatchNorm
    statistics too) is averaged in float32; integer buffers (BatchNorm's batch counters) come from the first file.
    The files must agree on their recorded input defaults, except those given here (``size``, ``upscale``; see
    :func:`with_input_defaults`), which the mean records instead: e.g. ``upscale=False`` averages runs trained with
    and without enlarging small photos. Returns the first file's model, in eval mode on ``device``, holding the
    mean."""
    if isinstance(paths, (str, os.PathLike)):
        raise TypeError("average_models takes a list of weight files, not one path")
    paths = list(paths)
    if len(paths) < 2:
        raise ValueError(f"averaging needs at least two weight files, got {len(paths)}")
    given = {INPUT_SIZE_KEY: size, UPSCALE_KEY: upscale}

    def compared(config: dict) -> dict:
        return {k: v for k, v in config.items() if given.get(k) is None}

    model = load_model(paths[0])
    total = {k: v.clone() for k, v in model.state_dict().items()}
    for path in paths[1:]:
        other = load_model(path)
        if compared(other.config) != compared(model.config):
            if architecture_of(other.config) == architecture_of(model.config):
                raise ValueError(f"{path}: other input defaults than {paths[0]} ({input_defaults(other.config)} vs "
                                 f"{input_defaults(model.config)}): pass the mean's own (size=..., upscale=...)")
            raise ValueError(f"{path}: another architecture than {paths[0]} ({other.config} vs {model.config})")
        for k, v in other.state_dict().items():
            if v.is_floating_point():
                total[k] += v
    mean = {k: v / len(paths) if v.is_floating_point() else v for k, v in total.items()}
    model.load_state_dict(mean, strict=True)
    with_input_defaults(model, size=size, upscale=upscale)
    return model.to(device).eval()


def _build_without_storage(name: str, backbone: str, cfg: dict):
    """The model on the ``meta`` device (no memory, no initialisation), or None where a backbone's constructor
    needs real values (e.g. reads a tensor with ``.tolist()``)."""
    try:
        with torch.device("meta"):
            return create_model(name, backbone=backbone, pretrained=False, **cfg)
    except (RuntimeError, NotImplementedError):
        return None
