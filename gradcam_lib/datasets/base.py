"""The one item shape that every data set of the book yields."""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import torch
from PIL import Image

from gradcam_lib.datasets.decode import EncodedImage, ImageBatch, PendingImage
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.validate import check_boxes


@dataclass(frozen=True)
class Sample:
    """One image ready for a model, with its ground truth in the model input's pixels.

    Attributes:
        image: ``(3, H, W)`` float32, normalised for the model; from a data set that decodes on the
            device, a :class:`~gradcam_lib.datasets.decode.PendingImage` (only its ``shape`` is a
            tensor's) that the collated batch's ``.to(device)`` decodes.
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


def printable_id(name: str) -> str:
    """A file name as an image id that any UTF-8 text file can hold. Python keeps the bytes of a
    non-UTF-8 file name as lone surrogates (``b"caf\\xe9"`` -> ``"caf\\udce9"``), which no UTF-8
    writer accepts; each such byte becomes a backslash escape (the id ``caf\\xe9``, 7
    characters). Other names are unchanged. Ids only name images: files are opened by their paths."""
    try:
        raw = name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        raw = name.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")


def collate_samples(samples: list[Sample]) -> tuple[torch.Tensor | ImageBatch, list[Sample]]:
    """DataLoader ``collate_fn``: stack the images, keep the samples for their ground truth. A batch
    holding pending images (a data set decoding on the device) is an
    :class:`~gradcam_lib.datasets.decode.ImageBatch` instead: its ``.to(device)`` decodes them there
    and gives the same ``(B, 3, H, W)`` tensor."""
    images: list[torch.Tensor | PendingImage] = [s.image for s in samples]
    if any(isinstance(image, PendingImage) for image in images):
        return ImageBatch(tuple(images)), list(samples)
    return torch.stack(cast(list[torch.Tensor], images)), list(samples)


def build_sample(
    image: Image.Image | EncodedImage,
    boxes: torch.Tensor,
    box_labels: torch.Tensor,
    image_id: str,
    transform: ImageTransform,
) -> Sample:
    """Send an image and its inclusive boxes through ``transform`` and make a :class:`Sample`.

    ``labels`` are the image-level ground truth: every class annotated in the image, also one whose
    boxes all fall outside the crop (the ILSVRC classification protocol labels the image, not the
    crop). ``boxes``/``box_labels`` keep only the boxes that still cover a pixel of the crop. An
    :class:`~gradcam_lib.datasets.decode.EncodedImage` (not decoded yet) has its boxes mapped from
    the size its header states and becomes a pending image (:class:`Sample`).

    Raises:
        ValueError: ``boxes`` is not ``(N, 4)``, holds a non-finite value or an inverted box
            (``xmin > xmax`` or ``ymin > ymax``), or ``box_labels`` does not hold one label per box;
            the message names ``image_id``.
    """
    check_boxes(f"{image_id}: boxes", boxes)
    boxes = torch.as_tensor(boxes).reshape(-1, 4)
    box_labels = torch.as_tensor(box_labels)
    if box_labels.dim() > 1 or box_labels.numel() != len(boxes):
        raise ValueError(
            f"{image_id}: {len(boxes)} boxes but box_labels has shape {tuple(box_labels.shape)}; give one label per box"
        )
    box_labels = box_labels.to(torch.long).reshape(-1)
    if isinstance(image, EncodedImage):
        mapped, keep = transform.map_boxes(boxes, image.height, image.width)
        tensor = cast(torch.Tensor, PendingImage(image, transform))  # decoded by its batch (collate_samples)
    else:
        tensor, mapped, keep = transform(image, boxes)
    labels = tuple(sorted({int(label) for label in box_labels}))
    return Sample(image=tensor, labels=labels, boxes=mapped, box_labels=box_labels[keep], image_id=image_id)
