"""Predictor API: input types, preprocessing, EXIF orientation, keep-aspect shapes, batching, robust decoding,
output naming and atomic writes. A content-dependent toy network keeps these fast and meaningful."""
from __future__ import annotations

import logging
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from defocus import imageio
from defocus.imageio import ImageDecodeError
from defocus.inference import Predictor, prob_to_uint8
from toys import BrightNet, LeftEdgeNet


@pytest.fixture(scope="module")
def bright():
    return Predictor(BrightNet(), device="cpu", size=64, batch_size=3)


def halves(w=80, h=60, bright_left=True) -> np.ndarray:
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2] = 255 if bright_left else 0
    a[:, w // 2:] = 0 if bright_left else 255
    return a


# ------------------------------------------------------------------------------------------- input types


def test_input_types_give_the_same_map(bright, tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    ref = bright.predict(tmp_path / "x.png")
    assert ref.prob.shape == (37, 53) and ref.prob.dtype == np.float32 and ref.size == (53, 37)
    for x in (str(tmp_path / "x.png"), Image.fromarray(a), a, torch.from_numpy(a).permute(2, 0, 1),
              torch.from_numpy(a).permute(2, 0, 1).float() / 255.0):
        np.testing.assert_allclose(bright.predict(x).prob, ref.prob, atol=1e-6)
    normalised = (torch.from_numpy(a).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5
    for bad, words in ((a / 1.0, "values up to 255"), (normalised, "values down to -1"),
                       (normalised.numpy().transpose(1, 2, 0), "values down to -1")):
        with pytest.raises(ValueError, match=words):
            bright.predict(bad)


def test_paper_preprocessing_and_polarity(bright):
    """Squash-resize with PIL bilinear, sigmoid of the logit, bright half (toy: in focus) -> high probability."""
    a = halves(200, 50)
    pred = bright.predict(a)
    small = np.asarray(Image.fromarray(a).resize((64, 64), Image.BILINEAR), np.float32) / 255.0
    expected_low = 1 / (1 + np.exp(-8 * (small.mean(2) - 0.5)))
    np.testing.assert_allclose(pred.prob_lowres, expected_low, atol=1e-5)
    assert pred.prob[:, :90].min() > 0.98 and pred.prob[:, 110:].max() < 0.02
    assert abs(pred.in_focus_fraction - 0.5) < 0.02
    assert pred.mask.dtype == bool and pred.mask[:, :90].all() and not pred.mask[:, 110:].any()


def test_threshold_and_nearest_upsampling():
    grey = np.full((30, 40, 3), 140, np.uint8)  # prob = sigmoid(8 * 0.049) ~ 0.597
    lo = Predictor(BrightNet(), device="cpu", size=32, threshold=0.55).predict(grey)
    hi = Predictor(BrightNet(), device="cpu", size=32, threshold=0.65, upsample="nearest").predict(grey)
    assert lo.mask.all() and not hi.mask.any()
    a = halves(96, 64)
    near = Predictor(BrightNet(), device="cpu", size=32, upsample="nearest").predict(a).prob
    assert len(np.unique(near)) <= len(np.unique(Predictor(BrightNet(), device="cpu", size=32).predict(a).prob))
    assert set(np.unique(near)) <= set(np.unique(Predictor(BrightNet(), device="cpu", size=32).predict(a)
                                                 .prob_lowres))


def test_default_mask_threshold_is_each_models_own():
    """Networks threshold at 0.5; a classical method at its paper's threshold (LBP's T_seg = 0.3, HiFST's
    adaptive one from its own map), unless a threshold is given."""
    from defocus.classical import adaptive_threshold

    grey = np.full((30, 40, 3), 140, np.uint8)
    assert Predictor(BrightNet(), device="cpu", size=32).predict(grey).threshold == 0.5
    rng = np.random.default_rng(0)
    img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    img[:, 32:] = 128  # a textured half and a flat half
    lbp = Predictor(method="lbp").predict(img)
    assert lbp.threshold == pytest.approx(0.3)
    hifst = Predictor(method="hifst").predict(img)
    assert hifst.threshold == pytest.approx(adaptive_threshold(hifst.prob_lowres))
    assert hifst.threshold != 0.5
    assert Predictor(method="hifst", threshold=0.5).predict(img).threshold == 0.5


@pytest.mark.parametrize("keep_aspect", [False, True])
def test_no_upscale_never_enlarges_a_side(keep_aspect):
    p = Predictor(BrightNet(), device="cpu", size=64, keep_aspect=keep_aspect, upscale=False)
    assert p.settings()["upscale"] is False
    big = (64, 64) if not keep_aspect else (64, 32)
    assert p.input_size((200, 100)) == big                     # larger photos: as with upscaling
    assert p.input_size((40, 20)) == (40, 20)                  # smaller: their own size
    assert p.input_size((100, 20)) == ((64, 20) if not keep_aspect else (64, 13))
    for w, h in ((40, 20), (100, 20), (7, 5)):
        pred = p.predict(np.full((h, w, 3), 200, np.uint8))
        tw, th = p.input_size((w, h))
        assert pred.prob.shape == (h, w) and pred.prob_lowres.shape == (th, tw)
    assert Predictor(BrightNet(), device="cpu", size=64, keep_aspect=keep_aspect).input_size((40, 20)) != (40, 20)


def test_keep_aspect_shapes():
    p = Predictor(BrightNet(), device="cpu", size=64, keep_aspect=True)
    assert p.input_size((200, 100)) == (64, 32)
    assert p.input_size((100, 200)) == (32, 64)
    assert p.input_size((1, 300)) == (1, 64)
    for w, h in ((200, 100), (100, 200), (1, 300), (1, 1), (65, 64)):
        pred = p.predict(np.full((h, w, 3), 200, np.uint8))
        assert pred.prob.shape == (h, w)
        tw, th = p.input_size((w, h))
        assert pred.prob_lowres.shape == (th, tw)


def test_tiny_network_on_odd_sizes(tmp_path, tiny_backbone):
    """A real DFFNet (tiny backbone, saved and re-loaded) on squashed and aspect-kept inputs of odd sizes."""
    from defocus.models import create_model, save_model

    path = save_model(create_model("dffnet", backbone=tiny_backbone).eval(), tmp_path / "tiny.safetensors")
    for keep in (False, True):
        p = Predictor(str(path), device="cpu", size=64, keep_aspect=keep)
        assert p.info.kind == "network" and p.info.backbone == tiny_backbone and p.info.source == str(path)
        for shape in ((1, 1, 3), (45, 70, 3), (70, 45, 3)):
            pred = p.predict(np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8))
            assert pred.prob.shape == shape[:2] and np.isfinite(pred.prob).all()
            assert 0.0 <= pred.prob.min() and pred.prob.max() <= 1.0


def test_flip_tta_averages_the_map_of_the_mirrored_photo():
    """flip_tta: the map is the mean of the photo's map and the mirrored photo's map mirrored back (a photo at the
    input size, so no resize stands between the two)."""
    net = LeftEdgeNet()
    photo = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    plain = Predictor(net, device="cpu", size=64, batch_size=2)
    tta = plain.with_options(flip_tta=True)
    one, mirrored = plain.predict(photo).prob_lowres, plain.predict(photo[:, ::-1].copy()).prob_lowres[:, ::-1]
    assert np.abs(one - mirrored).max() > 1e-3                    # the network is not mirror-symmetric
    both = [p.prob_lowres for p in tta.predict_many([photo, photo[:, ::-1].copy()])]
    np.testing.assert_allclose(both[0], (one + mirrored) / 2, atol=1e-5)
    np.testing.assert_allclose(both[1], both[0][:, ::-1], atol=1e-5)   # mirrored photo, mirrored map
    assert tta.settings()["flip_tta"] and not plain.settings()["flip_tta"]
    with pytest.raises(ValueError, match="flip_tta"):
        Predictor(method="lbp", flip_tta=True)


def test_registry_name_warns_loudly():
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):  # a Python warning: shown without any logging set up
        p = Predictor("dffnet:resnet18", device="cpu", size=64)
    assert "random" in p.info.source
    with pytest.raises(ValueError, match="unknown model"):
        Predictor("no_such_model_or_file", device="cpu")
    with pytest.raises(ValueError, match="unknown backbone 'resnet18x'"):
        Predictor("dffnet:resnet18x", device="cpu")


def test_prediction_leaves_the_callers_denormal_setting_alone():
    p = Predictor(BrightNet(), device="cpu", size=32)
    for setting in (True, False):
        torch.set_flush_denormal(setting)
        p.predict(halves())
        assert ((torch.tensor([1e-39]) * 1.0).item() == 0.0) is setting
    torch.set_flush_denormal(False)


def test_default_falls_back_to_lbp_with_a_warning(monkeypatch, caplog):
    import defocus.inference.runners as inf  # where the model is chosen

    calls = []

    def fake_lbp(rgb):
        calls.append(rgb.shape)
        return np.full(rgb.shape[:2], 0.75, np.float32)

    monkeypatch.setattr(inf, "bundled_weights", lambda: None)
    monkeypatch.setattr(inf, "bundled_onnx", lambda: None)
    monkeypatch.setattr(inf, "classical_methods", lambda: {"lbp": fake_lbp})
    with caplog.at_level(logging.INFO, logger="defocus.inference"):
        p = Predictor(device="cpu", size=48)
    assert "LBP" in caplog.text and p.info.kind == "classical" and p.info.name == "lbp"
    assert "input aspect kept, long side at most 640" in caplog.text  # not the network's 48x48
    assert "fallback" in p.info.to_dict()["notes"]
    pred = p.predict(np.zeros((20, 30, 3), np.uint8))
    big = p.predict(np.zeros((700, 1400, 3), np.uint8))  # aspect kept, long side capped, never enlarged
    assert calls == [(20, 30, 3), (320, 640, 3)] and np.allclose(pred.prob, 0.75) and big.prob.shape == (700, 1400)
    monkeypatch.setattr(inf, "classical_methods", lambda: {})
    with pytest.raises(ValueError, match="LBP baseline"):
        Predictor(device="cpu")
    with pytest.raises(ValueError, match="hifst"):
        Predictor(method="hifst", device="cpu")


# ----------------------------------------------------------------------------------------- EXIF, batching


def test_exif_orientation_is_applied(bright, tmp_path):
    stored = halves(80, 40, bright_left=True)  # stored: bright left half
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed = stored rotated 90 degrees clockwise: bright top half
    Image.fromarray(stored).save(tmp_path / "rot.jpg", exif=exif.tobytes(), quality=95)
    pred = bright.predict(tmp_path / "rot.jpg")
    assert pred.size == (40, 80) and pred.prob.shape == (80, 40)
    assert pred.prob[:30].mean() > 0.95 and pred.prob[50:].mean() < 0.05
    displayed = np.rot90(np.asarray(Image.open(tmp_path / "rot.jpg").convert("RGB")), -1)
    np.testing.assert_allclose(bright.predict(np.ascontiguousarray(displayed)).prob, pred.prob, atol=1e-6)
    assert pred.overlay().size == (40, 80)


def test_every_format_is_turned_upright_once(tmp_path):
    """JPEG, PNG, WebP and TIFF with orientation 6 decode to the same upright pixels and displayed size (Pillow
    turns a TIFF upright itself from version 12 on; nothing may turn it a second time)."""
    rng = np.random.default_rng(1)
    stored = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    upright = np.rot90(stored, -1)
    for name, kwargs in (("r.png", {}), ("r.tif", {}), ("r.webp", {"lossless": True})):
        Image.fromarray(stored).save(tmp_path / name, exif=exif.tobytes(), **kwargs)
        with Image.open(tmp_path / name) as im:
            assert imageio.displayed_size(im) == (30, 50), name
        img, native = imageio.decode_rgb(tmp_path / name)
        assert native == img.size == (30, 50), name
        np.testing.assert_array_equal(np.asarray(img), upright, err_msg=name)
        from defocus.data.pairs import stored_upright

        assert not stored_upright(tmp_path / name), name        # its stored pixels are not as displayed


def test_predict_many_keeps_order_batches_and_reports_errors(bright, tmp_path):
    (tmp_path / "bad.jpg").write_text("not an image")
    inputs = [halves(20 + i, 10 + i) for i in range(4)] + [tmp_path / "bad.jpg", halves(33, 17)]
    res = list(bright.predict_many(inputs, on_error="return"))
    assert [r.ok for r in res] == [True] * 4 + [False, True]
    assert [r.size for r in res if r.ok] == [(20, 10), (21, 11), (22, 12), (23, 13), (33, 17)]
    assert "bad.jpg" in res[4].source and "not an image" in res[4].error
    singles = [bright.predict(x).prob for x in inputs if not isinstance(x, Path)]
    for r, s in zip([r for r in res if r.ok], singles):
        np.testing.assert_allclose(r.prob, s, atol=1e-6)
    with pytest.raises(ImageDecodeError, match="bad.jpg"):
        list(bright.predict_many(inputs))


def test_predict_many_mixed_shapes_with_keep_aspect():
    p = Predictor(BrightNet(), device="cpu", size=32, keep_aspect=True, batch_size=4)
    shapes = [(10, 20), (20, 10), (10, 20), (11, 20), (10, 20)]
    res = list(p.predict_many([np.full((h, w, 3), 99, np.uint8) for h, w in shapes]))
    assert [r.prob.shape for r in res] == shapes


# ------------------------------------------------------------------------------------------------ decoding


def _png_with_header_size(path: Path, w: int, h: int):
    """A PNG whose header claims w x h pixels (the data is a tiny valid image: enough for the size check)."""
    Image.new("L", (4, 4)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature, then chunk length + type
    data[ihdr:ihdr + 8] = struct.pack(">II", w, h)
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4:ihdr + 13])) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def test_png_pixel_errors_and_late_exif_are_read_with_the_pixels(tmp_path):
    """Corrupt pixel data in a PNG is an error, never a map from partial pixels (reading its EXIF must not hide
    it); an EXIF chunk placed after the pixel data still rotates the image; neither needs decoding to size it."""
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / "ok.png")
    data = bytearray((tmp_path / "ok.png").read_bytes())
    data[len(data) // 2:len(data) // 2 + 100] = b"\x11" * 100
    (tmp_path / "corrupt.png").write_bytes(bytes(data))
    with pytest.raises(ImageDecodeError, match="corrupt.png: truncated or corrupt image data"):
        imageio.decode_rgb(tmp_path / "corrupt.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 20)).save(tmp_path / "plain.png")
    plain = (tmp_path / "plain.png").read_bytes()
    iend = plain.rindex(b"IEND") - 4
    (tmp_path / "late.png").write_bytes(plain[:iend] + _png_chunk(b"eXIf", exif.tobytes()[6:]) + plain[iend:])
    with Image.open(tmp_path / "late.png") as im:
        assert imageio.displayed_size(im) == (40, 20) and im.tile      # from the header: nothing decoded
    img, native = imageio.decode_rgb(tmp_path / "late.png")
    assert img.size == native == (20, 40)
    Image.new("RGB", (40, 20)).save(tmp_path / "early.png", exif=exif)
    assert imageio.decode_rgb(tmp_path / "early.png")[1] == (20, 40)
    from PIL import PngImagePlugin

    from defocus.data.pairs import stored_upright

    raw = exif.tobytes()
    info = PngImagePlugin.PngInfo()                   # ImageMagick's form, ahead of the pixel data
    info.add_text("Raw profile type exif", f"\nexif\n{len(raw):8d}\n{raw.hex()}\n", zip=True)
    Image.new("RGB", (40, 20)).save(tmp_path / "magick.png", pnginfo=info)
    with Image.open(tmp_path / "magick.png") as im:
        assert imageio.displayed_size(im) == (20, 40) and im.tile                # read without decoding
    assert imageio.decode_rgb(tmp_path / "magick.png")[1] == (20, 40)
    assert not stored_upright(tmp_path / "late.png") and not stored_upright(tmp_path / "magick.png")


def make_bad_and_odd_files(d: Path) -> dict[str, Path]:
    """The robustness corpus: name -> path."""
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    f = {}
    f["empty"] = d / "empty.jpg"
    f["empty"].write_bytes(b"")
    f["text"] = d / "notes.jpg"
    f["text"].write_text("this is not a JPEG\n")
    Image.fromarray(rgb).save(d / "full.jpg", quality=90)
    f["truncated"] = d / "truncated.jpg"
    f["truncated"].write_bytes((d / "full.jpg").read_bytes()[:300])
    (d / "full.jpg").unlink()
    f["cmyk"] = d / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(f["cmyk"])
    f["png16"] = d / "grey16.png"
    Image.fromarray(np.full((20, 30), 65535, np.uint16)).save(f["png16"])
    f["grey"] = d / "grey.png"
    Image.fromarray(rgb[..., 0]).save(f["grey"])
    f["palette"] = d / "palette.png"
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE, colors=16).save(f["palette"])
    f["rgba"] = d / "rgba.png"
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:5, :, 3] = 255  # top half opaque red, bottom half fully transparent
    Image.fromarray(rgba, "RGBA").save(f["rgba"])
    f["one"] = d / "one.png"
    Image.new("RGB", (1, 1), (200, 10, 10)).save(f["one"])
    f["bomb"] = d / "bomb.png"
    _png_with_header_size(f["bomb"], 20_000, 20_000)  # 400 MP: above the default limit
    f["unicode"] = d / "фото с пробелом ü.png"
    Image.fromarray(rgb).save(f["unicode"])
    return f


