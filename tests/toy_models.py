"""Tiny models whose explanations are known in closed form, shared by the tests."""

from __future__ import annotations

import torch
from torch import nn


class ChannelMeans(nn.Module):
    """logit_c = mean of input channel c: Grad-CAM for class c is exactly ReLU(channel c)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(-2, -1))
