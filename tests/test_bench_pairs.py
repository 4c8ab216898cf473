"""benchmarks/bench_pairs.py's prediction cache: a folder per method, named by the files that method runs."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import defocus.bundled


@pytest.fixture(scope="module")
def bench_pairs():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_pairs.py"
    spec = importlib.util.spec_from_file_location("bench_pairs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cache_folder_of_the_bundled_model_changes_with_its_onnx_file(bench_pairs, tmp_path, monkeypatch):
    """``default`` runs the bundled ONNX file where ONNX Runtime is installed: maps cached from an earlier export
    must not be read back as those of the current one, even while the safetensors weights are the same."""
    weights, onnx_file = tmp_path / "default.safetensors", tmp_path / "default.onnx"
    weights.write_bytes(b"weights")
    monkeypatch.setattr(defocus.bundled, "bundled_weights", lambda: weights)
    monkeypatch.setattr(defocus.bundled, "bundled_onnx", lambda: onnx_file)
    onnx_file.write_bytes(b"first export")
    first = bench_pairs.cache_folder("bundled", {"model": "default"})
    onnx_file.write_bytes(b"second export")
    second = bench_pairs.cache_folder("bundled", {"model": "default"})
    assert first.startswith("bundled-") and second.startswith("bundled-") and first != second
    monkeypatch.setattr(defocus.bundled, "bundled_onnx", lambda: None)  # an installation without the ONNX file
    assert bench_pairs.cache_folder("bundled", {"model": "default"}) not in (first, second)


def test_cache_folder_of_a_weights_file_is_named_by_its_contents(bench_pairs, tmp_path):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    a.write_bytes(b"one"), b.write_bytes(b"one")
    assert bench_pairs.cache_folder("a", {"model": str(a)})[2:] == bench_pairs.cache_folder("b", {"model": str(b)})[2:]
    b.write_bytes(b"two")
    assert bench_pairs.cache_folder("a", {"model": str(a)})[2:] != bench_pairs.cache_folder("b", {"model": str(b)})[2:]
    assert bench_pairs.cache_folder("lbp", {"method": "lbp"}) == "lbp"
