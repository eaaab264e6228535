"""The one item shape that every data set of the book yields."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from gradcam_lib.datasets.transforms import ImageTransform


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


def build_sample(
    image: Image.Image,
    boxes: torch.Tensor,
    box_labels: torch.Tensor,
    image_id: str,
    transform: ImageTransform,
) -> Sample:
    """Send an image and its inclusive boxes through ``transform`` and make a :class:`Sample`.

    ``labels`` are the image-level ground truth: every class annotated in the image, also one whose
    boxes all fall outside the crop (the ILSVRC classification protocol labels the image, not the
    crop). ``boxes``/``box_labels`` keep only the boxes that still cover a pixel of the crop.
    """
    box_labels = torch.as_tensor(box_labels, dtype=torch.long).reshape(-1)
    tensor, mapped, keep = transform(image, boxes)
    labels = tuple(sorted({int(label) for label in box_labels}))
    return Sample(image=tensor, labels=labels, boxes=mapped, box_labels=box_labels[keep], image_id=image_id)
