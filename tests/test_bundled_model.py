"""The bundled default model: ships inside the package, opens from its file alone, and finds the in-focus
subject of real defocus photos it never saw in training."""
from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
from PIL import Image

import defocus
from defocus.models import read_metadata

WEIGHTS = resources.files("defocus").joinpath("weights", "default.safetensors")


def test_bundled_weights_are_small_fp16_and_self_describing():
    path = str(WEIGHTS)
    meta = read_metadata(path)
    assert meta["config"]["name"] == "dffnet"
    assert meta["config"]["backbone"] == "tf_efficientnet_lite2"
    assert WEIGHTS.stat().st_size < 15 * 2**20
    model = defocus.load_model(path)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(5.41e6, rel=0.01)
    assert meta["config"]["upscale"] is False  # trained without enlarging small photos (its model card)
    assert meta["config"]["input_size"] == 512  # its input size, chosen on the real-pair benchmark's val split


def test_bundled_model_runs_at_its_own_input_size_and_small_photos_at_theirs_on_both_backends():
    for backend in ("onnx", "torch"):
        predictor = defocus.Predictor(device="cpu", backend=backend)
        assert (predictor.options.size, predictor.options.upscale) == (512, False)
        assert predictor.input_size((200, 150)) == (200, 150) and predictor.input_size((645, 432)) == (512, 432)
        assert predictor.input_size((800, 600)) == (512, 512)
        assert defocus.Predictor(device="cpu", backend=backend, upscale=True).input_size((200, 150)) == (512, 512)
        assert defocus.Predictor(device="cpu", backend=backend, size=320).input_size((800, 600)) == (320, 320)


def test_bundled_model_separates_sharp_subject_from_blurred_background(shared_dir):
    folder = shared_dir / "data" / "CUHK" / "TE-1_btbnet320_samples"
    predictor = defocus.Predictor(device="cpu")
    inter = union = 0
    for image_path in sorted((folder / "images").glob("*.png")):
        gt_in_focus = np.asarray(Image.open(folder / "masks" / image_path.name).convert("L")) >= 128
        result = predictor.predict(image_path)
        assert result.prob.shape == gt_in_focus.shape
        blur_pred, blur_gt = result.prob < 0.5, ~gt_in_focus
        inter += np.logical_and(blur_pred, blur_gt).sum()
        union += np.logical_or(blur_pred, blur_gt).sum()
    assert inter / union > 0.9  # measured 0.92 (pooled blur IoU, the seventh bundled model); a random or untrained network gives ~0.5


def test_default_names_the_bundled_weights_everywhere_a_model_is_named():
    from defocus.bench import run_config
    from defocus.inference import load_network

    _, info = load_network("default")
    assert info.source == str(WEIGHTS) and info.backbone == "tf_efficientnet_lite2"
    assert defocus.load_model("default").config["backbone"] == "tf_efficientnet_lite2"
    row = run_config(model="default", size=64, batch=1, backend="torch-baseline", runs=1, warmup=0)
    assert "tf_efficientnet_lite2" in row["model"] and row["images_per_s"] > 0
    for backend in ("torch-baseline", "onnx"):  # without a size: the model's own, as predict uses it
        assert run_config(model="default", batch=1, backend=backend, runs=1, warmup=0)["size"] == 512
