"""``loss.fill_undetermined``: undetermined pixels labelled by a frozen network's thresholded prediction instead of
being left out of the loss."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from defocus.config import load_config
from defocus.engine import train
from defocus.engine.stages import Stage1, fill_undetermined, local_gradient_rms, to_unit_range, valid_of
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
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]
    assert rows and all(math.isfinite(float(r.split(",")[2])) for r in rows)     # the loss column


def test_local_gradient_rms_is_zero_on_flat_parts_and_grey_levels_per_pixel_at_a_ramp():
    flat = torch.full((1, 3, 32, 32), 0.4)
    assert float(local_gradient_rms(flat).abs().max()) < 1e-3
    ramp = torch.linspace(0, 31 / 255, 32).view(1, 1, 1, 32).expand(1, 3, 32, 32)   # 1 grey level per pixel
    rms = local_gradient_rms(ramp)[0, 0, 8:-8, 8:-8]
    assert torch.allclose(rms, torch.ones_like(rms), atol=1e-3)


def test_fill_flat_hands_only_flat_in_focus_labels_to_the_filler(tmp_path):
    torch.manual_seed(0)
    filler = create_model("dffnet", backbone="resnet18", pretrained=False).eval()
    path = save_model(filler, tmp_path / "filler.safetensors")
    stage = _stage(tmp_path, path)
    flat_stage = Stage1(load_config(REPO / "configs" / "smoke_stage1.yaml",
                                    [f"output_dir={tmp_path}", "progress=false", f"loss.fill_undetermined={path}",
                                     "loss.fill_flat=2.0"]), torch.device("cpu"))
    flat_stage.student.load_state_dict(stage.student.state_dict())
    for s in (stage, flat_stage):
        s.student.eval()
    # left half textured noise, right half flat grey; labels: top in focus, bottom blurred; all determined
    unit = torch.full((1, 3, 64, 64), 0.5)
    unit[..., :32] = torch.rand(1, 3, 64, 32)
    mean, std = stage.mean, stage.std
    images = (unit - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    target = torch.zeros(1, 1, 64, 64)
    target[:, :, :32] = 1
    batch = dict(image=images, target=target, valid=torch.ones_like(target))
    with torch.no_grad():
        guess = (filler(images).logit > 0).float()
        out = stage.student(images)
    flat_in_focus = torch.zeros_like(target, dtype=torch.bool)
    flat_in_focus[:, :, :32, 40:] = True                       # beyond the window's reach (radius 6 px)
    loss = flat_stage.compute(flat_stage.student, batch, 0, 0)[0]
    plain = stage.compute(stage.student, batch, 0, 0)[0]
    assert not torch.allclose(loss, plain)
    # the filled target: the filler's call on the flat in-focus part, the labels elsewhere
    flat = local_gradient_rms(to_unit_range(images, mean, std)) < 2.0
    assert bool(flat[flat_in_focus].all()) and not bool(flat[..., :, :28].any())
    expected_target = torch.where(flat & (target > 0.5), guess, target)
    expected, _ = stage.loss(out.logit, out.sides, expected_target)
    assert torch.allclose(loss, expected)


def test_fill_flat_needs_a_filler(tmp_path):
    with pytest.raises(ValueError, match="fill_undetermined"):
        Stage1(load_config(REPO / "configs" / "smoke_stage1.yaml",
                           [f"output_dir={tmp_path}", "progress=false", "loss.fill_flat=2.0"]), torch.device("cpu"))


class PositionBias(nn.Module):
    """A stand-in network whose logit at column j is ``bias[j]``, whatever the image: not mirror-symmetric."""

    def __init__(self, bias):
        super().__init__()
        self.bias = torch.tensor(bias)

    def forward(self, x):
        return DBDOutput(self.bias.view(1, 1, 1, -1).expand(x.shape[0], 1, x.shape[-2], -1).clone(), [], [])


@pytest.mark.parametrize("bias, plain_row, flipped_row", [
    # column 0: sigmoid(1) + sigmoid(-3) = 0.78 < 1, so the mean probability is below 0.5; likewise column 3
    ([1.0, 0.0, 0.0, -3.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
    # sigmoid(3) + sigmoid(-1) = 1.22 > 1: the surer call wins at both ends
    ([3.0, 0.0, 0.0, -1.0], [1.0, 0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 1.0]),
])
def test_fill_flip_averages_the_fillers_calls_on_the_image_and_its_mirror(bias, plain_row, flipped_row):
    images = torch.zeros(1, 3, 2, 4)
    target = torch.full((1, 1, 2, 4), 0.5)
    undetermined = torch.zeros_like(target)
    plain = fill_undetermined(PositionBias(bias), images, target, undetermined)
    flipped = fill_undetermined(PositionBias(bias), images, target, undetermined, flip=True)
    assert plain[0, 0].tolist() == [plain_row] * 2
    assert flipped[0, 0].tolist() == [flipped_row] * 2


def test_fill_flip_is_read_from_the_config_and_needs_a_filler(tmp_path):
    torch.manual_seed(0)
    filler = create_model("dffnet", backbone="resnet18", pretrained=False).eval()
    path = save_model(filler, tmp_path / "filler.safetensors")
    stage = Stage1(load_config(REPO / "configs" / "smoke_stage1.yaml",
                               [f"output_dir={tmp_path}", "progress=false", f"loss.fill_undetermined={path}",
                                "loss.fill_flip=true"]), torch.device("cpu"))
    assert stage.filler is not None
    stage.filler = PositionBias(torch.linspace(3.0, -1.0, 64).tolist())   # in focus on the left 48 columns
    stage.student.eval()
    images = torch.randn(1, 3, 64, 64)
    target = torch.zeros(1, 1, 64, 64)
    batch = dict(image=images, target=target, valid=torch.zeros_like(target))
    loss = stage.compute(stage.student, batch, 0, 0)[0]
    with torch.no_grad():
        out = stage.student(images)
    expected_target = fill_undetermined(stage.filler, images, target, torch.zeros_like(target), flip=True)
    one_view = fill_undetermined(stage.filler, images, target, torch.zeros_like(target))
    assert float(expected_target.mean()) == 1.0 and float(one_view.mean()) == 0.75
    assert torch.allclose(loss, stage.loss(out.logit, out.sides, expected_target)[0])
    assert not torch.allclose(loss, stage.loss(out.logit, out.sides, one_view)[0])
    with pytest.raises(ValueError, match="fill_undetermined"):
        Stage1(load_config(REPO / "configs" / "smoke_stage1.yaml",
                           [f"output_dir={tmp_path}", "progress=false", "loss.fill_flip=true"]), torch.device("cpu"))