BAD = {"empty": "empty file", "text": "not an image", "truncated": "truncated", "bomb": "max-pixels"}


def test_decoding_corpus(tmp_path):
    files = make_bad_and_odd_files(tmp_path)
    for key, reason in BAD.items():
        with pytest.raises(ImageDecodeError) as e:
            imageio.decode_rgb(files[key])
        assert str(files[key]) in str(e.value) and reason in str(e.value)
    for key in ("cmyk", "png16", "grey", "palette", "rgba", "one", "unicode"):
        img, native = imageio.decode_rgb(files[key])
        assert img.mode == "RGB" and img.size == native
    assert np.asarray(imageio.decode_rgb(files["png16"])[0]).min() == 255  # scaled, not clipped from 65535
    rgba = np.asarray(imageio.decode_rgb(files["rgba"])[0])
    assert (rgba[:5] == (255, 0, 0)).all() and (rgba[5:] == imageio.ALPHA_BACKGROUND).all()
    # the pixel limit is the caller's: lower it, or disable it
    with pytest.raises(ImageDecodeError, match="above the limit"):
        imageio.decode_rgb(files["one"], max_pixels=0.5)
    with pytest.raises(ImageDecodeError) as e:  # past the size check, the (fake) data is what fails
        imageio.decode_rgb(files["bomb"], max_pixels=0)
    assert "above the limit" not in str(e.value)


