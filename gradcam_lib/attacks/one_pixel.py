"""One-pixel attack (Su, Vargas and Sakurai 2019), untargeted, by batched differential evolution
(:func:`~gradcam_lib.attacks.differential_evolution.differential_evolution`).

A candidate is one pixel ``(x, y, c_1..c_C)``: its column, its row and its colour in pixel space
[0, 1], searched in the unit cube ``[0, 1]^(2 + C)`` (scipy's internal scaling):
``x = floor(u_0 * W)``, ``y = floor(u_1 * H)``, ``c = u_2..`` (:func:`decode_pixels`). The
objective is the softmax probability of the originally predicted class (untargeted, as KTH and
torchattacks); an image is done as soon as one evaluated candidate changes the top-1 class (Su et
al. stop a non-targeted ImageNet attack when the true class's probability falls below 5 %). Every
generation paints and evaluates the populations of *all* images still running as one batch (split
into ``eval_batch`` chunks for memory).

Colour: the pixel is set in pixel space [0, 1] and then normalised with the model's own mean and
std, ``(c - mean) / std`` (:func:`paint_pixels`; KTH normalised the attack pixel with blue std
0.224 instead of 0.225). :func:`torchattacks_one_pixel` runs ``torchattacks.OnePixel`` for
comparison. Models run inside :func:`~gradcam_lib.methods.scopes.explanation_scope` (the caller's
train / eval flags are restored); no global RNG is touched.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchattacks
import torchattacks.attacks.onepixel as _torchattacks_onepixel
from torch import nn

from gradcam_lib.attacks.adversarial import PixelSpaceModel, to_pixels
from gradcam_lib.attacks.differential_evolution import SU2019, DEConfig, differential_evolution
from gradcam_lib.methods import explanation_scope, grad_cam

__all__ = [
    "OnePixelResult",
    "attacked_maps",
    "decode_pixels",
    "one_pixel_attack",
    "paint_pixels",
    "torchattacks_one_pixel",
]


def decode_pixels(u: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Unit-cube candidates ``(..., 2 + C)`` -> ``(x (...) long, y (...) long, colour (..., C))``."""
    x = (u[..., 0] * width).floor().long().clamp(0, width - 1)
    y = (u[..., 1] * height).floor().long().clamp(0, height - 1)
    return x, y, u[..., 2:].clamp(0.0, 1.0)


