"""`make bench`: the cost of each explanation method as a multiple of one inference forward pass of
the same batch, measured in the same run (this machine is noisy: only ratios within one run mean
anything), for gradcam_lib, captum and pytorch-grad-cam. Before timing a library, its maps are
compared with ours on the same inputs; the largest relative difference is printed beside it.

The modern CAM family (HiResCAM, XGrad-CAM, LayerCAM, Score-CAM, Eigen-CAM) is timed against
pytorch-grad-cam only: captum has none of these methods. ``--methods cam_family`` runs only those
rows (and the forward pass against itself; or ``--methods HiResCAM,Score-CAM``: the ones named) and
merges them into ``--out``: rows of the same (model, batch, method, library) are replaced, all
others kept. Score-CAM is C forward passes per image (C = 2048 channels for ResNet-50, 512 for
VGG-16): it is timed on one image, at each model's largest batch only, and still costs minutes per
call on a CPU (a row: the check's two calls and at least three timed ones).

Timing (:func:`paired_ratio`): each method call is timed back to back with its baseline call, in
alternating order, and the ratio of each round is kept; rounds go on until the interval of the
median ratio is within 5 % of it (or a time budget is spent). Every row reports the median ratio,
its 95 % interval and the number of rounds; the appendix calls a target met or missed only when
the whole interval lies on one side of it.

    python bench/benchmark.py [--quick] [--out bench/results.csv] [--device cpu]
                              [--road-only | --methods {all,cam_family,grad_cam,LABEL[,LABEL...]} [--models vgg16]
                               | --ilsvrc ROOT [--workers 8]]
                              [--batches 64,256] [--bf16] [--channels-last] [--libraries gradcam_lib]

GPU runs (``bench/device_check.sh``): ``--batches`` replaces every model's batch sizes (all of them
are measured, also with ``--quick``); ``--bf16`` times everything under bfloat16 autocast
(:mod:`gradcam_lib.acceleration`; the ROAD row stays fp32) and ``--channels-last`` in channels-last
memory format (the ILSVRC loop only); ``--libraries`` keeps only the rows of those libraries (and
the forward pass); ``--methods grad_cam``: the Grad-CAM top-1 and top-5 rows. ``--ilsvrc ROOT``
times only the chapter-1 loop on an ILSVRC-format val folder (``bench/ilsvrc_fixture.py`` writes
one) beside inference over the same images, with images/s and the GPU memory peak of each pass.

``--methods perturbations`` (:func:`bench_perturbations`; ``--models efficientnet_lite0 --batches 16``
for a small model): occlusion and deletion / insertion, perturbed images per second over inference
images per second at the same batch size (``throughput`` columns; ``ratio`` is its inverse, as the
other rows); a full run adds these rows at each model's largest batch.

``--methods fast_paths`` (:func:`bench_fast_paths`): Guided Grad-CAM from one forward pass over
Guided Backprop, and the top-5 classes over the top-1 class (one batched backward) for the
gradient, Guided Backprop and Guided Grad-CAM, each ours against ours on the same batch; a full run
adds these rows at each model's largest batch.

Random weights (speed does not depend on them); VGG-16 and ResNet-50 from torchvision.
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from captum.attr import GuidedBackprop, GuidedGradCam, IntegratedGradients, LayerAttribution, LayerGradCam
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from scipy import stats
from torch.utils.data import DataLoader

from gradcam_lib.acceleration import precision
from gradcam_lib.datasets import CompositeDataset, ILSVRCValDataset, collate_samples
from gradcam_lib.experiments.localization import LocalizationExperiment, LocalizationSettings
from gradcam_lib.methods import (
    explanation_scope,
    grad_cam,
    grad_cam_pp,
    grad_cam_top_k,
    guided_backprop,
    guided_grad_cam,
    guided_relus,
    input_gradient,
)
from gradcam_lib.methods.attributions import integrated_gradients
from gradcam_lib.methods.cam_family import eigen_cam, hires_cam, layer_cam, score_cam, xgrad_cam
from gradcam_lib.metrics.deletion import deletion_insertion_curves
from gradcam_lib.metrics.occlusion import occlusion_map, window_starts
from gradcam_lib.metrics.road import noisy_linear_imputation, removal_masks
from gradcam_lib.models import load_model

OUT = Path(__file__).with_name("results.csv")
CAM_FAMILY = ("HiResCAM", "XGrad-CAM", "LayerCAM", "Eigen-CAM", "Score-CAM")  # the rows of --methods cam_family
GRAD_CAM = ("Grad-CAM top-1", "Grad-CAM top-5")  # the rows of --methods grad_cam
PERTURBATIONS = ("Occlusion throughput", "Deletion/insertion throughput")  # the rows of --methods perturbations
FAST_PATHS = ("Guided Grad-CAM / Guided Backprop", "Backprop top-5 / top-1", "Guided Backprop top-5 / top-1",
              "Guided Grad-CAM top-5 / top-1", "Guided Backprop top-5: batched / per-class backward")  # fast_paths


@dataclass(frozen=True)
class Ratio:
    """Median of per-round time ratios (method / baseline, timed back to back) and its
    distribution-free interval (order statistics of the median, binomial ranks)."""

    median: float
    low: float
    high: float
    rounds: int
    seconds: float  # median time of one method call


def _clock(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def median_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Order-statistic interval of the median: ranks k and n - k + 1 with k the largest rank whose
    binomial tail P(Bin(n, 1/2) < k) stays under (1 - confidence) / 2 (at least rank 1)."""
    x = sorted(values)
    n = len(x)
    k = max(int(stats.binom.ppf((1 - confidence) / 2, n, 0.5)), 1)
    return x[k - 1], x[n - k]