def test_predictor_on_the_corpus(bright, tmp_path):
    files = make_bad_and_odd_files(tmp_path)
    res = {k: r for k, r in zip(files, bright.predict_many(files.values(), on_error="return"))}
    assert {k for k, r in res.items() if not r.ok} == set(BAD)
    assert res["one"].prob.shape == (1, 1) and res["png16"].prob.min() > 0.9
    assert res["rgba"].prob.shape == (10, 10)
    limited = Predictor(BrightNet(), device="cpu", size=32, max_pixels=100)
    with pytest.raises(ImageDecodeError, match="max_pixels"):
        limited.predict(np.zeros((20, 20, 3), np.uint8))


def test_fast_decode_is_close_to_exact(tmp_path):
    rng = np.random.default_rng(0)
    a = np.asarray(Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).resize((1600, 1200)))
    Image.fromarray(a).save(tmp_path / "big.jpg", quality=95)
    exact = Predictor(BrightNet(), device="cpu", size=64).predict(tmp_path / "big.jpg")
    fast = Predictor(BrightNet(), device="cpu", size=64, fast_decode=True).predict(tmp_path / "big.jpg")
    assert fast.size == exact.size == (1600, 1200)
    assert np.abs(fast.prob - exact.prob).mean() < 0.01
    assert fast.overlay().size == (1600, 1200)  # the overlay re-decodes at full size


