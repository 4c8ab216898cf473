"""Data: the dataset registry (explicit mask polarity), paired transforms, preparation and verification of
the official downloads, and the synthetic defocus renderer.

Every sample handed to training or evaluation has target **1 = in focus**, whatever the raw mask polarity.
"""
from .datasets import DBDDataset, build_dataset, drop_mismatched_sizes, load_image
from .masks import BLUR, IN_FOCUS, read_mask
from .registry import DataError, DatasetSpec, Pair, get_spec, list_datasets, load_pairs, split_stems

__all__ = ["list_datasets", "load_pairs", "read_mask", "Pair", "DBDDataset", "build_dataset", "get_spec",
           "DatasetSpec", "DataError", "split_stems", "drop_mismatched_sizes", "load_image", "IN_FOCUS", "BLUR",
           "transforms", "synth", "prepare", "verify"]


def __getattr__(name):
    # submodules with heavier imports load on first use: defocus.data.transforms, .synth, .prepare, .verify
    if name in ("transforms", "synth", "prepare", "verify", "sharpness", "lens"):
        import importlib

        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
