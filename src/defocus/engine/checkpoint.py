"""Resumable training checkpoints: atomic writes, and random-generator states that load with ``weights_only=True``."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_write

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT_VERSION = 1


def capture_rng() -> dict:
    """States of Python's, NumPy's, torch's CPU and (if initialised) CUDA generators, as tensors and plain types."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "gauss": float(gauss)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    """Restore generator states saved by :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(state: dict, path) -> Path:
    """Write ``state`` with ``torch.save`` to a temporary file beside ``path``, then rename it over ``path``
    (an interruption never leaves a half-written checkpoint)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda f: torch.save({"format_version": FORMAT_VERSION, **state}, f))


def load_checkpoint(path, map_location="cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (safe loading: tensors and plain Python types only)."""
    state = torch.load(str(path), map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a defocus training checkpoint (format {FORMAT_VERSION})")
    return state
