"""The synthetic defocus renderer: optics, label physics, compositing, determinism, dataset and CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from defocus.cli import app
from defocus.data import load_pairs
from defocus.data.lens import DiskBlur, disk_blur, disk_kernel, fill_holes, linear_to_srgb, srgb_to_linear
from defocus.data.sharpness import SharpnessTest, edge_maps, luma, region_is_sharp
from defocus.data.synth import (SynthConfig, SyntheticDefocusDataset, config_from_dict, list_natural_sources,
                                render_sample)
from defocus.data.transforms import train_transform

SIZE = 128
ONLY = {c: {f"p_{k}": float(k == c) for k in ("near", "far", "wide", "full")} for c in ("near", "far", "wide", "full")}
# physics tests: no randomness beyond the lens (no crop, ramp, highlights, bokeh, noise or JPEG)
PLAIN = dict(size=None, crop_prob=0.0, ramp_prob=0.0, highlight_prob=0.0, bokeh_prob=0.0, noise_prob=0.0,
             jpeg_prob=0.0, sharp_radius=(0.0, 0.4))


def _cfg(case: str, **kw) -> SynthConfig:
    return SynthConfig(**{**PLAIN, **ONLY[case], **kw})


def _texture(rng, size=SIZE, block=4) -> np.ndarray:
    n = size // block
    return rng.integers(20, 236, (n, n, 3)).astype(np.uint8).repeat(block, 0).repeat(block, 1)


def _square(size=SIZE) -> np.ndarray:
    fg = np.zeros((size, size), bool)
    fg[size // 4: 3 * size // 4, size // 4: 3 * size // 4] = True
    return fg


def _blurred(img: np.ndarray, r: float) -> np.ndarray:
    return linear_to_srgb(disk_blur(srgb_to_linear(img), r))


def _local_var(img: np.ndarray) -> np.ndarray:
    y = luma(img)
    return ndimage.uniform_filter(y * y, 5) - ndimage.uniform_filter(y, 5) ** 2


def _render(img, fg, cfg, seed=0):
    return render_sample(img, fg, np.random.default_rng(seed), cfg, return_info=True)


# --- optics primitives ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("r", [0.7, 2.0, 5.5, 12.0])
def test_disk_kernel_is_a_normalised_pillbox(r):
    k = disk_kernel(r)
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.allclose(k, k.T) and np.allclose(k, k[::-1])
    c = k.shape[0] // 2
    dist = np.hypot(*np.mgrid[-c: c + 1, -c: c + 1])
    assert (k[dist > r + 0.71] == 0).all()  # nothing beyond the rim
    assert np.allclose(k[dist < r - 0.71], k.max())  # flat top inside it: a pillbox, not a Gaussian
    assert k.max() == pytest.approx(1 / (np.pi * r * r), rel=0.1)
    assert disk_kernel(0.3).shape == (1, 1)


def test_fft_disk_blur_equals_direct_convolution():
    x = np.random.default_rng(0).random((3, 60, 70)).astype(np.float32)
    blur = DiskBlur(x, 6.0)
    for r in (3.0, 6.0):
        ref = np.stack([ndimage.correlate(c, disk_kernel(r), mode="reflect") for c in x])
        np.testing.assert_allclose(blur(r), ref, atol=1e-5)


def test_fill_holes_keeps_valid_pixels_and_extends_them():
    x = np.zeros((3, 64, 64), np.float32)
    x[:, :, :32] = 0.2
    x[:, :, 32:] = 0.8
    valid = np.ones((64, 64), bool)
    valid[20:44, 20:44] = False
    x_holed = np.where(valid, x, 5.0)  # hidden pixels carry a value that must not leak
    out = fill_holes(x_holed, valid)
    np.testing.assert_array_equal(out[:, valid], x[:, valid])
    assert 0.2 - 1e-6 <= out.min() and out.max() <= 0.8 + 1e-6
    assert out[0, 32, 21] < 0.5 < out[0, 32, 42]  # each side extends its own neighbour


def test_srgb_round_trip_is_exact():
    v = np.arange(256, dtype=np.uint8)[None, :, None].repeat(3, 2)
    np.testing.assert_array_equal(linear_to_srgb(srgb_to_linear(v)), v)


# --- the sharpness test, on the real DBD samples --------------------------------------------------------------

def test_sharpness_test_separates_real_in_focus_from_blurred_regions(shared_dir):
    pairs = load_pairs("folder", image_dir=shared_dir / "data/CUHK/TE-1_btbnet320_samples/images",
                       mask_dir=shared_dir / "data/CUHK/TE-1_btbnet320_samples/masks")
    pairs += load_pairs("folder", image_dir=shared_dir / "data/DUT/test_samples/images",
                        mask_dir=shared_dir / "data/DUT/test_samples/masks")
    assert len(pairs) == 10
    for p in pairs:
        ratio, contrast = edge_maps(luma(np.asarray(Image.open(p.image).convert("RGB"))))
        gt = np.asarray(Image.open(p.mask)) >= 128
        sharp = ndimage.binary_erosion(gt, iterations=4)
        blurred = ndimage.binary_erosion(~gt, iterations=4)
        assert region_is_sharp(ratio, contrast, sharp), p.stem
        assert not region_is_sharp(ratio, contrast, blurred), p.stem


def test_sharpness_test_rejects_synthetic_blur():
    img = _texture(np.random.default_rng(1))
    everywhere = np.ones(img.shape[:2], bool)
    assert region_is_sharp(*edge_maps(luma(img)), everywhere)
    assert not region_is_sharp(*edge_maps(luma(_blurred(img, 2.0))), everywhere)
    assert not region_is_sharp(*edge_maps(luma(np.full_like(img, 128))), everywhere)  # flat: cannot verify


# --- label physics and compositing -------------------------------------------------------------------------

def test_near_focus_subject_stays_sharp_background_blurs():
    rng = np.random.default_rng(2)
    img, fg = _texture(rng), _square()
    out, in_focus, info = _render(img, fg, _cfg("near", blur_radius=(4.0, 12.0)))
    assert info["case"] == "near" and info["r_bg_far"] >= 4.0
    np.testing.assert_array_equal(in_focus, fg)
    inner = ndimage.binary_erosion(fg, iterations=2)
    np.testing.assert_array_equal(out[inner], img[inner])  # the in-focus subject is untouched
    bg = ~ndimage.binary_dilation(fg, iterations=6)
    assert np.median(_local_var(out)[bg]) < 0.3 * np.median(_local_var(img)[bg])


def test_far_focus_background_stays_sharp_subject_blurs():
    img, fg = _texture(np.random.default_rng(3)), _square()
    out, in_focus, info = _render(img, fg, _cfg("far"))
    assert info["case"] == "far" and info["r_fg"] >= 2.0
    inter = (~in_focus & fg).sum() / (~in_focus | fg).sum()
    assert inter > 0.9  # the blurred subject is the out-of-focus region, up to its rounded corners
    far_bg = ~ndimage.binary_dilation(fg, iterations=int(np.ceil(info["r_fg"])) + 1)
    np.testing.assert_array_equal(out[far_bg], img[far_bg])
    inner = ndimage.binary_erosion(fg, iterations=int(np.ceil(info["r_fg"])) + 1)
    assert np.median(_local_var(out)[inner]) < 0.3 * np.median(_local_var(img)[inner])


def test_wide_and_full_cases():
    img, fg = _texture(np.random.default_rng(4)), _square()
    out, in_focus, info = _render(img, fg, _cfg("wide"))
    assert info["case"] == "wide" and in_focus.all()
    np.testing.assert_array_equal(out, img)
    out, in_focus, info = _render(img, fg, _cfg("full"))
    assert info["case"] == "full" and not in_focus.any()
    assert np.median(_local_var(out)) < 0.3 * np.median(_local_var(img))


def test_naturally_blurred_regions_are_never_labelled_in_focus():
    rng = np.random.default_rng(5)
    img, fg = _texture(rng), _square()
    soft_bg = np.where(fg[..., None], img, _blurred(img, 4.0))  # a photo whose background is already blurred
    for seed in range(3):
        for case in ("far", "wide"):
            out, in_focus, info = _render(soft_bg, fg, _cfg(case), seed)
            assert info["case"] == "near" and info["background_sharp"] in (False, None)
            assert not in_focus[~fg].any()
    soft_fg = np.where(fg[..., None], _blurred(img, 4.0), img)  # the subject itself is out of focus
    out, in_focus, info = _render(soft_fg, fg, _cfg("near"))
    assert info["case"] == "full" and not in_focus.any()
    _, in_focus, info = render_sample(img, fg, np.random.default_rng(0), _cfg("far"), sharp_background_ok=False,
                                      return_info=True)
    assert info["case"] == "near"


def test_sharp_subject_leaves_no_halo():
    """A bright subject over a dark background: the blurred background next to it must stay dark. A naive
    composite (blur the whole photo, paste the subject back) shows the halo this test can detect."""
    rng = np.random.default_rng(6)
    tex = _texture(rng)
    fg = _square()
    img = np.where(fg[..., None], 175 + tex // 3, tex // 4).astype(np.uint8)  # textured: it passes as sharp
    out, _, info = _render(img, fg, _cfg("near", blur_radius=(8.0, 8.0001)))
    assert info["case"] == "near"
    ring = ndimage.binary_dilation(fg, iterations=6) & ~ndimage.binary_dilation(fg, iterations=1)
    far_bg = ~ndimage.binary_dilation(fg, iterations=20)
    naive = np.where(fg[..., None], img, _blurred(img, 8.0))
    excess = luma(out)[ring].mean() - luma(out)[far_bg].mean()
    naive_excess = luma(naive)[ring].mean() - luma(naive)[far_bg].mean()
    assert naive_excess > 0.15
    assert excess < 0.15 * naive_excess


def test_blurred_foreground_has_soft_see_through_edges():
    rng = np.random.default_rng(7)
    tex = _texture(rng)
    fg = _square()
    img = np.where(fg[..., None], 175 + tex // 3, tex // 4).astype(np.uint8)
    out, in_focus, info = _render(img, fg, _cfg("far", blur_radius=(6.0, 6.0001)))
    assert info["case"] == "far"
    y, y0 = luma(out), luma(img)
    outside = ndimage.binary_dilation(fg, iterations=3) & ~fg  # just outside the silhouette
    inside = fg & ~ndimage.binary_erosion(fg, iterations=3)  # just inside it
    assert y[outside].mean() > y0[outside].mean() + 0.15  # the blurred subject spills over the background
    assert y[inside].mean() < y0[inside].mean() - 0.15  # and the background shows through its edge
    assert in_focus[outside].mean() > 0.8 and not in_focus[ndimage.binary_erosion(fg, iterations=2)].any()


def test_swapped_background_replaces_the_surroundings_only_when_defocused():
    """A red background photo given to a grey-surround scene: a defocused background turns red (blurred), the
    subject and the label stay as they were; a sharp (far-focus) background ignores it."""
    rng = np.random.default_rng(10)
    tex = _texture(rng)
    fg = _square()
    img = np.where(fg[..., None], tex, 128).astype(np.uint8)
    red = np.zeros_like(img)
    red[..., 0] = 220
    red[::8] = 40  # stripes: texture that the blur must smooth
    cfg = _cfg("near", blur_radius=(5.0, 5.0001))
    out, in_focus, info = render_sample(img, fg, np.random.default_rng(0), cfg, background=red, return_info=True)
    assert info["case"] == "near" and info["background_swapped"]
    np.testing.assert_array_equal(in_focus, fg)
    inner = ndimage.binary_erosion(fg, iterations=2)
    np.testing.assert_array_equal(out[inner], img[inner])
    far_bg = ~ndimage.binary_dilation(fg, iterations=8)
    assert out[far_bg][:, 0].mean() > 150 and out[far_bg][:, 1].mean() < 20  # red, not the source's grey
    assert np.median(_local_var(out)[far_bg]) < 0.3 * np.median(_local_var(red)[far_bg])
    plain, _ = render_sample(img, fg, np.random.default_rng(0), cfg)
    assert abs(int(plain[far_bg][:, 0].mean()) - 128) < 10
    sharp_src = _texture(np.random.default_rng(11))
    out, in_focus, info = render_sample(sharp_src, fg, np.random.default_rng(0), _cfg("far"), background=red,
                                        return_info=True)
    assert info["case"] == "far" and not info["background_swapped"]
    np.testing.assert_array_equal(out[far_bg], sharp_src[far_bg])


def _pasted_object(rng, side=32, smooth=False):
    tex = _texture(rng, side, block=2)
    if smooth:
        tex = _blurred(tex, 6.0)
    return Image.fromarray(tex), Image.fromarray(np.full((side, side), 255, np.uint8))


def test_pasted_objects_are_labelled_by_their_own_depth():
    """Near focus with a pasted textured square: at the focal depth it is rendered sharp (its own pixels) and
    labelled in focus beside the subject; at another depth it is blurred and labelled out of focus."""
    rng = np.random.default_rng(12)
    img = np.where(_square()[..., None], _texture(rng), 128).astype(np.uint8)
    fg = _square()
    obj = [_pasted_object(np.random.default_rng(13))]
    kw = dict(blur_radius=(5.0, 5.0001), paste_scale=(0.25, 0.25))
    out, in_focus, info = render_sample(img, fg, np.random.default_rng(1), _cfg("near", paste_sharp_prob=1.0, **kw),
                                        objects=obj, return_info=True)
    assert info["case"] == "near" and len(info["pasted"]) == 1 and info["pasted"][0]["in_focus"]
    extra = in_focus & ~fg
    side = round(0.25 * SIZE)
    assert 0.3 * side * side <= extra.sum() <= side * side  # the square, less what the subject or the frame hides
    assert (in_focus[fg]).all()
    inner = ndimage.binary_erosion(extra, iterations=2)
    assert np.median(_local_var(out)[inner]) > 0.004  # its texture survives
    out, in_focus, info = render_sample(img, fg, np.random.default_rng(1), _cfg("near", paste_sharp_prob=0.0, **kw),
                                        objects=obj, return_info=True)
    assert not info["pasted"][0]["in_focus"] and info["pasted"][0]["radius"] >= 5.0
    np.testing.assert_array_equal(in_focus, fg)
    plain, _ = render_sample(img, fg, np.random.default_rng(1), _cfg("near", **kw))
    assert np.abs(out.astype(int) - plain.astype(int))[~fg].max() > 30  # the blurred object is there
    assert np.median(_local_var(out)[inner]) < 0.3 * np.median(_local_var(np.asarray(obj[0][0]).repeat(4, 0)))


def test_pasted_objects_follow_the_scene_case_and_the_sharpness_test():
    rng = np.random.default_rng(14)
    img = _texture(rng)
    fg = _square()
    kw = dict(paste_sharp_prob=1.0, paste_scale=(0.3, 0.3))
    _, in_focus, info = render_sample(img, fg, np.random.default_rng(2), _cfg("full", **kw),
                                      objects=[_pasted_object(rng)] * 2, return_info=True)
    assert info["case"] == "full" and len(info["pasted"]) == 2 and not in_focus.any()
    # a smooth (already defocused) object source never becomes an in-focus object
    _, in_focus, info = render_sample(img, fg, np.random.default_rng(2), _cfg("near", **kw),
                                      objects=[_pasted_object(rng, smooth=True)], return_info=True)
    assert not info["pasted"][0]["in_focus"]
    np.testing.assert_array_equal(in_focus, fg)
    # a sharp background (far focus) takes no pasted objects: the render is the one without them
    ref = render_sample(img, fg, np.random.default_rng(2), _cfg("far", **kw))
    out = render_sample(img, fg, np.random.default_rng(2), _cfg("far", **kw), objects=[_pasted_object(rng)],
                        return_info=True)
    assert out[2]["case"] == "far" and out[2]["pasted"] == []
    np.testing.assert_array_equal(out[0], ref[0])


def test_dataset_swaps_backgrounds_from_other_sources(sources):
    _, srcs = sources
    cfg = SynthConfig(**ONLY["near"], bg_swap_prob=1.0)
    ds = SyntheticDefocusDataset(srcs, size=48, length=6, seed=3, cfg=cfg)
    infos = [ds.render(i)[2] for i in range(6)]
    swapped = [i for i in infos if i["background_swapped"]]
    assert swapped and all(i["background_source"] for i in swapped)
    assert all(i["background_source"] is None for i in infos if not i["background_swapped"])
    off = SyntheticDefocusDataset(srcs, size=48, length=6, seed=3, cfg=SynthConfig(**ONLY["near"]))
    assert not any(off.render(i)[2]["background_swapped"] for i in range(6))
    for bad in (dict(bg_swap_prob=1.5), dict(bg_swap_scale=(0.0, 1.0))):
        with pytest.raises(ValueError):
            SynthConfig(**bad)


def test_dataset_pastes_objects_from_other_sources(sources):
    _, srcs = sources
    cfg = SynthConfig(**ONLY["near"], paste_prob=1.0, paste_count=(2, 2))
    infos = [SyntheticDefocusDataset(srcs, size=48, length=4, seed=3, cfg=cfg).render(i)[2] for i in range(4)]
    assert all(len(i["pasted"]) == 2 and all(p["source"] for p in i["pasted"]) for i in infos)
    off = SyntheticDefocusDataset(srcs, size=48, length=4, seed=3, cfg=SynthConfig(**ONLY["near"]))
    assert not any(off.render(i)[2]["pasted"] for i in range(4))
    for bad in (dict(paste_prob=-0.1), dict(paste_sharp_prob=2.0), dict(paste_count=(0, 2)), dict(paste_count=(3, 2)),
                dict(paste_scale=(0.0, 0.5))):
        with pytest.raises(ValueError):
            SynthConfig(**bad)


# --- determinism, datasets and the CLI --------------------------------------------------------------------------

def test_render_is_deterministic_for_a_seed():
    rng = np.random.default_rng(8)
    img, fg = _texture(rng, 96), _square(96)
    cfg = SynthConfig(size=64)  # full default recipe: crop, ramp, bokeh, noise, JPEG
    a = render_sample(img, fg, np.random.default_rng(42), cfg)
    b = render_sample(img, fg, np.random.default_rng(42), cfg)
    c = render_sample(img, fg, np.random.default_rng(43), cfg)
    assert a[0].shape == (64, 64, 3) and a[0].dtype == np.uint8 and a[1].dtype == bool
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


@pytest.fixture
def sources(tmp_path):
    rng = np.random.default_rng(9)
    out = []
    for name in ("SetA", "HumanSeg"):
        im_dir, mk_dir = tmp_path / name / "images", tmp_path / name / "masks"
        im_dir.mkdir(parents=True)
        mk_dir.mkdir(parents=True)
        for k in range(3):
            Image.fromarray(_texture(rng, 96)).save(im_dir / f"{k}.png")
            Image.fromarray(_square(96).astype(np.uint8) * 255).save(mk_dir / f"{k}.png")
        out.append((im_dir, mk_dir))
    return tmp_path, out


def test_dataset_items_are_deterministic_and_epoch_dependent(sources):
    root, srcs = sources
    assert list_natural_sources(root) == srcs[::-1]  # sorted: HumanSeg, SetA
    ds1 = SyntheticDefocusDataset(srcs, size=48, length=5, seed=1)
    ds2 = SyntheticDefocusDataset(srcs, size=48, length=5, seed=1)
    item = ds1[3]
    assert item["image"].shape == (48, 48, 3) and item["target"].shape == (48, 48)
    assert set(np.unique(item["target"])) <= {0, 1}
    np.testing.assert_array_equal(ds1[3]["image"], ds2[3]["image"])
    np.testing.assert_array_equal(ds1[3]["target"], ds2[3]["target"])
    ds2.set_epoch(1)
    assert not np.array_equal(ds1[3]["image"], ds2[3]["image"])
    assert not np.array_equal(SyntheticDefocusDataset(srcs, size=48, length=5, seed=2)[3]["image"], item["image"])
    assert {s.sharp_background_ok for s in ds1.sources} == {True, False}
    with pytest.raises(IndexError):
        ds1[5]


def test_dataset_with_transform_feeds_a_dataloader(sources):
    _, srcs = sources
    ds = SyntheticDefocusDataset(srcs, size=32, length=4, seed=0, transform=train_transform(32))
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["target"].shape == (4, 1, 32, 32)
    assert set(batch["target"].unique().tolist()) <= {0.0, 1.0}


def test_cli_synth_writes_loadable_pairs(sources, tmp_path):
    _, srcs = sources
    runner = CliRunner()
    outs = []
    for k in range(2):
        out = tmp_path / f"out{k}"
        args = ["data", "synth", "-n", "3", "-o", str(out), "--seed", "7", "--size", "40"]
        for im, mk in srcs:
            args += ["--src", str(im), "--masks", str(mk)]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        outs.append(out)
    pairs = load_pairs("folder", image_dir=outs[0] / "images", mask_dir=outs[0] / "masks", mask_white="in-focus")
    assert len(pairs) == 3
    for p in pairs:
        m = np.asarray(Image.open(p.mask))
        assert m.shape == (40, 40) and set(np.unique(m)) <= {0, 255}
        assert p.image.read_bytes() == (outs[1] / "images" / p.image.name).read_bytes()  # same seed, same bytes
    assert len((outs[0] / "samples.jsonl").read_text().splitlines()) == 3
    args = ["data", "synth", "-n", "1", "-o", str(outs[0]), "--seed", "8", "--size", "40"]
    assert runner.invoke(app, args + ["--src", str(srcs[0][0]), "--masks", str(srcs[0][1])]).exit_code == 0
    assert [p.name for p in sorted((outs[0] / "images").iterdir())] == ["000000.png"]  # the earlier run's 2 gone
    assert len(load_pairs("folder", image_dir=outs[0] / "images", mask_dir=outs[0] / "masks")) == 1
    for bad in (["-n", "0"], ["--size", "0"], ["--seed", "-1"]):
        res = runner.invoke(app, ["data", "synth", "-n", "2", "-o", str(tmp_path / "y"), *bad,
                                  "--src", str(srcs[0][0]), "--masks", str(srcs[0][1])])
        assert res.exit_code == 2 and not (tmp_path / "y").exists()
    res = runner.invoke(app, ["data", "synth", "-n", "1", "-o", str(tmp_path / "x")])
    assert res.exit_code == 2


@pytest.mark.parametrize("case", ["missing natural root", "bad config value", "missing config file"])
def test_cli_synth_bad_inputs_are_one_line_errors(sources, tmp_path, case):
    _, srcs = sources
    src_args = ["--src", str(srcs[0][0]), "--masks", str(srcs[0][1])]
    bad = tmp_path / "bad.yaml"
    bad.write_text("blur_radius: [1, x]\n")
    extra = {"missing natural root": ["--natural", str(tmp_path / "nowhere")],
             "bad config value": src_args + ["--config", str(bad)],
             "missing config file": src_args + ["--config", str(tmp_path / "missing.yaml")]}[case]
    res = CliRunner().invoke(app, ["data", "synth", "-n", "1", "-o", str(tmp_path / "out")] + extra)
    assert res.exit_code == 2, res.output
    assert res.output.strip().startswith("error:") and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("values, field", [({"blur_radius": [2]}, "blur_radius"), ({"max_upscale": 0}, "max_upscale"),
                                           ({"redraws": -1}, "redraws"), ({"noise_shot": [0, -1e-4]}, "noise_shot"),
                                           ({"noise_shot": [0, 1e-4]}, "noise_shot"),
                                           ({"bokeh_points": [20, 2]}, "bokeh_points"),
                                           ({"jpeg_quality": [75, 200]}, "jpeg_quality"),
                                           ({"crop_prob": 1.5}, "crop_prob")])
def test_config_values_that_cannot_render_name_their_field(values, field):
    from defocus.data.synth import config_from_dict

    with pytest.raises(ValueError, match=field):
        config_from_dict(values)


def test_cli_synth_takes_the_config_size_and_leaves_no_earlier_ignore_masks(sources, tmp_path):
    _, srcs = sources
    cfg = tmp_path / "c.yaml"
    cfg.write_text("size: 40\ndepth_prob: 1.0\n")
    out = tmp_path / "out"
    base = ["data", "synth", "--src", str(srcs[0][0]), "--masks", str(srcs[0][1]), "-n", "2", "-o", str(out)]
    res = CliRunner().invoke(app, base + ["--config", str(cfg)])
    assert res.exit_code == 0, res.output
    assert Image.open(out / "images" / "000000.png").size == (40, 40)  # the config's size (no --size given)
    assert len(list((out / "ignore").iterdir())) == 2 and list((out / "depth").iterdir())
    res = CliRunner().invoke(app, base + ["--size", "32"])               # no depth scenes this time
    assert res.exit_code == 0, res.output
    assert Image.open(out / "images" / "000000.png").size == (32, 32)
    assert not list((out / "ignore").iterdir()) and not list((out / "depth").iterdir())


def test_config_validation_and_from_dict():
    with pytest.raises(ValueError):
        SynthConfig(focus_threshold=3.0)  # inside the blurred range: no gap
    cfg = config_from_dict({"blur_radius": [3, 9], "sharpness": {"threshold": 0.5}, "p_far": 0})
    assert cfg.blur_radius == (3, 9) and cfg.sharpness == SharpnessTest(threshold=0.5)
    with pytest.raises(ValueError):
        config_from_dict({"no_such_knob": 1})


def test_renders_real_natural_sources(shared_dir):
    srcs = list_natural_sources(shared_dir / "data/natural")
    assert [s[0].parent.name for s in srcs] == ["ECSSD", "HumanSeg", "SOD", "WeizmannHorse"]
    ds = SyntheticDefocusDataset(srcs, size=320, length=6, seed=0)
    for i in range(6):
        img, in_focus, info = ds.render(i)
        assert img.shape == (320, 320, 3) and in_focus.shape == (320, 320)
        if info["case"] == "near":
            assert 0.0 < in_focus.mean() < 1.0
        if "HumanSeg" in info["source"]:
            assert info["case"] in ("near", "full")


def test_foreground_masks_are_read_at_their_own_full_scale(tmp_path):
    """A 0/1 foreground mask is the same mask as its 0/255 form (not an all-background one); soft edges stay."""
    from defocus.data.synth import load_source

    rng = np.random.default_rng(0)
    Image.fromarray(_texture(rng)).save(tmp_path / "photo.png")
    soft = (_square().astype(np.float64) * 255).astype(np.uint8)
    soft[SIZE // 4, :] = 128                                   # a soft row
    masks = {"soft": soft, "zero_one": _square().astype(np.uint8)}
    for name, arr in masks.items():
        Image.fromarray(arr).save(tmp_path / f"{name}.png")
    from types import SimpleNamespace

    def mask_of(name):
        return np.asarray(load_source(SimpleNamespace(image=tmp_path / "photo.png", mask=tmp_path / f"{name}.png"),
                                      None)[1])

    assert np.array_equal(mask_of("soft"), soft)
    assert np.array_equal(mask_of("zero_one"), _square().astype(np.uint8) * 255)
