"""Edge-aware refinement of a network's map (defocus.matting.refine_map, Predictor(refine=True))."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from defocus import Predictor
from defocus.matting import refine_map
from toys import BrightNet


def two_colour_scene(h=40, w=60, seed=0):
    """Left half red, right half blue (a little noise); a map that is sure of both halves except for a grey blob
    inside the left half and a grey fringe spilling four pixels into the right half."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:, : w // 2] = (0.8, 0.3, 0.2)
    rgb[:, w // 2:] = (0.2, 0.3, 0.8)
    rgb = np.clip(rgb + rng.normal(0, 0.01, rgb.shape), 0, 1).astype(np.float32)
    prob = np.where(np.arange(w) < w // 2, 0.97, 0.03).astype(np.float32)[None].repeat(h, 0)
    blob = (slice(10, 20), slice(8, 18))
    fringe = (slice(None), slice(w // 2, w // 2 + 4))
    prob[blob] = 0.55
    prob[fringe] = 0.5
    return rgb, prob, blob, fringe


def test_unsure_pixels_take_the_values_of_their_colour_region():
    rgb, prob, blob, fringe = two_colour_scene()
    out = refine_map(rgb, prob)
    assert out.dtype == np.float32 and out.shape == prob.shape
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert out[blob].mean() > 0.85                 # the grey inside of the sharp half fills in
    assert out[fringe].mean() < 0.2                # the fringe snaps back to the colour edge
    sure = np.ones(prob.shape, bool)
    sure[blob] = sure[fringe] = False
    assert np.abs(out - prob)[sure].mean() < 0.03  # confident calls stay


def test_a_confident_map_is_kept_and_a_weaker_pull_moves_it_more():
    rgb, prob, blob, _ = two_colour_scene()
    sure = np.where(prob > 0.5, 0.99, 0.01).astype(np.float32)
    assert np.abs(refine_map(rgb, sure) - sure).max() < 0.05
    weak, strong = refine_map(rgb, prob, strength=0.005), refine_map(rgb, prob, strength=5.0)
    assert np.abs(weak - prob)[blob].mean() > np.abs(strong - prob)[blob].mean()


def test_tiny_images_pass_through_and_sizes_must_match():
    prob = np.full((2, 5), 0.5, np.float32)
    np.testing.assert_array_equal(refine_map(np.zeros((2, 5, 3), np.float32), prob), prob)
    with pytest.raises(ValueError, match="differ in size"):
        refine_map(np.zeros((4, 5, 3), np.float32), np.zeros((5, 4), np.float32))


def test_missing_matting_library_gives_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pymatting", None)  # makes `import pymatting` fail
    rgb, prob, _, _ = two_colour_scene()
    with pytest.raises(ImportError, match=r"defocus\[matting\]"):
        refine_map(rgb, prob)


def test_predictor_refines_the_map_of_the_network_input():
    """Predictor(refine=True): refine_map on the network's low-resolution map, guided by the image the network saw
    (a photo at the input size, so no resize stands between the two)."""
    photo = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    photo[:, :32] //= 3                                     # a dark half: BrightNet calls it blurred
    plain = Predictor(BrightNet(), device="cpu", size=64)
    refined = plain.with_options(refine=True)
    p0, p1 = plain.predict(photo), refined.predict(photo)
    np.testing.assert_allclose(p1.prob_lowres, refine_map(photo.astype(np.float32) / 255, p0.prob_lowres),
                               atol=1e-5)
    assert np.abs(p1.prob_lowres - p0.prob_lowres).max() > 1e-3
    assert p1.prob.shape == photo.shape[:2]
    assert refined.settings()["refine"] and not plain.settings()["refine"]
    with pytest.raises(ValueError, match="refine"):
        Predictor(method="lbp", refine=True)


def test_pymatting_retry_notices_go_to_the_debug_log_not_to_stdout(capsys, caplog):
    """Its incomplete Cholesky prints each failed shift; they reach the debug log, and sys.stdout is never
    swapped (a swap is process-wide: threads printing meanwhile lost their output)."""
    import sys

    import scipy.sparse

    from defocus import matting

    pm = matting._import_pymatting()
    stdout = sys.stdout
    with caplog.at_level("DEBUG", logger="defocus.matting"):
        pm.ichol(scipy.sparse.csc_matrix(np.array([[-1.0]])))    # fails at the first shifts, then succeeds
    assert capsys.readouterr().out == "" and sys.stdout is stdout
    assert "PERFORMANCE WARNING" in caplog.text
