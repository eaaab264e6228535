"""Fidelity and contrastivity of attribution maps, with the KTH project's formulas (chapter 7).

Binarisation (KTH): a map keeps the pixels whose value is *above the p-th percentile of its positive
values* (numpy's linear-interpolation percentile); a map with no positive value keeps nothing. With
p = 1 or 10 this keeps 99 % or 90 % of the positively attributed pixels.

* Fidelity of an image = p(y | x) - p(y | x'), where x' is x with the kept pixels of the map for y
  set to ``fill`` in every channel (KTH: 0 in the model's input space). Beside it, the same drop for
  a random mask holding the same number of pixels: the part of the drop that any mask of that size
  would cause.
* Contrastivity of an image = the mean, over the other classes j, of
  Hamming(B_y, B_j) / |B_y union B_j| (0 when the union is empty, as KTH): 1 when the maps of y and
  j select disjoint pixels, 0 when they select the same ones.

Input-space attributions (IG, SHAP) are reduced to one map per pixel by summing the channels (KTH
kept channel 0 only, i.e. red on CIFAR-10).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from gradcam_lib.attributions import integrated_gradients, shap_expected_gradients
from gradcam_lib.explain import explanation_scope, grad_cam
from gradcam_lib.stats import mean_ci

__all__ = [
    "positive_percentile_mask",
    "random_masks_like",
    "mask_images",
    "fidelity",
    "contrastivity",
    "ATTRIBUTION_METHODS",
    "attribution_maps",
    "deep_shap_top1",
    "evaluate_fidelity",
    "summary_table",
]


def positive_percentile_mask(maps: torch.Tensor, percentile: float) -> torch.Tensor:
    """``maps (..., H, W)`` -> bool masks: ``map > percentile_p(map[map > 0])`` per map.

    Raises:
        ValueError: ``percentile`` outside [0, 100] or a NaN in ``maps``.
    """
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must lie in [0, 100], got {percentile}")
    if torch.isnan(maps).any():
        raise ValueError("attribution maps contain NaN")
    flat = maps.flatten(-2).double()
    positive = torch.where(flat > 0, flat, torch.full_like(flat, float("nan")))
    threshold = torch.nanquantile(positive, percentile / 100.0, dim=-1, keepdim=True)  # NaN if none positive
    keep = (flat > threshold) & ~torch.isnan(threshold)
    return keep.view(maps.shape)


def random_masks_like(masks: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """For each mask ``(..., H, W)``, a uniformly random mask with the same number of pixels."""
    flat = masks.flatten(-2)
    generator = torch.Generator().manual_seed(seed)
    scores = torch.rand(flat.shape, generator=generator)
    ranks = scores.argsort(-1).argsort(-1)
    return (ranks < flat.sum(-1, keepdim=True).cpu()).view(masks.shape).to(masks.device)


def mask_images(images: torch.Tensor, masks: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``images (B, C, H, W)`` with the pixels of ``masks (B, H, W)`` set to ``fill`` in every channel."""
    return torch.where(masks[:, None], torch.full_like(images, fill), images)


@torch.no_grad()
def fidelity(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor,
             fill: float = 0.0, before: torch.Tensor | None = None) -> torch.Tensor:
    """Per image ``p(y | x) - p(y | x')``, x' = :func:`mask_images` (KTH's fidelity before the mean);
    ``before``: p(y | x) when already known."""
    model.eval()
    rows = torch.arange(len(images), device=images.device)
    if before is None:
        before = F.softmax(model(images), dim=1)[rows, targets]
    after = F.softmax(model(mask_images(images, masks, fill)), dim=1)[rows, targets]
    return (before - after).cpu()


def contrastivity(masks: torch.Tensor, target_index: torch.Tensor | int = 0) -> torch.Tensor:
    """``masks (B, K, H, W)``: the binarised maps of K classes per image, the explained class at
    position ``target_index`` (per image or shared). Returns ``(B,)``: the mean over the other K - 1
    classes of Hamming(B_y, B_j) / |B_y union B_j| (0 for an empty union)."""
    batch, classes = masks.shape[:2]
    if classes < 2:
        raise ValueError("contrastivity needs the maps of at least two classes per image")
    index = torch.as_tensor(target_index, device=masks.device).long().expand(batch)
    own = masks[torch.arange(batch, device=masks.device), index].unsqueeze(1)  # (B, 1, H, W)
    differ = (own ^ masks).flatten(2).sum(-1).double()
    union = (own | masks).flatten(2).sum(-1).double()
    ratio = torch.where(union > 0, differ / union.clamp(min=1), torch.zeros_like(union))
    others = torch.ones(batch, classes, dtype=torch.bool, device=masks.device)
    others[torch.arange(batch, device=masks.device), index] = False
    return ((ratio * others).sum(1) / (classes - 1)).cpu()


