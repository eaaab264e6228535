"""Data sets: box geometry through the transform, the ILSVRC reader on a fixture in the real format,
the generated composites, the embedded photographs."""

from __future__ import annotations

import os
import runpy
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from gradcam_lib.datasets import (
    CompositeDataset,
    ILSVRCValDataset,
    ImageTransform,
    ObjectCrop,
    build_dataset,
    build_sample,
    find_layout,
    imagenet_wnids,
    load_photos,
    load_raw_photos,
    parse_annotation,
    photo_crops,
    read_image,
    read_photo_boxes,
    to_rgb,
    wnid_to_index,
    write_index,
)
from gradcam_lib.datasets.annotations import DroppedBoxWarning
from gradcam_lib.datasets.base import printable_id
from gradcam_lib.datasets.images import MAX_ASPECT_RATIO
from gradcam_lib.models.imagenet import imagenet_class_names

REPO = Path(__file__).resolve().parents[1]
# mean 0, std 1: the tensor is the pixels / 255, so colours can be checked after the transform
PLAIN = ImageTransform(256, 224, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def _pixels(tensor: torch.Tensor) -> np.ndarray:
    return (tensor.permute(1, 2, 0).numpy() * 255).round().astype(int)


# --------------------------------------------------------------------------- transforms.py geometry


def test_identity_transform_keeps_boxes() -> None:
    boxes = torch.tensor([[0, 0, 63, 63], [5, 7, 20, 40], [63, 63, 63, 63]])
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    tensor, mapped, keep = ImageTransform(64, 64, (0.0,) * 3, (1.0,) * 3)(image, boxes)
    assert torch.equal(mapped, boxes) and keep.all()
    assert np.array_equal(_pixels(tensor), np.asarray(image))


def test_non_square_box_mapping_by_hand() -> None:
    """400x300 image, resize 256, crop 224. Resized: 341x256 (y scale 256/300, x scale 341/400);
    crop offsets left = round((341 - 224) / 2) = 58, top = (256 - 224) / 2 = 16.
    Box (100, 50, 299, 249) -> continuous [100, 300) x [50, 250)
      x: [85.25, 255.75) - 58 = [27.25, 197.75) -> pixel centres 27.5..197.5 -> columns 27..197
      y: [42.67, 213.33) - 16 = [26.67, 197.33) -> rows 27..196
    Box (0, 0, 49, 299): x [0, 42.6) - 58 < 0 -> outside the crop, dropped.
    Box (300, 100, 399, 280): x [255.75, 341) - 58 -> 198..282, clipped to 223;
      y [85.33, 239.79) - 16 -> 69..223."""
    boxes = torch.tensor([[100, 50, 299, 249], [0, 0, 49, 299], [300, 100, 399, 280]])
    tensor, mapped, keep = PLAIN(Image.new("RGB", (400, 300)), boxes)
    assert tensor.shape == (3, 224, 224)
    assert keep.tolist() == [True, False, True]
    assert mapped.tolist() == [[27, 27, 197, 196], [198, 69, 223, 223]]
    assert mapped.dtype == torch.long


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "I;16"])
def test_to_rgb_any_mode(mode: str) -> None:
    image = Image.new("RGB", (8, 6), (10, 120, 200)).convert(mode) if mode != "I;16" else Image.new("I;16", (8, 6), 1000)
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == (8, 6)


# --------------------------------------------------------------------------- ImageNet wnids


def test_wnid_file_is_the_sorted_ilsvrc_list() -> None:
    wnids = imagenet_wnids()
    assert len(wnids) == 1000 == len(set(wnids)) == len(imagenet_class_names())
    assert list(wnids) == sorted(wnids)
    assert all(len(w) == 9 and w[0] == "n" and w[1:].isdigit() for w in wnids)
    index = wnid_to_index()
    assert index["n01440764"] == 0 and imagenet_class_names()[0] == "tench"
    assert index["n02123045"] == 281 and imagenet_class_names()[281] == "tabby"
    assert index["n15075141"] == 999 and imagenet_class_names()[999] == "toilet tissue"


def test_make_imagenet_wnids_reads_and_checks_the_wheel(tmp_path: Path) -> None:
    script = runpy.run_path(str(REPO / "data_prep" / "make_imagenet_wnids.py"), run_name="wnids")
    wheel = tmp_path / "timm-0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(script["MEMBER"], "\n".join(imagenet_wnids()) + "\n")
    assert script["read_wnids"](wheel) == list(imagenet_wnids())
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(script["MEMBER"], "\n".join(reversed(imagenet_wnids())))
    with pytest.raises(ValueError, match="not sorted"):
        script["read_wnids"](wheel)


# --------------------------------------------------------------------------- ILSVRC fixture

