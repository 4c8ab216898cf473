"""Uniform crops of labelled photos (`defocus.data.uniform_crops`, `defocus data uniform-crops`): window
selection, the uniformity thresholds, the prepared-set files they write, and the command's errors."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defocus.cli import app
from defocus.data.registry import DataError
from defocus.data import uniform_crops as uc

H, W = 120, 200  # short side 120: windows of 60 px, step 15


def find_uniform_windows(*args, **kwargs):
    """The library function with windows of any size (these label maps are small)."""
    return uc.find_uniform_windows(*args, **{"min_side_px": 1, **kwargs})


def uniform_crops(*args, **kwargs):
    """The library function with windows of any size (these sets are small)."""
    return uc.uniform_crops(*args, **{"min_side_px": 1, **kwargs})


def test_windows_below_the_smallest_side_are_not_kept():
    assert uc.find_uniform_windows(*half_layout()) == {}                      # 60-px windows < 200 px
    assert set(uc.find_uniform_windows(*half_layout(), min_side_px=60)) == {"sharp", "blurred"}


def half_layout():
    """Left part in focus, right part blurred, an undetermined band at the transition (x 90..110)."""
    in_focus = np.zeros((H, W), bool)
    in_focus[:, :100] = True
    undetermined = np.zeros((H, W), bool)
    undetermined[:, 90:110] = True
    return in_focus, undetermined


def write_set(root, stem="scene_A", suffix=".png", in_focus=None, undetermined=None, mask_size=None):
    """A prepared set with one noise image and its labels; returns the image as stored (RGB array)."""
    if in_focus is None:
        in_focus, undetermined = half_layout()
    for sub in ("images", "masks", "ignore"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(root / "images" / f"{stem}{suffix}", quality=90)
    mask = Image.fromarray(in_focus.astype(np.uint8) * 255)
    Image.fromarray(undetermined.astype(np.uint8) * 255).save(root / "ignore" / f"{stem}.png")
    (mask.resize(mask_size) if mask_size else mask).save(root / "masks" / f"{stem}.png")
    return np.asarray(Image.open(root / "images" / f"{stem}{suffix}").convert("RGB"))


def test_windows_come_from_the_uniform_halves_with_the_largest_labelled_share():
    found = find_uniform_windows(*half_layout())
    assert found["sharp"] == (0, 0, 60, 1.0, 1.0)     # first fully labelled window in row order
    assert found["blurred"] == (120, 0, 60, 1.0, 1.0)  # x 105 would hold 5 undetermined columns
    found = find_uniform_windows(*half_layout(), side=0.25, stride=0.5)
    assert found["sharp"][2] == 30 and found["blurred"][:2] == (120, 0)


def test_the_last_window_reaches_the_far_edge():
    in_focus = np.ones((H, W), bool)
    in_focus[:, 190:] = False  # only the last 10 columns blurred, reachable only from x = 140
    found = find_uniform_windows(in_focus, ~in_focus & False, min_determined=0.1, purity=0.1)
    assert found["blurred"][:2] == (140, 0) and found["blurred"][4] == pytest.approx(10 / 60)


def test_purity_threshold():
    in_focus, undetermined = half_layout()
    in_focus[::10, 100::10] = True  # 1 % of the blurred side flips to in focus
    assert "blurred" in find_uniform_windows(in_focus, undetermined, purity=0.98)
    assert "blurred" not in find_uniform_windows(in_focus, undetermined, purity=0.995)
    assert find_uniform_windows(in_focus, undetermined, purity=0.995)["sharp"][4] == 1.0


def test_determined_share_threshold():
    in_focus, undetermined = half_layout()
    undetermined[:, :] = True
    undetermined[::2, :] = False  # half of every window labelled
    assert set(find_uniform_windows(in_focus, undetermined, min_determined=0.4)) == {"sharp", "blurred"}
    assert find_uniform_windows(in_focus, undetermined, min_determined=0.6) == {}


def test_mixed_labels_give_no_crop():
    in_focus = np.indices((H, W)).sum(0) % 2 == 0  # checkerboard: half in focus everywhere
    assert find_uniform_windows(in_focus, np.zeros((H, W), bool)) == {}


@pytest.mark.parametrize("kwargs", [{"side": 0}, {"side": 1.5}, {"stride": 0}, {"purity": 1.2},
                                    {"min_determined": -0.1}])
def test_options_out_of_range(kwargs):
    with pytest.raises(ValueError):
        find_uniform_windows(*half_layout(), **kwargs)


def test_crops_written_as_a_prepared_set_at_full_resolution(tmp_path):
    rgb = write_set(tmp_path / "set", suffix=".jpg")
    crops = uniform_crops(tmp_path / "set", ["scene_A"], tmp_path / "out")
    assert [(c.stem, c.kind, c.x, c.y, c.side) for c in crops] == [("scene_A_blurred", "blurred", 120, 0, 60),
                                                                   ("scene_A_sharp", "sharp", 0, 0, 60)]
    out = tmp_path / "out"
    assert (out / "blurred.txt").read_text() == "scene_A_blurred\n"
    assert (out / "sharp.txt").read_text() == "scene_A_sharp\n"
    assert len((out / "crops.tsv").read_text().splitlines()) == 3
    for c in crops:
        image = np.asarray(Image.open(out / "images" / f"{c.stem}.png"))
        assert np.array_equal(image, rgb[c.y:c.y + 60, c.x:c.x + 60])  # the stored pixels, not resampled
        mask = np.asarray(Image.open(out / "masks" / f"{c.stem}.png"))
        ignore = np.asarray(Image.open(out / "ignore" / f"{c.stem}.png"))
        assert mask.shape == ignore.shape == (60, 60) and set(np.unique(ignore)) <= {0, 255}
        assert np.all(mask == (255 if c.kind == "sharp" else 0))


def test_masks_saved_as_0_1_read_as_the_same_labels(tmp_path):
    """0/1 masks and ignore masks (and any the package's mask reader takes) give the crops 0/255 ones give."""
    write_set(tmp_path / "a")
    write_set(tmp_path / "b")
    for sub in ("masks", "ignore"):
        path = tmp_path / "b" / sub / "scene_A.png"
        Image.fromarray((np.asarray(Image.open(path)) // 255).astype(np.uint8)).save(path)
    found = [[(c.stem, c.x, c.y, c.side) for c in uniform_crops(tmp_path / s, ["scene_A"], tmp_path / f"out_{s}")]
             for s in ("a", "b")]
    assert found[0] == found[1] and len(found[0]) == 2


def test_a_second_run_into_the_same_folder_leaves_only_its_own_crops(tmp_path):
    write_set(tmp_path / "set")
    write_set(tmp_path / "set", stem="scene_B")
    uniform_crops(tmp_path / "set", ["scene_A", "scene_B"], tmp_path / "out")
    (tmp_path / "out" / "images" / "notes.png").write_bytes(b"someone else's")
    uniform_crops(tmp_path / "set", ["scene_A"], tmp_path / "out")
    for sub in ("images", "masks", "ignore"):
        names = sorted(p.name for p in (tmp_path / "out" / sub).iterdir())
        assert names == (["notes.png"] if sub == "images" else []) + ["scene_A_blurred.png", "scene_A_sharp.png"]


def test_whole_label_crops_label_every_pixel_as_their_kind(tmp_path):
    in_focus, undetermined = half_layout()
    undetermined[::3, :] = True                  # every third row undetermined (flat parts)
    rgb = write_set(tmp_path / "set", in_focus=in_focus, undetermined=undetermined)
    crops = uniform_crops(tmp_path / "set", ["scene_A"], tmp_path / "out", whole_label=True)
    assert {c.kind for c in crops} == {"blurred", "sharp"}
    out = tmp_path / "out"
    for c in crops:
        assert c.determined < 1.0                # the pair labels left part of the window undetermined
        image = np.asarray(Image.open(out / "images" / f"{c.stem}.png"))
        assert np.array_equal(image, rgb[c.y:c.y + c.side, c.x:c.x + c.side])
        mask = np.asarray(Image.open(out / "masks" / f"{c.stem}.png"))
        ignore = np.asarray(Image.open(out / "ignore" / f"{c.stem}.png"))
        assert np.all(mask == (255 if c.kind == "sharp" else 0)) and not ignore.any()
    pair_labels = uniform_crops(tmp_path / "set", ["scene_A"], tmp_path / "eval")
    assert all(np.asarray(Image.open(tmp_path / "eval" / "ignore" / f"{c.stem}.png")).any() for c in pair_labels)


def test_missing_files_and_size_mismatch_are_data_errors(tmp_path):
    write_set(tmp_path / "set")
    with pytest.raises(DataError, match="image not found"):
        uniform_crops(tmp_path / "set", ["other"], tmp_path / "out")
    write_set(tmp_path / "bad", mask_size=(100, 60))
    with pytest.raises(DataError, match="sizes differ"):
        uniform_crops(tmp_path / "bad", ["scene_A"], tmp_path / "out")
    with pytest.raises(DataError, match="not found"):
        uniform_crops(tmp_path / "nothing", ["scene_A"], tmp_path / "out")


def test_command_writes_the_crops(tmp_path):
    write_set(tmp_path / "set")
    (tmp_path / "list.txt").write_text("scene_A.png\n")
    res = CliRunner().invoke(app, ["data", "uniform-crops", str(tmp_path / "set"), "--list-file",
                                   str(tmp_path / "list.txt"), "-o", str(tmp_path / "out"), "--purity", "0.99",
                                   "--min-side", "1", "--whole-label"])
    assert res.exit_code == 0, res.output
    assert "1 blurred and 1 sharp" in res.output
    assert not np.asarray(Image.open(tmp_path / "out" / "ignore" / "scene_A_sharp.png")).any()
    assert sorted(p.name for p in (tmp_path / "out" / "masks").iterdir()) == ["scene_A_blurred.png",
                                                                             "scene_A_sharp.png"]


@pytest.mark.parametrize("case", ["no-set", "split", "both", "option", "missing-stem"])
def test_command_errors_are_one_line(tmp_path, case):
    write_set(tmp_path / "set")
    (tmp_path / "list.txt").write_text("nope\n")
    args = {"no-set": [str(tmp_path / "none")],
            "split": [str(tmp_path / "set"), "--split", "mfifb-nope"],
            "both": [str(tmp_path / "set"), "--split", "mfifb-val", "--list-file", str(tmp_path / "list.txt")],
            "option": [str(tmp_path / "set"), "--side", "2"],
            "missing-stem": [str(tmp_path / "set"), "--list-file", str(tmp_path / "list.txt")]}[case]
    res = CliRunner().invoke(app, ["data", "uniform-crops", *args, "-o", str(tmp_path / "out"), "--min-side", "1"])
    assert res.exit_code == 2
    assert res.output.strip().count("\n") == 0 and res.output.startswith("error: ")
    assert "Traceback" not in res.output and not (tmp_path / "out").exists()


def test_command_defaults_are_the_library_defaults():
    import typer.main

    from defocus.data import uniform_crops as uc

    cmd = typer.main.get_command(app).commands["data"].commands["uniform-crops"]
    defaults = {p.name: p.default for p in cmd.params}
    assert (defaults["side"], defaults["stride"], defaults["min_determined"], defaults["purity"],
            defaults["min_side"]) == (uc.SIDE, uc.STRIDE, uc.MIN_DETERMINED, uc.PURITY, uc.MIN_SIDE_PX)


def test_sixteen_bit_images_and_stems_with_glob_characters(tmp_path):
    rgb = write_set(tmp_path / "set", stem="scene[1]_A")               # [1] would be a glob character class
    deep = (np.asarray(Image.fromarray(rgb).convert("L")).astype(np.uint16) * 257)
    (tmp_path / "set" / "images" / "scene[1]_A.png").unlink()
    Image.fromarray(deep).save(tmp_path / "set" / "images" / "scene[1]_A.png")  # 16-bit grey, as I;16
    crops = uniform_crops(tmp_path / "set", ["scene[1]_A"], tmp_path / "out")
    for c in crops:
        image = np.asarray(Image.open(tmp_path / "out" / "images" / f"{c.stem}.png"))
        expected = np.rint(deep[c.y:c.y + c.side, c.x:c.x + c.side] / 257.0)
        assert image.dtype == np.uint8 and np.array_equal(image[..., 0], expected)  # scaled, not clipped white
