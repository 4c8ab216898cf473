"""The DFFNet model family (method.md §1): output shapes, gradients, parameter counts, the method's equations,
any-size inputs, and the safetensors round trip."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import defocus
from defocus.models import (average_models, create_model, list_models, load_model, read_metadata, save_model,
                            with_input_defaults)
from defocus.models.blocks import RFB, ConvBN, up2

TINY = "resnet18"  # small timm backbone with stride-4..32 levels; dffnet_vgg16 keeps its VGG16
NON_SQUARE = (160, 224)
# side-logit strides per variant (relative to the input); the VGG variant's levels start at stride 2
SIDE_STRIDES = {
    "dffnet": [16, 16, 8, 4], "dffnet_no_attention": [16, 16, 8, 4], "rdffnet": [16, 16, 8, 4],
    "dffnet_no_dffm": [32, 16, 8, 4], "pdnet": [], "dffnet_vgg16": [8, 8, 4, 2],
}


def _backbone(name):
    return None if name == "dffnet_vgg16" else TINY


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: create_model(name, backbone=_backbone(name)) for name in list_models()}


def _check_outputs(model, name, out, b, h, w):
    expected_len = 4 if name == "rdffnet" else 3
    assert len(out) == expected_len
    logit, feats, sides = out[:3]
    assert logit.shape == (b, 1, h, w)
    bb = model.backbone
    assert [tuple(f.shape) for f in feats] == [(b, c, h // r, w // r) for c, r in
                                               zip(bb.channels[::-1], bb.reductions[::-1])]
    assert [tuple(s.shape) for s in sides] == [(b, 1, h // r, w // r) for r in SIDE_STRIDES[name]]
    if name == "rdffnet":
        depths = out[3]
        assert [tuple(d.shape) for d in depths] == [tuple(s.shape) for s in sides] + [(b, 1, h, w)]


def test_registry_names():
    assert list_models() == ["dffnet", "dffnet_no_dffm", "dffnet_no_attention", "pdnet", "rdffnet", "dffnet_vgg16"]
    with pytest.raises(ValueError, match="unknown model"):
        create_model("dffnet_v2", backbone=TINY)
    with pytest.raises(TypeError, match="no decoder options"):
        create_model("pdnet", backbone=TINY, attention=False)


@pytest.mark.parametrize("name", list_models())
def test_shapes_at_320(models, name):
    model = models[name].eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 320, 320))
    _check_outputs(model, name, out, 1, 320, 320)


@pytest.mark.parametrize("name", list_models())
def test_non_square_backward_reaches_every_parameter(models, name):
    """Training mode, non-square input: every output has the documented shape and every parameter gets a
    gradient (no unused layers)."""
    model = models[name].train()
    model.zero_grad(set_to_none=True)
    h, w = NON_SQUARE if name != "dffnet_vgg16" else (64, 96)
    out = model(torch.randn(2, 3, h, w))
    _check_outputs(model, name, out, 2, h, w)
    loss = out[0].mean() + sum(s.mean() for s in out[2]) + (sum(d.mean() for d in out[3]) if len(out) > 3 else 0)
    loss.backward()
    unused = [n for n, p in model.named_parameters() if p.grad is None]
    assert not unused


def test_logit_polarity_and_no_sigmoid(models):
    model = models["dffnet"].eval()
    with torch.no_grad():
        logit = model(torch.randn(1, 3, 64, 64))[0]
    assert logit.min() < 0 or logit.max() > 1  # raw logits, not probabilities


def test_sizes_not_a_multiple_of_32_are_padded_and_cropped(models):
    """Documented behaviour: replicate-pad bottom/right to a multiple of 32, run, crop the logit back."""
    model = models["rdffnet"].eval()
    x = torch.randn(1, 3, 100, 75)
    with torch.no_grad():
        logit, feats, sides, depths = model(x)
        ref = model(F.pad(x, (0, 96 - 75, 0, 128 - 100), mode="replicate"))
    assert logit.shape == (1, 1, 100, 75) and depths[-1].shape == (1, 1, 100, 75)
    assert torch.allclose(logit, ref[0][..., :100, :75], atol=1e-6)
    assert torch.allclose(depths[-1], ref[3][-1][..., :100, :75], atol=1e-6)
    assert sides[0].shape[-2:] == (8, 6)  # sides refer to the padded 128x96 image


def test_up2_is_align_corners_true():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    y = up2(x)
    assert torch.allclose(y[0, 0, 0], torch.tensor([0.0, 1 / 3, 2 / 3, 1.0]))
    assert torch.allclose(up2(x, 2), up2(up2(x)))


def test_rfb_is_linear_except_its_output_relu():
    torch.manual_seed(0)
    rfb = RFB(16, 32).eval()
    x = torch.randn(1, 16, 12, 12)
    with torch.no_grad():
        for branch in (rfb.branch0, rfb.branch1, rfb.branch2, rfb.branch3, rfb.conv_res):
            zero = branch(torch.zeros_like(x))
            assert torch.allclose(branch(3 * x) - zero, 3 * (branch(x) - zero), atol=1e-4)
        assert rfb(x).min() >= 0
    assert [m.conv.dilation for m in (rfb.branch1[3], rfb.branch2[3], rfb.branch3[3])] == [(3, 3), (5, 5), (7, 7)]
    assert rfb.branch3[1].conv.kernel_size == (1, 7) and rfb.branch3[2].conv.kernel_size == (7, 1)
    assert not any(isinstance(m, torch.nn.ReLU) for m in ConvBN(4, 4).modules())


def test_dffnet_decoder_follows_method_equations(models):
    """method.md §1.3-1.5 written out independently: multiplicative DFFM with CB_c/CB_d shared by T3 and T4,
    sides on T_k, attention from the raw side logits, aggregation with T'_k first in each concatenation."""
    dec = models["dffnet"].decoder.eval()
    torch.manual_seed(1)
    r1, r2, r3, r4 = (torch.randn(1, 32, s, s) for s in (16, 8, 4, 2))
    U = up2
    cb_a, cb_b, cb_c, cb_d, cb_e = dec.top, dec.r4_to_t2, dec.r4_up2, dec.r3_up, dec.r2_up
    with torch.no_grad():
        t = [cb_a(U(r4)),
             cb_b(U(r4)) * r3,
             cb_c(U(r4, 2)) * cb_d(U(r3)) * r2,
             cb_c(U(r4, 3)) * cb_d(U(r3, 2)) * cb_e(U(r2)) * r1]
        s = [dec.sides[k](t[k]) for k in range(4)]
        a = [t[k] * torch.sigmoid(dec.attention_convs[k](s[k])) for k in range(4)]
        g2 = dec.g2_fuse(torch.cat([a[1], a[0]], 1))
        g3 = dec.g3_fuse(torch.cat([a[2], dec.g2_up(U(g2))], 1))
        g4 = dec.g4_fuse(torch.cat([a[3], dec.g3_up(U(g3))], 1))
        p = dec.head(dec.head_conv(g4))
        p_dec, s_dec, depths = dec(r1, r2, r3, r4)
    assert depths is None
    assert torch.allclose(p_dec, p, atol=1e-5)
    assert all(torch.allclose(x, y, atol=1e-5) for x, y in zip(s_dec, s))


