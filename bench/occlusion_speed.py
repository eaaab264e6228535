"""Occlusion speed: captum's ``Occlusion`` against ``gradcam_lib.metrics.occlusion`` on the same inputs,
in one run (both give the same maps; the script prints the largest difference).

    .venv/bin/python bench/occlusion_speed.py --model efficientnet_lite0 --images 2 --stride 16
    .venv/bin/python bench/occlusion_speed.py --model vgg16 --random-weights --device cuda --stride 1
    .venv/bin/python bench/occlusion_speed.py --overhead --stride 4   # the backends' own cost

``--overhead`` replaces the network by a nearly free linear model (8x8 average pooling + one linear
layer), so the time left is each backend's perturbation machinery: what it adds to every forward
pass, which matters where forward passes are cheap (a GPU). Each backend's forward passes per second
are also given over those of plain inference at the same batch size (``vs_inference``: 1 means the
occluded inputs cost nothing beyond their passes). ``--profile`` prints where one call of ours
spends its time (torch.profiler, ops by self time).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from gradcam_lib.datasets import load_photos
from gradcam_lib.metrics.occlusion import compare_occlusion_backends, occlusion_map
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
    parser.add_argument("--profile", action="store_true", help="torch.profiler's op table of one call of ours")
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
    table["vs_inference"] = table["forwards_per_s"] / inference_rate(model, images, args.batch_size, args.repeats)
    device = torch.cuda.get_device_name() if images.is_cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.model}, {device}, patch {args.patch}, stride {args.stride}, batch {args.batch_size}")
    print(table.round(4).to_string(index=False))
    if args.profile:
        from torch.profiler import profile

        with profile() as prof:
            occlusion_map(model, images, targets, args.patch, args.stride, 0.0, args.batch_size)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def inference_rate(model: nn.Module, images: torch.Tensor, batch_size: int, repeats: int) -> float:
    """Images per second of plain inference on ``batch_size`` copies of the first image, best of
    ``repeats`` passes (after one untimed pass)."""
    batch = images[:1].expand(batch_size, -1, -1, -1).contiguous()
    best = float("inf")
    with torch.no_grad():
        for _ in range(repeats + 1):
            start = time.perf_counter()
            model(batch)
            if batch.is_cuda:
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return batch_size / best


if __name__ == "__main__":
    main()
