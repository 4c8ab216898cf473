"""DOF-edge loss, deep supervision and depth losses against values worked out by hand / with plain NumPy."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from defocus.losses import (DBDLoss, dbd_loss, depth_loss, depth_target, dof_edge_loss, label_edges, laplacian,
                            soft_edges)

# Border responses of the Laplacian on a constant map c with zero padding: corner 3c - 8c, edge 5c - 8c, inside 0.
CORNER_EP = 2.5 ** 2 / (2.5 ** 2 + 1)   # |g| = 2.5 at the 4 corners of a 0.5-constant map
EDGE_EP = 1.5 ** 2 / (1.5 ** 2 + 1)     # |g| = 1.5 at the 8 non-corner border pixels


def t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def np_edge_dice(z: np.ndarray, y: np.ndarray, alpha=1.0, smooth=1.0, pad="zeros") -> np.ndarray:
    """Independent NumPy reference: explicit 3x3 neighbourhood sums, per-sample Dice (B,H,W inputs)."""
    out = []
    for zb, yb in zip(z, y):
        p = 1.0 / (1.0 + np.exp(-zb.astype(np.float64)))
        mode = "constant" if pad == "zeros" else "edge"
        pp, yy = np.pad(p, 1, mode=mode), np.pad(yb.astype(np.float64), 1, mode=mode)
        h, w = zb.shape
        g = np.zeros((h, w))
        ly = np.zeros((h, w))
        for i in range(h):
            for j in range(w):
                g[i, j] = pp[i:i + 3, j:j + 3].sum() - 9 * pp[i + 1, j + 1]
                ly[i, j] = yy[i:i + 3, j:j + 3].sum() - 9 * yy[i + 1, j + 1]
        ep = g ** 2 / (g ** 2 + alpha)
        ey = (ly != 0).astype(np.float64)
        out.append(1 - (2 * (ep * ey).sum() + smooth) / ((ep ** 2).sum() + (ey ** 2).sum() + smooth))
    return np.array(out)


def test_laplacian_kernel_on_a_point():
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 1] = 1.0
    r = laplacian(x)[0, 0]
    expected = torch.ones(3, 3)
    expected[1, 1] = -8
    assert torch.equal(r, expected)


def test_zero_logits_zero_label_by_hand():
    z = torch.zeros(1, 1, 4, 4)
    y = torch.zeros(1, 1, 4, 4)
    ep = soft_edges(z)[0, 0]
    assert ep[0, 0].item() == pytest.approx(CORNER_EP, rel=1e-6)
    assert ep[0, 1].item() == pytest.approx(EDGE_EP, rel=1e-6)
    assert ep[1, 1].item() == 0.0
    dice = 1 - 1 / (4 * CORNER_EP ** 2 + 8 * EDGE_EP ** 2 + 1)
    assert dof_edge_loss(z, y).item() == pytest.approx(dice, rel=1e-6)
    assert dbd_loss(z, y).item() == pytest.approx(math.log(2) + 0.5 * dice, rel=1e-6)
    assert dbd_loss(z, y, beta=0).item() == pytest.approx(math.log(2), rel=1e-6)


def test_all_in_focus_label_marks_the_frame_with_zero_padding():
    z = torch.zeros(1, 1, 4, 4)
    y = torch.ones(1, 1, 4, 4)
    ey = label_edges(y)[0, 0]
    frame = torch.ones(4, 4)
    frame[1:3, 1:3] = 0
    assert torch.equal(ey, frame)   # corner response 3-8, edge 5-8, inside 8-8
    inter = 4 * CORNER_EP + 8 * EDGE_EP
    dice = 1 - (2 * inter + 1) / (4 * CORNER_EP ** 2 + 8 * EDGE_EP ** 2 + 12 + 1)
    assert dof_edge_loss(z, y).item() == pytest.approx(dice, abs=1e-6)
    # the clean option: a constant map has no edges anywhere, so the Dice is 1 - 1/1 = 0
    assert label_edges(y, "replicate").sum().item() == 0
    assert dof_edge_loss(z, y, padding="replicate").item() == 0.0


def test_centre_block_label_is_edge_everywhere_on_4x4():
    y = torch.zeros(1, 1, 4, 4)
    y[..., 1:3, 1:3] = 1
    assert label_edges(y).sum().item() == 16


def test_bce_by_hand():
    z = t([[[[2.0, -1.0], [0.0, 3.0]]]])
    y = t([[[[1.0, 0.0], [1.0, 0.0]]]])
    bce = (math.log1p(math.exp(-2)) + math.log1p(math.exp(-1)) + math.log(2) + math.log1p(math.exp(3))) / 4
    assert dbd_loss(z, y, beta=0).item() == pytest.approx(bce, rel=1e-6)


@pytest.mark.parametrize("pad", ["zeros", "replicate"])
def test_edge_loss_matches_numpy_reference(pad):
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(3, 4, 4)).astype(np.float32)
    y = np.zeros((3, 4, 4), np.float32)
    y[0, :2] = 1
    y[1, 1:3, 1:3] = 1
    y[2] = rng.random((4, 4)) > 0.5
    per = np_edge_dice(z, y, pad=pad)
    zt, yt = t(z)[:, None], t(y)[:, None]
    assert dof_edge_loss(zt, yt, padding=pad).item() == pytest.approx(per.sum(), rel=1e-5)
    assert dof_edge_loss(zt, yt, padding=pad, reduction="mean").item() == pytest.approx(per.mean(), rel=1e-5)
    alpha = np_edge_dice(z, y, alpha=0.01, smooth=1.0, pad=pad)
    assert dof_edge_loss(zt, yt, alpha=0.01, padding=pad).item() == pytest.approx(alpha.sum(), rel=1e-5)


def test_edge_loss_is_summed_over_the_batch_by_default():
    rng = np.random.default_rng(1)
    z = t(rng.normal(size=(1, 1, 4, 4)))
    y = t(rng.random((1, 1, 4, 4)) > 0.5)
    one = dof_edge_loss(z, y).item()
    two = dof_edge_loss(z.repeat(2, 1, 1, 1), y.repeat(2, 1, 1, 1))
    assert two.item() == pytest.approx(2 * one, rel=1e-6)
    assert dof_edge_loss(z.repeat(2, 1, 1, 1), y.repeat(2, 1, 1, 1), reduction="mean").item() == \
        pytest.approx(one, rel=1e-6)


def test_deep_supervision_weights_and_side_upsampling():
    y = torch.zeros(1, 1, 4, 4)
    z = torch.zeros(1, 1, 4, 4)
    sides = [torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 4, 4)]
    single = math.log(2) + 0.5 * (1 - 1 / (4 * CORNER_EP ** 2 + 8 * EDGE_EP ** 2 + 1))
    total, parts = DBDLoss()(z, sides, y)
    assert total.item() == pytest.approx(5 * single, rel=1e-6)
    assert set(parts) == {"final", "side1", "side2", "side3", "side4"}
    total2, _ = DBDLoss(final_weight=1.1)(z, sides, y)
    assert total2.item() == pytest.approx(5.1 * single, rel=1e-6)
    total3, _ = DBDLoss(beta=0.0)(z, sides, y)
    assert total3.item() == pytest.approx(5 * math.log(2), rel=1e-6)


def test_side_upsampling_is_bilinear_without_corner_alignment():
    y = torch.ones(1, 1, 4, 4)
    side = t([[[[0.0, 4.0]]]])   # 1x2 -> 4x4, align_corners=False: columns 0, 1, 3, 4
    cols = torch.tensor([0.0, 1.0, 3.0, 4.0])
    up = cols.view(1, 1, 1, 4).expand(1, 1, 4, 4)
    loss = DBDLoss()
    _, parts = loss(torch.zeros(1, 1, 4, 4), [side], y)
    assert parts["side1"].item() == pytest.approx(loss.single(up, y).item(), rel=1e-6)


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match="edge_reduction"):
        DBDLoss(edge_reduction="max")
    with pytest.raises(ValueError, match="padding"):
        laplacian(torch.zeros(1, 1, 3, 3), "reflect")
    with pytest.raises(ValueError, match="depth loss"):
        depth_loss([torch.zeros(1, 1, 2, 2)], torch.zeros(1, 1, 2, 2), kind="huber")


def test_depth_target_min_max_per_image():
    d = t([[[[1.0, 3.0], [5.0, 9.0]]], [[[2.0, 2.0], [2.0, 2.0]]]])
    out = depth_target(d, (2, 2))
    assert torch.allclose(out[0, 0], t([[0.0, 0.25], [0.5, 1.0]]))
    assert torch.equal(out[1], torch.zeros(1, 2, 2))   # a constant map has no range


def test_depth_loss_l1_l2_by_hand():
    target = t([[[[0.0, 1.0], [0.5, 0.5]]]])
    pred = [t([[[[0.5, 0.5], [0.5, 0.5]]]]), t([[[[0.0]]]])]   # second output upsampled to a 0.0 map
    l1, parts = depth_loss(pred, target, "l1", activation="none")
    assert parts["depth1"].item() == pytest.approx((0.5 + 0.5 + 0 + 0) / 4)
    assert parts["depth2"].item() == pytest.approx((0 + 1 + 0.5 + 0.5) / 4)
    assert l1.item() == pytest.approx(0.25 + 0.5)
    l2, _ = depth_loss(pred, target, "l2", activation="none")
    assert l2.item() == pytest.approx((0.25 + 0.25) / 4 + (1 + 0.25 + 0.25) / 4)
    sig, _ = depth_loss([torch.zeros(1, 1, 2, 2)], target, "l1")   # sigmoid(0) = 0.5
    assert sig.item() == pytest.approx(0.25)
