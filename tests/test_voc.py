"""PASCAL VOC 2007 reader on a fixture written in the real format (1-based XML boxes, difficult
flags, ImageSets/Main split files), and the VOC classifier loader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gradcam_lib.datasets import ImageTransform
from gradcam_lib.datasets.annotations import DroppedBoxWarning
from gradcam_lib.datasets.voc import (
    VOC_CLASSES,
    VOCDataset,
    VOCSample,
    find_voc_root,
    parse_voc_annotation,
)
from gradcam_lib.models import load_model
from gradcam_lib.models.voc import load_voc_model

IDENTITY = ImageTransform(64, 64, (0.0,) * 3, (1.0,) * 3)

XML = """<annotation>
  <folder>VOC2007</folder><filename>{id}.jpg</filename>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  {objects}
</annotation>"""
OBJECT = """<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>
  <difficult>{difficult}</difficult>
  <bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"""


def _write(root: Path, image_id: str, size: tuple[int, int], objects: list[tuple[str, int, tuple[int, int, int, int]]]) -> None:
    w, h = size
    pixels = np.random.default_rng(len(image_id)).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(root / "JPEGImages" / f"{image_id}.jpg", quality=95)
    body = "\n".join(OBJECT.format(name=n, difficult=d, x0=b[0], y0=b[1], x1=b[2], y1=b[3]) for n, d, b in objects)
    (root / "Annotations" / f"{image_id}.xml").write_text(XML.format(id=image_id, w=w, h=h, objects=body))


@pytest.fixture()
def voc(tmp_path: Path) -> Path:
    """VOCdevkit/VOC2007 with two test images and one train image (the latter not in test.txt)."""
    root = tmp_path / "VOCdevkit" / "VOC2007"
    for d in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (root / d).mkdir(parents=True)
    # 1-based VOC coordinates: (1, 1, 64, 64) is the whole 64x64 image
    _write(root, "000001", (64, 64), [("dog", 0, (11, 21, 30, 40)), ("person", 1, (1, 1, 64, 64)), ("dog", 1, (40, 40, 50, 50))])
    _write(root, "000004", (64, 64), [("tvmonitor", 0, (5, 6, 70, 64))])  # xmax beyond the image: clipped
    _write(root, "000002", (64, 64), [("cat", 0, (1, 1, 10, 10))])
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n000004\n")
    (root / "ImageSets" / "Main" / "train.txt").write_text("000002\n")
    return tmp_path


def test_parse_converts_one_based_boxes_and_reads_flags(voc: Path):
    a = parse_voc_annotation(voc / "VOCdevkit/VOC2007/Annotations/000001.xml")
    assert (a.image_id, a.width, a.height) == ("000001", 64, 64)
    assert a.labels == (VOC_CLASSES.index("dog"), VOC_CLASSES.index("person"), VOC_CLASSES.index("dog")) == (11, 14, 11)
    assert a.boxes == ((10, 20, 29, 39), (0, 0, 63, 63), (39, 39, 49, 49))
    assert a.difficult == (False, True, True)
    clipped = parse_voc_annotation(voc / "VOCdevkit/VOC2007/Annotations/000004.xml")
    assert clipped.boxes == ((4, 5, 63, 63),)


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2007"])
def test_root_is_found_at_any_level(voc: Path, sub: str):
    assert find_voc_root(voc / sub) == voc / "VOCdevkit" / "VOC2007"


def test_dataset_items_follow_the_split_and_keep_flags(voc: Path):
    data = VOCDataset(voc, IDENTITY, split="test")
    assert len(data) == 2 and data.ids == ["000001", "000004"]
    sample = data[0]
    assert isinstance(sample, VOCSample)
    assert sample.image.shape == (3, 64, 64)
    assert sample.labels == (11, 14)
    assert sample.boxes.tolist() == [[10, 20, 29, 39], [0, 0, 63, 63], [39, 39, 49, 49]]
    assert sample.difficult.tolist() == [False, True, True]
    decoded = np.asarray(Image.open(voc / "VOCdevkit/VOC2007/JPEGImages/000001.jpg").convert("RGB"))
    assert np.abs(sample.image.permute(1, 2, 0).numpy() * 255 - decoded).max() < 0.51
    assert len(VOCDataset(voc, IDENTITY, split="train")) == 1
    assert len(VOCDataset(voc, IDENTITY, split="test", limit=1)) == 1


def test_boxes_and_flags_follow_the_crop(voc: Path):
    """Resize 64 -> 32, crop 16 (offset 8): the dog box 10..29 -> continuous [5, 15) - 8 -> 0..6;
    the second dog 39..49 -> [19.5, 25) - 8 = [11.5, 17) -> 11 (centre 11.5 on the edge counts)..15
    (clipped); the person
    covers the crop."""
    sample = VOCDataset(voc, ImageTransform(32, 16, (0.0,) * 3, (1.0,) * 3))[0]
    assert sample.boxes.tolist() == [[0, 2, 6, 11], [0, 0, 15, 15], [11, 11, 15, 15]]
    assert sample.difficult.tolist() == [False, True, True]


def test_bad_layouts_raise_clear_errors(voc: Path, tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="JPEGImages"):
        VOCDataset(tmp_path / "nowhere", IDENTITY)
    with pytest.raises(FileNotFoundError, match="val.txt"):
        VOCDataset(voc, IDENTITY, split="val")
    root = voc / "VOCdevkit" / "VOC2007"
    (root / "JPEGImages" / "000004.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="000004"):
        VOCDataset(voc, IDENTITY)
    bad = root / "Annotations" / "000002.xml"
    bad.write_text(bad.read_text().replace("<name>cat</name>", "<name>unicorn</name>"))
    with pytest.raises(ValueError, match="unicorn"):
        parse_voc_annotation(bad)


def test_voc_model_loads_a_prefixed_checkpoint(tmp_path: Path):
    torch.manual_seed(0)
    reference = load_model("efficientnet_lite0", pretrained=False).model
    reference._fc = torch.nn.Linear(reference._fc.in_features, 20)
    reference.eval()
    path = tmp_path / "voc.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, path)
    entry = load_voc_model("efficientnet_lite0", path)
    assert entry.class_names == VOC_CLASSES and entry.layer_name == "_swish"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(entry.model(x), reference(x))
    assert entry.layer is entry.model._swish
    with pytest.raises(FileNotFoundError, match="checkpoint"):
        load_voc_model("efficientnet_lite0", tmp_path / "missing.pth")


# --------------------------------------------------------------------------- bad input (issue 11)


@pytest.mark.parametrize(
    ("text", "words"),
    [("", "is not well-formed XML"), ("<annotation><size>", "is not well-formed XML"), ("<voc/>", "root element is <voc>")],
)
def test_malformed_voc_xml_names_the_file(voc: Path, text: str, words: str):
    path = voc / "VOCdevkit/VOC2007/Annotations/000001.xml"
    path.write_text(text)
    with pytest.raises(ValueError, match=words) as info:
        parse_voc_annotation(path)
    assert str(path) in str(info.value)
    with pytest.raises(ValueError, match="000001.xml"):
        VOCDataset(voc, IDENTITY)[0]


@pytest.mark.parametrize("value", ["abc", "1e400", "nan"])
def test_bad_voc_coordinates_name_the_object(voc: Path, value: str):
    path = voc / "VOCdevkit/VOC2007/Annotations/000001.xml"
    path.write_text(path.read_text().replace("<ymax>40</ymax>", f"<ymax>{value}</ymax>"))
    with pytest.raises(ValueError, match=rf"000001.xml, object 1 \(dog\): <ymax> is '{value}', not a finite pixel coordinate"):
        parse_voc_annotation(path)


def test_voc_boxes_outside_the_image_are_dropped_with_their_flags(voc: Path):
    """64 x 64 image; 1-based (70, 1, 80, 10) is right of it: dropped (with its difficult flag),
    not turned into the 1-pixel box (63, 0, 63, 9)."""
    root = voc / "VOCdevkit" / "VOC2007"
    _write(root, "000007", (64, 64), [("cat", 1, (70, 1, 80, 10)), ("dog", 0, (1, 1, 10, 10)), ("cow", 1, (60, 60, 90, 90))])
    with pytest.warns(DroppedBoxWarning, match=r"000007.xml: dropped 1 of 3 boxes that lie entirely outside the 64 x 64 image"):
        a = parse_voc_annotation(root / "Annotations" / "000007.xml")
    assert a.labels == (VOC_CLASSES.index("dog"), VOC_CLASSES.index("cow"))
    assert a.boxes == ((0, 0, 9, 9), (59, 59, 63, 63))
    assert a.difficult == (False, True)


def test_voc_limit_must_be_positive(voc: Path):
    with pytest.raises(ValueError, match="limit must be at least 1 .*got 0"):
        VOCDataset(voc, IDENTITY, limit=0)


def test_non_utf8_voc_id_reads_its_files_and_gets_a_printable_id(voc: Path):
    root = voc / "VOCdevkit" / "VOC2007"
    image_id = os.fsdecode(b"\xe9t\xe9")
    for folder, suffix in (("JPEGImages", ".jpg"), ("Annotations", ".xml")):  # a copy of 000002 (a cat at 1..10)
        (root / folder / f"{image_id}{suffix}").write_bytes((root / folder / f"000002{suffix}").read_bytes())
    (root / "ImageSets" / "Main" / "odd.txt").write_bytes(b"\xe9t\xe9\n")
    sample = VOCDataset(voc, IDENTITY, split="odd")[0]
    assert sample.image_id == "\\xe9t\\xe9" and sample.boxes.tolist() == [[0, 0, 9, 9]]


def test_voc_fingerprint_sees_a_difficult_flag_without_decoding_images(voc: Path, monkeypatch):
    from gradcam_lib.datasets import voc as voc_module
    from gradcam_lib.results import dataset_fingerprint

    decoded = []
    read = voc_module.read_image
    monkeypatch.setattr(voc_module, "read_image", lambda path: decoded.append(path) or read(path))
    split = voc / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt"
    split.write_text("000001\n000002\n000004\n")  # three items: the middle one is never decoded
    before = dataset_fingerprint(VOCDataset(voc, IDENTITY))
    assert len(decoded) == 2
    xml = voc / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml"
    xml.write_text(xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1))
    assert dataset_fingerprint(VOCDataset(voc, IDENTITY)) != before
