"""Occlusion maps and their rank correlation with an explanation map.

* Occlusion maps (Zeiler & Fergus 2014, "Visualizing and understanding convolutional networks",
  Sec. 4.2), with captum's ``Occlusion`` definition of the per-pixel value.
* :func:`compare_occlusion_backends`: both backends of :func:`occlusion_map` timed on the same
  inputs (a benchmark table; timings never go into result rows).
* Spearman rank correlation of a method's map with the occlusion map (Grad-CAM paper,
  Selvaraju et al. 2017, Sec. 5.2 / Table 2: over PASCAL VOC 2007 val, at 14 x 14).

All model scores here are softmax probabilities of the target class.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from gradcam_lib.methods import explanation_scope
from gradcam_lib.validate import check_map

__all__ = [
    "OCCLUSION_BACKENDS",
    "argsort_correlation",
    "class_probabilities",
    "compare_occlusion_backends",
    "occlusion_map",
    "perturbed_probabilities",
    "rank_correlation",
    "window_starts",
]

OCCLUSION_BACKENDS = ("ours", "captum")

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
    """``(n, size)`` bool: row i marks the pixels covered by window i along one side."""
    starts = torch.tensor(window_starts(size, patch, stride), device=device)
    pixels = torch.arange(size, device=device)
    return (pixels >= starts[:, None]) & (pixels < starts[:, None] + patch)


def perturbed_probabilities(
    model: nn.Module,
    count: int,
    batch_size: int,
    build: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
) -> torch.Tensor:
    """``(count,)`` target-class probabilities of ``count`` perturbed inputs, ``batch_size`` per
    forward pass (the only Python loop: over chunks, so memory stays that of one chunk).
    ``build(index)`` turns a chunk's ``(n,)`` input numbers into the ``(n, C, H, W)`` inputs, built
    with tensor ops on ``device``, and their ``(n,)`` target classes."""
    chunks = [
        class_probabilities(model, *build(torch.arange(start, min(start + batch_size, count), device=device)))
        for start in range(0, count, batch_size)
    ]
    return torch.cat(chunks) if chunks else torch.empty(0, device=device)


def _occlusion_ours(
    model: nn.Module, images: torch.Tensor, targets: torch.Tensor, patch: int, stride: int, fill: float, batch_size: int
) -> torch.Tensor:
    """Every (image, window) pair is one occluded input (Zeiler & Fergus 2014, Sec. 4.2); pair
    ``i`` is window ``i % n`` of image ``i // n`` (``n`` windows per image, row-major), and
    ``batch_size`` pairs, from one image or several, go through the model at a time. A chunk is
    built in one step: its windows' masks, the outer products (logical and) of the row and column
    window masks, broadcast over the channels, fill a gathered copy of the images in place. The
    window drops are spread back to the pixels each window covers and averaged:
    ``map = R^T D C / R^T 1 C`` with R, C the row / column window masks and D the drops."""
    batch, _, height, width = images.shape
    rows = _window_masks(height, patch, stride, images.device)
    cols = _window_masks(width, patch, stride, images.device)
    n_rows, n_cols = len(rows), len(cols)
    original = class_probabilities(model, images, targets)

    def occluded(pair: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        image, window = pair // (n_rows * n_cols), pair % (n_rows * n_cols)
        covered = rows[window // n_cols][:, None, :, None] & cols[window % n_cols][:, None, None, :]  # (n, 1, H, W)
        return images.index_select(0, image).masked_fill_(covered, fill), targets[image]

    probabilities = perturbed_probabilities(model, batch * n_rows * n_cols, batch_size, occluded, images.device)
    drops = original.repeat_interleave(n_rows * n_cols) - probabilities  # in the probabilities' dtype
    rows_f, cols_f = rows.to(drops.dtype), cols.to(drops.dtype)
    count = rows_f.T @ torch.ones(n_rows, n_cols, dtype=drops.dtype, device=images.device) @ cols_f
    spread = rows_f.T @ drops.view(batch, n_rows, n_cols) @ cols_f  # (B, H, W)
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
