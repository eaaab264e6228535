"""Occlusion speed: captum's ``Occlusion`` against ``gradcam_lib.metrics.occlusion`` on the same inputs,
in one run (both give the same maps; the script prints the largest difference).

    .venv/bin/python bench/occlusion_speed.py --model efficientnet_lite0 --images 2 --stride 16
    .venv/bin/python bench/occlusion_speed.py --model vgg16 --random-weights --device cuda --stride 1
    .venv/bin/python bench/occlusion_speed.py --overhead --stride 4   # the backends' own cost

``--overhead`` replaces the network by a nearly free linear model (8x8 average pooling + one linear
layer), so the time left is each backend's perturbation machinery: what it adds to every forward
pass, which matters where forward passes are cheap (a GPU).
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from gradcam_lib.datasets import load_photos
from gradcam_lib.metrics.occlusion import compare_occlusion_backends
from gradcam_lib.models import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--random-weights", action="store_true", help="torchvision models without weights on disk")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=2, help="embedded photographs to occlude")
    parser.add_argument("--patch", type=int, default=45)
    parser.add_argument("--stride", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--overhead", action="store_true", help="a nearly free linear model instead of --model")
    args = parser.parse_args()
    entry = load_model(args.model, args.device, pretrained=not args.random_weights and not args.overhead)
    images = torch.stack([s.image for s in load_photos(entry.transform)[: args.images]]).to(args.device)
    model = entry.model
    if args.overhead:
        torch.manual_seed(0)
        side = images.shape[-1] // 8
        model = nn.Sequential(nn.AvgPool2d(8), nn.Flatten(), nn.Linear(3 * side * side, 1000)).eval().to(args.device)
        args.model = "linear (overhead)"
    with torch.no_grad():
        targets = model(images).argmax(1)
    table, _ = compare_occlusion_backends(model, images, targets, args.patch, args.stride, 0.0, args.batch_size,
                                          args.repeats)
    device = torch.cuda.get_device_name() if images.is_cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}, {device}, patch {args.patch}, stride {args.stride}, batch {args.batch_size}")
    print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
