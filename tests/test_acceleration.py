"""bf16 autocast (the GPU fast path) against fp32 on a real model: the maps stay close."""

from __future__ import annotations

import torch

from gradcam_lib.acceleration import precision
from gradcam_lib.datasets import load_photos
from gradcam_lib.datasets.boxes import iou
from gradcam_lib.methods import grad_cam
from gradcam_lib.metrics.localization import heatmap_to_box
from gradcam_lib.models import load_model


def test_bf16_grad_cam_maps_and_boxes_stay_close_to_fp32():
    entry = load_model("efficientnet_lite0")
    photos = load_photos(entry.transform)
    images = torch.stack([s.image for s in photos])
    targets = torch.tensor([s.labels[0] for s in photos])
    exact = grad_cam(entry.model, entry.layer, images, targets)
    with precision("cpu", bf16=True):
        fast = grad_cam(entry.model, entry.layer, images, targets).float()
    for a, b in zip(exact, fast):
        assert float((a - b).abs().max() / a.abs().max()) < 0.1
        assert iou(heatmap_to_box(a), heatmap_to_box(b)) > 0.8


def test_precision_is_a_no_op_when_off():
    with precision("cpu", bf16=False):
        assert not torch.is_autocast_enabled("cpu")
    with precision("cpu", bf16=True):
        assert torch.is_autocast_enabled("cpu")
