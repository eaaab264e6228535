"""NIH ChestX-ray14 images with the boxes of ``BBox_List_2017.csv`` (Wang et al., ChestX-ray8, CVPR
2017: 984 boxes of 8 findings on 880 images, drawn by a radiologist).

Layout. ``root`` holds the images and the box list:

* the PNGs (``00000001_000.png`` ...) in ``root/images/`` (the NIH Box download unpacked),
  ``root/images_001/images/`` ... ``root/images_012/images/`` (Kaggle's copy) or ``root/`` itself;
  ``images_dir`` overrides the search;
* ``root/BBox_List_2017.csv`` (``bbox_csv`` overrides it). Its header is
  ``Image Index,Finding Label,Bbox [x,y,w,h],,,`` -- the box is spread over four columns, and
  every row ends with empty fields -- so the file is read by position: image, finding, x, y, w, h.

Boxes. ``x, y, w, h`` are floats in the pixels of the 1024 x 1024 images that NIH distributes
(``NIH_SIZE``). They are read as the continuous rectangle ``[x, x + w) x [y, y + h)``, scaled by
``width / 1024`` and ``height / 1024`` when a copy of the images was resized (a 224-px copy,
say), turned into the inclusive pixel box of the pixels whose centres lie inside, and then mapped
through the model's transform with the image (:class:`~gradcam_lib.datasets.ImageTransform`). The
KTH project scaled the boxes from 1024 to 224 by hand; here the same geometry moves pixels and boxes.

Labels. The box list writes ``Infiltrate`` where the image labels (``Data_Entry_2017.csv``) and
every model write ``Infiltration``: names are made canonical by :func:`canonical_finding`.
``Sample.labels`` / ``box_labels`` index :data:`FINDINGS` (the ChestX-ray8 order), not a model's
outputs: which output of a model is which finding is the model's business
(:func:`gradcam_lib.models.xray.finding_index`).
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample, build_sample, printable_id
from gradcam_lib.datasets.images import read_image
from gradcam_lib.datasets.transforms import ImageTransform, continuous_to_inclusive

__all__ = [
    "BBOX_LIST",
    "FINDINGS",
    "FINDING_ALIASES",
    "NIH_SIZE",
    "BoxRecord",
    "ChestXray14BoxDataset",
    "canonical_finding",
    "find_image_dirs",
    "read_bbox_list",
]

#: The eight findings that have boxes, in the order of ChestX-ray8's tables.
FINDINGS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Effusion",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pneumonia",
    "Pneumothorax",
)
#: Spellings found in NIH's files -> the canonical name.
FINDING_ALIASES: dict[str, str] = {"Infiltrate": "Infiltration"}
NIH_SIZE = 1024
BBOX_LIST = "BBox_List_2017.csv"
IMAGE_DIRS = ("images", "images_*/images", "images_*", ".")


def canonical_finding(name: str) -> str:
    """``Infiltrate`` -> ``Infiltration``; other names unchanged (spaces trimmed)."""
    name = name.strip()
    return FINDING_ALIASES.get(name, name)


@dataclass(frozen=True)
class BoxRecord:
    """One row of ``BBox_List_2017.csv``: a finding's box in the 1024-px image, as floats."""

    image: str
    finding: str
    x: float
    y: float
    w: float
    h: float


