"""Shared fixtures: locations of the real data beside the repository, tiny models, CPU-only settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEFOCUS_SHARED", REPO.parent / "shared"))

torch.set_num_threads(1)

# A small timm CNN with stride-4..32 levels keeps model tests fast.
TINY_BACKBONE = "resnet18"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The ``shared`` folder beside the clone (real CUHK/DUT samples, published maps, natural photos)."""
    if not SHARED.is_dir():
        pytest.skip(f"real data folder not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    """The shipped example photos."""
    return REPO / "examples"


@pytest.fixture
def tiny_backbone() -> str:
    """Name of a small timm backbone for fast model tests."""
    return TINY_BACKBONE
