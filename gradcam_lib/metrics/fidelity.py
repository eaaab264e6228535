"""Fidelity and contrastivity of attribution maps: the KTH project's formulas beside the
definitions of Pope et al. (CVPR 2019, "Explainability methods for graph convolutional neural
networks", Sec. 4.3), whom the KTH project followed.

Binarisation
    * KTH: a map keeps the pixels *above the p-th percentile of its positive values* (numpy's
      linear-interpolation percentile); no positive value, nothing kept (:func:`positive_percentile_mask`).
    * Pope et al.: a map keeps the features whose *normalised* saliency, on a scale 0 to 1, is above
      a threshold (0.01 in the paper): ``m / max(m) > t`` (:func:`normalised_saliency_mask`). Their
      maps are non-negative; for signed maps (IG, SHAP) negative values stay below every t >= 0.

Fidelity (x' = x with the kept pixels set to ``fill`` in every channel, :func:`mask_images`)
    * KTH: p(y | x) - p(y | x'), per image, then the mean (:func:`fidelity`).
    * Pope et al.: the drop in *accuracy*, acc(x) - acc(x'), i.e. the mean over images of
      1[top-1(x) correct] - 1[top-1(x') correct] (:func:`accuracy_drop`).

Contrastivity
    * Pope et al. (two classes a, b): d_H(B_a, B_b) / |B_a or B_b|, the Hamming distance of the two
      binarised maps normalised by the number of features that either selects (0 when both are
      empty) (:func:`pairwise_contrastivity`). On a K-class problem we take the top-1 and the top-2
      class.
    * KTH: the mean of that ratio over the other K - 1 classes (:func:`contrastivity`).

Null of the fidelity: a random mask. A *uniform* random mask of the map's size can be a null that no
map fails to beat: on MNIST most pixels are the black background, and filling them with black
changes nothing. So beside it we draw random masks *inside the support*, the pixels that filling
changes (:func:`input_support`), holding as many support pixels as the map's mask does
(:func:`random_masks_like` with ``support``): the same number of changed input values, placed at
random where a change is possible.

Input-space attributions (IG, SHAP) are reduced to one map per pixel by summing the channels (KTH
kept channel 0 only, i.e. red on CIFAR-10).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradcam_lib.methods import canonical_key, explanation_scope
from gradcam_lib.validate import check_targets

__all__ = [
    "accuracy_drop",
    "contrastivity",
    "deep_shap_top1",
    "fidelity",
    "input_support",
    "label_sets",
    "mask_images",
    "method_options",
    "normalised_saliency_mask",
    "pairwise_contrastivity",
    "positive_percentile_mask",
    "probabilities",
    "random_masks_like",
    "top1_hits",
]


# --------------------------------------------------------------------------------------------
# Binarisation
# --------------------------------------------------------------------------------------------


def positive_percentile_mask(maps: torch.Tensor, percentile: float) -> torch.Tensor:
    """KTH's binarisation: ``maps (..., H, W)`` -> bool masks ``map > percentile_p(map[map > 0])``.

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


def normalised_saliency_mask(maps: torch.Tensor, threshold: float = 0.01) -> torch.Tensor:
    """Pope et al.'s binarisation: ``maps (..., H, W)`` -> ``map / max(map) > threshold`` per map
    (saliency on a scale 0 to 1; 0.01 in the paper). A map whose maximum is <= 0 keeps nothing.

    Raises:
        ValueError: ``threshold`` outside [0, 1) or a NaN in ``maps``.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold must lie in [0, 1), got {threshold}")
    if torch.isnan(maps).any():
        raise ValueError("attribution maps contain NaN")
    flat = maps.flatten(-2).double()
    peak = flat.amax(-1, keepdim=True)
    keep = (peak > 0) & (flat > threshold * peak)  # m / max > t without dividing by a zero max
    return keep.view(maps.shape)


# --------------------------------------------------------------------------------------------
# Masks and their null
# --------------------------------------------------------------------------------------------


def input_support(images: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``images (B, C, H, W)`` -> ``(B, H, W)`` bool: the pixels that setting to ``fill`` changes
    (some channel differs from ``fill``); on MNIST with fill 0, the stroke pixels."""
    return (images != fill).any(1)