def paired_ratio(
    fn: Callable[[], object],
    baseline: Callable[[], object],
    scale: float = 1.0,
    min_rounds: int = 6,
    max_rounds: int = 40,
    width: float = 0.05,
    budget_s: float = 30.0,
    warm_up: bool = True,
) -> Ratio:
    """Time ``fn`` against ``baseline`` (times ``scale``) interleaved: every round times both back
    to back, in alternating order, so that a slow spell of a noisy machine hits both; rounds go on
    until the median's interval is narrower than ``width`` of the median (relative half-width) or
    the budget is spent. ``warm_up``: one untimed call of each first."""
    if warm_up:
        fn(), baseline()
    ratios, times = [], []
    start = time.perf_counter()
    while len(ratios) < max_rounds:
        if len(ratios) % 2:
            t_fn, t_base = _clock(fn), _clock(baseline)
        else:
            t_base, t_fn = _clock(baseline), _clock(fn)
        ratios.append(t_fn / (t_base * scale))
        times.append(t_fn)
        if len(ratios) >= min_rounds:
            low, high = median_interval(ratios)
            mid = statistics.median(ratios)
            if (high - low) / 2 <= width * mid or time.perf_counter() - start > budget_s:
                break
    low, high = median_interval(ratios)
    return Ratio(statistics.median(ratios), low, high, len(ratios), statistics.median(times))


