"""Shared fixtures: the toy models of ``toy_models.py`` (one definition each) as fixtures."""

from __future__ import annotations

import pytest
import torch
from toy_models import ChannelMeans, means_entry, toy_cnn, toy_entry

from gradcam_lib.models import ModelEntry


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked ``cuda`` when torch sees no CUDA device (``bench/device_check.sh`` runs
    them on a GPU machine: ``pytest -m cuda``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is false")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture
def channel_means() -> ChannelMeans:
    return ChannelMeans()


@pytest.fixture
def channel_means_entry() -> ModelEntry:
    return means_entry()


@pytest.fixture
def cnn() -> torch.nn.Sequential:
    return toy_cnn()


@pytest.fixture
def cnn_entry() -> ModelEntry:
    return toy_entry()


@pytest.fixture
def toy_images() -> torch.Tensor:
    """Three seeded 12 x 12 images for :func:`toy_cnn`."""
    return torch.randn(3, 3, 12, 12, generator=torch.Generator().manual_seed(0))
