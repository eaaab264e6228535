"""Write ``gradcam_lib/datasets/imagenet_wnids.txt``: the 1000 ILSVRC2012 WordNet ids, sorted.

torchvision's ImageNet class index is the position of the class's wnid in the sorted list of the
1000 ILSVRC2012 wnids (the order of the ``train/`` folders that ``ImageFolder`` sees). timm ships
that list as ``timm/data/_info/imagenet_synsets.txt``; this script downloads timm's wheel from PyPI
with pip (no dependencies, nothing installed), reads the list out of it, checks it and writes it.

Usage: ``python data_prep/make_imagenet_wnids.py [--out PATH]``
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

MEMBER = "timm/data/_info/imagenet_synsets.txt"
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "gradcam_lib" / "datasets" / "imagenet_wnids.txt"


def download_timm_wheel(folder: Path) -> Path:
    """Download timm's wheel (no dependencies) into ``folder`` with pip and return its path."""
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "timm", "--no-deps", "--only-binary=:all:", "-q", "-d", str(folder)],
        check=True,
    )
    wheels = sorted(folder.glob("timm-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip left no timm wheel in {folder}")
    return wheels[-1]


def read_wnids(wheel: Path) -> list[str]:
    """The wnid list inside timm's wheel, validated: 1000 unique ``n########`` ids in sorted order."""
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(MEMBER).decode("ascii")
    wnids = [line.strip() for line in text.splitlines() if line.strip()]
    if len(wnids) != 1000 or len(set(wnids)) != 1000:
        raise ValueError(f"{MEMBER}: expected 1000 unique wnids, found {len(wnids)} ({len(set(wnids))} unique)")
    if wnids != sorted(wnids):
        raise ValueError(f"{MEMBER}: wnids are not sorted")
    bad = [w for w in wnids if not re.fullmatch(r"n\d{8}", w)]
    if bad:
        raise ValueError(f"{MEMBER}: malformed wnids {bad[:5]}")
    return wnids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wnids = read_wnids(download_timm_wheel(Path(tmp)))
    args.out.write_text("\n".join(wnids) + "\n", encoding="ascii")


if __name__ == "__main__":
    main()
