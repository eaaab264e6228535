"""Chapter 5: how well do Grad-CAM, Grad-CAM++, Integrated Gradients and SHAP point at the findings
that radiologists boxed on chest X-rays?

Two scores per (box, method), both computed on the *positive part* of a 2-D map:

* **KTH's box share** (:func:`kth_box_share`): min-max the map per image, keep the pixels >= 0.85
  (the top 15 % of its value range), score = the share of those pixels inside the finding's box
  (0 when none is kept). Its chance level is the box's share of the image (:func:`box_fraction`):
  a map that knows nothing scores that on average.
* **ChestX-ray8's localisation accuracy** (Wang et al., CVPR 2017, Sec. 3.2 and Table 4):
  the map is normalised to [0, 255] and binarised at 60 and at 180; every 8-connected region of
  either binary map gives a predicted box (:func:`map_to_boxes`). The finding is localised at
  threshold T when one predicted box has IoBB > T, where IoBB = area(GT n predicted) /
  area(predicted) -- "the Intersection over the detected B-Box area ratio (IoBB) (similar to Area
  of Precision or Purity)" (:func:`iobb`); T(IoBB) in {0.1, 0.25, 0.5, 0.75, 0.9}. AFP (average
  false positives) counts the predicted boxes that match no ground-truth box of that finding.
  IoBB rewards small boxes: a one-pixel box inside the ground truth scores 1, so accuracy is read
  together with AFP.

Integrated Gradients is converged per (image, finding) map (:func:`converged_ig`): the first step
count of a schedule whose completeness gap |sum(attr) - (f(x) - f(x'))| / |f(x) - f(x')| is under
5 % (Sundararajan et al. 2017, "Computing Integrated Gradients": 20 to 300 steps approximate the
integral "within 5%"); every IG row carries its gap and steps (``ig_gap``, ``ig_steps``), also
where the schedule ends above the tolerance. Baselines are named by what they are in pixels: a
zero tensor in ImageNet-normalised space is the data set's *mean colour* (a grey), KTH's "zero
baseline"; the *black* image is ``(0 - mean) / std``
(:func:`gradcam_lib.attributions.black_baseline`); :data:`IG_BASELINES`.

Attribution to grey: input-space maps (IG, SHAP, GradientShap) are ``(3, H, W)``; a pixel's
attribution is the *sum* over its channels (:func:`to_grey`), which keeps IG's and SHAP's
completeness (the map still sums to f(x) - f(baseline)). The mean would give identical scores:
both metrics min-max the map, which removes any positive factor.

Models carry their own class list (``ModelEntry.class_names``) and the finding -> output index map
is built from it (:func:`finding_index`), never written down separately: the KTH project took its
label order from another model, so that only Effusion reached CheXNet's right output.

* ``standin``: a small DenseNet trained on the generated stand-in (:class:`StandinXrayDataset`)
  and shipped as ``gradcam_lib/data/xray_standin.pt`` (made by ``data_prep/make_xray_standin.py``).
* ``chexnet``: a CheXNet checkpoint (arnoweng/CheXNet ``model.pth.tar``) given by path.
* ``xrv:<weights>``: a torchxrayvision model (optional package; its weights download at first use).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence, Sized
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import torch
from PIL import Image
from scipy import ndimage
from torch import nn
from torch.utils.data import Dataset
from torchvision import models as tv_models

from gradcam_lib.datasets.base import Sample, build_sample
from gradcam_lib.datasets.boxes import Box, box_fraction, box_mask, iobb, iobb_unchecked
from gradcam_lib.datasets.chestxray import FINDINGS, canonical_finding
from gradcam_lib.datasets.transforms import IMAGENET_MEAN, IMAGENET_STD, ImageTransform
from gradcam_lib.methods import attribute, canonical_key
from gradcam_lib.methods import labels as method_labels
from gradcam_lib.methods.attributions import black_baseline, converged_ig
from gradcam_lib.models import ModelEntry, read_checkpoint
from gradcam_lib.models.imagenet import rectify_densenet_features
from gradcam_lib.results import dataset_fingerprint, model_fingerprint, run_key, run_resumable
from gradcam_lib.stats import McNemar, PairedDifference, cluster_bootstrap_ci, mcnemar, paired_difference
from gradcam_lib.validate import check_box, check_boxes, check_map

__all__ = [
    "BOX_UNIT",
    "CHESTXRAY8_LEVELS",
    "CHEXNET_CLASSES",
    "IG_BASELINES",
    "IG_METHODS",
    "IG_TOLERANCE",
    "IOBB_THRESHOLDS",
    "STANDIN_FINDINGS",
    "STANDIN_SIZE",
    "XRAY_DATASETS",
    "XRAY_METHODS",
    "AttributionSettings",
    "StandinXrayDataset",
    "attribution_maps",
    "background_images",
    "box_fraction",
    "build_xray_dataset",
    "chexnet_state_dict",
    "classification_auc",
    "converged_ig",
    "evaluate_boxes_batch",
    "evaluate_chestxray",
    "evaluate_rows",
    "finding_index",
    "headline_table",
    "ig_baseline",
    "ig_convergence_table",
    "iobb",
    "iobb_table",
    "kth_box_share",
    "kth_table",
    "load_chexnet",
    "load_standin",
    "load_xray_model",
    "load_xrv",
    "map_to_boxes",
    "method_maps",
    "paired_afp",
    "paired_hits",
    "paired_share",
    "paired_units",
    "render_standin",
    "standin_densenet",
    "standin_transform",
    "to_grey",
    "wrap_xrv_model",
]

#: CheXNet's 14 outputs in its own order (arnoweng/CheXNet ``CLASS_NAMES``).
CHEXNET_CLASSES: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)
#: The Integrated Gradients methods of the chapter: :func:`gradcam_lib.attributions.converged_ig`
#: (registry key ``converged_ig``) with these baselines (:func:`ig_baseline`): ``mean_colour`` is
#: the zero tensor of the normalised input space (KTH's "zero baseline": for ImageNet statistics
#: the mean colour (0.485, 0.456, 0.406), a grey); ``black`` is pixel value 0.
IG_METHODS: dict[str, str] = {"ig_mean_colour": "mean_colour", "ig_black": "black"}
#: The chapter's methods and labels: registry keys (``gradcam`` is ``grad_cam``, ``shap`` is
#: ``shap_expected_gradients``: :mod:`gradcam_lib.methods`) and the two IG baselines; GradientShap
#: runs with the mean-colour baseline.
XRAY_METHODS: dict[str, str] = {
    **method_labels(("gradcam", "gradcam_pp")),
    "ig_mean_colour": "IG (mean-colour baseline)",
    "ig_black": "IG (black baseline)",
    "gradient_shap": "GradientShap (mean-colour baseline)",
    **method_labels(("shap",)),
}
IG_BASELINES: tuple[str, ...] = ("mean_colour", "black")
#: Sundararajan et al.'s completeness check: the relative gap must be under 5 %.
IG_TOLERANCE = 0.05
IOBB_THRESHOLDS: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
#: ChestX-ray8's two binarisation levels on the map normalised to [0, 255].
CHESTXRAY8_LEVELS: tuple[float, ...] = (60.0, 180.0)
KTH_THRESHOLD = 0.85


# --------------------------------------------------------------------------------------------
# Models: each carries its class list; the finding -> output map is built from it
# --------------------------------------------------------------------------------------------


def finding_index(class_names: Sequence[str], finding: str) -> int:
    """The output of a model that predicts ``finding``, looked up in the model's own class list
    (names made canonical on both sides, so ``Infiltrate`` finds ``Infiltration``).

    Raises:
        KeyError: the model has no such output (torchxrayvision marks untrained outputs with '').
    """
    wanted = canonical_finding(finding)
    for index, name in enumerate(class_names):
        if name and canonical_finding(name) == wanted:
            return index
    raise KeyError(f"the model has no output for {finding!r}; its classes are {[n for n in class_names if n]}")


_OLD_DENSE_LAYER = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def chexnet_state_dict(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """A CheXNet checkpoint -> a state dict for ``torchvision.models.densenet121(num_classes=14)``.

    arnoweng/CheXNet saved ``{"state_dict": ...}`` from ``nn.DataParallel`` around a module whose
    DenseNet sits in ``.densenet121`` and whose head is ``Sequential(Linear, Sigmoid)``, with the
    torchvision < 0.3 layer names: ``module.densenet121.features.denseblock1.denselayer1.norm.1.weight``.
    This strips ``module.`` and ``densenet121.``, renames ``norm.1`` -> ``norm1`` (also ``conv.1``,
    ``norm.2``, ``conv.2``; the same rule as torchvision's own loader) and ``classifier.0.`` ->
    ``classifier.``. The Sigmoid is dropped: the model returns logits, which Grad-CAM differentiates.
    """
    state = checkpoint.get("state_dict", checkpoint)
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "densenet121."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        key = _OLD_DENSE_LAYER.sub(r"\1\2", key)
        key = key.replace("classifier.0.", "classifier.")
        out[key] = value
    return out


def _imagenet_transform(size: int) -> ImageTransform:
    """Resize to ``size`` without cropping (square X-rays keep every box), ImageNet statistics."""
    return ImageTransform(size, size, IMAGENET_MEAN, IMAGENET_STD)


def _entry(name: str, model: nn.Module, layer_name: str, transform: ImageTransform, classes: Sequence[str],
           device: str | torch.device) -> ModelEntry:
    model = model.eval().to(device)
    return ModelEntry(name, model, model.get_submodule(layer_name), layer_name, transform, tuple(classes))


def load_chexnet(path: str | Path, device: str | torch.device = "cpu", layer_name: str = "features") -> ModelEntry:
    """CheXNet (Rajpurkar et al. 2017) from a checkpoint file, read with ``weights_only=True``.

    Args:
        path: ``model.pth.tar`` of arnoweng/CheXNet, or any state dict of the same network.
        layer_name: the Grad-CAM layer; ``features`` is the last rectified feature map (1024
            channels: ``norm5``, then the appended ``relu5`` of
            :func:`gradcam_lib.models.rectify_densenet_features`); KTH used
            ``features.denseblock4.denselayer16.conv2`` (the last 32 channels only).

    Raises:
        FileNotFoundError: no such file.
        RuntimeError: keys that do not fit densenet121 (the message lists them).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CheXNet checkpoint {path} does not exist")
    state = chexnet_state_dict(
        read_checkpoint(path, "CheXNet checkpoint", "download arnoweng/CheXNet's model.pth.tar again")
    )
    model = tv_models.densenet121(weights=None, num_classes=len(CHEXNET_CLASSES))
    model.load_state_dict(state)
    return _entry(
        "chexnet", rectify_densenet_features(model), layer_name, _imagenet_transform(224), CHEXNET_CLASSES, device
    )


class _GreyInput(nn.Module):
    """Feeds the first channel of a grey image replicated to 3 channels to a 1-channel model, so
    every chapter's code sees ``(B, 3, H, W)``; attributions land on channel 0 only, and their sum
    over channels (:func:`to_grey`) is the 1-channel attribution."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x[:, :1])


def wrap_xrv_model(model: nn.Module, name: str, device: str | torch.device = "cpu") -> ModelEntry:
    """A torchxrayvision DenseNet as a :class:`ModelEntry`: class list = its ``pathologies``
    (with '' for outputs it was not trained on), logits out (its calibration ``op_threshs`` and
    sigmoid are switched off), input scaled to [-1024, 1024] at 224 px as ``xrv.datasets.normalize``
    does, Grad-CAM on its ``features``."""
    xrv: Any = model  # torchxrayvision's attributes, which nn.Module's type does not declare
    xrv.op_threshs = None
    xrv.apply_sigmoid = False
    transform = ImageTransform(224, 224, (0.5,) * 3, (0.5 / 1024,) * 3)
    rectify_densenet_features(model)  # xrv's forward, too, applies F.relu after features (norm5)
    return _entry(name, _GreyInput(model), "model.features", transform, list(xrv.pathologies), device)


def load_xrv(weights: str = "densenet121-res224-nih", device: str | torch.device = "cpu") -> ModelEntry:
    """torchxrayvision's DenseNet trained on NIH ChestX-ray14 (or other ``weights``).

    Raises:
        ImportError: torchxrayvision is not installed (``pip install torchxrayvision``).
        FileNotFoundError: its weights are neither cached (``~/.torchxrayvision``) nor downloadable.
    """
    try:
        import torchxrayvision as xrv
    except ImportError as error:
        raise ImportError("model 'xrv:...' needs torchxrayvision: pip install torchxrayvision") from error
    try:
        model = xrv.models.DenseNet(weights=weights)
    except Exception as error:  # offline and not cached
        raise FileNotFoundError(f"torchxrayvision weights {weights!r} are not cached and could not be downloaded: "
                                f"{type(error).__name__}: {error}") from error
    return wrap_xrv_model(model, f"xrv:{weights}", device)


#: The stand-in network: torchvision's DenseNet with three small blocks (stride 16: 6 x 6 maps at 96 px).
STANDIN_ARCHITECTURE: dict[str, Any] = {"growth_rate": 8, "block_config": (3, 3, 3), "num_init_features": 16,
                                        "bn_size": 2, "drop_rate": 0.0}
STANDIN_SIZE = 96
#: The stand-in's findings, in the stand-in model's output order (saved in its checkpoint too).
STANDIN_FINDINGS: tuple[str, ...] = ("Cardiomegaly", "Effusion", "Mass", "Nodule")
STANDIN_CHECKPOINT = "data/xray_standin.pt"


def standin_densenet(num_classes: int = len(STANDIN_FINDINGS)) -> nn.Module:
    """The stand-in's small DenseNet (``torchvision.models.DenseNet``, ``STANDIN_ARCHITECTURE``)."""
    return tv_models.DenseNet(num_classes=num_classes, **STANDIN_ARCHITECTURE)


def standin_transform() -> ImageTransform:
    """96-px stand-in images, ImageNet statistics (as CheXNet, so a zero baseline means the same)."""
    return _imagenet_transform(STANDIN_SIZE)


def load_standin(device: str | torch.device = "cpu", path: str | Path | None = None) -> ModelEntry:
    """The shipped stand-in model; its class list comes from its checkpoint."""
    shipped = resources.files("gradcam_lib").joinpath(STANDIN_CHECKPOINT)
    with resources.as_file(shipped) if path is None else nullcontext(Path(path)) as file:
        if not Path(file).is_file():
            raise FileNotFoundError(f"stand-in checkpoint {file} missing; run data_prep/make_xray_standin.py")
        checkpoint = read_checkpoint(
            file, "stand-in checkpoint", "run data_prep/make_xray_standin.py to write it again"
        )
    model = standin_densenet(len(checkpoint["class_names"]))
    model.load_state_dict(checkpoint["state_dict"])
    return _entry(
        "standin-densenet",
        rectify_densenet_features(model),
        "features",
        standin_transform(),
        checkpoint["class_names"],
        device,
    )


def load_xray_model(name: str, device: str | torch.device = "cpu", checkpoint: str | None = None,
                    layer_name: str | None = None) -> ModelEntry:
    """``standin`` | ``chexnet`` (needs ``checkpoint``) | ``xrv:<weights>``; ``layer_name``
    overrides the Grad-CAM layer (a name inside the returned ``entry.model``)."""
    if name == "standin":
        entry = load_standin(device, checkpoint)
    elif name == "chexnet":
        if checkpoint is None:
            raise ValueError("model 'chexnet' needs checkpoint: the path of CheXNet's model.pth.tar")
        entry = load_chexnet(checkpoint, device)
    elif name.startswith("xrv:"):
        entry = load_xrv(name[4:], device)
    else:
        raise ValueError(f"unknown chest X-ray model {name!r}; choose standin, chexnet or xrv:<weights>")
    if layer_name is not None:
        entry = ModelEntry(entry.name, entry.model, entry.model.get_submodule(layer_name), layer_name,
                           entry.transform, entry.class_names)
    return entry


# --------------------------------------------------------------------------------------------
# The generated stand-in: X-ray-like images with findings in known boxes
# --------------------------------------------------------------------------------------------


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


XRAY_DATASETS = ("standin", "chestxray14")


def build_xray_dataset(name: str, transform: ImageTransform, n_images: int | None = None, data_root: str | None = None,
                       bbox_csv: str | None = None, seed: int = 0) -> Dataset[Sample]:
    """``standin`` (``n_images`` generated images, each with >= 1 finding, from ``seed``) or
    ``chestxray14`` (the box images under ``data_root``, the first ``n_images`` by name; all 880
    when None).

    Raises:
        ValueError: unknown name, or ``chestxray14`` without ``data_root``.
    """
    if name == "standin":
        return StandinXrayDataset(n_images or 32, transform, seed=seed)
    if name == "chestxray14":
        if data_root is None:
            raise ValueError(
                "dataset 'chestxray14' needs data_root: the folder of the NIH images and BBox_List_2017.csv"
            )
        from gradcam_lib.datasets.chestxray import ChestXray14BoxDataset

        return ChestXray14BoxDataset(data_root, transform, bbox_csv=bbox_csv, limit=n_images)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(XRAY_DATASETS)}")


