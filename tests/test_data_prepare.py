"""`defocus data prepare` and `verify` on fake download trees built from the real CUHK masks."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from defocus.cli import app
from defocus.data import load_pairs, split_stems
from defocus.data.prepare import prepare_dataset
from defocus.data.verify import verify_dataset

# CUHK-TE-1 names that end in .JPG upstream (method.md §7.1)
UPPER_JPG = {"out_of_focus0026", "out_of_focus0027", "out_of_focus0028", "out_of_focus0099", "out_of_focus0103"}
N_TRAIN = 12


def _fake_image(path, size, colour=(110, 90, 70)):
    Image.new("RGB", size, colour).save(path, quality=75)


@pytest.fixture(scope="module")
def cuhk_download(shared_dir, tmp_path_factory):
    """CUHK's download layout (shidatatset/image + gt, raw polarity white = blur, .jpg/.JPG mixed, motion-blur
    files beside) for all 100 TE-1 stems and a few TR-1 stems, with fake images of each mask's size."""
    root = tmp_path_factory.mktemp("cuhk_dl")
    img_dir, gt_dir = root / "shidatatset/image", root / "shidatatset/gt"
    img_dir.mkdir(parents=True)
    gt_dir.mkdir(parents=True)
    for stem in split_stems("TE-1.txt") + split_stems("TR-1.txt")[:N_TRAIN]:
        with Image.open(shared_dir / f"data/CUHK/all/masks/{stem}.png") as m:
            raw = 255 - np.asarray(m.convert("L"))  # the shared masks are inverted back to CUHK's white = blur
        Image.fromarray(raw).save(gt_dir / f"{stem}.png")
        _fake_image(img_dir / (stem + (".JPG" if stem in UPPER_JPG else ".jpg")), raw.shape[::-1])
    _fake_image(img_dir / "motion0001.jpg", (64, 48))
    Image.new("L", (64, 48)).save(gt_dir / "motion0001.png")
    return root


@pytest.fixture(scope="module")
def cuhk_root(cuhk_download, tmp_path_factory):
    root = tmp_path_factory.mktemp("cuhk_root")
    report = prepare_dataset("cuhk", cuhk_download, root)
    assert report.ok and report.parts == ["CUHK"]
    return root


def test_prepare_cuhk_keeps_bytes_and_names(cuhk_download, cuhk_root):
    images = sorted(p.name for p in (cuhk_root / "CUHK/images").iterdir())
    assert len(images) == 100 + N_TRAIN and "motion0001.jpg" not in images
    assert "out_of_focus0026.JPG" in images
    src = cuhk_download / "shidatatset/gt/out_of_focus0037.png"
    assert (cuhk_root / "CUHK/masks/out_of_focus0037.png").read_bytes() == src.read_bytes()  # no re-encoding
    again = prepare_dataset("cuhk-te1", cuhk_download, cuhk_root)  # idempotent: files already there are kept
    assert again.written == {"CUHK": 0} and again.kept == {"CUHK": 2 * (100 + N_TRAIN)}


def test_verify_te1_passes_and_reports_polarity(cuhk_root):
    report = verify_dataset("cuhk-te1", cuhk_root, progress=False)
    assert report.ok and report.n_pairs == 100 and not report.issues, [str(i) for i in report.issues]
    blur = np.mean(report.blur_fractions)
    assert 0.55 < blur < 0.8  # the real CUHK masks: in-focus fraction 0.334 on average
    assert "blur fraction mean" in report.summary()


def test_verify_counts_the_whole_set(cuhk_root):
    report = verify_dataset("cuhk", cuhk_root, progress=False)
    assert not report.ok and {i.kind for i in report.errors} == {"count"}


def test_loaded_cuhk_targets_are_in_focus_polarity(shared_dir, cuhk_root):
    pair = next(p for p in load_pairs("cuhk-te1", cuhk_root) if p.stem == "out_of_focus0037")
    from defocus.data import read_mask

    ref = np.asarray(Image.open(shared_dir / "data/CUHK/all/masks/out_of_focus0037.png")) >= 128
    np.testing.assert_array_equal(read_mask(pair.mask, pair.mask_white), ref)


