"""Convert the authors' released ``.pth`` files to self-describing ``defocus`` safetensors.

The reading and key mapping live beside the models (:mod:`defocus.models.authors`); this module writes the
converted file and gathers the conversion API in one place.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from .models.authors import (AUTHORS_CLASSES, CheckpointMismatchError, ConversionReport, authors_name,
                             convert_state_dict, detect_arch, load_authors_checkpoint, read_authors_checkpoint,
                             unwrap_state_dict)
from .models.io import is_defocus_file, save_model

__all__ = ["AUTHORS_CLASSES", "CheckpointMismatchError", "ConversionReport", "authors_name", "convert_checkpoint",
           "convert_state_dict", "detect_arch", "load_authors_checkpoint", "read_authors_checkpoint",
           "unwrap_state_dict"]

log = logging.getLogger(__name__)


def convert_checkpoint(src, dst, arch: str | None = None, dtype: torch.dtype | None = None) -> ConversionReport:
    """Convert an authors' ``.pth`` to a self-describing ``defocus`` safetensors file (opens with
    ``defocus.load_model``). ``dtype`` optionally casts floating tensors (e.g. ``torch.float16``)."""
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve():
        raise ValueError(f"{dst}: refusing to overwrite the input file")
    if src.is_file() and is_defocus_file(src):
        raise ValueError(f"{src}: already a defocus checkpoint; it opens as it is (--model {src})")
    model, report = load_authors_checkpoint(src, arch)
    save_model(model, dst, dtype=dtype, metadata={"converted_from": src.name,
                                                  "source_class": AUTHORS_CLASSES[report.arch]})
    log.info("wrote %s", dst)
    return report
