"""One output type for every network, padding in one place, and the one preprocess / predict-logits path."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from defocus.evaluation import paper_inference
from defocus.models import create_model, list_models
from defocus.models.output import DBDDepthOutput, DBDOutput, final_logit
from defocus.models.padding import pad_to_multiple
from defocus.models.predict import normalization, paper_preprocess, predict_logits, predict_probs


def _tiny(name):
    torch.manual_seed(0)
    return create_model(name, backbone=None if name == "dffnet_vgg16" else "resnet18").eval()


@pytest.mark.parametrize("name", [n for n in list_models() if n != "dffnet_vgg16"])
def test_every_network_returns_the_named_output(name):
    model = _tiny(name)
    with torch.no_grad():
        out = model(torch.randn(1, 3, 70, 90))
    assert isinstance(out, DBDDepthOutput if name == "rdffnet" else DBDOutput)
    assert out.logit is out[0] and out.features is out[1] and out.sides is out[2]
    assert out.logit.shape == (1, 1, 70, 90)
    assert (out.depths is None) == (name != "rdffnet")
    # forward = forward_features + forward_head; features are the padded input's, deepest first
    feats = model.forward_features(torch.zeros(1, 3, 70, 90))
    assert [f.shape[-1] for f in feats[::-1]] == [f.shape[-1] for f in out.features]
    assert feats[-1].shape[-2:] == (96 // 32, 96 // 32)


def test_pad_to_multiple():
    x = torch.arange(6.0).view(1, 1, 2, 3)
    y = pad_to_multiple(x, 4)
    assert y.shape == (1, 1, 4, 4)
    assert torch.equal(y[..., :2, :3], x) and torch.equal(y[..., 3, :3], x[..., 1, :])
    assert (y[..., :2, 3] == x[..., 2]).all()
    z = torch.zeros(1, 1, 8, 8)
    assert pad_to_multiple(z, 4) is z
    assert pad_to_multiple(z, 4, always=True) is not z
    assert torch.equal(pad_to_multiple(z, 4, always=True), z)


def test_final_logit_of_any_output():
    t = torch.ones(1)
    assert final_logit(DBDOutput(t, [], [])) is t and final_logit((t, 2)) is t and final_logit(t) is t


def test_paper_preprocess_and_predict_path(examples_dir):
    model = _tiny("dffnet")
    path = sorted(examples_dir.glob("*.jpg"))[0]
    rgb = Image.open(path).convert("RGB")
    mean, std = normalization(model)
    x = paper_preprocess(rgb, mean, std, 64)
    # the reference pipeline written out: PIL bilinear squash, /255, ImageNet normalisation, NCHW
    a = np.asarray(rgb.resize((64, 64), Image.BILINEAR), np.float32) / 255.0
    ref = (a - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    assert x.dtype == torch.float32 and x.shape == (1, 3, 64, 64)
    np.testing.assert_array_equal(x[0].permute(1, 2, 0).numpy(), ref)
    with torch.no_grad():
        want = model(x).logit
    got = predict_logits(model, x.double())  # moved to the model's dtype
    assert got.dtype == torch.float32 and not got.requires_grad
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(predict_probs(model, x), torch.sigmoid(want))
    prob, size = paper_inference(model, path, size=64)
    assert size == (rgb.height, rgb.width)
    np.testing.assert_allclose(prob, torch.sigmoid(want)[0, 0].numpy(), atol=1e-6)


def test_predict_accepts_plain_modules():
    net = torch.nn.Conv2d(3, 1, 1)
    x = torch.randn(1, 3, 4, 4)
    torch.testing.assert_close(predict_logits(net, x), F.conv2d(x, net.weight, net.bias))
