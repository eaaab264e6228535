"""ILSVRC2012 validation set with its bounding boxes (the paper's localisation benchmark, Sec. 4.1).

Layout. ``root`` is either a CSV index written by :func:`write_index` (``data_prep/index_ilsvrc.py``)
or a folder holding

* the 50k val JPEGs ``ILSVRC2012_val_00000001.JPEG`` ... in the first of ``root/val/``,
  ``root/Data/CLS-LOC/val/`` (Kaggle) or ``root/`` that has any, and
* one PASCAL VOC-style XML per image (``ILSVRC2012_bbox_val_v3.tgz`` unpacks to ``val/*.xml``) in the
  first of ``root/bbox_val/val/``, ``root/bbox_val/``, ``root/Annotations/CLS-LOC/val/``,
  ``root/Annotations/``, ``root/val/`` (beside the images) or ``root/`` that has any.

``images_dir``/``annotations_dir`` override the search. The items are the images that have an XML,
in file-name order; ``start``/``limit`` select a run of them (e.g. a held-out calibration part of
val and the test part after it), and the images listed in the CLS-LOC devkit's blacklist
(``ILSVRC2013_clsloc_validation_blacklist.txt``: one 1-based image number per line, number ``i``
being ``ILSVRC2012_val_%08d``; 1 762 images) are then left out, as ``eval_clsloc.m`` leaves them out
of the localisation error. Boxes: the XML's ``xmin..xmax`` are read as 0-based *inclusive* pixel
coordinates (the devkit computes widths as ``xmax - xmin + 1``) and clipped to the image size the
XML states (a box with no pixel inside that size is dropped, with a :class:`DroppedBoxWarning`
that counts them); the labels are the indices of the objects' wnids in the sorted list of the 1000
ILSVRC2012 wnids, which is torchvision's class order (``imagenet_wnids.txt``, made by
``data_prep/make_imagenet_wnids.py``).

Bad input. The XMLs are parsed with ``defusedxml`` (no entity expansion, no external references);
a file that is not well-formed XML, has no ``<annotation>`` root, or a coordinate that is not a
finite number is a ``ValueError`` naming the file (and the object). A CSV index value that is not
an integer is a ``ValueError`` naming the file and line. :func:`read_image` refuses, as an
``OSError`` naming the file, a decompression bomb (more than twice ``PIL.Image.MAX_IMAGE_PIXELS``)
and an image more than ``MAX_ASPECT_RATIO`` (50) times longer than wide (resizing its shorter side
to 256 would allocate gigabytes); it converts 32-bit integer and float images by range.
Non-UTF-8 file names: the CSV index keeps them byte for byte (``surrogateescape``), image ids
write their bad bytes as ``\\xNN`` escapes (:func:`~gradcam_lib.datasets.base.printable_id`).

Decoding on the GPU (the ``full`` profile's 50 000 images). With ``decode="device"`` the
DataLoader workers read each JPEG's bytes and header only, and the batch's ``images.to(device)`` in
:func:`~gradcam_lib.results.run_resumable` decodes them there (nvJPEG on CUDA) through the same
resize, crop and box mapping; :mod:`~gradcam_lib.datasets.decode` says how, what falls back to PIL
(CMYK and non-JPEG files among others) and how much the pixels differ (on the CPU: not at all). It
is off by default (``decode="pil"``); switch it on for a CUDA run,
``ILSVRCValDataset(root, transform, decode="device")``, with DataLoader workers (``num_workers``)
to read the files. A sample's ``image`` is then a pending image until collated: code that needs the
pixels of single items (figures) keeps the default.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch
from torch.utils.data import Dataset

from gradcam_lib.datasets.annotations import (
    MAX_COORDINATE,
    clip_box,
    keep_inside,
    read_objects,
)
from gradcam_lib.datasets.base import Sample, build_sample, printable_id
from gradcam_lib.datasets.decode import DECODE_MODES, read_encoded
from gradcam_lib.datasets.images import read_image
from gradcam_lib.datasets.transforms import ImageTransform

__all__ = [
    "INDEX_COLUMNS",
    "Annotation",
    "ILSVRCValDataset",
    "find_layout",
    "image_number",
    "imagenet_wnids",
    "parse_annotation",
    "read_blacklist",
    "wnid_to_index",
    "write_index",
]

WNIDS_FILE = "imagenet_wnids.txt"
IMAGE_SUFFIXES = (".jpeg", ".jpg")
IMAGE_DIRS = ("val", "Data/CLS-LOC/val", ".")
ANNOTATION_DIRS = ("bbox_val/val", "bbox_val", "Annotations/CLS-LOC/val", "Annotations", "val", ".")
INDEX_COLUMNS = ("image", "width", "height", "wnid", "label", "xmin", "ymin", "xmax", "ymax")


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ILSVRC2012 wnids, sorted: position = torchvision class index."""
    text = resources.files("gradcam_lib.datasets").joinpath(WNIDS_FILE).read_text(encoding="ascii")
    return tuple(text.split())


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    """wnid -> torchvision ImageNet class index (``n01440764`` -> 0)."""
    return {wnid: i for i, wnid in enumerate(imagenet_wnids())}


