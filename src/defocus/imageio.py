"""Image files in and out for inference: robust decoding, input collection, output naming, atomic writes.

Decoding turns anything Pillow can open into an 8-bit RGB image as it is displayed (EXIF orientation applied),
with one clear error per bad file (:class:`ImageDecodeError`). Writing goes through a temporary file in the
target folder and ``os.replace``, so a crash or a full disk never leaves a partial output behind.
"""
from __future__ import annotations

import contextlib

import glob
import json
import logging
import os
import threading
import urllib.parse
import struct
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .atomic import atomic_write, write_bytes_atomic  # noqa: F401  (part of this module's API)
from .listfiles import read_list_lines

log = logging.getLogger(__name__)

#: Images above this many pixels are refused unless the caller raises the limit (0 or None: no limit).
#: 250 MP admits 200-MP phone photos with room to spare and refuses decompression bombs. Memory no longer
#: grows with the photo for the maps (written in bands; large JPEGs decoded at a reduced scale for the network);
#: the overlay holds the decoded photo (4 bytes a pixel: 1 GB at 250 MP).
DEFAULT_MAX_PIXELS = 250_000_000

#: File name endings of the outputs.
OUTPUT_SUFFIXES = {"prob": "_prob.png", "mask": "_mask.png", "overlay": "_overlay.jpg"}
SUMMARY_NAME = "summary.json"
#: Every output carries this tag (PNG text chunk / JPEG comment): folders and globs never yield our own outputs
#: as inputs, and an existing file is only ever overwritten when it is one of our outputs.
OUTPUT_TAG = "defocus-output"
#: PNG text key under which an output records the input it came from (see :func:`source_id`).
OUTPUT_SOURCE_TAG = "defocus-source"

#: Suffixes taken from folders and globs (explicitly named files are always tried, whatever their suffix).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".tif", ".tiff", ".webp",
                            ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".jp2", ".j2k", ".avif",
                            ".heic", ".heif", ".hif"})

#: HEIF photos (the default of many phones) are read through the optional pillow-heif package.
HEIF_INSTALL = "pip install 'defocus[heif]'"
#: Major brands of the ISO base media file's ``ftyp`` box: HEIF stills and sequences (HEVC or any codec),
#: and AVIF, which Pillow reads itself from version 11.3.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})

#: Float image arrays may exceed 1 by this much (rounding of earlier processing) and are then clipped.
FLOAT_TOLERANCE = 1e-3

#: Background that transparent pixels are composited onto (neutral grey: neither sharp nor textured).
ALPHA_BACKGROUND = (128, 128, 128)

_EXIF_ORIENTATION = 0x0112
_TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)
_OPEN_LOCK = threading.Lock()


