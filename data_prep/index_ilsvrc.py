"""Index a local ILSVRC2012 val folder (JPEGs + per-image bounding-box XMLs) into one CSV.

The CSV (columns ``image,width,height,wnid,label,xmin,ymin,xmax,ymax``, one row per box, inclusive
0-based pixel coordinates clipped to the image, image paths relative to the CSV) is read back by
``ILSVRCValDataset(<csv>, transform)`` without parsing 50k XMLs. The folder layouts accepted are
those of ``gradcam_lib.datasets.ilsvrc``.

Usage: ``python data_prep/index_ilsvrc.py ROOT [--out ROOT/ilsvrc2012_val_boxes.csv]
[--images DIR] [--annotations DIR] [--limit N]``
"""

from __future__ import annotations

import argparse
from pathlib import Path

from gradcam_lib.datasets.ilsvrc import ILSVRCValDataset, write_index
from gradcam_lib.datasets.transforms import ImageTransform


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="folder holding the val JPEGs and XMLs")
    parser.add_argument("--out", type=Path, default=None, help="CSV to write (default ROOT/ilsvrc2012_val_boxes.csv)")
    parser.add_argument("--images", type=Path, default=None, help="folder of the JPEGs, if not found by itself")
    parser.add_argument("--annotations", type=Path, default=None, help="folder of the XMLs, if not found by itself")
    parser.add_argument("--limit", type=int, default=None, help="index only the first N images")
    args = parser.parse_args(argv)
    dataset = ILSVRCValDataset(args.root, ImageTransform(), args.limit, args.images, args.annotations)
    return write_index(dataset, args.out or args.root / "ilsvrc2012_val_boxes.csv", progress=True)


if __name__ == "__main__":
    main()