@dataclass(frozen=True)
class Annotation:
    """The objects of one val image: ``boxes[i]`` (inclusive, clipped) holds an object of
    ``wnids[i]``."""

    image_id: str
    width: int
    height: int
    wnids: tuple[str, ...]
    boxes: tuple[tuple[int, int, int, int], ...]

    @property
    def labels(self) -> tuple[int, ...]:
        """Class index of each box."""
        index = wnid_to_index()
        unknown = sorted(set(self.wnids) - index.keys())
        if unknown:
            raise KeyError(f"{self.image_id}: wnids {unknown} are not ILSVRC2012 classes")
        return tuple(index[w] for w in self.wnids)


def parse_annotation(path: str | os.PathLike[str]) -> Annotation:
    """Read one ILSVRC/PASCAL VOC XML; boxes are clipped to its ``<size>``, and those entirely
    outside it dropped (one :class:`DroppedBoxWarning` counts them).

    Raises:
        ValueError: malformed XML (see :func:`read_xml`), a box with ``xmin > xmax`` or
            ``ymin > ymax``, a missing or non-numeric field, or a negative size; the message names
            the file and object.
    """
    path = Path(path)
    width, height, objects = read_objects(path)
    return Annotation(printable_id(path.stem), width, height, tuple(o.name for o in objects),
                      tuple(o.box for o in objects))


def _first_with(root: Path, candidates: Iterable[str], suffixes: tuple[str, ...]) -> Path | None:
    for name in candidates:
        folder = root / name
        if folder.is_dir() and any(e.is_file() and Path(e.name).suffix.lower() in suffixes for e in os.scandir(folder)):
            return folder
    return None


