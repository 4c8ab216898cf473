"""Dataset registry, mask polarity, torch datasets and paired transforms."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from defocus.data import (DataError, DBDDataset, Pair, build_dataset, drop_mismatched_sizes, list_datasets,
                          load_pairs, read_mask, split_stems)
from defocus.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PairedResize, eval_transform, train_transform

REQUIRED = ["cuhk-tr1", "cuhk-te1", "dut-tr", "dut-te", "ctcug", "ebd", "ebd1305", "ebd300", "cuhk-tr1+dut-tr",
            "cuhk2-tr", "cuhk2-te", "folder"]


def _mask_img(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(arr.astype(np.uint8))


def _write_pair(img_dir, mask_dir, stem, mask: np.ndarray, ext=".jpg", colour=(90, 120, 150)):
    img_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    h, w = mask.shape
    Image.new("RGB", (w, h), colour).save(img_dir / f"{stem}{ext}")
    _mask_img(mask).save(mask_dir / f"{stem}.png")


@pytest.fixture
def mini_root(tmp_path):
    """A data root in the registry layout: CUHK (white = blur) with two TE-1 stems and one TR-1 stem, DUT
    train/test (white = in focus), EBD with 4 images. Every mask's left half is in focus."""
    left = np.zeros((12, 16), np.uint8)
    left[:, :8] = 255  # white on the left
    te = split_stems("TE-1.txt")[:2]
    tr = split_stems("TR-1.txt")[:1]
    for stem in te + tr:  # CUHK raw polarity: white = blur, so the in-focus left half is black
        _write_pair(tmp_path / "CUHK/images", tmp_path / "CUHK/masks", stem, 255 - left,
                    ext=".JPG" if stem == te[0] else ".jpg")
    for part in ("train", "test"):
        for k in range(2):
            _write_pair(tmp_path / f"DUT/{part}/images", tmp_path / f"DUT/{part}/masks", f"{part}{k}", left)
    for k in range(4):
        _write_pair(tmp_path / "EBD/images", tmp_path / "EBD/masks", f"{k:04d}", left)
    return tmp_path


def test_registry_names_and_shipped_splits():
    names = list_datasets()
    for n in REQUIRED:
        assert n in names
    te, tr = split_stems("TE-1.txt"), split_stems("TR-1.txt")
    assert len(te) == 100 and len(tr) == 604 and not set(te) & set(tr)


def test_shipped_te1_split_matches_shared(shared_dir):
    shared = (shared_dir / "data/CUHK/splits/TE-1.txt").read_text().split()
    assert split_stems("TE-1.txt") == [s.strip() for s in shared]


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1", "I;16"])
def test_read_mask_modes_and_polarity(tmp_path, mode):
    arr = np.zeros((6, 10), np.uint8)
    arr[:, 3:] = 255
    arr[0, 0] = 127  # below the 128 threshold
    arr[0, 1] = 128  # at the threshold: white
    im = _mask_img(arr)
    if mode == "I;16":
        im = Image.fromarray(arr.astype(np.uint16) * 257)
    elif mode != "L":
        im = im.convert(mode)
    path = tmp_path / "m.png"
    im.save(path)
    white = arr >= 128
    if mode == "1":  # PIL's 1-bit conversion dithers at 128 too
        white = np.asarray(im.convert("L")) >= 128
    assert read_mask(path, "in-focus").dtype == bool
    np.testing.assert_array_equal(read_mask(path, "in-focus"), white)
    np.testing.assert_array_equal(read_mask(path, "blur"), ~white)


def test_read_mask_alpha_channel_and_01_masks(tmp_path):
    arr = np.zeros((5, 5), np.uint8)
    arr[2:, 2:] = 255
    rgba = np.zeros((5, 5, 4), np.uint8)
    rgba[..., 3] = arr  # black colour, the mask lives in alpha
    Image.fromarray(rgba).save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "a.png", "in-focus"), arr > 0)
    Image.fromarray((arr > 0).astype(np.uint8)).save(tmp_path / "b.png")  # a {0,1} mask
    np.testing.assert_array_equal(read_mask(tmp_path / "b.png", "in-focus"), arr > 0)
    with pytest.raises(ValueError):
        read_mask(tmp_path / "b.png", "white")


