"""A generated localisation benchmark with exact boxes: object crops cut from the embedded
photographs' hand-made boxes, pasted on scikit-image textures.

Protocol (one image, fully determined by ``(seed, index)``):

1. Background: one of the grayscale textures ``brick``/``grass``/``gravel`` (scikit-image ``data``),
   a random square window of it (half to all of its side, random quarter turn) resized to the
   canvas, tinted with that texture's colour plus a random jitter.
2. Objects: ``n ~ U{1..max_objects}`` crops drawn without replacement, none sharing a class with
   another (so every class-specific map has one target). Each keeps its aspect ratio; its
   sqrt-area is ``U(scale) / sqrt(n)`` times the usable side, and no side exceeds the usable side.
3. Placement: uniformly inside the canvas less ``margin`` on each side (the default 1/16 is what
   the resize-256/crop-224 evaluation transform cuts, so every object stays in the model's view),
   with **no overlap**: a rectangle that would share a pixel with an earlier one is redrawn (up to
   ``tries`` times, then the object shrinks by 20 % and is tried again).
4. Boxes: the paste rectangle, inclusive -- exact by construction -- plus any box of the source
   photograph that lay at least half inside the crop (Grace Hopper's tie inside her uniform),
   mapped through the paste's scaling. Then the image and boxes go through the model's transform
   like any other data set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample, build_sample
from gradcam_lib.datasets.samples import RawPhoto, load_raw_photos
from gradcam_lib.datasets.transforms import ImageTransform, continuous_to_inclusive, inclusive_to_continuous

__all__ = ["TEXTURE_TINTS", "CompositeDataset", "ObjectCrop", "photo_crops", "source_objects"]

# Mean RGB tint of each texture (multiplies the grey level), chosen to look like the material.
TEXTURE_TINTS: dict[str, tuple[float, float, float]] = {
    "brick": (0.95, 0.55, 0.42),
    "grass": (0.55, 0.85, 0.40),
    "gravel": (0.85, 0.80, 0.70),
}


@dataclass(frozen=True)
class ObjectCrop:
    """An object to paste: its pixels and the boxes it carries in its own inclusive coordinates.

    Attributes:
        image: the crop, RGB.
        boxes: ``(K, 4)`` long; row 0 is the whole crop (the object itself).
        labels: ``(K,)`` long, the class of each box.
        source: which object it is (``<photo id>#<box index>``): composites that paste the same
            crop are not independent, and statistics resample by this id.
    """

    image: Image.Image
    boxes: torch.Tensor
    labels: torch.Tensor
    source: str = ""


def photo_crops(photos: Sequence[RawPhoto] | None = None, min_inside: float = 0.5) -> tuple[ObjectCrop, ...]:
    """One crop per hand-made box of the photographs; a crop also carries every other box of its
    photograph with at least ``min_inside`` of its area inside the crop, clipped to the crop."""
    photos = load_raw_photos() if photos is None else photos
    crops = []
    for photo in photos:
        areas = _areas(photo.boxes)
        for number, box in enumerate(photo.boxes):
            x0, y0, x1, y1 = (int(v) for v in box)
            clipped = torch.stack(
                [
                    photo.boxes[:, 0].clamp(min=x0),
                    photo.boxes[:, 1].clamp(min=y0),
                    photo.boxes[:, 2].clamp(max=x1),
                    photo.boxes[:, 3].clamp(max=y1),
                ],
                dim=1,
            )
            inside = _areas(clipped) >= min_inside * areas
            order = torch.argsort((clipped - box).abs().sum(dim=1))  # the crop's own box first
            order = order[inside[order]]
            crops.append(
                ObjectCrop(
                    image=photo.image.crop((x0, y0, x1 + 1, y1 + 1)),
                    boxes=clipped[order] - torch.tensor([x0, y0, x0, y0]),
                    labels=photo.box_labels[order],
                    source=f"{photo.image_id}#{number}",
                )
            )
    return tuple(crops)


def _areas(boxes: torch.Tensor) -> torch.Tensor:
    """Pixel count of inclusive boxes (0 for empty ones)."""
    return ((boxes[:, 2] - boxes[:, 0] + 1).clamp(min=0) * (boxes[:, 3] - boxes[:, 1] + 1).clamp(min=0)).to(
        torch.float64
    )


@cache
def _texture(name: str) -> Image.Image:
    from skimage import data

    pixels = getattr(data, name)()
    if pixels.ndim == 3:
        pixels = np.asarray(Image.fromarray(pixels).convert("L"))
    return Image.fromarray(pixels)


class CompositeDataset(Dataset[Sample]):
    """``n_images`` composites generated from ``seed`` (see the module docstring for the protocol).

    Args:
        n_images: length of the data set.
        transform: the model's transform (boxes follow it).
        seed: item ``i`` depends only on ``(seed, i)``.
        image_size: side of the square canvas before the transform.
        max_objects: at most this many objects per image (at least one).
        crops: objects to paste; default: :func:`photo_crops` of the embedded photographs.
        textures: scikit-image texture names; each needs an entry in ``TEXTURE_TINTS``.
        scale: range of an object's sqrt-area as a fraction of the usable side (single object).
        margin: fraction of the canvas side kept free of objects on each side.
        tries: placement attempts before an object is shrunk.

    Raises:
        ValueError: ``n_images``, ``image_size``, ``max_objects`` or ``tries`` below 1, a ``scale``
            or ``margin`` out of range, an unknown texture, or no crops (the message names the
            argument).
    """

    def __init__(
        self,
        n_images: int,
        transform: ImageTransform,
        seed: int = 0,
        image_size: int = 320,
        max_objects: int = 2,
        crops: Sequence[ObjectCrop] | None = None,
        textures: Sequence[str] = ("brick", "grass", "gravel"),
        scale: tuple[float, float] = (0.5, 0.8),
        margin: float = 0.0625,
        tries: int = 50,
    ) -> None:
        for argument, value in (
            ("n_images", n_images),
            ("image_size", image_size),
            ("max_objects", max_objects),
            ("tries", tries),
        ):
            if value < 1:
                raise ValueError(f"{argument} must be at least 1, got {value}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale}")
        if not 0 <= margin < 0.5 or image_size - 2 * round(margin * image_size) < 1:
            raise ValueError(f"margin {margin} leaves no room on a {image_size}-pixel canvas")
        unknown = [t for t in textures if t not in TEXTURE_TINTS]
        if unknown:
            raise ValueError(f"no tint for textures {unknown}; known: {sorted(TEXTURE_TINTS)}")
        self.n_images = n_images
        self.transform = transform
        self.seed = seed
        self.image_size = image_size
        self.max_objects = max_objects
        self.crops = tuple(photo_crops() if crops is None else crops)
        if not self.crops:
            raise ValueError("no object crops to paste")
        self.textures = tuple(textures)
        self.scale = scale
        self.margin = margin
        self.tries = tries

    def __len__(self) -> int:
        return self.n_images

    def __getitem__(self, index: int) -> Sample:
        image, boxes, labels = self.render(index)
        return build_sample(image, boxes, labels, f"composite-{self.seed}-{index}", self.transform)

    def sources(self, index: int) -> dict[int, str]:
        """Class -> source object (:attr:`ObjectCrop.source`) of each object pasted into image
        ``index``: the unit to resample by when the images' outcomes are summarised
        (:func:`gradcam_lib.stats.cluster_bootstrap_ci`)."""
        if not 0 <= index < self.n_images:
            raise IndexError(f"index {index} out of range for {self.n_images} images")
        rng = np.random.default_rng([self.seed, index])
        self._background(rng)  # the same draws as render(), in the same order
        return {int(label): crop.source for crop in self._choose(rng) for label in crop.labels}

    def source_of(self, image_id: str, label: int) -> str:
        """The source object of class ``label`` in the image called ``image_id``
        (``composite-<seed>-<index>``)."""
        prefix = f"composite-{self.seed}-"
        if not image_id.startswith(prefix):
            raise KeyError(f"{image_id!r} is not an image of this composite data set (seed {self.seed})")
        return self.sources(int(image_id[len(prefix):]))[int(label)]

    def render(self, index: int) -> tuple[Image.Image, torch.Tensor, torch.Tensor]:
        """The canvas before the transform: ``(RGB image, boxes (N, 4) long inclusive, labels (N,))``."""
        if not 0 <= index < self.n_images:
            raise IndexError(f"index {index} out of range for {self.n_images} images")
        rng = np.random.default_rng([self.seed, index])
        canvas = self._background(rng)
        chosen = self._choose(rng)
        low = round(self.margin * self.image_size)
        high = self.image_size - low  # exclusive
        usable = high - low
        placed: list[tuple[int, int, int, int]] = []
        all_boxes, all_labels = [], []
        for crop in chosen:
            factor = rng.uniform(*self.scale) * usable / np.sqrt(len(chosen) * crop.image.width * crop.image.height)
            factor = min(factor, usable / max(crop.image.width, crop.image.height))
            rect = None
            while rect is None:
                width = max(1, round(crop.image.width * factor))
                height = max(1, round(crop.image.height * factor))
                rect = self._place(rng, width, height, low, high, placed)
                if rect is None and width == height == 1:
                    raise RuntimeError(f"no free pixel for object {len(placed) + 1} of image {index}")
                factor *= 0.8
            placed.append(rect)
            x, y = rect[0], rect[1]
            canvas.paste(crop.image.resize((width, height), Image.Resampling.BILINEAR), (x, y))
            scaled = inclusive_to_continuous(crop.boxes) * torch.tensor(
                [width / crop.image.width, height / crop.image.height] * 2, dtype=torch.float64
            )
            boxes, keep = continuous_to_inclusive(scaled, height, width)
            all_boxes.append(boxes + torch.tensor([x, y, x, y]))
            all_labels.append(crop.labels[keep])
        return canvas, torch.cat(all_boxes), torch.cat(all_labels)

    def _background(self, rng: np.random.Generator) -> Image.Image:
        name = self.textures[int(rng.integers(len(self.textures)))]
        texture = _texture(name)
        side = min(texture.size)
        window = int(rng.integers(side // 2, side + 1))
        x = int(rng.integers(0, texture.width - window + 1))
        y = int(rng.integers(0, texture.height - window + 1))
        patch = texture.crop((x, y, x + window, y + window)).rotate(90 * int(rng.integers(4)))
        grey = np.asarray(patch.resize((self.image_size, self.image_size), Image.Resampling.BILINEAR), dtype=np.float32)
        tint = np.clip(np.asarray(TEXTURE_TINTS[name]) + rng.uniform(-0.1, 0.1, 3), 0, 1)
        rgb = np.clip(grey[..., None] * tint.astype(np.float32), 0, 255).astype(np.uint8)
        return Image.fromarray(rgb)

    def _choose(self, rng: np.random.Generator) -> list[ObjectCrop]:
        """Up to ``n ~ U{1..max_objects}`` crops in random order, no class shared between two."""
        n = int(rng.integers(1, self.max_objects + 1))
        chosen: list[ObjectCrop] = []
        seen: set[int] = set()
        for i in rng.permutation(len(self.crops)):
            classes = {int(c) for c in self.crops[i].labels}
            if not classes & seen:
                chosen.append(self.crops[i])
                seen |= classes
            if len(chosen) == n:
                break
        return chosen

    def _place(
        self,
        rng: np.random.Generator,
        width: int,
        height: int,
        low: int,
        high: int,
        placed: list[tuple[int, int, int, int]],
    ) -> tuple[int, int, int, int] | None:
        """A random inclusive rectangle inside ``[low, high)`` sharing no pixel with ``placed``."""
        for _ in range(self.tries):
            x = int(rng.integers(low, high - width + 1))
            y = int(rng.integers(low, high - height + 1))
            rect = (x, y, x + width - 1, y + height - 1)
            if not any(_intersect(rect, other) for other in placed):
                return rect
        return None


def _intersect(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two inclusive rectangles share a pixel."""
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


def source_objects(dataset: object, image_ids: Sequence[str], labels: Sequence[int]) -> list[str] | None:
    """The source object behind each (image, class) pair of a data set with ``source_of`` (a
    :class:`CompositeDataset`: composites that paste the same crop are not independent), or None
    for a data set of independent images."""
    source_of = getattr(dataset, "source_of", None)
    if source_of is None:
        return None
    return [source_of(str(image_id), int(label)) for image_id, label in zip(image_ids, labels, strict=True)]
