"""Checks of the values that enter the metrics: maps, boxes and class targets.

Each check is called once, where a value enters a public function, and raises a ``ValueError`` that
names the argument and says what was expected, instead of a NaN result or an error from deep inside
numpy / torch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["check_box", "check_boxes", "check_finite", "check_map", "check_targets"]


def check_finite(name: str, values: torch.Tensor | np.ndarray) -> None:
    """Refuse NaN and +-inf anywhere in ``values`` (a map that holds them has no ranking, no
    maximum point and no threshold: the explanation failed upstream)."""
    finite = torch.isfinite(values).all() if isinstance(values, torch.Tensor) else np.isfinite(values).all()
    if not bool(finite):
        raise ValueError(f"{name} holds NaN or infinity; the explanation failed upstream")


def check_map(name: str, values: torch.Tensor | np.ndarray) -> None:
    """Refuse a map that is not ``(H, W)`` or is not finite (:func:`check_finite`)."""
    if values.ndim != 2:
        raise ValueError(f"{name} must be (H, W), got shape {tuple(values.shape)}")
    check_finite(name, values)


def check_boxes(
    name: str, boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]] | Sequence[float]
) -> np.ndarray:
    """``boxes`` as an ``(N, 4)`` float64 array of inclusive pixel boxes ``(xmin, ymin, xmax, ymax)``.

    Raises:
        ValueError: not four coordinates per box, a coordinate that is not a finite number, or an
            inverted box (``xmin > xmax`` or ``ymin > ymax``; a one-pixel box has ``xmin == xmax``).
    """
    values = boxes.detach().cpu().numpy() if isinstance(boxes, torch.Tensor) else boxes
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must hold (xmin, ymin, xmax, ymax) numbers, got {boxes!r}") from error
    if array.size == 0:
        return array.reshape(0, 4)
    if array.shape[-1] != 4 or array.ndim > 2:
        raise ValueError(f"{name} must be (N, 4) boxes (xmin, ymin, xmax, ymax), got shape {array.shape}")
    array = array.reshape(-1, 4)
    if not np.isfinite(array).all():
        raise ValueError(f"{name} holds NaN or infinity: {array[~np.isfinite(array).all(1)][0].tolist()}")
    inverted = (array[:, 0] > array[:, 2]) | (array[:, 1] > array[:, 3])
    if inverted.any():
        raise ValueError(f"{name} holds an inverted box {array[inverted][0].tolist()} (xmin > xmax or ymin > ymax); "
                         f"boxes are inclusive (xmin, ymin, xmax, ymax) pixel corners")
    return array


def check_box(name: str, box: Sequence[float] | torch.Tensor | np.ndarray) -> None:
    """Refuse anything but one valid box ``(xmin, ymin, xmax, ymax)`` (:func:`check_boxes`)."""
    if check_boxes(name, box).shape[0] != 1:
        raise ValueError(f"{name} must be one box (xmin, ymin, xmax, ymax), got {box!r}")


def check_targets(name: str, targets: torch.Tensor | Sequence[int], batch: int, n_classes: int) -> torch.Tensor:
    """``targets`` as a ``(batch,)`` long tensor of class indices in ``[0, n_classes)``.

    Raises:
        ValueError: another shape, a fractional value (1.7 is not class 1) or an index outside the
            model's classes (a negative index would silently pick a class from the end).
    """
    values = torch.as_tensor(targets).detach().cpu()
    if values.dtype == torch.bool or values.is_complex():
        raise ValueError(f"{name} must hold integer class indices, got dtype {values.dtype}")
    values = values.reshape(-1) if values.dim() <= 1 else values
    if values.dim() != 1 or len(values) != batch:
        raise ValueError(
            f"{name} must be (B,) = ({batch},), one class index per image, got shape {tuple(values.shape)}"
        )
    if values.is_floating_point():
        whole = torch.isfinite(values) & (values == values.round())
        if not bool(whole.all()):
            raise ValueError(f"{name} must hold whole class indices, got {values[~whole][0].item()}")
    outside = (values < 0) | (values >= n_classes)
    if bool(outside.any()):
        raise ValueError(
            f"{name} must be class indices in [0, {n_classes}) for this model, got {values[outside][0].item()}"
        )
    return values.long()


def check_maps_for_images(
    images: torch.Tensor, maps: torch.Tensor, targets: torch.Tensor | Sequence[int] | int
) -> tuple[int, int, int, torch.Tensor]:
    """For the perturbation metrics: ``images (B, C, H, W)``, one finite 2-D map ``(B, H, W)`` per
    image and one class index per image; returns ``(B, H, W, targets (B,) long on the images' device)``.

    Raises:
        ValueError: a shape that does not fit (the message gives both shapes), a non-finite map or
            not one target per image.
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
    return b, h, w, targets
