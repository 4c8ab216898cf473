"""Metrics and protocols: hand-computed cases, the reference's quirks, threshold sweeps, resizing, properties."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from defocus.metrics import (
    PROTOCOLS,
    Scorer,
    adaptive_fbeta,
    adaptive_threshold,
    binarize,
    fbeta,
    fbeta_from_counts,
    fbeta_score,
    get_protocol,
    iou,
    mae,
    positive_mask,
    pr_counts,
    pr_curve,
    resize_bilinear,
    resize_nearest,
)


def all_blur_f(pi: float) -> float:
    """F of an all-positive prediction when a fraction pi of the pixels is positive (method.md §6.3)."""
    return 1.3 * pi / (0.3 * pi + 1)


# ---------------------------------------------------------------- hand-computed cases

def test_perfect_prediction():
    gt = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    pred = gt.astype(float)
    assert mae(pred, gt) == 0.0
    assert fbeta(pred, gt) == pytest.approx(1.0)
    assert iou(pred, gt) == 1.0
    assert fbeta(pred, gt, positive="in-focus") == pytest.approx(1.0)


def test_hand_computed_f_and_iou():
    # 8 pixels; blur (positive) = gt False. GT blur at 0..3; predicted blur at 1, 2, 4.
    gt = np.array([0, 0, 0, 0, 1, 1, 1, 1], dtype=bool)[None]
    pred = np.array([0.9, 0.1, 0.2, 0.7, 0.3, 0.8, 0.6, 1.0])[None]
    # P = 2/3, R = 1/2, F = 1.3 * (1/3) / (0.3 * 2/3 + 1/2)
    expected_f = 1.3 * (2 / 3) * 0.5 / (0.3 * 2 / 3 + 0.5)
    assert fbeta(pred, gt) == pytest.approx(expected_f, abs=1e-9)
    assert expected_f == pytest.approx(0.6190476, abs=1e-6)
    assert iou(pred, gt) == pytest.approx(2 / 5)
    assert mae(pred, gt) == pytest.approx(np.mean([0.9, 0.1, 0.2, 0.7, 0.7, 0.2, 0.4, 0.0]))
    # in-focus positive: GT in focus 4..7, predicted in focus 0, 3, 5, 6, 7 -> TP 3, P 3/5, R 3/4
    p, r = 3 / 5, 3 / 4
    assert fbeta(pred, gt, positive="in-focus") == pytest.approx(1.3 * p * r / (0.3 * p + r), abs=1e-9)
    assert iou(pred, gt, positive="in-focus") == pytest.approx(3 / 6)


def test_inverted_prediction_scores_the_floor_in_the_paper_protocol():
    gt = np.zeros((4, 4), dtype=bool)
    gt[0, :] = True                       # 12 of 16 pixels blur: pi = 0.75
    pred = (~gt).astype(float)            # exactly wrong
    assert mae(pred, gt) == 1.0
    assert fbeta(pred, gt) == 0.0
    assert fbeta(pred, gt, floor=True) == pytest.approx(all_blur_f(0.75), abs=1e-9)
    assert all_blur_f(0.75) == pytest.approx(0.7959184, abs=1e-6)
    assert iou(pred, gt) == 0.0


def test_all_blur_mask_makes_the_paper_f_equal_one_whatever_the_prediction():
    gt = np.zeros((3, 5), dtype=bool)
    wrong = np.ones((3, 5))               # everything predicted in focus
    assert fbeta(wrong, gt, floor=True) == pytest.approx(1.0)
    assert fbeta(wrong, gt, floor=False) == 0.0
    assert iou(wrong, gt) == 0.0


def test_mask_without_blur_scores_zero_even_when_perfect():
    gt = np.ones((3, 3), dtype=bool)
    perfect = np.ones((3, 3))
    assert fbeta(perfect, gt, floor=True) == 0.0
    assert fbeta(perfect, gt, floor=False) == 0.0
    assert math.isnan(iou(perfect, gt))
    assert iou(perfect, gt, empty=1.0) == 1.0


def test_threshold_rules_differ_only_at_exactly_one_half():
    pred = np.array([[0.5, 0.4999, 0.5001]])
    assert binarize(pred).tolist() == [[True, False, True]]                    # F rule: >= 0.5 is in focus
    assert binarize(pred, inclusive=False).tolist() == [[False, False, True]]  # IoU rule: > 0.5
    gt = np.array([[True, False, True]])                                       # blur only at the middle pixel
    assert fbeta(pred, gt, floor=False) == pytest.approx(1.0)                  # F: 0.5 is in focus, not blur
    assert iou(pred, gt) == pytest.approx(0.5)                                 # IoU: 0.5 is blur
    assert iou(pred, np.array([[False, False, True]])) == pytest.approx(1.0)


def test_fbeta_from_counts_matches_the_closed_form():
    tp, n_pred, n_gt = np.array([3, 0, 5]), np.array([4, 0, 10]), np.array([6, 7, 5])
    f = fbeta_from_counts(tp, n_pred, n_gt)
    np.testing.assert_allclose(f, [1.3 * 3 / (0.3 * 6 + 4), 0.0, 1.3 * 5 / (0.3 * 5 + 10)], rtol=1e-9)


def test_floor_equals_the_reference_threshold_sweep_on_binary_maps():
    """method.md §6.3: max over linspace(0, 1, 255) of F of the binary blur map == max(F(binary), F(all blur))."""
    rng = np.random.default_rng(0)
    for _ in range(20):
        gt_pos = rng.random((12, 9)) < rng.random()
        pred_pos = rng.random((12, 9)) < rng.random()
        _, tp, n_pred, n_gt = pr_counts(pred_pos.astype(float), gt_pos)
        assert fbeta_score(pred_pos, gt_pos, floor=True) == pytest.approx(fbeta_from_counts(tp, n_pred, n_gt).max())


# ---------------------------------------------------------------- sweeps

def naive_pr(scores, gt_pos, thresholds):
    tp = np.array([np.sum((scores >= t) & gt_pos) for t in thresholds])
    n_pred = np.array([np.sum(scores >= t) for t in thresholds])
    return tp, n_pred


def test_pr_counts_match_a_loop_over_thresholds():
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 256, (30, 20)) / 255.0
    scores[0, :5] = [0.0, 1.0, 0.5, 1 / 254, 127 / 254]   # values on the thresholds themselves
    gt_pos = rng.random((30, 20)) < 0.4
    th, tp, n_pred, n_gt = pr_counts(scores, gt_pos, 255)
    np.testing.assert_array_equal(th, np.linspace(0, 1, 255))
    ref_tp, ref_pred = naive_pr(scores, gt_pos, th)
    np.testing.assert_array_equal(tp, ref_tp)
    np.testing.assert_array_equal(n_pred, ref_pred)
    assert n_gt == gt_pos.sum()


def test_pr_counts_256_levels():
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 256, (25, 25))
    gt_pos = rng.random((25, 25)) < 0.5
    th, tp, n_pred, _ = pr_counts(levels / 255.0, gt_pos, 256)
    assert len(th) == 256
    np.testing.assert_array_equal(n_pred, [np.sum(levels >= k) for k in range(256)])
    np.testing.assert_array_equal(tp, [np.sum((levels >= k) & gt_pos) for k in range(256)])


def test_pr_curve_end_points_and_positive_class():
    gt = np.array([[True, False, False, False]])
    pred = np.array([[0.9, 0.2, 0.6, 0.0]])
    th, p, r = pr_curve(pred, gt)                 # blur scores 0.1, 0.8, 0.4, 1.0; blur GT at 1, 2, 3
    assert p[0] == pytest.approx(3 / 4) and r[0] == pytest.approx(1.0)     # threshold 0: everything positive
    assert p[-1] == pytest.approx(1.0) and r[-1] == pytest.approx(1 / 3)   # threshold 1: only the 1.0 score
    _, p_in, r_in = pr_curve(pred, gt, positive="in-focus")
    assert p_in[0] == pytest.approx(1 / 4) and r_in[-1] == 0.0


def test_adaptive_threshold_and_f():
    pred = np.array([[1.0, 1.0, 0.8, 0.0]])       # blur scores 0, 0, 0.2, 1 -> mean 0.3 -> threshold 0.6
    gt = np.array([[True, True, True, False]])
    assert adaptive_threshold(1 - pred) == pytest.approx(0.6)
    assert adaptive_fbeta(pred, gt) == pytest.approx(1.0)
    assert adaptive_threshold(np.ones(3)) == 1.0  # capped at 1


# ---------------------------------------------------------------- resizing

@pytest.mark.parametrize("src,dst", [((2, 3), (5, 7)), ((320, 320), (427, 640)), ((9, 13), (4, 5)),
                                     ((320, 320), (950, 277)), ((7, 7), (7, 7))])
def test_nearest_resize_matches_pytorch(src, dst):
    a = np.random.default_rng(3).random(src).astype(np.float32)
    ref = F.interpolate(torch.from_numpy(a)[None, None], size=dst, mode="nearest")[0, 0].numpy()
    np.testing.assert_array_equal(resize_nearest(a, dst), ref)


def test_bilinear_resize_keeps_constant_maps_and_range():
    assert np.allclose(resize_bilinear(np.full((4, 6), 0.25), (9, 3)), 0.25)
    out = resize_bilinear(np.eye(5), (17, 11))
    assert out.shape == (17, 11) and out.min() >= 0 and out.max() <= 1


# ---------------------------------------------------------------- protocols and the scorer

def test_protocol_presets_and_overrides():
    assert get_protocol("paper") is PROTOCOLS["paper"]
    paper = get_protocol("paper")
    assert (paper.resize, paper.fbeta_floor, paper.no_positive, paper.ebd_iou_size) == ("nearest", True, "zero", 320)
    assert get_protocol("paper_external").fbeta_floor is False
    std = get_protocol("standard")
    assert (std.resize, std.fbeta_floor, std.no_positive) == ("bilinear", False, "exclude")
    assert get_protocol("paper", fbeta_floor=False).fbeta_floor is False
    with pytest.raises(ValueError, match="unknown protocol"):
        get_protocol("nope")
    with pytest.raises(ValueError, match="no_positive"):
        paper.replace(no_positive="ignore")
    assert paper.iou_size_for("ebd1305") == 320 and paper.iou_size_for("dut-te") is None
    assert [paper.iou_size_for(n) for n in ("EBD(300)", "EBD-1305", "ebd", "webdata", "ebdx", None)] == \
        [320, 320, 320, None, None, None]
    assert std.iou_size_for("EBD") is None


def test_scorer_pools_iou_and_averages_f_per_image():
    s = Scorer(get_protocol("paper"))
    gt1 = np.zeros((2, 2), bool)
    gt1[0, 0] = True                                  # 3 blur pixels
    s.add("a", gt1.astype(float), gt1)                # perfect
    gt2 = np.zeros((2, 4), bool)                      # 8 blur pixels
    pred2 = np.zeros((2, 4))
    pred2[:, :2] = 1.0                                # predicts 4 blur, all correct
    s.add("b", pred2, gt2)
    out = s.summary()
    assert out["n"] == 2
    assert out["iou"] == pytest.approx((3 + 4) / (3 + 8))          # pooled, not the mean of 1 and 0.5
    assert out["iou_mean"] == pytest.approx(0.75)
    f_b = max(1.3 * 1 * 0.5 / (0.3 + 0.5), all_blur_f(1.0))         # the floor wins: all pixels blur
    assert out["fbeta"] == pytest.approx((1.0 + f_b) / 2)
    assert out["mae"] == pytest.approx((0 + 0.5) / 2)


def test_scorer_resizes_predictions_to_the_mask_and_counts_them():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True
    small = np.array([[1.0, 0.0], [0.0, 0.0]])
    for name in ("paper", "standard"):
        s = Scorer(get_protocol(name))
        score = s.add("x", small, gt)
        assert score.resized_from == (2, 2)
        assert s.summary()["n_resized"] == 1
    s = Scorer(get_protocol("paper"))
    assert s.add("x", small, gt).mae == 0.0                       # nearest: exact blocks
    s = Scorer(get_protocol("standard"))
    assert s.add("x", small, gt).mae > 0.0                        # bilinear: soft edges


def test_no_positive_policies():
    gt = np.ones((3, 3), bool)                                     # no blur pixel
    perfect, wrong = np.ones((3, 3)), np.zeros((3, 3))
    zero = Scorer(get_protocol("paper"))
    zero.add("p", perfect, gt)
    assert zero.summary()["fbeta"] == 0.0 and zero.summary()["n_no_positive"] == 1
    excl = Scorer(get_protocol("standard"))
    excl.add("p", perfect, gt)
    keep_gt = np.zeros((3, 3), bool)
    excl.add("q", wrong, keep_gt)
    out = excl.summary()
    assert out["fbeta"] == pytest.approx(1.0) and out["iou_mean"] == pytest.approx(1.0)   # only "q" counted
    assert out["mae"] == pytest.approx(0.0) and out["n"] == 2                            # MAE keeps both
    assert excl.images[0].no_positive and math.isnan(excl.images[0].fbeta)
    perf = Scorer(get_protocol("standard", no_positive="perfect"))
    assert perf.add("p", perfect, gt).fbeta == 1.0
    assert perf.add("w", wrong, gt).fbeta == 0.0


def test_ebd_iou_is_computed_at_320():
    gt = np.zeros((640, 960), bool)
    gt[:, :481] = True                               # the 320-grid keeps column 480 (odd source index pattern)
    pred = np.zeros((640, 960))
    pred[:, :480] = 1.0
    full = Scorer(get_protocol("paper"), dataset="dut-te")
    full.add("x", pred, gt)
    ebd = Scorer(get_protocol("paper"), dataset="ebd")
    ebd.add("x", pred, gt)
    gt320, pred320 = resize_nearest(~gt, (320, 320)), resize_nearest(pred <= 0.5, (320, 320))
    assert ebd.pooled_iou == pytest.approx((gt320 & pred320).sum() / (gt320 | pred320).sum())
    assert full.pooled_iou == pytest.approx(479 / 480)
    assert ebd.pooled_iou != pytest.approx(full.pooled_iou)


def test_scorer_curves_summary():
    rng = np.random.default_rng(4)
    s = Scorer(get_protocol("paper"), curves=True)
    for i in range(3):
        gt = rng.random((10, 10)) < 0.5
        s.add(str(i), np.clip(gt + rng.normal(0, 0.3, gt.shape), 0, 1), gt)
    c = s.curve_summary()
    assert c.n == 3 and len(c.thresholds) == 255
    assert c.max_f == pytest.approx(c.fbeta.max()) and 0 < c.mean_f <= c.max_f <= 1
    assert set(s.summary()) >= {"max_f", "mean_f", "adaptive_f"}


# ---------------------------------------------------------------- properties

masks_and_maps = st.integers(1, 8).flatmap(lambda h: st.integers(1, 8).flatmap(lambda w: st.tuples(
    arrays(np.uint8, (h, w)), arrays(bool, (h, w)))))


@settings(max_examples=60, deadline=None)
@given(arrays(bool, st.tuples(st.integers(1, 8), st.integers(1, 8))), st.sampled_from(["blur", "in-focus"]))
def test_property_perfect_prediction(gt, positive):
    pred = gt.astype(float)
    assert mae(pred, gt) == 0.0
    if positive_mask(gt, positive).any():
        assert fbeta(pred, gt, positive=positive) == pytest.approx(1.0)
        assert iou(pred, gt, positive=positive) == 1.0


@settings(max_examples=60, deadline=None)
@given(masks_and_maps)
def test_property_mae_symmetric_and_polarity_free(pair):
    levels, gt = pair
    pred = levels / 255.0
    assert mae(pred, gt) == pytest.approx(mae(gt.astype(float), pred))
    assert mae(pred, gt) == pytest.approx(mae((255 - levels) / 255.0, ~gt))


@settings(max_examples=60, deadline=None)
@given(masks_and_maps, st.booleans(), st.sampled_from(["blur", "in-focus"]))
def test_property_scores_in_range(pair, floor, positive):
    levels, gt = pair
    pred = levels / 255.0
    assert 0.0 <= fbeta(pred, gt, positive=positive, floor=floor) <= 1.0
    assert 0.0 <= mae(pred, gt) <= 1.0
    v = iou(pred, gt, positive=positive, empty=0.0)
    assert 0.0 <= v <= 1.0
    # the floor never lowers F
    assert fbeta(pred, gt, positive=positive, floor=True) >= fbeta(pred, gt, positive=positive) - 1e-12


@settings(max_examples=40, deadline=None)
@given(masks_and_maps)
def test_property_blur_positive_equals_in_focus_positive_of_the_inverted_problem(pair):
    levels, gt = pair
    pred = levels / 255.0
    inv = (255 - levels) / 255.0
    # scoring blur on (pred, gt) is scoring "in focus" on the inverted maps (no map value sits at 0.5 exactly)
    assert fbeta(pred, gt, floor=True) == pytest.approx(fbeta(inv, ~gt, positive="in-focus", floor=True))
    assert iou(pred, gt, empty=0.0) == pytest.approx(iou(inv, ~gt, positive="in-focus", empty=0.0))
