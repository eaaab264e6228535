"""Train the chest X-ray chapter's stand-in model and write ``gradcam_lib/data/xray_standin.pt``.

    python data_prep/make_xray_standin.py [--out PATH] [--train 2400] [--epochs 12]

No chest X-ray data set is available offline, so the default profile of chapter 5 runs on
generated stand-in X-rays (:class:`gradcam_lib.datasets.xray_standin.StandinXrayDataset`: findings drawn in
known boxes) and a small torchvision DenseNet trained here on them, multi-label, with binary
cross-entropy on the logits (as CheXNet). Training runs on one CPU thread in about five minutes, seeded and
with ``torch.use_deterministic_algorithms(True)``; the checkpoint is shipped (< 1 MB) so that every
machine evaluates the same weights (bit-identical retraining across CPUs and torch builds is not
guaranteed). The checkpoint holds ``state_dict``, ``class_names`` (the output order: the chapter
builds its finding -> output map from it), ``architecture`` and the validation AUC of each output.
It is read with ``torch.load(..., weights_only=True)``.

Seeds: training images ``(1, i)``, validation ``(2, i)``; the chapter evaluates seed 0 -- images the
model never saw.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from gradcam_lib.datasets.chestxray import FINDINGS
from gradcam_lib.datasets.xray_standin import STANDIN_FINDINGS, StandinXrayDataset
from gradcam_lib.models.xray import STANDIN_ARCHITECTURE, standin_densenet

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "gradcam_lib" / "data" / "xray_standin.pt"


def tensors(dataset: StandinXrayDataset) -> tuple[torch.Tensor, torch.Tensor]:
    """All images ``(N, 3, H, W)`` and multi-hot targets ``(N, F)`` in the model's output order."""
    images, targets = [], []
    for i in range(len(dataset)):
        sample = dataset[i]
        images.append(sample.image)
        present = {FINDINGS[label] for label in sample.labels}
        targets.append([float(f in present) for f in STANDIN_FINDINGS])
    return torch.stack(images), torch.tensor(targets)


def evaluate_auc(model: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> list[float]:
    model.eval()
    with torch.no_grad():
        scores = torch.cat([model(images[i : i + 256]) for i in range(0, len(images), 256)])
    return [float(roc_auc_score(targets[:, k], scores[:, k])) for k in range(targets.shape[1])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--train", type=int, default=2400)
    parser.add_argument("--val", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one thread: same summation order every run (and fast on a shared CPU)
    start = time.perf_counter()
    train_x, train_y = tensors(StandinXrayDataset(args.train, seed=1, min_findings=0))
    val_x, val_y = tensors(StandinXrayDataset(args.val, seed=2, min_findings=0))
    print(f"rendered {len(train_x)} + {len(val_x)} images in {time.perf_counter() - start:.0f} s; "
          f"positives per finding {train_y.sum(0).tolist()}")

    model = standin_densenet(len(STANDIN_FINDINGS))
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * int(np.ceil(len(train_x) / args.batch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=steps)
    loss_fn = nn.BCEWithLogitsLoss()
    order = torch.Generator().manual_seed(0)
    for epoch in range(args.epochs):
        model.train()
        permutation = torch.randperm(len(train_x), generator=order)
        total = 0.0
        for i in range(0, len(train_x), args.batch):
            index = permutation[i : i + args.batch]
            loss = loss_fn(model(train_x[index]), train_y[index])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += loss.item() * len(index)
        auc = evaluate_auc(model, val_x, val_y)
        print(f"epoch {epoch + 1}: loss {total / len(train_x):.4f}, val AUC "
              + ", ".join(f"{f} {a:.3f}" for f, a in zip(STANDIN_FINDINGS, auc, strict=True))
              + f" ({time.perf_counter() - start:.0f} s)", flush=True)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "state_dict": model.eval().state_dict(),
            "class_names": list(STANDIN_FINDINGS),
            "architecture": {k: list(v) if isinstance(v, tuple) else v for k, v in STANDIN_ARCHITECTURE.items()},
            "val_auc": auc,
            "recipe": f"make_xray_standin.py --train {args.train} --epochs {args.epochs} --batch {args.batch} "
                      f"--lr {args.lr}",
        },
        args.out,
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
