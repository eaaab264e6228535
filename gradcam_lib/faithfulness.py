"""Faithfulness of explanation maps: do they follow what the model actually uses?

* Occlusion maps (Zeiler & Fergus 2014) and their rank correlation with a method's map (Grad-CAM
  paper Sec. 5.2 / Table 2: Spearman rank correlation over PASCAL VOC 2007 val).
* Average Drop % and % Increase in Confidence of the explanation map E = L * I (Grad-CAM++,
  Chattopadhyay et al. 2018, Sec. 6.1).
* Deletion and insertion curves and their areas (RISE, Petsiuk et al. 2018, Sec. 4.1).

All model scores here are softmax probabilities of the target class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import ndimage, stats
from torch import nn

from gradcam_lib.datasets.base import Sample
from gradcam_lib.methods import explanation_scope, heatmaps
from gradcam_lib.models import ModelEntry
from gradcam_lib.results import dataset_fingerprint, model_fingerprint, run_key, run_resumable
from gradcam_lib.stats import cluster_bootstrap_ci, mcnemar, mean_ci, paired_difference, wilson_ci
from gradcam_lib.validate import check_finite, check_map

__all__ = [
    "MEASURES",
    "OCCLUSION_BACKENDS",
    "argsort_correlation",
    "average_drop",
    "class_probabilities",
    "compare_occlusion_backends",
    "confidence_drop",
    "confidence_increased",
    "curve_auc",
    "curves_of",
    "deletion_insertion_curves",
    "evaluate_faithfulness",
    "explanation_map_confidence",
    "faithfulness_batch",
    "increase_in_confidence",
    "independent_units",
    "method_intervals",
    "occlusion_map",
    "paired_comparison",
    "per_image_measures",
    "rank_correlation",
    "rise_blur",
    "rise_kernel",
    "window_starts",
]

OCCLUSION_BACKENDS = ("ours", "captum")


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


def class_probabilities(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``(B,)`` softmax probability of each image's target class (no gradients)."""
    with torch.no_grad():
        return F.softmax(model(images), dim=1).gather(1, targets.view(-1, 1).to(images.device)).squeeze(1)


def window_starts(size: int, patch: int, stride: int) -> list[int]:
    """Top/left offsets of the sliding windows along one side, captum's rule: 0, s, 2s, ... until
    one reaches ``size - patch`` (ceil((size - patch) / s) + 1 windows); a last window that starts
    beyond ``size - patch`` is cut at the border."""
    if not 1 <= patch <= size:
        raise ValueError(f"patch {patch} must lie in [1, {size}]")
    if not 1 <= stride <= patch and size != patch:
        raise ValueError(f"stride {stride} must lie in [1, patch={patch}] (else pixels are never occluded)")
    count = int(np.ceil((size - patch) / stride)) + 1
    return [i * stride for i in range(count)]


def _window_masks(size: int, patch: int, stride: int, device: torch.device) -> torch.Tensor:
    """``(n, size)`` float: row i marks the pixels covered by window i along one side."""
    starts = torch.tensor(window_starts(size, patch, stride), device=device)
    pixels = torch.arange(size, device=device)
    return ((pixels >= starts[:, None]) & (pixels < starts[:, None] + patch)).float()