class ImageDecodeError(ValueError):
    """An input that cannot be used; ``str(e)`` is ``"<path>: <reason>"``, ``e.reason`` the reason alone."""

    def __init__(self, path, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


def pixel_count(n: float) -> str:
    """A pixel count in words: ``"12.2 MP"``, ``"250 MP"``, or ``"26600 pixels"`` below a tenth of a
    megapixel."""
    return f"{round(n / 1e6, 1):g} MP" if n >= 100_000 else f"{int(n)} pixels"


def pixel_counts(a: float, b: float) -> tuple[str, str]:
    """Two pixel counts in words (:func:`pixel_count`), exact when the rounded words would read the same."""
    words = pixel_count(a), pixel_count(b)
    return (f"{int(a)} pixels", f"{int(b)} pixels") if words[0] == words[1] else words


def _pixel_limit_message(w: int, h: int, max_pixels: int) -> str:
    size, limit = pixel_counts(w * h, max_pixels)
    return (f"image is {w}x{h} = {size}, above the limit of {limit} "
            f"(a guard against decompression bombs); raise it with --max-pixels / max_pixels=N "
            f"(0 disables the limit)")


def container_brand(head: bytes) -> str | None:
    """``"heif"`` or ``"avif"`` when ``head`` (a file's first 12 bytes or more) starts an ISO base media file of
    that kind (its ``ftyp`` box's major brand), else ``None``."""
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    brand = head[8:12]
    return "heif" if brand in _HEIF_BRANDS else "avif" if brand in _AVIF_BRANDS else None


def _register_heif_opener() -> bool:
    """Teach Pillow to open HEIF files (pillow-heif); ``False`` when pillow-heif is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def _unreadable_reason(head: bytes) -> str:
    """Why Pillow could not identify a file that starts with ``head``."""
    kind = container_brand(head)
    if kind == "heif":
        return f"HEIF image: reading it needs pillow-heif ({HEIF_INSTALL})"
    if kind == "avif":
        return f"AVIF image: this Pillow ({Image.__version__}) cannot read it; Pillow >= 11.3 can"
    return "not an image, or a format Pillow cannot read"


def open_pil(fp) -> Image.Image:
    """``Image.open(fp)`` (a path or a seekable binary file), with HEIF files opened through pillow-heif when
    it is installed. Raises ``ValueError`` with the reason when the file cannot be identified as an image."""
    try:
        return Image.open(fp)
    except UnidentifiedImageError:
        pass
    if isinstance(fp, (str, os.PathLike)):
        with open(fp, "rb") as f:
            head = f.read(16)
    else:
        fp.seek(0)
        head = fp.read(16)
        fp.seek(0)
    if container_brand(head) == "heif" and _register_heif_opener():
        try:
            return Image.open(fp)
        except UnidentifiedImageError:
            pass
    raise ValueError(_unreadable_reason(head))


def open_image(path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``path`` lazily (header only) and check it against ``max_pixels``.

    Pillow's own global decompression-bomb limit is replaced by ``max_pixels`` for this call, so the limit is
    the caller's in both directions. Raises :class:`ImageDecodeError` for missing, empty and unreadable files.
    """
    path = Path(path)
    try:
        st = path.stat()
    except OSError as e:
        raise ImageDecodeError(path, e.strerror or str(e)) from None
    if not path.is_file():
        raise ImageDecodeError(path, "not a regular file")
    if st.st_size == 0:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = open_pil(path)
        except ValueError as e:
            raise ImageDecodeError(path, str(e)) from None
        except OSError as e:
            raise ImageDecodeError(path, f"cannot open: {e}") from None
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    w, h = im.size
    if w < 1 or h < 1:
        raise ImageDecodeError(path, f"image has no pixels ({w}x{h})")
    if max_pixels and w * h > max_pixels:
        im.close()
        raise ImageDecodeError(path, _pixel_limit_message(w, h, max_pixels))
    return im


def exif_orientation(im: Image.Image) -> int:
    """The EXIF orientation tag of ``im`` (1 = upright) or 1 when absent or unreadable.

    Never decodes pixel data: a PNG whose EXIF chunk follows its pixel data reads as 1 until it is loaded (Pillow
    would decode the whole image to reach that chunk, before any size check, and hide a decoding error)."""
    try:
        exif = _png_header_exif(im) if im.format == "PNG" and im.tile else im.getexif()
        value = int(exif.get(_EXIF_ORIENTATION, 1))
    except Exception:  # a broken EXIF block must not make the image unusable
        return 1
    return value if 1 <= value <= 8 else 1


def size_already_oriented(im: Image.Image) -> bool:
    """Whether Pillow reports ``im.size`` with the orientation applied (TIFF from Pillow 12 on, which also turns
    the pixels upright when loading): the stored width and height tags then read swapped."""
    tags = getattr(im, "tag_v2", None) if im.format == "TIFF" else None
    if not tags or 256 not in tags or 257 not in tags:
        return False
    return (tags[256], tags[257]) != im.size


def _png_header_exif(im: Image.Image) -> Image.Exif:
    """The EXIF a PNG holds ahead of its pixel data (an eXIf chunk, or ImageMagick's "Raw profile type exif"
    text), read without decoding the pixels as Pillow's own ``getexif`` would."""
    raw = im.info.get("exif")
    if raw is None and "Raw profile type exif" in im.info:
        raw = bytes.fromhex("".join(str(im.info["Raw profile type exif"]).split("\n")[3:]))
    exif = Image.Exif()
    if raw is not None:
        exif.load(raw)
    return exif


def displayed_size(im: Image.Image, orientation: int | None = None) -> tuple[int, int]:
    """(width, height) of ``im`` as displayed, i.e. after its EXIF orientation is applied."""
    orientation = exif_orientation(im) if orientation is None else orientation
    w, h = im.size
    if orientation in _TRANSPOSING_ORIENTATIONS and not size_already_oriented(im):
        return h, w
    return w, h


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB.

    Alpha (RGBA, LA, palette transparency) is composited onto :data:`ALPHA_BACKGROUND`; 16-bit images (and
    32-bit integer images with values above 255, taken as 16-bit) are scaled to 8 bits, not clipped; float
    images in [0, 1] are scaled by 255; CMYK and YCbCr use Pillow's conversions.
    """
    mode = im.mode
    if mode == "RGB":
        return im
    if mode == "P" and "transparency" in im.info or mode in ("RGBA", "RGBa", "LA", "La", "PA"):
        rgba = im.convert("RGBA")
        base = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(im).astype(np.float64)
        if mode.startswith("I;16") or a.max(initial=0) > 255:
            a = a / 257.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        a = np.nan_to_num(np.asarray(im, dtype=np.float64))
        if a.max(initial=0) <= 1.0:
            a = a * 255.0
        return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


def decode_rgb(path, max_pixels: int | None = DEFAULT_MAX_PIXELS,
               draft_min_size=None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``path`` to an RGB image as displayed; return ``(image, native_size)``.

    ``native_size`` is the full image's displayed (width, height). With ``draft_min_size=(w, h)`` (or a function
    of the native size returning it, or ``None`` for a full decode) a JPEG is decoded at the smallest DCT scale
    (1/2, 1/4, 1/8) that still has at least that many displayed pixels on each side (``image.size`` is then
    smaller than ``native_size``); other formats ignore it. Only the first frame of animated files is used.
    Raises :class:`ImageDecodeError` naming the file and the reason.
    """
    im = open_image(path, max_pixels)
    try:
        rgb, native = _decode_opened(path, im, draft_min_size)
    except BaseException:
        im.close()
        raise
    if rgb is not im:
        im.close()
    elif getattr(im, "fp", None) is not None:  # multi-frame formats keep the file open after load()
        rgb = im.copy()
        im.close()
    return rgb, native


@contextlib.contextmanager
def _decoding(path):
    """Pillow's errors while decoding pixel data, as an :class:`ImageDecodeError` naming the file."""
    try:
        yield
    except OSError as e:
        raise ImageDecodeError(path, f"truncated or corrupt image data ({e})") from None
    except (ValueError, SyntaxError, EOFError) as e:
        raise ImageDecodeError(path, f"corrupt image data ({e})") from None


def _decode_opened(path, im: Image.Image, draft_min_size):
    orientation = exif_orientation(im)
    native = displayed_size(im, orientation)
    wanted = draft_min_size(native) if callable(draft_min_size) else draft_min_size
    if wanted is not None and im.format == "JPEG":
        dw, dh = wanted
        if orientation in _TRANSPOSING_ORIENTATIONS:
            dw, dh = dh, dw
        im.draft("RGB", (int(dw), int(dh)))
    with _decoding(path):
        im.load()
    # again once loaded: a PNG's EXIF chunk after the pixel data is read with them, and Pillow turns a TIFF
    # upright itself while loading (dropping its orientation tag); a JPEG may have been decoded reduced (draft)
    loaded = exif_orientation(im)
    if loaded != orientation and im.format != "JPEG":
        native = displayed_size(im, loaded)
    orientation = loaded
    if orientation != 1:
        try:
            im = ImageOps.exif_transpose(im)
        except Exception as e:  # keep the pixels, report the orientation problem
            log.warning("%s: EXIF orientation not applied (%s)", path, e)
    try:
        return to_rgb(im), native
    except (OSError, ValueError) as e:
        raise ImageDecodeError(path, f"unsupported pixel format {im.mode!r} ({e})") from None


def image_from_array(array) -> Image.Image:
    """An RGB PIL image from a NumPy array: HxW (grey), HxWx3 (RGB) or HxWx4 (RGBA, composited on grey),
    of dtype uint8, uint16 (scaled by 1/257) or float in [0, 1]."""
    a = np.asarray(array)
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image array, got shape {a.shape}")
    if a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"image array has no pixels (shape {a.shape})")
    if a.dtype == np.uint16:
        a = np.rint(a / 257.0).astype(np.uint8)
    elif a.dtype.kind == "f":
        a = np.nan_to_num(a)
        if a.max(initial=0.0) > 1.0 + FLOAT_TOLERANCE:
            raise ValueError(f"float image array has values up to {a.max():g}; expected [0, 1] (divide by 255, "
                             f"or pass uint8)")
        if a.min(initial=0.0) < -FLOAT_TOLERANCE:
            raise ValueError(f"float image array has values down to {a.min():g}; expected [0, 1] (pass the image "
                             f"before any mean/std normalisation)")
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    elif a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        raise ValueError(f"unsupported image array dtype {a.dtype} (use uint8, uint16 or float in [0, 1])")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    mode = "L" if a.ndim == 2 else ("RGB" if a.shape[2] == 3 else "RGBA")
    return to_rgb(Image.fromarray(np.ascontiguousarray(a), mode))


