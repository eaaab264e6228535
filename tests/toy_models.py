"""Tiny models whose explanations are known in closed form, shared by the tests (the fixtures of
``conftest.py`` build entries from them; import the classes from here)."""

from __future__ import annotations

import torch
from torch import nn

from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.models import ModelEntry


class ChannelMeans(nn.Module):
    """logit_c = mean of input channel c: Grad-CAM for class c is exactly ReLU(channel c), and the
    FGSM step is known by hand. (A unit scale parameter, which changes no value: torchattacks reads
    the device from the model's parameters.)"""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(-2, -1)) * self.scale


def means_entry() -> ModelEntry:
    """:class:`ChannelMeans` as a model entry whose input is the pixels (identity normalisation)."""
    model = ChannelMeans()
    transform = ImageTransform(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    return ModelEntry("means", model, model.features, "features", transform, ("a", "b", "c"))


def toy_cnn(seed: int = 0, classes: int = 6) -> nn.Sequential:
    """conv-ReLU-conv-ReLU-pool-linear with seeded weights, in eval mode; the Grad-CAM layer is
    ``model[2]``."""
    with torch.random.fork_rng():  # the caller's global RNG is left as it was
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 3, padding=1), nn.ReLU(),
                              nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, classes))
    return model.eval()


def toy_entry(seed: int = 0) -> ModelEntry:
    """:func:`toy_cnn` as a model entry (layer ``"2"``, the default transform)."""
    model = toy_cnn(seed)
    return ModelEntry("toy", model, model[2], "2", ImageTransform(), tuple("abcdef"))