def _occlusion_ours(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, patch: int, stride: int, fill: float, batch_size: int
) -> torch.Tensor:
    """Every (image, window) pair is one occluded input; ``batch_size`` of them, from one image or
    several, go through the model at a time. The window drops are spread back to the pixels each
    window covers and averaged: ``map = R^T D C / R^T 1 C`` with R, C the row / column window masks
    and D the drops of the windows."""
    batch, _, height, width = images.shape
    rows = _window_masks(height, patch, stride, images.device)
    cols = _window_masks(width, patch, stride, images.device)
    n_rows, n_cols = len(rows), len(cols)
    total = batch * n_rows * n_cols
    drops = torch.empty(total, device=images.device)
    original = class_probabilities(model, images, targets)
    for start in range(0, total, batch_size):
        pair = torch.arange(start, min(start + batch_size, total), device=images.device)
        image, window = pair // (n_rows * n_cols), pair % (n_rows * n_cols)
        masks = (rows[window // n_cols][:, :, None] * cols[window % n_cols][:, None, :])[:, None]  # (n, 1, H, W)
        occluded = images[image] * (1 - masks) + fill * masks
        drops[pair] = original[image] - class_probabilities(model, occluded, targets[image])
    count = rows.T @ torch.ones(n_rows, n_cols, device=images.device) @ cols
    spread = rows.T @ drops.view(batch, n_rows, n_cols) @ cols  # (B, H, W)
    return spread / count


def _occlusion_captum(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, patch: int, stride: int, fill: float, batch_size: int
) -> torch.Tensor:
    """captum's ``Occlusion`` on the softmax output, one image at a time, ``batch_size`` windows per
    forward pass; channels are occluded together, so the map is any channel of its output."""
    from captum.attr import Occlusion

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        return F.softmax(model(x), dim=1)

    maps = []
    for image, target in zip(images, targets.view(-1).tolist(), strict=True):
        attribution = Occlusion(probabilities).attribute(
            image[None],
            sliding_window_shapes=(image.shape[0], patch, patch),
            strides=(image.shape[0], stride, stride),
            baselines=fill,
            target=target,
            perturbations_per_eval=batch_size,
        )
        maps.append(attribution[0, 0])
    return torch.stack(maps)


def occlusion_map(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    patch: int = 45,
    stride: int = 1,
    fill: float = 0.0,
    batch_size: int = 128,
    backend: str = "ours",
) -> torch.Tensor:
    """Occlusion map (Zeiler & Fergus 2014): slide a ``patch`` x ``patch`` square of value ``fill``
    over the image with step ``stride``; each pixel gets the mean, over the windows that cover it,
    of the drop in the target class's softmax probability, ``p(x) - p(x with the window occluded)``
    (captum's ``Occlusion`` definition, so both backends give the same map).

    Args:
        images: ``(B, 3, H, W)`` normalised; ``fill = 0`` is the data set mean (the KTH project's
            "0.5" was 0.5 in normalised space, i.e. mean + 0.5 std).
        targets: ``(B,)`` classes.
        patch, stride: 45 and 1 as the KTH project (stride 1 = every pixel a window corner:
            (H - 44)^2 = 32 400 forward passes for a 224 image).
        batch_size: windows per forward pass.
        backend: ``ours`` (batched masks, see :func:`_occlusion_ours`) or ``captum``.

    Returns:
        ``(B, H, W)``; positive where occluding lowers the class probability.
    """
    if backend not in OCCLUSION_BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {OCCLUSION_BACKENDS}")
    targets = torch.as_tensor(targets, dtype=torch.long, device=images.device).view(-1)
    if len(targets) != len(images):
        raise ValueError(f"targets must be (B,) with B={len(images)}")
    run = _occlusion_ours if backend == "ours" else _occlusion_captum
    with explanation_scope(model), torch.no_grad():
        return run(model, images.detach(), targets, patch, stride, fill, batch_size).detach()


# --------------------------------------------------------------------------------------------
# Rank correlation
# --------------------------------------------------------------------------------------------


def _resized(heatmap: torch.Tensor | np.ndarray, size: int) -> np.ndarray:
    values = torch.as_tensor(
        np.asarray(heatmap, dtype=np.float64) if not isinstance(heatmap, torch.Tensor) else heatmap
    )
    values = values.detach().cpu().to(torch.float64)
    check_map("map", values)
    return F.adaptive_avg_pool2d(values[None, None], size)[0, 0].numpy().ravel()


def rank_correlation(map_a: torch.Tensor | np.ndarray, map_b: torch.Tensor | np.ndarray, size: int = 14) -> float:
    """Spearman rank correlation of two maps (Grad-CAM paper Table 2): both are reduced to
    ``size`` x ``size`` by averaging over equal areas (``adaptive_avg_pool2d``; the paper and KTH
    compare at 14 x 14), the cells are ranked with ties given their average rank, and the Pearson
    correlation of the two rank vectors is returned.

    Returns:
        A value in [-1, 1]; NaN when either reduced map is constant (e.g. an all-zero Grad-CAM):
        a constant has no ranking, so the correlation is undefined -- count such maps apart.

    Raises:
        ValueError: a map that is not 2-D or holds NaN or infinity.
    """
    a, b = _resized(map_a, size), _resized(map_b, size)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = stats.rankdata(a), stats.rankdata(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def argsort_correlation(map_a: torch.Tensor | np.ndarray, map_b: torch.Tensor | np.ndarray, size: int = 14) -> float:
    """The KTH project's mistake, for comparison only: Spearman correlation of ``np.argsort`` of the
    two flattened maps. argsort gives the *positions* of the sorted cells, not the cells' ranks (its
    inverse permutation), so the value measures whether the two sortings visit similar cell
    numbers, not whether the maps agree."""
    a, b = _resized(map_a, size), _resized(map_b, size)
    return float(stats.spearmanr(np.argsort(a), np.argsort(b)).statistic)

# --------------------------------------------------------------------------------------------
# Explanation map E = L * I: Average Drop %, % Increase in Confidence (Grad-CAM++ Sec. 6.1)
# --------------------------------------------------------------------------------------------


def _unit(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each ``(H, W)`` map to [0, 1]; a constant map becomes all zeros."""
    flat = maps.flatten(1)
    low, high = flat.min(1).values, flat.max(1).values
    span = (high - low).clamp(min=torch.finfo(maps.dtype).tiny)
    return ((flat - low[:, None]) / span[:, None]).view_as(maps) * (high > low).to(maps.dtype)[:, None, None]


def explanation_map_confidence(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probability of the target on the image (Y) and on its explanation map (O).

    E = L * I as in Grad-CAM++: L is the map min-max normalised to [0, 1], I the image in pixel
    space ([0, 1], i.e. un-normalised with ``mean``/``std``); E is normalised again for the model,
    so unexplained regions turn black, as in the paper's Fig. 7.

    Returns:
        ``(Y (B,), O (B,))``.
    """
    m = torch.tensor(mean, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=images.device).view(1, 3, 1, 1)
    pixels = images * s + m
    explained = (pixels * _unit(maps.to(images.device))[:, None] - m) / s
    with explanation_scope(model):
        return class_probabilities(model, images, targets), class_probabilities(model, explained, targets)


def confidence_drop(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """``(B,)`` per-image term of the Average Drop, ``100 * max(0, Y - O) / Y`` (Grad-CAM++ Sec. 6.1,
    Chattopadhyay et al. 2018): Y the target's score on the image, O on its explanation map."""
    y, o = torch.as_tensor(y, dtype=torch.float64), torch.as_tensor(o, dtype=torch.float64)
    return 100 * (y - o).clamp(min=0) / y


def confidence_increased(y: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool per image, ``O > Y`` (the indicator of Grad-CAM++'s % Increase in Confidence)."""
    return torch.as_tensor(o, dtype=torch.float64) > torch.as_tensor(y, dtype=torch.float64)


def average_drop(y: torch.Tensor, o: torch.Tensor) -> float:
    """Average Drop % = 100 * mean_i(max(0, Y_i - O_i) / Y_i) (Grad-CAM++ Sec. 6.1; lower is better)."""
    return float(confidence_drop(y, o).mean())


def increase_in_confidence(y: torch.Tensor, o: torch.Tensor) -> float:
    """% Increase in Confidence = 100 * mean_i 1[Y_i < O_i] (Grad-CAM++ Sec. 6.1; higher is better)."""
    return float(100 * confidence_increased(y, o).double().mean())


# --------------------------------------------------------------------------------------------
# Deletion / insertion (RISE)
# --------------------------------------------------------------------------------------------


def rise_kernel(klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """RISE's blur kernel (``gkern`` in Petsiuk et al.'s ``evaluation.py``): a ``klen`` x ``klen``
    Dirac delta smoothed by ``scipy.ndimage.gaussian_filter(delta, nsig)`` (reflecting borders, so
    the kernel sums to 1 but is not a plain truncated Gaussian). ``(klen, klen)`` float64."""
    delta = np.zeros((klen, klen))
    delta[klen // 2, klen // 2] = 1.0
    return torch.from_numpy(ndimage.gaussian_filter(delta, nsig))


def rise_blur(images: torch.Tensor, klen: int = 11, nsig: float = 5.0) -> torch.Tensor:
    """RISE's insertion substrate: every channel convolved with :func:`rise_kernel` with *zero*
    padding of ``klen // 2`` (``conv2d(x, kern, padding=klen//2)`` on the normalised image, so the
    border fades towards 0, the data set mean). ``(B, C, H, W)`` -> same shape."""
    channels = images.shape[1]
    kernel = rise_kernel(klen, nsig).to(images).expand(channels, 1, klen, klen)
    return F.conv2d(images, kernel, padding=klen // 2, groups=channels)


def deletion_insertion_curves(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    n_steps: int = 32,
    blur_kernel: int = 11,
    blur_sigma: float = 5.0,
    batch_size: int = 64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RISE's causal metrics (Petsiuk et al. 2018, Sec. 4.1, and their ``CausalMetric``). Pixels are
    taken in descending map order (ties: stable sort, i.e. row-major order). **Deletion** sets the
    first k pixels to 0 (the data set mean in normalised space; RISE's ``torch.zeros_like``) and
    records p(class); **insertion** starts from :func:`rise_blur` (``blur_kernel``, ``blur_sigma``:
    RISE's 11 / 5) and puts the first k original pixels back. k goes from 0 to H*W in ``n_steps``
    equal steps (RISE: 224 pixels per step on 224 x 224, i.e. 224 steps, 225 points).

    Returns:
        ``(deletion (B, n_steps + 1), insertion (B, n_steps + 1))`` softmax probabilities.

    Raises:
        ValueError: ``images`` not ``(B, C, H, W)``, ``maps`` not ``(B, H, W)`` of the same B, H, W,
            a map with NaN or infinity, or ``targets`` not one class index per image.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, _c, h, w = images.shape
    if tuple(maps.shape) != (b, h, w):
        raise ValueError(f"maps must be (B, H, W) = {(b, h, w)} to match images {tuple(images.shape)}, "
                         f"got shape {tuple(maps.shape)}; give one 2-D map per image at the image's size")
    check_finite("maps", maps)
    targets = torch.as_tensor(targets, dtype=torch.long, device=images.device).view(-1)
    if len(targets) != b:
        raise ValueError(f"targets must be (B,) with B={b}, one class index per image, got {len(targets)}")
    order = torch.argsort(maps.to(images.device).reshape(b, -1), dim=1, descending=True, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(h * w, device=images.device).expand(b, -1))
    counts = torch.linspace(0, h * w, n_steps + 1, device=images.device).round().long()
    blurred = rise_blur(images, blur_kernel, blur_sigma)
    deletion: list[torch.Tensor] = []
    insertion: list[torch.Tensor] = []
    with explanation_scope(model):
        for index in range(b):
            chosen = (rank[index][None] < counts[:, None]).view(-1, 1, h, w).float()  # (n_steps + 1, 1, H, W)
            image = images[index][None]
            for start_image, fill, out in (
                (image, torch.zeros_like(image), deletion),
                (blurred[index][None], image, insertion),
            ):
                steps = start_image * (1 - chosen) + fill * chosen
                probs = torch.cat(
                    [
                        class_probabilities(
                            model, steps[i : i + batch_size], targets[index].expand(len(steps[i : i + batch_size]))
                        )
                        for i in range(0, len(steps), batch_size)
                    ]
                )
                out.append(probs)
    return torch.stack(deletion), torch.stack(insertion)


def curve_auc(curve: torch.Tensor | np.ndarray) -> np.ndarray:
    """Area under curves sampled at equal steps over [0, 1] (trapezoid rule, as RISE's ``auc``);
    ``(..., n)`` -> ``(...)``."""
    y = np.asarray(curve.detach().cpu() if isinstance(curve, torch.Tensor) else curve, dtype=np.float64)
    return (y.sum(-1) - y[..., 0] / 2 - y[..., -1] / 2) / (y.shape[-1] - 1)


# --------------------------------------------------------------------------------------------
# The chapter's protocol over a data set
# --------------------------------------------------------------------------------------------


def faithfulness_batch(
    entry: ModelEntry,
    images: torch.Tensor,
    samples: Sequence[Sample],
    methods: Sequence[str],
    causal_methods: Sequence[str] = ("gradcam", "gradcam_pp"),
    patch: int = 45,
    stride: int = 1,
    fill: float = 0.0,
    occlusion_batch: int = 128,
    size: int = 14,
    n_steps: int = 32,
    backend: str = "ours",
) -> list[dict[str, Any]]:
    """For the top-1 class of each image: the occlusion map, then per method of ``methods`` its
    :func:`rank_correlation` (and KTH's :func:`argsort_correlation`) with the occlusion map; for
    ``causal_methods`` also Y / O of the explanation map and the deletion / insertion curves
    (columns ``deletion_<k>``, ``insertion_<k>``) with their AUCs. Input-space maps are reduced to
    2-D by :func:`gradcam_lib.explain.heatmaps` (max over colour channels of the magnitude)."""
    with torch.no_grad():
        targets = entry.model(images).argmax(1)
    occlusion = occlusion_map(entry.model, images, targets, patch, stride, fill, occlusion_batch, backend).cpu()
    rows: list[dict[str, Any]] = []
    for method in dict.fromkeys([*methods, *causal_methods]):
        maps = heatmaps(method, entry.model, entry.layer, images, targets).detach()
        extra: list[dict[str, Any]] = [{} for _ in samples]
        if method in causal_methods:
            y, o = explanation_map_confidence(
                entry.model, images, targets, maps, entry.transform.mean, entry.transform.std
            )
            deletion, insertion = deletion_insertion_curves(entry.model, images, targets, maps, n_steps)
            for i in range(len(samples)):
                extra[i] = {"y": float(y[i]), "o": float(o[i]), "deletion_auc": float(curve_auc(deletion[i])),
                            "insertion_auc": float(curve_auc(insertion[i])),
                            **{f"deletion_{k}": float(v) for k, v in enumerate(deletion[i])},
                            **{f"insertion_{k}": float(v) for k, v in enumerate(insertion[i])}}
        maps = maps.cpu()
        for i, sample in enumerate(samples):
            correlates = method in methods
            rows.append({
                "image_id": sample.image_id,
                "method": method,
                "target": int(targets[i]),
                "rank_correlation": rank_correlation(maps[i], occlusion[i], size) if correlates else np.nan,
                "kth_argsort": argsort_correlation(maps[i], occlusion[i], size) if correlates else np.nan,
                **extra[i],
            })
    return rows


def evaluate_faithfulness(
    entry: ModelEntry,
    dataset: torch.utils.data.Dataset,
    dataset_name: str,
    results_dir: str | Path,
    batch_size: int = 4,
    device: str = "cpu",
    num_workers: int = 0,
    **settings: Any,
) -> pd.DataFrame:
    """:func:`faithfulness_batch` (keyword ``settings``) over ``dataset``, resumably, into
    ``results_dir/<model>_faithfulness_<dataset>_<settings hash>.csv``; returns all rows."""
    key = {"model": entry.name, "weights": model_fingerprint(entry.model), "layer": entry.layer_name,
           "dataset": dataset_name, "data": dataset_fingerprint(dataset),
           **{k: v for k, v in settings.items() if k not in ("occlusion_batch", "backend")}}
    path = Path(results_dir) / f"{entry.name}_faithfulness_{dataset_name}_{run_key(key)}.csv"
    rows = run_resumable(
        dataset,
        lambda images, samples: faithfulness_batch(entry, images, samples, **settings),
        path,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        description=f"{entry.name} faithfulness {dataset_name}",
    )
    return rows.assign(model=entry.name, dataset=dataset_name)


def curves_of(rows: pd.DataFrame, kind: str) -> pd.DataFrame:
    """Long table ``(image_id, method, fraction, probability)`` of the ``deletion`` or ``insertion``
    curves stored by :func:`faithfulness_batch`."""
    columns = [c for c in rows.columns if c.startswith(f"{kind}_") and c.removeprefix(f"{kind}_").isdigit()]
    long = rows.dropna(subset=columns).melt(id_vars=["image_id", "method"], value_vars=columns, var_name="step",
                                            value_name="probability")
    steps = long["step"].str.removeprefix(f"{kind}_").astype(int)
    return long.assign(fraction=steps / (len(columns) - 1)).drop(columns="step")


def independent_units(dataset: Any, image_ids: Sequence[str], targets: Sequence[int]) -> list[str]:
    """The independent unit behind each (image, explained class): for a
    :class:`~gradcam_lib.datasets.CompositeDataset` (or a ``Subset`` of one) the source object of
    the explained class (:meth:`~gradcam_lib.datasets.CompositeDataset.source_of`), or -- when the
    top-1 class is none of the pasted objects' -- the source of the first object pasted; for any
    other data set the image itself. Composites that paste the same crop are one cluster for
    :func:`gradcam_lib.stats.cluster_bootstrap_ci`."""
    from gradcam_lib.datasets import CompositeDataset

    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    if not isinstance(base, CompositeDataset):
        return [str(image_id) for image_id in image_ids]
    units = []
    for image_id, target in zip(image_ids, targets, strict=False):
        try:
            units.append(base.source_of(image_id, int(target)))
        except KeyError:
            index = int(str(image_id).rsplit("-", 1)[1])
            units.append(next(iter(base.sources(index).values())))
    return units


def per_image_measures(rows: pd.DataFrame) -> pd.DataFrame:
    """``rows`` of :func:`faithfulness_batch` with the per-image terms of Grad-CAM++'s measures added:
    ``drop`` (:func:`confidence_drop`, %) and ``increase`` (1.0 where O > Y, 0.0 where not, NaN where
    the method was not in ``causal_methods``)."""
    out = rows.copy()
    have = out["y"].notna() if "y" in out else pd.Series(False, index=out.index)
    out["drop"] = np.nan
    out["increase"] = np.nan
    if have.any():
        y, o = torch.tensor(out.loc[have, "y"].to_numpy()), torch.tensor(out.loc[have, "o"].to_numpy())
        out.loc[have, "drop"] = confidence_drop(y, o).numpy()
        out.loc[have, "increase"] = confidence_increased(y, o).double().numpy()
    return out


MEASURES: dict[str, str] = {
    "rank_correlation": "rank correlation with occlusion",
    "drop": "Average Drop %",
    "increase": "% Increase in Confidence",
    "deletion_auc": "deletion AUC",
    "insertion_auc": "insertion AUC",
}


def method_intervals(
    rows: pd.DataFrame, units: Mapping[str, str] | None = None, measures: Sequence[str] = tuple(MEASURES),
    confidence: float = 0.95, seed: int = 0,
) -> pd.DataFrame:
    """Mean of each measure per method with a ``confidence`` interval over independent units.

    ``rows``: :func:`per_image_measures` output. ``units``: image id -> unit
    (:func:`independent_units`); where two images share a unit, whole units are resampled
    (:func:`~gradcam_lib.stats.cluster_bootstrap_ci`, percentile); where every image is its own
    unit (or ``units`` is None), a BCa bootstrap of the mean (:func:`~gradcam_lib.stats.mean_ci`)
    and, for the share ``increase``, Wilson's interval. ``increase`` is reported in %, like the
    paper. NaN values (a constant map; a method without the measure) are left out.

    Returns:
        Long table ``(method, measure, mean, low, high, n, units, interval)``.
    """
    table = []
    for method, group in rows.groupby("method", sort=False):
        for measure in measures:
            if measure not in group:
                continue
            values = group[measure].to_numpy(dtype=np.float64)
            keep = ~np.isnan(values)
            if not keep.any():
                continue
            ids = group["image_id"].astype(str).to_numpy()[keep]
            groups = np.array([units[i] for i in ids] if units is not None else ids, dtype=object)
            values = values[keep]
            clustered = len(set(groups)) < len(groups)
            scale = 100.0 if measure == "increase" else 1.0
            if clustered:
                mean, low, high = cluster_bootstrap_ci(values, groups, confidence, seed=seed)
                kind = "cluster bootstrap"
            elif measure == "increase":
                mean, low, high = wilson_ci(values.astype(bool), confidence)
                kind = "Wilson"
            else:
                mean, low, high = mean_ci(values, confidence, seed)
                kind = "BCa bootstrap"
            table.append({"method": method, "measure": measure, "mean": scale * mean, "low": scale * low,
                          "high": scale * high, "n": int(keep.sum()), "units": len(set(groups)), "interval": kind})
    return pd.DataFrame(table, columns=["method", "measure", "mean", "low", "high", "n", "units", "interval"])


def paired_comparison(
    rows: pd.DataFrame, method_a: str, method_b: str, measure: str, units: Mapping[str, str] | None = None,
    confidence: float = 0.95, seed: int = 0,
) -> dict[str, Any]:
    """``measure`` of ``method_a`` minus ``method_b`` on the same images (paired by image id).

    A paired bootstrap of the mean difference (:func:`~gradcam_lib.stats.paired_difference`; by
    whole units where images share one); for the hit / miss ``increase``, McNemar's exact test on
    independent images and the clustered paired bootstrap of the difference of shares otherwise.
    ``increase`` differences are in percentage points.

    Returns:
        ``{a, b, measure, mean, low, high, n, shown, evidence}``; ``shown`` is True when the
        difference is established at ``confidence`` (interval excludes 0, or McNemar
        p < 1 - confidence); ``low`` / ``high`` are NaN for McNemar.
    """
    wide = rows[rows["method"].isin([method_a, method_b])].pivot_table(
        index="image_id", columns="method", values=measure, aggfunc="first", dropna=False)
    if method_a not in wide or method_b not in wide:
        raise KeyError(f"{measure!r} is missing for {method_a!r} or {method_b!r}")
    wide = wide[[method_a, method_b]].dropna()
    ids = wide.index.astype(str).to_numpy()
    groups = np.array([units[i] for i in ids] if units is not None else ids, dtype=object)
    clustered = len(set(groups)) < len(groups)
    a, b = wide[method_a].to_numpy(np.float64), wide[method_b].to_numpy(np.float64)
    result: dict[str, Any] = {"a": method_a, "b": method_b, "measure": measure, "n": len(ids)}
    if measure == "increase" and not clustered:
        test = mcnemar(a.astype(bool), b.astype(bool))
        result.update(mean=100 * test.difference, low=np.nan, high=np.nan, shown=test.p_value < 1 - confidence,
                      evidence=str(test))
        return result
    scale = 100.0 if measure == "increase" else 1.0
    diff = paired_difference(a, b, groups if clustered else None, confidence, seed)
    result.update(mean=scale * diff.mean, low=scale * diff.low, high=scale * diff.high, shown=diff.excludes_zero,
                  evidence=f"{scale * diff.mean:+.3g} [{scale * diff.low:+.3g}, {scale * diff.high:+.3g}], "
                           f"{'cluster' if clustered else 'paired'} bootstrap, n = {diff.n}"
                           + (f" images in {len(set(groups))} units" if clustered else ""))
    return result


def compare_occlusion_backends(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    patch: int = 45,
    stride: int = 1,
    fill: float = 0.0,
    batch_size: int = 128,
    repeats: int = 1,
) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """Time both occlusion backends on the same inputs and settings, in one process, alternating
    (ours, captum, ours, captum, ...) so that a change of machine load hits both; the best of
    ``repeats`` counts. One untimed forward pass of a full batch comes first, so that neither
    backend pays the one-time costs (kernel selection, allocator growth).

    Returns:
        ``(table, maps)``: per backend the wall seconds, the process's CPU seconds (all threads;
        on a shared CPU it is less affected by other processes than the wall time), forward passes
        per wall second and the largest absolute difference from the other backend's map;
        ``maps[backend]`` the maps.
    """
    import time

    windows = len(window_starts(images.shape[-2], patch, stride)) * len(window_starts(images.shape[-1], patch, stride))
    seconds: dict[str, float] = {b: float("inf") for b in OCCLUSION_BACKENDS}
    cpu: dict[str, float] = {b: float("inf") for b in OCCLUSION_BACKENDS}
    maps: dict[str, torch.Tensor] = {}
    with explanation_scope(model), torch.no_grad():
        model(images[:1].expand(min(batch_size, windows), -1, -1, -1))
    for _ in range(repeats):
        for backend in OCCLUSION_BACKENDS:
            start, start_cpu = time.perf_counter(), time.process_time()
            maps[backend] = occlusion_map(model, images, targets, patch, stride, fill, batch_size, backend)
            if images.is_cuda:
                torch.cuda.synchronize()
            seconds[backend] = min(seconds[backend], time.perf_counter() - start)
            cpu[backend] = min(cpu[backend], time.process_time() - start_cpu)
    difference = float((maps["ours"] - maps["captum"]).abs().max())
    table = pd.DataFrame(
        [
            {
                "backend": b,
                "images": len(images),
                "forwards": len(images) * windows,
                "seconds": seconds[b],
                "cpu_seconds": cpu[b],
                "forwards_per_s": len(images) * windows / seconds[b],
                "max_abs_diff": difference,
            }
            for b in OCCLUSION_BACKENDS
        ]
    )
    return table, maps
