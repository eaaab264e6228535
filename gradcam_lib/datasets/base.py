"""The one item shape that every data set of the book yields."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sample:
    """One image ready for a model, with its ground truth in the model input's pixels.

    Attributes:
        image: ``(3, H, W)`` float32, normalised for the model.
        labels: the ImageNet class indices present in the image (sorted, unique).
        boxes: ``(N, 4)`` long, inclusive pixel boxes ``(xmin, ymin, xmax, ymax)`` in ``image``.
        box_labels: ``(N,)`` long, the class of each box.
        image_id: a name that identifies the image in its data set.
    """

    image: torch.Tensor
    labels: tuple[int, ...]
    boxes: torch.Tensor
    box_labels: torch.Tensor
    image_id: str

    def boxes_of(self, label: int) -> torch.Tensor:
        """The ``(M, 4)`` boxes of one class."""
        return self.boxes[self.box_labels == label]


def collate_samples(samples: list[Sample]) -> tuple[torch.Tensor, list[Sample]]:
    """DataLoader ``collate_fn``: stack the images, keep the samples for their ground truth."""
    return torch.stack([s.image for s in samples]), list(samples)
