"""One-pixel attack (Su, Vargas and Sakurai 2019) by differential evolution, vectorised in torch.

A candidate is one pixel ``(x, y, c_1..c_C)``: its column, its row and its colour in pixel space
[0, 1]. Differential evolution (Storn and Price 1997) searches the unit cube ``[0, 1]^(2 + C)``
(scipy's internal scaling): ``x = floor(u_0 * W)``, ``y = floor(u_1 * H)``, ``c = u_2..``. The
objective is the softmax probability of the originally predicted class (untargeted attack, as KTH
and torchattacks); an image is done as soon as one evaluated candidate changes the top-1 class.

Su et al.'s setting (Sec. III-C of their paper) is :data:`SU2019`: a population of 400, at most 100
generations, the mutant ``x_r1 + F (x_r2 - x_r3)`` with F = 0.5 (DE/rand/1), no crossover step
(the child is the mutant: CR = 1), each child against its own parent, coordinates drawn uniformly
and colours from N(128, 127) (in 0..255; here clipped to [0, 1]). Two departures, both documented
where used: they stop a non-targeted ImageNet attack when the true class's probability falls below
5 % (ours: at the first change of the top-1 class), and they do not say how out-of-range children
are handled (ours: redrawn uniformly, scipy's rule).

Unlike scipy's and torchattacks' solvers (one image at a time, a Python loop over the candidates to
paint them), every generation paints and evaluates the populations of *all* images still running
as one batch (split into ``eval_batch`` chunks for memory), and images stop independently.

Colour: the pixel is set in pixel space [0, 1] and then normalised with the model's own mean and
std, ``(c - mean) / std``. (KTH normalised the attack pixel with blue std 0.224 instead of 0.225.)

Where the flipping pixel falls in the Grad-CAM map is read as a percentile rank
(:func:`map_value_at`) and compared with its null, the percentile of a uniformly random pixel of
the same map (:func:`null_percentile`, :func:`random_pixel_test`). No function here touches a
global random number generator: every draw comes from a ``torch.Generator`` or a numpy generator
seeded by the caller.
"""

from __future__ import annotations

import contextlib
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import torchattacks
import torchattacks.attacks.onepixel as _torchattacks_onepixel
from torch import nn
from torch.utils.data import Dataset

from gradcam_lib.attacks import PixelSpaceModel, to_pixels
from gradcam_lib.methods import grad_cam
from gradcam_lib.models import ModelEntry
from gradcam_lib.results import dataset_fingerprint, model_fingerprint, run_key, run_resumable
from gradcam_lib.stats import mean_ci, paired_difference, wilson_ci

__all__ = [
    "SU2019",
    "DEConfig",
    "DEResult",
    "OnePixelResult",
    "RandomPixelTest",
    "attacked_maps",
    "decode_pixels",
    "differential_evolution",
    "evaluate_sensitivity",
    "map_value_at",
    "null_percentile",
    "one_pixel_attack",
    "paint_pixels",
    "pixel_percentiles",
    "random_pixel_test",
    "sensitivity_rows",
    "sensitivity_table",
    "torchattacks_config",
    "torchattacks_one_pixel",
]

# (population (B', P, D) in the unit cube, rows (B',) of the problems it belongs to)
#   -> (energies (B', P), done (B', P) bool: this candidate already solves its problem)
Objective = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DEConfig:
    """Differential evolution settings; the defaults are Su et al.'s (:data:`SU2019`).

    Attributes:
        popsize: candidates per problem (the total, as Su et al.'s 400; scipy's and torchattacks'
            ``popsize`` is a multiplier of the dimension instead).
        maxiter: generations after the initial population; at most ``popsize * (maxiter + 1)``
            evaluations per problem.
        mutation: F, or ``(lo, hi)``: a fresh F drawn uniformly per generation (scipy's dithering).
        recombination: binomial crossover probability CR; 1.0 = no crossover (the child is the
            mutant: Su et al., torchattacks).
        strategy: ``"rand1"`` (r1 + F (r2 - r3), Su et al.) or ``"best1"`` (mutant = best + F (r1 -
            r2), scipy's default ``best1bin``, torchattacks).
        init: ``"su2019"`` (coordinates 0 and 1 uniform, the others -- the colour -- from
            N(128/255, 127/255) clipped to [0, 1]: Su et al.'s N(128, 127) on 0..255),
            ``"random"`` (uniform, torchattacks) or ``"latinhypercube"`` (scipy's default).
    """

    popsize: int = 400
    maxiter: int = 100
    mutation: float | tuple[float, float] = 0.5
    recombination: float = 1.0
    strategy: str = "rand1"
    init: str = "su2019"

    def __post_init__(self) -> None:
        if self.popsize < 5:
            raise ValueError(f"popsize must be >= 5 (mutation draws 3 others), got {self.popsize}")
        if self.maxiter < 0:
            raise ValueError(f"maxiter must be >= 0, got {self.maxiter}")
        if self.strategy not in ("best1", "rand1"):
            raise ValueError(f"strategy must be 'best1' or 'rand1', got {self.strategy!r}")
        if self.init not in ("su2019", "random", "latinhypercube"):
            raise ValueError(f"init must be 'su2019', 'random' or 'latinhypercube', got {self.init!r}")
        if not 0.0 <= self.recombination <= 1.0:
            raise ValueError(f"recombination must lie in [0, 1], got {self.recombination}")


