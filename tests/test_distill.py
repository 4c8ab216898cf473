"""Feature distillation pieces (method.md §4.2-§4.4) against hand-computed values."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from defocus.distill import (
    Projectors,
    channel_normalize,
    distill_lambda,
    feature_distance,
    feature_distillation_loss,
)

EPS = 1e-6


def pixels(*columns):
    """A (1, C, 1, W) map whose w-th pixel holds the channel vector ``columns[w]``."""
    return torch.tensor(columns, dtype=torch.float32).t().reshape(1, len(columns[0]), 1, len(columns))


def test_projectors_shapes_bias_and_xavier_normal_init():
    torch.manual_seed(0)
    proj = Projectors([512, 256, 128, 64], [2048, 1024, 512, 256])
    assert [c.bias for c in proj.convs] == [None] * 4
    assert [tuple(c.weight.shape) for c in proj.convs] == [(2048, 512, 1, 1), (1024, 256, 1, 1), (512, 128, 1, 1),
                                                           (256, 64, 1, 1)]
    for conv in proj.convs:
        want = math.sqrt(2.0 / (conv.in_channels + conv.out_channels))  # Xavier-normal std of a 1x1 conv
        assert abs(conv.weight.std().item() / want - 1) < 0.05
        assert abs(conv.weight.mean().item()) < 0.1 * want
    feats = [torch.randn(2, c, s, s) for c, s in zip([512, 256, 128, 64], [2, 4, 8, 16])]
    out = proj(feats)
    assert [tuple(o.shape) for o in out] == [(2, 2048, 2, 2), (2, 1024, 4, 4), (2, 512, 8, 8), (2, 256, 16, 16)]
    torch.testing.assert_close(out[3], torch.einsum("oc,bchw->bohw", proj.convs[3].weight[:, :, 0, 0], feats[3]))
    with pytest.raises(ValueError):
        proj(feats[:3])
    with pytest.raises(ValueError):
        Projectors([1, 2], [1, 2, 3])


def test_channel_normalize_by_hand():
    x = pixels([3.0, 4.0], [0.0, 0.0])
    n = channel_normalize(x)
    torch.testing.assert_close(n[0, :, 0, 0], torch.tensor([3.0, 4.0]) / math.sqrt(25 + EPS))
    assert torch.equal(n[0, :, 0, 1], torch.zeros(2))  # eps keeps an all-zero pixel finite
    torch.testing.assert_close(channel_normalize(x, eps=11.0)[0, :, 0, 0], torch.tensor([0.5, 2 / 3]))


def test_feature_distance_by_hand():
    # Pixel 1: orthogonal unit vectors -> 2/(1+eps); pixel 2: identical -> 0; mean over the two pixels.
    a = pixels([1.0, 0.0], [2.0, 2.0])
    b = pixels([0.0, 1.0], [1.0, 1.0])
    torch.testing.assert_close(feature_distance(a, b), torch.tensor(1.0 / (1 + EPS)))
    # Opposite vectors: |n - (-n)|^2 = 4; batch of two (4 and 0) -> mean 2.
    a2 = torch.cat([pixels([0.0, 5.0]), pixels([1.0, 1.0])])
    b2 = torch.cat([pixels([0.0, -2.0]), pixels([3.0, 3.0])])
    torch.testing.assert_close(feature_distance(a2, b2), torch.tensor(2.0), atol=1e-5, rtol=0)


def test_feature_distance_is_mean_of_two_minus_two_cosines():
    torch.manual_seed(0)
    a, b = torch.randn(2, 8, 3, 5) * 4, torch.randn(2, 8, 3, 5)
    cos = F.cosine_similarity(a, b, dim=1, eps=0)
    torch.testing.assert_close(feature_distance(a, b), (2 - 2 * cos).mean(), atol=1e-5, rtol=1e-5)


def test_teacher_is_resized_bilinearly_to_the_student():
    torch.manual_seed(0)
    student, teacher = torch.randn(1, 4, 3, 5), torch.randn(1, 4, 6, 10)
    resized = F.interpolate(teacher, size=(3, 5), mode="bilinear", align_corners=False)
    torch.testing.assert_close(feature_distance(student, teacher), feature_distance(student, resized))
    # A spatially constant teacher stays constant: the distance is the hand value of pixel-wise orthogonal vectors.
    const = pixels([0.0, 1.0]).expand(1, 2, 4, 4)
    torch.testing.assert_close(feature_distance(pixels([1.0, 0.0], [1.0, 0.0]), const),
                               torch.tensor(2.0 / (1 + EPS)))
    with pytest.raises(ValueError, match="channel mismatch"):
        feature_distance(torch.zeros(1, 3, 2, 2), torch.zeros(1, 4, 2, 2))


def test_gradients_reach_the_student_only():
    s = torch.randn(1, 4, 2, 2, requires_grad=True)
    t = torch.randn(1, 4, 2, 2, requires_grad=True)
    feature_distance(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert t.grad is None


def test_half_precision_does_not_overflow():
    a = torch.full((1, 2048, 2, 2), 100.0, dtype=torch.float16)  # sum of squares 2e7 > float16 max
    d = feature_distance(a, a.clone())
    assert d.dtype == torch.float32 and torch.isfinite(d) and d.item() < 1e-6


def test_loss_sums_the_levels():
    levels_s = [pixels([1.0, 0.0]), pixels([1.0, 0.0], [0.0, 3.0]), pixels([2.0, 0.0])]
    levels_t = [pixels([0.0, 1.0]), pixels([1.0, 0.0], [0.0, 1.0]), pixels([-1.0, 0.0])]
    # 2/(1+eps) + 0 + 4/(1+eps)
    torch.testing.assert_close(feature_distillation_loss(levels_s, levels_t), torch.tensor(6.0 / (1 + EPS)))
    with pytest.raises(ValueError):
        feature_distillation_loss(levels_s, levels_t[:2])


def test_projected_student_against_tiny_depth_teacher(tiny_backbone):
    """Stage-2 wiring: student features -> projectors -> distance to a tiny teacher's features; one projector
    step lowers the loss."""
    from defocus.models import create_model
    from defocus.models.depth import create_depth_teacher

    torch.manual_seed(0)
    student = create_model("dffnet", backbone=tiny_backbone)
    teacher = create_depth_teacher("midas_v21", tiny=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        _, s_feats, _ = student(x)
        t_feats, _ = teacher(x, with_depth=False)
    proj = Projectors([f.shape[1] for f in s_feats], teacher.channels)
    opt = torch.optim.Adam(proj.parameters(), lr=0.1, weight_decay=5e-4)
    loss0 = feature_distillation_loss(proj(s_feats), t_feats)
    opt.zero_grad()
    loss0.backward()
    opt.step()
    loss1 = feature_distillation_loss(proj(s_feats), t_feats)
    assert 0 < loss1.item() < loss0.item() <= 4 * 4


def test_lambda_table():
    table = {e: distill_lambda(e) for e in range(1, 76)}
    assert all(table[e] == 3.0 for e in range(1, 15))
    assert table[15] == 0.0
    assert table[16] == pytest.approx(0.05)
    assert table[45] == pytest.approx(1.5)
    assert table[74] == pytest.approx(2.95)
    assert table[75] == pytest.approx(3.0)
    assert distill_lambda(9, epochs=20, switch=10, value=1.0) == 1.0
    assert distill_lambda(15, epochs=20, switch=10, value=1.0) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        distill_lambda(20, epochs=10, switch=15)
