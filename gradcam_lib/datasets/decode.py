"""Decoding a batch's JPEGs on the model's device (``torchvision.io.decode_jpeg``; nvJPEG on CUDA).

How it fits the loop of :func:`~gradcam_lib.results.run_resumable` (which needs no change):

1. a data set in device mode (``ILSVRCValDataset(..., decode="device")``) reads each file's bytes
   and its header only (:func:`read_encoded`) in ``__getitem__``, i.e. in the DataLoader workers.
   :func:`~gradcam_lib.datasets.base.build_sample` maps the boxes from the header's width and
   height with the CPU path's own :meth:`~gradcam_lib.datasets.transforms.ImageTransform.map_boxes`,
   so ``Sample.boxes`` are final, and the Sample's ``image`` is a :class:`PendingImage` (the bytes
   and the transform; its ``shape`` is the model input's) instead of a tensor;
2. :func:`~gradcam_lib.datasets.base.collate_samples` then gives an :class:`ImageBatch` instead of
   a stacked tensor;
3. ``batch.to(device)`` decodes all its JPEGs on ``device`` in one call (on any device but CUDA:
   with libjpeg-turbo on the CPU), resizes and crops each with
   :meth:`~gradcam_lib.datasets.transforms.ImageTransform.resize_pixels`, normalises it with
   :meth:`~gradcam_lib.datasets.transforms.ImageTransform.normalise` -- the CPU path's geometry
   code -- and returns the ``(B, 3, H, W)`` float32 model input.

Fallback to the CPU path (:func:`~gradcam_lib.datasets.images.read_image`, then the transform: bit
for bit the default path). In the worker: files that are not JPEG, and JPEGs that are not 8-bit
grey or YCbCr colour -- CMYK and YCCK (torchvision's CUDA decoder does not switch on nvJPEG's CMYK
option, ``nvjpegDecodeParamsSetAllowCMYK``; on the CPU its conversion matches PIL's) and RGB-coded
ones (an Adobe transform 0, or ``R``, ``G``, ``B`` component ids), which nvJPEG is not known to
honour. At ``.to``: a JPEG that the decoder refuses (truncated data, which PIL refuses too, or
anything nvJPEG does not support), or decodes to another size than its header states; one such
file makes the batch decode again one by one (:func:`decode_jpegs`). Batches mixing both kinds
keep their order. A file that PIL cannot decode either raises the ``OSError`` of
:func:`~gradcam_lib.datasets.images.read_image`, naming it.

Differences from the CPU path. On the CPU, torchvision's libjpeg-turbo decodes the shipped JPEG
photographs to the same bytes as Pillow's and the geometry is the same call, so the model input is
identical (``tests/test_decode.py`` measures a max abs difference of 0). On CUDA two things differ:
nvJPEG's IDCT and chroma upsampling (torchvision's own test bounds the mean difference of the
decoded pixels by 2 levels), and torchvision resizes uint8 images through float32 and rounding
there, where the CPU has a native uint8 kernel: that part alone, measured on the CPU (float32
resize and rounding against the uint8 kernel), moves 11-16 % of the pixels of the shipped JPEG
photographs by one level (1 / 255 / 0.224 = 0.0175 in normalised units), a mean of at most 0.0029.
EXIF orientation is applied by neither path.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from gradcam_lib.datasets.images import open_image, read_image
from gradcam_lib.datasets.transforms import ImageTransform

__all__ = [
    "DECODE_MODES",
    "EncodedImage",
    "ImageBatch",
    "PendingImage",
    "decode_jpegs",
    "device_decodable",
    "read_encoded",
]

#: ``"pil"``: decode in ``__getitem__`` with PIL (the default); ``"device"``: at ``batch.to(device)``.
DECODE_MODES = ("pil", "device")
RGB_COMPONENT_IDS = (82, 71, 66)  # "R", "G", "B": libjpeg reads such a JPEG (without JFIF or Adobe) as RGB
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EncodedImage:
    """The bytes of one JPEG that the device decoder takes, with the size its header states."""

    data: torch.Tensor  # (N,) uint8, the whole file
    path: str
    width: int
    height: int

    def to_bytes(self) -> bytes:
        """The file's bytes."""
        return self.data.numpy().tobytes()


