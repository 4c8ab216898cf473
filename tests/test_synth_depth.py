"""Depth-aware synthetic defocus: layouts, back-to-front compositing without halos, label band, CoC range, items."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from defocus.data import depth_layouts
from defocus.data.synth import SynthConfig, SyntheticDefocusDataset, render_depth_sample, render_sample, write_synthetic
from defocus.data.transforms import train_transform

SIZE = 128
# no randomness beyond the geometry and the lens
PLAIN = dict(size=None, crop_prob=0.0, highlight_prob=0.0, noise_prob=0.0, jpeg_prob=0.0, depth_prob=1.0,
             depth_occluder_prob=0.0, depth_float_prob=0.0)


def _cfg(**kw) -> SynthConfig:
    return SynthConfig(**{**PLAIN, **kw})


def _texture(rng, size=SIZE, block=4) -> np.ndarray:
    n = size // block
    return rng.integers(20, 236, (n, n, 3)).astype(np.uint8).repeat(block, 0).repeat(block, 1)


def _subject(size=SIZE) -> np.ndarray:
    fg = np.zeros((size, size), bool)
    fg[size // 4: 3 * size // 4, 3 * size // 8: 5 * size // 8] = True
    return fg


def _red_on_green(rng, size=SIZE):
    img = _texture(rng, size)
    img[..., 0] = 0                       # background: no red at all
    fg = _subject(size)
    red = _texture(np.random.default_rng(9), size)[..., 0] // 2 + 120     # a textured (verifiably sharp) red subject
    img[fg] = 0
    img[fg, 0] = red[fg]
    return img, fg


def test_depth_off_by_default_and_depth_knobs_do_not_touch_layered_renders():
    assert SynthConfig().depth_prob == 0.0
    img, fg = _red_on_green(np.random.default_rng(0))
    a = render_sample(img, fg, np.random.default_rng(3), SynthConfig(size=SIZE))
    b = render_sample(img, fg, np.random.default_rng(3), SynthConfig(size=SIZE, depth_blur=(3.0, 4.0),
                                                                     depth_band=(0.5, 3.0), depth_occluder_prob=1.0))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("kind", depth_layouts.LAYOUTS)
def test_layouts_are_positive_and_the_ground_recedes_upwards(kind):
    rng = np.random.default_rng(1)
    d = depth_layouts.background_depth((60, 80), rng, kind)
    assert d.shape == (60, 80) and np.isfinite(d).all() and (d > 0).all()
    if kind == "ground":   # nearer at the bottom of the frame than at the top
        assert d[-1].mean() < d[0].mean()


def test_subject_stands_on_the_ground_in_front_of_what_is_behind_it():
    fg = _subject(64)
    for seed in range(10):
        lay = depth_layouts.draw_layout(fg, np.random.default_rng(seed), layout_probs=(1, 0, 0), float_prob=0.0)
        assert (lay.background[fg] > lay.subject).all()
        y = np.nonzero(fg)[0].max()
        x = int(np.median(np.nonzero(fg[y])[0]))
        assert lay.background[y + 1, x] == pytest.approx(lay.subject, rel=0.1)   # the ground just under its feet is at its depth


def test_focus_on_the_surface_cuts_through_it():
    fg = np.zeros((64, 64), bool)
    hits = 0
    for seed in range(20):
        lay = depth_layouts.draw_layout(fg, np.random.default_rng(seed), focus_probs=(1, 0, 0, 0))
        hits += lay.background.min() <= lay.focus <= lay.background.max()
    assert hits == 20


def test_sharp_subject_leaves_no_halo_on_the_blurred_background():
    img, fg = _red_on_green(np.random.default_rng(2))
    s = render_depth_sample(img, fg, np.random.default_rng(0), _cfg(depth_focus=(0, 1, 0, 0), depth_blur=(8.0, 8.0)))
    assert s.info["r_subject"] == 0.0 and s.coc[~fg].max() > 4.0
    outside = ~np.pad(fg, 1)[:-2, 1:-1] & ~np.pad(fg, 1)[2:, 1:-1] & ~np.pad(fg, 1)[1:-1, :-2] & ~np.pad(fg, 1)[1:-1, 2:]
    outside &= ~fg
    assert s.image[outside, 0].max() <= 2                     # no red light leaked into the background
    assert np.abs(s.image[fg][:, 0].astype(int) - img[fg][:, 0]).max() <= 1   # the subject itself is untouched
    assert s.in_focus[fg].mean() > 0.95 and not s.in_focus[s.coc > 2.0].any()


def test_blurred_near_subject_spreads_over_the_background_and_near_occludes_far():
    img, fg = _red_on_green(np.random.default_rng(2))
    s = render_depth_sample(img, fg, np.random.default_rng(0), _cfg(depth_focus=(0, 0, 0, 1), depth_blur=(12.0, 12.0)))
    assert s.info["r_subject"] > 3.0
    ring = np.zeros_like(fg)
    ys, xs = np.nonzero(fg)
    ring[ys.min(): ys.max() + 1, xs.max() + 1: xs.max() + 3] = True
    assert s.image[ring, 0].mean() > 60                        # see-through soft edge of a blurred foreground
    # an occluder (blue) nearer than everything: opaque in its interior
    occ_img = np.zeros((SIZE, SIZE, 3), np.uint8)
    occ_img[..., 2] = 255
    from PIL import Image
    occ = (Image.fromarray(occ_img), Image.fromarray((np.ones((SIZE, SIZE)) * 255).astype(np.uint8)))
    s = render_depth_sample(img, fg, np.random.default_rng(1), _cfg(depth_focus=(0, 1, 0, 0), depth_blur=(2.0, 2.0),
                                                                    depth_occluder_scale=(0.9, 0.9)), occluder=occ)
    assert s.info["occluder_radius"] is not None
    near = s.depth <= s.depth.min() * 1.0001
    assert near.sum() > 500 and (s.depth[near] < s.info["subject_depth"]).all()
    r = int(np.ceil(s.info["occluder_radius"])) + 1
    from scipy import ndimage
    inner = ndimage.binary_erosion(near, iterations=r)
    assert inner.any() and (s.image[inner, 2] >= 250).all() and (s.image[inner, :2] <= 2).all()


def test_labels_follow_the_coc_band():
    rng = np.random.default_rng(5)
    img = _texture(rng, 192)
    fg = np.zeros((192, 192), bool)
    cfg = _cfg(depth_layouts=(1, 0, 0), depth_focus=(1, 0, 0, 0), depth_blur=(6.0, 6.0), depth_band=(1.0, 2.0))
    seen = 0
    for seed in range(6):
        s = render_depth_sample(img, fg, np.random.default_rng(seed), cfg)
        c = s.coc
        assert not (s.in_focus & s.ignore).any()
        assert not s.in_focus[c > 1.6].any()                        # never in focus well above the threshold
        assert not (~s.in_focus & ~s.ignore)[c < 1.0 - 0.4].any()   # never called blurred well below it
        band = (c > 1.35) & (c < 1.65)
        if band.sum() > 50:
            seen += 1
            assert s.ignore[band].mean() > 0.9                      # the band between is undetermined
        if (c < 0.5).sum() > 200 and s.info["background_in_focus_sharp"]:
            assert s.in_focus[c < 0.5].mean() > 0.9
    assert seen >= 2


def test_in_focus_only_where_the_source_is_verified_sharp():
    # a smooth gradient carries no proof of sharpness: its in-focus part is undetermined, never labelled in focus
    g = np.linspace(40, 200, SIZE).astype(np.uint8)
    img = np.stack([np.tile(g, (SIZE, 1))] * 3, -1)
    fg = np.zeros((SIZE, SIZE), bool)
    s = render_depth_sample(img, fg, np.random.default_rng(0), _cfg(depth_focus=(1, 0, 0, 0)))
    assert not s.in_focus.any() and s.ignore[s.coc < 0.5].all()


def test_coc_covers_moderate_and_large_blur():
    rng = np.random.default_rng(7)
    img, fg = _texture(rng, 96), _subject(96)
    cfg = SynthConfig(size=96, noise_prob=0.0, jpeg_prob=0.0, depth_prob=1.0)
    moderate = large = 0
    for seed in range(24):
        s = render_depth_sample(img, fg, np.random.default_rng(seed), cfg)
        c = s.coc
        assert c.max() <= 2.0 * cfg.depth_blur[1] + 1e-3 and c.min() >= 0.0
        moderate += ((c >= 1.0) & (c <= 3.0)).mean() > 0.2
        large += (c > 8.0).mean() > 0.2
        assert s.depth.shape == (96, 96) and (s.depth > 0).all()
    assert moderate >= 4 and large >= 2


def test_dataset_items_carry_valid_and_collate_with_labelled_pairs(tmp_path):
    cfg = SynthConfig(depth_prob=0.5)
    ds = SyntheticDefocusDataset(["procedural:6"], size=64, length=6, seed=1, cfg=cfg,
                                 transform=train_transform(64))
    items = [ds[i] for i in range(6)]
    assert all(it["valid"].shape == (1, 64, 64) for it in items)
    batch = torch.utils.data.default_collate(items)
    assert batch["valid"].shape == (6, 1, 64, 64)
    cases = [ds.render(i)[2]["case"] for i in range(6)]
    assert "depth" in cases
    out = write_synthetic(["procedural:6"], tmp_path / "s", 6, seed=1, size=64, cfg=cfg, progress=False)
    depth_files = sorted((out / "depth").glob("*.npy"))
    assert len(depth_files) == cases.count("depth") and len(list((out / "ignore").glob("*.png"))) == 6
    assert np.load(depth_files[0]).shape == (64, 64)
    plain = SyntheticDefocusDataset(["procedural:2"], size=64, length=2, seed=1)
    assert "valid" not in plain[0]
    assert plain.with_valid is False and SyntheticDefocusDataset(["procedural:2"], size=64, with_valid=True)[0]["valid"].all()


def test_training_data_mixes_synthetic_scenes_with_labelled_pairs(tmp_path):
    from PIL import Image

    from defocus.config import DataConfig, parse_dataclass
    from defocus.engine.data import build_train_dataset

    rng = np.random.default_rng(0)
    for sub in ("images", "masks", "ignore"):
        (tmp_path / sub).mkdir()
    for k in range(2):
        Image.fromarray(_texture(rng, 48)).save(tmp_path / "images" / f"p{k}.png")
        Image.fromarray(((rng.random((48, 48)) > 0.5) * 255).astype(np.uint8)).save(tmp_path / "masks" / f"p{k}.png")
        ign = np.zeros((48, 48), np.uint8)
        ign[:8] = 255
        Image.fromarray(ign).save(tmp_path / "ignore" / f"p{k}.png")
    data = parse_dataclass(DataConfig, dict(
        train=[dict(name="folder", root=str(tmp_path), ignore_dir=str(tmp_path / "ignore"))],
        synthetic=dict(sources=["procedural:3"], length=3, cfg=dict(depth_prob=0.0)), size=32), "data")
    ds = build_train_dataset(data, mean=(0.5,) * 3, std=(0.5,) * 3)
    assert len(ds) == 5
    batch = torch.utils.data.default_collate([ds[i] for i in range(5)])
    assert batch["valid"].shape == (5, 1, 32, 32)
    assert batch["valid"][:3].all() and not batch["valid"][3:].all()   # synthetic layered: all determined


def test_items_carry_the_depth_map_through_flip_and_resize():
    cfg = SynthConfig(depth_prob=1.0, noise_prob=0.0, jpeg_prob=0.0)
    raw = SyntheticDefocusDataset(["procedural:3"], size=64, length=3, seed=2, cfg=cfg, with_depth=True)
    flipped = SyntheticDefocusDataset(["procedural:3"], size=64, length=3, seed=2, cfg=cfg, with_depth=True,
                                      transform=train_transform(32, hflip=1.0, jitter=0.0))
    for i in range(3):
        d = raw[i]["depth"]
        assert d.shape == (64, 64) and (d > 0).all()
        t = flipped[i]["depth"]
        assert t.shape == (1, 32, 32)
        expect = d[:, ::-1][1::2, 1::2]                 # flipped first, then nearest-exact halving (odd pixels)
        assert torch.allclose(t[0], torch.from_numpy(expect.copy()), rtol=1e-6)
