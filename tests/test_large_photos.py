"""Large photos in bounded memory: maps resized and written in bands with exactly the values of the whole-image
path, overlays drawn band by band, and large JPEGs decoded at a reduced scale for the network input."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import defocus.inference.result as result
from defocus import imageio
from defocus.inference import MapResizer, Predictor, make_overlay, prob_to_uint8
from defocus.inference.result import resize_map
from toys import BrightNet


@pytest.fixture
def small_strips(monkeypatch):
    """Bands of a few rows, so that small images exercise the band-by-band path."""
    monkeypatch.setattr(result, "STRIP_PIXELS", 3000)


@pytest.mark.parametrize("upsample", ["bilinear", "nearest"])
def test_bands_equal_the_whole_map_resized_by_pillow(small_strips, upsample):
    rng = np.random.default_rng(0)
    for lo_shape in ((320, 320), (200, 320)):
        low = rng.random(lo_shape, dtype=np.float32)
        for size in ((641, 427), (1001, 777), (320, 1000), (100, 50), (77, 1500)):
            whole = resize_map(low, size, upsample)
            resizer = MapResizer(low, size, upsample)
            step = 3000 // size[0]
            bands = [resizer.rows(y, min(size[1], y + step)) for y in range(0, size[1], step)]
            assert len(bands) > 1 and np.array_equal(np.concatenate(bands), whole), (lo_shape, size)


def test_written_files_equal_the_whole_image_outputs(small_strips, examples_dir, tmp_path):
    photo = examples_dir / "dahlia_flower.jpg"
    pred = Predictor(BrightNet(), device="cpu", size=64).predict(photo)
    assert len(pred.strips()) > 100
    fraction = pred.in_focus_fraction  # counted band by band, before the full-size map exists
    written = pred.save(tmp_path)
    prob = resize_map(pred.prob_lowres, pred.size, "bilinear")
    mask = prob >= 0.5
    assert fraction == mask.mean() and 0.05 < fraction < 0.95
    assert np.array_equal(np.asarray(Image.open(written["prob"])), prob_to_uint8(prob))
    assert np.array_equal(np.asarray(Image.open(written["mask"])), mask.astype(np.uint8) * 255)
    image = imageio.decode_rgb(photo)[0]
    expected = make_overlay(image, mask)
    assert np.array_equal(np.asarray(pred.overlay()), np.asarray(expected))
    result.draw_overlay_in_place(image, pred.mask_rows, pred.strips())
    assert np.array_equal(np.asarray(image), np.asarray(expected))  # drawn band by band, boundary included
    ref = tmp_path / "ref.jpg"
    expected.save(ref, quality=result.JPEG_QUALITY)
    assert np.array_equal(np.asarray(Image.open(written["overlay"])), np.asarray(Image.open(ref)))
    assert all(imageio.is_tagged_output(p) for p in written.values())


def test_a_kept_image_is_not_drawn_on(small_strips, tmp_path):
    image = Image.fromarray(np.tile(np.linspace(0, 255, 90, dtype=np.uint8)[None, :, None], (70, 1, 3)))
    before = np.asarray(image).copy()
    pred = Predictor(BrightNet(), device="cpu", size=32).predict(image)
    pred.save(tmp_path, what=("overlay",))
    assert np.array_equal(np.asarray(pred.image()), before)


def test_png_strip_writer_round_trips_and_checks_the_row_count(tmp_path):
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (301, 157), dtype=np.uint8)
    path = imageio.write_png_strips(tmp_path / "a.png", 157, 301, (a[i:i + 40] for i in range(0, 301, 40)),
                                    {imageio.OUTPUT_TAG: "prob"}, compress_level=1)
    with Image.open(path) as im:
        assert im.mode == "L" and im.info[imageio.OUTPUT_TAG] == "prob"
        assert np.array_equal(np.asarray(im), a)
    with pytest.raises(ValueError, match="rows"):
        imageio.write_png_strips(tmp_path / "b.png", 157, 301, [a[:100]])
    assert not (tmp_path / "b.png").exists() and len(list(tmp_path.iterdir())) == 1  # nothing partial left


def test_large_jpegs_are_decoded_at_reduced_scale_for_the_network(examples_dir, monkeypatch):
    photo = examples_dir / "dahlia_flower.jpg"  # 640x427: "large" for a 32-pixel input and a low threshold
    decoded = []
    real = imageio.decode_rgb

    def spy(path, max_pixels=None, draft_min_size=None):
        img, native = real(path, max_pixels, draft_min_size)
        decoded.append(img.size)
        return img, native

    monkeypatch.setattr(imageio, "decode_rgb", spy)
    full = Predictor(BrightNet(), device="cpu", size=32, draft_pixels=None).predict(photo)
    draft = Predictor(BrightNet(), device="cpu", size=32, draft_pixels=200_000).predict(photo)
    normal = Predictor(BrightNet(), device="cpu", size=32).predict(photo)  # default threshold: full decode
    # 1/2 scale: the smallest that keeps 4x the 32x32 input on each side (1/4 would leave 107 rows)
    assert decoded == [(640, 427), (320, 214), (640, 427)]
    assert draft.size == full.size == (640, 427) and draft.prob.shape == (427, 640)
    assert np.array_equal(normal.prob_lowres, full.prob_lowres)
    diff = np.abs(draft.prob_lowres - full.prob_lowres)  # the same picture, resampled differently
    assert diff.mean() < 0.01 and diff.max() < 0.1
    assert draft.image().size == (640, 427)  # the overlay still gets the full-size photo
