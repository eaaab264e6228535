"""PASCAL VOC 2007 in its own format (the pointing game's and the paper's Table 2 data set), and a
VOC classifier for the ``full`` profile.

Layout: ``root`` is ``VOCdevkit/VOC2007`` (or ``VOCdevkit``, or a folder holding ``VOC2007``) with
``JPEGImages/<id>.jpg``, ``Annotations/<id>.xml`` and ``ImageSets/Main/<split>.txt`` (one id per
line; ``test`` for the pointing game as TorchRay, ``val`` for the paper's Table 2).

Boxes: VOC XML coordinates are **1-based** inclusive pixel indices (the devkit's); they are read as
``value - 1``, i.e. 0-based inclusive, the convention of the whole library (TorchRay's
``voc_as_mask`` subtracts 1 in the same way), and clipped to the image; a box entirely outside the
image is dropped with a :class:`~gradcam_lib.datasets.ilsvrc.DroppedBoxWarning` that counts them.
XML is parsed with ``defusedxml``; malformed XML or a non-numeric coordinate is a ``ValueError``
naming the file and object. Labels are indices into
:data:`VOC_CLASSES` (alphabetical, the devkit's and TorchRay's order). Each object's ``difficult``
flag is kept on the sample (:class:`VOCSample`); the pointing game skips a class whose boxes are all
difficult, as TorchRay.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gradcam_lib.datasets.annotations import read_objects
from gradcam_lib.datasets.base import Sample, printable_id
from gradcam_lib.datasets.images import read_image
from gradcam_lib.datasets.transforms import ImageTransform

__all__ = ["VOC_CLASSES", "VOCAnnotation", "VOCDataset", "VOCSample", "find_voc_root", "parse_voc_annotation"]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
_CLASS_INDEX = {name: i for i, name in enumerate(VOC_CLASSES)}


@dataclass(frozen=True)
class VOCAnnotation:
    """One VOC XML: ``boxes[i]`` (0-based inclusive, clipped) holds an object of ``labels[i]``."""

    image_id: str
    width: int
    height: int
    labels: tuple[int, ...]
    boxes: tuple[tuple[int, int, int, int], ...]
    difficult: tuple[bool, ...]


@dataclass(frozen=True)
class VOCSample(Sample):
    """A :class:`Sample` with each kept box's PASCAL ``difficult`` flag."""

    difficult: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))


def parse_voc_annotation(path: str | os.PathLike[str]) -> VOCAnnotation:
    """Read one ``Annotations/<id>.xml``; 1-based boxes become 0-based inclusive, clipped to the
    image; boxes entirely outside it are dropped (one warning counts them).

    Raises:
        ValueError: malformed XML, unknown class name, missing or non-numeric field, a
            negative size or an inverted box (the message names the file and object).
    """
    path = Path(path)
    width, height, objects = read_objects(path, one_based=True, size_required=True, names=_CLASS_INDEX)
    return VOCAnnotation(
        printable_id(path.stem),
        width,
        height,
        tuple(_CLASS_INDEX[o.name] for o in objects),
        tuple(o.box for o in objects),
        tuple(o.difficult for o in objects),
    )


def find_voc_root(root: str | os.PathLike[str]) -> Path:
    """The folder holding ``JPEGImages``/``Annotations``/``ImageSets``: ``root``, ``root/VOC2007``
    or ``root/VOCdevkit/VOC2007``.

    Raises:
        FileNotFoundError: none of them; the message lists where it looked.
    """
    root = Path(root)
    candidates = [root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"]
    for folder in candidates:
        if all((folder / d).is_dir() for d in ("JPEGImages", "Annotations", "ImageSets")):
            return folder
    raise FileNotFoundError(
        f"no PASCAL VOC 2007 folder (JPEGImages/, Annotations/, ImageSets/Main/) at any of "
        f"{', '.join(str(c) for c in candidates)}"
    )


class VOCDataset(Dataset[VOCSample]):
    """PASCAL VOC 2007 images of one split with all their boxes, as :class:`VOCSample` in the model
    input's pixels.

    Args:
        root: see :func:`find_voc_root`.
        transform: the model's transform (boxes follow it).
        split: a file of ``ImageSets/Main`` (``test``, ``val``, ``trainval`` ...).
        limit: keep the first ``limit`` (>= 1) ids of the split file.

    Raises:
        FileNotFoundError: no VOC folder, no split file, or a listed id without its XML or JPEG.
        ValueError: ``limit < 1``.
    """

    def __init__(
        self, root: str | os.PathLike[str], transform: ImageTransform, split: str = "test", limit: int | None = None
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 (or None for the whole split), got {limit}")
        self.root = find_voc_root(root)
        self.transform = transform
        split_file = self.root / "ImageSets" / "Main" / f"{split}.txt"
        if not split_file.is_file():
            raise FileNotFoundError(f"VOC split file {split_file} does not exist")
        # ids name files: bytes that are not UTF-8 are kept (surrogateescape) so the paths still match
        text = split_file.read_text(encoding="utf-8", errors="surrogateescape")
        ids = [line.split()[0] for line in text.splitlines() if line.strip()]
        self.ids = ids[:limit] if limit is not None else ids
        for image_id in self.ids[:1] + self.ids[-1:]:  # cheap early check of the layout
            self._paths(image_id)

    def _paths(self, image_id: str) -> tuple[Path, Path]:
        image = self.root / "JPEGImages" / f"{image_id}.jpg"
        xml = self.root / "Annotations" / f"{image_id}.xml"
        for path in (image, xml):
            if not path.is_file():
                raise FileNotFoundError(f"VOC id {image_id} is listed but {path} does not exist")
        return image, xml

    def __len__(self) -> int:
        return len(self.ids)

    def annotation(self, index: int) -> VOCAnnotation:
        """The parsed XML of item ``index``."""
        return parse_voc_annotation(self._paths(self.ids[index])[1])

    def annotation_records(self) -> list[dict]:
        """Every item's id, size, labels, boxes and difficult flags as read from its XML, and the
        transform, in order, without decoding an image (:func:`gradcam_lib.results.dataset_fingerprint`)."""
        transform = repr(self.transform)
        return [asdict(self.annotation(i)) | {"transform": transform} for i in range(len(self))]

    def __getitem__(self, index: int) -> VOCSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image_path, xml_path = self._paths(self.ids[index])
        a = parse_voc_annotation(xml_path)
        boxes = torch.tensor(a.boxes, dtype=torch.long).reshape(-1, 4)
        labels = torch.tensor(a.labels, dtype=torch.long)
        tensor, mapped, keep = self.transform(read_image(image_path), boxes)
        return VOCSample(
            image=tensor,
            labels=tuple(sorted(set(a.labels))),
            boxes=mapped,
            box_labels=labels[keep],
            image_id=a.image_id,
            difficult=torch.tensor(a.difficult, dtype=torch.bool)[keep],
        )