CMYK_COLOUR = (200, 30, 40)


def _xml(name: str, width: int, height: int, objects: list[tuple[str, tuple[int, int, int, int]]]) -> str:
    parts = [
        f"<annotation><folder>val</folder><filename>{name}</filename><source><database>ILSVRC_2012</database>"
        f"</source><size><width>{width}</width><height>{height}</height><depth>3</depth></size><segmented>0</segmented>"
    ]
    for wnid, (x0, y0, x1, y1) in objects:
        parts.append(
            f"<object><name>{wnid}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>"
            f"<bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        )
    return "".join(parts) + "</annotation>\n"


def _make_ilsvrc(root: Path, images: str = "val", annotations: str = "bbox_val/val") -> Path:
    """Three val images in the real formats: an RGB 400x300 with two classes (one box partly
    outside the image), a grayscale ('L') one, a CMYK one; XMLs as in ILSVRC2012_bbox_val_v3.tgz."""
    image_dir, xml_dir = root / images, root / annotations
    image_dir.mkdir(parents=True, exist_ok=True)
    xml_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    items = [
        (
            Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)),
            [("n01440764", (100, 50, 299, 249)), ("n02123045", (300, 100, 450, 280)), ("n02123045", (10, 10, 40, 40))],
        ),
        (Image.fromarray(rng.integers(0, 256, (90, 120), dtype=np.uint8), "L"), [("n01751748", (0, 0, 119, 89))]),
        (Image.new("RGB", (100, 100), CMYK_COLOUR).convert("CMYK"), [("n02123045", (20, 20, 79, 79))]),
    ]
    for i, (image, objects) in enumerate(items, start=1):
        stem = f"ILSVRC2012_val_{i:08d}"
        image.save(image_dir / f"{stem}.JPEG", quality=95)
        (xml_dir / f"{stem}.xml").write_text(_xml(stem, image.width, image.height, objects))
    return root


@pytest.fixture()
def ilsvrc_root(tmp_path: Path) -> Path:
    return _make_ilsvrc(tmp_path / "ilsvrc")


def test_ilsvrc_labels_and_boxes(ilsvrc_root: Path) -> None:
    dataset = ILSVRCValDataset(ilsvrc_root, PLAIN)
    assert len(dataset) == 3
    first = dataset[0]
    assert first.image_id == "ILSVRC2012_val_00000001"
    assert first.labels == (0, 281)
    # box 1: the hand-computed case above; box 2: xmax 450 clipped to 399 first (same mapping as
    # (300, 100, 399, 280)); box 3: left of the crop, dropped -- its class stays an image label
    assert first.boxes.tolist() == [[27, 27, 197, 196], [198, 69, 223, 223]]
    assert first.box_labels.tolist() == [0, 281]
    assert dataset.annotation(0).boxes[1] == (300, 100, 399, 280)
    assert dataset[1].labels == (wnid_to_index()["n01751748"],) == (65,)


def test_ilsvrc_grayscale_and_cmyk_come_out_rgb(ilsvrc_root: Path) -> None:
    dataset = ILSVRCValDataset(ilsvrc_root, PLAIN)
    assert Image.open(dataset.image_paths[1]).mode == "L"
    assert Image.open(dataset.image_paths[2]).mode == "CMYK"
    gray = _pixels(dataset[1].image)
    assert gray.shape == (224, 224, 3) and np.array_equal(gray[..., 0], gray[..., 2])
    cmyk = _pixels(dataset[2].image)
    assert np.abs(cmyk.reshape(-1, 3).mean(0) - CMYK_COLOUR).max() < 6


@pytest.mark.parametrize(
    ("images", "annotations"),
    [("val", "bbox_val/val"), ("val", "val"), (".", "Annotations"), ("Data/CLS-LOC/val", "Annotations/CLS-LOC/val")],
)
def test_ilsvrc_layouts(tmp_path: Path, images: str, annotations: str) -> None:
    root = _make_ilsvrc(tmp_path, images, annotations)
    image_dir, xml_dir = find_layout(root)
    assert image_dir.resolve() == (root / images).resolve() and xml_dir.resolve() == (root / annotations).resolve()
    assert ILSVRCValDataset(root, PLAIN, limit=2)[1].image_id == "ILSVRC2012_val_00000002"


def test_ilsvrc_explicit_folders_and_limit(tmp_path: Path) -> None:
    root = _make_ilsvrc(tmp_path, "jpegs", "boxes")
    dataset = ILSVRCValDataset(tmp_path, PLAIN, limit=1, images_dir=root / "jpegs", annotations_dir=root / "boxes")
    assert len(dataset) == 1 and dataset[0].labels == (0, 281)


