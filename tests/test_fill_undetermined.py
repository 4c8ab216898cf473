"""``loss.fill_undetermined``: undetermined pixels labelled by a frozen network's thresholded prediction instead of
being left out of the loss."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from defocus.config import load_config
from defocus.engine import train
from defocus.engine.stages import Stage1, fill_undetermined, valid_of
from defocus.models import create_model, save_model
from defocus.models.output import DBDOutput

REPO = Path(__file__).resolve().parents[1]


class FixedGuess(nn.Module):
    """A stand-in network whose logit is +1 on the left half of the image and -1 on the right."""

    def forward(self, x):
        logit = torch.ones(x.shape[0], 1, *x.shape[-2:])
        logit[..., x.shape[-1] // 2:] = -1
        return DBDOutput(logit, [], [])


def test_only_undetermined_pixels_take_the_networks_label():
    target = torch.tensor([[[[0.0, 0.0, 1.0, 1.0]] * 2]])
    valid = torch.tensor([[[[1.0, 0.0, 0.0, 1.0]] * 2]])
    filled = fill_undetermined(FixedGuess(), torch.zeros(1, 3, 2, 4), target, valid)
    # determined pixels keep their label even where the network disagrees; the others take its guess (1 | 0)
    assert filled[0, 0].tolist() == [[0.0, 1.0, 0.0, 1.0]] * 2


def _stage(tmp_path, filler_path=None):
    overrides = [f"output_dir={tmp_path}", "progress=false"]
    if filler_path:
        overrides.append(f"loss.fill_undetermined={filler_path}")
    return Stage1(load_config(REPO / "configs" / "smoke_stage1.yaml", overrides), torch.device("cpu"))


def test_stage1_trains_the_filled_labels_on_every_pixel(tmp_path):
    torch.manual_seed(0)
    filler = create_model("dffnet", backbone="resnet18", pretrained=False).eval()
    stage = _stage(tmp_path, save_model(filler, tmp_path / "filler.safetensors"))
    assert stage.filler is not None and not stage.filler.training
    assert all(not p.requires_grad for p in stage.filler.parameters())
    images = torch.randn(2, 3, 64, 64)
    target = (torch.rand(2, 1, 64, 64) > 0.5).float()
    valid = torch.ones_like(target)
    valid[:, :, 20:40] = 0
    batch = dict(image=images, target=target, valid=valid)
    stage.student.eval()
    loss, _ = stage.compute(stage.student, batch, 0, 0)
    with torch.no_grad():
        guess = (filler(images).logit > 0).float()
    out = stage.student(images)
    expected, _ = stage.loss(out.logit, out.sides, torch.where(valid > 0.5, target, guess))
    ignored, _ = stage.loss(out.logit, out.sides, target, valid_of(batch))
    assert torch.allclose(loss, expected) and not torch.allclose(loss, ignored)
    # fully determined batches are untouched (no network call changes them)
    full = dict(image=images, target=target, valid=torch.ones_like(target))
    plain, _ = stage.loss(out.logit, out.sides, target)
    assert torch.allclose(stage.compute(stage.student, full, 0, 0)[0], plain)


def test_off_by_default_and_a_filler_with_another_normalisation_is_refused(tmp_path):
    assert _stage(tmp_path).filler is None
    other = create_model("dffnet", backbone="tf_efficientnet_lite0", pretrained=False)   # mean = std = 0.5
    with pytest.raises(ValueError, match="normalisation"):
        _stage(tmp_path, save_model(other, tmp_path / "other.safetensors"))


def test_training_end_to_end_with_filled_labels(tmp_path):
    filler = save_model(create_model("dffnet", backbone="resnet18", pretrained=False), tmp_path / "f.safetensors")
    cfg = load_config(REPO / "configs" / "smoke_stage1.yaml",
                      [f"output_dir={tmp_path / 'run'}", f"loss.fill_undetermined={filler}", "progress=false"])
    result = train(cfg)
    assert Path(result.model_path).exists()