# ------------------------------------------------------------------------------------------------ outputs


def test_save_writes_polarity_correct_maps(bright, tmp_path):
    pred = bright.predict(halves(50, 20))
    written = pred.save(tmp_path / "out", stem="x")
    assert sorted(p.name for p in written.values()) == ["x_mask.png", "x_overlay.jpg", "x_prob.png"]
    prob = np.asarray(Image.open(written["prob"]))
    mask = np.asarray(Image.open(written["mask"]))
    assert prob.dtype == np.uint8 and prob.shape == (20, 50)
    assert prob[:, :20].min() >= 250 and prob[:, 30:].max() <= 5  # 255 = in focus (sigmoid(4) -> 250)
    assert set(np.unique(mask)) == {0, 255} and (mask == np.where(pred.mask, 255, 0)).all()
    overlay = np.asarray(Image.open(written["overlay"]).convert("RGB")).astype(int)
    assert overlay.shape == (20, 50, 3)
    assert overlay[2:-2, 2:20].mean() > overlay[2:-2, 32:].mean()  # blurred part dimmed
    assert np.array_equal(prob_to_uint8(np.array([0.0, 0.5, 1.0], np.float32)), [0, 128, 255])
    assert list(tmp_path.joinpath("out").glob(".*")) == []
    assert set(pred.save(tmp_path / "o2", what="mask")) == {"mask"}
    with pytest.raises(ValueError, match="unknown output"):
        pred.save(tmp_path, what=("prob", "depth"))


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "x_prob.png"
    target.write_bytes(b"previous")

    def broken(f):
        f.write(b"partial data")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        imageio.atomic_write(target, broken)
    assert target.read_bytes() == b"previous" and sorted(os.listdir(tmp_path)) == ["x_prob.png"]
    imageio.save_image_atomic(Image.new("L", (3, 3)), target, "PNG")
    assert Image.open(target).size == (3, 3) and sorted(os.listdir(tmp_path)) == ["x_prob.png"]


