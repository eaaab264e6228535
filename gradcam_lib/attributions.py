"""Input-attribution methods that the chapters compare with Grad-CAM, as thin wrappers of the
reference libraries: Integrated Gradients and GradientShap from captum, SHAP's expected gradients
from the ``shap`` library. Same shapes as :mod:`gradcam_lib.explain`: ``images (B, C, H, W)``,
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

import numpy as np
import torch
from captum.attr import GradientShap, IntegratedGradients
from torch import nn

from gradcam_lib.explain import explanation_scope

__all__ = ["integrated_gradients", "gradient_shap", "shap_expected_gradients"]


def _targets(targets: torch.Tensor, batch: int) -> torch.Tensor:
    targets = torch.as_tensor(targets, dtype=torch.long).view(-1)
    if targets.numel() != batch:
        raise ValueError(f"targets must be (B,) with B={batch}, got {targets.numel()} values")
    return targets


def integrated_gradients(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 50,
    baseline: torch.Tensor | float = 0.0,
    internal_batch_size: int | None = None,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017) by captum: (x - x') times the path integral
    of the gradient from the baseline x' (default: zeros, the "black" baseline in normalised space)
    to x, with ``steps`` Gauss-Legendre points; completeness: attributions sum to f(x) - f(x')."""
    targets = _targets(targets, len(images)).to(images.device)
    with explanation_scope(model):
        return IntegratedGradients(model).attribute(
            images.detach(), baselines=baseline, target=targets, n_steps=steps, internal_batch_size=internal_batch_size
        ).detach()


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
    torch.manual_seed(seed)
    with explanation_scope(model):
        return GradientShap(model).attribute(
            images.detach(), baselines=baselines.to(images.device), target=targets, n_samples=n_samples, stdevs=stdevs
        ).detach()


class _TargetLogit(nn.Module):
    """Exposes one logit, so SHAP differentiates only the class being explained."""

    def __init__(self, model: nn.Module, target: int) -> None:
        super().__init__()
        self.model = model
        self.target = target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)[:, self.target : self.target + 1]


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
    with explanation_scope(model):
        for image, target in zip(images.detach(), targets.tolist()):
            explainer = shap.GradientExplainer(_TargetLogit(model, target), background.to(images.device))
            values = explainer.shap_values(image[None], nsamples=n_samples, rseed=seed)
            rows.append(torch.from_numpy(np.asarray(values, dtype=np.float32)).reshape(image.shape))
    return torch.stack(rows).to(images.device)