def paint_pixels(images: torch.Tensor, x: torch.Tensor, y: torch.Tensor, colour: torch.Tensor,
                 mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Copies of the normalised ``images (N, C, H, W)`` with pixel ``(x[n], y[n])`` set to
    ``colour[n]`` given in pixel space [0, 1], normalised as ``(colour - mean) / std``."""
    mean_t = torch.as_tensor(mean, dtype=images.dtype, device=images.device)
    std_t = torch.as_tensor(std, dtype=images.dtype, device=images.device)
    if mean_t.numel() != images.shape[1] or std_t.numel() != images.shape[1]:
        raise ValueError(f"mean/std need {images.shape[1]} values, got {mean_t.numel()}/{std_t.numel()}")
    out = images.clone()
    n = torch.arange(len(images), device=images.device)
    out[n, :, y.to(images.device), x.to(images.device)] = (colour.to(images) - mean_t) / std_t
    return out


@dataclass(frozen=True)
class OnePixelResult:
    """Per image (``B``): the attack pixel ``x, y, colour (B, C)`` in pixel space, the class
    before / after, the original class's probability before / after, success (top-1 changed,
    checked on the painted image), queries to the model, generations, and seconds per image (the
    batch's wall time / B: reported by the caller, never put into result rows)."""

    x: torch.Tensor
    y: torch.Tensor
    colour: torch.Tensor
    class_before: torch.Tensor
    class_after: torch.Tensor
    prob_before: torch.Tensor
    prob_after: torch.Tensor
    success: torch.Tensor
    queries: torch.Tensor
    generations: torch.Tensor
    seconds_per_image: float

    def rows(self) -> list[dict[str, Any]]:
        """One dict per image (for a DataFrame / CSV); the timing is left out (it is no result)."""
        return [
            {"x": int(self.x[i]), "y": int(self.y[i]),
             **{f"colour_{c}": float(self.colour[i, c]) for c in range(self.colour.shape[1])},
             "class_before": int(self.class_before[i]), "class_after": int(self.class_after[i]),
             "prob_before": float(self.prob_before[i]), "prob_after": float(self.prob_after[i]),
             "success": bool(self.success[i]), "queries": int(self.queries[i]),
             "generations": int(self.generations[i])}
            for i in range(len(self.x))
        ]


@torch.no_grad()
def _probabilities(model: nn.Module, images: torch.Tensor, eval_batch: int) -> torch.Tensor:
    return torch.cat([F.softmax(model(chunk), dim=1) for chunk in images.split(eval_batch)])


def one_pixel_attack(model: nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                     config: DEConfig = SU2019, seed: int = 0, eval_batch: int = 512) -> OnePixelResult:
    """Untargeted one-pixel attack on the normalised ``images (B, C, H, W)`` against each image's
    top-1 class.

    Args:
        model: classifier on normalised images (run in eval mode; its flags are restored).
        mean, std: the model's normalisation (``C`` values each), to paint in pixel space.
        config: differential evolution settings (the budget).
        eval_batch: candidate images per forward pass.

    Returns:
        :class:`OnePixelResult`.
    """
    with explanation_scope(model), torch.no_grad():
        return _one_pixel_attack(model, images.detach(), mean, std, config, seed, eval_batch)


def _one_pixel_attack(model: nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                      config: DEConfig, seed: int, eval_batch: int) -> OnePixelResult:
    start = time.perf_counter()
    batch, channels, height, width = images.shape
    probs = _probabilities(model, images, eval_batch)
    label = probs.argmax(1)

    def objective(population: torch.Tensor, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, p, _ = population.shape
        x, y, colour = decode_pixels(population.reshape(n * p, -1), height, width)
        owner = rows.repeat_interleave(p).to(images.device)
        energies, done = [], []
        for idx in torch.arange(n * p).split(eval_batch):
            painted = paint_pixels(images[owner[idx]], x[idx], y[idx], colour[idx], mean, std)
            out = _probabilities(model, painted, eval_batch)
            target = label[owner[idx]]
            energies.append(out.gather(1, target[:, None])[:, 0].cpu())
            done.append((out.argmax(1) != target).cpu())
        return torch.cat(energies).view(n, p), torch.cat(done).view(n, p)

    result = differential_evolution(objective, batch, 2 + channels, config, seed)
    x, y, colour = decode_pixels(result.x, height, width)
    after = _probabilities(model, paint_pixels(images, x, y, colour, mean, std), eval_batch)
    class_after = after.argmax(1)
    seconds = (time.perf_counter() - start) / max(batch, 1)
    return OnePixelResult(
        x=x, y=y, colour=colour, class_before=label.cpu(), class_after=class_after.cpu(),
        prob_before=probs.gather(1, label[:, None])[:, 0].cpu(),
        prob_after=after.gather(1, label[:, None])[:, 0].cpu(),
        success=(class_after != label).cpu(), queries=result.evaluations + 1, generations=result.generations,
        seconds_per_image=seconds,
    )


@contextlib.contextmanager
def _seeded_torchattacks_solver(seed: int) -> Iterator[None]:
    """While open, ``torchattacks.OnePixel`` draws from its own ``RandomState`` seeded with ``seed``.

    torchattacks calls its copy of scipy's solver without a ``seed``, i.e. on numpy's *global*
    generator. Instead of reseeding that, the solver it calls is wrapped to receive a private
    generator (a ``RandomState`` on a fresh PCG64 bit generator, the interface its copy of scipy
    expects); the original function is put back on exit."""
    original = _torchattacks_onepixel.differential_evolution
    rng = np.random.RandomState(np.random.PCG64(seed))

    def seeded(*args: Any, **kwargs: Any) -> Any:
        kwargs["seed"] = rng
        return original(*args, **kwargs)

    _torchattacks_onepixel.differential_evolution = seeded
    try:
        yield
    finally:
        _torchattacks_onepixel.differential_evolution = original


def torchattacks_one_pixel(model: nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                           popsize: int, maxiter: int, seed: int = 0, eval_batch: int = 512) -> OnePixelResult:
    """The same attack by ``torchattacks.OnePixel`` (3.3.0: scipy's solver, ``best1bin``, F dithered
    in (0.5, 1), CR = 1, random init, one image at a time, stops when the best member succeeds:
    :func:`torchattacks_config`), for comparison; the pixel is read back from the difference of the
    images. ``popsize`` is the total (torchattacks divides it by the dimension and truncates, so
    pass a multiple of ``2 + C``), ``maxiter`` its ``steps``. Seeded with a private generator
    (the global numpy state is left alone).
    """
    start = time.perf_counter()
    pixels = to_pixels(images.detach().cpu(), mean, std)
    wrapped = PixelSpaceModel(model, mean, std)
    with explanation_scope(wrapped):
        label = _probabilities(wrapped, pixels, eval_batch).argmax(1)
        attack = torchattacks.OnePixel(wrapped, pixels=1, steps=maxiter, popsize=popsize, inf_batch=eval_batch)
        with _seeded_torchattacks_solver(seed):
            adversarial = attack(pixels, label).cpu()
        seconds = (time.perf_counter() - start) / max(len(images), 1)
        probs = _probabilities(wrapped, pixels, eval_batch)
        after = _probabilities(wrapped, adversarial, eval_batch)
    changed = (adversarial - pixels).abs().sum(1)  # (B, H, W)
    flat = changed.flatten(1).argmax(1)
    y, x = flat // images.shape[-1], flat % images.shape[-1]
    colour = adversarial[torch.arange(len(images)), :, y, x]
    class_after = after.argmax(1)
    steps = torch.full((len(images),), -1, dtype=torch.long)  # torchattacks does not report them
    return OnePixelResult(
        x=x, y=y, colour=colour, class_before=label, class_after=class_after,
        prob_before=probs.gather(1, label[:, None])[:, 0], prob_after=after.gather(1, label[:, None])[:, 0],
        success=class_after != label, queries=steps, generations=steps, seconds_per_image=seconds,
    )

def attacked_maps(model: nn.Module, layer: nn.Module, images: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                  colour: torch.Tensor, class_before: torch.Tensor, class_after: torch.Tensor,
                  mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Grad-CAM maps ``(B, H, W)`` (at input resolution) of successful attacks: *before*, the
    original top-1 class on the original ``images``; *after*, the new top-1 class on the images
    with pixel ``(x, y)`` painted ``colour`` (pixel space)."""
    device = images.device
    attacked = paint_pixels(images, x, y, colour, mean, std)
    before = grad_cam(model, layer, images, class_before.to(device)).cpu()
    after = grad_cam(model, layer, attacked, class_after.to(device)).cpu()
    return before, after