def test_output_stems_are_unique_and_never_overwrite_other_files(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    Image.new("L", (2, 2)).save(tmp_path / "z_mask.png")  # someone else's file
    Image.new("L", (2, 2)).save(tmp_path / "w_prob.png", **imageio.output_save_params("prob"))  # an old output
    files = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "x.png", tmp_path / "b" / "X.tif", tmp_path / "x-2.jpg",
             tmp_path / "y.png", tmp_path / "y_prob.png", tmp_path / "z.jpg", tmp_path / "w.jpg"]
    stems = imageio.output_stems(files, tmp_path)
    assert stems[0] == "x" and len({s.casefold() for s in stems}) == len(stems)
    assert stems[3] == "x-2" and stems[1] not in ("x", "x-2")
    # out dir == input dir: "y" would write y_prob.png, which is an input
    assert stems[4] == "y-2" and stems[5] == "y_prob"
    assert stems[6] == "z-2" and stems[7] == "w"


def test_collect_inputs(tmp_path):
    d = tmp_path / "in"
    (d / "sub").mkdir(parents=True)
    for name in ("b.jpg", "a.png", "sub/c.jpg", ".hidden.jpg", "readme.md", "a_prob.png"):
        Image.new("RGB", (2, 2)).save(d / name) if name.endswith(("jpg", "png")) else (d / name).write_text("x")
    Image.new("L", (2, 2)).save(d / "b_mask.png", **imageio.output_save_params("mask"))
    Image.new("RGB", (2, 2)).save(d / "sub" / "c_overlay.jpg", **imageio.output_save_params("overlay"))
    assert imageio.is_tagged_output(d / "sub" / "c_overlay.jpg") and not imageio.is_tagged_output(d / "a_prob.png")
    lst = tmp_path / "list.txt"
    lst.write_text("# photos\nin/b.jpg\n\nin/sub/c.jpg\n")
    got = imageio.collect_inputs([d])  # our (tagged) outputs skipped, a user's "a_prob.png" kept
    assert [p.name for p in got.files] == ["a.png", "a_prob.png", "b.jpg"]
    got = imageio.collect_inputs([d], recursive=True)
    assert [p.name for p in got.files] == ["a.png", "a_prob.png", "b.jpg", "c.jpg"]
    got = imageio.collect_inputs([lst, str(d / "*.jpg"), d / "b.jpg", str(tmp_path / "nope*.png"), "missing.jpg"])
    assert [p.name for p in got.files] == ["b.jpg", "c.jpg"]
    assert [e[1] for e in got.errors] == ["no image files match this pattern", "no such file or directory"]
    assert [p.name for p in imageio.collect_inputs([str(d / "**" / "*.jpg")], recursive=True).files] == [
        "b.jpg", "c.jpg"]
    named = imageio.collect_inputs([d / "b_mask.png", d / "a_prob.png"])  # as a shell expands in/*.png
    assert [p.name for p in named.files] == ["a_prob.png"] and [p.name for p in named.outputs] == ["b_mask.png"]
    assert [p.name for p in imageio.collect_inputs(str(d / "b.jpg")).files] == ["b.jpg"]  # one path, not a list
    (tmp_path / "empty").mkdir()
    assert imageio.collect_inputs([tmp_path / "empty"]).errors[0][1].startswith("no image files in this folder")


