"""MiDaS v2.1 depth teacher: checkpoint layout, strict loading, feature levels, decoder semantics, tiny variant."""
from __future__ import annotations

import json
import logging

import pytest
import torch
import torch.nn.functional as F

from defocus.models.depth import create_depth_teacher, level_sizes, load_midas_state_dict, normalize_depth_minmax
from defocus.models.depth import midas as midas_mod
from defocus.models.depth.midas import FeatureFusionBlock, ResidualConvUnit

# Tensors checked after loading: checkpoint name -> how to reach it in the teacher.
PROBES = {
    "pretrained.layer1.0.weight": lambda t: t.pretrained.layer1[0].weight,  # stem conv1
    "pretrained.layer1.1.running_var": lambda t: t.pretrained.layer1[1].running_var,  # stem bn1
    "pretrained.layer1.4.0.downsample.0.weight": lambda t: t.pretrained.layer1[4][0].downsample[0].weight,
    "pretrained.layer3.7.conv2.weight": lambda t: t.pretrained.layer3[7].conv2.weight,
    "pretrained.layer4.2.bn3.bias": lambda t: t.pretrained.layer4[2].bn3.bias,
    "scratch.layer4_rn.weight": lambda t: t.scratch.layer4_rn.weight,
    "scratch.refinenet2.resConfUnit1.conv2.bias": lambda t: t.scratch.refinenet2.resConfUnit1.conv2.bias,
    "scratch.output_conv.4.weight": lambda t: t.scratch.output_conv[4].weight,
}


@pytest.fixture(scope="module")
def manifest(shared_dir):
    """Parameter/buffer names and shapes of the released ``midas_v21-f6b98070.pt``, in state-dict order."""
    path = shared_dir / "reference" / "official_midas_v21_state_dict.json"
    return json.loads(path.read_text())["state_dict"]


@pytest.fixture(scope="module")
def synthetic_checkpoint(manifest, tmp_path_factory):
    """A file with random tensors under the manifest's names/shapes, saved without the ``num_batches_tracked``
    counters (tolerated); returns the path and clones of the probed tensors."""
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in manifest.items():
        if name.endswith("num_batches_tracked"):
            continue
        t = torch.randn(shape, generator=gen)
        if len(shape) == 4:  # conv weights: variance-preserving scale keeps 100 layers finite
            t = t * (2.0 / (shape[1] * shape[2] * shape[3])) ** 0.5
        state[name] = t.abs() + 0.5 if name.endswith("running_var") else t
    path = tmp_path_factory.mktemp("midas") / "midas_v21-f6b98070.pt"
    torch.save(state, path)
    probes = {k: state[k].clone() for k in PROBES}
    del state
    return path, probes


@pytest.fixture(scope="module")
def teacher(synthetic_checkpoint):
    """The full-size teacher (ResNeXt-101 32x8d), built once, loaded from the synthetic checkpoint."""
    path, _ = synthetic_checkpoint
    return create_depth_teacher("midas_v21", weights=path)


def test_state_dict_matches_released_layout(teacher, manifest):
    own = teacher.state_dict()
    assert list(own) == list(manifest)
    wrong = [k for k in own if list(own[k].shape) != list(manifest[k])]
    assert not wrong


def test_strict_load_puts_tensors_in_the_right_modules(teacher, synthetic_checkpoint):
    _, probes = synthetic_checkpoint
    for name, get in PROBES.items():
        assert torch.equal(get(teacher).detach(), probes[name]), name
    assert teacher.channels == [2048, 1024, 512, 256]
    assert all(not p.requires_grad for p in teacher.parameters())