ATTRIBUTION_METHODS: dict[str, str] = {
    "gradcam": "Grad-CAM",
    "ig": "Integrated Gradients",
    "shap": "SHAP (GradientExplainer)",
}


def attribution_maps(method: str, model: nn.Module, layer: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                     background: torch.Tensor | None = None, ig_steps: int = 50, shap_samples: int = 50,
                     seed: int = 0) -> torch.Tensor:
    """``(B, K, H, W)`` maps of ``classes (B, K)`` by one of ``ATTRIBUTION_METHODS``: Grad-CAM
    (upsampled, rectified), or IG (zero baseline) / SHAP (``shap.GradientExplainer`` over
    ``background``) summed over channels. Wraps :mod:`gradcam_lib.explain` and
    :mod:`gradcam_lib.attributions`."""
    batch, k = classes.shape
    if method == "gradcam":
        return grad_cam(model, layer, images, classes)
    repeated = images.repeat_interleave(k, dim=0)
    flat = classes.reshape(-1)
    if method == "ig":
        values = integrated_gradients(model, repeated, flat, steps=ig_steps)
    elif method == "shap":
        if background is None:
            raise ValueError("SHAP needs a background sample")
        values = shap_expected_gradients(model, repeated, flat, background, n_samples=shap_samples, seed=seed)
    else:
        raise KeyError(f"unknown method {method!r}; choose one of {', '.join(ATTRIBUTION_METHODS)}")
    return values.sum(1).view(batch, k, *images.shape[-2:])


def deep_shap_top1(model: nn.Module, images: torch.Tensor, background: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``shap.DeepExplainer`` (DeepLIFT rules with a background distribution; what KTH used) for
    each image's top-1 logit: ``(maps (B, H, W) summed over channels, classes (B,))``. Only for
    networks made of the module types it knows (nn.ReLU, nn.MaxPool2d, ...), as :class:`SmallCNN`."""
    import shap

    with explanation_scope(model):
        explainer = shap.DeepExplainer(model, background)
        values, ranks = explainer.shap_values(images, ranked_outputs=1, check_additivity=False)
    values = torch.from_numpy(np.asarray(values, dtype=np.float32))
    values = values.reshape(len(images), *images.shape[1:])  # (B, C, H, W) of the top-1 output
    return values.sum(1), torch.as_tensor(np.asarray(ranks)).reshape(-1)


def evaluate_fidelity(model: nn.Module, layer: nn.Module, images: torch.Tensor, method: str,
                      percentiles: tuple[float, ...] = (1, 10), n_classes: int = 10, fill: float = 0.0,
                      background: torch.Tensor | None = None, ig_steps: int = 50, shap_samples: int = 50,
                      seed: int = 0) -> pd.DataFrame:
    """Fidelity (with its random-mask baseline) and contrastivity per image and percentile.

    The explained class is each image's top-1 prediction; contrastivity compares its map with the
    maps of the next ``n_classes - 1`` classes by score (all classes when ``n_classes`` is the
    number of outputs).

    Returns:
        Rows ``image, method, percentile, fidelity, fidelity_random, contrastivity, kept`` (kept: the
        share of the image's pixels in the explained class's mask).
    """
    with torch.no_grad():
        probs = F.softmax(model.eval()(images), dim=1)
    classes = probs.topk(n_classes, dim=1).indices
    before = probs.gather(1, classes[:, :1])[:, 0]
    maps = attribution_maps(method, model, layer, images, classes, background, ig_steps, shap_samples, seed)
    frames = []
    for p in percentiles:
        masks = positive_percentile_mask(maps, p)
        own = masks[:, 0]
        frames.append(pd.DataFrame({
            "image": np.arange(len(images)),
            "method": method,
            "percentile": p,
            "fidelity": fidelity(model, images, classes[:, 0], own, fill, before).numpy(),
            "fidelity_random": fidelity(model, images, classes[:, 0], random_masks_like(own, seed), fill, before).numpy(),
            "contrastivity": contrastivity(masks, 0).numpy() if n_classes > 1 else np.nan,
            "kept": own.flatten(1).float().mean(1).cpu().numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def summary_table(rows: pd.DataFrame, by: tuple[str, ...] = ("dataset", "model", "method", "percentile"),
                  level: float = 0.95) -> pd.DataFrame:
    """Means over images with bootstrap CIs (:func:`mean_ci`) of fidelity, its random-mask
    baseline and contrastivity; ``kept_%`` is the mean mask size."""
    out = []
    for key, group in rows.groupby(list(by), sort=False):
        row = dict(zip(by, key))
        row["images"] = group["image"].nunique()
        for column in ("fidelity", "fidelity_random", "contrastivity"):
            mean, low, high = mean_ci(group[column], level)
            row[column], row[f"{column}_lo"], row[f"{column}_hi"] = mean, low, high
        row["kept_%"] = 100 * float(group["kept"].astype(np.float64).mean())
        out.append(row)
    return pd.DataFrame(out)