def classification_auc(entry: ModelEntry, dataset: Dataset[Sample], batch_size: int = 64) -> pd.DataFrame:
    """ROC AUC of each of the model's outputs that is a finding of :data:`FINDINGS`, on images
    labelled by their boxes (the stand-in; ChestX-ray14's box images are all positive): is the
    model worth explaining? Returns finding, output, auc, positives, images."""
    from sklearn.metrics import roc_auc_score

    samples = [dataset[i] for i in range(len(cast(Sized, dataset)))]
    device = next(entry.model.parameters()).device
    with torch.no_grad():
        logits = torch.cat([entry.model(torch.stack([s.image for s in samples[i : i + batch_size]]).to(device)).cpu()
                            for i in range(0, len(samples), batch_size)])
    rows = []
    for finding in FINDINGS:
        try:
            output = finding_index(entry.class_names, finding)
        except KeyError:
            continue
        truth = np.array([FINDINGS.index(finding) in s.labels for s in samples])
        auc = roc_auc_score(truth, logits[:, output].numpy()) if 0 < truth.sum() < len(truth) else float("nan")
        rows.append({"finding": finding, "output": output, "auc": auc, "positives": int(truth.sum()),
                     "images": len(samples)})
    return pd.DataFrame(rows)


def background_images(dataset: Dataset[Sample], n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images of ``dataset`` drawn without replacement from ``seed``: SHAP's reference set."""
    picks = np.sort(
        np.random.default_rng(seed).choice(
            len(cast(Sized, dataset)), size=min(n, len(cast(Sized, dataset))), replace=False
        )
    )
    return torch.stack([dataset[int(i)].image for i in picks])


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------


def to_grey(maps: torch.Tensor) -> torch.Tensor:
    """``(..., C, H, W)`` input-space attributions -> ``(..., H, W)``: the sum over channels
    (module docstring: keeps completeness; the mean scores identically)."""
    return maps.sum(dim=-3)


def _positive(heatmap: torch.Tensor | np.ndarray) -> np.ndarray:
    values = (
        heatmap.detach().cpu().double().numpy()
        if isinstance(heatmap, torch.Tensor)
        else np.asarray(heatmap, np.float64)
    )
    check_map("heatmap", values)
    return np.clip(values, 0.0, None)


def _min_max(values: np.ndarray) -> np.ndarray | None:
    """Per-image min-max to [0, 1]; None for a constant map (nothing stands out)."""
    low, high = values.min(), values.max()
    return None if not high > low else (values - low) / (high - low)


def kth_box_share(heatmap: torch.Tensor | np.ndarray, box: Sequence[int], threshold: float = KTH_THRESHOLD
                  ) -> tuple[float, int]:
    """KTH's score: positive part, per-image min-max, keep pixels >= ``threshold``; the share of
    the kept pixels inside the inclusive ``box``.

    Returns:
        ``(share, kept pixels)``; ``(0.0, 0)`` for a map with no positive variation (an all-zero
        Grad-CAM), as KTH scored a map that keeps nothing.

    Raises:
        ValueError: a map that is not 2-D or holds NaN or infinity; an invalid or inverted ``box``.
    """
    check_box("box", box)
    values = _min_max(_positive(heatmap))
    if values is None:
        return 0.0, 0
    kept = values >= threshold
    count = int(kept.sum())
    return float((kept & box_mask(box, values.shape)).sum() / count), count


_EIGHT = np.ones((3, 3), dtype=bool)


def map_to_boxes(heatmap: torch.Tensor | np.ndarray, levels: Sequence[float] = CHESTXRAY8_LEVELS) -> list[Box]:
    """ChestX-ray8's box generator (Sec. 3.2): the positive part min-max normalised to [0, 255],
    binarised at each of ``levels`` (>= level), one box around each 8-connected region of each
    binary map; duplicates removed, in order of level then row-major position. An all-zero map
    gives no box; a map that is not 2-D or holds NaN or infinity is refused (ValueError)."""
    values = _min_max(_positive(heatmap))
    if values is None:
        return []
    boxes: list[Box] = []
    for level in levels:
        segments, _ = ndimage.label(values * 255.0 >= level, structure=_EIGHT)
        for rows, cols in ndimage.find_objects(segments):
            box = (cols.start, rows.start, cols.stop - 1, rows.stop - 1)
            if box not in boxes:
                boxes.append(box)
    return boxes


# --------------------------------------------------------------------------------------------
# Maps and the evaluation over a data set
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributionSettings:
    """Settings of the input-space methods. ``ig_steps``: the step schedule of :func:`converged_ig`
    (each map gets the first count whose completeness gap is under ``ig_tolerance``; the last when
    none is). ``background``: SHAP's reference images (required for ``shap``); captum's
    GradientShap uses one mean-colour baseline (zero in normalised space), as KTH did."""

    ig_steps: tuple[int, ...] = (32, 64, 128, 256)
    ig_tolerance: float = IG_TOLERANCE
    ig_internal_batch_size: int | None = None
    gradient_shap_samples: int = 20
    shap_samples: int = 50
    seed: int = 0
    background: torch.Tensor | None = None

    def key(self) -> dict[str, Any]:
        """JSON-able identity (the background by its shape and sum) for result file names."""
        settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items() if k != "background"}
        if self.background is not None:
            settings["background"] = [list(self.background.shape), float(self.background.double().sum())]
        return settings


