"""The pointing game (Zhang et al., Excitation Backprop, 2016; Grad-CAM paper Sec. 4.3; TorchRay).

Protocol, for every (image, ground-truth class) pair whose class still has a box in the model's
input: compute the class's map, take its maximum point, and count a **hit** when that point lies
within ``tolerance`` pixels (Euclidean, 15 by default, as TorchRay) of one of the class's boxes.
Accuracy is reported over all pairs and as TorchRay's mean over classes of the per-class accuracy.
The **centre baseline** points at the image centre whatever the class: a method that does not beat
it has not shown that it locates anything.

The paper's variant with **rejection** looks at the top-5 predicted classes of an image: a guess is
rejected when its map maximum is below a threshold ``tau``; an accepted guess is right when its
class is in the image and its point hits; a rejected guess is right when its class is absent. The
paper gave one number at one threshold (KTH: raw map maximum 0.5); :func:`rejection_curve` sweeps
``tau`` instead, since raw map scales differ between methods and models.

The **difficult** subset (EBP, used by TorchRay): pairs whose class covers less than a quarter of
the image (the union of its boxes) in an image that holds at least one other class. TorchRay reads
EBP's precomputed flags for VOC07 / COCO; :func:`is_difficult` applies the definition to any data
set, so the composite benchmark has a difficult subset too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from torch.utils.data import Dataset

from gradcam_lib.datasets.base import Sample
from gradcam_lib.explain import grad_cam_top_k, heatmaps
from gradcam_lib.models import ModelEntry
from gradcam_lib.results import dataset_fingerprint, run_key, run_resumable

__all__ = [
    "max_point",
    "box_distances",
    "pointing_hit",
    "centre_point",
    "is_difficult",
    "pointing_batch",
    "evaluate_pointing",
    "pointing_accuracy",
    "rejection_curve",
    "rejection_at",
]


def _values(heatmap: torch.Tensor | np.ndarray) -> torch.Tensor:
    values = torch.as_tensor(heatmap).detach().cpu().to(torch.float64)
    if values.dim() != 2:
        raise ValueError(f"heatmap must be (H, W), got shape {tuple(values.shape)}")
    if torch.isnan(values).any():
        raise ValueError("heatmap holds NaN; the explanation failed upstream")
    return values


def max_point(heatmap: torch.Tensor | np.ndarray) -> tuple[int, int] | None:
    """The map's maximum point ``(x, y)``; None for a constant map (it points nowhere).

    Ties: of all pixels equal to the maximum, the one nearest to their centroid (then the first in
    row-major order). Why: Grad-CAM maps are coarse maps upsampled bilinearly, which makes plateaus
    of exactly equal maxima -- 2 x 2 pixels around an interior peak, up to (s/2) x (s/2) pixels at a
    border peak for an upsampling factor s (16 x 16 for EfficientNet-Lite0's 7 x 7 map). numpy's /
    TorchRay's argmax takes the plateau's top-left pixel, shifting the point by up to s/2 pixels
    towards the image corner; the pixel nearest the centroid is the plateau's middle. For two
    separate equal peaks it picks one of them (never the empty space between them).

    Raises:
        ValueError: not 2-D, or NaN.
    """
    values = _values(heatmap)
    peak = values.max()
    if bool(peak == values.min()):
        return None
    ys, xs = torch.nonzero(values == peak, as_tuple=True)
    if len(xs) == 1:
        return int(xs[0]), int(ys[0])
    cx, cy = xs.double().mean(), ys.double().mean()
    nearest = int(torch.argmin((xs - cx) ** 2 + (ys - cy) ** 2))  # first minimum: row-major order
    return int(xs[nearest]), int(ys[nearest])


def box_distances(point: tuple[float, float], boxes: torch.Tensor | Sequence[Sequence[int]]) -> torch.Tensor:
    """Euclidean distance in pixels from ``point (x, y)`` to each inclusive box ``(xmin, ymin,
    xmax, ymax)`` (the box covers pixels xmin..xmax; a point on or inside it is at distance 0)."""
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    x, y = float(point[0]), float(point[1])
    dx = (b[:, 0] - x).clamp(min=0) + (x - b[:, 2]).clamp(min=0)
    dy = (b[:, 1] - y).clamp(min=0) + (y - b[:, 3]).clamp(min=0)
    return torch.sqrt(dx**2 + dy**2)


def pointing_hit(heatmap: torch.Tensor | np.ndarray, boxes: torch.Tensor | Sequence[Sequence[int]], tolerance: float = 15) -> bool:
    """Pointing game: is the map's maximum point (:func:`max_point`, see there for ties) within
    ``tolerance`` pixels of one of ``boxes``?

    Args:
        heatmap: ``(H, W)``, any scale.
        boxes: ``(N, 4)`` inclusive pixel boxes of the target class in the map's pixels.
        tolerance: distance <= tolerance is a hit, so 0 means "inside a box". TorchRay tests
            distance < tolerance, which differs only for points exactly ``tolerance`` away (offsets
            (15, 0), (12, 9), (9, 12) at 15 px) and makes tolerance 0 miss everything.

    Returns:
        False for a constant map (an all-zero Grad-CAM has no maximum point) or when no box is given.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    point = max_point(heatmap)
    if point is None or len(torch.as_tensor(boxes).reshape(-1, 4)) == 0:
        return False
    return bool((box_distances(point, boxes) <= tolerance).any())


def centre_point(height: int, width: int) -> tuple[float, float]:
    """The centre baseline's point: the image centre in pixel coordinates ((W - 1) / 2, (H - 1) / 2)."""
    return (width - 1) / 2, (height - 1) / 2


def _union_area(boxes: torch.Tensor, height: int, width: int) -> int:
    mask = torch.zeros(height, width, dtype=torch.bool)
    for x0, y0, x1, y1 in boxes.tolist():
        mask[max(y0, 0) : y1 + 1, max(x0, 0) : x1 + 1] = True
    return int(mask.sum())


def is_difficult(sample: Sample, label: int, fraction: float = 0.25) -> bool:
    """EBP's "difficult" pair: the class's boxes (their union) cover less than ``fraction`` of the
    image, and the image holds at least one other class."""
    height, width = sample.image.shape[-2:]
    others = set(sample.box_labels.tolist()) - {label}
    return bool(others) and _union_area(sample.boxes_of(label), height, width) < fraction * height * width


def _pairs(sample: Sample) -> list[int]:
    """Classes to play for: those with a box in the input, less those whose boxes are all marked
    PASCAL-difficult (TorchRay skips them; a sample without ``difficult`` flags has none)."""
    flags = getattr(sample, "difficult", None)
    classes = []
    for label in sorted(set(sample.box_labels.tolist())):
        if flags is not None and bool(flags[sample.box_labels == label].all()):
            continue
        classes.append(label)
    return classes


def pointing_batch(
    entry: ModelEntry,
    images: torch.Tensor,
    samples: Sequence[Sample],
    methods: Sequence[str],
    rejection_methods: Sequence[str] = (),
    top_k: int = 5,
    tolerance: float = 15,
) -> list[dict[str, Any]]:
    """Play the pointing game on one batch.

    For each method: maps of every ground-truth class (rows ``kind="gt"``) and, for the methods in
    ``rejection_methods``, of the ``top_k`` predictions (``kind="topk"``, with ``present`` and the
    map maximum ``peak`` for the rejection rule), in one call per method. The centre baseline adds a
    ``kind="gt"`` row per pair with ``method="centre"``.

    Returns:
        Rows ``image_id, method, kind, rank, label, present, difficult, hit, peak``.
    """
    height, width = images.shape[-2:]
    pairs = [_pairs(s) for s in samples]
    width_gt = max(1, max(len(p) for p in pairs))
    gt = torch.tensor([(p + p[:1] * width_gt)[:width_gt] if p else [0] * width_gt for p in pairs], device=images.device)
    with torch.no_grad():
        topk = entry.model(images).topk(top_k, dim=1).indices
    centre = centre_point(height, width)
    rows: list[dict[str, Any]] = []
    for index, sample in enumerate(samples):
        for label in pairs[index]:
            hit = bool((box_distances(centre, sample.boxes_of(label)) <= tolerance).any())
            rows.append(_row(sample, "centre", "gt", -1, label, True, hit, float("nan")))
    for method in methods:
        with_topk = method in rejection_methods
        targets = torch.cat([gt, topk], dim=1) if with_topk else gt
        if method == "gradcam" and with_topk:  # one forward pass for all K classes
            _, targets, maps = grad_cam_top_k(entry.model, entry.layer, images, top_k, also=gt)
            targets = torch.cat([targets[:, top_k:], targets[:, :top_k]], dim=1)
            maps = torch.cat([maps[:, top_k:], maps[:, :top_k]], dim=1)
        else:
            maps = heatmaps(method, entry.model, entry.layer, images, targets)
        maps, targets = maps.detach().cpu(), targets.cpu()
        for index, sample in enumerate(samples):
            for k, label in enumerate(pairs[index]):
                hit = pointing_hit(maps[index, k], sample.boxes_of(label), tolerance)
                rows.append(_row(sample, method, "gt", -1, label, True, hit, float(maps[index, k].max())))
            if with_topk:
                for rank in range(top_k):
                    k = width_gt + rank
                    label = int(targets[index, k])
                    present = label in pairs[index]
                    hit = present and pointing_hit(maps[index, k], sample.boxes_of(label), tolerance)
                    rows.append(_row(sample, method, "topk", rank, label, present, hit, float(maps[index, k].max())))
    return rows


def _row(sample: Sample, method: str, kind: str, rank: int, label: int, present: bool, hit: bool, peak: float) -> dict[str, Any]:
    return {
        "image_id": sample.image_id,
        "method": method,
        "kind": kind,
        "rank": rank,
        "label": label,
        "present": present,
        "difficult": present and is_difficult(sample, label),
        "hit": hit,
        "peak": peak,
    }


def pointing_accuracy(rows: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Pointing accuracy in % over the ``kind == "gt"`` rows, for all pairs and the difficult ones.

    Columns per group: ``acc_pairs`` (hits over all (image, class) pairs), ``acc_classes`` (mean
    over classes of each class's accuracy -- TorchRay's number), the same two on the difficult
    subset, and the counts of pairs and classes behind them.
    """
    gt = rows[rows["kind"] == "gt"]
    by = list(by)

    def summary(frame: pd.DataFrame) -> pd.Series:
        hard = frame[frame["difficult"]]
        per_class = frame.groupby("label")["hit"].mean()
        hard_class = hard.groupby("label")["hit"].mean()
        return pd.Series(
            {
                "acc_pairs": 100 * frame["hit"].mean(),
                "acc_classes": 100 * per_class.mean(),
                "difficult_pairs": 100 * hard["hit"].mean() if len(hard) else np.nan,
                "difficult_classes": 100 * hard_class.mean() if len(hard) else np.nan,
                "pairs": len(frame),
                "difficult_n": len(hard),
                "classes": frame["label"].nunique(),
            }
        )

    table = gt.groupby(by, sort=False)[["hit", "label", "difficult"]].apply(summary).reset_index()
    return table.astype({"pairs": int, "difficult_n": int, "classes": int})


def rejection_at(rows: pd.DataFrame, tau: float) -> dict[str, float]:
    """The rejection rule over ``kind == "topk"`` rows of one method at threshold ``tau``.

    A guess is accepted when ``peak >= tau``. ``accuracy`` = the paper's number: (accepted hits +
    correctly rejected absent classes) / guesses. ``precision`` = accepted hits / accepted guesses
    (1 when nothing is accepted). ``recall`` = accepted hits / guesses whose class is present.
    """
    top = rows[rows["kind"] == "topk"]
    accepted = top["peak"].to_numpy() >= tau
    hit = top["hit"].to_numpy(bool)
    present = top["present"].to_numpy(bool)
    true_accept = (accepted & hit).sum()
    return {
        "tau": float(tau),
        "accuracy": 100 * (true_accept + (~accepted & ~present).sum()) / max(len(top), 1),
        "precision": 100 * true_accept / accepted.sum() if accepted.any() else 100.0,
        "recall": 100 * true_accept / max(present.sum(), 1),
        "accepted": 100 * accepted.mean() if len(top) else np.nan,
    }


def rejection_curve(rows: pd.DataFrame) -> pd.DataFrame:
    """:func:`rejection_at` for every method at every distinct map maximum (plus one threshold
    above all of them), i.e. every point where the outcome can change; ``quantile`` is the share of
    that method's guesses below ``tau``, a scale comparable across methods."""
    frames = []
    for method, group in rows[rows["kind"] == "topk"].groupby("method", sort=False):
        peaks = np.sort(group["peak"].unique())
        taus = np.append(peaks, np.nextafter(peaks[-1], np.inf)) if len(peaks) else peaks
        curve = pd.DataFrame([rejection_at(group, tau) for tau in taus])
        curve["quantile"] = np.searchsorted(np.sort(group["peak"].to_numpy()), taus, side="left") / len(group)
        frames.append(curve.assign(method=method))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def evaluate_pointing(
    entry: ModelEntry,
    dataset: Dataset,
    dataset_name: str,
    results_dir: str | Path,
    methods: Sequence[str],
    rejection_methods: Sequence[str] = (),
    top_k: int = 5,
    tolerance: float = 15,
    batch_size: int = 16,
    device: str = "cpu",
    num_workers: int = 0,
) -> pd.DataFrame:
    """:func:`pointing_batch` over ``dataset``, resumably, into
    ``results_dir/<model>_pointing_<dataset>_<settings hash>.csv``; returns all rows."""
    settings = {"model": entry.name, "dataset": dataset_name, "data": dataset_fingerprint(dataset), "methods": list(methods),
                "rejection": list(rejection_methods), "top_k": top_k, "tolerance": tolerance}
    path = Path(results_dir) / f"{entry.name}_pointing_{dataset_name}_{run_key(settings)}.csv"
    rows = run_resumable(
        dataset,
        lambda images, samples: pointing_batch(entry, images, samples, methods, rejection_methods, top_k, tolerance),
        path,
        batch_size=batch_size,
        device=device,
        num_workers=num_workers,
        description=f"{entry.name} pointing {dataset_name}",
    )
    return rows.assign(model=entry.name, dataset=dataset_name)