# ----------------------------------------------------------------------------------------------- writing


def save_image_atomic(image: Image.Image, path, format: str, **params) -> Path:
    """Save a PIL image atomically (see :func:`atomic_write`); ``params`` go to ``Image.save``."""
    return atomic_write(path, lambda f: image.save(f, format=format, **params))


class PngStripWriter:
    """Writes an 8-bit greyscale PNG to an open binary file a band of rows at a time, so that no full-size image
    is ever held: :meth:`write` each band in order, then :meth:`close`. Rows are stored with PNG's "Up" filter
    (difference to the row above: smooth maps and masks compress well) in a zlib stream at ``compress_level``.
    ``text`` entries become ``tEXt`` chunks (Pillow reads them into ``Image.info``)."""

    SIGNATURE = b"\x89PNG\r\n\x1a\n"

    def __init__(self, f, width: int, height: int, text: dict | None = None, compress_level: int = 6):
        self.f, self.width, self.height = f, int(width), int(height)
        self.rows_written = 0
        self._z = zlib.compressobj(compress_level)
        self._prev = np.zeros(self.width, np.uint8)
        f.write(self.SIGNATURE)
        self._chunk(b"IHDR", struct.pack(">IIBBBBB", self.width, self.height, 8, 0, 0, 0, 0))
        for key, value in (text or {}).items():
            self._chunk(b"tEXt", key.encode("latin-1") + b"\0" + str(value).encode("latin-1"))

    def _chunk(self, kind: bytes, data: bytes):
        self.f.write(struct.pack(">I", len(data)) + kind + data)
        self.f.write(struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)) & 0xFFFFFFFF))

    def write(self, rows: np.ndarray):
        """Append a band of rows (HxW uint8)."""
        rows = np.asarray(rows, np.uint8)
        if rows.ndim != 2 or rows.shape[1] != self.width or self.rows_written + rows.shape[0] > self.height:
            raise ValueError(f"band of shape {rows.shape} does not fit a {self.width}x{self.height} PNG "
                             f"after {self.rows_written} rows")
        if not rows.shape[0]:
            return
        filtered = np.empty((rows.shape[0], self.width + 1), np.uint8)
        filtered[:, 0] = 2  # filter type "Up"
        np.subtract(rows[0], self._prev, out=filtered[0, 1:])
        np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
        self._prev = rows[-1].copy()
        data = self._z.compress(filtered.tobytes())
        if data:
            self._chunk(b"IDAT", data)
        self.rows_written += rows.shape[0]

    def close(self):
        """Finish the zlib stream and the file (all ``height`` rows must have been written)."""
        if self.rows_written != self.height:
            raise ValueError(f"PNG has {self.height} rows, {self.rows_written} written")
        self._chunk(b"IDAT", self._z.flush())
        self._chunk(b"IEND", b"")