# -------------------------------------------------------------------------------- package pieces, options


def test_options_group_the_keywords_and_refuse_unknown_ones():
    from defocus.inference import PredictOptions, RuntimeOptions

    p = Predictor(BrightNet(), device="cpu", options=PredictOptions(size=48, threshold=0.6),
                  runtime=RuntimeOptions(batch_size=2), keep_aspect=True, workers=3)
    assert (p.options.size, p.options.threshold, p.options.keep_aspect) == (48, 0.6, True)
    assert (p.runtime.batch_size, p.runtime.workers, p.workers) == (2, 3, 3)
    assert p.settings()["size"] == 48 and p.settings()["backend"] == "torch"
    with pytest.raises(TypeError, match="tresh"):
        Predictor(BrightNet(), device="cpu", tresh=0.5)
    for bad in (dict(size=0), dict(threshold=1.5), dict(upsample="cubic"), dict(batch_size=0),
                dict(precision="int8")):
        with pytest.raises(ValueError):
            Predictor(BrightNet(), device="cpu", **bad)
    for bad in ("256", 200.5):
        with pytest.raises(TypeError, match="size must be an int"):
            Predictor(BrightNet(), device="cpu", size=bad)


def test_unusable_objects_and_empty_images(bright):
    # no image type at all: a programming error (TypeError), also where image failures are returned
    for call in (lambda: bright.predict(None), lambda: bright.predict(b"\xff\xd8"),
                 lambda: list(bright.predict_many([halves(), None], on_error="return")),
                 lambda: list(bright.predict_many("photo.jpg")), lambda: list(bright.predict_many(Path("x")))):
        with pytest.raises(TypeError):
            call()
    # an empty PIL image (an empty crop) is one image's failure; the batch goes on
    res = list(bright.predict_many([halves(), Image.new("RGB", (0, 5)), halves(10, 8)], on_error="return"))
    assert [r.ok for r in res] == [True, False, True] and "no pixels" in res[1].error
    # float arrays are taken in [0, 1]: one in 0-255 is refused, not clipped to white
    with pytest.raises(ImageDecodeError, match="expected \\[0, 1\\]"):
        bright.predict(np.full((8, 8, 3), 200.0, np.float32))
    assert bright.predict(np.full((8, 8, 3), 1.0004, np.float32)).ok


