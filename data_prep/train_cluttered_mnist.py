"""Train the cluttered-MNIST GAP CNN on image-level labels and write gradcam_lib/data/cluttered_mnist_cnn.pt
with its record gradcam_lib/data/cluttered_mnist_cnn.json.

    python data_prep/train_cluttered_mnist.py [--canvases 8000] [--epochs 12] [--seed 0] [--threads 2]

Seeded (digit split, canvases, initialisation, shuffling) and run on the CPU with a fixed number of
threads. The record holds the settings, the training time, the accuracy on the ``val`` and ``test``
canvases (500 each, the book's sizes; nothing is chosen on ``test``), the checkpoint's sha256 and a
fingerprint of a tiny run of the same code (:func:`tiny_run`), which the tests repeat to check that
the shipped checkpoint comes from this script as it is. Another CPU may round the sums differently,
hence the shipped file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import torch

from gradcam_lib.datasets.cluttered_mnist import ClutteredMNISTDataset
from gradcam_lib.models.cluttered_mnist import CHECKPOINT, TRANSFORM, multilabel_accuracy, train_gap_cnn

TINY = {"n_canvases": 256, "epochs": 2, "decay_epochs": 1}


def tiny_run(seed: int = 0) -> dict[str, list[float]]:
    """Per parameter ``[sum, sum of |w|]`` after training on 256 canvases for two epochs (one decayed)."""
    model, _ = train_gap_cnn(seed=seed, **TINY)
    return {name: [float(p.sum()), float(p.abs().sum())] for name, p in model.state_dict().items()
            if p.is_floating_point()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--canvases", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(CHECKPOINT))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    model, _ = train_gap_cnn(args.canvases, args.epochs, seed=args.seed)
    seconds = time.perf_counter() - start
    accuracy = {split: multilabel_accuracy(model, *ClutteredMNISTDataset(500, TRANSFORM, split, args.seed).tensors())
                for split in ("val", "test")}
    print(f"trained on {args.canvases} canvases x {args.epochs} epochs in {seconds:.0f} s "
          f"({args.threads} threads); accuracy {accuracy}")
    out = Path(args.out)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, out)
    record = {
        "canvases": args.canvases, "epochs": args.epochs, "seed": args.seed, "threads": args.threads,
        "seconds": round(seconds, 1), "torch": torch.__version__, "accuracy": accuracy,
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(), "tiny_run": {**TINY, "weights": tiny_run(args.seed)},
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