def relative_difference(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    ours, theirs = ours.detach().float().cpu(), torch.as_tensor(theirs).detach().float().cpu()
    return float((ours - theirs).abs().max() / theirs.abs().max().clamp(min=1e-12))


def captum_grad_cam(model, layer, images, targets):
    attribution = LayerGradCam(model, layer).attribute(images, targets, relu_attributions=True)
    return LayerAttribution.interpolate(attribution, images.shape[-2:], interpolate_mode="bilinear")[:, 0]


def pgc_raw(cam_class, model, layer, images, targets):
    """pytorch-grad-cam's own call (it min-max normalises and resizes the maps it returns)."""
    with cam_class(model=model, target_layers=[layer]) as cam:
        return cam(images, [ClassifierOutputTarget(int(t)) for t in targets])


def pgc_unnormalised(cam_class, model, layer, images, targets):
    """pytorch-grad-cam's maps before its normalisation (its ``get_cam_image`` on its own activations
    and, where it uses them, gradients; ReLU'd), to check that it computes the same thing. EigenCAM
    keeps LAPACK's sign of the principal component: its sign-corrected projection
    (``get_2d_projection_with_sign_correction``, the sign rule of ours) stands in for it."""
    cam = cam_class(model=model, target_layers=[layer])
    try:
        outputs = cam.activations_and_grads(images)
        chosen = [ClassifierOutputTarget(int(t)) for t in targets]
        grads = None
        if cam.uses_gradients:
            model.zero_grad()
            sum(t(o) for t, o in zip(chosen, outputs, strict=False)).backward()
            grads = cam.activations_and_grads.gradients[0].numpy()
        acts = cam.activations_and_grads.activations[0].numpy()
        maps = (get_2d_projection_with_sign_correction(acts) if cam_class is EigenCAM
                else cam.get_cam_image(images, layer, chosen, acts, grads, False))
        return torch.from_numpy(maps).clamp(min=0)
    finally:
        cam.activations_and_grads.release()
        model.zero_grad(set_to_none=True)


def pgc_check(ours, cam_class, model, layer, images, targets, **options) -> float:
    """Largest relative difference between our maps before upsampling (``options``: ours that
    reproduce pytorch-grad-cam's choices) and pytorch-grad-cam's before its normalisation."""
    return relative_difference(ours(model, layer, images, targets, upsample=False, **options),
                               pgc_unnormalised(cam_class, model, layer, images, targets))


def bench_model(name: str, batch: int, repeats: int, device: str, occlusion_stride: int, ig_steps: int,
                budget_s: float, family_only: tuple[str, ...] | None = None, with_score_cam: bool = True,
                libraries: tuple[str, ...] | None = None) -> list[dict]:
    """The rows of one model and batch size after the forward pass timed against itself: every
    method, or (``family_only``: labels of :data:`CAM_FAMILY` and :data:`GRAD_CAM`) only those, and
    (``libraries``) only those libraries' rows. Score-CAM (on one image: only its baseline depends
    on ``batch``) only ``with_score_cam``."""
    torch.manual_seed(0)
    entry = load_model(name, device, pretrained=False)
    model, layer = entry.model, entry.layer
    images = torch.randn(batch, 3, 224, 224, device=device)
    channels: list[int] = []
    hook = layer.register_forward_hook(lambda _module, _args, output: channels.append(output.shape[1]))
    with torch.no_grad():
        top5 = model(images).topk(5, dim=1).indices
    hook.remove()
    top1 = top5[:, 0]
    one, one_target = images[:1], top1[:1]
    rows: list[dict] = []

    def forward():
        with torch.no_grad():
            return model(images)

    def input_gradient_pass():
        x = images.clone().requires_grad_(True)
        for p in model.parameters():
            p.requires_grad_(False)
        try:
            out = model(x).gather(1, top1[:, None]).sum()
            return torch.autograd.grad(out, x)[0]
        finally:
            for p in model.parameters():
                p.requires_grad_(True)

    window, stride = 45, occlusion_stride
    positions = len(window_starts(224, window, stride)) ** 2  # perturbed images per image
    per_perturbed = f"forward per image x {positions} (per perturbed image)"
    per_masked = f"forward per image x {channels[0]} (per masked image)"  # Score-CAM: one per channel
    baselines = {  # name -> (baseline call, scale): the ratio is time(method) / (time(call) * scale)
        "forward": (forward, 1.0),
        "input-gradient pass": (input_gradient_pass, 1.0),
        per_perturbed: (forward, positions / batch),
        "forward per image": (forward, 1.0 / batch),
        per_masked: (forward, channels[0] / batch),
    }

    def record(method, library, fn, baseline="forward", check=None, heavy=False, warm_up=True):
        if method != "inference forward" and ((family_only is not None and method not in family_only)
                                              or (libraries is not None and library not in libraries)):
            return  # not asked for (--methods, --libraries): neither checked nor timed
        difference = check() if check else float("nan")  # the maps first, then the time
        call, scale = baselines[baseline]
        ratio = (paired_ratio(fn, call, scale, min_rounds=3, max_rounds=5, budget_s=budget_s, warm_up=warm_up)
                 if heavy else paired_ratio(fn, call, scale, budget_s=budget_s, max_rounds=4 * repeats))
        rows.append({"model": name, "batch": batch, "method": method, "library": library, "seconds": ratio.seconds,
                     "ratio": ratio.median, "ratio_low": ratio.low, "ratio_high": ratio.high, "rounds": ratio.rounds,
                     "baseline": baseline, "max_rel_diff_vs_ours": difference})
        print(f"  {method} ({library}): {ratio.median:.3f} [{ratio.low:.3f}, {ratio.high:.3f}], {ratio.rounds} rounds, "
              f"max rel diff {difference:.1e}", flush=True)

    def cam_family() -> list[dict]:
        """HiResCAM, XGrad-CAM, LayerCAM and Eigen-CAM of the batch, as a multiple of its forward
        pass; Score-CAM of one image against its C masked images' worth of inference (C forward
        passes per image, C the layer's channels): time per masked image over inference time per
        image, as occlusion, so that 1 means the masked passes run at inference throughput. Each
        library with its defaults (Score-CAM: 64 masked images per pass in ours, 16 in theirs);
        the check sets ours to pytorch-grad-cam's mask upsampling, align_corners=True."""
        family = [(label, ours, theirs, images, top1, "forward", {}) for label, ours, theirs in (
            ("HiResCAM", hires_cam, HiResCAM), ("XGrad-CAM", xgrad_cam, XGradCAM),
            ("LayerCAM", layer_cam, LayerCAM), ("Eigen-CAM", eigen_cam, EigenCAM))]
        if with_score_cam:
            family.append(("Score-CAM", score_cam, ScoreCAM, one, one_target, per_masked, {"align_corners": True}))
        for label, ours, theirs, x, y, baseline, like_theirs in family:
            if family_only is not None and label not in family_only:
                continue
            heavy = ours is score_cam  # a call is C forward passes of the warm model: no warm-up call
            record(label, "gradcam_lib", partial(ours, model, layer, x, y), baseline, heavy=heavy, warm_up=not heavy)
            record(label, "pytorch-grad-cam", partial(pgc_raw, theirs, model, layer, x, y), baseline, heavy=heavy,
                   warm_up=not heavy, check=partial(pgc_check, ours, theirs, model, layer, x, y, **like_theirs))
        return rows

    record("inference forward", "torch", forward)  # forward against itself: the harness's own noise
    record("input-gradient pass", "torch", input_gradient_pass)

    # Grad-CAM of the predicted class(es): every library learns the prediction its own way.
    record("Grad-CAM top-1", "gradcam_lib", lambda: grad_cam_top_k(model, layer, images, 1))
    record("Grad-CAM top-1", "captum", lambda: captum_grad_cam(model, layer, images, forward().argmax(1)),
           check=lambda: relative_difference(grad_cam(model, layer, images, top1),
                                             captum_grad_cam(model, layer, images, top1)))
    record("Grad-CAM top-1", "pytorch-grad-cam", lambda: pgc_raw(GradCAM, model, layer, images, forward().argmax(1)),
           check=partial(pgc_check, grad_cam, GradCAM, model, layer, images, top1))
    record("Grad-CAM top-5", "gradcam_lib", lambda: grad_cam_top_k(model, layer, images, 5))
    record("Grad-CAM top-5", "captum",
           lambda: [captum_grad_cam(model, layer, images, c) for c in forward().topk(5, dim=1).indices.T])
    record("Grad-CAM top-5", "pytorch-grad-cam",
           lambda: [pgc_raw(GradCAM, model, layer, images, c) for c in forward().topk(5, dim=1).indices.T])
    if family_only is not None:  # --methods: the Grad-CAM rows above and the CAM family's, no others
        return cam_family()
    record("Grad-CAM++", "gradcam_lib", lambda: grad_cam_pp(model, layer, images, top1))
    record("Grad-CAM++", "pytorch-grad-cam", lambda: pgc_raw(GradCAMPlusPlus, model, layer, images, top1),
           check=partial(pgc_check, grad_cam_pp, GradCAMPlusPlus, model, layer, images, top1))
    record("Guided Backprop", "gradcam_lib", lambda: guided_backprop(model, images, top1), "input-gradient pass")
    record("Guided Backprop", "captum", lambda: GuidedBackprop(model).attribute(images.clone().requires_grad_(), top1),
           "input-gradient pass",
           check=lambda: relative_difference(guided_backprop(model, images, top1),
                                             GuidedBackprop(model).attribute(images.clone().requires_grad_(), top1)))
    record("Guided Grad-CAM", "gradcam_lib", lambda: guided_grad_cam(model, layer, images, top1), "input-gradient pass")
    def captum_ggc():
        return GuidedGradCam(model, layer).attribute(images.clone().requires_grad_(), top1, interpolate_mode="bilinear")

    record("Guided Grad-CAM", "captum", captum_ggc, "input-gradient pass",
           check=lambda: relative_difference(guided_grad_cam(model, layer, images, top1), captum_ggc()))

    # Heavy methods on one image, timed once (the model is warm): occlusion as time per perturbed
    # image over inference time per image (the inverse of the throughput ratio), IG per image.
    def ours_occ():
        return occlusion_map(model, one, one_target, patch=window, stride=stride, batch_size=4 * batch)

    def captum_occ():
        return occlusion_map(model, one, one_target, patch=window, stride=stride, batch_size=4 * batch,
                             backend="captum")

    record(f"Occlusion {window}px stride {stride}", "gradcam_lib", ours_occ, per_perturbed, heavy=True)
    record(f"Occlusion {window}px stride {stride}", "captum", captum_occ, per_perturbed, heavy=True,
           check=lambda: relative_difference(ours_occ(), captum_occ()))
    record(f"Integrated Gradients {ig_steps} steps", "gradcam_lib", heavy=True, baseline="forward per image",
           fn=lambda: integrated_gradients(model, one, one_target, steps=ig_steps, internal_batch_size=2 * batch))
    record(f"Integrated Gradients {ig_steps} steps", "captum", heavy=True, baseline="forward per image",
           fn=lambda: IntegratedGradients(model).attribute(one, target=one_target, n_steps=ig_steps,
                                                           internal_batch_size=2 * batch))
    return cam_family()


def bench_localization_loop(name: str, batch: int, n_images: int, device: str, budget_s: float,
                            bf16: bool = False) -> dict:
    """The chapter-1 loop (generate composite images, top-5 maps, boxes, IoU, CSV) against
    inference forward passes over the same number of images, interleaved (:func:`paired_ratio`);
    ``bf16``: the loop's own autocast (``LocalizationSettings.bf16``), to match the caller's."""
    entry = load_model(name, device, pretrained=False)
    dataset = CompositeDataset(n_images, entry.transform, seed=0)
    images = torch.stack([dataset[i].image for i in range(batch)]).to(device)

    def inference() -> None:
        with torch.no_grad():
            for _ in range(n_images // batch):
                entry.model(images)

    def loop() -> None:
        with tempfile.TemporaryDirectory() as folder:
            LocalizationExperiment(entry, dataset, "composite", LocalizationSettings(bf16=bf16)).run(folder, batch,
                                                                                                    device)

    ratio = paired_ratio(loop, inference, min_rounds=3, max_rounds=5, budget_s=budget_s)
    return {"model": name, "batch": batch, "method": "localisation loop (images/s)", "library": "gradcam_lib",
            "seconds": ratio.seconds / n_images, "ratio": ratio.median, "ratio_low": ratio.low,
            "ratio_high": ratio.high, "rounds": ratio.rounds, "baseline": "forward",
            "max_rel_diff_vs_ours": float("nan")}


def bench_ilsvrc_loop(name: str, root: Path, batch: int, device: str, bf16: bool = False, channels_last: bool = False,
                      workers: int = 0) -> list[dict]:
    """The chapter-1 loop on every image of an ILSVRC-format val folder (decode, top-5 Grad-CAM
    maps, boxes at 0.15, IoU, CSV rows; ``LocalizationSettings(bf16=, channels_last=)``) beside
    inference of the same model on the same images, through the same DataLoader (decode + forward)
    and on one decoded batch repeated (forward only). Each pass is timed once, after a warm-up on
    one batch (cuDNN, numba): thousands of images make a long pass. Rows: seconds per image,
    ``images_per_s``, ``peak_gpu_mib`` (``torch.cuda.max_memory_allocated`` during the pass; NaN
    on a CPU) and ``ratio``: the pass's time over the DataLoader inference pass's."""
    entry = load_model(name, device, pretrained=False)
    dataset = ILSVRCValDataset(root, entry.transform)
    n_images = len(dataset)
    settings = LocalizationSettings(channels_last=channels_last, bf16=bf16)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    entry.model.to(memory_format=memory_format)  # as the loop does at its first batch
    loader = DataLoader(dataset, batch_size=batch, collate_fn=collate_samples, num_workers=workers,
                        pin_memory=device == "cuda")
    first, _ = collate_samples([dataset[i] for i in range(min(batch, n_images))])

    def forward(images: torch.Tensor) -> None:
        with torch.no_grad(), precision(device, bf16):
            entry.model(images.to(device, non_blocking=True).contiguous(memory_format=memory_format))

    def loop(data: ILSVRCValDataset) -> None:
        with tempfile.TemporaryDirectory() as folder:
            LocalizationExperiment(entry, data, "ilsvrc_fixture", settings).run(folder, batch, device, workers)

    def through_loader() -> None:
        for images, _samples in loader:
            forward(images)

    def repeated_batch() -> None:
        for _ in range(max(1, n_images // len(first))):
            forward(first)

    loop(ILSVRCValDataset(root, entry.transform, limit=len(first)))  # warm-up
    forward(first)
    timed: dict[str, tuple[float, float]] = {}  # pass -> (seconds, peak MiB)
    for label, call in (("inference", through_loader), ("forward", repeated_batch), ("loop", partial(loop, dataset))):
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = _clock(call)
        timed[label] = seconds, torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else float("nan")
    images_done = {"inference": n_images, "forward": max(1, n_images // len(first)) * len(first), "loop": n_images}
    passes = (
        ("loop", "ILSVRC-format loop: decode, top-5 Grad-CAM, boxes, CSV (images/s)", "gradcam_lib"),
        ("inference", "ILSVRC-format inference: decode + forward, same DataLoader (images/s)", "torch"),
        ("forward", "ILSVRC-format inference: forward only, one decoded batch repeated (images/s)", "torch"),
    )
    base = timed["inference"][0] / images_done["inference"]
    rows = []
    for label, method, library in passes:
        seconds, peak = timed[label]
        per_image = seconds / images_done[label]
        rows.append({"model": name, "batch": batch, "method": method, "library": library, "seconds": per_image,
                     "ratio": per_image / base, "ratio_low": float("nan"), "ratio_high": float("nan"), "rounds": 1,
                     "baseline": "decode + forward per image", "max_rel_diff_vs_ours": float("nan"),
                     "images": images_done[label], "images_per_s": 1 / per_image, "peak_gpu_mib": peak,
                     "workers": workers, "channels_last": channels_last})
        print(f"  {method}: {1 / per_image:.1f} images/s, {per_image / base:.2f} x decode + forward, "
              f"peak {peak:.0f} MiB", flush=True)
    return rows


def bench_perturbations(name: str, batch: int, device: str, budget_s: float, methods: tuple[str, ...] | None = None,
                        libraries: tuple[str, ...] | None = None) -> list[dict]:
    """Occlusion (Zeiler & Fergus 2014; 45 px windows at stride 28: 64 per 224 image) and
    deletion / insertion (Petsiuk et al. 2018; 31 steps: 32 points per curve) of random 224 images,
    ``batch`` perturbed images per forward pass, each timed against plain inference of the same
    model, batch size and number of images (that many passes of one batch), interleaved
    (:func:`paired_ratio`). Just enough images that the perturbed ones fill whole batches, at least
    four. ``ratio``: time per perturbed image over inference time per image; ``throughput`` (its
    inverse, interval inverted too): perturbed images/s over inference images/s, issue 14's target
    >= 0.95. Only the rows of :data:`PERTURBATIONS` in ``methods`` (None: both)."""
    wanted = [label for label in PERTURBATIONS if methods is None or label in methods]
    if not wanted or (libraries is not None and "gradcam_lib" not in libraries):
        return []
    torch.manual_seed(0)
    model = load_model(name, device, pretrained=False).model
    plain = torch.randn(batch, 3, 224, 224, device=device)
    window, stride, points = 45, 28, 32
    windows = len(window_starts(224, window, stride)) ** 2

    def images_for(per_image: int) -> int:  # the fewest images whose inputs fill >= 4 whole batches
        step = batch // math.gcd(batch, per_image)
        return step * math.ceil(4 * batch / (step * per_image))

    g = torch.Generator().manual_seed(0)
    occluded, curved = images_for(windows), images_for(points)
    x = torch.randn(max(occluded, curved), 3, 224, 224, generator=g).to(device)
    heat = torch.nn.functional.interpolate(torch.rand(curved, 1, 7, 7, generator=g), size=(224, 224),
                                           mode="bilinear")[:, 0].to(device)
    with torch.no_grad():
        targets = model(x).argmax(1)
    calls = {  # label -> (call, perturbed images per call, check against an independent implementation)
        "Occlusion throughput": (
            partial(occlusion_map, model, x[:occluded], targets[:occluded], window, stride, 0.0, batch),
            occluded * windows,
            lambda: relative_difference(
                occlusion_map(model, x[:occluded], targets[:occluded], window, stride, 0.0, batch),
                occlusion_map(model, x[:occluded], targets[:occluded], window, stride, 0.0, batch, "captum"))),
        "Deletion/insertion throughput": (
            partial(deletion_insertion_curves, model, x[:curved], targets[:curved], heat, points - 1, batch_size=batch),
            2 * curved * points, None),
    }
    rows = []
    for label in wanted:
        call, perturbed, check = calls[label]

        def inference(passes: int = perturbed // batch) -> None:
            with torch.no_grad():
                for _ in range(passes):
                    model(plain)

        difference = check() if check else float("nan")
        ratio = paired_ratio(call, inference, min_rounds=5, max_rounds=15, budget_s=budget_s)
        rows.append({"model": name, "batch": batch, "method": label, "library": "gradcam_lib",
                     "seconds": ratio.seconds, "ratio": ratio.median, "ratio_low": ratio.low,
                     "ratio_high": ratio.high, "rounds": ratio.rounds,
                     "baseline": f"forward of the batch x {perturbed // batch} (per perturbed image)",
                     "max_rel_diff_vs_ours": difference, "throughput": 1 / ratio.median,
                     "throughput_low": 1 / ratio.high, "throughput_high": 1 / ratio.low})
        print(f"  {label} ({perturbed} perturbed images): {1 / ratio.median:.3f} x inference images/s "
              f"[{1 / ratio.high:.3f}, {1 / ratio.low:.3f}], {ratio.rounds} rounds, max rel diff {difference:.1e}",
              flush=True)
    return rows


def bench_fast_paths(name: str, batch: int, device: str, budget_s: float, methods: tuple[str, ...] | None = None,
                     libraries: tuple[str, ...] | None = None) -> list[dict]:
    """Issue 14 item 3, ours against ours on one batch of random 224 images, interleaved
    (:func:`paired_ratio`): Guided Grad-CAM (both halves from one forward pass) over Guided
    Backprop, target <= 1.1; the top-5 classes (one batched backward) over the top-1 class for the
    gradient, Guided Backprop and Guided Grad-CAM, target <= 1.3; and Guided Backprop's batched
    top-5 over one ``autograd.grad`` per class after one guided forward (what batching buys on this
    device). Each fast path is first compared with the old path (``max_rel_diff_vs_ours``): the
    two-pass product, one call per class, the per-class backward. Only the rows of
    :data:`FAST_PATHS` in ``methods`` (None: all)."""
    wanted = [label for label in FAST_PATHS if methods is None or label in methods]
    if not wanted or (libraries is not None and "gradcam_lib" not in libraries):
        return []
    torch.manual_seed(0)
    entry = load_model(name, device, pretrained=False)
    model, layer = entry.model, entry.layer
    images = torch.randn(batch, 3, 224, 224, device=device)
    with torch.no_grad():
        top5 = model(images).topk(5, dim=1).indices
    top1 = top5[:, 0]

    def per_class_backward() -> torch.Tensor:  # the old Guided Backprop of K classes
        with explanation_scope(model):
            x = images.clone().requires_grad_(True)
            with guided_relus():
                scores = model(x).gather(1, top5)
            return torch.stack([torch.autograd.grad(scores[:, k].sum(), x, retain_graph=k < 4)[0] for k in range(5)],
                               dim=1)

    def one_class_at_a_time(method, *args) -> torch.Tensor:
        return torch.stack([method(*args, images, top5[:, k]) for k in range(5)], dim=1)

    def two_pass_guided_grad_cam() -> torch.Tensor:  # the old path: the guided= argument
        return guided_grad_cam(model, layer, images, top1, guided=guided_backprop(model, images, top1))

    ggc = partial(guided_grad_cam, model, layer, images)
    calls = {  # label -> (fast path, baseline call, baseline label, the old path's result)
        "Guided Grad-CAM / Guided Backprop": (partial(ggc, top1), partial(guided_backprop, model, images, top1),
                                              "Guided Backprop top-1", two_pass_guided_grad_cam),
        "Backprop top-5 / top-1": (partial(input_gradient, model, images, top5), partial(input_gradient, model, images,
                                   top1), "Backprop top-1", partial(one_class_at_a_time, input_gradient, model)),
        "Guided Backprop top-5 / top-1": (partial(guided_backprop, model, images, top5),
                                          partial(guided_backprop, model, images, top1), "Guided Backprop top-1",
                                          per_class_backward),
        "Guided Grad-CAM top-5 / top-1": (partial(ggc, top5), partial(ggc, top1), "Guided Grad-CAM top-1",
                                          partial(one_class_at_a_time, guided_grad_cam, model, layer)),
        "Guided Backprop top-5: batched / per-class backward": (
            partial(guided_backprop, model, images, top5), per_class_backward,
            "guided forward + one autograd.grad per class (top-5)", per_class_backward),
    }
    rows = []
    for label in wanted:
        fast, base, base_label, old = calls[label]
        difference = relative_difference(fast(), old())
        ratio = paired_ratio(fast, base, min_rounds=5, max_rounds=15, budget_s=budget_s)
        rows.append({"model": name, "batch": batch, "method": label, "library": "gradcam_lib",
                     "seconds": ratio.seconds, "ratio": ratio.median, "ratio_low": ratio.low,
                     "ratio_high": ratio.high, "rounds": ratio.rounds, "baseline": base_label,
                     "max_rel_diff_vs_ours": difference})
        print(f"  {label}: {ratio.median:.3f} [{ratio.low:.3f}, {ratio.high:.3f}], {ratio.rounds} rounds, "
              f"max rel diff vs the old path {difference:.1e}", flush=True)
    return rows


def bench_road(batch: int, percentage: float, device: str, budget_s: float) -> dict:
    """ROAD's noisy linear imputation of ``batch`` 224 x 224 images (``percentage`` % removed, MoRF
    of smooth Grad-CAM-like maps): ours (one batched CG solve on ``device``) against
    pytorch-grad-cam's ``NoisyLinearImputer`` (scipy ``spsolve`` per image, on the CPU), noise 0.
    The results are compared first (max abs difference, printed); the ratio is ours / theirs."""
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 224, 224, generator=g)
    maps = torch.nn.functional.interpolate(torch.rand(batch, 1, 7, 7, generator=g), size=(224, 224), mode="bilinear")
    removed = removal_masks(maps[:, 0], [percentage], "morf")[0]
    on_device, removed_on_device = images.to(device), removed.to(device)
    def ours() -> torch.Tensor:
        return noisy_linear_imputation(on_device, removed_on_device, noise=0.0)

    def theirs() -> torch.Tensor:
        return torch.stack([NoisyLinearImputer(noise=0.0)(images[i], (~removed[i]).float()) for i in range(batch)])

    difference = float((ours().cpu() - theirs()).abs().max())
    print(f"ROAD imputation: max abs difference vs pytorch-grad-cam {difference:.2e}", flush=True)
    if difference > 1e-4:
        raise RuntimeError(f"ROAD imputation disagrees with pytorch-grad-cam by {difference}: not timing it")
    ratio = paired_ratio(ours, theirs, min_rounds=3, max_rounds=5, budget_s=budget_s)
    return {"model": "none", "batch": batch, "method": f"ROAD imputation 224px {percentage:g} % MoRF",
            "library": "gradcam_lib", "seconds": ratio.seconds, "ratio": ratio.median, "ratio_low": ratio.low,
            "ratio_high": ratio.high, "rounds": ratio.rounds, "baseline": "pytorch-grad-cam NoisyLinearImputer",
            "max_rel_diff_vs_ours": relative_difference(ours(), theirs())}


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """``old`` with ``new`` in: a row of the same (model, batch, method, library) is replaced where
    it stood, the other new rows follow the last old row of their (model, batch) (else the end)."""
    def keys(table: pd.DataFrame) -> list[tuple]:
        return list(zip(table["model"], table["batch"], table["method"], table["library"], strict=True))

    place = {key: i for i, key in enumerate(keys(old))}
    group_end = {key[:2]: i for key, i in place.items()}
    fresh = keys(new)
    at = [place.get(key, group_end.get(key[:2], len(old)) + (j + 1) / (len(new) + 1)) for j, key in enumerate(fresh)]
    kept = old.assign(at=range(len(old)))[[key not in set(fresh) for key in keys(old)]]
    columns = list(dict.fromkeys([*new.columns, *old.columns]))
    merged = pd.concat([kept, new.assign(at=at)], ignore_index=True).sort_values("at", kind="stable")
    return merged[columns].reset_index(drop=True)


def methods_argument(text: str) -> tuple[str, ...] | None:
    """``--methods``: ``all`` (None), ``cam_family``, ``grad_cam``, ``perturbations``, ``fast_paths``
    or comma-separated labels of :data:`CAM_FAMILY`, :data:`GRAD_CAM`, :data:`PERTURBATIONS` and
    :data:`FAST_PATHS`."""
    if text == "all":
        return None
    groups = {"cam_family": CAM_FAMILY, "grad_cam": GRAD_CAM, "perturbations": PERTURBATIONS, "fast_paths": FAST_PATHS}
    labels = groups.get(text, tuple(text.split(",")))
    if unknown := sorted(set(labels) - set(CAM_FAMILY + GRAD_CAM + PERTURBATIONS + FAST_PATHS)):
        known = ", ".join(CAM_FAMILY + GRAD_CAM + PERTURBATIONS + FAST_PATHS)
        raise argparse.ArgumentTypeError(f"not all, {', '.join(groups)} or labels of {known}: {unknown}")
    return labels


def batches_argument(text: str) -> tuple[int, ...]:
    """``--batches``: comma-separated batch sizes (each >= 1)."""
    try:
        batches = tuple(int(b) for b in text.split(","))
    except ValueError:
        batches = ()
    if not batches or min(batches) < 1:
        raise argparse.ArgumentTypeError(f"not comma-separated batch sizes >= 1: {text!r}")
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one batch size per model, fewer repeats")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=OUT)
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--road-only", action="store_true", help="only the ROAD imputation row")
    only.add_argument("--methods", type=methods_argument, default=None, metavar="all|cam_family|grad_cam|LABEL,...",
                      help="only the CAM family's rows (or those labels), with the forward pass, merged into --out")
    only.add_argument("--ilsvrc", type=Path, default=None, metavar="ROOT",
                      help="only the chapter-1 loop on this ILSVRC-format val folder, and inference, merged into --out")
    parser.add_argument("--models", default="resnet50,vgg16", help="the models to measure (others: with --batches)")
    parser.add_argument("--batches", type=batches_argument, default=None, metavar="64,256",
                        help="every model's batch sizes (all of them measured, also with --quick)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (the ROAD row stays fp32)")
    parser.add_argument("--channels-last", action="store_true", help="with --ilsvrc: channels-last memory format")
    parser.add_argument("--libraries", type=lambda text: tuple(text.split(",")), default=None,
                        metavar="gradcam_lib,captum,pytorch-grad-cam", help="only these libraries' rows (and forward)")
    parser.add_argument("--workers", type=int, default=0, help="with --ilsvrc: DataLoader workers")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="each row's time budget (default 30, 5 with --quick)")
    args = parser.parse_args()
    settings = {"resnet50": (2, 8), "vgg16": (2, 4)}
    if args.batches:  # then any ImageNet model of the registry (device_check.sh's CPU mode: alexnet)
        settings = dict.fromkeys(args.models.split(","), args.batches)
    settings = {name: batches for name, batches in settings.items() if name in args.models.split(",")}
    repeats = 2 if args.quick else 10  # at most 4 x repeats interleaved rounds per row
    budget_s = args.budget if args.budget is not None else 5.0 if args.quick else 30.0
    everything = args.methods is None and args.ilsvrc is None
    rows = [bench_road(8, 10, args.device, budget_s)] if everything else []
    for name, batches in (settings if args.ilsvrc is not None else {}).items():
        for batch in batches if args.batches else batches[-1:]:
            print(f"{name} batch {batch}: the ILSVRC-format loop on {args.ilsvrc} ...", flush=True)
            rows += bench_ilsvrc_loop(name, args.ilsvrc, batch, args.device, args.bf16, args.channels_last,
                                      args.workers)
    with precision(args.device, args.bf16):
        for name, batches in ({} if args.road_only or args.ilsvrc is not None else settings).items():
            for batch in batches[-1:] if args.quick and not args.batches else batches:
                print(f"{name} batch {batch} ...", flush=True)
                rows += bench_model(name, batch, repeats, args.device, occlusion_stride=28, ig_steps=50,
                                    budget_s=budget_s, family_only=args.methods, with_score_cam=batch == batches[-1],
                                    libraries=args.libraries)
                if args.methods is not None or batch == batches[-1]:  # a full run: at the largest batch only
                    rows += bench_perturbations(name, batch, args.device, budget_s, args.methods, args.libraries)
                    rows += bench_fast_paths(name, batch, args.device, budget_s, args.methods, args.libraries)
            if everything:
                rows.append(bench_localization_loop(name, batches[-1], 4 * batches[-1], args.device, budget_s,
                                                    bf16=args.bf16))
    table = pd.DataFrame(rows)
    cpu = f"{platform.processor() or platform.machine()} x{torch.get_num_threads()} threads"
    table["device"] = torch.cuda.get_device_name() if args.device == "cuda" else cpu
    table["torch"] = torch.__version__
    table["dtype"] = ["fp32" if method.startswith("ROAD") else "bf16" if args.bf16 else "fp32"
                      for method in table["method"]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    merged = table if everything or not args.out.exists() else merge_rows(pd.read_csv(args.out), table)
    merged.to_csv(args.out, index=False)
    extra = [column for column in ("images_per_s", "peak_gpu_mib") if column in table]
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(table[["model", "batch", "method", "library", "seconds", "ratio", "ratio_low", "ratio_high", "rounds",
                     "baseline", "max_rel_diff_vs_ours", "dtype", *extra]]
              .round(4).assign(max_rel_diff_vs_ours=table["max_rel_diff_vs_ours"]).to_string(index=False))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
