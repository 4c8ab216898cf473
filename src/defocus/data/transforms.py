"""Paired image/mask transforms (torchvision.transforms.v2): the paper's training recipe and evaluation.

Every transform is called as ``t(image, mask)`` with an RGB image and an 'L' mask where 255 = in focus (PIL
images or uint8 arrays) and returns ``(image, target)``: a normalised float tensor 3xHxW and a float tensor
1xHxW in {0, 1} with 1 = in focus. ``t(image, mask, ignore)`` with an ignore mask (True or 255 = undetermined)
transforms it with the mask (same flip, nearest resize) and returns ``(image, target, valid)``, ``valid`` a float
tensor 1xHxW with 1 = determined.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ..imagenet import IMAGENET_MEAN, IMAGENET_STD


class PairedResize(v2.Transform):
    """Resize to ``size`` (int = square, aspect not kept, as the paper does): images bilinear (PIL's resampling
    for PIL input, as the reference), masks nearest with pixel-centre sampling (``NEAREST_EXACT``, which picks
    the same source pixels as PIL's nearest resize the reference uses). ``upscale=False`` (not in the paper) never
    enlarges: a side shorter than its target keeps its length, as ``Predictor(upscale=False)`` runs a small photo
    (follow it with :class:`MirrorPad` to batch such samples)."""

    def __init__(self, size, image_interpolation=InterpolationMode.BILINEAR,
                 mask_interpolation=InterpolationMode.NEAREST_EXACT, upscale: bool = True):
        super().__init__()
        self.size = [size, size] if isinstance(size, int) else list(size)
        self.image_interpolation = image_interpolation
        self.mask_interpolation = mask_interpolation
        self.upscale = upscale

    def make_params(self, flat_inputs) -> dict:
        """The output ``size`` [height, width] of this sample."""
        if self.upscale:
            return {"size": self.size}
        height, width = v2.query_size(flat_inputs)
        return {"size": [min(self.size[0], height), min(self.size[1], width)]}

    def transform(self, inpt, params):
        """Resize one input according to its type."""
        if isinstance(inpt, tv_tensors.Mask):
            return TF.resize(inpt, params["size"], interpolation=self.mask_interpolation)
        return TF.resize(inpt, params["size"], interpolation=self.image_interpolation, antialias=True)


class MirrorPad(v2.Transform):
    """Pad the bottom and right of a sample smaller than ``size`` out to it by mirroring the image and every mask
    alike, so that a photo that was not enlarged (``PairedResize(upscale=False)``) batches with the others: the
    mirrored part is the same scene with its own labels, and a mirror adds no flat band or edge of its own."""

    def __init__(self, size):
        super().__init__()
        self.size = [size, size] if isinstance(size, int) else list(size)

    def make_params(self, flat_inputs) -> dict:
        """The rows and columns to add."""
        height, width = v2.query_size(flat_inputs)
        return {"rows": max(0, self.size[0] - height), "cols": max(0, self.size[1] - width)}

    def transform(self, inpt, params):
        """Mirror one input out to the size (in steps: one reflection adds at most its side - 1)."""
        rows, cols = params["rows"], params["cols"]
        while rows > 0 or cols > 0:
            height, width = v2.query_size([inpt])
            if min(height, width) < 2:
                return TF.pad(inpt, [0, 0, cols, rows], padding_mode="edge")
            add_rows, add_cols = min(rows, height - 1), min(cols, width - 1)
            inpt = TF.pad(inpt, [0, 0, add_cols, add_rows], padding_mode="reflect")
            rows, cols = rows - add_rows, cols - add_cols
        return inpt


class RandomZoom(v2.Transform):
    """With probability ``p``, crop a random window covering a share of the image's area drawn uniformly from
    ``scale`` (its aspect within ``ratio`` of the image's own), to be resized to the training size afterwards:
    the network sees parts of photos enlarged, as a small photo or a crop is enlarged at inference. The same
    window is cut from the image and every mask. (Not ``v2.RandomResizedCrop``: its resize would sample masks
    with ``NEAREST``, not the pixel-centre sampling of :class:`PairedResize`.)"""

    def __init__(self, scale: tuple[float, float] = (0.25, 1.0), p: float = 0.5,
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        super().__init__()
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"zoom scale must satisfy 0 < low <= high <= 1, got {scale}")
        self.scale, self.p, self.ratio = (float(scale[0]), float(scale[1])), float(p), ratio

    def make_params(self, flat_inputs) -> dict:
        """The window ``(top, left, height, width)``, or None (this sample is not zoomed)."""
        if torch.rand(1).item() >= self.p:
            return {"box": None}
        height, width = v2.query_size(flat_inputs)
        area = torch.empty(1).uniform_(*self.scale).item()
        log_ratio = torch.empty(1).uniform_(np.log(self.ratio[0]), np.log(self.ratio[1])).item()
        aspect = float(np.exp(log_ratio))
        h = min(height, max(1, round(height * (area / aspect) ** 0.5)))
        w = min(width, max(1, round(width * (area * aspect) ** 0.5)))
        top = int(torch.randint(0, height - h + 1, (1,)).item())
        left = int(torch.randint(0, width - w + 1, (1,)).item())
        return {"box": (top, left, h, w)}

    def transform(self, inpt, params):
        """Cut the window from one input (or pass it through)."""
        if params["box"] is None:
            return inpt
        return TF.crop(inpt, *params["box"])


def _to_pil(x, mode: str) -> Image.Image:
    if isinstance(x, Image.Image):
        return x.convert(mode) if x.mode != mode else x
    arr = np.asarray(x)
    if mode == "L" and arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    return Image.fromarray(arr.astype(np.uint8)).convert(mode)


class PairTransform:
    """A v2 pipeline applied jointly to an image and its in-focus mask (255 = in focus)."""

    def __init__(self, ops: Sequence, size: Optional[int], mean, std):
        self.pipeline = v2.Compose(list(ops))
        self.size, self.mean, self.std = size, tuple(mean), tuple(std)

    def __call__(self, image, mask, ignore=None, depth=None):
        """Transform one pair; returns ``(image float 3xHxW normalised, target float 1xHxW in {0,1})``, plus
        ``valid`` (float 1xHxW, 1 = determined) when an ``ignore`` mask is given, plus ``depth`` (float 1xHxW,
        flipped and nearest-resized with the mask) when a ``depth`` map (HxW float) is given too."""
        image = _to_pil(image, "RGB")
        mask_arr = np.asarray(_to_pil(mask, "L"))
        mask_t = tv_tensors.Mask(torch.from_numpy(np.array(mask_arr, dtype=np.uint8))[None])
        if depth is not None:
            if ignore is None:
                raise ValueError("a depth map is transformed together with an ignore mask")
            ign_t = tv_tensors.Mask(torch.from_numpy(np.array(np.asarray(_to_pil(ignore, "L")), dtype=np.uint8))[None])
            dep_t = tv_tensors.Mask(torch.from_numpy(np.array(depth, dtype=np.float32))[None])
            img_t, mask_t, ign_t, dep_t = self.pipeline(image, mask_t, ign_t, dep_t)
            return (img_t, (mask_t.as_subclass(torch.Tensor) >= 128).float(),
                    (ign_t.as_subclass(torch.Tensor) < 128).float(), dep_t.as_subclass(torch.Tensor).float())
        if ignore is None:
            img_t, mask_t = self.pipeline(image, mask_t)
            return img_t, (mask_t.as_subclass(torch.Tensor) >= 128).float()
        ign = np.asarray(_to_pil(ignore, "L"))
        ign_t = tv_tensors.Mask(torch.from_numpy(np.array(ign, dtype=np.uint8))[None])
        img_t, mask_t, ign_t = self.pipeline(image, mask_t, ign_t)
        return img_t, (mask_t.as_subclass(torch.Tensor) >= 128).float(), (ign_t.as_subclass(torch.Tensor) < 128).float()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def _tail(mean, std) -> list:
    return [v2.ToImage(), v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
            v2.Normalize(mean=list(mean), std=list(std))]


def train_transform(size: int = 320, mean=IMAGENET_MEAN, std=IMAGENET_STD, hflip: float = 0.5,
                    jitter: float = 0.1, zoom: Optional[tuple[float, float]] = None,
                    zoom_prob: float = 0.5, upscale: bool = True, crop: Optional[int] = None,
                    pad_to: Optional[int] = None) -> PairTransform:
    """The paper's training recipe (method.md §3.1): horizontal flip (p = ``hflip``), resize to ``size`` x ``size``
    (image bilinear, mask nearest, aspect not kept), ColorJitter(``jitter``, ``jitter``, ``jitter``, 0) on the
    image, then to float and normalise with ``mean``/``std`` (ImageNet; pass the backbone's, e.g. 0.5/0.5 for
    EfficientNet-Lite). ``size=None`` keeps the input size. ``zoom`` (not in the paper): with probability
    ``zoom_prob`` a window covering that share of the area (low, high) is cut before the resize
    (:class:`RandomZoom`). ``upscale=False`` (not in the paper): a side shorter than ``size`` is not enlarged; the
    sample is mirrored out to ``size`` instead (:class:`MirrorPad`), so the network learns sharpness at the scale
    ``Predictor(upscale=False)`` shows it small photos. ``crop`` (not in the paper): after the resize, a random
    ``crop`` x ``crop`` window is cut (a smaller sample is mirrored out to ``crop``, not to ``size``), so the
    network learns at the scale of a ``size`` input while a step costs a ``crop`` one. ``pad_to`` (not in the paper,
    with ``upscale=False`` and no ``crop``): a side shorter than ``pad_to`` is mirrored out to it and a longer one
    is left as the resize made it, so samples keep their own shape (a whole 512x432 frame at ``size`` 512)."""
    if pad_to is not None and (upscale or crop is not None):
        raise ValueError("pad_to mirrors out photos that are not enlarged and not cropped: "
                         "it needs upscale=False and no crop")
    ops = []
    if hflip > 0:
        ops.append(v2.RandomHorizontalFlip(p=hflip))
    if zoom is not None and zoom_prob > 0:
        ops.append(RandomZoom(zoom, p=zoom_prob))
    if size is not None:
        ops.append(PairedResize(size, upscale=upscale))
        if not upscale or crop is not None:
            ops.append(MirrorPad(pad_to or (size if crop is None else crop)))
    if crop is not None:
        ops.append(v2.RandomCrop(crop))
    if jitter > 0:
        ops.append(v2.ColorJitter(brightness=jitter, contrast=jitter, saturation=jitter, hue=0))
    return PairTransform(ops + _tail(mean, std), size if crop is None else crop, mean, std)


def eval_transform(size: Optional[int] = 320, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                   resize_mask: bool = True, upscale: bool = True) -> PairTransform:
    """Evaluation: resize to ``size`` x ``size`` (``None`` keeps the input size) and normalise. With
    ``resize_mask=False`` the target keeps the mask's original size (full-resolution scoring, batch size 1).
    ``upscale=False`` (not in the paper) never enlarges a side, as ``Predictor(upscale=False)``: samples of
    photos smaller than ``size`` keep their own size (batch size 1)."""
    ops = []
    if size is not None:
        resize = PairedResize(size, upscale=upscale)
        ops.append(resize if resize_mask else _ImageOnly(resize))
    return PairTransform(ops + _tail(mean, std), size, mean, std)


class _ImageOnly(v2.Transform):
    """Apply a transform to images only, passing masks through."""

    def __init__(self, inner: v2.Transform):
        super().__init__()
        self.inner = inner

    def make_params(self, flat_inputs) -> dict:
        """The inner transform's parameters."""
        return self.inner.make_params(flat_inputs)

    def transform(self, inpt, params):
        """Pass masks through; delegate everything else."""
        if isinstance(inpt, tv_tensors.Mask):
            return inpt
        return self.inner.transform(inpt, params)