def test_read_mask_real_cuhk_rgba_style(shared_dir, tmp_path):
    src = shared_dir / "data/CUHK/all/masks/out_of_focus0056.png"
    ref = read_mask(src, "in-focus")
    assert 0.017 <= ref.mean() <= 0.87
    # store it the way the upstream RGBA files were: raw polarity (white = blur), RGB equal channels, opaque alpha
    raw = np.where(ref, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([raw, raw, raw, np.full_like(raw, 255)])).save(tmp_path / "rgba.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgba.png", "blur"), ref)


def test_load_pairs_layout_and_subsets(mini_root):
    te = load_pairs("cuhk-te1", mini_root, strict=False)
    assert [p.stem for p in te] == split_stems("TE-1.txt")[:2]
    assert te[0].image.suffix == ".JPG" and all(p.mask_white == "blur" for p in te)
    with pytest.raises(DataError, match="listed stems"):
        load_pairs("cuhk-te1", mini_root)  # 98 TE-1 stems are missing
    assert len(load_pairs("CUHK-TR-1", mini_root, strict=False)) == 1  # case and dashes are ignored
    assert [p.stem for p in load_pairs("dut-te", mini_root)] == ["test0", "test1"]
    assert [p.stem for p in load_pairs("ebd1305", mini_root, strict=False)] == ["0000", "0001", "0002", "0003"]
    assert [p.stem for p in load_pairs("ebd300", mini_root, strict=False)] == ["0000", "0001", "0002", "0003"]
    with pytest.raises(DataError):
        load_pairs("nonexistent", mini_root)
    with pytest.raises(DataError):
        load_pairs("dut-tr", mini_root / "nowhere")


def test_list_file_datasets(mini_root, tmp_path):
    te = split_stems("TE-1.txt")
    lst = tmp_path / "cuhk2_test.txt"
    lst.write_text(f"1.bmp--{te[1]}.jpg\n# comment\n{te[0]}.JPG\n")
    pairs = load_pairs("cuhk2-te", mini_root, list_file=lst)
    assert [p.stem for p in pairs] == [te[1], te[0]]  # file order kept
    with pytest.raises(DataError, match="list file"):
        load_pairs("cuhk2-tr", mini_root)


def test_unpaired_files_are_named(mini_root):
    (mini_root / "DUT/test/masks/test1.png").unlink()
    with pytest.raises(DataError, match="without a mask"):
        load_pairs("dut-te", mini_root)
    assert [p.stem for p in load_pairs("dut-te", mini_root, strict=False)] == ["test0"]


def test_combined_dataset_inverts_per_sample(mini_root):
    pairs = load_pairs("cuhk-tr1+dut-tr", mini_root, strict=False)
    assert {p.mask_white for p in pairs} == {"blur", "in-focus"}
    ds = DBDDataset(pairs, transform=None)
    for i in range(len(ds)):
        item = ds[i]
        # every mask has its in-focus half on the left, whatever the raw polarity
        assert item["target"][:, :8].all() and not item["target"][:, 8:].any(), item["stem"]
    # and the same through the tensor path, in one mixed batch
    ds = build_dataset("cuhk-tr1+dut-tr", mini_root, eval_transform(16), strict=False)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=len(ds))))
    assert batch["target"].shape == (3, 1, 16, 16)
    assert (batch["target"][..., :8] == 1).all() and (batch["target"][..., 8:] == 0).all()