def ig_baseline(name: str, transform: ImageTransform, images: torch.Tensor) -> torch.Tensor:
    """The IG baseline ``name`` of :data:`IG_BASELINES` in the model's input space, shaped like
    ``images``: ``mean_colour`` = zeros (the normalisation's mean colour), ``black`` = pixel 0,
    i.e. ``(0 - mean) / std`` per channel."""
    if name == "mean_colour":
        return torch.zeros_like(images)
    if name == "black":
        return black_baseline(tuple(transform.mean), tuple(transform.std), images)
    raise ValueError(f"unknown IG baseline {name!r}; choose one of {', '.join(IG_BASELINES)}")


def _options(method: str, entry: ModelEntry, images: torch.Tensor, settings: AttributionSettings
             ) -> tuple[str, dict[str, Any]]:
    """The registry key of ``method`` and the chapter's settings of it as the function's options."""
    if method in IG_METHODS:
        return "converged_ig", {"baseline": ig_baseline(IG_METHODS[method], entry.transform, images),
                                "steps": settings.ig_steps, "tolerance": settings.ig_tolerance,
                                "internal_batch_size": settings.ig_internal_batch_size}
    key = canonical_key(method)
    if key == "gradient_shap":  # seeds and restores both torch's and numpy's RNGs (captum draws from both)
        return key, {"baselines": ig_baseline("mean_colour", entry.transform, images[:1]),
                     "n_samples": settings.gradient_shap_samples, "seed": settings.seed}
    if key == "shap_expected_gradients":
        if settings.background is None:
            raise ValueError(f"method {method!r} needs AttributionSettings.background (reference images)")
        return key, {"background": settings.background.to(images.device), "n_samples": settings.shap_samples,
                     "seed": settings.seed}
    return key, {}


