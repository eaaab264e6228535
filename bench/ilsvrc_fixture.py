"""Write a generated ILSVRC2012-val-format fixture: JPEGs and per-image box XMLs that
:class:`gradcam_lib.datasets.ilsvrc.ILSVRCValDataset` reads (``bench/device_check.sh`` times the
localisation loop on it; no ImageNet data is needed, nor can any be fetched on the device machine).

Layout, as ``ILSVRC2012_img_val.tar`` and ``ILSVRC2012_bbox_val_v3.tgz`` unpack::

    ROOT/val/ILSVRC2012_val_00000001.JPEG ...
    ROOT/bbox_val/val/ILSVRC2012_val_00000001.xml ...

Images: sizes drawn like ILSVRC val's (mostly 500 x 375, 375 x 500, 500 x 333, 500 x 500, and some
of any size from 200 to 800 pixels a side); content a smooth multi-scale colour field with grain
(roughly 1/f, as photographs are) and one to three textured ellipses, the "objects", whose bounding
boxes go into the XML in the devkit's format: 0-based inclusive ``xmin..xmax``, one ``<object>``
per box, all of the image's one class (a wnid of the 1000), as in ILSVRC val. Every image is a
function of ``(seed, its number)`` alone, so the output does not depend on ``--workers``.

    python bench/ilsvrc_fixture.py ROOT [--images 3000] [--seed 0] [--workers N]
"""

from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter

#: The 1000 ILSVRC2012 wnids (:func:`gradcam_lib.datasets.ilsvrc.imagenet_wnids` reads the same file),
#: read directly: importing ``gradcam_lib.datasets`` would import torch, seconds of a CPU run.
WNIDS_FILE = Path(__file__).resolve().parent.parent / "gradcam_lib" / "datasets" / "imagenet_wnids.txt"
#: (width, height) and their weights; ``None``: any size from 200 to 800 pixels a side.
SIZES: tuple[tuple[tuple[int, int] | None, float], ...] = (
    ((500, 375), 0.45), ((375, 500), 0.15), ((500, 333), 0.15), ((333, 500), 0.05), ((500, 500), 0.1), (None, 0.1),
)
IMAGES_DIR = "val"
ANNOTATIONS_DIR = "bbox_val/val"


@dataclass(frozen=True)
class FixtureImage:
    """What was written for one image: its id, size, class and inclusive boxes."""

    image_id: str
    width: int
    height: int
    wnid: str
    boxes: tuple[tuple[int, int, int, int], ...]


def image_id(number: int) -> str:
    """``1`` -> ``ILSVRC2012_val_00000001`` (1-based, as the devkit numbers val)."""
    return f"ILSVRC2012_val_{number:08d}"


@lru_cache(maxsize=1)
def _wnids() -> tuple[str, ...]:
    return tuple(WNIDS_FILE.read_text(encoding="ascii").split())


def _size(rng: np.random.Generator) -> tuple[int, int]:
    choice = int(rng.choice(len(SIZES), p=[w for _, w in SIZES]))
    size = SIZES[choice][0]
    return size if size is not None else (int(rng.integers(200, 801)), int(rng.integers(200, 801)))