def write_png_strips(path, width: int, height: int, bands, text: dict | None = None,
                     compress_level: int = 6) -> Path:
    """Write an 8-bit greyscale PNG atomically from ``bands``, an iterable of HxW uint8 row bands in order
    (see :class:`PngStripWriter`)."""

    def write(f):
        writer = PngStripWriter(f, width, height, text, compress_level)
        for band in bands:
            writer.write(band)
        writer.close()

    return atomic_write(path, write)


def output_save_params(kind: str) -> dict:
    """Pillow ``save`` parameters that tag an output of ``kind`` (see :data:`OUTPUT_TAG`)."""
    if OUTPUT_SUFFIXES[kind].endswith(".png"):
        from PIL.PngImagePlugin import PngInfo

        info = PngInfo()
        info.add_text(OUTPUT_TAG, kind)
        return {"pnginfo": info}
    return {"comment": f"{OUTPUT_TAG} {kind}".encode()}


def source_id(source) -> str:
    """An input as a map records it (:attr:`~defocus.inference.Prediction.source_tag`: Ray batch prediction's row
    path, absolute for local files, ``bucket/key`` for remote ones), percent-encoded as PNG text must be Latin-1: a
    later run never takes the map for another input's."""
    return urllib.parse.quote(str(source).encode("utf-8", "surrogateescape"))


