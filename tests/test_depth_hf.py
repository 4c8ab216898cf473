"""Hugging Face depth teachers, offline: tiny random DPT / Depth Anything models saved with save_pretrained."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

from defocus.models.depth import create_depth_teacher, level_sizes  # noqa: E402
from defocus.models.depth.hf import HFDepthTeacher  # noqa: E402

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def tiny_depth_anything_config(patch_size=16):
    """Depth Anything with a 4-layer, 32-wide DINOv2 backbone."""
    backbone = transformers.Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, patch_size=patch_size,
        image_size=64, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False)
    return transformers.DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=32, patch_size=patch_size,
        neck_hidden_sizes=[8, 16, 24, 32], fusion_hidden_size=16, head_hidden_size=8)


def tiny_dpt_config():
    """DPT on transformers' built-in ViT path (4 layers, 32 wide, patch 8)."""
    return transformers.DPTConfig(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=32,
        patch_size=8, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 16, 24, 32], fusion_hidden_size=16,
        head_hidden_size=8)


def save_tiny(config, directory):
    """A randomly initialised (seeded) depth model from ``config``, saved to ``directory``."""
    torch.manual_seed(0)
    transformers.AutoModelForDepthEstimation.from_config(config).save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def depth_anything_dir(tmp_path_factory):
    """A saved tiny Depth Anything model with an image-processor config carrying non-ImageNet mean/std."""
    directory = save_tiny(tiny_depth_anything_config(), tmp_path_factory.mktemp("depth_anything"))
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"do_normalize": True, "image_mean": list(MEAN), "image_std": list(STD)}))
    return directory


@pytest.fixture(scope="module")
def dpt_dir(tmp_path_factory):
    """A saved tiny DPT model without an image-processor config."""
    return save_tiny(tiny_dpt_config(), tmp_path_factory.mktemp("dpt"))


def test_depth_anything_neck_features_and_depth(depth_anything_dir):
    teacher = create_depth_teacher("hf", weights=depth_anything_dir)
    assert isinstance(teacher, HFDepthTeacher)
    assert teacher.channels == [32, 24, 16, 8]
    torch.testing.assert_close(teacher.mean.flatten(), torch.tensor(MEAN))
    torch.testing.assert_close(teacher.std.flatten(), torch.tensor(STD))
    assert all(not p.requires_grad for p in teacher.parameters())
    teacher.eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, depth = teacher(x)
        # The same maps computed by hand: normalise, backbone, reassemble (patch grid 4x4 -> 16/8/4/2).
        model = teacher.model
        pixels = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
        hidden = model.backbone(pixels).feature_maps
        reassembled = model.neck.reassemble_stage(list(hidden), 4, 4)
        want_depth = model(pixel_values=pixels).predicted_depth
    assert [tuple(f.shape) for f in feats] == [(2, 32, 2, 2), (2, 24, 4, 4), (2, 16, 8, 8), (2, 8, 16, 16)]
    for got, want in zip(feats, reassembled[::-1]):
        torch.testing.assert_close(got, want)
    assert depth.shape == (2, 1, 64, 64)
    torch.testing.assert_close(depth[:, 0], want_depth)


def test_fusion_features_and_odd_sizes(depth_anything_dir):
    teacher = create_depth_teacher("hf", weights=depth_anything_dir, features="fusion")
    assert teacher.channels == [16, 16, 16, 16]
    x = torch.rand(1, 3, 50, 70)
    with torch.no_grad():
        feats, depth = teacher(x)
        _, none = teacher(x, with_depth=False)
    assert teacher.model_input_size((50, 70)) == (48, 64)
    assert [tuple(f.shape[-2:]) for f in feats] == level_sizes((50, 70))
    assert [f.shape[1] for f in feats] == teacher.channels
    assert depth.shape == (1, 1, 50, 70) and none is None


def test_input_size_option(depth_anything_dir):
    teacher = create_depth_teacher("hf", weights=depth_anything_dir, input_size=40)
    assert teacher.model_input_size((320, 200)) == (48, 48)  # 40 rounded to the nearest multiple of 16
    with torch.no_grad():
        feats, depth = teacher(torch.rand(1, 3, 96, 64))
    assert [tuple(f.shape[-2:]) for f in feats] == level_sizes((96, 64))
    assert depth.shape == (1, 1, 96, 64)


def test_dpt_vit_defaults_to_imagenet_and_square_input(dpt_dir):
    teacher = create_depth_teacher("hf", weights=dpt_dir)
    torch.testing.assert_close(teacher.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))
    assert teacher.channels == [32, 24, 16, 8]
    assert teacher.model_input_size((64, 80)) == (80, 80)
    with torch.no_grad():
        feats, depth = teacher(torch.rand(2, 3, 64, 80))
    assert [tuple(f.shape) for f in feats] == [(2, 32, 2, 3), (2, 24, 4, 5), (2, 16, 8, 10), (2, 8, 16, 20)]
    assert depth.shape == (2, 1, 64, 80)


def test_random_config_and_errors(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="defocus.models.depth"):
        teacher = create_depth_teacher("hf", config=tiny_depth_anything_config(), frozen=False)
    assert "randomly initialised" in caplog.text
    assert any(p.requires_grad for p in teacher.parameters())
    with pytest.raises(FileNotFoundError):
        create_depth_teacher("hf", weights=tmp_path / "absent")
    with pytest.raises(ValueError, match="weights="):
        create_depth_teacher("hf")
    with pytest.raises(ValueError, match="features must be"):
        create_depth_teacher("hf", config=tiny_depth_anything_config(), features="backbone")

    class NoNeck(nn.Module):
        config = transformers.DPTConfig()

    with pytest.raises(ValueError, match="DPT-style neck"):
        HFDepthTeacher(NoNeck())