def test_pdnet_decoder_follows_method_equations(models):
    model = models["pdnet"].eval()
    dec = model.decoder
    c = model.backbone.channels
    x1, x2, x3, x4 = (torch.randn(1, ch, s, s) for ch, s in zip(c, (16, 8, 4, 2)))
    with torch.no_grad():
        g1, g2, g3, g4 = (dec.reduce[i](x) for i, x in enumerate((x1, x2, x3, x4)))
        a2 = dec.g2_fuse(torch.cat([g3, dec.top(up2(g4))], 1))
        a3 = dec.g3_fuse(torch.cat([g2, dec.g2_up(up2(a2))], 1))
        a4 = dec.g4_fuse(torch.cat([g1, dec.g3_up(up2(a3))], 1))
        p, sides, _ = dec(x1, x2, x3, x4)
    assert sides == [] and torch.allclose(p, dec.head(dec.head_conv(a4)), atol=1e-5)
    assert [r.bias is not None for r in dec.reduce] == [True] * 4


def test_variant_structure(models):
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    dec = {k: models[k].decoder for k in ("dffnet", "dffnet_no_attention", "dffnet_no_dffm", "rdffnet")}
    assert n(dec["dffnet"]) - n(dec["dffnet_no_attention"]) == 4 * 32 * 9
    assert n(dec["dffnet"]) - n(dec["dffnet_no_dffm"]) == 4 * (32 * 32 * 9 + 64)  # CB_b..CB_e not built
    assert n(dec["rdffnet"]) - n(dec["dffnet"]) == 4 * 33 + 129  # four depth sides + final depth head
    assert models["pdnet"].rfbs is None
    assert not hasattr(models["dffnet_vgg16"].decoder, "attention_convs")


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(0)
    return create_model("dffnet", backbone="resnest101e")