def find_layout(
    root: str | os.PathLike[str],
    images_dir: str | os.PathLike[str] | None = None,
    annotations_dir: str | os.PathLike[str] | None = None,
) -> tuple[Path, Path]:
    """Locate ``(images folder, XML folder)`` under ``root`` (see the module docstring).

    Raises:
        FileNotFoundError: ``root`` missing, or no folder with JPEGs / XMLs; says where it looked.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ILSVRC2012 val folder {root} does not exist")
    images = Path(images_dir) if images_dir is not None else _first_with(root, IMAGE_DIRS, IMAGE_SUFFIXES)
    if images is None or not images.is_dir():
        looked = images_dir if images_dir is not None else ", ".join(str(root / d) for d in IMAGE_DIRS)
        raise FileNotFoundError(f"no ILSVRC2012 val JPEGs (ILSVRC2012_val_*.JPEG) found in {looked}")
    annotations = (
        Path(annotations_dir)
        if annotations_dir is not None
        else _first_with(root, ANNOTATION_DIRS, (".xml",)) or _first_with(images, (".",), (".xml",))
    )
    if annotations is None or not annotations.is_dir():
        looked = annotations_dir if annotations_dir is not None else ", ".join(str(root / d) for d in ANNOTATION_DIRS)
        raise FileNotFoundError(
            f"no ILSVRC2012 val bounding-box XMLs found in {looked}; unpack ILSVRC2012_bbox_val_v3.tgz "
            f"into {root / 'bbox_val'}"
        )
    return images, annotations


def read_blacklist(path: str | os.PathLike[str]) -> frozenset[int]:
    """The image numbers of a devkit blacklist file (one 1-based integer per line; blank lines
    ignored).

    Raises:
        FileNotFoundError: no such file.
        ValueError: a line that is not a positive integer (the message names the line).
    """
    numbers = set()
    for line_number, line in enumerate(Path(path).read_text(encoding="ascii").splitlines(), start=1):
        text = line.strip()
        if not text:
            continue
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{path}, line {line_number}: {text!r} is not a 1-based image number")
        numbers.add(int(text))
    return frozenset(numbers)


def image_number(image_id: str) -> int:
    """``ILSVRC2012_val_00000042`` -> 42, the devkit's 1-based image index.

    Raises:
        ValueError: the id does not end in ``_<digits>``.
    """
    tail = image_id.rsplit("_", 1)[-1]
    if not tail.isdigit():
        raise ValueError(f"{image_id!r} is not an ILSVRC val image name (ILSVRC2012_val_%08d)")
    return int(tail)


class ILSVRCValDataset(Dataset[Sample]):
    """ILSVRC2012 val images with all their boxes, as :class:`Sample` in the model input's pixels.

    Args:
        root: the data set folder, or a CSV index written by :func:`write_index`.
        transform: the model's transform (boxes follow it).
        limit: keep only the first ``limit`` (>= 1) images (in file-name order) from ``start``.
        images_dir, annotations_dir: override the folder search (folder mode only).
        blacklist: the devkit's blacklist file; its images are left out of the selection
            (:attr:`skipped` lists them).
        start: skip the first ``start`` images (file-name order) before ``limit`` applies.
        decode: ``"pil"`` (default): decode each image in ``__getitem__``; ``"device"``: read its
            bytes only, and let the batch's ``.to(device)`` decode it there (see the module notes).

    Attributes:
        skipped: ids of the selected images left out because the blacklist names them.

    Raises:
        FileNotFoundError: folders missing, or an XML whose image is not there (the message names
            both).
        ValueError: ``limit < 1``, ``start < 0`` or an unknown ``decode``; a CSV index with a
            missing column or a bad value (the message names the file and line). A bad XML raises
            when its item is read.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        transform: ImageTransform,
        limit: int | None = None,
        images_dir: str | os.PathLike[str] | None = None,
        annotations_dir: str | os.PathLike[str] | None = None,
        blacklist: str | os.PathLike[str] | None = None,
        start: int = 0,
        decode: str = "pil",
    ) -> None:
        if decode not in DECODE_MODES:
            raise ValueError(f"decode must be one of {DECODE_MODES}, got {decode!r}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be at least 1 (or None for all images), got {limit}")
        self.transform = transform
        self.decode = decode
        root = Path(root)
        if root.suffix.lower() == ".csv":
            if not root.is_file():
                raise FileNotFoundError(f"ILSVRC2012 index {root} does not exist")
            pairs = _read_index(root)
        else:
            pairs = _scan_folder(*find_layout(root, images_dir, annotations_dir))
        pairs = pairs[start : start + limit] if limit is not None else pairs[start:]
        self.skipped: tuple[str, ...] = ()
        if blacklist is not None:
            numbers = read_blacklist(blacklist)
            listed = [image_number(_image_id(a)) in numbers for _, a in pairs]
            self.skipped = tuple(_image_id(a) for (_, a), out in zip(pairs, listed, strict=True) if out)
            pairs = [pair for pair, out in zip(pairs, listed, strict=True) if not out]
        self.image_paths: list[Path] = [p for p, _ in pairs]
        self._annotations: list[Path | Annotation] = [a for _, a in pairs]

    def __len__(self) -> int:
        return len(self.image_paths)

    def annotation(self, index: int) -> Annotation:
        """The parsed XML (or index rows) of item ``index``."""
        item = self._annotations[index]
        return item if isinstance(item, Annotation) else parse_annotation(item)

    def annotation_records(self) -> list[dict]:
        """Every item's id, size, classes and boxes as read from its XML (or index rows), and the
        transform, in order, without decoding an image: what
        :func:`gradcam_lib.results.dataset_fingerprint` hashes (50 000 XMLs take seconds). Device
        decoding is recorded too (its pixels differ on CUDA); the default leaves the records as
        they were."""
        extra = {"transform": repr(self.transform)} | ({"decode": self.decode} if self.decode != "pil" else {})
        return [asdict(self.annotation(i)) | extra for i in range(len(self))]

    def __getitem__(self, index: int) -> Sample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        annotation = self.annotation(index)
        boxes = torch.tensor(annotation.boxes, dtype=torch.long).reshape(-1, 4)
        labels = torch.tensor(annotation.labels, dtype=torch.long)
        path = self.image_paths[index]
        image = read_encoded(path) if self.decode == "device" else read_image(path)
        return build_sample(image, boxes, labels, annotation.image_id, self.transform)


def _image_id(annotation: Path | Annotation) -> str:
    return annotation.image_id if isinstance(annotation, Annotation) else printable_id(annotation.stem)