def test_ilsvrc_missing_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ILSVRCValDataset(tmp_path / "nowhere", PLAIN)
    (tmp_path / "val").mkdir()
    with pytest.raises(FileNotFoundError, match="JPEGs"):
        ILSVRCValDataset(tmp_path, PLAIN)
    Image.new("RGB", (4, 4)).save(tmp_path / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(FileNotFoundError, match="bbox_val"):
        ILSVRCValDataset(tmp_path, PLAIN)
    (tmp_path / "val" / "ILSVRC2012_val_00000002.xml").write_text(_xml("x", 4, 4, [("n01440764", (0, 0, 3, 3))]))
    with pytest.raises(FileNotFoundError, match="ILSVRC2012_val_00000002.JPEG"):
        ILSVRCValDataset(tmp_path, PLAIN)


def test_ilsvrc_undecodable_image_is_named(ilsvrc_root: Path) -> None:
    dataset = ILSVRCValDataset(ilsvrc_root, PLAIN)
    dataset.image_paths[1].write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(OSError, match="ILSVRC2012_val_00000002.JPEG"):
        dataset[1]


def test_ilsvrc_bad_annotations(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(_xml("a", 10, 10, [("n01440764", (5, 0, 2, 9))]))
    with pytest.raises(ValueError, match="inverted"):
        parse_annotation(path)
    path.write_text(_xml("a", 10, 10, [("n99999999", (0, 0, 2, 9))]))
    with pytest.raises(KeyError, match="n99999999"):
        parse_annotation(path).labels


def test_ilsvrc_index_round_trip(ilsvrc_root: Path, tmp_path: Path) -> None:
    folder = ILSVRCValDataset(ilsvrc_root, PLAIN)
    script = runpy.run_path(str(REPO / "data_prep" / "index_ilsvrc.py"), run_name="index")
    out = script["main"]([str(ilsvrc_root), "--out", str(tmp_path / "index" / "val.csv")])
    indexed = ILSVRCValDataset(out, PLAIN)
    assert len(indexed) == len(folder) == 3
    for a, b in zip(indexed, folder):
        assert a.image_id == b.image_id and a.labels == b.labels
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.box_labels, b.box_labels)
        assert torch.equal(a.image, b.image)
    assert len(ILSVRCValDataset(write_index(folder, tmp_path / "again.csv"), PLAIN, limit=2)) == 2
    assert (tmp_path / "index" / "val.csv").read_text().splitlines()[0] == "image,width,height,wnid,label,xmin,ymin,xmax,ymax"


# --------------------------------------------------------------------------- embedded photographs


def test_photo_boxes_are_valid() -> None:
    rows = read_photo_boxes()
    names, index = imagenet_class_names(), wnid_to_index()
    photos = {p.image_id: p for p in load_raw_photos()}
    assert len(photos) >= 7 and {"chelsea", "coffee", "rocket", "camera", "grace_hopper"} <= photos.keys()
    for row in rows:
        assert index[row.wnid] == row.label and names[row.label] == row.class_name
        width, height = photos[row.image_id].image.size
        x0, y0, x1, y1 = row.box
        assert 0 <= x0 <= x1 < width and 0 <= y0 <= y1 < height, row
    for photo in photos.values():
        assert photo.image.mode == "RGB"


def test_load_photos_gives_samples_in_the_crop() -> None:
    samples = load_photos(ImageTransform())
    assert len(samples) == len(load_raw_photos())
    for sample in samples:
        assert sample.image.shape == (3, 224, 224) and sample.image.dtype == torch.float32
        assert len(sample.boxes) == len(sample.box_labels) >= 1 and sample.labels
        assert (sample.boxes[:, :2] >= 0).all() and (sample.boxes[:, 2:] <= 223).all()
        assert (sample.boxes[:, 2:] >= sample.boxes[:, :2]).all()
        assert set(sample.box_labels.tolist()) <= set(sample.labels)


def test_photo_crops_carry_nested_boxes() -> None:
    crops = photo_crops()
    assert len(crops) == len(read_photo_boxes())
    for crop in crops:
        assert crop.boxes[0].tolist() == [0, 0, crop.image.width - 1, crop.image.height - 1]
    # Grace Hopper's uniform crop also holds her tie; the tie crop does not hold the uniform
    uniform = next(c for c in crops if c.labels[0] == 652)
    assert uniform.labels.tolist() == [652, 906]
    tie = next(c for c in crops if c.labels[0] == 906)
    assert tie.labels.tolist() == [906]


# --------------------------------------------------------------------------- composites


def _constant_crops() -> list[ObjectCrop]:
    colours = [((255, 0, 0), (30, 20)), ((0, 0, 255), (25, 40)), ((255, 0, 255), (50, 50))]
    return [
        ObjectCrop(Image.new("RGB", size, colour), torch.tensor([[0, 0, size[0] - 1, size[1] - 1]]), torch.tensor([label]))
        for label, (colour, size) in enumerate(colours)
    ]


def test_composite_is_deterministic_per_seed_and_index() -> None:
    a = CompositeDataset(6, PLAIN, seed=3)
    late = a[5]
    b = CompositeDataset(6, PLAIN, seed=3)
    for i in range(6):
        x, y = a[i], b[i]
        assert torch.equal(x.image, y.image) and torch.equal(x.boxes, y.boxes) and x.labels == y.labels
    assert torch.equal(late.image, b[5].image)
    other = CompositeDataset(6, PLAIN, seed=4)
    assert not all(torch.equal(a[i].image, other[i].image) for i in range(6))
    with pytest.raises(IndexError):
        a[6]


def test_composite_boxes_cover_exactly_the_pasted_objects() -> None:
    crops = _constant_crops()
    dataset = CompositeDataset(30, PLAIN, seed=0, image_size=160, max_objects=3, crops=crops)
    for i in range(len(dataset)):
        canvas, boxes, labels = dataset.render(i)
        pixels = np.asarray(canvas)
        for (x0, y0, x1, y1), label in zip(boxes.tolist(), labels.tolist()):
            colour = np.asarray(crops[label].image)[0, 0]
            mask = (pixels == colour).all(axis=2)
            expected = np.zeros_like(mask)
            expected[y0 : y1 + 1, x0 : x1 + 1] = True
            assert np.array_equal(mask, expected), (i, label)
            assert 10 <= x0 and 10 <= y0 and x1 < 150 and y1 < 150  # margin 1/16 of 160
        rects = boxes.tolist()
        for j in range(len(rects)):
            for k in range(j + 1, len(rects)):
                a, b = rects[j], rects[k]
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], "objects overlap"


