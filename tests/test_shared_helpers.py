"""Helpers with one home: the mask reader and polarity names, device names, list files, atomic writes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from defocus import evaluation
from defocus.atomic import atomic_create
from defocus.data import read_mask as data_read_mask
from defocus.devices import resolve_device
from defocus.listfiles import read_list_lines, read_list_stems
from defocus.maps import MapInputError, check_polarity, read_mask


def _alpha_mask(path, half_width: int = 4):
    """An RGBA cut-out: black colour everywhere, alpha 255 on the left half (the mask), 0 on the right."""
    rgba = np.zeros((6, 2 * half_width, 4), np.uint8)
    rgba[:, :half_width, 3] = 255
    Image.fromarray(rgba, "RGBA").save(path)
    return path


@pytest.mark.parametrize("reader", [data_read_mask, evaluation.read_mask, read_mask])
def test_mask_in_alpha_reads_the_same_everywhere(tmp_path, reader):
    m = reader(_alpha_mask(tmp_path / "cutout.png"), "in-focus")
    assert m.dtype == bool and m.mean() == 0.5
    assert m[:, :4].all() and not m[:, 4:].any()


def test_opaque_rgba_reads_its_colour(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 3] = 255
    rgba[:2, :, :3] = 200  # white-ish top half, opaque everywhere
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    for reader in (data_read_mask, evaluation.read_mask):
        assert reader(tmp_path / "m.png", "in-focus").tolist() == [[True] * 4] * 2 + [[False] * 4] * 2


@pytest.mark.parametrize("reader", [data_read_mask, evaluation.read_mask])
def test_polarity_names_are_one_vocabulary(tmp_path, reader):
    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "m.png")
    assert reader(tmp_path / "m.png", "sharp").tolist() == [[False, True]]
    assert reader(tmp_path / "m.png", "in_focus").tolist() == [[False, True]]
    assert reader(tmp_path / "m.png", "blur").tolist() == [[True, False]]
    with pytest.raises(ValueError, match="in-focus' or 'blur"):
        reader(tmp_path / "m.png", "white")
    assert check_polarity("Out-of-focus") == "blur"


def test_missing_mask_names_the_file(tmp_path):
    with pytest.raises(MapInputError, match=r"nope\.png: file not found"):
        data_read_mask(tmp_path / "nope.png", "blur")


def test_resolve_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    auto = resolve_device("auto")
    if torch.cuda.is_available():
        assert auto.type == "cuda"
    elif torch.backends.mps.is_available():
        assert auto.type == "mps"
    else:
        assert auto == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    if not torch.backends.mps.is_available():
        with pytest.raises(ValueError, match="MPS is not available"):
            resolve_device("mps")


def test_list_files(tmp_path):
    listed = tmp_path / "list.txt"
    listed.write_text("\ufeffa.jpg\n  # comment\n\n sub/b.PNG \n3.bmp--c.jpg\nd#1.png\nnotes.txt\n", encoding="utf-8")
    assert read_list_lines(listed) == ["a.jpg", "sub/b.PNG", "3.bmp--c.jpg", "d#1.png", "notes.txt"]
    assert read_list_stems(listed) == ["a", "b", "c", "d#1", "notes.txt"]
    assert evaluation.read_stem_list(listed) == ["a", "b", "c", "d#1", "notes.txt"]


def test_atomic_create_by_path(tmp_path):
    """Files made by a library that wants a path (safetensors, copies, links) are created atomically too."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")

    def fail(tmp):
        tmp.write_bytes(b"partial")
        raise RuntimeError("half written")

    with pytest.raises(RuntimeError, match="half written"):
        atomic_create(target, fail)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["out.bin"]
    atomic_create(target, lambda tmp: tmp.symlink_to(tmp_path / "elsewhere"))
    assert target.is_symlink() and [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_state_dict_comparison_reports_every_kind_in_one_line():
    from defocus.models.state_dicts import compare_state_dicts

    own = {"a.weight": torch.zeros(2, 3), "a.bias": torch.zeros(2), "bn.num_batches_tracked": torch.zeros(())}
    found = {"a.weight": torch.zeros(3, 2), "head.weight": torch.zeros(1), "extra": torch.zeros(1)}
    m = compare_state_dicts(own, found, ignore_missing=lambda k: k.endswith("num_batches_tracked"),
                            ignore_unexpected=lambda k: k.startswith("head."))
    assert m.missing == ["a.bias"] and m.unexpected == ["extra"]
    assert m.summary() == ("missing 1 (e.g. a.bias); wrong shape 1 (e.g. a.weight: file (3, 2), expected (2, 3)); "
                           "unexpected 1 (e.g. extra)")
    assert not compare_state_dicts(own, dict(own))


def test_panel_sheet_layout_and_mask_panels():
    from defocus.sheets import panel_sheet

    photo = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    mask = Image.fromarray(np.where(np.arange(90) < 45, 255, 0).astype(np.uint8)[None].repeat(60, 0))
    tall = Image.new("L", (20, 40), 128)
    sheet = panel_sheet([[photo, mask], [tall]], height=30, nearest=(1,))
    assert sheet.size == (45 + 4 + 45, 30 + 4 + 30)                 # widest row; two rows, one gap
    a = np.asarray(sheet)
    assert set(np.unique(a[:30, 49:94])) <= {0, 255}                   # the mask panel stays binary
    assert (a[30:34] == 255).all() and (a[34:64, 15:] == 255).all()    # white gaps, a short row padded white
    assert (a[34:64, :15] == 128).all()
    with pytest.raises(ValueError):
        panel_sheet([], height=30)
