"""R-DFFNet with the rendered scenes' own depth as its target (``distill.depth_teacher: scene``), the DFFNet ->
R-DFFNet initialisation and dropping the depth heads for inference."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

import defocus
from defocus.config import load_config
from defocus.engine import train
from defocus.engine.data import UnknownDepth
from defocus.engine.stages import load_init_weights
from defocus.losses import depth_loss, scene_depth_target
from defocus.models import create_model, save_model, without_depth_heads

REPO = Path(__file__).resolve().parents[1]


def test_scene_depth_target_is_normalised_inverse_depth_over_known_pixels():
    depth = torch.tensor([[[[1.0, 2.0], [4.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    target, known = scene_depth_target(depth)
    assert known[0].flatten().tolist() == [1, 1, 1, 0] and known[1].sum() == 0
    # inverse depths 1, 0.5, 0.25 -> near = 1, far = 0; the unknown pixel and the empty image stay 0
    assert torch.allclose(target[0].flatten(), torch.tensor([1.0, 1 / 3, 0.0, 0.0]))
    assert target[1].abs().sum() == 0


def test_depth_loss_counts_only_known_pixels():
    target = torch.rand(2, 1, 8, 8)
    known = torch.zeros(2, 1, 8, 8)
    known[:, :, :4] = 1
    logits = [torch.randn(2, 1, 4, 4)]
    a, _ = depth_loss(logits, target, known=known)
    changed = target.clone()
    changed[:, :, 4:] = 1 - changed[:, :, 4:]         # only unknown pixels change
    b, _ = depth_loss(logits, changed, known=known)
    assert torch.allclose(a, b)
    none, _ = depth_loss(logits, target, known=torch.zeros_like(known))
    assert float(none) == 0.0
    full, _ = depth_loss(logits, target, known=torch.ones_like(known))
    plain, _ = depth_loss(logits, target)
    assert torch.allclose(full, plain)


def test_an_rdffnet_starts_from_a_dffnet_file_and_ships_without_its_heads(tmp_path):
    torch.manual_seed(0)
    plain = create_model("dffnet", backbone="resnet18", pretrained=False).eval()
    path = save_model(plain, tmp_path / "plain.safetensors")
    r = create_model("rdffnet", backbone="resnet18", pretrained=False).eval()
    load_init_weights(r, path)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(r(x).logit, plain(x).logit)
        stripped = without_depth_heads(r)
        assert stripped.config["name"] == "dffnet"
        assert torch.equal(stripped(x).logit, r(x).logit)
    with pytest.raises(ValueError, match="only an 'rdffnet'"):
        without_depth_heads(plain)
    back = create_model("dffnet", backbone="resnet18", pretrained=False).eval()
    load_init_weights(back, save_model(r, tmp_path / "r.safetensors"))    # the heads are dropped
    with torch.no_grad():
        assert torch.equal(back(x).logit, r(x).logit)
    other = create_model("dffnet", backbone="resnet34", pretrained=False)
    with pytest.raises(RuntimeError):                  # any other mismatch is still strict
        load_init_weights(create_model("rdffnet", backbone="resnet18", pretrained=False),
                          save_model(other, tmp_path / "other.safetensors"))


def test_labelled_items_gain_an_unknown_depth():
    base = [dict(image=torch.zeros(3, 8, 8), target=torch.ones(1, 8, 8), valid=torch.ones(1, 8, 8), stem="a")]
    item = UnknownDepth(base)[0]
    assert item["depth"].shape == (1, 8, 8) and item["depth"].sum() == 0 and "depth" not in base[0]


def _log(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("depth_prob", [1.0, 0.0])
def test_scene_depth_training_end_to_end(tmp_path, depth_prob):
    cfg = load_config(REPO / "configs" / "smoke_rdffnet.yaml",
                      [f"output_dir={tmp_path}", "distill.depth_teacher=scene", "distill.depth_kwargs={}",
                       f"data.synthetic.cfg.depth_prob={depth_prob}", "progress=false"])
    result = train(cfg)
    assert defocus.load_model(result.model_path).config["name"] == "rdffnet"
    depth_terms = [float(r["depth"]) for r in _log(tmp_path / "log.csv")]
    if depth_prob:
        assert all(d > 0 for d in depth_terms)       # every scene carries its depth
    else:
        assert all(d == 0 for d in depth_terms)      # layered scenes have no depth: no depth term


def test_a_scene_depth_target_without_rendered_scenes_is_refused(tmp_path):
    from defocus.engine.data import build_train_dataset

    cfg = load_config(REPO / "configs" / "smoke_rdffnet.yaml", [f"output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="needs rendered scenes"):
        build_train_dataset(type(cfg.data)(), (0.5,) * 3, (0.5,) * 3, with_depth=True)
