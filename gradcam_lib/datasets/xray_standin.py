"""The generated stand-in for chest X-rays (chapter 5's default profile): X-ray-like images with
findings drawn in known boxes (:func:`render_standin`, :class:`StandinXrayDataset`), the chapter's
two data sets (:func:`gradcam_lib.datasets.build_dataset`: the stand-in or NIH ChestX-ray14's box images,
:mod:`gradcam_lib.datasets.chestxray`), and SHAP's reference images (:func:`background_images`).

No chest X-ray data set is available offline; the stand-in's findings (Cardiomegaly, Effusion,
Mass, Nodule) are drawn where their boxes say, so a localisation metric has a known answer.
``labels`` / ``box_labels`` index :data:`~gradcam_lib.datasets.chestxray.FINDINGS`, as the NIH reader's.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import cast

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample, build_sample
from gradcam_lib.datasets.boxes import Box
from gradcam_lib.datasets.chestxray import FINDINGS
from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform

__all__ = ["STANDIN_FINDINGS", "STANDIN_SIZE", "StandinXrayDataset", "background_images",
           "render_standin", "standin_transform"]

STANDIN_SIZE = 96
#: The stand-in's findings, in the stand-in model's output order (saved in its checkpoint too).
STANDIN_FINDINGS: tuple[str, ...] = ("Cardiomegaly", "Effusion", "Mass", "Nodule")


def standin_transform() -> ImageTransform:
    """96-px stand-in images resized without cropping, ImageNet statistics (as CheXNet, so a zero
    baseline means the same)."""
    return ImageTransform(STANDIN_SIZE, STANDIN_SIZE, IMAGENET_MEAN, IMAGENET_STD)


def _smooth_ellipse(xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, rx: float, ry: float,
                    edge: float = 1.5) -> np.ndarray:
    """1 inside the ellipse, 0 outside, a ramp about ``edge`` pixels wide across its border."""
    radius = np.sqrt(((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2)
    return np.clip((1.0 - radius) * min(rx, ry) / edge + 0.5, 0.0, 1.0)


def _mask_box(mask: np.ndarray) -> Box:
    rows, cols = np.nonzero(mask)
    return int(cols.min()), int(rows.min()), int(cols.max()), int(rows.max())


def render_standin(rng: np.random.Generator, findings: Sequence[str], size: int = STANDIN_SIZE
                   ) -> tuple[np.ndarray, list[tuple[str, Box]]]:
    """One X-ray-like image: dark background, a thorax, two dark lung fields with ribs, a bright
    heart and spine, film noise; and each finding of ``findings`` drawn in a known place:

    * Cardiomegaly: the heart ~1.5x wider (box: the heart);
    * Effusion: one lung's base filled up to a meniscus (box: the filled part);
    * Mass: a lobulated bright blob of radius 5-7 % of the image in a lung (box: the blob);
    * Nodule: a small bright disc of radius 2.2-3 % of the image in a lung (box: the disc).

    Returns ``(uint8 (size, size) image, [(finding, inclusive box), ...])``. Pure function of the
    generator's state.
    """
    unknown = set(findings) - set(STANDIN_FINDINGS)
    if unknown:
        raise ValueError(f"the stand-in draws only {STANDIN_FINDINGS}, not {sorted(unknown)}")
    s = float(size)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    jitter = lambda scale: rng.uniform(-scale, scale) * s  # noqa: E731
    gain = rng.uniform(0.9, 1.1)
    image = np.full((size, size), 0.06)
    thorax = _smooth_ellipse(xx, yy, 0.5 * s + jitter(0.01), 0.56 * s + jitter(0.01), 0.43 * s, 0.47 * s, 3.0)
    image += 0.38 * thorax
    lung_mask = np.zeros((size, size))
    lungs = []
    for side in (-1, 1):
        cx, cy = 0.5 * s + side * (0.19 * s + jitter(0.01)), 0.5 * s + jitter(0.01)
        rx, ry = 0.125 * s * rng.uniform(0.95, 1.05), 0.29 * s * rng.uniform(0.95, 1.05)
        lung = _smooth_ellipse(xx, yy, cx, cy, rx, ry, 2.0)
        lungs.append((cx, cy, rx, ry, lung))
        lung_mask = np.maximum(lung_mask, lung)
    ribs = 0.5 + 0.5 * np.sin(2 * np.pi * (yy + 0.35 * np.abs(xx - 0.5 * s)) / (0.085 * s) + rng.uniform(0, 2 * np.pi))
    image -= lung_mask * (0.24 - 0.07 * ribs)
    spine = np.clip(1.0 - np.abs(xx - 0.5 * s) / (0.035 * s), 0, 1) * (yy < 0.8 * s)
    image = np.maximum(image, 0.42 * spine * thorax)
    wide = "Cardiomegaly" in findings
    hx, hy = 0.53 * s + jitter(0.01), 0.68 * s + jitter(0.01)
    hrx = (0.20 if wide else 0.125) * s * rng.uniform(0.95, 1.05)
    hry = 0.12 * s * rng.uniform(0.95, 1.05)
    heart = _smooth_ellipse(xx, yy, hx, hy, hrx, hry, 1.5)
    image = image * (1 - heart) + 0.5 * heart
    boxes: list[tuple[str, Box]] = []
    if wide:
        boxes.append(("Cardiomegaly", _mask_box(heart >= 0.5)))
    outside_heart = heart < 0.05
    for finding in [f for f in STANDIN_FINDINGS if f in findings and f != "Cardiomegaly"]:
        cx, cy, rx, ry, lung = lungs[rng.integers(2)]
        if finding == "Effusion":
            depth = ry * rng.uniform(0.45, 0.7)
            lateral = np.clip((xx - cx) / rx * np.sign(cx - 0.5 * s), -1, 1)  # the meniscus rises laterally
            level = cy + ry - depth - 0.4 * depth * lateral
            fluid = lung * np.clip((yy - level) / 1.5, 0, 1)
            image = image * (1 - fluid) + 0.47 * fluid
            boxes.append((finding, _mask_box(fluid >= 0.5)))
            continue
        radius = s * (rng.uniform(0.05, 0.07) if finding == "Mass" else rng.uniform(0.022, 0.03))
        for _ in range(100):  # a centre well inside the lung, off the heart
            px, py = cx + rng.uniform(-0.6, 0.6) * rx, cy + rng.uniform(-0.7, 0.6) * ry
            iy, ix = min(int(py), size - 1), min(int(px), size - 1)
            if (((px - cx) / rx) ** 2 + ((py - cy) / ry) ** 2) < 0.55 and outside_heart[iy, ix]:
                break
        angle = np.arctan2(yy - py, xx - px)
        lobes = 1 + (0.18 * np.sin(3 * angle + rng.uniform(0, 2 * np.pi)) if finding == "Mass" else 0)
        blob = np.clip((radius * lobes - np.hypot(xx - px, yy - py)) / 1.2 + 0.5, 0, 1)
        image = image + (0.30 if finding == "Mass" else 0.32) * blob
        boxes.append((finding, _mask_box(blob >= 0.5)))
    grain = ndimage.gaussian_filter(rng.normal(0, 1, (size, size)), 1.0)
    image = gain * image + 0.015 * rng.normal(0, 1, (size, size)) + 0.03 * grain
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8), boxes


class StandinXrayDataset(Dataset[Sample]):
    """``n`` generated stand-in X-rays (:func:`render_standin`), image ``i`` from seed ``(seed, i)``.

    Each stand-in finding is present with probability ``p_finding``, independently; with
    ``min_findings=1`` images without any are redrawn (the box list of ChestX-ray14 holds only
    abnormal images). ``labels``/``box_labels`` index :data:`FINDINGS`, as the NIH reader's.
    """

    def __init__(self, n: int, transform: ImageTransform | None = None, seed: int = 0, p_finding: float = 0.35,
                 min_findings: int = 1, size: int = STANDIN_SIZE) -> None:
        self.n, self.seed, self.p_finding, self.min_findings, self.size = n, seed, p_finding, min_findings, size
        self.transform = transform or standin_transform()

    def __len__(self) -> int:
        return self.n

    def render(self, index: int) -> tuple[np.ndarray, list[tuple[str, Box]]]:
        """The raw image and boxes of item ``index``."""
        rng = np.random.default_rng([self.seed, index])
        while True:
            present = [f for f in STANDIN_FINDINGS if rng.random() < self.p_finding]
            if len(present) >= self.min_findings:
                break
        return render_standin(rng, present, self.size)

    def __getitem__(self, index: int) -> Sample:
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        pixels, boxes = self.render(index)
        labels = torch.tensor([FINDINGS.index(f) for f, _ in boxes], dtype=torch.long)
        coords = torch.tensor([b for _, b in boxes], dtype=torch.long).reshape(-1, 4)
        sample = build_sample(Image.fromarray(pixels, mode="L"), coords, labels, f"standin_{self.seed}_{index:05d}",
                              self.transform)
        return sample


def background_images(dataset: Dataset[Sample], n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images of ``dataset`` drawn without replacement from ``seed``: SHAP's reference set."""
    picks = np.sort(
        np.random.default_rng(seed).choice(
            len(cast(Sized, dataset)), size=min(n, len(cast(Sized, dataset))), replace=False
        )
    )
    return torch.stack([dataset[int(i)].image for i in picks])
