"""The cluttered-MNIST benchmark: canvases, exact boxes, disjoint digit pools; the shipped GAP CNN
(Grad-CAM equals CAM on its head, the accuracy the training script recorded, the script's tiny run
repeated)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gradcam_lib.datasets import build_dataset
from gradcam_lib.datasets.cluttered_mnist import CLUTTERED_SPLITS, ClutteredMNISTDataset, digit_pool
from gradcam_lib.datasets.transforms import ImageTransform
from gradcam_lib.methods import grad_cam
from gradcam_lib.models import load_model
from gradcam_lib.models.cluttered_mnist import CHECKPOINT, TRANSFORM, GAPNet, multilabel_accuracy

ROOT = Path(__file__).resolve().parents[1]


def _ink_box(canvas: torch.Tensor) -> tuple[int, int, int, int]:
    ys, xs = torch.nonzero(canvas[0], as_tuple=True)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_pools_are_disjoint_and_sized():
    pools = {split: digit_pool(split) for split in CLUTTERED_SPLITS}
    assert {split: len(pool) for split, pool in pools.items()} == {"train": 3500, "val": 500, "test": 1000}
    rows = {split: {tuple(row) for row in (pool.images.view(len(pool), -1) * 255).round().int().tolist()}
            for split, pool in pools.items()}
    assert len(rows["train"] & rows["test"]) <= 2  # MNIST itself holds a few duplicate digits
    assert len(rows["val"] & rows["test"]) <= 2 and len(rows["train"] & rows["val"]) <= 2
    with pytest.raises(ValueError, match="split"):
        digit_pool("dev")


def test_one_digit_without_clutter_is_boxed_by_its_ink():
    data = ClutteredMNISTDataset(40, split="val", max_digits=1, clutter=0)
    for index in range(len(data)):
        canvas, boxes, labels = data.render(index)
        assert canvas.dtype == torch.uint8 and canvas.shape == (1, 60, 60)
        assert boxes.tolist() == [list(_ink_box(canvas))]
        assert labels.tolist() == [int(data.pool.labels[data.digits[index][0]])]


def test_two_digits_boxes_are_tight_disjoint_and_cover_the_ink():
    data = ClutteredMNISTDataset(60, split="test", max_digits=2, clutter=0)
    seen = 0
    for index in range(len(data)):
        canvas, boxes, _ = data.render(index)
        ink = canvas[0] > 0
        covered = torch.zeros_like(ink)
        for x0, y0, x1, y1 in boxes.tolist():
            covered[y0:y1 + 1, x0:x1 + 1] = True
            inside = ink[y0:y1 + 1, x0:x1 + 1]
            # tight: every edge row / column of the box holds ink
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
        assert not (ink & ~covered).any()
        if len(boxes) == 2:
            seen += 1
            (a0, b0, a1, b1), (c0, d0, c1, d1) = boxes.tolist()
            assert a1 < c0 or c1 < a0 or b1 < d0 or d1 < b0  # no shared pixel
    assert 10 < seen < 50  # n ~ U{1, 2}


def test_clutter_adds_ink_outside_the_boxes_only_as_fragments():
    clean = ClutteredMNISTDataset(30, clutter=0)
    cluttered = ClutteredMNISTDataset(30, clutter=4)
    extra = 0
    for index in range(30):
        a, boxes_a, labels_a = clean.render(index)
        b, boxes_b, labels_b = cluttered.render(index)
        assert torch.equal(boxes_a, boxes_b) and torch.equal(labels_a, labels_b)  # clutter is drawn last
        assert (b >= a).all()  # composited by the maximum
        extra += int(((b > 0) & (a == 0)).sum())
        assert int(((b > 0) & (a == 0)).sum()) <= 4 * 64
    assert extra > 30 * 20


def test_canvases_are_seeded_and_the_test_digits_used_once():
    a, b = ClutteredMNISTDataset(500), ClutteredMNISTDataset(500)
    for index in (0, 17, 499):
        assert torch.equal(a[index].image, b[index].image) and torch.equal(a[index].boxes, b[index].boxes)
    assert not torch.equal(a[0].image, ClutteredMNISTDataset(500, seed=1)[0].image)
    used = [int(d) for digits in a.digits for d in digits]
    assert len(used) == len(set(used)) > 600  # about 750 of the 1000 test digits, each once
    assert len({a[i].image_id for i in range(500)}) == 500
    train = ClutteredMNISTDataset(3000, split="train")
    counts = torch.bincount(torch.tensor([int(d) for digits in train.digits for d in digits]))
    assert int(counts.max()) - int(counts.min()) <= 1  # the pool is used up before a digit repeats


def test_samples_follow_the_transform_and_labels():
    data = ClutteredMNISTDataset(8, ImageTransform(60, 60, (0.5,), (0.25,), geometry="resize"))
    canvas, boxes, labels = data.render(3)
    sample = data[3]
    torch.testing.assert_close(sample.image, (canvas.float() / 255 - 0.5) / 0.25)
    assert sample.labels == tuple(sorted(set(labels.tolist())))
    assert torch.equal(sample.boxes, boxes) and torch.equal(sample.box_labels, labels)
    grey = ClutteredMNISTDataset(8, ImageTransform(60, 60, (0.0,) * 3, (1.0,) * 3, geometry="resize"))[3]
    assert grey.image.shape == (3, 60, 60) and torch.equal(grey.image[0], grey.image[2])
    images, targets = data.tensors()
    torch.testing.assert_close(images[3], canvas.float() / 255)
    assert targets[3].nonzero().flatten().tolist() == list(sample.labels)
    built = build_dataset("cluttered_mnist", TRANSFORM, 5, split="val", seed=2)
    assert isinstance(built, ClutteredMNISTDataset) and len(built) == 5 and built.split == "val"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"n_images": 0}, "n_images"), ({"max_digits": 0}, "max_digits"), ({"tries": 0}, "tries"),
    ({"clutter": -1}, "clutter"), ({"scale": (1.0, 3.0)}, "scale"), ({"scale": (0.0, 1.0)}, "scale"),
    ({"split": "dev"}, "split"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClutteredMNISTDataset(**{"n_images": 4, **kwargs})


def test_index_out_of_range():
    with pytest.raises(IndexError):
        ClutteredMNISTDataset(4).render(4)


def test_grad_cam_on_the_gap_head_is_cam():
    """Grad-CAM paper Sec. 3.1: with a global-average-pooled head, w_k^c = W_ck / Z, so Grad-CAM at
    the last conv map is ReLU(CAM) / Z (Zhou et al. 2016, Eq. 2)."""
    entry = load_model("cluttered_mnist_cnn")
    assert entry.layer_name == "features.relu4" and entry.layer is entry.model.features.relu4
    images = torch.stack([ClutteredMNISTDataset(4, entry.transform)[i].image for i in range(4)])
    targets = torch.tensor([[0, 3], [5, 9], [1, 1], [7, 2]])
    maps = grad_cam(entry.model, entry.layer, images, targets, upsample=False)
    with torch.no_grad():
        activations = entry.model.features(images)
    weights = entry.model.fc.weight[targets]  # (B, K, C)
    cam = torch.einsum("bkc,bchw->bkhw", weights, activations)
    torch.testing.assert_close(maps, cam.clamp(min=0) / activations[0, 0].numel(), rtol=1e-5, atol=1e-6)
    assert maps.shape == (4, 2, 15, 15)


def _script():
    path = ROOT / "data_prep" / "train_cluttered_mnist.py"
    spec = importlib.util.spec_from_file_location("train_cluttered_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_shipped_checkpoint_is_the_scripts_and_accurate():
    record = json.loads(CHECKPOINT.with_suffix(".json").read_text())
    assert hashlib.sha256(CHECKPOINT.read_bytes()).hexdigest() == record["sha256"]
    assert CHECKPOINT.stat().st_size < 500_000
    model = load_model("cluttered_mnist_cnn").model
    for split, recorded in record["accuracy"].items():
        measured = multilabel_accuracy(model, *ClutteredMNISTDataset(500, TRANSFORM, split, record["seed"]).tensors())
        assert measured == pytest.approx(recorded, abs=1e-6)
    assert record["accuracy"]["test"]["top1"] > 0.9
    # the script's tiny run, repeated: the same data, initialisation and training code as the checkpoint's
    previous = torch.get_num_threads()
    torch.set_num_threads(record["threads"])
    try:
        tiny = _script().tiny_run(record["seed"])
    finally:
        torch.set_num_threads(previous)
    assert tiny.keys() == record["tiny_run"]["weights"].keys()
    # Another CPU (AMD EPYC against the recording machine) rounds differently, and two epochs of Adam
    # grow that to < 8e-3 (relative L2 of each parameter's [sum, sum |w|]); another seed moves them by
    # 0.5. The convolution biases feed a BatchNorm, which removes them from every output: their
    # gradients are rounding noise that Adam amplifies (up to 7e-2), so they are not compared.
    for name, sums in record["tiny_run"]["weights"].items():
        if name.startswith("features.conv") and name.endswith(".bias"):
            continue
        drift = np.linalg.norm(np.subtract(tiny[name], sums)) / np.linalg.norm(sums)
        assert drift < 2e-2, (name, drift)


def test_training_is_deterministic_and_multilabel():
    from gradcam_lib.models.cluttered_mnist import train_gap_cnn

    torch.set_num_threads(1)
    (a, data), (b, _) = train_gap_cnn(64, 2, seed=3, decay_epochs=1), train_gap_cnn(64, 2, seed=3, decay_epochs=1)
    for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q)
    assert not a.training and data.labels.shape == (64, 10) and set(data.labels.sum(1).tolist()) <= {1.0, 2.0}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        initial = GAPNet()  # the initialisation train_gap_cnn draws for seed 3
    moved = [not torch.equal(p, q) for p, q in zip(a.parameters(), initial.parameters(), strict=True)]
    assert all(moved)
    with pytest.raises(ValueError, match="decay_epochs"):
        train_gap_cnn(8, 1, decay_epochs=2)


def test_multilabel_accuracy_by_hand():
    class Fixed(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)

    logits = torch.tensor([[0.9, 0.1, 0.5], [0.1, 0.9, 0.8], [0.7, 0.2, 0.1]])
    targets = torch.tensor([[1.0, 0, 1], [1.0, 0, 1], [0, 1.0, 0]])
    # top1: right, wrong, wrong; exact (top-2, top-2, top-1): {0, 2} yes, {1, 2} no, {0} no
    expected = {"top1": pytest.approx(1 / 3), "exact": pytest.approx(1 / 3)}
    assert multilabel_accuracy(Fixed(), logits, targets) == expected