@pytest.fixture
def broken_root(cuhk_root, tmp_path):
    """A copy of the prepared CUHK folder with one of every problem injected."""
    root = tmp_path / "root"
    shutil.copytree(cuhk_root, root)
    te = split_stems("TE-1.txt")
    imgs, masks = root / "CUHK/images", root / "CUHK/masks"
    problems = {}
    (masks / f"{te[0]}.png").unlink()
    problems["unpaired"] = {imgs / f"{te[0]}.JPG"}
    # a listed stem with neither file
    next(imgs.glob(f"{te[1]}.*")).unlink()
    (masks / f"{te[1]}.png").unlink()
    problems["missing"] = {imgs / te[1]}
    # size mismatch
    img = next(imgs.glob(f"{te[2]}.*"))
    _fake_image(img, (100, 80))
    problems["size-mismatch"] = {masks / f"{te[2]}.png"}
    # a grey-level picture stored as a mask
    with Image.open(masks / f"{te[3]}.png") as m:
        w, h = m.size
    Image.fromarray(np.tile(np.linspace(0, 255, w).astype(np.uint8), (h, 1))).save(masks / f"{te[3]}.png")
    problems["non-binary"] = {masks / f"{te[3]}.png"}
    # a truncated JPEG
    img = next(imgs.glob(f"{te[4]}.*"))
    img.write_bytes(img.read_bytes()[:200])
    problems["corrupt"] = {img}
    # a second image with the same stem
    shutil.copy(next(imgs.glob(f"{te[5]}.*")), imgs / f"{te[5]}.png")
    problems["duplicate"] = {imgs / f"{te[5]}.png"}
    # warnings: slightly soft mask (like DUT's compressed ground truth) and a stray file
    with Image.open(masks / f"{te[6]}.png") as m:
        arr = np.asarray(m).copy()
    arr[: arr.shape[0] // 50] = 200
    Image.fromarray(arr).save(masks / f"{te[6]}.png")
    (imgs / "Thumbs.db").write_bytes(b"x")
    return root, problems


def test_verify_names_every_injected_problem(broken_root):
    root, problems = broken_root
    report = verify_dataset("cuhk-te1", root, progress=False)
    assert not report.ok
    found = {}
    for issue in report.errors:
        found.setdefault(issue.kind, set()).add(issue.path)
    for kind, paths in problems.items():
        assert paths <= found.get(kind, set()), (kind, [str(i) for i in report.issues])
    assert {"count"} | set(problems) >= set(found)  # nothing reported that was not injected
    assert {i.kind for i in report.warnings} == {"soft-mask", "stray-file"}


def test_verify_flags_inverted_polarity(shared_dir, tmp_path):
    """The shared CUHK masks are already white = in focus; filed as raw CUHK (white = blur) they look inverted."""
    imgs, masks = tmp_path / "CUHK/images", tmp_path / "CUHK/masks"
    imgs.mkdir(parents=True)
    masks.mkdir(parents=True)
    for stem in split_stems("TE-1.txt")[:20]:
        shutil.copy(shared_dir / f"data/CUHK/all/masks/{stem}.png", masks / f"{stem}.png")
        with Image.open(masks / f"{stem}.png") as m:
            _fake_image(imgs / f"{stem}.jpg", m.size)
    report = verify_dataset("cuhk", tmp_path, progress=False)
    assert "polarity" in {i.kind for i in report.warnings}
    from defocus.data.verify import WARNING, Issue, VerifyReport

    warned = VerifyReport("x", 1, issues=[Issue("polarity", None, "looks inverted", WARNING)])
    assert warned.ok and warned.summary().endswith("0 errors, 1 warnings: OK")
    assert warned.summary(strict=True).endswith("warnings: PROBLEMS FOUND (--strict)")
    good = verify_dataset("folder", image_dir=imgs, mask_dir=masks, mask_white="in-focus", progress=False)
    assert good.ok and not good.issues
    (tmp_path / "e/i").mkdir(parents=True)
    (tmp_path / "e/m").mkdir()
    empty = verify_dataset("folder", image_dir=tmp_path / "e/i", mask_dir=tmp_path / "e/m", progress=False)
    assert not empty.ok and [i.detail for i in empty.errors] == ["no image and mask pairs found"]


def test_prepare_dut_pairs_by_sorted_order(shared_dir, tmp_path):
    """DUT's layout with GT names that differ from the image names: paired by sorted order, renamed."""
    base = tmp_path / "dl/DUT-DBD_Dataset"
    masks = sorted((shared_dir / "data/DUT/test_samples/masks").iterdir())
    for img_name, gt_name in (("DUT600S_Training", "DUT600GT_Training"), ("image", "gt")):
        (base / img_name).mkdir(parents=True)
        (base / gt_name).mkdir(parents=True)
        for k, m in enumerate(masks[:3]):
            with Image.open(m) as mm:
                small = mm.resize((40, 40), Image.NEAREST)
            small.save(base / gt_name / f"{k + 1}_gt.bmp")
            _fake_image(base / img_name / f"{k + 1}.jpg", small.size)
    root = tmp_path / "root"
    report = prepare_dataset("dut", tmp_path / "dl", root, mode="symlink")
    assert report.ok and report.parts == ["DUT train", "DUT test"] and report.renamed == 6
    assert (root / "DUT/test/masks/1.bmp").is_symlink()
    pairs = load_pairs("dut-te", root)
    assert [p.stem for p in pairs] == ["1", "2", "3"] and pairs[0].mask_white == "in-focus"
    report = verify_dataset("dut-te", root, progress=False)
    assert {i.kind for i in report.errors} == {"count"}  # 3 of 500; everything else is fine
    assert 0.3 < np.mean(report.blur_fractions) < 0.9


def test_prepare_test_half_alone_and_changed_masks_of_the_same_size(shared_dir, tmp_path):
    from defocus.data import DataError

    base = tmp_path / "dl/DUT-DBD_Dataset"
    (base / "image").mkdir(parents=True)
    (base / "gt").mkdir()
    for k, m in enumerate(sorted((shared_dir / "data/DUT/test_samples/masks").iterdir())[:2]):
        with Image.open(m) as mm:
            mm.convert("L").resize((40, 40), Image.NEAREST).save(base / "gt" / f"{k + 1}.bmp")
        _fake_image(base / "image" / f"{k + 1}.jpg", (40, 40))
    root = tmp_path / "root"
    assert prepare_dataset("dut-te", tmp_path / "dl", root).ok  # the train half is not needed for the test set
    assert not prepare_dataset("dut", tmp_path / "dl", root).ok  # ... but is for the whole family
    with Image.open(base / "gt" / "1.bmp") as m:  # a corrected mask: same size in bytes, other content
        Image.eval(m, lambda v: 255 - v).save(base / "gt" / "1.bmp")
    with pytest.raises(DataError, match="exists with different content"):
        prepare_dataset("dut-te", tmp_path / "dl", root)
    assert prepare_dataset("dut-te", tmp_path / "dl", root, overwrite=True).ok


def test_prepare_reports_unpaired_and_missing_layout(tmp_path):
    src = tmp_path / "dl/EBD"
    (src / "image").mkdir(parents=True)
    (src / "gt").mkdir()
    for k in range(3):
        _fake_image(src / "image" / f"{k}.jpg", (8, 8))
    for k in range(2):
        Image.new("L", (8, 8)).save(src / "gt" / f"{k}.png")
    report = prepare_dataset("ebd", tmp_path / "dl", tmp_path / "root")
    assert not report.ok and any("2.jpg" in p for p in report.problems)
    assert len(list((tmp_path / "root/EBD/images").iterdir())) == 2
    for other in ("ctcug", "dut"):  # generic image/ + gt/ folders of an EBD tree are not another dataset's
        with pytest.raises(ValueError, match="no .* download layout"):
            prepare_dataset(other, tmp_path / "dl", tmp_path / "root")


def test_cli_prepare_and_verify(cuhk_download, tmp_path, broken_root):
    runner = CliRunner()
    res = runner.invoke(app, ["data", "prepare", "cuhk", "--src", str(cuhk_download), "--root", str(tmp_path)])
    assert res.exit_code == 1  # prepared fine, but the partial set fails the 704 count
    assert "expected 704" in res.output
    res = runner.invoke(app, ["data", "verify", "cuhk-te1", "--root", str(tmp_path)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "verify", "cuhk-te1+cuhk-te1", "--root", str(tmp_path)])  # each part checked
    assert res.exit_code == 0 and res.output.count("0 errors") == 2, res.output
    res = runner.invoke(app, ["data", "verify", "cuhk-te1", "--root", str(broken_root[0])])
    assert res.exit_code == 1 and "size-mismatch" in res.output and "corrupt" in res.output
    res = runner.invoke(app, ["data", "verify", "nonexistent", "--root", str(tmp_path)])
    assert res.exit_code == 2
    # options another dataset would take are refused, not ignored; a missing list file is one line
    for args, words in ((["cuhk-te1", "--images", str(tmp_path)], "describe the dataset 'folder'"),
                        (["folder", "--images", str(tmp_path)], "--images and --masks go together"),
                        (["cuhk-te1", "--list-file", "x.txt"], "takes none"),
                        (["cuhk2-te", "--list-file", str(tmp_path / "none.txt")], "none.txt")):
        res = runner.invoke(app, ["data", "verify", *args, "--root", str(tmp_path)])
        assert res.exit_code == 2 and words in res.output and "Traceback" not in res.output, (args, res.output)


def test_prepare_finds_each_download_among_others_and_from_inside_it(tmp_path, monkeypatch):
    def download(folder, names):
        for sub, suffix in (("image", ".jpg"), ("gt", ".png")):
            (folder / sub).mkdir(parents=True)
            for n in names:
                (_fake_image if suffix == ".jpg" else lambda p, s: Image.new("L", s).save(p))(
                    folder / sub / f"{n}{suffix}", (8, 8))

    dl = tmp_path / "downloads"
    download(dl / "EBD", ["e1", "e2"])                                  # a shallower image/ of another set
    download(dl / "CUHK" / "CUHK_dataset", ["out_of_focus0001", "out_of_focus0002", "motion0001"])
    download(dl / "more" / "sets" / "EBD2", ["x1"])
    report = prepare_dataset("cuhk", dl, tmp_path / "root")
    assert sorted(p.name for p in (tmp_path / "root/CUHK/images").iterdir()) == ["out_of_focus0001.jpg",
                                                                                 "out_of_focus0002.jpg"]
    assert report.ok
    monkeypatch.chdir(dl / "EBD")                                       # --src . inside the download
    prepare_dataset("ebd", Path("."), tmp_path / "root")
    assert len(list((tmp_path / "root/EBD/images").iterdir())) == 2
    download(tmp_path / "store" / "x123", ["x1"])
    (tmp_path / "EBD_link").symlink_to(tmp_path / "store" / "x123")    # named by a link, stored under another name
    prepare_dataset("ebd", tmp_path / "EBD_link", tmp_path / "root2")
    assert [p.name for p in (tmp_path / "root2/EBD/images").iterdir()] == ["x1.jpg"]
