"""Phone photo formats: HEIF (through the optional pillow-heif) and AVIF (Pillow itself) are decoded as
displayed, found in folders, predicted from the command line and in Ray batches, and a HEIF file without
pillow-heif is refused with the install command."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features
from typer.testing import CliRunner

from defocus import imageio
from defocus.cli import app

needs_heif = pytest.mark.skipif(not imageio._register_heif_opener(), reason="pillow-heif not installed")
needs_avif = pytest.mark.skipif(not features.check("avif"), reason="this Pillow cannot write AVIF")

# Stored 80x40, bright left half; EXIF orientation 6 displays it rotated clockwise: 40x80, bright top half.
STORED = np.zeros((40, 80, 3), np.uint8)
STORED[:, :40] = 230


def rotated_exif() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return exif.tobytes()


def save(path: Path, fmt: str) -> Path:
    Image.fromarray(STORED).save(path, format=fmt, exif=rotated_exif(), quality=95)
    return path


def assert_displayed(rgb: Image.Image):
    a = np.asarray(rgb).astype(float)
    assert rgb.size == (40, 80)
    assert a[:30].mean() > 200 and a[50:].mean() < 25  # bright top, dark bottom: rotated once, not twice


def test_container_brand_reads_the_ftyp_box():
    assert imageio.container_brand(b"\0\0\0\x1cftypheic\0\0\0\0") == "heif"
    assert imageio.container_brand(b"\0\0\0\x18ftypmif1\0\0\0\0") == "heif"
    assert imageio.container_brand(b"\0\0\0\x20ftypavif\0\0\0\0") == "avif"
    assert imageio.container_brand(b"\0\0\0\x20ftypisom\0\0\0\0") is None  # an MP4 video
    assert imageio.container_brand(b"\xff\xd8\xff\xe0\0\x10JFIF\0\1\1\0") is None
    assert imageio.container_brand(b"ftyp") is None


@needs_heif
def test_heif_decodes_as_displayed(tmp_path):
    path = save(tmp_path / "phone.HEIC", "HEIF")
    rgb, native = imageio.decode_rgb(path)
    assert native == (40, 80)
    assert_displayed(rgb)


@needs_avif
def test_avif_decodes_as_displayed(tmp_path):
    rgb, native = imageio.decode_rgb(save(tmp_path / "phone.avif", "AVIF"))
    assert native == (40, 80)
    assert_displayed(rgb)


@needs_heif
def test_heif_without_a_suffix_is_recognised_by_its_content(tmp_path):
    path = save(tmp_path / "upload.bin", "HEIF")
    assert_displayed(imageio.decode_rgb(path)[0])
    with imageio.open_pil(io.BytesIO(path.read_bytes())) as im:
        assert im.format == "HEIF"


def test_heif_without_pillow_heif_names_the_install_command(tmp_path):
    pytest.importorskip("pillow_heif")  # only to write the file; the check runs where it cannot be imported
    path = tmp_path / "phone.heic"
    code = (
        "import sys; sys.modules['pillow_heif'] = None\n"
        "from defocus import imageio\n"
        "try:\n"
        f"    imageio.decode_rgb({str(path)!r})\n"
        "except imageio.ImageDecodeError as e:\n"
        "    print(e)\n"
    )
    writer = ("import pillow_heif, numpy as np; from PIL import Image; pillow_heif.register_heif_opener(); "
              f"Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save({str(path)!r}, format='HEIF')")
    subprocess.run([sys.executable, "-c", writer], check=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{path}: HEIF image: reading it needs pillow-heif ({imageio.HEIF_INSTALL})"


@needs_heif
@needs_avif
def test_predict_takes_phone_photos_from_a_folder(tmp_path):
    (tmp_path / "in").mkdir()
    save(tmp_path / "in" / "a.heic", "HEIF")
    save(tmp_path / "in" / "b.avif", "AVIF")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                                      "--method", "lbp", "--save", "prob", "--no-progress"])
    assert result.exit_code == 0, result.output
    for stem in ("a", "b"):
        with Image.open(tmp_path / "out" / f"{stem}_prob.png") as m:
            assert m.size == (40, 80)


@needs_heif
def test_ray_batches_open_heif_bytes(tmp_path):
    from defocus.distributed import _open_bytes

    im, error = _open_bytes(save(tmp_path / "a.heic", "HEIF").read_bytes())
    assert error is None and im.format == "HEIF"
    im, error = _open_bytes(b"\0\0\0\x1cftypheic" + bytes(20))
    assert im is None and error
