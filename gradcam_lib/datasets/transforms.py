"""Image geometry shared by every data set: decode, resize, centre-crop, normalise, and boxes mapped
through exactly the same resize and crop as the pixels (the KTH reproduction scaled boxes
anisotropically while the image kept its aspect ratio, which misplaced every box of a non-square
image).

Two geometries (:attr:`ImageTransform.geometry`):

* ``"crop"`` (default): resize the shorter side to ``resize``, centre-crop ``crop`` x ``crop`` --
  torchvision's ImageNet evaluation transform; parts of a non-square image (and of its boxes) are
  cut;
* ``"resize"``: resize the whole image to ``crop`` x ``crop``, ignoring its aspect ratio -- the
  Grad-CAM paper's code (``image.scale(img, 224, 224)`` in ``misc/utils.lua``); nothing is cut.

Box convention everywhere in gradcam_lib: ``(xmin, ymin, xmax, ymax)`` in *inclusive* pixel
coordinates (the ILSVRC devkit's), i.e. the box covers columns ``xmin..xmax``. A box is mapped by
turning it into the continuous rectangle ``[xmin, xmax + 1) x [ymin, ymax + 1)``, sending that
through torchvision's ``transforms.v2`` together with the image, and keeping the pixels whose
centres lie inside the result. Boxes that end up covering no pixel of the crop are dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb(image: Image.Image) -> Image.Image:
    """Return an 8-bit RGB copy of ``image`` (grayscale, palette, CMYK, RGBA, 16-bit are converted)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = array.max() or 1.0
        image = Image.fromarray(np.round(array / peak * 255).astype(np.uint8))
    return image.convert("RGB")


def as_pil(image: Image.Image | np.ndarray | torch.Tensor) -> Image.Image:
    """A PIL image from a PIL image (returned as is), a numpy array ``(H, W)`` / ``(H, W, 3)`` or a
    tensor ``(3, H, W)`` / ``(1, H, W)`` (torchvision's layout; ``(H, W, 3)`` is accepted too).
    Pixels are uint8, or floats in [0, 1] (scaled by 255 and rounded to uint8).

    Raises:
        TypeError: another type or dtype. ValueError: another shape, or floats outside [0, 1]
            (an already normalised tensor: pass the pixels instead).
    """
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3) and array.shape[-1] not in (1, 3):
            array = np.moveaxis(array, 0, -1)
    elif isinstance(image, np.ndarray):
        array = image
    else:
        raise TypeError(f"image must be a PIL image, a numpy array or a tensor, got {type(image).__name__}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] != 3):
        raise ValueError(f"image array must be (H, W, 3), (H, W) or a (3, H, W) tensor, got shape {tuple(image.shape)}")
    if np.issubdtype(array.dtype, np.floating):
        if not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 1):
            raise ValueError(
                "a float image must hold pixels in [0, 1]; this one lies in "
                f"[{array.min():.3g}, {array.max():.3g}] (already normalised? pass the uint8 or [0, 1] pixels)"
            )
        array = np.round(array * 255.0)
    elif array.dtype != np.uint8:
        raise TypeError(f"image pixels must be uint8 or floats in [0, 1], got dtype {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array.astype(np.uint8)))


def inclusive_to_continuous(boxes: torch.Tensor) -> torch.Tensor:
    """``(N, 4)`` inclusive pixel boxes -> continuous ``[x0, x1) x [y0, y1)`` rectangles."""
    return boxes.to(torch.float64) + torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64)