def is_tagged_output(path) -> bool:
    """Whether ``path`` is an image written by this tool (reads the header only)."""
    try:
        with Image.open(path) as im:
            comment = im.info.get("comment", b"")
            if isinstance(comment, bytes):
                comment = comment.decode("latin-1")
            return OUTPUT_TAG in im.info or str(comment).startswith(OUTPUT_TAG)
    except Exception:  # unreadable files are not ours
        return False


def check_writable_dir(folder) -> Path:
    """Create ``folder`` if needed and check that files can be created in it; raise ``OSError`` with a clear
    message otherwise."""
    folder = Path(folder).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(b"", folder / ".defocus-write-test")
        os.unlink(folder / ".defocus-write-test")
    except OSError as e:
        raise OSError(f"{folder}: output folder cannot be written ({e.strerror or e})") from None
    return folder


# ---------------------------------------------------------------------------------------- input listing


@dataclass
class InputList:
    """Image files to process, in order, plus the inputs that named nothing usable."""

    files: list[Path] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (input as given, reason)
    outputs: list[Path] = field(default_factory=list)  # this tool's own outputs named as inputs: not taken


def is_batch_summary(path) -> bool:
    """Whether ``path`` is a ``summary.json`` that a batch of ``defocus predict`` wrote (a JSON object with the
    per-image list and its count)."""
    try:
        summary = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and isinstance(summary.get("images"), list) and "n_images" in summary


def is_output_file(name: str, fp) -> bool:
    """Whether a file named ``name`` (its contents ``fp``: a path or a binary file) is an image output of this
    tool: an output's name and its tag."""
    return any(name.endswith(s) for s in OUTPUT_SUFFIXES.values()) and is_tagged_output(fp)


def _is_our_output(p: Path) -> bool:
    if p.name == SUMMARY_NAME:
        return is_batch_summary(p)
    return is_output_file(p.name, p)


def _wanted(p: Path) -> bool:
    """Folder / glob members that are taken: visible image files that are not this tool's outputs."""
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES and not _is_our_output(p)


def _walk(folder: Path, recursive: bool, errors: list) -> list[Path]:
    """Image files in ``folder``, sorted by name (hidden entries and our outputs skipped); folders that cannot
    be listed are added to ``errors``."""
    found = []
    try:
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
    except OSError as e:
        errors.append((str(folder), f"cannot list folder ({e.strerror or e})"))
        return found
    for p in entries:
        if p.is_dir():
            if recursive and not p.is_symlink() and not p.name.startswith("."):
                found.extend(_walk(p, recursive, errors))
        elif _wanted(p):
            found.append(p)
    return found


def read_path_list(list_file: Path) -> list[str]:
    """Entries of a ``.txt`` list (see :func:`defocus.listfiles.read_list_lines`): one path per line; relative
    paths are relative to the list file's folder."""
    entries = []
    for line in read_list_lines(list_file):
        p = Path(line).expanduser()
        entries.append(str(p if p.is_absolute() else list_file.parent / p))
    return entries