def test_missing_extra_and_misshaped_keys_are_reported(teacher):
    good = teacher.state_dict()
    missing = dict(good)
    del missing["pretrained.layer3.7.conv2.weight"]
    with pytest.raises(ValueError, match=r"1 missing key\(s\): pretrained\.layer3\.7\.conv2\.weight"):
        load_midas_state_dict(teacher, missing)
    extra = dict(good, **{"scratch.extra_head.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match=r"unexpected key\(s\): scratch\.extra_head\.weight"):
        load_midas_state_dict(teacher, extra)
    misshaped = dict(good, **{"scratch.layer1_rn.weight": torch.zeros(256, 256, 1, 1)})
    with pytest.raises(ValueError, match=r"shape mismatch.*scratch\.layer1_rn\.weight"):
        load_midas_state_dict(teacher, misshaped)


def test_features_are_the_normalised_encoder_stage_outputs(teacher):
    teacher.train()  # the reference's teacher mode: BatchNorm uses the batch statistics
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        feats, depth = teacher(x)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        enc = teacher.pretrained
        l1 = enc.layer1((x - mean) / std)
        l2 = enc.layer2(l1)
        l3 = enc.layer3(l2)
        l4 = enc.layer4(l3)
        feats_only, none = teacher(x, with_depth=False)
    assert [tuple(f.shape) for f in feats] == [(2, 2048, 2, 2), (2, 1024, 4, 4), (2, 512, 8, 8), (2, 256, 16, 16)]
    for got, want in zip(feats, (l4, l3, l2, l1)):
        torch.testing.assert_close(got, want)
    assert all(torch.isfinite(f).all() for f in feats)
    assert (l1 >= 0).all() and (l4 >= 0).all()  # post-ReLU stage outputs
    assert depth.shape == (2, 1, 64, 64) and (depth >= 0).all() and torch.isfinite(depth).all()
    assert none is None and torch.equal(feats_only[0], feats[0])


def test_residual_unit_adds_the_rectified_input():
    unit = ResidualConvUnit(4)
    torch.nn.init.zeros_(unit.conv2.weight)
    torch.nn.init.zeros_(unit.conv2.bias)
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(unit(x), F.relu(x))


def test_fusion_block_size_matches_plain_2x_upsampling():
    torch.manual_seed(0)
    block = FeatureFusionBlock(4)
    path, skip = torch.randn(1, 4, 3, 5), torch.randn(1, 4, 3, 5)
    fused = block.resConfUnit2(path + block.resConfUnit1(skip))
    want = F.interpolate(fused, scale_factor=2, mode="bilinear", align_corners=True)
    torch.testing.assert_close(block(path, skip), want)
    torch.testing.assert_close(block(path, skip, size=(6, 10)), want)


def test_tiny_teacher_interface_on_odd_sizes():
    torch.manual_seed(0)
    tiny = create_depth_teacher("midas_v21", tiny=True, frozen=False)
    assert tiny.channels == [128, 64, 32, 16]
    assert all(p.requires_grad for p in tiny.parameters())
    x = torch.rand(2, 3, 70, 50)
    feats, depth = tiny(x)
    assert [tuple(f.shape[-2:]) for f in feats] == level_sizes((70, 50)) == [(3, 2), (5, 4), (9, 7), (18, 13)]
    assert [f.shape[1] for f in feats] == tiny.channels
    assert depth.shape == (2, 1, 70, 50)
    assert sum(p.numel() for p in tiny.parameters()) < 1_000_000


def test_state_dict_containers_are_unwrapped(tmp_path):
    torch.manual_seed(0)
    src = create_depth_teacher("midas_v21", tiny=True)
    dst = create_depth_teacher("midas_v21", tiny=True)
    path = tmp_path / "wrapped.pt"
    torch.save({"model": {"module." + k: v for k, v in src.state_dict().items()}}, path)
    load_midas_state_dict(dst, path)
    for (name, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), name


def test_random_init_warns_and_bad_requests_fail(monkeypatch, caplog):
    # Stand a tiny encoder in for ResNeXt-101 so that the default path is cheap to build.
    monkeypatch.setattr(midas_mod, "resnext101_32x8d_encoder", lambda: midas_mod.tiny_encoder(4))
    with caplog.at_level(logging.WARNING, logger="defocus.models.depth"):
        create_depth_teacher("midas_v21")
    assert "random initialisation" in caplog.text
    with pytest.raises(ValueError, match="tiny=True"):
        create_depth_teacher("midas_v21", weights="midas.pt", tiny=True)
    with pytest.raises(ValueError, match="unknown depth teacher"):
        create_depth_teacher("zoedepth")


def test_normalize_depth_minmax_is_per_image():
    d = torch.stack([torch.tensor([[1.0, 3.0], [2.0, 5.0]]), torch.full((2, 2), 7.0)]).unsqueeze(1)
    n = normalize_depth_minmax(d)
    torch.testing.assert_close(n[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]))
    assert torch.equal(n[1], torch.zeros(1, 2, 2))