def read_bbox_list(path: str | os.PathLike[str]) -> list[BoxRecord]:
    """Read ``BBox_List_2017.csv`` by position (see the module docstring).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is not UTF-8 text, the header does not start with
            ``Image Index,Finding Label``, a row has fewer than six fields, a coordinate that is not
            a finite number (``inf``, ``NaN``) or a non-positive size, or a finding is not one of
            :data:`FINDINGS`; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ChestX-ray14 box list {path} does not exist (NIH's BBox_List_2017.csv)")
    try:
        return _read_bbox_rows(path)
    except UnicodeDecodeError as error:
        raise ValueError(f"{path} is not UTF-8 text ({error}); is it NIH's BBox_List_2017.csv?") from error


def _read_bbox_rows(path: Path) -> list[BoxRecord]:
    records = []
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if [h.strip() for h in header[:2]] != ["Image Index", "Finding Label"]:
            raise ValueError(f"{path}: header {header[:2]} is not BBox_List_2017.csv's 'Image Index,Finding Label,...'")
        for line, row in enumerate(reader, start=2):
            if not any(field.strip() for field in row):
                continue
            if len(row) < 6:
                raise ValueError(f"{path}:{line}: expected image, finding, x, y, w, h; got {row}")
            try:
                x, y, w, h = (float(v) for v in row[2:6])
            except ValueError as error:
                raise ValueError(f"{path}:{line}: box {row[2:6]} is not numeric") from error
            if not all(math.isfinite(v) for v in (x, y, w, h)):
                raise ValueError(f"{path}:{line}: box {row[2:6]} holds a non-finite number")
            if not (w > 0 and h > 0):
                raise ValueError(f"{path}:{line}: box of size {w} x {h}")
            finding = canonical_finding(row[1])
            if finding not in FINDINGS:
                raise ValueError(f"{path}:{line}: unknown finding {row[1]!r}; expected one of {FINDINGS}")
            records.append(BoxRecord(row[0].strip(), finding, x, y, w, h))
    return records


def find_image_dirs(root: str | os.PathLike[str]) -> list[Path]:
    """The folders under ``root`` that hold ChestX-ray14 PNGs, in search order (module docstring).

    Raises:
        FileNotFoundError: ``root`` missing or no PNG in any of them.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ChestX-ray14 folder {root} does not exist")
    found = []
    for pattern in IMAGE_DIRS:
        for folder in sorted(root.glob(pattern)) if "*" in pattern else [root / pattern]:
            if folder.is_dir() and folder not in found and any(
                e.is_file() and e.name.lower().endswith(".png") for e in os.scandir(folder)
            ):
                found.append(folder)
    if not found:
        raise FileNotFoundError(
            f"no ChestX-ray14 PNGs under {root} (looked in {', '.join(IMAGE_DIRS)}); unpack NIH's images_*.tar.gz there"
        )
    return found


def _scaled_boxes(records: list[BoxRecord], width: int, height: int, image: str = "") -> torch.Tensor:
    """Inclusive pixel boxes in an image of ``width`` x ``height`` from boxes given at 1024 px.

    Raises:
        ValueError: a box covers no pixel of the image (the message names ``image`` and the box).
    """
    sx, sy = width / NIH_SIZE, height / NIH_SIZE
    rectangles = torch.tensor(
        [[r.x * sx, r.y * sy, (r.x + r.w) * sx, (r.y + r.h) * sy] for r in records], dtype=torch.float64
    ).reshape(-1, 4)
    boxes, keep = continuous_to_inclusive(rectangles, height, width)
    if not keep.all():
        lost = [records[i] for i in range(len(records)) if not keep[i]]
        raise ValueError(f"{image}: boxes of the box list lie outside the {width} x {height} image: {lost}")
    return boxes


class ChestXray14BoxDataset(Dataset[Sample]):
    """The ChestX-ray14 images that have boxes, one :class:`Sample` per image with all its boxes.

    Args:
        root: the data set folder (module docstring).
        transform: the model's transform (224-px resize, no crop, for CheXNet).
        bbox_csv: the box list; default ``root/BBox_List_2017.csv``.
        limit: keep the first ``limit`` (>= 1) images (sorted by file name).
        images_dir: the folder of the PNGs, overriding the search.

    Raises:
        FileNotFoundError: folder, box list or an image of the list missing (the message names it).
        ValueError: ``limit < 1``, or a bad box list (:func:`read_bbox_list`).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: ImageTransform,
        bbox_csv: str | os.PathLike[str] | None = None,
        limit: int | None = None,
        images_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 (or None for all images), got {limit}")
        root = Path(root)
        self.transform = transform
        records = read_bbox_list(Path(bbox_csv) if bbox_csv is not None else root / BBOX_LIST)
        by_image: dict[str, list[BoxRecord]] = {}
        for record in records:
            by_image.setdefault(record.image, []).append(record)
        names = sorted(by_image)[:limit] if limit is not None else sorted(by_image)
        folders = [Path(images_dir)] if images_dir is not None else find_image_dirs(root)
        self.image_paths: list[Path] = []
        for name in names:
            path = next((folder / name for folder in folders if (folder / name).is_file()), None)
            if path is None:
                raise FileNotFoundError(f"image {name} of the box list is in none of {[str(f) for f in folders]}")
            self.image_paths.append(path)
        self.records: list[list[BoxRecord]] = [by_image[name] for name in names]

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        records = self.records[index]
        image = read_image(self.image_paths[index])
        boxes = _scaled_boxes(records, *image.size, image=str(self.image_paths[index]))
        labels = torch.tensor([FINDINGS.index(r.finding) for r in records], dtype=torch.long)
        return build_sample(image, boxes, labels, printable_id(self.image_paths[index].stem), self.transform)
