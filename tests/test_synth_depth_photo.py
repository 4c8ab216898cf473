"""Depth-aware synthetic scenes from photos with measured depth: physics labels, missing depth, splits, config."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from defocus.config import load_config, parse_dataclass, SyntheticData
from defocus.data.depth_photos import list_depth_photos, load_depth_photo
from defocus.data.registry import resolve_split as split_stems
from defocus.data.synth import SynthConfig, SyntheticDefocusDataset, render_depth_photo
from defocus.engine.data import build_synthetic

REPO = Path(__file__).resolve().parents[1]
DFD = REPO.parent / "shared" / "data" / "pairs" / "dfd_indoor"
PLAIN = dict(size=None, highlight_prob=0.0, noise_prob=0.0, jpeg_prob=0.0, depth_photo_crop=(1.0, 1.0))


def _texture(rng, h=96, w=128, block=3) -> np.ndarray:
    img = rng.integers(20, 236, (h // block + 1, w // block + 1, 3)).astype(np.uint8)
    return img.repeat(block, 0).repeat(block, 1)[:h, :w]


def _ramp_mm(h=96, w=128, near=800.0, far=4000.0) -> np.ndarray:
    """A floor receding upwards: depth grows smoothly from the bottom row to the top row."""
    t = np.linspace(1.0, 0.0, h)[:, None] * np.ones((1, w))
    return (near + (far - near) * t).astype(np.uint16)


def test_labels_follow_the_circle_of_confusion():
    cfg = SynthConfig(**PLAIN, depth_blur=(8.0, 8.0), depth_photo_focus=(0.5, 0.5))
    res = render_depth_photo(_texture(np.random.default_rng(0)), _ramp_mm(), np.random.default_rng(1), cfg)
    t_in, t_out = cfg.depth_band
    coc, blurred = res.coc, ~res.in_focus & ~res.ignore
    assert res.image.shape == (96, 128, 3) and res.depth.dtype == np.float32
    assert res.in_focus.any() and blurred.any() and res.ignore.any()
    assert (coc[res.in_focus] < t_in).all()                         # in focus: CoC below the band
    # blurred: the pixel's own CoC is above the band, or a blurred nearer slice spreads its light over it
    reach = ndimage.binary_dilation(coc > t_out, iterations=int(math.ceil(res.info["largest_coc"])) + 1)
    assert (blurred <= reach).all()
    assert (coc[blurred] > t_in).mean() > 0.9
    far_from_blur = (coc > t_in) & (coc < t_out) & ~ndimage.binary_dilation(coc > t_out, iterations=12)
    assert far_from_blur.any() and res.ignore[far_from_blur].all()   # the band between is undetermined
    focus = res.info["focus"]
    assert res.depth.min() >= 0.8 - 1e-3 and res.depth.max() <= 4.0 + 1e-3   # metres
    assert res.depth.min() < focus < res.depth.max()                 # the focal plane cuts through the scene


def test_missing_depth_is_undetermined_and_filled_from_the_nearest_reading():
    depth = _ramp_mm()
    depth[40:60, 10:50] = 0
    cfg = SynthConfig(**PLAIN, depth_blur=(4.0, 4.0))
    res = render_depth_photo(_texture(np.random.default_rng(2)), depth, np.random.default_rng(3), cfg)
    assert res.ignore[40:60, 10:50].all() and not res.in_focus[40:60, 10:50].any()
    assert (res.depth[40:60, 10:50] > 0).all()
    # filled from the nearest reading: rows above the hole take row 39, rows below it row 60 (columns inside)
    assert np.allclose(res.depth[41, 30], depth[39, 30] / 1000.0) and np.allclose(res.depth[58, 30], depth[60, 30] / 1000.0)
    assert res.info["missing_fraction"] == pytest.approx(20 * 40 / (96 * 128))
    with pytest.raises(ValueError, match="no reading"):
        render_depth_photo(_texture(np.random.default_rng(2)), np.zeros_like(depth), np.random.default_rng(3), cfg)


def test_in_focus_only_where_the_source_is_verified_sharp():
    img = _texture(np.random.default_rng(4))
    img[:, :51] = 128          # a flat wall over the two left cells of the 4 x 5 verification grid: nothing to verify
    flat = np.full((96, 128), 2000, np.uint16)                      # everything on the focal plane
    res = render_depth_photo(img, flat, np.random.default_rng(5), SynthConfig(**PLAIN))
    assert (res.coc < 0.5).all()
    assert not res.in_focus[:, :51].any() and res.ignore[:, :51].all()
    assert res.in_focus[:, 70:].mean() > 0.9


def test_fixed_seed_is_deterministic_and_output_is_square_at_size():
    img, depth = _texture(np.random.default_rng(6)), _ramp_mm()
    cfg = SynthConfig(size=64)
    a = render_depth_photo(img, depth, np.random.default_rng(7), cfg)
    b = render_depth_photo(img, depth, np.random.default_rng(7), cfg)
    c = render_depth_photo(img, depth, np.random.default_rng(8), cfg)
    assert a.image.shape == (64, 64, 3) and a.in_focus.shape == a.depth.shape == a.coc.shape == (64, 64)
    for x, y in ((a.image, b.image), (a.in_focus, b.in_focus), (a.ignore, b.ignore), (a.depth, b.depth)):
        assert np.array_equal(x, y)
    assert not np.array_equal(a.image, c.image)


def _fake_folder(root: Path, stems=("s0", "s1", "s2", "s3"), without_depth=("s3",)) -> Path:
    rng = np.random.default_rng(0)
    for sub in ("narrow_f8", "depth"):
        (root / sub).mkdir(parents=True)
    rows = ["stem,wide_f2.8,narrow_f8,depth"]
    for s in stems:
        Image.fromarray(_texture(rng, 60, 90)).save(root / "narrow_f8" / f"{s}.jpg", quality=95)
        depth = ""
        if s not in without_depth:
            Image.fromarray(_ramp_mm(60, 90).astype(np.uint16)).save(root / "depth" / f"{s}.png")
            depth = f"depth/{s}.png"
        rows.append(f"{s},,narrow_f8/{s}.jpg,{depth}")
    (root / "pairs.csv").write_text("\n".join(rows) + "\n")
    return root


def test_dataset_uses_only_the_listed_scenes_and_skips_those_without_depth(tmp_path):
    root = _fake_folder(tmp_path / "dfd")
    (tmp_path / "train.txt").write_text("s0\ns1\ns3\n")
    assert [p.stem for p in list_depth_photos(root)] == ["s0", "s1", "s2"]
    photos = list_depth_photos(root, str(tmp_path / "train.txt"))
    assert [p.stem for p in photos] == ["s0", "s1"]
    image, depth = load_depth_photo(photos[0])
    assert image.size == (90, 60) and depth.dtype == np.uint16 and depth.shape == (60, 90)
    cfg = SynthConfig(depth_prob=1.0, depth_photo_prob=1.0)
    ds = SyntheticDefocusDataset(["procedural:2"], size=48, length=12, seed=1, cfg=cfg, depth_photos=photos,
                                 with_depth=True)
    used = set()
    for i in range(12):
        image, in_focus, info = ds.render(i)
        assert info["case"] == "depth_photo" and image.shape == (48, 48, 3)
        used.add(Path(info["source"]).stem)
    assert used == {"s0", "s1"}
    item = ds[0]
    assert item["depth"].shape == (48, 48) and 0.7 < item["depth"].min() and item["depth"].max() < 4.1


def test_without_depth_photos_or_with_probability_zero_renders_are_unchanged(tmp_path):
    assert SynthConfig().depth_photo_prob == 0.0
    photos = list_depth_photos(_fake_folder(tmp_path / "dfd"))
    cfg = SynthConfig(depth_prob=0.6)
    plain = SyntheticDefocusDataset(["procedural:3"], size=48, length=5, seed=3, cfg=cfg)
    given = SyntheticDefocusDataset(["procedural:3"], size=48, length=5, seed=3, cfg=cfg, depth_photos=photos)
    for i in range(5):
        a, b = plain.render(i), given.render(i)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2]["case"] != "depth_photo"


@pytest.mark.skipif(not DFD.is_dir(), reason="the aperture pairs are not available")
def test_the_packaged_split_keeps_val_and_test_scenes_out():
    train, val, test = (set(split_stems(s)) for s in ("dfd-train", "dfd-val", "dfd-test"))
    assert not train & (val | test)
    everything = list_depth_photos(DFD)
    assert len(everything) == 75                                   # 81 scenes, 6 without a depth map
    spec = parse_dataclass(SyntheticData, dict(sources=["procedural:2"], length=16, depth_photos=str(DFD),
                                               depth_photos_split="dfd-train",
                                               cfg=dict(size=48, depth_prob=1.0, depth_photo_prob=1.0)), "synthetic")
    ds = build_synthetic(spec, 48, None, seed=0)
    stems = {p.stem for p in ds.depth_photos}
    assert stems and stems <= train and len(stems) == len(train & {p.stem for p in everything})
    for i in range(16):
        info = ds.render(i)[2]
        assert Path(info["source"]).stem in train


def test_training_config_with_depth_photos_parses_and_bad_values_name_the_key(tmp_path):
    cfg = load_config(REPO / "configs" / "synth_depth_lite2.yaml")
    syn = cfg.data.synthetic
    assert syn.depth_photos == "../shared/data/pairs/dfd_indoor" and syn.depth_photos_split == "dfd-train"
    assert syn.cfg.depth_photo_prob == 0.3
    base = dict(sources=["procedural:2"], depth_photos="some/folder")
    for values, key in ((dict(base, depth_photos=[1]), "depth_photos"),
                        (dict(base, cfg=dict(depth_photo_prob="often")), "depth_photo_prob"),
                        (dict(base, cfg=dict(depth_photo_prob=1.5)), "cfg"),
                        (dict(sources=["procedural:2"], depth_photos_split="dfd-train"), "depth_photos_split"),
                        (dict(sources=["procedural:2"], cfg=dict(depth_photo_prob=0.3)), "depth_photo_prob")):
        with pytest.raises(ValueError, match=key):
            parse_dataclass(SyntheticData, values, "synthetic")
    with pytest.raises(ValueError, match="unknown split"):
        split_stems("dfd-nope")
