"""Input-attribution methods that the chapters compare with Grad-CAM, as thin wrappers of the
reference libraries: Integrated Gradients and GradientShap from captum, SHAP's expected gradients
from the ``shap`` library. Same shapes as :mod:`gradcam_lib.methods`: ``images (B, C, H, W)``,
``targets (B,)`` -> ``(B, C, H, W)``. Models run inside :func:`explanation_scope` (eval mode,
no parameter gradients, state restored).

Which SHAP explainer: ``shap.GradientExplainer`` (expected gradients, Erion et al. 2021; SHAP
values of the model linearised along paths from background samples). It needs only autograd, so
it is right for any differentiable network; ``shap.DeepExplainer`` applies DeepLIFT rules through
hooks on known module types and misses functional ops (``F.relu``, ReLU6 via ``F.hardtanh``), the
same blind spot as module-hooking Guided Backprop. Its cost is ``n_samples`` gradient evaluations
per image, for the target class only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

with warnings.catch_warnings():
    # captum imports tqdm.auto, whose notebook check warns (with this machine's paths) in every
    # kernel without ipywidgets; gradcam_lib shows no captum progress bars
    warnings.filterwarnings("ignore", message="IProgress not found")
    from captum.attr import GradientShap, IntegratedGradients

from gradcam_lib.methods.registry import register_method
from gradcam_lib.methods.scopes import explanation_scope

__all__ = [
    "black_baseline",
    "completeness_gap",
    "converged_ig",
    "converged_integrated_gradients",
    "first_class_converged_ig",
    "gradient_shap",
    "integrated_gradients",
    "shap_expected_gradients",
]


def _targets(targets: torch.Tensor, batch: int) -> torch.Tensor:
    targets = torch.as_tensor(targets, dtype=torch.long).view(-1)
    if targets.numel() != batch:
        raise ValueError(f"targets must be (B,) with B={batch}, got {targets.numel()} values")
    return targets


@register_method(label="Integrated Gradients", space="input", one_pass=False, per_class=True)
def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 50,
    baseline: torch.Tensor | float = 0.0,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017) by captum: (x - x') times the path integral
    of the gradient from the baseline x' to x, with ``steps`` Gauss-Legendre points; completeness:
    the attributions sum to f(x) - f(x') up to the quadrature error (:func:`completeness_gap`).

    The baseline is in the model's *input* space: the default 0.0 is black only for a model fed
    pixels in [0, 1]; for an ImageNet-normalised input, 0 is the data set's mean colour (grey), and
    black is ``(0 - mean) / std`` per channel (:func:`black_baseline`)."""
    targets = _targets(targets, len(images)).to(images.device)
    with explanation_scope(model):
        return IntegratedGradients(model).attribute(
            images.detach(), baselines=baseline, target=targets, n_steps=steps, internal_batch_size=internal_batch_size
        ).detach()


def black_baseline(mean: tuple[float, ...], std: tuple[float, ...], like: torch.Tensor) -> torch.Tensor:
    """The all-black image (pixel value 0) in the normalised space of ``(x - mean) / std``, shaped
    and placed like ``like`` ``(B, C, H, W)``."""
    m = torch.tensor(mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1)
    return ((0.0 - m) / s).expand_as(like).contiguous()


@torch.no_grad()
def completeness_gap(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    attributions: torch.Tensor,
    baseline: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """Relative completeness gap of path attributions (Sundararajan et al. 2017, Sec. 3 and their
    convergence check): ``|sum(attr) - (f(x) - f(x'))| / |f(x) - f(x')|`` per image, ``(B,)``;
    f is the target logit. Under 0.05 the integral is considered converged. Where
    ``f(x) = f(x')`` exactly the gap is the absolute ``|sum(attr)|``."""
    targets = _targets(targets, len(images)).to(images.device)
    base = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).expand_as(images)
    with explanation_scope(model), torch.no_grad():
        scores = model(images).gather(1, targets[:, None])[:, 0]
        base_scores = model(base).gather(1, targets[:, None])[:, 0]
    difference = (scores - base_scores).double()
    error = (attributions.flatten(1).double().sum(1) - difference).abs()
    scale = torch.where(difference == 0, torch.ones_like(difference), difference.abs())
    return (error / scale).float()