def collect_inputs(inputs, recursive: bool = False) -> InputList:
    """Expand command-line style inputs into image files.

    Each input is a file (used whatever its suffix), a folder (its image files; sub-folders with
    ``recursive``), a glob pattern (``*``, ``?``, ``[...]``; ``**`` with ``recursive``), or a ``.txt`` file
    listing such inputs (one per line); a single path may be given instead of a list. Files are de-duplicated
    (first occurrence kept). This tool's own (tagged) outputs are never taken, also when named one by one (as a
    shell expands ``photos/*.jpg``): they are listed in ``outputs``, so that a run writing into its own input
    folder never re-reads its outputs. Folders and globs also skip hidden files.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    result = InputList()
    seen: set[Path] = set()

    def add(p: Path):
        try:
            key = p.resolve()
        except OSError:
            key = p.absolute()
        if key not in seen:
            seen.add(key)
            result.files.append(p)

    def expand(item: str, allow_lists: bool):
        p = Path(item).expanduser()
        if p.is_dir():
            n_errors = len(result.errors)
            files = _walk(p, recursive, result.errors)
            if not files and len(result.errors) == n_errors:
                result.errors.append((item, "no image files in this folder" + ("" if recursive else
                                                                               " (--recursive for sub-folders)")))
            for f in files:
                add(f)
        elif p.is_file() or p.is_symlink():
            if allow_lists and p.suffix.lower() == ".txt":
                try:
                    entries = read_path_list(p)
                except (OSError, UnicodeDecodeError) as e:
                    result.errors.append((item, f"cannot read list file ({e})"))
                    return
                for entry in entries:
                    expand(entry, allow_lists=False)
            elif _is_our_output(p):
                result.outputs.append(p)
            else:
                add(p)
        elif glob.has_magic(item):
            matches = sorted(glob.glob(os.path.expanduser(item), recursive=recursive))
            files = []
            for m in map(Path, matches):
                if m.is_dir():
                    files.extend(_walk(m, recursive, result.errors))
                elif _wanted(m):
                    files.append(m)
            if not files:
                result.errors.append((item, "no image files match this pattern"))
            for f in files:
                add(f)
        else:
            result.errors.append((item, "no such file or directory"))

    for item in inputs:
        expand(str(item), allow_lists=True)
    return result


def output_stems(files, out_dir, avoid=()) -> list[str]:
    """A unique output stem per input file, in order.

    Stems that occur once keep the file's stem; repeated stems (compared case-insensitively, as on macOS and
    Windows) get ``-2``, ``-3``, ... in input order. No stem yields an output path that is an input file, a path
    in ``avoid``, or an existing file that is not one of this tool's outputs: inputs and other files are never
    overwritten (earlier outputs are), even when the output folder is the input folder.
    """
    out_dir = Path(out_dir).resolve()
    files = [Path(f) for f in files]
    reserved = {Path(a).resolve() for a in avoid}
    for f in files:
        try:
            reserved.add(f.resolve())
        except OSError:
            pass

    def clashes(stem: str) -> bool:
        for suffix in OUTPUT_SUFFIXES.values():
            target = out_dir / (stem + suffix)
            if target in reserved or (os.path.lexists(target) and not is_tagged_output(target)):
                return True
        return False

    counts: dict[str, int] = {}
    for f in files:
        counts[f.stem.casefold()] = counts.get(f.stem.casefold(), 0) + 1
    taken = {f.stem.casefold() for f in files if counts[f.stem.casefold()] == 1 and not clashes(f.stem)}
    stems, first_done = [], set()
    for f in files:
        stem = f.stem or "image"
        key = stem.casefold()
        if counts.get(key) == 1 and key in taken:
            stems.append(stem)
            continue
        if counts.get(key, 0) > 1 and key not in first_done and key not in taken and not clashes(stem):
            first_done.add(key)
            taken.add(key)
            stems.append(stem)
            continue
        n = 2
        while f"{stem}-{n}".casefold() in taken or clashes(f"{stem}-{n}"):
            n += 1
        taken.add(f"{stem}-{n}".casefold())
        stems.append(f"{stem}-{n}")
    return stems