def _scan_folder(images: Path, annotations: Path) -> list[tuple[Path, Path | Annotation]]:
    """``(image, xml)`` pairs, one per XML, sorted by name."""
    by_stem = {Path(e.name).stem: e.name for e in os.scandir(images) if Path(e.name).suffix.lower() in IMAGE_SUFFIXES}
    xmls = sorted(e.name for e in os.scandir(annotations) if e.name.lower().endswith(".xml"))
    missing = [x for x in xmls if Path(x).stem not in by_stem]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} annotated images are missing from {images}, e.g. {Path(missing[0]).stem}.JPEG "
            f"(annotation {annotations / missing[0]})"
        )
    return [(images / by_stem[Path(x).stem], annotations / x) for x in xmls]


def _read_index(path: Path) -> list[tuple[Path, Path | Annotation]]:
    """Pairs from a CSV index (one row per box; image paths relative to the CSV's folder; bytes
    that are not UTF-8 are kept as ``surrogateescape``, as :func:`write_index` writes them)."""
    rows: dict[str, list[tuple[int, dict[str, str]]]] = {}
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        reader = csv.DictReader(handle)
        absent = set(INDEX_COLUMNS) - set(reader.fieldnames or ())
        if absent:
            raise ValueError(f"{path}: columns {sorted(absent)} missing")
        for row in reader:
            rows.setdefault(row["image"], []).append((reader.line_num, row))
    pairs: list[tuple[Path, Path | Annotation]] = []
    for image, group in rows.items():
        numbers = [_index_numbers(path, line, row) for line, row in group]
        width, height = numbers[0][:2]
        boxes = [n[2:] for n in numbers]
        lines = f"lines {group[0][0]}-{group[-1][0]}" if len(group) > 1 else f"line {group[0][0]}"
        keep = keep_inside(boxes, width, height, f"{path}, {lines} ({image})")
        annotation = Annotation(
            image_id=printable_id(Path(image).stem),
            width=width,
            height=height,
            wnids=tuple(row["wnid"] for (_, row), k in zip(group, keep, strict=True) if k),
            boxes=tuple(clip_box(b, width, height) for b, k in zip(boxes, keep, strict=True) if k),
        )
        pairs.append((path.parent / image, annotation))
    return pairs


def _index_numbers(path: Path, line: int, row: dict[str, str]) -> tuple[int, int, int, int, int, int]:
    """``(width, height, xmin, ymin, xmax, ymax)`` of one index row.

    Raises:
        ValueError: a value that is not an integer below ``MAX_COORDINATE``, a negative size or an
            inverted box (the message names the file and line).
    """
    values = []
    for column in ("width", "height", "xmin", "ymin", "xmax", "ymax"):
        text = row.get(column)
        try:
            value = int(text) if text is not None else None
        except ValueError:
            value = None
        if value is None or abs(value) >= MAX_COORDINATE:
            raise ValueError(f"{path}, line {line}: {column} is {text!r}, not an integer pixel coordinate")
        values.append(value)
    width, height, x0, y0, x1, y1 = values
    if width < 0 or height < 0:
        raise ValueError(f"{path}, line {line}: negative image size {width} x {height}")
    if x0 > x1 or y0 > y1:
        raise ValueError(f"{path}, line {line}: inverted box {(x0, y0, x1, y1)} (xmin > xmax or ymin > ymax)")
    return width, height, x0, y0, x1, y1


def write_index(dataset: ILSVRCValDataset, out: str | os.PathLike[str], progress: bool = False) -> Path:
    """Write ``dataset``'s images and boxes as a CSV index (columns ``INDEX_COLUMNS``, one row per
    box, image paths relative to the CSV's folder) that :class:`ILSVRCValDataset` reads back. UTF-8;
    the bytes of a non-UTF-8 file name are written unchanged (``surrogateescape``), so the path
    reads back as the same file."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    indices: Iterable[int] = range(len(dataset))
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc="ILSVRC XMLs", unit="img")
    with open(out, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
        writer = csv.writer(handle)
        writer.writerow(INDEX_COLUMNS)
        for i in indices:
            a = dataset.annotation(i)
            image = Path(os.path.relpath(dataset.image_paths[i].resolve(), out.parent.resolve())).as_posix()
            for wnid, label, box in zip(a.wnids, a.labels, a.boxes, strict=True):
                writer.writerow([image, a.width, a.height, wnid, label, *box])
    return out
