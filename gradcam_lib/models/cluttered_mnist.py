"""The classifier of the cluttered-MNIST benchmark (:mod:`gradcam_lib.datasets.cluttered_mnist`): a
small CNN with a global-average-pooled head, so that, as in CAM (Zhou et al., CVPR 2016, Sec. 2),
the class scores are linear in the spatial mean of the last rectified conv map and Grad-CAM's layer
is that map (``features.relu4``, 64 x 15 x 15 on a 60 x 60 canvas; Grad-CAM equals CAM there,
Grad-CAM paper Sec. 3.1).

Trained on the ``train`` canvases with image-level labels only (multi-label: binary cross-entropy
on the multi-hot digit classes; no box is ever seen) by ``data_prep/train_cluttered_mnist.py``
(:func:`train_gap_cnn`). The book loads the shipped checkpoint (``data/cluttered_mnist_cnn.pt``)
with ``torch.load(..., weights_only=True)``: training is seeded and single-threaded, but another
CPU may round sums differently, and the book's tables must be identical everywhere.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gradcam_lib.datasets.cluttered_mnist import ClutteredMNISTDataset
from gradcam_lib.datasets.mnist import MNIST_CLASSES, Split
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.models import register_model
from gradcam_lib.models.entry import ModelEntry, load_weights, read_checkpoint
from gradcam_lib.models.mnist import train_classifier

__all__ = ["CHECKPOINT", "GAPNet", "load_cluttered_entry", "multilabel_accuracy", "train_gap_cnn"]

CHECKPOINT = Path(__file__).parent.parent / "data" / "cluttered_mnist_cnn.pt"
CANVAS = 60
TRANSFORM = ImageTransform(CANVAS, CANVAS, (0.0,), (1.0,), geometry="resize")


class GAPNet(nn.Module):
    """Four blocks Conv(3 x 3, padding 1) -> BatchNorm -> ReLU with 16, 32, 64, 64 channels, a
    MaxPool(2) after the first two, then a global average pool and FC(64 -> 10); every ReLU is its
    own module. A ``relu4`` cell sees 26 x 26 pixels of the canvas (4-pixel stride)."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        widths = (1, width, 2 * width, 4 * width, 4 * width)
        layers: list[tuple[str, nn.Module]] = []
        for i in range(1, 5):
            layers += [(f"conv{i}", nn.Conv2d(widths[i - 1], widths[i], 3, padding=1)),
                       (f"bn{i}", nn.BatchNorm2d(widths[i])), (f"relu{i}", nn.ReLU())]
            if i <= 2:
                layers.append((f"pool{i}", nn.MaxPool2d(2)))
        self.features = nn.Sequential(OrderedDict(layers))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.features(x))))


def train_gap_cnn(n_canvases: int = 8000, epochs: int = 12, seed: int = 0, lr: float = 3e-3, batch_size: int = 64,
                  decay_epochs: int = 2) -> tuple[GAPNet, Split]:
    """A :class:`GAPNet` trained on ``n_canvases`` ``train`` canvases of ``seed`` with
    :func:`~gradcam_lib.models.mnist.train_classifier` (Adam, binary cross-entropy on the multi-hot
    labels; initialisation and shuffling seeded): ``epochs - decay_epochs`` epochs at ``lr``, then
    ``decay_epochs`` at ``lr / 10``. Returns the model (eval mode) and its training data.

    Raises:
        ValueError: ``decay_epochs`` outside ``[0, epochs]``.
    """
    if not 0 <= decay_epochs <= epochs:
        raise ValueError(f"decay_epochs must lie in [0, epochs={epochs}], got {decay_epochs}")
    images, targets = ClutteredMNISTDataset(n_canvases, TRANSFORM, split="train", seed=seed).tensors()
    data = Split(images, targets)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = GAPNet()
    for phase, (n, rate) in enumerate(((epochs - decay_epochs, lr), (decay_epochs, lr / 10))):
        train_classifier(model, data, epochs=n, batch_size=batch_size, lr=rate, seed=seed + phase,
                         loss=F.binary_cross_entropy_with_logits)
    return model.eval(), data


@torch.no_grad()
def multilabel_accuracy(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """On canvases with multi-hot ``targets``: ``top1`` (the top class is one of the canvas's digits)
    and ``exact`` (the canvas's n top classes are exactly its n digit classes)."""
    logits = torch.cat([model(chunk) for chunk in images.split(500)])
    ranked = logits.argsort(dim=1, descending=True)
    top1 = targets.gather(1, ranked[:, :1]).squeeze(1)
    counts = targets.sum(1).long()
    exact = torch.stack([targets[i, ranked[i, : counts[i]]].all() for i in range(len(targets))])
    return {"top1": float(top1.mean()), "exact": float(exact.float().mean())}


def load_gap_cnn(path: str | Path = CHECKPOINT, device: str | torch.device = "cpu") -> GAPNet:
    """The trained :class:`GAPNet` in eval mode (``torch.load(..., weights_only=True)``).

    Raises:
        FileNotFoundError: no checkpoint; ``python data_prep/train_cluttered_mnist.py`` writes it.
    """
    remedy = "run `python data_prep/train_cluttered_mnist.py` to write it"
    state = read_checkpoint(path, "cluttered-MNIST checkpoint", remedy)
    model = GAPNet()
    load_weights(model, state, Path(path), "cluttered-MNIST checkpoint")
    return model.eval().to(device)


@register_model("cluttered_mnist_cnn")
def load_cluttered_entry(name: str = "cluttered_mnist_cnn", device: str | torch.device = "cpu",
                         checkpoint: str | Path = CHECKPOINT) -> ModelEntry:
    """``load_model("cluttered_mnist_cnn")``: the shipped :class:`GAPNet` on 60 x 60 one-channel
    canvases in [0, 1], Grad-CAM layer ``features.relu4``."""
    model = load_gap_cnn(checkpoint, device)
    return ModelEntry(name, model, model.get_submodule("features.relu4"), "features.relu4", TRANSFORM, MNIST_CLASSES)
