"""Fidelity and contrastivity of attribution maps (chapter 7): the KTH project's formulas beside the
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
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from gradcam_lib.methods import attribute, canonical_key, explanation_scope, reduce_channels
from gradcam_lib.methods import labels as method_labels
from gradcam_lib.methods import maps as method_maps
from gradcam_lib.methods.attributions import IG_STEPS, first_class_converged_ig
from gradcam_lib.stats import mean_ci
from gradcam_lib.validate import check_targets

__all__ = [
    "ATTRIBUTION_METHODS",
    "IG_STEPS",
    "METRICS",
    "accuracy_drop",
    "attribution_maps",
    "contrastivity",
    "deep_shap_top1",
    "evaluate_fidelity",
    "fidelity",
    "ig_maps",
    "input_support",
    "mask_images",
    "normalised_saliency_mask",
    "pairwise_contrastivity",
    "positive_percentile_mask",
    "random_masks_like",
    "sign_flip_p",
    "summary_table",
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


def _probabilities(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
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
    after = _probabilities(model, mask_images(images, masks, fill))
    targets = check_targets("targets", targets, len(images), after.shape[1]).to(images.device)
    if before is None:
        before = _probabilities(model, images)[rows, targets]
    return (before - after[rows, targets]).cpu()


def _label_sets(labels: torch.Tensor | Sequence[Sequence[int]], batch: int) -> list[set[int]]:
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
    top = _probabilities(model, images).argmax(1).cpu().tolist()
    return torch.tensor([t in s for t, s in zip(top, _label_sets(labels, len(images)), strict=True)], dtype=torch.bool)


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


# --------------------------------------------------------------------------------------------
# Attribution maps
# --------------------------------------------------------------------------------------------

#: The chapter's methods under their older keys (a view of :mod:`gradcam_lib.methods`: ``gradcam``
#: is ``grad_cam``, ``ig`` is ``first_class_converged_ig``, ``shap`` is ``shap_expected_gradients``).
ATTRIBUTION_METHODS: dict[str, str] = method_labels(("gradcam", "ig", "shap"))


@contextmanager
def _numpy_global_rng_preserved() -> Iterator[None]:
    """``shap.DeepExplainer`` may seed numpy's *global* generator; restore the caller's state afterwards."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def ig_maps(model: nn.Module, images: torch.Tensor, classes: torch.Tensor,
            steps: int | Sequence[int] = IG_STEPS, baseline: float | torch.Tensor = 0.0,
            tolerance: float = 0.05, internal_batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Integrated Gradients maps ``(B, K, H, W)`` (channels summed) of ``classes (B, K)`` with the
    completeness gap of every map (``(B, K)``) and the step count used: the channel sum of
    :func:`gradcam_lib.attributions.first_class_converged_ig` (one count for the batch, converged on
    the first, explained class)."""
    values, gaps, count = first_class_converged_ig(model, images, classes, steps, baseline, tolerance,
                                                   internal_batch_size)
    return reduce_channels(values, "sum"), gaps, count


def _options(method: str, background: torch.Tensor | None, ig_steps: int | Sequence[int], shap_samples: int,
             seed: int, ig_baseline: float | torch.Tensor, ig_tolerance: float) -> dict[str, Any]:
    """The chapter's settings of ``method``, as options of its registered function."""
    key = canonical_key(method)
    if key == "first_class_converged_ig":
        return {"steps": ig_steps, "baseline": ig_baseline, "tolerance": ig_tolerance}
    if key == "shap_expected_gradients":
        if background is None:
            raise ValueError("SHAP needs a background sample")
        return {"background": background, "n_samples": shap_samples, "seed": seed}
    return {}


