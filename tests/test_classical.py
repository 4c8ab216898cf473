"""Training-free methods (LBP, HiFST): polarity, invariances, any input size, real samples."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from defocus.classical import METHODS, lbp_map, lbp_segment, predict_map

NAMES = sorted(METHODS)


def auc(score: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of ``score`` for the boolean ``positive`` (Mann-Whitney, ties averaged)."""
    from scipy.stats import rankdata

    ranks = rankdata(score.ravel())
    pos = positive.ravel()
    n1, n0 = pos.sum(), pos.size - pos.sum()
    return float((ranks[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def disk_blur(img: np.ndarray, radius: int) -> np.ndarray:
    yy, xx = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    kernel = (yy ** 2 + xx ** 2 <= radius ** 2).astype(float)
    return ndimage.convolve(img, kernel / kernel.sum(), mode="reflect")


def half_blurred(blur: str = "gaussian", sharp_side: str = "left", h: int = 96, w: int = 128, seed: int = 0):
    """Textured noise whose one half is defocused; returns (uint8 RGB image, in-focus mask)."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.random((h, w)), 1.0)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    blurred = ndimage.gaussian_filter(texture, 3.0) if blur == "gaussian" else disk_blur(texture, 6)
    in_focus = np.zeros((h, w), dtype=bool)
    if sharp_side == "left":
        in_focus[:, : w // 2] = True
    else:
        in_focus[:, w // 2:] = True
    img = np.where(in_focus, texture, blurred)
    img = 0.2 + 0.6 * img  # leave head-room for the brightness tests
    rgb = np.repeat((img * 255).round().astype(np.uint8)[..., None], 3, axis=2)
    return rgb, in_focus


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("blur,side", [("gaussian", "left"), ("disk", "right")])
def test_in_focus_half_scores_higher(name, blur, side):
    img, in_focus = half_blurred(blur, side)
    sharp = predict_map(name, img)
    assert auc(sharp, in_focus) > 0.9
    assert sharp[in_focus].mean() > sharp[~in_focus].mean() + 0.2


@pytest.mark.parametrize("name", NAMES)
def test_brightness_offset_and_scale(name):
    img, in_focus = half_blurred()
    ref = predict_map(name, img)
    brighter = predict_map(name, (img.astype(np.int16) + 30).astype(np.uint8))
    assert np.abs(brighter - ref).max() < 0.02
    darker = predict_map(name, (img * 0.7).round().astype(np.uint8))
    assert np.corrcoef(ref.ravel(), darker.ravel())[0, 1] > 0.95
    assert auc(darker, in_focus) > 0.9


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (7, 5), (7, 5, 3), (3, 40, 3), (33, 21), (40, 3, 4)])
def test_any_size_and_channels(name, shape):
    img = (np.random.default_rng(1).random(shape) * 255).astype(np.uint8)
    out = predict_map(name, img)
    assert out.shape == shape[:2]
    assert out.dtype == np.float32
    assert np.isfinite(out).all() and out.min() >= 0.0 and out.max() <= 1.0


@pytest.mark.parametrize("name", NAMES)
def test_gray_float_and_rgb_agree(name):
    img, _ = half_blurred(h=48, w=64)
    from_rgb = predict_map(name, img)
    from_gray = predict_map(name, img[..., 0])
    from_float = predict_map(name, img[..., 0].astype(np.float64) / 255.0)
    np.testing.assert_allclose(from_gray, from_float, atol=1e-5)
    # same luminance; the LBP matting sees a gray instead of a colour image, which is the same image here
    np.testing.assert_allclose(from_rgb, from_gray, atol=1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_flat_image_has_no_in_focus_evidence(name):
    out = predict_map(name, np.full((24, 30, 3), 128, np.uint8))
    assert out.max() == 0.0


def test_predict_map_validates_the_name():
    with pytest.raises(ValueError, match="hifst, lbp"):
        predict_map("dbdf", np.zeros((8, 8), np.uint8))
    assert predict_map("LBP", np.zeros((8, 8), np.uint8)).shape == (8, 8)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 2), np.uint8), np.zeros((0, 5), np.uint8), np.zeros(5, np.uint8)])
def test_bad_shapes_are_rejected(bad):
    with pytest.raises(ValueError):
        predict_map("lbp", bad)


def test_nan_input_is_rejected():
    img = np.zeros((5, 5))
    img[2, 2] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        predict_map("hifst", img)


def test_lbp_segment_thresholds_the_map():
    img, in_focus = half_blurred()
    seg = lbp_segment(img)
    assert seg.dtype == bool
    np.testing.assert_array_equal(seg, lbp_map(img) > 0.3)
    assert (seg == in_focus).mean() > 0.85


def test_lbp_without_refinement_is_the_raw_metric():
    img, in_focus = half_blurred()
    raw = lbp_map(img, refine=False)
    assert auc(raw, in_focus) > 0.9


def _load(shared_dir, sub, stem, ext):
    base = shared_dir / "data" / sub
    image = np.asarray(Image.open(base / "images" / f"{stem}.{ext}").convert("RGB"))
    mask = np.asarray(Image.open(base / "masks" / f"{stem}.png").convert("L")) > 127  # 255 = in focus
    return image, mask


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sub,stem,ext", [("CUHK/TE-1_btbnet320_samples", "out_of_focus0037", "png"),
                                          ("DUT/test_samples", "3", "jpg")])
def test_real_samples_rank_in_focus_pixels_higher(shared_dir, name, sub, stem, ext):
    image, in_focus = _load(shared_dir, sub, stem, ext)
    sharp = predict_map(name, image)
    assert sharp.shape == in_focus.shape
    assert auc(sharp, in_focus) > 0.85


def test_missing_matting_library_gives_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pymatting", None)  # makes `import pymatting` fail
    img, _ = half_blurred(h=32, w=40)
    with pytest.raises(ImportError, match=r"defocus\[matting\]"):
        lbp_map(img)
    assert lbp_map(img, refine=False).shape == (32, 40)


def test_mask_thresholds_follow_the_papers():
    from defocus.classical import mask_from_map, mask_threshold, predict_mask

    # two clusters of values: Otsu's threshold lies between them, whatever their sizes
    rng = np.random.default_rng(0)
    prob = np.concatenate([rng.uniform(0.0, 0.15, 900), rng.uniform(0.6, 0.7, 100)]).astype(np.float32)
    assert mask_threshold("lbp", prob) == 0.3
    assert 0.15 <= mask_threshold("HiFST", prob) <= 0.6
    np.testing.assert_array_equal(mask_from_map("hifst", prob), prob >= 0.6)
    assert not mask_from_map("hifst", np.zeros((4, 4), np.float32)).any()   # no evidence, no in-focus pixel
    assert not mask_from_map("hifst", np.full((4, 4), 0.5, np.float32)).any()
    with pytest.raises(ValueError, match="hifst, lbp"):
        mask_threshold("dbdf", prob)
    img, in_focus = half_blurred()
    np.testing.assert_array_equal(predict_mask("lbp", img), lbp_segment(img))
    for name in NAMES:
        mask = predict_mask(name, img)
        assert mask.dtype == bool and (mask == in_focus).mean() > 0.8


def test_example_photo_masks_are_not_nearly_empty(examples_dir):
    # the dahlia at the command line's working size (640 px): the flower head, about a fifth of the frame, is in
    # focus and the leaves behind it are not; HiFST's map peaks on the finest texture (the flower's centre), so its
    # mask covers less of the flower than LBP's
    from defocus.classical import predict_mask

    img = Image.open(examples_dir / "dahlia_flower.jpg").convert("RGB")
    img = np.asarray(img.resize((640, round(img.size[1] * 640 / img.size[0])), Image.BILINEAR))
    centre = np.zeros(img.shape[:2], bool)
    centre[170:230, 280:360] = True      # the middle of the flower head
    corners = np.zeros_like(centre)
    corners[:80, :120] = corners[:80, -120:] = True
    least = {"lbp": 0.15, "hifst": 0.05}
    for name in NAMES:
        mask = predict_mask(name, img)
        assert mask[centre].mean() > 0.9 and mask[corners].mean() < 0.02, name
        assert least[name] < mask.mean() < 0.35, (name, mask.mean())


@pytest.mark.parametrize("shape", [(40, 3, 3), (3, 40, 3), (37, 23, 3)])
def test_lbp_of_the_transposed_image_is_the_transposed_map(shape):
    # every LBP step is symmetric under a transpose (riu2 codes are reflection-invariant); thin images whose width
    # is 3, like a colour axis, must not be mistaken for colour images inside the pipeline
    img = (np.random.default_rng(2).random(shape) * 255).astype(np.uint8)
    a = lbp_map(img)
    b = lbp_map(np.ascontiguousarray(img.transpose(1, 0, 2)))
    np.testing.assert_allclose(a, b.T, atol=1e-4)


def test_lbp_calls_an_image_sharp_everywhere_in_focus():
    # every pixel passes the matting's in-focus threshold: the map is all in focus, not (as a constant) all blurred
    noise = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    assert predict_map("lbp", noise).min() == 1.0


def test_float_images_must_be_in_zero_one():
    img, _ = half_blurred()
    assert img.dtype == np.uint8
    with pytest.raises(ValueError, match=r"expected \[0, 1\]"):      # 0..255 floats, not clipped to white
        predict_map("lbp", img.astype(np.float32))
    np.testing.assert_allclose(predict_map("hifst", img / 255.0), predict_map("hifst", img), atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_predictor_marks_no_pixel_of_a_flat_photo_in_focus(name):
    from defocus import Predictor

    for shape in ((1, 1, 3), (40, 60, 3)):
        r = Predictor(method=name).predict(np.full(shape, 128, np.uint8))
        assert r.prob.max() == 0.0 and not r.mask.any() and r.in_focus_fraction == 0.0


def test_predictor_method_options():
    from defocus import Predictor

    assert Predictor(method="LBP").info.name == Predictor(method="lbp").info.name
    for bad in (dict(size=64), dict(upscale=False), dict(backend="torch"), dict(backend="onnx")):
        with pytest.raises(ValueError, match="networks"):
            Predictor(method="hifst", **bad)
    hifst = Predictor(method="hifst")
    for bad in (dict(size=64), dict(upscale=False)):
        with pytest.raises(ValueError, match="networks"):
            hifst.with_options(**bad)
    assert hifst.with_options(threshold=0.3).options.threshold == 0.3


@pytest.mark.parametrize("method, kwargs, words", [
    ("lbp", dict(matting_scale=0), "matting_scale"), ("lbp", dict(fast=True, work_pixels=0), "work_pixels"),
    ("lbp", dict(windows=()), "odd positive"), ("lbp", dict(windows=(10,)), "odd positive"),
    ("hifst", dict(entropy_bins=1), "entropy_bins"), ("hifst", dict(n_layers=0), "n_layers"),
    ("hifst", dict(patch_sizes=()), "odd positive"),
])
def test_parameters_that_cannot_give_a_map_are_refused(method, kwargs, words):
    from defocus.classical import predict_map

    with pytest.raises(ValueError, match=words):
        predict_map(method, np.zeros((20, 24, 3), np.uint8), **kwargs)