#: Su, Vargas and Sakurai (2019), Sec. III-C: 400 candidates, 100 generations, DE/rand/1, F = 0.5,
#: no crossover, uniform coordinates and N(128, 127) colours.
SU2019 = DEConfig()


def torchattacks_config(popsize: int, maxiter: int) -> DEConfig:
    """The setting of ``torchattacks.OnePixel`` 3.3.0 (scipy's ``best1bin``, F dithered in
    (0.5, 1), CR = 1, uniform initialisation) with a total population ``popsize``."""
    return DEConfig(popsize=popsize, maxiter=maxiter, mutation=(0.5, 1.0), recombination=1.0, strategy="best1",
                    init="random")


@dataclass(frozen=True)
class DEResult:
    """Per problem: the solution ``x (B, D)`` in the unit cube, its energy, whether an evaluated
    candidate was ``done``, generations run and objective evaluations spent."""

    x: torch.Tensor
    energy: torch.Tensor
    done: torch.Tensor
    generations: torch.Tensor
    evaluations: torch.Tensor


def _initial_population(batch: int, popsize: int, dim: int, init: str, generator: torch.Generator) -> torch.Tensor:
    if init == "random":
        return torch.rand(batch, popsize, dim, generator=generator)
    if init == "su2019":
        # Su et al.: coordinates U(1, W) / U(1, H), RGB N(128, 127) -- in the unit cube.
        population = torch.rand(batch, popsize, dim, generator=generator)
        colour = 128.0 / 255.0 + 127.0 / 255.0 * torch.randn(batch, popsize, max(dim - 2, 0), generator=generator)
        population[..., 2:] = colour.clamp(0.0, 1.0)
        return population
    # Latin hypercube (scipy): one point in each of popsize strata per dimension, strata shuffled.
    jitter = torch.rand(batch, popsize, dim, generator=generator)
    strata = torch.rand(batch, popsize, dim, generator=generator).argsort(dim=1)
    return (strata + jitter) / popsize


