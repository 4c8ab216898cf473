"""Building blocks of the training-free methods: LBP codes, box and guided filters, DCT coefficients,
matting, multi-scale inference."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.fft import dctn

from defocus.classical import lbp_riu2_codes, lbp_sharpness, local_entropy, sorted_high_frequency
from defocus.classical._filters import (box_mean, box_sum, domain_transform_filter, guided_filter, guided_upsample,
                                       resize)
from defocus.classical._inference import multiscale_beliefs
from defocus.classical.hifst import hifst_map


def patch(center: float, neighbours) -> np.ndarray:
    """3x3 image: ``neighbours`` counter-clockwise from the right (right, top-right, top, ... bottom-right)."""
    n = list(neighbours)
    return np.array([[n[3], n[2], n[1]],
                     [n[4], center, n[0]],
                     [n[5], n[6], n[7]]], dtype=np.float64)


def centre_code(img: np.ndarray, threshold: float = 0.016, comparison: str = "signed") -> int:
    return int(lbp_riu2_codes(img, threshold, comparison)[1, 1])


def test_lbp_codes_flat_spot_and_edge():
    assert centre_code(np.full((3, 3), 0.5)) == 0
    # the signed comparison of the authors' code: only brighter neighbours set bits
    assert centre_code(patch(0.5, [0.9] * 8)) == 8
    assert centre_code(patch(0.5, [0.1] * 8)) == 0
    # the paper's absolute difference makes bright and dark spots alike
    assert centre_code(patch(0.5, [0.1] * 8), comparison="absolute") == 8
    # a step edge through the centre (right half brighter): one run of set bits -> uniform, 3 bits
    assert centre_code(patch(0.5, [0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9])) == 3
    # two separate runs of set bits are not uniform -> 9
    assert centre_code(patch(0.5, [0.9, 0.5, 0.5, 0.5, 0.9, 0.5, 0.5, 0.5])) == 9


def test_lbp_threshold_signed_and_absolute():
    below = patch(0.5, [0.5 + 0.015] * 8)
    darker = patch(0.5, [0.5 - 0.02] * 8)
    assert centre_code(below) == 0
    assert centre_code(below, threshold=0.01) == 8
    assert centre_code(darker) == 0
    assert centre_code(darker, comparison="absolute") == 8
    # 4 gray levels above the centre do not exceed 0.016 * 255 = 4.08, 5 do (the authors' uint8 comparison)
    four = (patch(100, [104] * 8)).astype(np.uint8)
    five = (patch(100, [105] * 8)).astype(np.uint8)
    assert int(lbp_riu2_codes(four)[1, 1]) == 0 and int(lbp_riu2_codes(five)[1, 1]) == 8
    with pytest.raises(ValueError, match="comparison"):
        lbp_riu2_codes(below, comparison="relative")


def test_lbp_diagonals_are_interpolated():
    # only the top-right pixel differs; the diagonal sample is interpolated at (0.707, 0.707) and sees about half
    # of the step, so the bit is set only when the threshold is below that fraction
    img = patch(0.0, [0.0, 0.1, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    assert centre_code(img, threshold=0.04) == 1
    assert centre_code(img, threshold=0.06) == 0


def test_lbp_sharpness_is_the_windowed_fraction_of_codes_6_to_9():
    rng = np.random.default_rng(3)
    img = rng.random((23, 31))
    img[:, :12] = 0.5  # a flat part
    sharp = (lbp_riu2_codes(img) >= 6).astype(float)
    got = lbp_sharpness(img, window=7)
    ref = np.zeros_like(got)
    for y in range(img.shape[0]):
        for x in range(img.shape[1]):
            ref[y, x] = sharp[max(0, y - 3):y + 4, max(0, x - 3):x + 4].mean()
    np.testing.assert_allclose(got, ref, atol=1e-6)
    with pytest.raises(ValueError, match="odd"):
        lbp_sharpness(img, window=8)


def test_box_filters_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.random((2, 17, 13))
    got_sum = box_sum(x, 3, 5)
    got_mean = box_mean(x, 3, 5)
    for b in range(2):
        for y in range(17):
            for c in range(13):
                win = x[b, max(0, y - 3):y + 4, max(0, c - 5):c + 6]
                assert got_sum[b, y, c] == pytest.approx(win.sum())
                assert got_mean[b, y, c] == pytest.approx(win.mean())
    # a window larger than the image sums everything
    np.testing.assert_allclose(box_sum(x[0], 40), x[0].sum())


def test_guided_filter_keeps_edges_and_flattens_noise():
    guide = np.zeros((40, 40), np.float32)
    guide[:, 20:] = 1.0
    noisy = guide + np.random.default_rng(0).normal(0, 0.1, guide.shape).astype(np.float32)
    out = guided_filter(guide, noisy, 4, 1e-3)
    assert np.abs(out - guide).mean() < 0.5 * np.abs(noisy - guide).mean()
    assert out[:, 19].mean() < 0.2 and out[:, 20].mean() > 0.8
    up = guided_upsample(guide, resize(guide, (10, 10)), 1, 1e-3)
    assert up.shape == (40, 40)
    assert up[:, 18].mean() < 0.2 and up[:, 21].mean() > 0.8


def test_domain_transform_filter_smooths_within_regions_not_across_edges():
    rng = np.random.default_rng(0)
    guide = np.zeros((40, 60))
    guide[:, 30:] = 1.0                                   # one strong edge in the guide
    src = np.where(guide > 0, 1.0, 0.0) + rng.normal(0, 0.1, guide.shape)
    out = domain_transform_filter(src, guide, sigma_s=15, sigma_r=0.25)
    assert out.dtype == np.float32 and out.shape == src.shape
    assert out[:, :25].std() < 0.3 * src[:, :25].std()   # noise smoothed on each side
    assert out[:, 27].mean() < 0.1 and out[:, 32].mean() > 0.9   # the step survives
    np.testing.assert_allclose(domain_transform_filter(np.full((5, 7), 0.3), guide[:5, :7], 15, 0.25), 0.3,
                               rtol=1e-6)


def test_sorted_high_frequency_matches_a_direct_dct():
    rng = np.random.default_rng(1)
    grad = rng.random((20, 26)).astype(np.float32)
    for m in (7, 15):
        out = sorted_high_frequency(grad, m, stride=3)
        assert out.shape == (7, 9, (m * m + m) // 2)
        padded = np.pad(grad, m // 2, mode="symmetric").astype(np.float64)
        y, x = 6, 9  # grid point (2, 3)
        coeffs = dctn(padded[y:y + m, x:x + m], norm="ortho")
        u, v = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
        np.testing.assert_allclose(out[2, 3], np.sort(np.abs(coeffs[u + v >= m - 1])), atol=1e-5)
        kept = sorted_high_frequency(grad, m, stride=3, keep=5)
        np.testing.assert_allclose(kept, out[..., :5], atol=1e-6)


def test_hifst_grid_approximation_is_close_to_the_exact_transform():
    rng = np.random.default_rng(2)
    from scipy import ndimage

    tex = ndimage.gaussian_filter(rng.random((56, 64)), 1.0)
    tex[:, 32:] = ndimage.gaussian_filter(tex, 3.0)[:, 32:]
    fast = hifst_map(tex, patch_sizes=(7, 15, 31))
    exact = hifst_map(tex, patch_sizes=(7, 15, 31), strides=(1, 1, 1), fusion_stride=1)
    assert np.corrcoef(fast.ravel(), exact.ravel())[0, 1] > 0.97


def test_local_entropy():
    flat = np.full((9, 9), 0.3, np.float32)
    assert local_entropy(flat).max() == 0.0
    halves = np.zeros((9, 9), np.float32)
    halves[:, ::2] = 1.0  # two gray levels in every 7x7 window, nearly balanced
    ent = local_entropy(halves)
    assert 0.9 < ent[4, 4] <= 1.0


def test_multiscale_beliefs_follow_the_evidence_and_remove_specks():
    a = np.zeros((3, 20, 24), np.float32)
    a[:, 5:15, 6:18] = 1.0
    a[1, 2, 2] = 1.0  # isolated speck in one scale
    h = multiscale_beliefs(a, beta=0.5)
    alone = multiscale_beliefs(a, beta=0.0)  # node potentials only
    assert h.shape == a.shape and h.dtype == np.float32
    assert h[:, 8:12, 10:14].min() > 0.9 and h[:, 0, 0].max() < 0.1
    # the neighbours outvote the speck that its own potential alone would keep
    assert alone[1, 2, 2] > 0.5 > h[1, 2, 2]
    np.testing.assert_array_equal(multiscale_beliefs(np.full((3, 4, 5), 0.7)), np.float32(0.7))  # nothing to weigh


def test_multiscale_beliefs_are_exact_on_a_tree():
    # two linked nodes (a chain is a tree: belief propagation gives the exact marginals)
    a = np.array([1.0, 0.0], np.float32).reshape(2, 1, 1)
    x = (a - a.mean()) / a.std()
    beta = 0.5
    pot = {1: np.exp(-np.abs(1 - x.ravel())), 0: np.exp(-np.abs(x.ravel()))}  # label 1 = in focus
    joint = {(l0, l1): pot[l0][0] * pot[l1][1] * (1.0 if l0 == l1 else np.exp(-beta)) for l0 in (0, 1) for l1 in (0, 1)}
    z = sum(joint.values())
    exact = [(joint[(1, 0)] + joint[(1, 1)]) / z, (joint[(0, 1)] + joint[(1, 1)]) / z]
    np.testing.assert_allclose(multiscale_beliefs(a, beta=beta).ravel(), exact, atol=1e-5)


def test_matting_follows_colour_edges():
    pytest.importorskip("pymatting")
    from defocus.matting import matte_from_constraints

    rgb = np.zeros((30, 40, 3))
    rgb[:, :20] = [0.8, 0.2, 0.1]
    rgb[:, 20:] = [0.1, 0.3, 0.9]
    rgb += np.random.default_rng(0).normal(0, 0.01, rgb.shape)
    rgb = np.clip(rgb, 0, 1)
    values = np.zeros((2, 30, 40), np.float32)
    known = np.zeros((2, 30, 40), bool)
    values[0, 15, 5] = 1.0
    known[0, 15, 5] = True
    known[0, 15, 35] = True
    known[1, 3, 3] = True  # one constraint only: the constant solution
    values[1, 3, 3] = 1.0
    alpha = matte_from_constraints(rgb, values, known)
    assert alpha[0, :, :18].min() > 0.9 and alpha[0, :, 22:].max() < 0.1
    assert alpha[0, 15, 5] == 1.0 and alpha[0, 15, 35] == 0.0
    np.testing.assert_array_equal(alpha[1], 1.0)