def test_settings_record_what_is_used():
    assert Predictor(BrightNet(), device="cpu", size=32).settings()["threshold"] == 0.5
    assert Predictor(BrightNet(), device="cpu", size=32, threshold=0.7).settings()["threshold"] == 0.7
    lbp = Predictor(method="lbp").settings()
    assert (lbp["size"], lbp["upscale"], lbp["threshold"]) == (None, None, None)  # the method's own, per map


def test_with_options_shares_the_loaded_model_and_matches_a_fresh_predictor():
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (50, 90, 3), dtype=np.uint8)
    net = BrightNet()
    base = Predictor(net, device="cpu", size=64, batch_size=2)
    variant = base.with_options(size=48, keep_aspect=True, upscale=False)
    assert variant.runner is base.runner and variant.runtime is base.runtime
    assert (variant.options.size, variant.options.keep_aspect, variant.options.upscale) == (48, True, False)
    assert (base.options.size, base.options.keep_aspect, base.options.upscale) == (64, False, True)
    fresh = Predictor(net, device="cpu", size=48, keep_aspect=True, upscale=False, batch_size=2)
    np.testing.assert_array_equal(variant.predict(photo).prob, fresh.predict(photo).prob)
    assert variant.predict(photo).prob_lowres.shape == (27, 48)
    assert base.predict(photo).prob_lowres.shape == (64, 64)
    with pytest.raises(TypeError, match="batch_size"):
        base.with_options(batch_size=4)       # a runtime option: it would need another runner
    with pytest.raises(ValueError):
        base.with_options(size=0)