def _distinct_others(batch: int, popsize: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``(B, P, count)`` indices, for member i ``count`` distinct members other than i, uniform."""
    own = torch.arange(popsize).view(1, popsize, 1)
    picks = torch.randint(0, popsize - 1, (batch, popsize, count), generator=generator)
    picks = picks + (picks >= own).long()  # skip i
    for k in range(1, count):
        while True:
            clash = (picks[..., k : k + 1] == picks[..., :k]).any(-1)
            if not clash.any():
                break
            fresh = torch.randint(0, popsize - 1, (int(clash.sum()),), generator=generator)
            picks[..., k][clash] = fresh + (fresh >= own.expand(batch, popsize, 1)[..., 0][clash]).long()
    return picks


def _record(done: torch.Tensor, energies: torch.Tensor, candidates: torch.Tensor,
            best_x: torch.Tensor, best_e: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """For problems (``rows``) with a done candidate, store the done candidate of lowest energy.
    Returns which of ``rows`` finished."""
    finished = done.any(1)
    if finished.any():
        masked = torch.where(done, energies, torch.full_like(energies, float("inf")))
        pick = masked.argmin(1)
        sel = finished.nonzero().squeeze(1)
        best_x[rows[sel]] = candidates[sel, pick[sel]]
        best_e[rows[sel]] = energies[sel, pick[sel]]
    return finished


def differential_evolution(objective: Objective, batch: int, dim: int, config: DEConfig, seed: int = 0) -> DEResult:
    """Minimise ``batch`` independent problems on ``[0, 1]^dim`` at once, deferred updating: each
    generation, every running problem's trial population is evaluated in one call.

    Mutation ``best1``/``rand1`` with F (dithered per generation when a range), binomial crossover
    with CR and one forced mutant coordinate (scipy's ``fill_point``), out-of-cube coordinates
    redrawn uniformly (scipy's rule), greedy selection (a trial replaces its parent when not
    worse). A problem stops when any evaluated candidate is done; its solution is then the done
    candidate of lowest energy, otherwise the best member after ``maxiter`` generations.

    Deterministic for a given ``seed``, ``batch`` and objective (CPU random numbers).
    """
    generator = torch.Generator().manual_seed(seed)
    popsize = config.popsize
    population = _initial_population(batch, popsize, dim, config.init, generator)
    rows = torch.arange(batch)
    energies, done = objective(population, rows)
    energies, done = energies.detach().float().cpu(), done.cpu()
    best_x = population[rows, energies.argmin(1)].clone()
    best_e = energies.min(1).values.clone()
    finished = _record(done, energies, population, best_x, best_e, rows)
    generations = torch.zeros(batch, dtype=torch.long)
    evaluations = torch.full((batch,), popsize, dtype=torch.long)
    for _ in range(config.maxiter):
        active = (~finished).nonzero().squeeze(1)
        if len(active) == 0:
            break
        pop, energy = population[active], energies[active]
        n = len(active)
        if isinstance(config.mutation, tuple):
            lo, hi = config.mutation
            scale = lo + (hi - lo) * torch.rand((), generator=generator)
        else:
            scale = torch.tensor(float(config.mutation))
        others = _distinct_others(n, popsize, 3, generator)
        gather = lambda k: pop[torch.arange(n).view(n, 1), others[..., k]]  # noqa: E731, B023  called in this iteration only
        if config.strategy == "best1":
            base = pop[torch.arange(n), energy.argmin(1)].unsqueeze(1)
            mutant = base + scale * (gather(0) - gather(1))
        else:
            mutant = gather(0) + scale * (gather(1) - gather(2))
        cross = torch.rand(n, popsize, dim, generator=generator) < config.recombination
        fill = torch.randint(0, dim, (n, popsize, 1), generator=generator)
        cross.scatter_(2, fill, True)
        trial = torch.where(cross, mutant, pop)
        outside = (trial < 0) | (trial > 1)
        trial = torch.where(outside, torch.rand(trial.shape, generator=generator), trial)
        trial_e, trial_done = objective(trial, active)
        trial_e, trial_done = trial_e.detach().float().cpu(), trial_done.cpu()
        better = trial_e <= energy
        population[active] = torch.where(better.unsqueeze(-1), trial, pop)
        energies[active] = torch.where(better, trial_e, energy)
        generations[active] += 1
        evaluations[active] += popsize
        improved = energies[active].min(1)
        running = ~finished[active]
        best_x[active[running]] = population[active[running], improved.indices[running]]
        best_e[active[running]] = improved.values[running]
        finished[active] |= _record(trial_done, trial_e, trial, best_x, best_e, active)
    return DEResult(best_x, best_e, finished, generations, evaluations)


# ----------------------------------------------------------------------------------------------
# The one-pixel attack
# ----------------------------------------------------------------------------------------------


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
    batch's wall time / B)."""

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

    def rows(self) -> list[dict]:
        """One dict per image (for a DataFrame / CSV)."""
        return [
            {"x": int(self.x[i]), "y": int(self.y[i]),
             **{f"colour_{c}": float(self.colour[i, c]) for c in range(self.colour.shape[1])},
             "class_before": int(self.class_before[i]), "class_after": int(self.class_after[i]),
             "prob_before": float(self.prob_before[i]), "prob_after": float(self.prob_after[i]),
             "success": bool(self.success[i]), "queries": int(self.queries[i]),
             "generations": int(self.generations[i]), "seconds_per_image": self.seconds_per_image}
            for i in range(len(self.x))
        ]


@torch.no_grad()
def _probabilities(model: nn.Module, images: torch.Tensor, eval_batch: int) -> torch.Tensor:
    return torch.cat([F.softmax(model(chunk), dim=1) for chunk in images.split(eval_batch)])


@torch.no_grad()
def one_pixel_attack(model: nn.Module, images: torch.Tensor, mean: Sequence[float], std: Sequence[float],
                     config: DEConfig = DEConfig(), seed: int = 0, eval_batch: int = 512) -> OnePixelResult:
    """Untargeted one-pixel attack on the normalised ``images (B, C, H, W)`` against each image's
    top-1 class.

    Args:
        model: classifier on normalised images (put in eval mode here).
        mean, std: the model's normalisation (``C`` values each), to paint in pixel space.
        config: differential evolution settings (the budget).
        eval_batch: candidate images per forward pass.

    Returns:
        :class:`OnePixelResult`.
    """
    model.eval()
    start = time.perf_counter()
    images = images.detach()
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

    def seeded(*args, **kwargs):
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
    model.eval()
    start = time.perf_counter()
    pixels = to_pixels(images.detach().cpu(), mean, std)
    wrapped = PixelSpaceModel(model, mean, std).eval()
    with torch.no_grad():
        label = _probabilities(wrapped, pixels, eval_batch).argmax(1)
    attack = torchattacks.OnePixel(wrapped, pixels=1, steps=maxiter, popsize=popsize, inf_batch=eval_batch)
    with _seeded_torchattacks_solver(seed):
        adversarial = attack(pixels, label).cpu()
    seconds = (time.perf_counter() - start) / max(len(images), 1)
    changed = (adversarial - pixels).abs().sum(1)  # (B, H, W)
    flat = changed.flatten(1).argmax(1)
    y, x = flat // images.shape[-1], flat % images.shape[-1]
    colour = adversarial[torch.arange(len(images)), :, y, x]
    with torch.no_grad():
        probs = _probabilities(wrapped, pixels, eval_batch)
        after = _probabilities(wrapped, adversarial, eval_batch)
    class_after = after.argmax(1)
    steps = torch.full((len(images),), -1, dtype=torch.long)  # torchattacks does not report them
    return OnePixelResult(
        x=x, y=y, colour=colour, class_before=label, class_after=class_after,
        prob_before=probs.gather(1, label[:, None])[:, 0], prob_after=after.gather(1, label[:, None])[:, 0],
        success=class_after != label, queries=steps, generations=steps, seconds_per_image=seconds,
    )


def map_value_at(maps: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The value of each map ``(B, H, W)`` at its pixel ``(x[b], y[b])``, raw and as a percentile
    rank within its own map: 100 x the share of the map's pixels with a strictly smaller value
    (0 = no pixel is less important; a zero value on a map with zeros has rank 0)."""
    b = torch.arange(len(maps))
    values = maps[b, y, x]
    below = (maps.flatten(1) < values[:, None]).float().mean(1)
    return values, 100.0 * below


def pixel_percentiles(maps: torch.Tensor) -> torch.Tensor:
    """The percentile rank (:func:`map_value_at`'s definition) of *every* pixel of each map
    ``(B, H, W)`` within its own map, ``(B, H, W)``: 100 x (pixels strictly below) / (H W).
    Ties share the lowest rank (a map's zeros all have rank 0)."""
    flat = maps.flatten(1).contiguous()
    ordered = flat.sort(1).values
    below = torch.searchsorted(ordered, flat, side="left")
    return (100.0 * below.double() / flat.shape[1]).view(maps.shape)


def null_percentile(maps: torch.Tensor) -> torch.Tensor:
    """The expected percentile rank of a uniformly random pixel of each map ``(B, H, W)``: the
    null of :func:`map_value_at`'s rank when the attacked pixel knows nothing of the map.

    With N pixels and ``n_v`` pixels of value v, a random pixel has on average
    (N^2 - sum_v n_v^2) / (2 N) pixels strictly below it, so the null is
    ``50 (1 - sum_v (n_v / N)^2)``: 50 (N - 1) / N without ties, and for a share z of zeros and
    distinct other values ``50 (1 - z^2 - (1 - z) / N)`` -- about 37.5 at z = 1/2, not 50. Computed
    as the mean of :func:`pixel_percentiles`."""
    return pixel_percentiles(maps).flatten(1).mean(1)


@dataclass(frozen=True)
class RandomPixelTest:
    """The attacked pixel against a uniformly random pixel of the same map, over ``n`` attacked
    images: ``observed`` the mean score at the attacked pixels, ``null`` its expectation for random
    pixels, ``difference`` = observed - null with its paired bootstrap interval ``[low, high]``
    over images, and the two-sided randomisation ``p_value``."""

    observed: float
    null: float
    difference: float
    low: float
    high: float
    p_value: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """True when the interval of the difference lies on one side of 0."""
        return bool(self.low > 0 or self.high < 0)

    def __str__(self) -> str:
        return (f"observed {self.observed:.1f} vs random pixel {self.null:.1f}: {self.difference:+.1f} "
                f"[{self.low:+.1f}, {self.high:+.1f}], randomisation p = {self.p_value:.2g} (n = {self.n})")


def random_pixel_test(scores: torch.Tensor, x: torch.Tensor, y: torch.Tensor, draws: int = 10_000,
                      seed: int = 0, confidence: float = 0.95) -> RandomPixelTest:
    """Is the attacked pixel ``(x[b], y[b])`` placed differently in its score map ``(B, H, W)``
    than a random pixel? (scores: :func:`pixel_percentiles` of the Grad-CAM maps, or an indicator
    such as ``map == 0``.)

    H0: each attacked pixel is a uniform draw from its own map's pixels, independently across the
    ``B`` images. Statistic: T = mean_b (s_b - mu_b), with s_b the score at the attacked pixel and
    mu_b the mean score of map b (the exact null expectation, :func:`null_percentile` for ranks).
    Its null distribution is simulated exactly by drawing one uniform pixel per map ``draws`` times
    (numpy generator seeded with ``seed``); two-sided p = min(1, 2 min(P(T* <= t), P(T* >= t))),
    each with the (1 + count) / (1 + draws) correction. The interval of T is
    :func:`gradcam_lib.stats.paired_difference` of (s_b, mu_b) over images.
    """
    if len(scores) == 0:
        nan = float("nan")
        return RandomPixelTest(nan, nan, nan, nan, nan, nan, 0)
    flat = scores.flatten(1).double().cpu().numpy()
    batch, size = flat.shape
    index = (y.long() * scores.shape[-1] + x.long()).cpu().numpy()
    observed = flat[np.arange(batch), index]
    centre = flat.mean(1)
    statistic = float((observed - centre).mean())
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, size, size=(draws, batch))
    simulated = (flat[np.arange(batch)[None, :], picks] - centre[None, :]).mean(1)
    tol = 1e-9 * max(1.0, float(np.abs(flat).max()))
    lower = (1 + int((simulated <= statistic + tol).sum())) / (1 + draws)
    upper = (1 + int((simulated >= statistic - tol).sum())) / (1 + draws)
    interval = paired_difference(observed, centre, confidence=confidence, seed=seed)
    return RandomPixelTest(float(observed.mean()), float(centre.mean()), statistic, interval.low, interval.high,
                           min(1.0, 2.0 * min(lower, upper)), batch)


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


def sensitivity_rows(model: nn.Module, layer: nn.Module, images: torch.Tensor, result: OnePixelResult,
                     mean: Sequence[float], std: Sequence[float]) -> list[dict]:
    """The sensitivity axiom on successful one-pixel attacks (KTH's experiment): the Grad-CAM map
    value at the attacked pixel, *before* (original top-1 class, original image) and *after* (new
    top-1 class, attacked image), raw, as a percentile rank within its map
    (:func:`map_value_at`), and relative to the map's maximum; beside it, each map's null -- the
    expected rank of a random pixel (:func:`null_percentile`) -- and its share of zero pixels (a
    random pixel's chance of a zero value). One row per successful attack.
    """
    hit = result.success.nonzero().squeeze(1)
    if len(hit) == 0:
        return []
    original = images[hit.to(images.device)]
    x, y = result.x[hit], result.y[hit]
    maps = attacked_maps(model, layer, original, x, y, result.colour[hit], result.class_before[hit],
                         result.class_after[hit], mean, std)
    rows: dict[str, list] = {"index": hit.tolist()}
    for when, heat in zip(("before", "after"), maps, strict=True):
        value, rank = map_value_at(heat, x, y)
        peak = heat.flatten(1).amax(1)
        rows[f"{when}_value"] = value.tolist()
        rows[f"{when}_percentile"] = rank.tolist()
        rows[f"{when}_relative"] = torch.where(
            peak > 0, value / peak.clamp(min=1e-30), torch.zeros_like(value)
        ).tolist()
        rows[f"{when}_null_percentile"] = null_percentile(heat).tolist()
        rows[f"{when}_zero_share"] = (heat.flatten(1) == 0).double().mean(1).tolist()
    return [dict(zip(rows, values, strict=True)) for values in zip(*rows.values(), strict=True)]


def evaluate_sensitivity(entry: ModelEntry, dataset: Dataset, dataset_name: str, results_dir: str | Path,
                         config: DEConfig, seed: int = 0, batch_size: int = 64, device: str = "cpu",
                         eval_batch: int = 512) -> pd.DataFrame:
    """Attack every image of ``dataset`` (items: :class:`~gradcam_lib.datasets.Sample`) with
    :func:`one_pixel_attack` and measure :func:`sensitivity_rows` on the successes, resumably, into
    ``results_dir/<model>_<dataset>_<settings hash>.csv``. Each batch is seeded from ``seed`` and
    its first image id, so a resumed run gives the rows of an uninterrupted one.

    Returns:
        One row per image (``success`` False rows carry NaN map values), with model, dataset and the
        budget (``popsize``, ``maxiter``).
    """
    mean, std = entry.transform.mean, entry.transform.std
    settings = {"model": entry.name, "weights": model_fingerprint(entry.model), "dataset": dataset_name,
                "data": dataset_fingerprint(dataset),
                "config": asdict(config), "seed": seed, "batch_size": batch_size, "layer": entry.layer_name}

    def evaluate_batch(images: torch.Tensor, samples: list) -> list[dict]:
        batch_seed = seed + zlib.crc32(samples[0].image_id.encode())
        result = one_pixel_attack(entry.model, images, mean, std, config, batch_seed, eval_batch)
        rows = result.rows()
        for row, sample in zip(rows, samples, strict=True):
            row["image_id"] = sample.image_id
        for measured in sensitivity_rows(entry.model, entry.layer, images, result, mean, std):
            rows[measured.pop("index")].update(measured)
        return rows

    path = Path(results_dir) / f"{entry.name}_{dataset_name}_{run_key(settings)}.csv"
    rows = run_resumable(dataset, evaluate_batch, path, batch_size=batch_size, device=device,
                         description=f"one-pixel {entry.name} {dataset_name}")
    for when in ("before", "after"):
        for measure in ("value", "percentile", "relative", "null_percentile", "zero_share"):
            if f"{when}_{measure}" not in rows:
                rows[f"{when}_{measure}"] = np.nan
    return rows.assign(model=entry.name, dataset=dataset_name, popsize=config.popsize, maxiter=config.maxiter)


def sensitivity_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per run (dataset, model, popsize, maxiter): images attempted, successes, success rate (%) with
    its Wilson 95 % interval over images, mean queries and seconds per image, and over the
    successful attacks the Grad-CAM value at the attacked pixel before / after (mean with its
    bootstrap 95 % interval over attacked images, sd, min, max: KTH's statistics), its mean
    percentile rank within the map beside the random-pixel null (:func:`null_percentile`), and the
    share (%) of attacks where it is exactly zero (Wilson interval) beside a random pixel's chance
    of a zero (the maps' mean share of zero pixels)."""
    out = []
    keys = ["dataset", "model", "popsize", "maxiter"]
    for key, group in rows.groupby(keys, sort=False):
        hit = group[group["success"].astype(bool)]
        share, low, high = wilson_ci(group["success"].astype(bool).to_numpy())
        row = {
            **dict(zip(keys, key, strict=True)),
            "attempted": len(group),
            "successes": len(hit),
            "success_%": 100 * share,
            "success_low": 100 * low,
            "success_high": 100 * high,
            "queries": group["queries"].mean(),
            "s_per_image": group["seconds_per_image"].mean(),
        }
        for when in ("before", "after"):
            values = hit[f"{when}_value"].to_numpy(dtype=float)
            mean, mean_low, mean_high = mean_ci(values)
            zero, zero_low, zero_high = wilson_ci(values == 0)
            row.update({f"{when}_mean": mean, f"{when}_mean_low": mean_low, f"{when}_mean_high": mean_high,
                        f"{when}_sd": values.std() if len(values) else np.nan,
                        f"{when}_min": values.min() if len(values) else np.nan,
                        f"{when}_max": values.max() if len(values) else np.nan,
                        f"{when}_pct": hit[f"{when}_percentile"].mean(),
                        f"{when}_null_pct": hit[f"{when}_null_percentile"].mean(),
                        f"{when}_zero_%": 100 * zero, f"{when}_zero_low": 100 * zero_low,
                        f"{when}_zero_high": 100 * zero_high,
                        f"{when}_zero_null_%": 100 * hit[f"{when}_zero_share"].mean()})
        out.append(row)
    return pd.DataFrame(out)
