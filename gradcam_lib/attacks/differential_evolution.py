"""Differential evolution (Storn and Price 1997), vectorised in torch over many problems at once:
the solver of the one-pixel attack (:mod:`gradcam_lib.attacks.one_pixel`).

Su, Vargas and Sakurai's setting (2019, Sec. III-C) is :data:`SU2019`: a population of 400, at most
100 generations, the mutant ``x_r1 + F (x_r2 - x_r3)`` with F = 0.5 (DE/rand/1), no crossover step
(the child is the mutant: CR = 1), each child against its own parent, coordinates drawn uniformly
and colours from N(128, 127) (in 0..255; here clipped to [0, 1]). They do not say how out-of-range
children are handled (ours: redrawn uniformly, scipy's rule). :func:`torchattacks_config` is
``torchattacks.OnePixel``'s setting (scipy's ``best1bin``).

Unlike scipy's solver (one problem at a time), every generation evaluates the trial populations of
*all* problems still running in one call of the objective, and problems stop independently. Every
draw comes from a ``torch.Generator`` seeded by the caller; no global RNG is touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

__all__ = ["SU2019", "DEConfig", "DEResult", "Objective", "differential_evolution", "torchattacks_config"]

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