def _field(rng: np.random.Generator, width: int, height: int, tint: np.ndarray) -> Image.Image:
    """A smooth colour field around ``tint`` (RGB): random colours at a few coarse scales summed
    with amplitudes falling with frequency (roughly 1/f) at a quarter of the size, then bicubically
    upsampled to ``width`` x ``height``."""
    small = (max(2, width // 4), max(2, height // 4))
    out = np.zeros((small[1], small[0], 3), dtype=np.float32) + tint.astype(np.float32)
    for cells, amplitude in ((2, 80.0), (5, 45.0), (13, 25.0), (34, 14.0), (89, 8.0)):
        shape = (max(2, cells * height // max(width, height) + 1), max(2, cells * width // max(width, height) + 1))
        # mostly brightness, some colour: photographs' channels are strongly correlated
        grid = rng.uniform(0, 1, size=(*shape, 1)) + 0.35 * rng.uniform(-1, 1, size=(*shape, 3))
        layer = Image.fromarray(np.clip(grid * 170 + 20, 0, 255).astype(np.uint8))
        layer = layer.resize(small, Image.Resampling.BICUBIC)
        out += (np.asarray(layer, dtype=np.float32) / 127.5 - 1) * amplitude
    return Image.fromarray(np.clip(out, 0, 255).astype(np.uint8)).resize((width, height), Image.Resampling.BICUBIC)


def render(seed: int, number: int) -> tuple[Image.Image, FixtureImage]:
    """Image ``number`` (1-based) of the fixture of ``seed`` and its annotation."""
    rng = np.random.default_rng([seed, number])
    width, height = _size(rng)
    wnids = _wnids()
    wnid = wnids[int(rng.integers(len(wnids)))]
    image = _field(rng, width, height, rng.uniform(60, 190, size=3))
    boxes = []
    for _ in range(int(rng.integers(1, 4))):
        w = int(rng.integers(max(8, width // 8), max(9, width * 4 // 5)))
        h = int(rng.integers(max(8, height // 8), max(9, height * 4 // 5)))
        x0, y0 = int(rng.integers(-w // 5, width - w * 4 // 5)), int(rng.integers(-h // 5, height - h * 4 // 5))
        mask = Image.new("L", (width, height), 0)
        ImageDraw.Draw(mask).ellipse((x0, y0, x0 + w - 1, y0 + h - 1), fill=255)
        inside = mask.getbbox()  # the object's pixels (an ellipse may reach past the border): their box
        if inside is None:
            continue
        texture = _field(rng, width, height, rng.uniform(0, 255, size=3))
        image = Image.composite(texture, image, mask.filter(ImageFilter.GaussianBlur(1.5)))
        boxes.append((inside[0], inside[1], inside[2] - 1, inside[3] - 1))  # PIL's right / lower are exclusive
    if not boxes:  # every ellipse fell outside (the ranges above prevent it; keep one box regardless)
        boxes.append((0, 0, width - 1, height - 1))
    # grey sensor-like grain around 128 (from the image's generator: PIL's effect_noise has its own seed)
    noise = rng.standard_normal((height, width), dtype=np.float32) * 6 + 128
    grain = Image.fromarray(np.clip(noise, 0, 255).astype(np.uint8)).convert("RGB")
    image = ImageChops.add(image, grain, offset=-128)
    return image, FixtureImage(image_id(number), width, height, wnid, tuple(boxes))


def annotation_xml(item: FixtureImage) -> str:
    """The ILSVRC2012 bbox_val XML of ``item`` (the devkit's fields and order)."""
    objects = "".join(
        f"\t<object>\n\t\t<name>{escape(item.wnid)}</name>\n\t\t<pose>Unspecified</pose>\n"
        f"\t\t<truncated>0</truncated>\n\t\t<difficult>0</difficult>\n\t\t<bndbox>\n"
        f"\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}</ymin>\n\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n"
        f"\t\t</bndbox>\n\t</object>\n"
        for x0, y0, x1, y1 in item.boxes
    )
    return (
        f"<annotation>\n\t<folder>val</folder>\n\t<filename>{item.image_id}</filename>\n"
        f"\t<source>\n\t\t<database>ILSVRC_2012</database>\n\t</source>\n"
        f"\t<size>\n\t\t<width>{item.width}</width>\n\t\t<height>{item.height}</height>\n\t\t<depth>3</depth>\n"
        f"\t</size>\n\t<segmented>0</segmented>\n{objects}</annotation>\n"
    )


def _write_one(args: tuple[str, int, int, int]) -> FixtureImage:
    root, seed, number, quality = args
    image, item = render(seed, number)
    image.save(Path(root) / IMAGES_DIR / f"{item.image_id}.JPEG", quality=quality)
    (Path(root) / ANNOTATIONS_DIR / f"{item.image_id}.xml").write_text(annotation_xml(item), encoding="ascii")
    return item


def write_fixture(root: str | os.PathLike[str], images: int, seed: int = 0, workers: int | None = None,
                  quality: int = 90) -> list[FixtureImage]:
    """Write ``images`` JPEGs and XMLs under ``root`` (folders created); returns what was written,
    in image order. ``workers``: processes (default: the CPUs, at most 16; 1 writes in this one).

    Raises:
        ValueError: ``images < 1``.
    """
    if images < 1:
        raise ValueError(f"images must be at least 1, got {images}")
    root = Path(root)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (root / ANNOTATIONS_DIR).mkdir(parents=True, exist_ok=True)
    jobs = [(str(root), seed, number, quality) for number in range(1, images + 1)]
    workers = min(os.cpu_count() or 1, 16) if workers is None else workers
    if workers <= 1 or images < 8:
        return [_write_one(job) for job in jobs]
    with ProcessPoolExecutor(workers) as pool:
        return list(pool.map(_write_one, jobs, chunksize=max(1, images // (4 * workers))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path, help="the folder to write (created)")
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs, at most 16)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    items = write_fixture(args.root, args.images, args.seed, args.workers)
    seconds = time.perf_counter() - start
    sizes = {(i.width, i.height) for i in items}
    print(f"wrote {len(items)} JPEGs + XMLs ({sum(len(i.boxes) for i in items)} boxes, {len(sizes)} sizes) "
          f"under {args.root} in {seconds:.1f} s")


if __name__ == "__main__":
    main()