def test_composite_boxes_follow_the_transform() -> None:
    same = ImageTransform(160, 160, (0.0,) * 3, (1.0,) * 3)
    dataset = CompositeDataset(5, same, seed=1, image_size=160, crops=_constant_crops())
    for i in range(5):
        canvas, boxes, labels = dataset.render(i)
        sample = dataset[i]
        assert torch.equal(sample.boxes, boxes) and torch.equal(sample.box_labels, labels)
        assert np.array_equal(_pixels(sample.image), np.asarray(canvas))
    # the default 1/16 margin keeps every object inside the 256 -> 224 centre crop
    default = CompositeDataset(20, PLAIN, seed=2, image_size=320, max_objects=3)
    for i in range(len(default)):
        assert len(default[i].boxes) == len(default.render(i)[1])


def test_composite_has_multi_class_images() -> None:
    dataset = CompositeDataset(40, ImageTransform(), seed=0)
    samples = [dataset[i] for i in range(len(dataset))]
    counts = [len(set(s.box_labels.tolist())) for s in samples]
    assert max(counts) >= 2 and min(counts) >= 1
    assert all(s.image.shape == (3, 224, 224) for s in samples)
    assert all(set(s.box_labels.tolist()) == set(s.labels) for s in samples)


def test_composite_sources_name_the_pasted_crops_of_each_class():
    """sources() replays render()'s draws: one source per pasted class, and the pasted crop's
    classes are exactly the image's labels."""
    from gradcam_lib.datasets import CompositeDataset, ImageTransform, photo_crops

    crops = {crop.source: crop for crop in photo_crops()}
    assert len(crops) == len(photo_crops())  # ids are unique
    data = CompositeDataset(12, ImageTransform(), seed=3)
    for index in range(len(data)):
        _, _, labels = data.render(index)
        sources = data.sources(index)
        assert set(sources) == {int(label) for label in labels}
        for label, source in sources.items():
            assert label in crops[source].labels.tolist()
        sample = data[index]
        assert data.source_of(sample.image_id, sample.labels[0]) == sources[sample.labels[0]]
    with pytest.raises(KeyError, match="not an image"):
        data.source_of("composite-9-0", 1)


# --------------------------------------------------------------------------- whole-image geometry


