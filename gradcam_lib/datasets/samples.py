"""The embedded photographs of the ``default`` profile, with hand-made boxes.

The images ship inside installed packages (scikit-image ``data``, matplotlib's ``sample_data``,
scikit-learn's ``load_sample_images``); their boxes are in ``photo_boxes.csv`` beside this file, in
each original image's inclusive pixel coordinates, one row per object and one ImageNet class per
object (``data_prep/README.md`` says why each label and box was chosen). A photograph without any
fitting ImageNet class (scikit-learn's ``flower.jpg``, a dahlia) is not listed.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import torch
from PIL import Image

from gradcam_lib.datasets.base import Sample, build_sample
from gradcam_lib.datasets.transforms import ImageTransform, to_rgb

__all__ = ["PhotoBox", "RawPhoto", "load_photos", "load_raw_photos", "load_source_image", "read_photo_boxes"]

BOXES_FILE = "photo_boxes.csv"


@dataclass(frozen=True)
class PhotoBox:
    """One row of ``photo_boxes.csv``."""

    image_id: str
    source: str
    label: int
    wnid: str
    class_name: str
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class RawPhoto:
    """A photograph at its original size with its boxes in its own inclusive pixel coordinates."""

    image: Image.Image
    boxes: torch.Tensor
    box_labels: torch.Tensor
    image_id: str


def read_photo_boxes() -> tuple[PhotoBox, ...]:
    """All rows of the packaged ``photo_boxes.csv``, in file order."""
    text = resources.files("gradcam_lib.datasets").joinpath(BOXES_FILE).read_text(encoding="utf-8")
    return tuple(
        PhotoBox(
            image_id=row["image_id"],
            source=row["source"],
            label=int(row["label"]),
            wnid=row["wnid"],
            class_name=row["class_name"],
            box=(int(row["xmin"]), int(row["ymin"]), int(row["xmax"]), int(row["ymax"])),
        )
        for row in csv.DictReader(text.splitlines())
    )


def load_source_image(source: str) -> Image.Image:
    """Decode a photograph named ``package:name`` as an RGB PIL image.

    ``skimage:chelsea`` -> ``skimage.data.chelsea()``; ``matplotlib:grace_hopper.jpg`` -> matplotlib
    sample data; ``sklearn:china.jpg`` -> one of ``sklearn.datasets.load_sample_images()``.
    """
    package, _, name = source.partition(":")
    if package == "skimage":
        from skimage import data

        return to_rgb(Image.fromarray(getattr(data, name)()))
    if package == "matplotlib":
        from matplotlib import cbook

        with Image.open(cbook.get_sample_data(name, asfileobj=False)) as image:
            return to_rgb(image.copy())
    if package == "sklearn":
        from sklearn.datasets import load_sample_image

        return to_rgb(Image.fromarray(load_sample_image(name)))
    raise ValueError(f"unknown photo source {source!r} (expected skimage:, matplotlib: or sklearn:)")


@lru_cache(maxsize=1)
def load_raw_photos() -> tuple[RawPhoto, ...]:
    """Every annotated photograph at its original size, in CSV order (cached; do not mutate)."""
    rows = read_photo_boxes()
    photos = []
    for image_id in dict.fromkeys(row.image_id for row in rows):
        mine = [row for row in rows if row.image_id == image_id]
        photos.append(
            RawPhoto(
                image=load_source_image(mine[0].source),
                boxes=torch.tensor([row.box for row in mine], dtype=torch.long),
                box_labels=torch.tensor([row.label for row in mine], dtype=torch.long),
                image_id=image_id,
            )
        )
    return tuple(photos)


def load_photos(transform: ImageTransform) -> list[Sample]:
    """The annotated photographs as model-ready samples, boxes in the model input's pixels."""
    return [build_sample(p.image, p.boxes, p.box_labels, p.image_id, transform) for p in load_raw_photos()]