def attribution_maps(method: str, model: nn.Module, layer: nn.Module, images: torch.Tensor, classes: torch.Tensor,
                     background: torch.Tensor | None = None, ig_steps: int | Sequence[int] = IG_STEPS,
                     shap_samples: int = 50, seed: int = 0, ig_baseline: float | torch.Tensor = 0.0) -> torch.Tensor:
    """``(B, K, H, W)`` maps of ``classes (B, K)`` by a registered method (the chapter's:
    ``ATTRIBUTION_METHODS``), input-space maps summed over channels (``reduction="sum"``): Grad-CAM
    (upsampled, rectified), IG (:func:`ig_maps`, baseline ``ig_baseline`` in the model's input
    space) or SHAP (``shap.GradientExplainer`` over ``background``, the K classes as B * K images).
    numpy's global generator is left as it was.

    Raises:
        KeyError: an unknown method; ValueError: SHAP without ``background``.
    """
    options = _options(method, background, ig_steps, shap_samples, seed, ig_baseline, 0.05)
    return method_maps(method, model, layer, images, classes, reduction="sum", **options)


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


# --------------------------------------------------------------------------------------------
# The chapter's evaluation
# --------------------------------------------------------------------------------------------


def evaluate_fidelity(model: nn.Module, layer: nn.Module, images: torch.Tensor, method: str,
                      percentiles: tuple[float, ...] = (1, 10), n_classes: int = 10, fill: float = 0.0,
                      background: torch.Tensor | None = None, ig_steps: int | Sequence[int] = IG_STEPS,
                      shap_samples: int = 50, seed: int = 0,
                      labels: torch.Tensor | Sequence[Sequence[int]] | None = None,
                      pope_threshold: float = 0.01, random_draws: int = 8, ig_baseline: float | torch.Tensor = 0.0,
                      ig_tolerance: float = 0.05) -> pd.DataFrame:
    """Fidelity and contrastivity per image, under KTH's binarisation (one row per percentile, rule
    ``KTH``) and Pope et al.'s (one row, rule ``Pope``); every metric is computed for every row.

    The explained class is each image's top-1 prediction; KTH's contrastivity compares its map with
    the maps of the next ``n_classes - 1`` classes by score, Pope's with the top-2 class's.
    The nulls average ``random_draws`` random masks per image (uniform, and inside the support).

    Returns:
        Rows ``image, method, rule, level`` (percentile or threshold) and ``fidelity``,
        ``fidelity_uniform``, ``fidelity_support`` (probability drop of the map's mask and of the
        nulls), ``accuracy_drop``, ``accuracy_drop_uniform``, ``accuracy_drop_support`` (NaN
        without ``labels``), ``hit_before``, ``hit_after`` (top-1 correct on x and on x', 1 / 0;
        NaN without labels), ``contrastivity`` (KTH), ``contrastivity_pair`` (Pope, top-1 vs
        top-2; NaN when ``n_classes`` is 1), ``kept`` (share of the pixels in the mask),
        ``kept_support`` (share of the support in the mask), ``ig_gap`` (completeness gap of the
        explained class's IG map, NaN for other methods), ``ig_gap_other_max`` and ``ig_steps``.
    """
    probs = _probabilities(model, images)
    classes = probs.topk(n_classes, dim=1).indices
    before = probs.gather(1, classes[:, :1])[:, 0]
    explained = attribute(method, model, layer, images, classes, reduction="sum",
                          **_options(method, background, ig_steps, shap_samples, seed, ig_baseline, ig_tolerance))
    maps, gaps, steps_used = explained.maps, explained.info.get("gaps"), explained.info.get("steps", np.nan)
    support = input_support(images, fill)
    label_sets = _label_sets(labels, len(images)) if labels is not None else None
    rows_index = torch.arange(len(images), device=images.device)
    target = classes[:, 0]

    def outcomes(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward of the masked images: (probability drop of the explained class, hit after)."""
        after = _probabilities(model, mask_images(images, masks, fill))
        drop = (before - after[rows_index, target]).cpu()
        if label_sets is None:
            return drop, torch.full((len(images),), float("nan"))
        top = after.argmax(1).cpu().tolist()
        return drop, torch.tensor([float(t in s) for t, s in zip(top, label_sets, strict=True)])

    hits_before = (
        torch.tensor([float(t in s) for t, s in zip(probs.argmax(1).cpu().tolist(), label_sets, strict=True)])
        if label_sets is not None
        else torch.full((len(images),), float("nan"))
    )
    generator = torch.Generator().manual_seed(seed)
    n = len(images)
    binarisations = [("KTH", float(p), positive_percentile_mask(maps, p)) for p in percentiles]
    binarisations.append(("Pope", float(pope_threshold), normalised_saliency_mask(maps, pope_threshold)))
    frames = []
    for rule, level, masks in binarisations:
        own = masks[:, 0]
        row = {"image": np.arange(n), "method": method, "rule": rule, "level": level}
        drop, hits_after = outcomes(own)
        row["fidelity"], row["accuracy_drop"] = drop.numpy(), (hits_before - hits_after).numpy()
        row["hit_before"], row["hit_after"] = hits_before.numpy(), hits_after.numpy()
        for name, restrict in (("uniform", None), ("support", support)):
            draws = [outcomes(random_masks_like(own, generator, restrict)) for _ in range(random_draws)]
            row[f"fidelity_{name}"] = torch.stack([d for d, _ in draws]).mean(0).numpy()
            row[f"accuracy_drop_{name}"] = (hits_before - torch.stack([h for _, h in draws]).mean(0)).numpy()
        row["contrastivity"] = contrastivity(masks, 0).numpy() if n_classes > 1 else np.full(n, np.nan)
        row["contrastivity_pair"] = (
            pairwise_contrastivity(own, masks[:, 1]).numpy() if n_classes > 1 else np.full(n, np.nan)
        )
        row["kept"] = own.flatten(1).float().mean(1).cpu().numpy()
        row["kept_support"] = ((own & support).flatten(1).sum(1).float()
                               / support.flatten(1).sum(1).clamp(min=1).float()).cpu().numpy()
        row["ig_gap"] = gaps[:, 0].numpy() if gaps is not None else np.full(n, np.nan)
        row["ig_gap_other_max"] = (gaps[:, 1:].amax(1).numpy() if gaps is not None and n_classes > 1
                                   else np.full(n, np.nan))
        row["ig_steps"] = steps_used
        frames.append(pd.DataFrame(row))
    return pd.concat(frames, ignore_index=True)


METRICS: tuple[str, ...] = (
    "fidelity", "fidelity_uniform", "fidelity_support",
    "accuracy_drop", "accuracy_drop_uniform", "accuracy_drop_support",
    "contrastivity", "contrastivity_pair",
)


def summary_table(rows: pd.DataFrame, by: tuple[str, ...] = ("dataset", "model", "method", "rule", "level"),
                  level: float = 0.95, columns: tuple[str, ...] = METRICS) -> pd.DataFrame:
    """Means over images with bootstrap CIs (:func:`gradcam_lib.stats.mean_ci`, the images being
    the independent units) of ``columns``: ``<column>``, ``<column>_lo``, ``<column>_hi``;
    ``kept_%`` and ``kept_support_%`` are the mean mask sizes."""
    out = []
    for key, group in rows.groupby(list(by), sort=False):
        row = dict(zip(by, key, strict=True))
        row["images"] = group["image"].nunique()
        for column in columns:
            mean, low, high = mean_ci(group[column], level)
            row[column], row[f"{column}_lo"], row[f"{column}_hi"] = mean, low, high
        row["kept_%"] = 100 * float(group["kept"].astype(np.float64).mean())
        row["kept_support_%"] = 100 * float(group["kept_support"].astype(np.float64).mean())
        out.append(row)
    return pd.DataFrame(out)


def sign_flip_p(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, n_resamples: int = 9999,
                seed: int = 0) -> float:
    """Two-sided p-value of the paired sign-flip permutation test of ``mean(a - b) = 0`` (Fisher's
    randomisation test; ``scipy.stats.permutation_test`` with ``permutation_type="samples"``):
    exact, over all 2^n sign assignments, when 2^n <= ``n_resamples``, else seeded Monte Carlo.
    It needs no large-sample approximation, so it stays valid on the 7 photographs, where a
    bootstrap interval is too narrow. Pairs with a NaN are left out; no non-zero difference: 1."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    if not len(x) or np.all(x == y):
        return 1.0
    result = stats.permutation_test((x, y), lambda u, v, axis: np.mean(u - v, axis=axis), permutation_type="samples",
                                    vectorized=True, n_resamples=n_resamples, alternative="two-sided",
                                    rng=np.random.default_rng(seed))
    return float(result.pvalue)