def test_whole_image_resize_maps_boxes_by_hand(ilsvrc_root: Path) -> None:
    """The paper's geometry (image.scale(img, 224, 224)): the 400x300 fixture image is resized to
    224x224, x scale 224/400 = 0.56, y scale 224/300; nothing is cut.
    Box (100, 50, 299, 249) -> continuous [100, 300) x [50, 250)
      x: [56, 168) -> pixel centres 56.5..167.5 -> columns 56..167
      y: [37.33, 186.67) -> rows 37..186
    Box (300, 100, 399, 280) (xmax 450 clipped to 399): x [168, 224) -> 168..223;
      y [74.67, 209.81) -> rows 75..209
    Box (10, 10, 40, 40): x [5.6, 22.96) -> 6..22; y [7.47, 30.61) -> 7..30 -- kept, where the
    centre crop dropped it."""
    whole = PLAIN.with_geometry("resize")
    assert (whole.crop, whole.mean, whole.std, whole.geometry) == (224, PLAIN.mean, PLAIN.std, "resize")
    first = ILSVRCValDataset(ilsvrc_root, whole)[0]
    named = ILSVRCValDataset(ilsvrc_root, ImageTransform.whole_image(224, PLAIN.mean, PLAIN.std))[0]
    assert torch.equal(named.image, first.image) and torch.equal(named.boxes, first.boxes)
    assert first.image.shape == (3, 224, 224)
    assert first.boxes.tolist() == [[56, 37, 167, 186], [168, 75, 223, 209], [6, 7, 22, 30]]
    assert first.box_labels.tolist() == [0, 281, 281] and first.labels == (0, 281)


def test_whole_image_resize_moves_pixels_like_the_boxes() -> None:
    picture = np.zeros((300, 400, 3), dtype=np.uint8)
    picture[:, :100] = (255, 0, 0)  # columns 0..99 red: 0..55 after the resize
    picture[:, 100:] = (0, 0, 255)
    tensor, boxes, keep = PLAIN.with_geometry("resize")(Image.fromarray(picture), torch.tensor([[0, 0, 99, 299]]))
    pixels = _pixels(tensor)
    assert boxes.tolist() == [[0, 0, 55, 223]] and keep.tolist() == [True]
    assert pixels[:, :54].tolist() == [[[255, 0, 0]] * 54] * 224  # inside the box, away from the blurred edge
    assert (pixels[:, 58:] == (0, 0, 255)).all()
    # the default geometry is unchanged: resize 256 keeps the aspect ratio, then the centre crop
    assert ImageTransform().geometry == "crop"
    _, cropped, _ = PLAIN(Image.fromarray(picture), torch.tensor([[0, 0, 99, 299]]))
    assert cropped.tolist() == [[0, 0, 26, 223]]  # x: [0, 85.25) - 58 = [-58, 27.25) -> columns 0..26
    with pytest.raises(ValueError, match="geometry"):
        ImageTransform(geometry="stretch")


# --------------------------------------------------------------------------- devkit blacklist


def test_ilsvrc_blacklist_skips_the_listed_image_numbers(ilsvrc_root: Path, tmp_path: Path) -> None:
    from gradcam_lib.datasets import build_dataset
    from gradcam_lib.datasets.ilsvrc import image_number, read_blacklist

    listed = tmp_path / "ILSVRC2013_clsloc_validation_blacklist.txt"
    listed.write_text("2\n\n7\n")  # 1-based: ILSVRC2012_val_00000002 (and one not in the fixture)
    assert read_blacklist(listed) == {2, 7} and image_number("ILSVRC2012_val_00000042") == 42
    dataset = ILSVRCValDataset(ilsvrc_root, PLAIN, blacklist=listed)
    assert [dataset[i].image_id for i in range(len(dataset))] == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000003"]
    assert dataset.skipped == ("ILSVRC2012_val_00000002",)
    assert ILSVRCValDataset(ilsvrc_root, PLAIN).skipped == ()
    # start / limit select val positions first; the blacklist then drops what it names among them
    held_out = build_dataset("ilsvrc", PLAIN, n_images=1, data_root=str(ilsvrc_root), blacklist=str(listed), start=1)
    assert len(held_out) == 0 and held_out.skipped == ("ILSVRC2012_val_00000002",)
    rest = build_dataset("ilsvrc", PLAIN, n_images=None, data_root=str(ilsvrc_root), blacklist=str(listed), start=1)
    assert [s.image_id for s in rest] == ["ILSVRC2012_val_00000003"]
    # the CSV index goes through the same filter
    index = write_index(ILSVRCValDataset(ilsvrc_root, PLAIN), tmp_path / "val.csv")
    assert ILSVRCValDataset(index, PLAIN, blacklist=listed).skipped == ("ILSVRC2012_val_00000002",)
    listed.write_text("2\nthree\n")
    with pytest.raises(ValueError, match="line 2"):
        ILSVRCValDataset(ilsvrc_root, PLAIN, blacklist=listed)


# --------------------------------------------------------------------------- bad input (issue 11)

