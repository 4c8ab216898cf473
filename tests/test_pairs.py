"""Labels from photo pairs: alignment, the labelling rules, writing, the CLI, prepared sets and their splits."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from defocus.cli import app
from defocus.data import load_pairs, split_stems
from defocus.data.pair_sets import excluded_pairs, mfifb_scene, prepare_pairs, split_scenes
from defocus.data.pairs import (PairError, PairLabelConfig, align, complementarity, label_aperture_pair,
                                label_focus_pair, phase_shift, read_ignore, warp)


def texture(shape=(160, 200), seed=0) -> np.ndarray:
    """A strongly textured float image in [0, 1] (smoothed noise)."""
    rng = np.random.default_rng(seed)
    y = ndimage.gaussian_filter(rng.random(shape), 1.0)
    return np.clip((y - y.mean()) * 6 + 0.5, 0, 1).astype(np.float32)


def u8(y: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(y, 0, 1) * 255).round().astype(np.uint8)[..., None], 3, axis=2)


def blurred(y, sigma):
    return ndimage.gaussian_filter(y, sigma)


def halves(shape):
    left = np.zeros(shape, bool)
    left[:, : shape[1] // 2] = True
    return left


def focus_pair(shape=(160, 200), sigma=3.0, seed=0):
    """A is sharp on the left half, B on the right half (same scene, same viewpoint)."""
    y = texture(shape, seed)
    left = halves(shape)
    a = np.where(left, y, blurred(y, sigma))
    b = np.where(left, blurred(y, sigma), y)
    return a, b, left


# ----------------------------------------------------------------------------------------------------------------
# Alignment
# ----------------------------------------------------------------------------------------------------------------

def test_phase_shift_sign_and_subpixel_alignment():
    y = texture((128, 160))
    mov = ndimage.shift(y, (3.3, -5.6), order=3, mode="nearest")
    d, peak = phase_shift(y, mov)
    assert peak > 0.5 and np.allclose(d, (-3.3, 5.6), atol=0.5)
    aligned, al = align(y, mov)
    assert np.allclose(al.shift, (-3.3, 5.6), atol=0.1)
    inner = (slice(12, -12), slice(12, -12))
    assert np.abs(aligned - y)[inner].mean() < 0.3 * np.abs(mov - y)[inner].mean()  # bilinear resampling
    assert not al.valid[:3].any() and al.valid[20:-20, 20:-20].all()  # the uncovered frame band


def test_alignment_recovers_a_magnification_change():
    y = texture((200, 200), seed=1)
    centre = np.array([99.5, 99.5])
    mov = warp(y, (-1.0, 2.0), -0.01, centre)  # what refocusing a lens does to the second shot
    _, al = align(y, mov)
    assert abs(al.scale - 0.01) < 0.002 and np.allclose(al.shift, (1.0, -2.0), atol=0.2)


def test_unrelated_images_cannot_be_aligned():
    with pytest.raises(PairError, match="cannot be aligned|too far apart"):
        label_focus_pair(u8(texture(seed=1)), u8(texture(seed=2)))


# ----------------------------------------------------------------------------------------------------------------
# Labelling rules
# ----------------------------------------------------------------------------------------------------------------

def test_focus_pair_labels_follow_the_sharper_image_and_are_complementary():
    a, b, left = focus_pair()
    labels = label_focus_pair(u8(a), u8(b))
    la, lb = labels.first, labels.second
    det = ~la.undetermined
    assert det.mean() > 0.5
    assert np.array_equal(la.in_focus[det], left[det])           # no wrong label in A
    assert np.array_equal(lb.in_focus[~lb.undetermined], ~left[~lb.undetermined])
    assert complementarity(labels) == 1.0
    # the band around the transition is left undetermined
    w = a.shape[1] // 2
    assert la.undetermined[:, w - 3:w + 1].mean() > 0.95


def test_brightness_difference_and_a_shift_do_not_change_the_labels():
    a, b, left = focus_pair(seed=3)
    b2 = ndimage.shift(0.8 * b + 0.05, (1.5, -2.0), order=1, mode="nearest")
    labels = label_focus_pair(u8(a), u8(b2))
    det = ~labels.first.undetermined
    assert det.mean() > 0.4
    assert np.mean(labels.first.in_focus[det] == left[det]) > 0.99


def test_textureless_regions_are_undetermined():
    a, b, _ = focus_pair(seed=4)
    a[40:120, 20:80] = 0.5
    b[40:120, 20:80] = 0.5
    labels = label_focus_pair(u8(a), u8(b))
    assert labels.first.undetermined[50:110, 30:70].all() and labels.second.undetermined[50:110, 30:70].all()


def test_a_region_blurred_in_both_images_is_not_called_in_focus():
    y = texture(seed=5)
    left = halves(y.shape)
    a = np.where(left, blurred(y, 2.0), y)   # left: A less blurred than B, but not sharp (re-blur ratio 1.4)
    b = np.where(left, blurred(y, 5.0), blurred(y, 3.0))
    labels = label_focus_pair(u8(a), u8(b))
    region = (slice(20, -20), slice(20, 70))
    assert not labels.first.in_focus[region].any()                # fails the sharpness floor
    assert not labels.second.in_focus[region].any()
    assert (~labels.second.undetermined[region]).mean() > 0.5     # B, blurrier still, is blurred
    assert labels.first.undetermined[region][~labels.second.undetermined[region]].all()  # A: sharper, not sharp


def test_margin_and_floor_are_named_options():
    a, b, _ = focus_pair(seed=6, sigma=1.2)                     # a mild focus difference
    strict = label_focus_pair(u8(a), u8(b), PairLabelConfig(margin=8.0))
    loose = label_focus_pair(u8(a), u8(b), PairLabelConfig(margin=1.5))
    assert strict.first.determined_fraction < loose.first.determined_fraction
    with pytest.raises(ValueError):
        PairLabelConfig(margin=0.5)


def test_aperture_pair_labels_the_wide_image():
    y = texture(seed=7)
    left = halves(y.shape)
    narrow = y
    wide = np.where(left, y, blurred(y, 3.0))
    labels = label_aperture_pair(u8(wide), u8(narrow))
    assert labels.second is None
    det = ~labels.first.undetermined
    assert det.mean() > 0.5 and np.array_equal(labels.first.in_focus[det], left[det])


def test_pairs_of_different_sizes_are_refused():
    with pytest.raises(PairError, match="differ in size"):
        label_focus_pair(u8(texture((100, 120))), u8(texture((100, 121))))


# ----------------------------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture
def pair_files(tmp_path):
    a, b, _ = focus_pair()
    pa, pb = tmp_path / "near.png", tmp_path / "far.png"
    Image.fromarray(u8(a)).save(pa)
    Image.fromarray(u8(b)).save(pb)
    return pa, pb


def test_cli_pairs_writes_masks_ignore_masks_and_a_sheet(pair_files, tmp_path):
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["data", "pairs", str(pair_files[0]), str(pair_files[1]), "-o", str(out),
                                   "--sheet"])
    assert res.exit_code == 0, res.output
    for stem in ("near", "far"):
        assert (out / "images" / f"{stem}.png").read_bytes() == (tmp_path / f"{stem}.png").read_bytes()
        mask = np.asarray(Image.open(out / "masks" / f"{stem}.png"))
        ignore = read_ignore(out / "ignore" / f"{stem}.png")
        assert mask.shape == ignore.shape == (160, 200) and set(np.unique(mask)) <= {0, 255}
        assert not (mask[ignore] > 0).any()                     # undetermined pixels are never "in focus"
    sheet = Image.open(out / "sheets" / "near.png")
    assert sheet.height > 400 and sheet.width > 3 * 240         # two rows of image | mask | overlay


@pytest.mark.parametrize("case", ["missing", "unreadable", "sizes", "unaligned", "same-photo"])
def test_cli_pairs_bad_input_is_one_line_and_writes_nothing(pair_files, tmp_path, case):
    a, b = pair_files
    if case == "missing":
        b = tmp_path / "nope.jpg"
    elif case == "unreadable":
        b.write_bytes(b"not an image")
    elif case == "sizes":
        Image.fromarray(u8(texture((100, 100)))).save(b)
    elif case == "same-photo":  # two names, one photo: no pixel differs in sharpness
        b.write_bytes(a.read_bytes())
    else:
        Image.fromarray(u8(texture(seed=9))).save(b)
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["data", "pairs", str(a), str(b), "-o", str(out)])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and res.output.startswith("error: ")
    assert "Traceback" not in res.output and not out.exists()


# ----------------------------------------------------------------------------------------------------------------
# Prepared sets
# ----------------------------------------------------------------------------------------------------------------

def test_prepare_mfifb_layout_skips_excluded_pairs_and_loads_with_ignore_masks(tmp_path):
    src = tmp_path / "mfifb"
    for k, scene in enumerate(("mffw_01", "savic_02", "aymaz_01")):
        a, b, _ = focus_pair(seed=10 + k)
        (src / scene).mkdir(parents=True)
        Image.fromarray(u8(a)).save(src / scene / f"{scene}_A.png")
        Image.fromarray(u8(b)).save(src / scene / f"{scene}_B.png")
    (src / "broken").mkdir()
    Image.fromarray(u8(texture())).save(src / "broken" / "broken_A.png")
    with pytest.raises(Exception, match="missing"):
        prepare_pairs("mfifb", src, tmp_path / "root")
    (src / "broken" / "broken_A.png").unlink()
    report = prepare_pairs("mfifb", src, tmp_path / "root", sheets=tmp_path / "sheets")
    assert report.written["MFIFB"] == 12 and any(s.startswith("aymaz_01") for s in report.skipped)
    pairs = load_pairs("mfifb", tmp_path / "root")
    assert [p.stem for p in pairs] == ["mffw_01_A", "mffw_01_B", "savic_02_A", "savic_02_B"]
    assert all(p.ignore is not None and p.ignore.is_file() for p in pairs)
    assert (tmp_path / "sheets" / "mffw_01.png").is_file()
    from defocus.data.verify import verify_dataset

    checked = verify_dataset("mfifb", tmp_path / "root")  # reads every ignore mask
    assert len(checked.undetermined_fractions) == 4
    assert all(0.0 <= f < 1.0 for f in checked.undetermined_fractions)
    assert [np.mean(read_ignore(p.ignore)) for p in pairs] == pytest.approx(checked.undetermined_fractions)

    from defocus.data import DBDDataset
    from defocus.data.transforms import train_transform

    item = DBDDataset(pairs[:1], train_transform(64, hflip=1.0, jitter=0))[0]
    assert item["valid"].shape == item["target"].shape == (1, 64, 64)
    valid = item["valid"][0].numpy() > 0.5
    ignore = read_ignore(pairs[0].ignore)
    flipped = np.asarray(Image.fromarray(~ignore).resize((64, 64), Image.NEAREST))[:, ::-1]
    assert np.mean(valid == flipped) > 0.97                     # flipped and resized with the mask
    raw = DBDDataset(pairs[:1])[0]
    assert np.array_equal(raw["valid"].astype(bool), ~ignore)


def test_prepare_dfd_labels_the_wide_images(tmp_path):
    src = tmp_path / "dfd"
    rows = []
    for k in range(2):
        y = texture(seed=20 + k)
        wide = np.where(halves(y.shape), y, blurred(y, 3.0))
        for sub, img in (("wide_f2.8", wide), ("narrow_f8", y)):
            (src / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(u8(img)).save(src / sub / f"s{k}.png")
        rows.append({"stem": f"s{k}", "wide_f2.8": f"wide_f2.8/s{k}.png", "narrow_f8": f"narrow_f8/s{k}.png"})
    with (src / "pairs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["stem", "wide_f2.8", "narrow_f8"])
        w.writeheader()
        w.writerows(rows)
    prepare_pairs("dfd", src, tmp_path / "root")
    pairs = load_pairs("dfd", tmp_path / "root")
    assert [p.stem for p in pairs] == ["s0", "s1"]


def test_cli_label_window_changes_the_labels(tmp_path):
    src = tmp_path / "dfd"
    y = texture(seed=30)
    wide = np.where(halves(y.shape), y, blurred(y, 3.0))
    for sub, img in (("wide_f2.8", wide), ("narrow_f8", y)):
        (src / sub).mkdir(parents=True)
        Image.fromarray(u8(img)).save(src / sub / "s0.png")
    (src / "pairs.csv").write_text("stem,wide_f2.8,narrow_f8\ns0,wide_f2.8/s0.png,narrow_f8/s0.png\n")
    ignored = {}
    for window in ("0.02", "0.01"):
        root = tmp_path / f"root{window}"
        res = CliRunner().invoke(app, ["data", "prepare", "dfd", "--src", str(src), "--root", str(root),
                                       "--label-window", window, "--no-verify"])
        assert res.exit_code == 0, res.output
        ignored[window] = read_ignore(root / "DFD" / "ignore" / "s0.png")
    # 0.02 is the default (the benchmark's labels); half the window narrows the undetermined band
    prepare_pairs("dfd", src, tmp_path / "default")
    assert np.array_equal(ignored["0.02"], read_ignore(tmp_path / "default" / "DFD" / "ignore" / "s0.png"))
    assert ignored["0.01"].mean() < ignored["0.02"].mean()


def test_cli_prepare_of_an_empty_folder_fails_cleanly(tmp_path):
    (tmp_path / "empty").mkdir()
    res = CliRunner().invoke(app, ["data", "prepare", "mfifb", "--src", str(tmp_path / "empty"),
                                   "--root", str(tmp_path / "root")])
    assert res.exit_code == 2 and "no image pairs" in res.output and "Traceback" not in res.output


# ----------------------------------------------------------------------------------------------------------------
# Splits
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["mfifb", "dfd"])
def test_split_files_are_by_scene_disjoint_and_sized(family):
    scene = mfifb_scene if family == "mfifb" else (lambda s: s)
    splits = {s: split_stems(f"{family}-{s}.txt") for s in ("train", "val", "test")}
    scenes = {s: {scene(x) for x in stems} for s, stems in splits.items()}
    assert not scenes["train"] & scenes["val"] and not scenes["train"] & scenes["test"]
    assert not scenes["val"] & scenes["test"]
    n = sum(len(v) for v in scenes.values())
    assert abs(len(scenes["val"]) / n - 0.3) < 0.06 and abs(len(scenes["test"]) / n - 0.2) < 0.06
    if family == "mfifb":
        every = [x for v in splits.values() for x in v]
        assert all(f"{scene(x)}_A" in every and f"{scene(x)}_B" in every for x in every)  # both images together
        assert not {scene(x) for x in every} & set(excluded_pairs())


def test_split_scenes_is_deterministic_and_stratified():
    scenes = [f"a_{k:02d}" for k in range(10)] + [f"b_{k:02d}" for k in range(20)]
    group = lambda s: s[0]
    one, two = split_scenes(scenes, group), split_scenes(scenes, group)
    assert one == two
    for g, n in (("a", 10), ("b", 20)):
        vals = [v for s, v in one.items() if s[0] == g]
        assert vals.count("val") == round(0.3 * n) and vals.count("test") == round(0.2 * n)


# ----------------------------------------------------------------------------------------------------------------
# Real pairs (skipped without the shared data)
# ----------------------------------------------------------------------------------------------------------------

def test_real_focus_pair_is_aligned_and_labelled(shared_dir):
    folder = shared_dir / "data" / "pairs" / "mfifb" / "stand_03"
    if not folder.is_dir():
        pytest.skip("pairs not available")
    from defocus.data.pairs import label_files

    _, _, labels = label_files(folder / "stand_03_A.jpg", folder / "stand_03_B.jpg")
    assert max(abs(v) for v in labels.alignment.shift) < 3
    assert 0.2 < labels.first.determined_fraction < 0.9 and complementarity(labels) == 1.0
    # the alarm clock in the left third is the near subject: in focus in A, blurred in B
    h, w = labels.first.in_focus.shape
    clock = (slice(h // 4, 3 * h // 4), slice(w // 20, w // 3))
    det = ~labels.first.undetermined[clock]
    assert det.mean() > 0.5 and labels.first.in_focus[clock][det].mean() > 0.9


def test_pair_labels_train_and_validate_as_a_registered_dataset(tmp_path):
    """Stage-1 training on a prepared pair set: the valid maps reach the loss and the validation scorer."""
    from pathlib import Path

    from defocus.config import load_config
    from defocus.engine import train

    src = tmp_path / "mfifb"
    for k, scene in enumerate(("mffw_01", "savic_02")):
        a, b, _ = focus_pair(shape=(64, 80), seed=30 + k)
        (src / scene).mkdir(parents=True)
        Image.fromarray(u8(a)).save(src / scene / f"{scene}_A.png")
        Image.fromarray(u8(b)).save(src / scene / f"{scene}_B.png")
    prepare_pairs("mfifb", src, tmp_path / "root")
    repo = Path(__file__).resolve().parents[1]
    root = tmp_path / "root"
    cfg = load_config(repo / "configs" / "smoke_stage1.yaml", [
        f"output_dir={tmp_path / 'run'}", "data.synthetic=null", f"data.train=[{{name: mfifb, root: '{root}'}}]",
        f"data.val={{name: mfifb, root: '{root}'}}", "engine.val_every=1", "progress=false"])
    result = train(cfg)
    assert result.complete and result.step == 3
    val = (tmp_path / "run" / "val.csv").read_text().splitlines()
    assert len(val) == 2 and "mae" in val[0]


def test_own_bracket_output_loads_as_a_folder_dataset_with_ignore_masks(pair_files, tmp_path):
    out = tmp_path / "labels"
    res = CliRunner().invoke(app, ["data", "pairs", str(pair_files[0]), str(pair_files[1]), "-o", str(out)])
    assert res.exit_code == 0, res.output
    pairs = load_pairs("folder", image_dir=out / "images", mask_dir=out / "masks", ignore_dir=out / "ignore")
    assert sorted(p.stem for p in pairs) == ["far", "near"] and all(p.ignore.is_file() for p in pairs)
    (out / "ignore" / "far.png").unlink()
    with pytest.raises(Exception, match="without an ignore mask"):
        load_pairs("folder", image_dir=out / "images", mask_dir=out / "masks", ignore_dir=out / "ignore")


def test_a_photo_stored_rotated_is_written_upright_and_lines_up_with_its_masks(pair_files, tmp_path):
    from defocus.data.datasets import DBDDataset

    rotated = []
    for src in pair_files:  # stored turned a quarter left; EXIF orientation 6 says: turn it right to display
        dst = tmp_path / f"{src.stem}_phone.jpg"
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.open(src).transpose(Image.Transpose.ROTATE_90).save(dst, quality=98, exif=exif)
        rotated.append(dst)
    out = tmp_path / "labels"
    res = CliRunner().invoke(app, ["data", "pairs", str(rotated[0]), str(rotated[1]), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["far_phone.png", "near_phone.png"]
    upright = np.asarray(Image.open(out / "images" / "near_phone.png"))
    assert upright.shape[:2] == (160, 200)                    # as displayed, like the photos it was made from
    pairs = load_pairs("folder", image_dir=out / "images", mask_dir=out / "masks", ignore_dir=out / "ignore")
    sample = DBDDataset(pairs)[0]
    assert sample["image"].shape[:2] == sample["target"].shape == (160, 200)
    same = CliRunner().invoke(app, ["data", "pairs", *map(str, pair_files), "-o", str(tmp_path / "plain")])
    plain = np.asarray(Image.open(tmp_path / "plain" / "masks" / "near.png"))
    mask = np.asarray(Image.open(out / "masks" / "near_phone.png"))
    assert same.exit_code == 0 and (mask == plain).mean() > 0.97  # the same labels, up to JPEG noise


def test_sixteen_bit_pairs_are_labelled_as_their_eight_bit_copies(pair_files, tmp_path):
    deep = []
    for src in pair_files:
        dst = tmp_path / f"{src.stem}16.png"
        Image.fromarray(np.asarray(Image.open(src).convert("L")).astype(np.uint16) * 257).save(dst)
        deep.append(dst)
    grey = []
    for src in pair_files:
        dst = tmp_path / f"{src.stem}8.png"
        Image.open(src).convert("L").save(dst)
        grey.append(dst)
    for files, out in ((deep, "o16"), (grey, "o8")):
        res = CliRunner().invoke(app, ["data", "pairs", *map(str, files), "-o", str(tmp_path / out)])
        assert res.exit_code == 0, res.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o16" / "masks" / "near16.png")),
                          np.asarray(Image.open(tmp_path / "o8" / "masks" / "near8.png")))


def test_labelling_a_pair_again_replaces_its_image_of_another_extension(pair_files, tmp_path):
    out = tmp_path / "labels"
    jpgs = []
    for src in pair_files:
        dst = tmp_path / "jpg" / f"{src.stem}.jpg"
        dst.parent.mkdir(exist_ok=True)
        Image.open(src).save(dst, quality=98)
        jpgs.append(dst)
    for files in (jpgs, pair_files):
        res = CliRunner().invoke(app, ["data", "pairs", *map(str, files), "-o", str(out)])
        assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["far.png", "near.png"]
    assert all(p.is_file() for p in jpgs)                      # the sources are never touched


@pytest.mark.parametrize("option", [["--margin", "inf"], ["--window", "nan"], ["--min-region", "2"]])
def test_thresholds_that_cannot_label_are_refused(pair_files, tmp_path, option):
    res = CliRunner().invoke(app, ["data", "pairs", *map(str, pair_files), "-o", str(tmp_path / "o"), *option])
    assert res.exit_code == 2 and res.output.startswith("error: ") and not (tmp_path / "o").exists()
    assert option[0].lstrip("-").replace("-", "_") in res.output          # the setting is named