def random_masks_like(masks: torch.Tensor, seed: int | torch.Generator = 0,
                      support: torch.Tensor | None = None) -> torch.Tensor:
    """For each mask ``(..., H, W)`` a random mask, seeded (an int seed or a ``torch.Generator``).

    Without ``support``: uniform over the image with the same number of pixels. With ``support``
    (bool, broadcastable to ``masks``): uniform over the support, with as many pixels as the mask
    holds *inside* the support, and none outside it.
    """
    generator = seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(seed)
    flat = masks.flatten(-2).cpu()
    scores = torch.rand(flat.shape, generator=generator)
    if support is None:
        counts = flat.sum(-1, keepdim=True)
    else:
        inside = torch.broadcast_to(support.cpu(), masks.shape).flatten(-2)
        counts = (flat & inside).sum(-1, keepdim=True)
        scores = torch.where(inside, scores, scores + 2.0)  # outside pixels rank after every inside one
    ranks = scores.argsort(-1).argsort(-1)
    return (ranks < counts).view(masks.shape).to(masks.device)


def mask_images(images: torch.Tensor, masks: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """``images (B, C, H, W)`` with the pixels of ``masks (B, H, W)`` set to ``fill`` in every channel."""
    return torch.where(masks[:, None], torch.full_like(images, fill), images)


# --------------------------------------------------------------------------------------------
# Fidelity (KTH: probability drop; Pope et al.: accuracy drop)
# --------------------------------------------------------------------------------------------


def probabilities(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """``(B, K)`` softmax outputs, without gradients, in eval mode; the model's state is restored."""
    with explanation_scope(model), torch.no_grad():  # eval mode inside, the caller's state restored
        return F.softmax(model(images), dim=1)


def fidelity(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, masks: torch.Tensor,
             fill: float = 0.0, before: torch.Tensor | None = None) -> torch.Tensor:
    """KTH's fidelity before the mean: per image ``p(y | x) - p(y | x')``, x' = :func:`mask_images`;
    ``before``: p(y | x) when already known. The model's train / eval state is left as it was.

    Raises:
        ValueError: ``targets`` not ``(B,)`` whole class indices in ``[0, K)`` of the model's K
            outputs (-1 would silently explain the last class, 1.7 class 1).
    """
    rows = torch.arange(len(images), device=images.device)
    after = probabilities(model, mask_images(images, masks, fill))
    targets = check_targets("targets", targets, len(images), after.shape[1]).to(images.device)
    if before is None:
        before = probabilities(model, images)[rows, targets]
    return (before - after[rows, targets]).cpu()


def label_sets(labels: torch.Tensor | Sequence[Sequence[int]], batch: int) -> list[set[int]]:
    """One set of classes per image: ``labels`` ``(B,)`` or one sequence of classes per image."""
    if isinstance(labels, torch.Tensor):
        sets = [{int(v)} for v in labels.view(-1).tolist()]
    else:
        # a bare class index per image (outside the declared type) is taken as a one-class set
        sets = [{int(v) for v in (row if isinstance(row, (list, tuple, set)) else [row])}  # type: ignore[arg-type]
                for row in labels]
    if len(sets) != batch:
        raise ValueError(f"expected {batch} labels, got {len(sets)}")
    return sets


def top1_hits(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    """``(B,)`` bool: the top-1 class is one of the image's labels (``labels``: ``(B,)`` or one
    sequence of classes per image)."""
    top = probabilities(model, images).argmax(1).cpu().tolist()
    return torch.tensor([t in s for t, s in zip(top, label_sets(labels, len(images)), strict=True)], dtype=torch.bool)


def accuracy_drop(model: nn.Module, images: torch.Tensor, labels: torch.Tensor | Sequence[Sequence[int]],
                  masks: torch.Tensor, fill: float = 0.0, before: torch.Tensor | None = None) -> torch.Tensor:
    """Pope et al.'s fidelity before the mean: per image ``1[top-1(x) correct] - 1[top-1(x')
    correct]`` in {-1, 0, 1}; its mean over images is acc(x) - acc(x'). ``before``: the hits on x."""
    if before is None:
        before = top1_hits(model, images, labels)
    after = top1_hits(model, mask_images(images, masks, fill), labels)
    return before.float() - after.float()


# --------------------------------------------------------------------------------------------
# Contrastivity
# --------------------------------------------------------------------------------------------


def pairwise_contrastivity(masks_a: torch.Tensor, masks_b: torch.Tensor) -> torch.Tensor:
    """Pope et al.'s contrastivity of two binarised maps ``(B, H, W)`` per image:
    ``d_H(B_a, B_b) / |B_a or B_b|`` (0 when both are empty)."""
    differ = (masks_a ^ masks_b).flatten(1).sum(-1).double()
    union = (masks_a | masks_b).flatten(1).sum(-1).double()
    return torch.where(union > 0, differ / union.clamp(min=1), torch.zeros_like(union)).cpu()


def contrastivity(masks: torch.Tensor, target_index: torch.Tensor | int = 0) -> torch.Tensor:
    """KTH's contrastivity. ``masks (B, K, H, W)``: the binarised maps of K classes per image, the
    explained class at position ``target_index`` (per image or shared). Returns ``(B,)``: the mean
    over the other K - 1 classes of Hamming(B_y, B_j) / |B_y union B_j| (0 for an empty union)."""
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


@contextmanager
def _numpy_global_rng_preserved() -> Iterator[None]:
    """``shap.DeepExplainer`` may seed numpy's *global* generator; restore the caller's state afterwards."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def method_options(method: str, background: torch.Tensor | None, ig_steps: int | Sequence[int], shap_samples: int,
                   seed: int, ig_baseline: float | torch.Tensor = 0.0, ig_tolerance: float = 0.05) -> dict[str, Any]:
    """The chapter's settings of ``method`` as options of its registered function in
    :mod:`gradcam_lib.methods` (for :func:`gradcam_lib.methods.maps` / ``attribute``): IG
    (``first_class_converged_ig``) its step counts, baseline and tolerance; SHAP
    (``shap_expected_gradients``) its background, sample count and seed; others none.

    Raises:
        ValueError: SHAP without ``background``.
    """
    key = canonical_key(method)
    if key == "first_class_converged_ig":
        return {"steps": ig_steps, "baseline": ig_baseline, "tolerance": ig_tolerance}
    if key == "shap_expected_gradients":
        if background is None:
            raise ValueError("SHAP needs a background sample")
        return {"background": background, "n_samples": shap_samples, "seed": seed}
    return {}


def deep_shap_top1(
    model: nn.Module, images: torch.Tensor, background: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``shap.DeepExplainer`` (DeepLIFT rules with a background distribution; what KTH used) for
    each image's top-1 logit: ``(maps (B, H, W) summed over channels, classes (B,))``. Only for
    networks made of the module types it knows (nn.ReLU, nn.MaxPool2d, ...), as :class:`SmallCNN`."""
    import shap

    with explanation_scope(model), _numpy_global_rng_preserved():
        explainer = shap.DeepExplainer(model, background)
        values, ranks = explainer.shap_values(images, ranked_outputs=1, check_additivity=False)
    values = torch.from_numpy(np.asarray(values, dtype=np.float32))
    values = values.reshape(len(images), *images.shape[1:])  # (B, C, H, W) of the top-1 output
    return values.sum(1), torch.as_tensor(np.asarray(ranks)).reshape(-1)


