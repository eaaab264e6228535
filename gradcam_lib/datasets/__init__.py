"""Data sets of the book: every item is a :class:`Sample` with boxes in the model input's pixels."""

from __future__ import annotations

from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample, build_sample, collate_samples
from gradcam_lib.datasets.chestxray import ChestXray14BoxDataset
from gradcam_lib.datasets.cluttered_mnist import ClutteredMNISTDataset
from gradcam_lib.datasets.composite import CompositeDataset, ObjectCrop, photo_crops
from gradcam_lib.datasets.decode import ImageBatch, PendingImage, read_encoded
from gradcam_lib.datasets.ilsvrc import (
    Annotation,
    ILSVRCValDataset,
    find_layout,
    imagenet_wnids,
    parse_annotation,
    wnid_to_index,
    write_index,
)
from gradcam_lib.datasets.images import read_image
from gradcam_lib.datasets.samples import PhotoBox, RawPhoto, load_photos, load_raw_photos, read_photo_boxes
from gradcam_lib.datasets.transforms import ImageTransform, to_rgb
from gradcam_lib.datasets.voc import VOC_CLASSES, VOCDataset
from gradcam_lib.datasets.xray_standin import StandinXrayDataset

__all__ = [
    "DATASET_NAMES",
    "VOC_CLASSES",
    "Annotation",
    "ChestXray14BoxDataset",
    "ClutteredMNISTDataset",
    "CompositeDataset",
    "ILSVRCValDataset",
    "ImageBatch",
    "ImageTransform",
    "ObjectCrop",
    "PendingImage",
    "PhotoBox",
    "RawPhoto",
    "Sample",
    "StandinXrayDataset",
    "VOCDataset",
    "build_dataset",
    "build_sample",
    "collate_samples",
    "find_layout",
    "imagenet_wnids",
    "load_photos",
    "load_raw_photos",
    "parse_annotation",
    "photo_crops",
    "read_encoded",
    "read_image",
    "read_photo_boxes",
    "to_rgb",
    "wnid_to_index",
    "write_index",
]

DATASET_NAMES = ("composite", "cluttered_mnist", "photos", "ilsvrc", "voc", "standin", "chestxray14")


def build_dataset(
    name: str,
    transform: ImageTransform,
    n_images: int | None = None,
    data_root: str | None = None,
    seed: int = 0,
    max_objects: int = 2,
    split: str = "test",
    blacklist: str | None = None,
    start: int = 0,
    bbox_csv: str | None = None,
    decode: str = "pil",
) -> Dataset[Sample]:
    """A chapter's data set by name, in one model's geometry.

    Args:
        name: ``composite`` (generated from ``seed``: ``n_images`` images of up to ``max_objects``
            objects), ``cluttered_mnist`` (generated from ``seed``: ``n_images`` canvases, default
            500, of up to ``max_objects`` digits from the ``split``'s pool -- ``train``, ``val`` or
            ``test``), ``photos`` (the embedded photographs; ``n_images`` ignored), ``ilsvrc``
            (ILSVRC2012 val under ``data_root``, ``n_images`` images from number ``start``, less
            those on ``blacklist``), ``voc`` (PASCAL VOC 2007 ``split`` under ``data_root``, the
            first ``n_images`` ids), ``standin`` (``n_images`` generated chest X-rays, default 32,
            each with at least one finding, from ``seed``) or ``chestxray14`` (NIH's box images under
            ``data_root``, the first ``n_images`` by name; all 880 when None; boxes from
            ``bbox_csv``, default ``BBox_List_2017.csv`` there).
        transform: the model's :class:`ImageTransform`.
        n_images: None for the default (100 composites; every image of a real data set), else at
            least 1.
        blacklist: ILSVRC only: the CLS-LOC devkit's blacklist file
            (``ILSVRC2013_clsloc_validation_blacklist.txt``); its images are skipped.
        start: ILSVRC only: how many val images (file-name order) to skip first -- e.g. a
            held-out calibration part.
        decode: ILSVRC only: ``"pil"`` (default) or ``"device"`` (the JPEGs are decoded where the
            batch goes, nvJPEG on CUDA; :mod:`gradcam_lib.datasets.decode`).

    Raises:
        KeyError: an unknown name (the message lists the known ones).
        ValueError: a real data set without ``data_root``, or ``n_images`` / ``max_objects`` below 1.
    """
    if n_images is not None and n_images < 1:
        raise ValueError(f"n_images must be at least 1 (or None for the default), got {n_images}")
    if name == "composite":
        return CompositeDataset(100 if n_images is None else n_images, transform, seed=seed, max_objects=max_objects)
    if name == "cluttered_mnist":
        return ClutteredMNISTDataset(n_images or 500, transform, split=split, seed=seed, max_digits=max_objects)
    if name == "photos":
        return load_photos(transform)  # type: ignore[return-value]  # a list of samples serves as a map-style data set
    if name == "standin":
        return StandinXrayDataset(n_images or 32, transform, seed=seed)
    if name in ("ilsvrc", "voc", "chestxray14"):
        if data_root is None:
            raise ValueError(f"dataset {name!r} needs data_root: the data set's folder (see the README)")
        if name == "ilsvrc":
            return ILSVRCValDataset(data_root, transform, limit=n_images, blacklist=blacklist, start=start,
                                    decode=decode)
        if name == "chestxray14":
            return ChestXray14BoxDataset(data_root, transform, bbox_csv=bbox_csv, limit=n_images)
        return VOCDataset(data_root, transform, split=split, limit=n_images)
    raise KeyError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")