def method_maps(method: str, entry: ModelEntry, images: torch.Tensor, targets: torch.Tensor,
                settings: AttributionSettings) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(maps (B, H, W), IG gaps (B,) or None, IG steps (B,) or None)`` of one method for
    ``targets (B,)`` (model output indices); maps signed for the input-space methods (channel
    sum, :func:`to_grey`), non-negative for the CAMs."""
    key, options = _options(method, entry, images, settings)
    explained = attribute(key, entry.model, entry.layer, images, targets, reduction="sum", **options)
    return explained.maps, explained.info.get("gaps"), explained.info.get("steps")


def attribution_maps(method: str, entry: ModelEntry, images: torch.Tensor, targets: torch.Tensor,
                     settings: AttributionSettings) -> torch.Tensor:
    """The ``(B, H, W)`` maps of :func:`method_maps` alone."""
    return method_maps(method, entry, images, targets, settings)[0]


def _score_boxes(heatmap: torch.Tensor, truths: list[Box], thresholds: Sequence[float]) -> list[dict[str, Any]]:
    """Both metrics for every ground-truth box of one (image, finding) map, with the areas (in
    pixels) of the ground-truth box and of the smallest box that ChestX-ray8's generator drew
    (NaN when it drew none)."""
    check_boxes("truths", truths)
    predicted = map_to_boxes(heatmap)
    overlaps = np.array([[iobb_unchecked(t, p) for p in predicted] for t in truths])
    overlaps = overlaps.reshape(len(truths), len(predicted))
    area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)  # noqa: E731  inclusive pixel box
    smallest = float(min(area(p) for p in predicted)) if predicted else float("nan")
    rows = []
    for i, truth in enumerate(truths):
        share, kept = kth_box_share(heatmap, truth)
        row: dict[str, Any] = {"kth_share": share, "kth_pixels": kept, "chance": box_fraction(truth, heatmap.shape),
                               "pred_boxes": len(predicted), "box_area": area(truth), "smallest_pred_area": smallest}
        for t in thresholds:
            row[f"hit@{t}"] = bool((overlaps[i] > t).any())
            row[f"fp@{t}"] = int((~(overlaps > t).any(axis=0)).sum())
        rows.append(row)
    return rows


def evaluate_boxes_batch(entry: ModelEntry, images: torch.Tensor, samples: Sequence[Sample], methods: Sequence[str],
                         settings: AttributionSettings, thresholds: Sequence[float] = IOBB_THRESHOLDS
                         ) -> list[dict[str, Any]]:
    """One row per (ground-truth box, method): the finding, the model output it was mapped to,
    the model's probability for it, KTH's share, ChestX-ray8's hits and false positives per
    T(IoBB), and for IG its completeness gap and steps (``ig_gap``, ``ig_steps``; NaN for the
    other methods). Each method runs once per (image, finding), for the output of that finding."""
    pairs = sorted({(i, int(label)) for i, s in enumerate(samples) for label in s.box_labels.tolist()})
    targets = torch.tensor([finding_index(entry.class_names, FINDINGS[label]) for _, label in pairs],
                           dtype=torch.long, device=images.device)
    batch = images[[i for i, _ in pairs]]
    with torch.no_grad():
        probs = torch.sigmoid(entry.model(batch).gather(1, targets[:, None])[:, 0]).cpu()
    rows = []
    for method in methods:
        maps, gaps, used = method_maps(method, entry, batch, targets, settings)
        maps = maps.detach().cpu()
        for k, (i, label) in enumerate(pairs):
            truths = [tuple(b) for b in samples[i].boxes_of(label).tolist()]
            convergence = {"ig_gap": float(gaps[k]) if gaps is not None else float("nan"),
                           "ig_steps": int(used[k]) if used is not None else float("nan")}
            for box_index, (truth, scores) in enumerate(
                zip(truths, _score_boxes(maps[k], truths, thresholds), strict=True)
            ):
                rows.append(
                    {
                        "image_id": samples[i].image_id,
                        "finding": FINDINGS[label],
                        "box": box_index,
                        "output": int(targets[k]),
                        "prob": float(probs[k]),
                        "method": method,
                        **dict(zip(("xmin", "ymin", "xmax", "ymax"), truth, strict=True)),
                        **scores,
                        **convergence,
                    }
                )
    return rows


#: Bumped when the rows gain columns, so that an older results file is not resumed without them.
ROW_FORMAT = 3


def evaluate_chestxray(entry: ModelEntry, dataset: Dataset[Sample], dataset_name: str, results_dir: str | Path,
                       methods: Sequence[str], settings: AttributionSettings, batch_size: int = 8,
                       device: str = "cpu", num_workers: int = 0,
                       thresholds: Sequence[float] = IOBB_THRESHOLDS) -> pd.DataFrame:
    """:func:`evaluate_boxes_batch` over ``dataset``, resumably, into
    ``results_dir/<model>_<dataset>_<settings hash>.csv``; returns all rows."""
    config = {"model": entry.name, "weights": model_fingerprint(entry.model), "layer": entry.layer_name,
              "dataset": dataset_name, "row_format": ROW_FORMAT,
              "data": dataset_fingerprint(dataset), "methods": list(methods), "settings": settings.key(),
              "thresholds": list(thresholds)}
    path = Path(results_dir) / f"{entry.name.replace(':', '_')}_{dataset_name}_{run_key(config)}.csv"
    rows = run_resumable(
        dataset,
        lambda images, samples: evaluate_boxes_batch(entry, images, samples, methods, settings, thresholds),
        path, batch_size=batch_size, device=device, num_workers=num_workers,
        description=f"{entry.name} {dataset_name}",
    )
    return rows.assign(model=entry.name, dataset=dataset_name)


def evaluate_rows(entry: ModelEntry, dataset: Dataset[Sample], methods: Sequence[str], settings: AttributionSettings,
                  batch_size: int = 8, device: str = "cpu", thresholds: Sequence[float] = IOBB_THRESHOLDS
                  ) -> pd.DataFrame:
    """:func:`evaluate_boxes_batch` over ``dataset`` in memory (no results file), in the same
    batches as :func:`evaluate_chestxray`, so that the same settings give the same rows; for
    re-drawing a Monte Carlo method (GradientShap) with other seeds."""
    rows: list[dict[str, Any]] = []
    for start in range(0, len(cast(Sized, dataset)), batch_size):
        samples = [dataset[i] for i in range(start, min(start + batch_size, len(cast(Sized, dataset))))]
        images = torch.stack([s.image for s in samples]).to(device)
        rows.extend(evaluate_boxes_batch(entry, images, samples, methods, settings, thresholds))
    return pd.DataFrame(rows)


def _with_overall(rows: pd.DataFrame, by: list[str], summarise: Callable[[pd.DataFrame], pd.Series]) -> pd.DataFrame:
    """``summarise`` per (by + finding) and per ``by`` over all findings ("overall")."""
    per = rows.groupby([*by, "finding"], sort=True).apply(summarise, include_groups=False).reset_index()
    overall = rows.groupby(by, sort=True).apply(summarise, include_groups=False).reset_index().assign(finding="overall")
    return pd.concat([per, overall], ignore_index=True)


def kth_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean KTH share per (method, finding) and overall (means over boxes, as KTH's over 984),
    beside its chance level (mean box fraction) and the number of boxes."""
    def summarise(group: pd.DataFrame) -> pd.Series:
        return pd.Series({"kth_share": group["kth_share"].mean(), "chance": group["chance"].mean(),
                          "boxes": len(group)})

    table = _with_overall(rows, ["method"], summarise)
    table["boxes"] = table["boxes"].astype(int)
    return table


