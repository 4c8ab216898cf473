"""The light install (no torch): the bundled model, the classical methods and map scoring work; commands that
need PyTorch end with one line naming the install command.

Each check runs in a subprocess where torch, torchvision and timm cannot be imported (stand-in packages first
on the path raise ``ModuleNotFoundError``, as in an environment without them)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")

SRC = Path(__file__).resolve().parents[1] / "src"
TORCH_LINE = "pip install 'defocus[torch]'"


@pytest.fixture(scope="module")
def no_torch_env(tmp_path_factory):
    """Environment variables for a Python in which the PyTorch stack is not importable."""
    shim = tmp_path_factory.mktemp("no_torch")
    for name in ("torch", "torchvision", "timm"):
        (shim / name).mkdir()
        (shim / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name={name!r})\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(shim), str(SRC), env.get("PYTHONPATH", "")])
    return env


def run(env, *args, code: str | None = None):
    cmd = [sys.executable, "-c", code] if code else [sys.executable, "-m", "defocus", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def test_the_stand_in_blocks_torch(no_torch_env):
    r = run(no_torch_env, code="import torch")
    assert r.returncode != 0 and "No module named 'torch'" in r.stderr


def test_predict_runs_the_bundled_onnx_model_without_torch(no_torch_env, examples_dir, tmp_path):
    from defocus.bundled import bundled_onnx

    if bundled_onnx() is None:
        pytest.skip("no bundled ONNX model in this installation")
    image = examples_dir / "dahlia_flower.jpg"
    r = run(no_torch_env, "predict", str(image), "-o", str(tmp_path / "out"), "--no-progress")
    assert r.returncode == 0, r.stderr
    prob = np.asarray(Image.open(tmp_path / "out" / "dahlia_flower_prob.png"))
    assert prob.shape == (Image.open(image).height, Image.open(image).width) and prob.std() > 20
    code = ("import sys, numpy as np, defocus\n"
            f"p = defocus.Predictor().predict({str(image)!r})\n"
            f"np.save({str(tmp_path / 'prob.npy')!r}, p.prob_lowres)\n"
            "print(p.model.kind, sorted(m for m in ('torch', 'timm') if m in sys.modules))")
    r = run(no_torch_env, code=code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["onnx", "[]"]
    from defocus import Predictor  # the same model, here where torch is importable

    assert np.array_equal(np.load(tmp_path / "prob.npy"), Predictor().predict(image).prob_lowres)


def test_refine_runs_without_torch(no_torch_env, examples_dir, tmp_path):
    """--refine needs only the light install (pymatting): the refined map differs from the plain one."""
    from defocus.bundled import bundled_onnx

    if bundled_onnx() is None:
        pytest.skip("no bundled ONNX model in this installation")
    image = examples_dir / "cat_chelsea.png"
    maps = {}
    for name, extra in (("plain", []), ("refined", ["--refine"])):
        r = run(no_torch_env, "predict", str(image), "-o", str(tmp_path / name), "--save", "prob", "--no-progress",
                *extra)
        assert r.returncode == 0, r.stderr
        maps[name] = np.asarray(Image.open(tmp_path / name / "cat_chelsea_prob.png"), np.float32) / 255
    assert maps["plain"].shape == maps["refined"].shape
    assert 0.005 < np.abs(maps["plain"] - maps["refined"]).mean() < 0.1


def test_classical_methods_and_scoring_run_without_torch(no_torch_env, tmp_path):
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir(), masks.mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(images / f"s{i}.png")
        Image.fromarray(np.where(np.arange(64) < 32, 255, 0).astype(np.uint8)[None].repeat(48, 0)).save(
            masks / f"s{i}.png")
    r = run(no_torch_env, "predict", str(images), "-o", str(tmp_path / "maps"), "--method", "hifst", "--save",
            "prob", "--no-progress")
    assert r.returncode == 0, r.stderr
    r = run(no_torch_env, "evaluate", "--pred", str(tmp_path / "maps"), "--gt", str(masks), "--pred-suffix",
            "_prob")
    assert r.returncode == 0, r.stderr
    assert "MAE" in r.stdout


def test_evaluate_runs_the_bundled_onnx_model_as_predict_does_without_torch(no_torch_env, shared_dir):
    from defocus.bundled import bundled_onnx

    if bundled_onnx() is None:
        pytest.skip("no bundled ONNX model in this installation")
    data = shared_dir / "data" / "CUHK" / "TE-1_btbnet320_samples"
    r = run(no_torch_env, "evaluate", "--model", "default", "--inference", "model", "--images", str(data / "images"),
            "--gt", str(data / "masks"), "--json", "--require", "mae<0.1", "--require", "iou>=0.99")
    assert r.returncode == 3, r.stderr                             # the release check's verdict, IoU missed
    report = json.loads(r.stdout)
    assert report["n"] == 5 and report["mae"] < 0.1 and report["n_resized"] == 0
    assert [v["met"] for v in report["requirements"]] == [True, False]
    r = run(no_torch_env, "evaluate", "--model", "default", "--images", str(data / "images"), "--gt",
            str(data / "masks"))                                   # the paper's inference runs the torch network
    assert r.returncode != 0 and TORCH_LINE in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr


@pytest.mark.parametrize("args", [
    ["train", "configs/smoke_stage1.yaml"],
    ["export", "-o", "never.onnx"],
    ["convert", "examples/dahlia_flower.jpg", "never.safetensors"],
    ["benchmark", "--runs", "1", "--warmup", "0", "--batch-size", "1"],
    ["predict", "examples/dahlia_flower.jpg", "-o", "never", "--backend", "torch"],
    ["predict", "examples/dahlia_flower.jpg", "-o", "never", "--model", "dffnet:resnet18"],
])
def test_commands_that_need_torch_say_so_in_one_line(no_torch_env, args, tmp_path):
    args = [str(SRC.parent / a) if a.startswith(("configs/", "examples/")) else
            str(tmp_path / a) if a.startswith("never") else a for a in args]
    r = run(no_torch_env, *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert TORCH_LINE in lines[-1] and "Traceback" not in r.stderr, r.stderr
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # nothing written


def test_models_lists_the_bundled_model_without_torch(no_torch_env):
    r = run(no_torch_env, "models")
    assert r.returncode == 0, r.stderr
    assert "default" in r.stdout and "onnx" in r.stdout and TORCH_LINE in r.stdout


def test_labelling_a_bracket_and_listing_datasets_run_without_torch(no_torch_env, tmp_path):
    """`defocus data pairs` (a user's own focus bracket), `defocus data uniform-crops` of its labels and
    `defocus data list` need no PyTorch."""
    from scipy import ndimage

    rng = np.random.default_rng(0)
    tex = ndimage.gaussian_filter(rng.random((96, 128)) * 255, 0.7)
    near, far = tex.copy(), tex.copy()
    near[:, 64:] = ndimage.gaussian_filter(tex, 4)[:, 64:]  # left half sharp in the near shot
    far[:, :64] = ndimage.gaussian_filter(tex, 4)[:, :64]   # right half sharp in the far shot
    for name, a in (("near.png", near), ("far.png", far)):
        Image.fromarray(np.repeat(np.clip(a, 0, 255).astype(np.uint8)[..., None], 3, -1)).save(tmp_path / name)
    r = run(no_torch_env, "data", "pairs", str(tmp_path / "near.png"), str(tmp_path / "far.png"),
            "-o", str(tmp_path / "labels"))
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "labels" / "masks").glob("*.png"))) == 2
    r = run(no_torch_env, "data", "list")
    assert r.returncode == 0 and "mfifb" in r.stdout, r.stderr
    r = run(no_torch_env, "data", "uniform-crops", str(tmp_path / "labels"), "-o", str(tmp_path / "crops"),
            "--min-side", "1")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "crops" / "blurred.txt").is_file() and (tmp_path / "crops" / "sharp.txt").is_file()