GOOD_OBJECT = ("n01440764", (1, 2, 5, 6))
BOMB = (
    '<?xml version="1.0"?><!DOCTYPE annotation [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    "<annotation><size><width>9</width><height>9</height></size><object><name>&b;</name></object></annotation>"
)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "is not well-formed XML"),
        ("\x00\x01 garbage \xff", "is not well-formed XML"),
        ("<annotation><size><width>4</width>", "is not well-formed XML"),
        ("<html><body/></html>", "root element is <html>, not <annotation>"),
        (BOMB, "was refused: EntitiesForbidden"),
    ],
    ids=["empty", "garbage", "truncated", "other-root", "entity-declaration"],
)
def test_malformed_xml_is_a_value_error_naming_the_file(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "broken.xml"
    path.write_text(text, encoding="latin-1")
    with pytest.raises(ValueError, match=words) as info:
        parse_annotation(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("value", ["abc", "1e400", "nan", "inf", "", "-3e10"])
def test_bad_coordinates_name_the_file_object_and_tag(tmp_path: Path, value: str) -> None:
    path = tmp_path / "a.xml"
    path.write_text(_xml("a", 10, 10, [GOOD_OBJECT, ("n02123045", (0, 0, 2, 9))]).replace("<xmax>2</xmax>", f"<xmax>{value}</xmax>"))
    with pytest.raises(ValueError, match=rf"a.xml, object 2 \(n02123045\): <xmax> is '{value}', not a finite pixel coordinate"):
        parse_annotation(path)
    path.write_text(_xml("a", 10, 10, [GOOD_OBJECT]).replace("<width>10</width>", f"<width>{value}</width>"))
    with pytest.raises(ValueError, match=rf"a.xml, <size>: <width> is '{value}'"):
        parse_annotation(path)


def test_decimal_coordinates_are_rounded(tmp_path: Path) -> None:
    path = tmp_path / "a.xml"
    path.write_text(_xml("a", 10, 10, [GOOD_OBJECT]).replace("<xmin>1</xmin>", "<xmin>1.6</xmin>"))
    assert parse_annotation(path).boxes == ((2, 2, 5, 6),)


def test_bad_xml_inside_the_dataset_names_the_file(ilsvrc_root: Path) -> None:
    xml = ilsvrc_root / "bbox_val" / "val" / "ILSVRC2012_val_00000002.xml"
    xml.write_text(xml.read_text().replace("<xmin>0</xmin>", "<xmin>abc</xmin>"))
    dataset = ILSVRCValDataset(ilsvrc_root, PLAIN)
    with pytest.raises(ValueError, match=r"ILSVRC2012_val_00000002.xml, object 1 \(n01751748\): <xmin> is 'abc'"):
        dataset[1]
    xml.write_text("")
    with pytest.raises(ValueError, match=r"ILSVRC2012_val_00000002.xml is not well-formed XML"):
        dataset[1]
    assert dataset[0].labels == (0, 281)  # the other items still read


def test_boxes_outside_the_stated_size_are_dropped_with_a_count(tmp_path: Path) -> None:
    """A 10 x 8 image: (12, 0, 15, 3) lies right of it and (0, -9, 3, -1) above it -- clipping would
    make 1-pixel corner boxes; (8, 6, 14, 12) is partly inside and is clipped to (8, 6, 9, 7)."""
    path = tmp_path / "a.xml"
    objects = [("n01440764", (12, 0, 15, 3)), GOOD_OBJECT, ("n02123045", (0, -9, 3, -1)), ("n01751748", (8, 6, 14, 12))]
    path.write_text(_xml("a", 10, 8, objects))
    with pytest.warns(DroppedBoxWarning, match=r"a.xml: dropped 2 of 4 boxes that lie entirely outside the 10 x 8 image"):
        annotation = parse_annotation(path)
    assert annotation.wnids == ("n01440764", "n01751748")
    assert annotation.boxes == ((1, 2, 5, 6), (8, 6, 9, 7))
    path.write_text(_xml("a", 10, 8, [GOOD_OBJECT]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_annotation(path).boxes == ((1, 2, 5, 6),)


def _index(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "index.csv"
    path.write_text("image,width,height,wnid,label,xmin,ymin,xmax,ymax\n" + "".join(row + "\n" for row in rows))
    return path


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ("a.JPEG,10,10,n01440764,0,1,2,x,6", "line 3: xmax is 'x', not an integer"),
        ("a.JPEG,10,10,n01440764,0,1,2,5.5,6", "line 3: xmax is '5.5', not an integer"),
        ("a.JPEG,10,10,n01440764,0,1,2", "line 3: xmax is None, not an integer"),
        ("a.JPEG,ten,10,n01440764,0,1,2,5,6", "line 3: width is 'ten'"),
        ("a.JPEG,10,10,n01440764,0,6,2,5,6", r"line 3: inverted box \(6, 2, 5, 6\)"),
        ("a.JPEG,-1,10,n01440764,0,1,2,5,6", "line 3: negative image size -1 x 10"),
    ],
)
def test_index_values_are_checked_with_file_and_line(tmp_path: Path, row: str, words: str) -> None:
    path = _index(tmp_path, ["a.JPEG,10,10,n01440764,0,1,2,5,6", row])
    with pytest.raises(ValueError, match=words) as info:
        ILSVRCValDataset(path, PLAIN)
    assert str(info.value).startswith(f"{path}, line 3: ")


def test_index_boxes_outside_the_image_are_dropped_with_a_count(tmp_path: Path) -> None:
    path = _index(tmp_path, ["a.JPEG,10,10,n01440764,0,1,2,5,6", "a.JPEG,10,10,n02123045,281,20,20,30,30", "b.JPEG,4,4,n01440764,0,0,0,9,9"])
    with pytest.warns(DroppedBoxWarning, match=r"index.csv, lines 2-3 \(a.JPEG\): dropped 1 of 2 boxes"):
        dataset = ILSVRCValDataset(path, PLAIN)
    assert dataset.annotation(0).boxes == ((1, 2, 5, 6),) and dataset.annotation(0).wnids == ("n01440764",)
    assert dataset.annotation(1).boxes == ((0, 0, 3, 3),)  # partly outside: clipped, as from an XML


def test_non_positive_sizes_are_refused(ilsvrc_root: Path) -> None:
    for n in (0, -3):
        with pytest.raises(ValueError, match=f"n_images must be at least 1 .*got {n}"):
            build_dataset("composite", PLAIN, n_images=n)
        with pytest.raises(ValueError, match=f"n_images must be at least 1 .*got {n}"):
            build_dataset("ilsvrc", PLAIN, n_images=n, data_root=str(ilsvrc_root))
        with pytest.raises(ValueError, match=f"limit must be at least 1 .*got {n}"):
            ILSVRCValDataset(ilsvrc_root, PLAIN, limit=n)
    crops = photo_crops()[:2]
    for argument in ("n_images", "image_size", "max_objects", "tries"):
        settings = {"n_images": 2, "image_size": 64, "max_objects": 1, "tries": 5, argument: 0}
        n_images = settings.pop("n_images")
        with pytest.raises(ValueError, match=f"{argument} must be at least 1, got 0"):
            CompositeDataset(n_images, PLAIN, crops=crops, **settings)
    assert len(build_dataset("composite", PLAIN, n_images=3)) == 3
    assert len(build_dataset("composite", PLAIN)) == 100


def test_build_sample_refuses_boxes_that_do_not_fit_their_labels() -> None:
    image = Image.new("RGB", (32, 32))
    two = torch.tensor([[0, 0, 9, 9], [5, 5, 20, 20]])
    with pytest.raises(ValueError, match=r"img: 2 boxes but box_labels has shape \(1,\); give one label per box"):
        build_sample(image, two, torch.tensor([3]), "img", PLAIN)
    with pytest.raises(ValueError, match=r"img: 2 boxes but box_labels has shape \(2, 1\)"):
        build_sample(image, two, torch.tensor([[3], [4]]), "img", PLAIN)
    with pytest.raises(ValueError, match=r"img: boxes must be \(N, 4\) boxes .* got shape \(2, 5\)"):
        build_sample(image, torch.zeros(2, 5, dtype=torch.long), torch.tensor([3, 4]), "img", PLAIN)
    with pytest.raises(ValueError, match=r"img: boxes holds an inverted box \[9.0, 0.0, 0.0, 9.0\]"):
        build_sample(image, torch.tensor([[0, 0, 9, 9], [9, 0, 0, 9]]), torch.tensor([3, 4]), "img", PLAIN)
    with pytest.raises(ValueError, match="img: boxes holds NaN or infinity"):
        build_sample(image, torch.tensor([[0.0, 0.0, float("inf"), 9.0]]), torch.tensor([3]), "img", PLAIN)
    empty = build_sample(image, torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, dtype=torch.long), "img", PLAIN)
    assert empty.labels == () and empty.boxes.shape == (0, 4)


# --------------------------------------------------------------------------- read_image


def test_decompression_bomb_is_an_os_error_naming_the_file(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "bomb.png"
    Image.new("L", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > twice the limit
    with pytest.raises(OSError, match=r"bomb.png was refused as a possible decompression bomb .*MAX_IMAGE_PIXELS"):
        read_image(path)


def test_extreme_aspect_ratios_are_refused(tmp_path: Path) -> None:
    tall = tmp_path / "tall.png"
    Image.new("L", (2, 100_000)).save(tall)  # its 256-px resize would be 256 x 12.8M pixels
    with pytest.raises(OSError, match=rf"tall.png is 2 x 100000 pixels: an aspect ratio above {MAX_ASPECT_RATIO}:1 is refused"):
        read_image(tall)
    limit = tmp_path / "limit.png"
    Image.new("L", (MAX_ASPECT_RATIO * 2, 2)).save(limit)  # exactly 50:1 is read
    assert read_image(limit).size == (100, 2)


def test_32_bit_and_float_images_are_converted_by_range(tmp_path: Path) -> None:
    """[min(0, lowest), highest] -> [0, 255]: int32 -1000..2000 -> (v + 1000) / 3000 * 255; float
    0..0.5 -> v / 0.5 * 255 (a float image in [0, 1] would otherwise come out black)."""
    signed = np.array([[-1000, 0], [500, 2000]], dtype=np.int32)
    Image.fromarray(signed).save(tmp_path / "signed.tif")
    assert Image.open(tmp_path / "signed.tif").mode == "I"
    out = np.asarray(read_image(tmp_path / "signed.tif"))
    assert out.tolist() == [[0, 85], [128, 255]]  # 1000/3000*255 = 85, 1500/3000*255 = 127.5 -> 128
    floats = np.array([[0.0, 0.125], [0.25, 0.5]], dtype=np.float32)
    Image.fromarray(floats).save(tmp_path / "float.tif")
    assert np.asarray(read_image(tmp_path / "float.tif")).tolist() == [[0, 64], [128, 255]]  # 63.75 -> 64
    unsigned = np.array([[0, 300], [600, 1200]], dtype=np.int32)  # non-negative: divided by the peak, as before
    Image.fromarray(unsigned).save(tmp_path / "unsigned.tif")
    expected = np.asarray(to_rgb(Image.fromarray(unsigned)))[..., 0]
    assert np.array_equal(np.asarray(read_image(tmp_path / "unsigned.tif")), expected)
    floats[0, 0] = np.nan
    Image.fromarray(floats).save(tmp_path / "nan.tif")
    with pytest.raises(OSError, match="nan.tif holds NaN or infinite pixels"):
        read_image(tmp_path / "nan.tif")


def test_non_utf8_file_names_get_printable_ids_and_round_trip_the_index(tmp_path: Path) -> None:
    """An image and XML whose names hold the byte 0xE9 (Latin-1 e-acute, not UTF-8): the id escapes
    the byte, the CSV index keeps it, and the results CSV (pandas) can hold the id."""
    root = tmp_path / "ilsvrc"
    (root / "val").mkdir(parents=True)
    stem = os.fsdecode(b"caf\xe9")
    Image.new("RGB", (20, 10), (10, 200, 30)).save(root / "val" / f"{stem}.JPEG")
    (root / "val" / f"{stem}.xml").write_text(_xml("x", 20, 10, [GOOD_OBJECT]))
    dataset = ILSVRCValDataset(root, PLAIN)
    assert dataset[0].image_id == printable_id(stem) == "caf\\xe9"
    index = write_index(dataset, tmp_path / "index.csv")
    assert b"val/caf\xe9.JPEG" in index.read_bytes()
    again = ILSVRCValDataset(index, PLAIN)
    assert again.image_paths[0] == (root / "val" / f"{stem}.JPEG") and again[0].image_id == "caf\\xe9"
    assert torch.equal(again[0].image, dataset[0].image)
    pd.DataFrame({"image_id": [again[0].image_id]}).to_csv(tmp_path / "rows.csv", index=False)
    assert pd.read_csv(tmp_path / "rows.csv")["image_id"].tolist() == ["caf\\xe9"]
    assert printable_id("ILSVRC2012_val_00000001") == "ILSVRC2012_val_00000001" and printable_id("café") == "café"


def test_ilsvrc_fingerprint_reads_the_xmls_not_the_images(ilsvrc_root: Path, monkeypatch) -> None:
    """dataset_fingerprint hashes annotation_records() (every XML) and decodes only the first and
    last image; a box moved in the middle image's XML changes it."""
    from gradcam_lib.datasets import ilsvrc
    from gradcam_lib.results import dataset_fingerprint

    decoded = []
    read = ilsvrc.read_image
    monkeypatch.setattr(ilsvrc, "read_image", lambda path: decoded.append(path) or read(path))
    before = dataset_fingerprint(ILSVRCValDataset(ilsvrc_root, PLAIN))
    assert len(decoded) == 2
    xml = next((ilsvrc_root / "bbox_val" / "val").glob("*00000002.xml"))
    xml.write_text(xml.read_text().replace("<xmax>119</xmax>", "<xmax>118</xmax>"))
    assert dataset_fingerprint(ILSVRCValDataset(ilsvrc_root, PLAIN)) != before