def continuous_to_inclusive(boxes: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous rectangles -> inclusive boxes of the pixels whose centres lie inside, clipped to
    the image. Returns ``(boxes (M, 4) long, keep (N,) bool)``; empty boxes are left out."""
    b = boxes.to(torch.float64)
    x0 = torch.ceil(b[:, 0] - 0.5).clamp(min=0)
    y0 = torch.ceil(b[:, 1] - 0.5).clamp(min=0)
    x1 = torch.floor(b[:, 2] - 0.5).clamp(max=width - 1)
    y1 = torch.floor(b[:, 3] - 0.5).clamp(max=height - 1)
    keep = (x1 >= x0) & (y1 >= y0)
    out = torch.stack([x0, y0, x1, y1], dim=1)[keep].to(torch.long)
    return out, keep


GEOMETRIES = ("crop", "resize")


@dataclass(frozen=True)
class ImageTransform:
    """Resize the shorter side to ``resize``, centre-crop ``crop`` x ``crop``, scale to [0, 1],
    normalise by ``mean``/``std`` -- the torchvision ImageNet evaluation transform -- and map boxes
    through the same geometry. With ``geometry="resize"`` the whole image is resized to ``crop`` x
    ``crop`` instead (the Grad-CAM paper's code; ``resize`` is then unused)."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN  # one value per channel (three for RGB, one for MNIST)
    std: tuple[float, ...] = IMAGENET_STD
    geometry: str = "crop"

    def __post_init__(self) -> None:
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {GEOMETRIES}, got {self.geometry!r}")

    def with_geometry(self, geometry: str) -> ImageTransform:
        """The same transform (size, normalisation) with another geometry (``"crop"`` / ``"resize"``)."""
        return replace(self, geometry=geometry)

    @classmethod
    def whole_image(cls, size: int = 224, mean: tuple[float, ...] = IMAGENET_MEAN,
                    std: tuple[float, ...] = IMAGENET_STD) -> ImageTransform:
        """Resize the whole image to ``size`` x ``size`` (no crop), as the Grad-CAM paper's code does."""
        return cls(size, size, mean, std, geometry="resize")

    def __call__(
        self, image: Image.Image | np.ndarray | torch.Tensor, boxes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args:
            image: a PIL image of any mode, or pixels as :func:`as_pil` takes them (a numpy
                ``(H, W, 3)`` uint8 array, a ``(3, H, W)`` uint8 tensor, floats in [0, 1]).
            boxes: ``(N, 4)`` inclusive pixel boxes in the image's own coordinates, or None.

        Returns:
            ``(tensor (3, crop, crop) float32 normalised, boxes (M, 4) long inclusive in the
            output's pixels, keep (N,) bool: which input boxes survived the crop -- all of them
            with ``geometry="resize"``)``.
        """
        image = to_rgb(as_pil(image))
        width, height = image.size
        mapped, keep = self.map_boxes(boxes, height, width)
        return self.normalise(self.resize_pixels(TF.pil_to_tensor(image))), mapped, keep

    def _geometry(self) -> v2.Transform:
        """The resize (and centre crop) of :attr:`geometry`, for pixels and boxes alike."""
        if self.geometry == "resize":
            return v2.Resize((self.crop, self.crop), interpolation=InterpolationMode.BILINEAR, antialias=True)
        return v2.Compose(
            [
                v2.Resize(self.resize, interpolation=InterpolationMode.BILINEAR, antialias=True),
                v2.CenterCrop(self.crop),
            ]
        )

    def resize_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(3, H, W)`` pixels, on any device, -> uint8 ``(3, crop, crop)`` through the
        geometry (torchvision resizes uint8 natively on CPU, through float32 and rounding elsewhere)."""
        return self._geometry()(pixels)

    def map_boxes(self, boxes: torch.Tensor | None, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, 4)`` inclusive boxes of a ``height`` x ``width`` image (or None) -> ``(boxes (M, 4)
        long inclusive in the output's pixels, keep (N,) bool)``, through the same geometry as
        :meth:`resize_pixels`: the image's size is all it needs."""
        if boxes is None:
            boxes = torch.zeros((0, 4), dtype=torch.long)
        boxes = torch.as_tensor(boxes).reshape(-1, 4)
        rectangles = tv_tensors.BoundingBoxes(
            inclusive_to_continuous(boxes).to(torch.float32),
            format="XYXY",
            canvas_size=(height, width),
        )
        return continuous_to_inclusive(self._geometry()(rectangles).as_subclass(torch.Tensor), self.crop, self.crop)

    def normalise(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(..., 3, H, W)`` -> normalised float32."""
        x = pixels.to(torch.float32) / 255.0
        return TF.normalize(x, list(self.mean), list(self.std))

    def to_display(self, tensor: torch.Tensor) -> np.ndarray:
        """Normalised ``(C, H, W)`` tensor -> ``(H, W, 3)`` float array in [0, 1] for plotting
        (one-channel images, e.g. MNIST, are repeated to grey RGB)."""
        channels = len(self.mean)
        mean = torch.tensor(self.mean, dtype=torch.float32).view(channels, 1, 1)
        std = torch.tensor(self.std, dtype=torch.float32).view(channels, 1, 1)
        x = (tensor.detach().cpu().float() * std + mean).clamp(0, 1).expand(3, -1, -1)
        return x.permute(1, 2, 0).numpy()


def resize_for_crop(crop: int, ratio: float = 0.875) -> int:
    """The usual ImageNet evaluation resize for a given crop (224 -> 256)."""
    return math.floor(crop / ratio)