def test_folder_dataset_declared_polarity(tmp_path):
    m = np.zeros((8, 8), np.uint8)
    m[:4] = 255
    _write_pair(tmp_path / "im", tmp_path / "gt", "a", m, ext=".png")
    for white, top in (("in-focus", 1), ("blur", 0)):
        ds = DBDDataset(load_pairs("folder", image_dir=tmp_path / "im", mask_dir=tmp_path / "gt", mask_white=white))
        assert ds[0]["target"][:4].min() == top and ds[0]["target"][4:].max() == 1 - top


def test_blur_everywhere_softens_the_photo_and_labels_it_blurred(tmp_path):
    from defocus.data.lens import disk_blur, linear_to_srgb, srgb_to_linear

    rng = np.random.default_rng(0)
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    photo = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "im/a.png")
    _mask_img(np.full((24, 32), 255)).save(tmp_path / "gt/a.png")           # sharp everywhere
    pairs = load_pairs("folder", image_dir=tmp_path / "im", mask_dir=tmp_path / "gt")
    assert DBDDataset(pairs)[0]["target"].all()
    item = DBDDataset(pairs, blur_everywhere=(2.0, 2.0))[0]
    assert not item["target"].any() and item["valid"].all()
    expected = linear_to_srgb(disk_blur(srgb_to_linear(photo), 2.0))
    assert np.array_equal(item["image"], expected)
    torch.manual_seed(0)
    radii = []
    for _ in range(8):   # a fresh radius per item, inside the range: smoothness between r = 1 and r = 3
        img = DBDDataset(pairs, blur_everywhere=(1.0, 3.0))[0]["image"].astype(float)
        radii.append(np.abs(np.diff(img, axis=1)).mean())
    edge = [np.abs(np.diff(linear_to_srgb(disk_blur(srgb_to_linear(photo), r)).astype(float), axis=1)).mean()
            for r in (3.0, 1.0)]
    assert edge[0] <= min(radii) and max(radii) <= edge[1] and len(set(np.round(radii, 6))) > 1
    with pytest.raises(ValueError, match="blur_everywhere"):
        DBDDataset(pairs, blur_everywhere=(3.0, 1.0))


def test_blur_everywhere_from_a_training_config(tmp_path):
    from defocus.config import load_config
    from defocus.engine.data import build_train_dataset

    (tmp_path / "set/images").mkdir(parents=True)
    (tmp_path / "set/masks").mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
        tmp_path / "set/images/a.png")
    _mask_img(np.full((40, 40), 255)).save(tmp_path / "set/masks/a.png")
    yaml = tmp_path / "c.yaml"
    yaml.write_text(f"data:\n  size: 32\n  hflip: 0\n  jitter: 0\n  train:\n    - name: folder\n"
                    f"      root: {tmp_path / 'set'}\n    - name: folder\n      root: {tmp_path / 'set'}\n"
                    f"      blur_everywhere: [1.5, 2.5]\n")
    cfg = load_config(yaml)
    assert cfg.data.train[1].blur_everywhere == (1.5, 2.5) and cfg.data.train[0].blur_everywhere is None
    ds = build_train_dataset(cfg.data, IMAGENET_MEAN, IMAGENET_STD)
    assert ds[0]["target"].min() == 1 and ds[1]["target"].max() == 0
    with pytest.raises(ValueError, match=r"data.train\[0\].blur_everywhere"):
        load_config(yaml, ["data.train=[{name: folder, root: x, blur_everywhere: [0, 2]}]"])


def test_drop_mismatched_sizes(mini_root):
    pairs = load_pairs("dut-tr", mini_root)
    Image.new("RGB", (20, 20)).save(pairs[0].image)
    kept, dropped = drop_mismatched_sizes(pairs)
    assert [p.stem for p in dropped] == [pairs[0].stem] and len(kept) == 1


def test_mask_resize_matches_pil_nearest():
    rng = np.random.default_rng(0)
    arr = (rng.random((427, 640)) > 0.5).astype(np.uint8) * 255
    image = Image.fromarray(rng.integers(0, 255, (427, 640, 3), dtype=np.uint8))
    _, target = eval_transform(320)(image, _mask_img(arr))
    ref = np.asarray(_mask_img(arr).resize((320, 320), Image.NEAREST)) >= 128
    np.testing.assert_array_equal(target[0].numpy().astype(bool), ref)
    assert isinstance(PairedResize(8), torch.nn.Module)