def iobb_table(rows: pd.DataFrame, thresholds: Sequence[float] = IOBB_THRESHOLDS) -> pd.DataFrame:
    """ChestX-ray8's accuracy (share of boxes localised) and AFP (false boxes per (image, finding)
    map) at each T(IoBB), per (method, finding) and overall; long format."""
    def summarise(group: pd.DataFrame) -> pd.Series:
        maps = group.drop_duplicates("map")
        values = {}
        for t in thresholds:
            values[f"acc@{t}"] = group[f"hit@{t}"].astype(bool).mean()
            values[f"afp@{t}"] = maps[f"fp@{t}"].mean()
        values["boxes"] = len(group)
        return pd.Series(values)

    wide = _with_overall(rows.assign(map=rows["image_id"] + "/" + rows["finding"]), ["method"], summarise)
    long = []
    for t in thresholds:
        long.append(wide[["method", "finding", "boxes"]].assign(T=t, acc=wide[f"acc@{t}"], afp=wide[f"afp@{t}"]))
    table = pd.concat(long, ignore_index=True)
    table["boxes"] = table["boxes"].astype(int)
    return table


# --------------------------------------------------------------------------------------------
# Intervals over images and paired tests between methods
# --------------------------------------------------------------------------------------------

#: A box is identified by its image, its finding and its index among that finding's boxes.
BOX_UNIT = ["image_id", "finding", "box"]


