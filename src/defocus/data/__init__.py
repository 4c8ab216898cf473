"""Data: the dataset registry (explicit mask polarity), paired transforms, preparation and verification of
the official downloads, and the synthetic defocus renderer.

Every sample handed to training or evaluation has target **1 = in focus**, whatever the raw mask polarity.
"""
from .masks import BLUR, IN_FOCUS, read_mask
from .registry import DataError, DatasetSpec, Pair, get_spec, list_datasets, load_pairs, split_stems

__all__ = ["list_datasets", "load_pairs", "read_mask", "Pair", "DBDDataset", "build_dataset", "get_spec",
           "DatasetSpec", "DataError", "split_stems", "drop_mismatched_sizes", "load_image", "IN_FOCUS", "BLUR",
           "transforms", "synth", "prepare", "verify"]


#: Names of :mod:`defocus.data.datasets`, which needs PyTorch: loaded on first use, so that labelling, preparing
#: and verifying data work on the light install.
_DATASET_NAMES = ("DBDDataset", "build_dataset", "drop_mismatched_sizes", "load_image")


def __getattr__(name):
    # submodules with heavier imports load on first use: defocus.data.transforms, .synth, .prepare, .verify
    import importlib

    if name in ("transforms", "synth", "prepare", "verify", "sharpness", "lens"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in _DATASET_NAMES:
        return getattr(importlib.import_module(f"{__name__}.datasets"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