def test_paper_model_parameter_counts(paper_model):
    m = paper_model
    count = lambda mod: sum(p.numel() for p in mod.parameters()) / 1e6  # noqa: E731
    assert round(count(m), 2) == 47.81
    assert round(count(m.decoder), 2) == 0.58
    assert round(count(m.rfbs), 2) == 1.00
    assert m.backbone.channels == [256, 512, 1024, 2048]
    assert m.config["mean"] == [0.485, 0.456, 0.406]


def test_paper_model_has_no_unused_parameters(paper_model):
    m = paper_model.train()
    m.zero_grad(set_to_none=True)
    logit, feats, sides = m(torch.randn(2, 3, 64, 64))
    (logit.mean() + sum(s.mean() for s in sides)).backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == []
    assert [f.shape[1] for f in feats] == [2048, 1024, 512, 256]


@pytest.mark.parametrize("name, kwargs", [("dffnet", {}), ("rdffnet", {"final_depth_head": False})])
def test_safetensors_round_trip(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, backbone=TINY, **kwargs)
    model.train()
    model(torch.randn(2, 3, 64, 64))  # move the BN running statistics away from their initial values
    model.eval()
    path = save_model(model, tmp_path / f"{name}.safetensors", metadata={"note": "round trip"})
    meta = read_metadata(path)
    assert meta["config"] == {"name": name, "backbone": TINY, "mean": [0.485, 0.456, 0.406],
                              "std": [0.229, 0.224, 0.225], **kwargs} and meta["note"] == "round trip"
    loaded = defocus.load_model(path)
    assert not loaded.training and all(p.requires_grad for p in loaded.parameters())  # can be fine-tuned
    x = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a[0], b[0])
    assert len(a) == len(b) and all(torch.equal(p, q) for p, q in zip(a[2], b[2]))
    if name == "rdffnet":
        assert len(b[3]) == 4 and loaded.decoder.depth_head is None


def test_half_precision_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("dffnet_no_dffm", backbone=TINY).eval()
    path = save_model(model, tmp_path / "half.safetensors", dtype=torch.float16)
    loaded = load_model(path)
    assert loaded.decoder.top.conv.weight.dtype == torch.float32
    assert torch.equal(loaded.decoder.top.conv.weight, model.decoder.top.conv.weight.half().float())


def test_average_models_is_the_element_wise_mean(tmp_path):
    paths, states = [], []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = create_model("dffnet_no_dffm", backbone=TINY).eval()
        for module in model.modules():          # distinct BatchNorm statistics and counters per file
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.num_batches_tracked.fill_(seed + 5)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        paths.append(save_model(model, tmp_path / f"m{seed}.safetensors"))
    mean = average_models(paths).state_dict()
    assert set(mean) == set(states[0])
    for k, v in mean.items():
        if v.is_floating_point():
            assert torch.allclose(v, sum(s[k] for s in states) / 3, atol=1e-6), k
        else:
            assert torch.equal(v, states[0][k]), k
    assert not torch.equal(mean["decoder.top.conv.weight"], states[0]["decoder.top.conv.weight"])
    other = save_model(create_model("dffnet", backbone=TINY), tmp_path / "other.safetensors")
    with pytest.raises(ValueError, match="another architecture"):
        average_models([paths[0], other])
    with pytest.raises(TypeError, match="a list of weight files"):
        average_models(str(paths[0]))
    marked = save_model(with_input_defaults(load_model(paths[1]), upscale=False), tmp_path / "marked.safetensors")
    with pytest.raises(ValueError, match="other input defaults"):
        average_models([paths[0], marked])
    mixed = average_models([paths[0], marked], upscale=False)          # told the mean's own: averaged
    assert mixed.config["upscale"] is False
    assert torch.allclose(mixed.state_dict()["decoder.top.conv.weight"],
                          (states[0]["decoder.top.conv.weight"] + states[1]["decoder.top.conv.weight"]) / 2, atol=1e-6)
    assert average_models([marked, marked], upscale=True).config["upscale"] is True
    with pytest.raises(ValueError, match="another architecture"):
        average_models([paths[0], other], upscale=False)
    with pytest.raises(ValueError, match="at least two"):
        average_models(paths[:1])


def test_load_model_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_model(tmp_path / "missing.safetensors")


def test_load_model_without_the_meta_device_shortcut(tmp_path, monkeypatch):
    """Backbones whose constructor cannot run on the meta device are built normally, with the same result."""
    import defocus.models.io as io

    torch.manual_seed(0)
    model = create_model("dffnet_no_attention", backbone=TINY).eval()
    path = save_model(model, tmp_path / "m.safetensors")
    monkeypatch.setattr(io, "_build_without_storage", lambda *a: None)
    loaded = load_model(path)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