def test_train_transform_flips_jointly_and_normalises():
    img = np.zeros((10, 20, 3), np.uint8)
    img[:, :10] = 200  # bright left half
    mask = np.zeros((10, 20), np.uint8)
    mask[:, :10] = 255  # in-focus left half
    x, y = train_transform(size=16, hflip=1.0, jitter=0.0)(Image.fromarray(img), _mask_img(mask))
    assert x.shape == (3, 16, 16) and y.shape == (1, 16, 16) and y.dtype == torch.float32
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert (y[0, :, 8:] == 1).all() and (y[0, :, :8] == 0).all()  # flipped: in focus on the right
    bright = (200 / 255 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]
    assert torch.allclose(x[0, :, 12], torch.full((16,), bright), atol=1e-4)
    x0, y0 = train_transform(size=16, hflip=0.0, jitter=0.0)(Image.fromarray(img), _mask_img(mask))
    assert (y0[0, :, :8] == 1).all()


def test_train_transform_jitter_leaves_mask_alone():
    torch.manual_seed(0)
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    mask = _mask_img((rng.random((32, 32)) > 0.5) * 255)
    t = train_transform(size=32, hflip=0.0, jitter=0.1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    xs, ys = zip(*(t(img, mask) for _ in range(3)))
    assert not torch.equal(xs[0], xs[1])  # colour jitter is random
    ref = torch.from_numpy(np.asarray(mask) >= 128).float()[None]
    assert all(torch.equal(y, ref) for y in ys)
    assert -1.0 <= float(torch.stack(xs).min()) and float(torch.stack(xs).max()) <= 1.0


def test_train_transform_zoom_cuts_one_window_from_image_and_masks():
    torch.manual_seed(0)
    # every pixel of the image and both masks encodes its own column and row, so the window can be read back
    cols, rows = np.meshgrid(np.arange(64), np.arange(48))
    img = np.stack([cols * 4, rows * 5, np.zeros_like(cols)], -1).astype(np.uint8)
    mask = ((cols + rows) % 2 * 255).astype(np.uint8)
    ignore = (cols >= 32).astype(np.uint8) * 255
    t = train_transform(size=None, hflip=0.0, jitter=0.0, zoom=(0.25, 0.5), zoom_prob=1.0, mean=(0, 0, 0),
                        std=(1, 1, 1))
    for _ in range(5):
        x, y, valid = t(img, mask, ignore)
        h, w = y.shape[-2:]
        assert 0.2 <= h * w / (48 * 64) <= 0.55 and x.shape[-2:] == (h, w)
        left = round(float(x[0, 0, 0]) * 255 / 4)
        top = round(float(x[1, 0, 0]) * 255 / 5)
        np.testing.assert_array_equal(y[0].numpy() * 255, mask[top:top + h, left:left + w])
        np.testing.assert_array_equal(valid[0].numpy() == 0, ignore[top:top + h, left:left + w] == 255)
    assert train_transform(size=16, zoom=(0.25, 1.0), zoom_prob=1.0)(img, mask)[0].shape == (3, 16, 16)
    unzoomed = train_transform(size=None, hflip=0.0, jitter=0.0, zoom=(0.25, 0.5), zoom_prob=0.0)(img, mask)
    assert unzoomed[1].shape == (1, 48, 64)
    with pytest.raises(ValueError, match="zoom scale"):
        train_transform(zoom=(0.0, 1.0))


def test_train_transform_without_upscale_mirrors_small_photos_out_to_the_size():
    # every pixel encodes its column and row: the kept part and the mirrored part can be read back
    cols, rows = np.meshgrid(np.arange(40), np.arange(12))
    img = np.stack([cols * 6, rows * 20, np.zeros_like(cols)], -1).astype(np.uint8)
    mask = ((cols + rows) % 2 * 255).astype(np.uint8)
    ignore = (rows >= 9).astype(np.uint8) * 255
    t = train_transform(size=32, hflip=0.0, jitter=0.0, upscale=False, mean=(0, 0, 0), std=(1, 1, 1))
    x, y, valid = t(img, mask, ignore)
    assert x.shape == (3, 32, 32) and y.shape == valid.shape == (1, 32, 32)
    row_of = np.rint(x[1].numpy() * 255 / 20).astype(int)
    # rows 0-11 as taken (12 < 32: not enlarged), then mirrored: 10, 9, ..., 0, 1, ... (no edge row repeated)
    np.testing.assert_array_equal(row_of[:, 0], [*range(12), *range(10, -1, -1), *range(1, 10)])
    expected_mask = np.asarray(Image.fromarray(mask).resize((32, 12), Image.NEAREST)) // 255
    np.testing.assert_array_equal(y[0, :12].numpy(), expected_mask)             # the width (40 > 32) shrinks
    np.testing.assert_array_equal(y[0, 12:23].numpy(), expected_mask[10::-1])   # labels mirrored with the image
    np.testing.assert_array_equal(valid[0, :23, 0].numpy(), [1] * 9 + [0] * 5 + [1] * 9)  # rows 9-11 and 10-9
    tiny = train_transform(size=32, upscale=False)(np.zeros((5, 3, 3), np.uint8), np.zeros((5, 3), np.uint8))
    assert tiny[0].shape == (3, 32, 32)                                          # several reflections
    assert train_transform(size=32, upscale=True)(img, mask)[0].shape == (3, 32, 32)


def test_train_transform_crop_keeps_the_scale_of_the_size_and_mirrors_small_photos_to_the_crop():
    # columns and rows encoded in the pixels: a crop of the 64-px resize keeps 64-px spacing of the 128-px photo
    cols, rows = np.meshgrid(np.arange(128), np.arange(96))
    img = np.stack([cols * 2, rows * 2, np.zeros_like(cols)], -1).astype(np.uint8)
    mask = ((cols // 16) % 2 * 255).astype(np.uint8)
    t = train_transform(size=64, crop=24, hflip=0.0, jitter=0.0, upscale=False, mean=(0, 0, 0), std=(1, 1, 1))
    torch.manual_seed(0)
    windows = set()
    for _ in range(8):
        x, y = t(img, mask)
        assert x.shape == (3, 24, 24) and y.shape == (1, 24, 24)
        col_of = x[0, 0].numpy() * 255 / 2
        assert np.allclose(np.diff(col_of), 2.0, atol=1.01)     # every second column: the 64-px scale
        expected = (np.rint(col_of).astype(int) // 16) % 2
        assert (y[0, 0].numpy() == expected).mean() > 0.9         # labels cropped with the image
        windows.add(float(col_of[0]))
    assert len(windows) > 1                                        # a random window
    small = t(np.zeros((10, 16, 3), np.uint8), np.zeros((10, 16), np.uint8))
    assert small[0].shape == (3, 24, 24)                           # mirrored out to the crop, not to the size
    from defocus.config import load_config

    with pytest.raises(ValueError, match="data.crop: expected a window side"):
        load_config(None, ["data.size=64", "data.crop=128"])
    assert load_config(None, ["data.size=64", "data.crop=32"]).data.crop == 32


def test_eval_transform_full_resolution_target():
    img = Image.new("RGB", (40, 30))
    mask = Image.new("L", (40, 30), 255)
    x, y = eval_transform(32, resize_mask=False)(img, mask)
    assert x.shape == (3, 32, 32) and y.shape == (1, 30, 40) and (y == 1).all()


def test_eval_transform_without_upscale_keeps_small_sides():
    img, mask = Image.new("RGB", (40, 20)), Image.new("L", (40, 20), 255)
    x, y = eval_transform(32, upscale=False)(img, mask)
    assert x.shape == (3, 20, 32) and y.shape == (1, 20, 32) and (y == 1).all()   # only the long side shrinks
    assert eval_transform(32)(img, mask)[0].shape == (3, 32, 32)


def test_real_samples_load(shared_dir):
    base = shared_dir / "data/CUHK/TE-1_btbnet320_samples"
    ds = DBDDataset(load_pairs("folder", image_dir=base / "images", mask_dir=base / "masks", mask_white="in-focus"),
                    eval_transform(320))
    item = ds[0]
    assert item["image"].shape == (3, 320, 320) and item["stem"] == "out_of_focus0037"
    assert 0.017 <= float(item["target"].mean()) <= 0.87
    assert isinstance(ds.pairs[0], Pair)


def test_a_mask_of_another_size_is_resized_to_its_image_as_the_warning_says(tmp_path, caplog):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    Image.new("RGB", (64, 48)).save(tmp_path / "images" / "e.png")
    small = np.zeros((24, 32), np.uint8)
    small[:, :16] = 255                                        # left half in focus
    Image.fromarray(small).save(tmp_path / "masks" / "e.png")
    ds = build_dataset("folder", image_dir=tmp_path / "images", mask_dir=tmp_path / "masks")
    with caplog.at_level("WARNING"):
        item = ds[0]
    assert "resized to the image" in caplog.text
    assert item["image"].shape == (48, 64, 3) and item["target"].shape == item["valid"].shape == (48, 64)
    assert item["target"][:, :32].all() and not item["target"][:, 32:].any()


def test_full_frame_entries_keep_their_whole_resized_frame_where_the_others_are_cut_to_windows(tmp_path):
    from defocus.config import load_config
    from defocus.engine.data import build_train_dataset

    for name, size in (("wide", (80, 60)), ("small", (20, 16))):
        (tmp_path / name / "im").mkdir(parents=True)
        (tmp_path / name / "gt").mkdir()
        Image.new("RGB", size, (90, 120, 30)).save(tmp_path / name / "im" / "a.png")
        Image.new("L", size, 255).save(tmp_path / name / "gt" / "a.png")

    def entry(name, full):
        return (f"{{name: folder, image_dir: {tmp_path / name / 'im'}, mask_dir: {tmp_path / name / 'gt'}, "
                f"full_frame: {str(full).lower()}}}")

    train = f"data.train=[{entry('wide', True)}, {entry('wide', False)}, {entry('small', True)}]"
    cfg = load_config(None, [train, "data.size=64", "data.crop=32", "data.upscale=false"])
    ds = build_train_dataset(cfg.data, IMAGENET_MEAN, IMAGENET_STD)
    shapes = [tuple(ds[i]["image"].shape) for i in range(3)]
    # 80x60 squashed to at most 64 a side without enlarging: the whole 64x60 frame; cut: a 32x32 window; a 20x16 photo,
    # smaller than the window, mirrored out to the window only
    assert shapes == [(3, 60, 64), (3, 32, 32), (3, 32, 32)]
    from defocus.engine.data import shape_keys

    keys = shape_keys(cfg.data, ds)                  # read from headers: equal where the shapes are equal
    assert keys[1] == keys[2] != keys[0] == (60, 64)
    assert tuple(ds[0]["target"].shape) == (1, 60, 64) and (ds[0]["target"] == 1).all()
    with pytest.raises(ValueError, match="full_frame .* set data.crop"):
        load_config(None, [train, "data.size=64", "data.upscale=false"])
    with pytest.raises(ValueError, match="does not take data.zoom"):
        load_config(None, [train, "data.size=64", "data.crop=32", "data.zoom=[0.5,1]"])
    with pytest.raises(ValueError, match="pad_to .* needs upscale=False and no crop"):
        train_transform(size=64, crop=32, upscale=False, pad_to=32)