def paired_units(rows: pd.DataFrame, value: str, methods: Sequence[str], finding: str | None = None) -> pd.DataFrame:
    """``value`` of each method on the same boxes: index :data:`BOX_UNIT`, one column per method
    (in ``methods`` order), only boxes that every method scored; ``finding`` keeps one finding.

    Raises:
        KeyError: a method has no rows.
    """
    subset = rows if finding is None else rows[rows["finding"] == finding]
    missing = [m for m in methods if m not in set(subset["method"])]
    if missing:
        raise KeyError(f"no rows for {missing}")
    wide = subset[subset["method"].isin(list(methods))].pivot_table(index=BOX_UNIT, columns="method", values=value,
                                                                    aggfunc="first")
    return wide[list(methods)].dropna()


def headline_table(rows: pd.DataFrame, threshold: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """Per method, over all boxes: KTH's mean box share and ChestX-ray8's accuracy at T(IoBB) =
    ``threshold``, each with a 95 % interval that resamples whole *images* (the independent units:
    an image's boxes share the image and the model's state on it; :func:`cluster_bootstrap_ci`);
    the chance share (mean box fraction); AFP per (image, finding) map with its interval over
    images; boxes, maps and images counted."""
    out = []
    for method, group in rows.groupby("method", sort=False):
        share = cluster_bootstrap_ci(group["kth_share"].to_numpy(float), group["image_id"].to_numpy(), seed=seed)
        hits = cluster_bootstrap_ci(group[f"hit@{threshold}"].astype(bool).to_numpy(float),
                                    group["image_id"].to_numpy(), seed=seed)
        maps = group.drop_duplicates(["image_id", "finding"])
        afp = cluster_bootstrap_ci(maps[f"fp@{threshold}"].to_numpy(float), maps["image_id"].to_numpy(), seed=seed)
        out.append({"method": method, "box share": share[0], "share low": share[1], "share high": share[2],
                    "chance": group["chance"].mean(), f"acc@{threshold}": hits[0], "acc low": hits[1],
                    "acc high": hits[2], f"afp@{threshold}": afp[0], "afp low": afp[1], "afp high": afp[2],
                    "boxes": len(group), "maps": len(maps), "images": group["image_id"].nunique()})
    return pd.DataFrame(out)


def ig_convergence_table(rows: pd.DataFrame, tolerance: float = IG_TOLERANCE) -> pd.DataFrame:
    """Per IG method, over its (image, finding) maps: how many maps, the steps used (count per
    step value), the largest and the median completeness gap, and how many maps are under
    ``tolerance`` (Sundararajan et al.'s 5 %)."""
    out = []
    for method, group in rows[rows["ig_gap"].notna()].groupby("method", sort=False):
        maps = group.drop_duplicates(["image_id", "finding"])
        steps = maps["ig_steps"].astype(int).value_counts().sort_index()
        out.append({"method": method, "maps": len(maps),
                    "steps used": ", ".join(f"{s}: {n}" for s, n in steps.items()),
                    "max gap": maps["ig_gap"].max(), "median gap": maps["ig_gap"].median(),
                    f"maps under {tolerance:.0%}": int((maps["ig_gap"] < tolerance).sum())})
    return pd.DataFrame(out)


def paired_share(rows: pd.DataFrame, a: str, b: str | None = None, finding: str | None = None,
                 seed: int = 0) -> PairedDifference:
    """Mean of (box share of ``a``) - (box share of ``b``) on the same boxes, with a paired
    bootstrap interval that resamples whole images; ``b=None`` compares ``a`` with chance (each
    box's own share of the image)."""
    if b is None:
        wide = paired_units(rows, "kth_share", [a], finding)
        other = paired_units(rows, "chance", [a], finding)[a]
    else:
        wide = paired_units(rows, "kth_share", [a, b], finding)
        other = wide[b]
    clusters = wide.index.get_level_values("image_id").to_numpy()
    return paired_difference(wide[a].to_numpy(), other.loc[wide.index].to_numpy(), clusters=clusters, seed=seed)


def paired_hits(rows: pd.DataFrame, a: str, b: str, threshold: float = 0.5, finding: str | None = None) -> McNemar:
    """McNemar's exact test of ``a``'s and ``b``'s ChestX-ray8 hits at T(IoBB) = ``threshold``
    on the same boxes (each box is a unit; on the stand-in, one box per (image, finding))."""
    wide = paired_units(rows, f"hit@{threshold}", [a, b], finding).astype(bool)
    return mcnemar(wide[a].to_numpy(), wide[b].to_numpy())


def paired_afp(rows: pd.DataFrame, a: str, b: str, threshold: float = 0.5, seed: int = 0) -> PairedDifference:
    """Mean difference of false boxes per (image, finding) map at T(IoBB) = ``threshold``,
    ``a`` - ``b``, on the same maps, with a paired bootstrap that resamples whole images."""
    maps = rows[rows["box"] == 0]
    wide = paired_units(maps, f"fp@{threshold}", [a, b]).astype(float)
    clusters = wide.index.get_level_values("image_id").to_numpy()
    return paired_difference(wide[a].to_numpy(), wide[b].to_numpy(), clusters=clusters, seed=seed)