def converged_integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    baseline: torch.Tensor | float = 0.0,
    tolerance: float = 0.05,
    steps: tuple[int, ...] = (32, 64, 128, 256),
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """:func:`integrated_gradients` with the fewest ``steps`` whose largest completeness gap over
    the batch is under ``tolerance`` (Sundararajan et al.: 20-300 steps, within 5 %); when none is,
    the last (largest) is kept and its gap reported. Returns ``(attributions, gaps (B,), steps)``."""
    for count in steps:
        attributions = integrated_gradients(model, images, targets, count, baseline, internal_batch_size)
        gaps = completeness_gap(model, images, targets, attributions, baseline)
        if float(gaps.max()) < tolerance:
            break
    return attributions, gaps, count


#: The step schedule of :func:`first_class_converged_ig` (chapter 7's default).
IG_STEPS: tuple[int, ...] = (16, 32, 64, 128)


@register_method(label="Integrated Gradients", space="input", one_pass=False, returns=("gaps", "steps"),
                 aliases=("ig",))
def first_class_converged_ig(
    model: nn.Module,
    images: torch.Tensor,
    classes: torch.Tensor,
    steps: int | Sequence[int] = IG_STEPS,
    baseline: float | torch.Tensor = 0.0,
    tolerance: float = 0.05,
    internal_batch_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Integrated Gradients of ``classes (B, K)`` (or ``(B,)``) with one step count for the whole batch, chosen
    on the *first* class of each image: ``(attributions (B, K, C, H, W), gaps (B, K), steps used)``.

    ``steps``: one count, or increasing counts tried in turn until the largest completeness gap
    (:func:`completeness_gap`) of the maps of the first class (the explained class, whose mask
    fidelity removes) is under ``tolerance`` (Sundararajan et al. 2017: within 5 %); the last count
    is kept when none is. The other classes' gaps are returned, not required: where a logit barely
    differs between x and the baseline, the relative gap divides by a number near 0.
    ``internal_batch_size`` (captum's: path points per forward pass) defaults to about 4M input
    values per pass. A 4-D ``baseline`` is one per image. (Chapter 7's IG, ``fidelity.ig_maps``
    sums its channels; chapter 5 converges each map on its own: :func:`converged_ig`.)
    """
    single = classes.dim() == 1  # (B,): one class per image, maps (B, C, H, W) and gaps (B,)
    classes = classes.reshape(len(images), -1)
    batch, k = classes.shape
    if internal_batch_size is None:  # about 4M input values per forward pass along the path
        internal_batch_size = max(1, 2**22 // images[0].numel())
    repeated = images.repeat_interleave(k, dim=0)
    flat = classes.reshape(-1).to(images.device)
    base = (
        baseline.repeat_interleave(k, dim=0) if isinstance(baseline, torch.Tensor) and baseline.dim() == 4 else baseline
    )
    schedule = (steps,) if isinstance(steps, int) else tuple(steps)
    for count in schedule:
        values = integrated_gradients(model, repeated, flat, count, base, internal_batch_size)
        gaps = completeness_gap(model, repeated, flat, values, base).view(batch, k).cpu()
        if float(gaps[:, 0].max()) < tolerance:
            break
    values = values.view(batch, k, *images.shape[1:])
    return (values[:, 0], gaps[:, 0], count) if single else (values, gaps, count)


@register_method(label="Integrated Gradients (converged per map)", space="input", one_pass=False, per_class=True,
                 returns=("gaps", "steps"))
def converged_ig(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, baseline: torch.Tensor,
                 steps: Sequence[int] = (32, 64, 128, 256), tolerance: float = 0.05,
                 internal_batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Integrated Gradients converged *per map*: each image gets the first count of ``steps``
    whose completeness gap (:func:`completeness_gap`) is under ``tolerance`` (Sundararajan et al.
    2017: within 5 %); only the images not yet converged are recomputed with the next count, and
    those still above it at the last count keep that count and report their gap. Each map is what
    :func:`converged_integrated_gradients` gives for that image alone with the schedule ``steps``.
    ``baseline`` is one per image (or broadcastable to ``images``). (Chapter 5's IG.)

    Returns:
        ``(attributions (B, C, H, W), gaps (B,), steps used (B,) long)``.
    """
    if not len(steps):
        raise ValueError("steps must hold at least one step count")
    baseline = baseline.expand_as(images)
    attributions = torch.zeros_like(images)
    gaps = torch.full((len(images),), float("nan"))
    used = torch.zeros(len(images), dtype=torch.long)
    remaining = torch.arange(len(images))
    for count in steps:
        index = remaining.to(images.device)
        values, gap, _ = converged_integrated_gradients(model, images[index], targets[index], baseline[index],
                                                        tolerance, (int(count),), internal_batch_size)
        attributions[index] = values
        gaps[remaining] = gap.cpu().float()
        used[remaining] = int(count)
        remaining = remaining[gap.cpu() >= tolerance]
        if not len(remaining):
            break
    return attributions, gaps, used


@register_method(label="GradientShap", space="input", one_pass=False, per_class=True)
def gradient_shap(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    baselines: torch.Tensor,
    n_samples: int = 20,
    stdevs: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """captum's GradientShap (what the KTH project called SHAP): expected gradients with baselines
    drawn from ``baselines (N, C, H, W)`` and random points on the straight path; seeded."""
    targets = _targets(targets, len(images)).to(images.device)
    devices = [images.device] if images.device.type == "cuda" else []
    # captum draws the baselines and path points from numpy's global RNG, the noise from torch's:
    # both are seeded here and restored on exit, so the caller's RNG state is untouched
    with torch.random.fork_rng(devices=devices), numpy_rng_fork(seed), explanation_scope(model):
        torch.manual_seed(seed)
        return GradientShap(model).attribute(
            images.detach(), baselines=baselines.to(images.device), target=targets, n_samples=n_samples, stdevs=stdevs
        ).detach()


@contextmanager
def numpy_rng_fork(seed: int) -> Iterator[None]:
    """numpy's *global* RNG seeded by ``seed`` inside the block and restored after, as
    :func:`torch.random.fork_rng` does for torch (for libraries that draw from it, as captum's
    GradientShap does with ``np.random.uniform`` / ``np.random.choice``)."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


class _TargetLogit(nn.Module):
    """Exposes one logit, so SHAP differentiates only the class being explained."""

    def __init__(self, model: nn.Module, target: int) -> None:
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.target : self.target + 1]


@register_method(label="SHAP (GradientExplainer)", space="input", one_pass=False, per_class=True,
                 aliases=("shap",))
def shap_expected_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    background: torch.Tensor,
    n_samples: int = 50,
    seed: int = 0,
) -> torch.Tensor:
    """SHAP values of the target logit by ``shap.GradientExplainer`` (see the module docstring for
    why this explainer), with ``background (N, C, H, W)`` as the reference distribution; seeded."""
    import shap

    targets = _targets(targets, len(images))
    rows = []
    with explanation_scope(model), numpy_rng_fork(seed):  # shap reseeds numpy's global RNG: restored after
        for image, target in zip(images.detach(), targets.tolist(), strict=True):
            explainer = shap.GradientExplainer(_TargetLogit(model, target), background.to(images.device))
            values = explainer.shap_values(image[None], nsamples=n_samples, rseed=seed)
            rows.append(torch.from_numpy(np.asarray(values, dtype=np.float32)).reshape(image.shape))
    return torch.stack(rows).to(images.device)