def device_decodable(image: Image.Image) -> bool:
    """Whether an opened (header-only) image is a JPEG that the device decoder turns into the RGB
    pixels PIL gives: 8 bits, one component (grey) or three coded as YCbCr (libjpeg's rule:
    JFIF means YCbCr, else an Adobe marker's transform 0 means RGB, else ``R``/``G``/``B`` ids do)."""
    if image.format != "JPEG" or image.mode not in ("L", "RGB"):
        return False
    if image.mode == "L" or "jfif" in image.info:
        return True
    if "adobe" in image.info:
        return image.info.get("adobe_transform") != 0
    return tuple(layer[0] for layer in getattr(image, "layer", ())) != RGB_COMPONENT_IDS


def read_encoded(path: str | os.PathLike[str]) -> EncodedImage | Image.Image:
    """Read a file's bytes and header: an :class:`EncodedImage` when the device decoder takes it
    (:func:`device_decodable`), else the image decoded by :func:`read_image` (the CPU path).

    Raises:
        The errors of :func:`~gradcam_lib.datasets.images.read_image`, naming the file (pixels that
        cannot be decoded raise only when the batch is decoded).
    """
    data = Path(path).read_bytes()
    header = open_image(path, data)
    if not device_decodable(header):
        return read_image(path, data)
    return EncodedImage(torch.frombuffer(bytearray(data), dtype=torch.uint8), os.fspath(path), *header.size)


def _decode(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """RGB uint8 pixels of JPEG bytes on ``device`` (CPU or CUDA)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torchvision 0.29 points to TorchCodec
        return list(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))


def _decode_one(image: EncodedImage, device: torch.device) -> torch.Tensor | None:
    try:
        return _decode([image.data], device)[0]
    except RuntimeError as error:
        _log.warning("decode_jpeg refused %s (%s); decoding it with PIL", image.path, error)
        return None


def decode_jpegs(images: Sequence[EncodedImage], device: str | torch.device) -> list[torch.Tensor | None]:
    """The ``(3, H, W)`` uint8 RGB pixels of each image on ``device``: decoded there with nvJPEG on
    CUDA, in one call for the batch, else with libjpeg-turbo on the CPU. None for an image the
    decoder refuses, or decodes to another size than its header states (one such image makes the
    batch decode again one by one)."""
    if not images:
        return []
    device = torch.device(device)
    where = device if device.type == "cuda" else torch.device("cpu")
    pixels: list[torch.Tensor | None]
    try:
        pixels = list(_decode([image.data for image in images], where))
    except RuntimeError:
        pixels = [_decode_one(image, where) for image in images]
    return [
        p.to(device) if p is not None and tuple(p.shape) == (3, image.height, image.width) else None
        for p, image in zip(pixels, images, strict=True)
    ]


@dataclass(frozen=True)
class PendingImage:
    """A Sample's image until its batch is decoded (:class:`ImageBatch`): the file's bytes and the
    transform that makes model input of them."""

    encoded: EncodedImage
    transform: ImageTransform

    @property
    def shape(self) -> torch.Size:
        """The model input's shape, ``(3, crop, crop)``, as a tensor image's."""
        return torch.Size((3, self.transform.crop, self.transform.crop))

    def finish(self, pixels: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """Decoded ``pixels`` (on ``device``) -> normalised model input through the transform's
        geometry; None -> the CPU path's model input, exactly, moved to ``device``."""
        if pixels is None:
            image = read_image(self.encoded.path, self.encoded.to_bytes())
            return self.transform(image)[0].to(device)
        return self.transform.normalise(self.transform.resize_pixels(pixels))


@dataclass(frozen=True)
class ImageBatch:
    """A collated batch of model inputs and pending images, decoded where they go."""

    items: tuple[torch.Tensor | PendingImage, ...]

    def __len__(self) -> int:
        return len(self.items)

    def pin_memory(self) -> ImageBatch:
        """The batch with its ready tensors pinned (``DataLoader(pin_memory=True)`` calls this)."""
        return ImageBatch(tuple(i.pin_memory() if isinstance(i, torch.Tensor) else i for i in self.items))

    def to(self, device: str | torch.device, non_blocking: bool = False) -> torch.Tensor:
        """The ``(B, 3, H, W)`` float32 model input on ``device``: pending images decoded there
        (:func:`decode_jpegs`) in one call, ready tensors moved."""
        device = torch.device(device)
        pending = [item for item in self.items if isinstance(item, PendingImage)]
        decoded = iter(decode_jpegs([p.encoded for p in pending], device))
        return torch.stack([
            item.finish(next(decoded), device) if isinstance(item, PendingImage)
            else item.to(device, non_blocking=non_blocking)
            for item in self.items
        ])