def test_make_runner_picks_one_runner_per_backend(monkeypatch):
    import defocus.inference.runners as runners
    from defocus.inference import ClassicalRunner, TorchRunner, make_runner

    monkeypatch.setattr(runners, "classical_methods", lambda: {"flat": lambda rgb: np.zeros(rgb.shape[:2])})
    classical = make_runner(method="flat")
    assert isinstance(classical, ClassicalRunner) and classical.backend == "numpy" and classical.device == "cpu"
    assert classical.input_size((1400, 700), 320, False) == (640, 320)  # aspect kept, long side capped
    assert classical.prepare(np.zeros((5, 7, 3), np.uint8)).shape == (5, 7)
    torch_runner = make_runner(BrightNet(), device="cpu")
    assert isinstance(torch_runner, TorchRunner) and torch_runner.info.name == "bright"
    x = torch_runner.prepare(np.full((4, 6, 3), 255, np.uint8))
    assert x.shape == (3, 4, 6) and torch_runner.run(x[None]).shape == (1, 4, 6)
    with pytest.raises(ValueError, match="either a model or a method"):
        make_runner(BrightNet(), method="flat")
    with pytest.raises(ValueError, match="NumPy"):
        make_runner(method="flat", backend="onnx")


def test_import_does_not_import_torch():
    import subprocess
    import sys

    script = "import sys, defocus.inference, defocus.cli\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["False"], out.stderr


def test_output_stems_expected_outputs_and_done(bright, tmp_path):
    from defocus.inference import expected_outputs, output_stem, outputs_done, write_entry

    assert output_stem(tmp_path / "a" / "b" / "x.y.jpg", tmp_path) == "a/b/x.y"
    assert output_stem(tmp_path / "x.jpg", tmp_path) == "x"
    assert output_stem(tmp_path / "x.jpg", tmp_path / "elsewhere") == output_stem(tmp_path / "x.jpg") == "x"
    paths = expected_outputs(tmp_path, "a/x", ("mask", "prob"))
    assert paths == {"mask": tmp_path / "a" / "x_mask.png", "prob": tmp_path / "a" / "x_prob.png"}
    assert not outputs_done(tmp_path, "a/x", ("mask", "prob"))
    entry = write_entry(bright.predict(halves(20, 10)), tmp_path, "a/x", ("mask",))
    assert entry["outputs"] == {"mask": "a/x_mask.png"} and entry["error"] is None and entry["width"] == 20
    assert outputs_done(tmp_path, "a/x", "mask") and not outputs_done(tmp_path, "a/x", "mask,prob")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    failed = write_entry(bright.predict(halves(20, 10)), blocker, "x", "mask")
    assert "cannot write outputs" in failed["error"] and failed["in_focus_fraction"] is None
    assert failed["output"] == "x" and failed["outputs"] == {}


def test_pixel_limit_messages_never_read_as_equal_counts(tmp_path):
    assert imageio.pixel_counts(24_000_000, 16_000_000) == ("24 MP", "16 MP")
    Image.new("RGB", (400, 300)).save(tmp_path / "a.png")
    with pytest.raises(ImageDecodeError, match="= 120000 pixels, above the limit of 100000 pixels"):
        imageio.decode_rgb(tmp_path / "a.png", max_pixels=100_000)
