"""The GPU fast paths on a CUDA device (``pytest -m cuda``; ``tests/conftest.py`` skips these without
one, ``bench/device_check.sh`` runs them on the device machine): bf16 autocast maps stay close to
fp32, channels-last gives the contiguous layout's maps, and the localisation experiment's rows on
the GPU equal the CPU's on the shipped photographs.

The model is EfficientNet-Lite0: real ImageNet weights that ship in a pip package (random weights
give degenerate, often all-zero, Grad-CAM maps, which would agree trivially; torchvision's weights
cannot be downloaded on the device machine). The fp32 references run with TF32 off (PyTorch allows
TF32 for convolutions by default, about 1e-3 relative error per operation); the TF32-on cases say
what a GPU run with PyTorch's defaults gives, within looser stated tolerances.

Tolerances (CPU measurements that set them: bf16 autocast vs fp32 relative L2 at most 0.024,
Spearman rho at least 0.9987, box IoU at least 0.98 on these photographs; channels-last vs
contiguous and float64 vs float32 relative L2 about 1e-6, localisation rows identical):

* bf16 vs fp32 maps, per photograph: relative L2 < 0.1, Spearman rho over pixels > 0.98, IoU of
  the 0.15-threshold boxes > 0.8;
* channels-last vs contiguous maps: relative L2 < 1e-4 with TF32 off, < 2e-2 with it on;
* CUDA vs CPU rows at thresholds 0.05, 0.15, 0.3, 0.5 (top-5 Grad-CAM): the same images,
  thresholds and classes; boxes within 1 px and IoUs within 0.01 with TF32 off (within 3 px and
  0.03 with it on); the localisation outcomes equal, except, with TF32 on, where the CPU's IoU
  lies within 0.03 of the 0.5 criterion.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import spearmanr

from gradcam_lib.acceleration import precision
from gradcam_lib.datasets import load_photos
from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.boxes import iou
from gradcam_lib.experiments.localization import LocalizationExperiment, LocalizationSettings
from gradcam_lib.methods import grad_cam
from gradcam_lib.metrics.localization import heatmap_to_box
from gradcam_lib.models import ModelEntry, load_model

pytestmark = pytest.mark.cuda

MODEL = "efficientnet_lite0"
THRESHOLDS = (0.05, 0.15, 0.3, 0.5)


@contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """TF32 for cuDNN convolutions and cuBLAS matrix products on or off, restored afterwards."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.fixture(scope="module")
def entry() -> ModelEntry:
    return load_model(MODEL, "cuda")


@pytest.fixture(scope="module")
def photos(entry: ModelEntry) -> list[Sample]:
    return load_photos(entry.transform)


@pytest.fixture(scope="module")
def batch(photos: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """The photographs on the GPU and each one's first ground-truth class."""
    images = torch.stack([sample.image for sample in photos]).cuda()
    return images, torch.tensor([sample.labels[0] for sample in photos], device="cuda")


def relative_l2(reference: torch.Tensor, other: torch.Tensor) -> float:
    return float((reference.float() - other.float()).norm() / reference.float().norm())


def test_bf16_grad_cam_maps_agree_with_fp32_on_cuda(entry: ModelEntry, batch: tuple[torch.Tensor, torch.Tensor]):
    images, targets = batch
    with tf32(False):
        exact = grad_cam(entry.model, entry.layer, images, targets)
    with precision("cuda", bf16=True):
        fast = grad_cam(entry.model, entry.layer, images, targets)
    assert exact.dtype == torch.float32 and fast.dtype == torch.bfloat16  # autocast did run in bf16
    for a, b in zip(exact.cpu(), fast.float().cpu(), strict=True):
        assert float(a.amax()) > 0  # a real map, not an all-zero one that would agree trivially
        assert relative_l2(a, b) < 0.1
        assert spearmanr(a.flatten().numpy(), b.flatten().numpy())[0] > 0.98
        box_a, box_b = heatmap_to_box(a), heatmap_to_box(b)
        assert box_a is not None and box_b is not None
        assert iou(box_a, box_b) > 0.8


@pytest.mark.parametrize(("allow_tf32", "tolerance"), [(False, 1e-4), (True, 2e-2)], ids=["tf32-off", "tf32-on"])
def test_channels_last_gives_the_contiguous_maps_on_cuda(entry: ModelEntry, batch: tuple[torch.Tensor, torch.Tensor],
                                                          allow_tf32: bool, tolerance: float):
    images, targets = batch
    model = entry.model
    try:
        with tf32(allow_tf32):
            contiguous = grad_cam(model, entry.layer, images, targets)
            model.to(memory_format=torch.channels_last)
            fast_images = images.contiguous(memory_format=torch.channels_last)
            assert fast_images.is_contiguous(memory_format=torch.channels_last)
            channels_last = grad_cam(model, entry.layer, fast_images, targets)
    finally:
        model.to(memory_format=torch.contiguous_format)  # the module's fixture is shared
    for a, b in zip(contiguous.cpu(), channels_last.cpu(), strict=True):
        assert float(a.amax()) > 0
        assert relative_l2(a, b) < tolerance


def _rows(entry: ModelEntry, photos: list[Sample], folder: Path, device: str) -> pd.DataFrame:
    settings = LocalizationSettings(thresholds=THRESHOLDS)
    experiment = LocalizationExperiment(entry, photos, "photos", settings)  # type: ignore[arg-type]  # a list serves
    rows = experiment.run(folder, batch_size=4, device=device)
    return rows.sort_values(["image_id", "threshold"]).reset_index(drop=True)


@pytest.mark.parametrize(("allow_tf32", "pixels", "iou_tolerance"), [(False, 1, 0.01), (True, 3, 0.03)],
                         ids=["tf32-off", "tf32-on"])
def test_localization_rows_on_cuda_equal_the_cpus(entry: ModelEntry, photos: list[Sample], tmp_path: Path,
                                                  allow_tf32: bool, pixels: int, iou_tolerance: float):
    cpu_entry = load_model(MODEL, "cpu")
    expected = _rows(cpu_entry, photos, tmp_path / "cpu", "cpu")  # separate folders: the run key omits the device
    with tf32(allow_tf32):
        got = _rows(entry, photos, tmp_path / "cuda", "cuda")
    assert len(expected) == len(photos) * len(THRESHOLDS) and len(got) == len(expected)
    exact = ["image_id", "threshold", "top1_class", "gt_class", "classes", "cls_top1", "cls_top5"]
    pd.testing.assert_frame_equal(got[exact], expected[exact])
    boxes = ["xmin", "ymin", "xmax", "ymax"]
    assert expected[boxes].notna().all().all()  # every top-1 map has a box here: the comparison compares something
    assert float((got[boxes] - expected[boxes]).abs().max().max()) <= pixels
    for column in ("gt_iou", "gt_iou_any"):
        assert float((got[column] - expected[column]).abs().max()) <= iou_tolerance
    near_criterion = (expected["gt_iou"] - 0.5).abs() <= (iou_tolerance if allow_tf32 else 0.0)
    for column in ("loc_gt_known", "loc_top1", "loc_top5"):
        same = np.asarray(got[column] == expected[column])
        assert (same | near_criterion.to_numpy()).all(), column
