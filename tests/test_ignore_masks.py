"""Undetermined pixels (ignore masks of labels derived from photo pairs) in scoring, losses and training."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from defocus.cli import app
from defocus.evaluation import EvaluationInputError, evaluate_maps
from defocus.losses import DBDLoss, dbd_loss, dof_edge_loss
from defocus.metrics import Scorer, get_protocol


def case(seed=0):
    """A mask, a prediction right on the determined pixels and wrong on the undetermined ones."""
    rng = np.random.default_rng(seed)
    gt = np.zeros((40, 50), bool)
    gt[:, :25] = True
    ignore = np.zeros_like(gt)
    ignore[10:30, 15:35] = True
    pred = gt.astype(float)
    pred[ignore] = rng.random(ignore.sum())  # anything at all where nothing is known
    return pred, gt, ignore


def test_scorer_leaves_undetermined_pixels_out():
    pred, gt, ignore = case()
    sc = Scorer(get_protocol("standard"))
    s = sc.add("x", pred, gt, ignore)
    assert s.mae == 0 and s.fbeta == pytest.approx(1.0, abs=1e-9) and s.iou == 1.0
    assert s.ignored_fraction == pytest.approx(ignore.mean())
    plain = Scorer(get_protocol("standard")).add("x", pred, gt)
    assert plain.mae > 0.05                                      # the same map scored on every pixel


def test_scorer_ignore_rules():
    pred, gt, ignore = case()
    with pytest.raises(ValueError, match="cannot score"):
        Scorer(get_protocol("paper")).add("x", pred, gt, ignore)  # the paper protocol stays as it is
    with pytest.raises(ValueError, match="differs"):
        Scorer(get_protocol("standard")).add("x", pred, gt, ignore[:-1])
    with pytest.raises(ValueError, match="every pixel"):
        Scorer(get_protocol("standard")).add("x", pred, gt, np.ones_like(ignore))
    # a prediction of another size is resized before the undetermined pixels are dropped
    small = np.asarray(Image.fromarray(pred.astype(np.float32), "F").resize((25, 20), Image.BILINEAR))
    s = Scorer(get_protocol("standard")).add("x", small, gt, ignore)
    assert s.resized_from == (20, 25) and s.height == 40


@pytest.fixture
def folders(tmp_path):
    pred, gt, ignore = case(1)
    for sub, arr in (("pred", (pred * 255).round()), ("gt", gt * 255), ("ignore", ignore * 255)):
        (tmp_path / sub).mkdir()
        Image.fromarray(arr.astype(np.uint8)).save(tmp_path / sub / "a.png")
    return tmp_path


def test_evaluate_maps_with_ignore_folder(folders):
    rep = evaluate_maps(folders / "pred", folders / "gt", protocol="standard", ignore_dir=folders / "ignore")
    assert rep.mae == 0 and rep.iou == 1.0
    with pytest.raises(ValueError, match="standard"):
        evaluate_maps(folders / "pred", folders / "gt", ignore_dir=folders / "ignore")
    (folders / "ignore" / "a.png").rename(folders / "ignore" / "b.png")
    with pytest.raises(EvaluationInputError, match="ignore mask not found"):
        evaluate_maps(folders / "pred", folders / "gt", protocol="standard", ignore_dir=folders / "ignore")


def test_cli_evaluate_ignore(folders):
    args = ["evaluate", "--pred", str(folders / "pred"), "--gt", str(folders / "gt"), "--ignore",
            str(folders / "ignore"), "--json"]
    res = CliRunner().invoke(app, args + ["--protocol", "standard"])
    assert res.exit_code == 0, res.output
    assert '"mae": 0.0' in res.output
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "standard" in res.output and "Traceback" not in res.output


def test_losses_ignore_undetermined_pixels():
    torch.manual_seed(0)
    target = torch.zeros(2, 1, 16, 16)
    target[..., :8] = 1
    valid = torch.ones_like(target)
    valid[..., 4:12, 4:12] = 0
    logit = torch.randn_like(target, requires_grad=True)
    other = logit.detach().clone()
    other[valid == 0] = torch.randn(int((valid == 0).sum())) * 5  # change only undetermined pixels
    for fn in (lambda x: dbd_loss(x, target, valid=valid), lambda x: dof_edge_loss(x, target, valid=valid)):
        assert torch.allclose(fn(logit), fn(other))
    loss = dbd_loss(logit, target, valid=valid)
    loss.backward()
    assert (logit.grad[valid == 0] == 0).all() and (logit.grad[valid == 1] != 0).any()
    # all pixels valid: the reference loss
    ones = torch.ones_like(target)
    assert torch.allclose(dbd_loss(logit, target, valid=ones), dbd_loss(logit, target))
    assert torch.allclose(dof_edge_loss(logit, target, valid=ones), dof_edge_loss(logit, target))
    total, _ = DBDLoss()(logit, [logit[..., ::2, ::2]], target, valid)
    assert torch.isfinite(total)


def test_training_passes_the_valid_map_only_when_needed():
    from defocus.engine.stages import valid_of

    t = torch.ones(1, 1, 4, 4)
    assert valid_of({"target": t}) is None and valid_of({"target": t, "valid": t}) is None
    v = t.clone()
    v[..., 0, 0] = 0
    assert valid_of({"target": t, "valid": v}) is v
