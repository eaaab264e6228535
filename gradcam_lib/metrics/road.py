"""ROAD: Remove And Debias (Rong, Leemann, Borisov, Kasneci & Kasneci 2022, "A consistent and
efficient evaluation strategy for attribution methods", ICML, Sec. 4, and their code,
``tleemann/road_evaluation``: ``imputations.py`` ``NoisyLinearImputer``, ``road.py`` ``run_road``).

Removed pixels are not set to a constant but *imputed*: each one takes the weighted mean of its 8
neighbours (weights 1/6 for the 4 direct and 1/12 for the 4 diagonal ones, renormalised by the
weights that fall inside the image), known pixels keep their values, and Gaussian noise (sigma
0.01) is added to the imputed pixels, so that the shape of the removed region leaks no class
information. The imputation is a sparse linear system per image and channel; here it is solved for
a whole batch at once, on the tensors' device, by Jacobi-preconditioned conjugate gradients with the
batch's matrix as one sparse CSR product (the reference and pytorch-grad-cam call ``scipy``'s
``spsolve`` per image).

The score is the softmax probability of the target class (ROAD's ``road_eval`` reports it next to
the accuracy: the mean probability of the class the explanation was computed for).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import torch
from torch import nn

from gradcam_lib.methods import explanation_scope
from gradcam_lib.metrics.occlusion import class_probabilities
from gradcam_lib.validate import check_finite, check_maps_for_images

__all__ = ["DEFAULT_PERCENTAGES", "combined_score", "noisy_linear_imputation", "removal_masks", "road_combined",
           "road_curves"]

#: ROAD's and pytorch-grad-cam's grid: 10 %, 20 %, ..., 90 % of the pixels removed.
DEFAULT_PERCENTAGES: tuple[float, ...] = (10, 20, 30, 40, 50, 60, 70, 80, 90)
_DIRECT, _DIAGONAL = 1 / 6, 1 / 12  # ROAD's ``neighbors_weights``


_OFFSETS = [((dy, dx), _DIRECT if dy == 0 or dx == 0 else _DIAGONAL)
            for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


def _system(removed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch's imputation system over its n removed pixels (all images together): ``(flat
    position (n,), image of each (n,), degree d (n, 1), neighbour (n, 8), weight (n, 8))``. A
    neighbour is a position in the whole batch ``B * H * W``; ``weight`` is 0 outside the image."""
    _b, h, w = removed.shape
    position = removed.flatten().nonzero().squeeze(1)
    image, rest = position // (h * w), position % (h * w)
    y, x = rest // w, rest % w
    neighbours, weights = [], []
    for (dy, dx), weight in _OFFSETS:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        neighbours.append(torch.where(inside, image * h * w + ny.clamp(0, h - 1) * w + nx.clamp(0, w - 1), position))
        weights.append(inside.to(torch.float64) * weight)
    neighbour, weight_matrix = torch.stack(neighbours, 1), torch.stack(weights, 1)
    return position, image, weight_matrix.sum(1, keepdim=True), neighbour, weight_matrix


def _solve(
    images: torch.Tensor, removed: torch.Tensor, rtol: float, max_iter: int | None
) -> tuple[torch.Tensor, int]:
    """The noiseless imputation by Jacobi-preconditioned CG on the removed pixels only (one sparse
    CSR matrix for the batch, block-diagonal by image, times an ``(n, C)`` block of vectors), every
    image and channel a separate system solved in lockstep (float64).
    Returns ``(images with the removed pixels solved, iterations)``."""
    b, c, h, w = images.shape
    position, image, degree, neighbour, weight = _system(removed)
    values = images.permute(0, 2, 3, 1).reshape(-1, c).to(torch.float64, copy=True)  # (B * H * W, C)
    slot = torch.full((b * h * w,), len(position), dtype=torch.long, device=images.device)
    slot[position] = torch.arange(len(position), device=images.device)
    unknown = slot[neighbour]  # (n, 8): index of a removed neighbour, n (a zero row) for a known one
    is_unknown = (unknown < len(position)).to(torch.float64)
    known_weight = weight * (1 - is_unknown)
    unknown_weight = weight * is_unknown

    n = len(position)
    rows = torch.arange(n, device=images.device)[:, None].expand(-1, 9)
    columns = torch.cat([torch.arange(n, device=images.device)[:, None], unknown.clamp(max=max(n - 1, 0))], 1)
    entries = torch.cat([degree, -unknown_weight], 1)  # zero entries for known neighbours, dropped below
    keep = entries != 0
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        matrix = torch.sparse_coo_tensor(torch.stack([rows[keep], columns[keep]]), entries[keep], (n, n),
                                         check_invariants=False).to_sparse_csr()

    def operator(u: torch.Tensor) -> torch.Tensor:  # (D - W_removed) u, u: (n, C)
        return matrix @ u

    def per_system(v: torch.Tensor) -> torch.Tensor:  # (n, C) -> (B, C) sums over each image's pixels
        return v.new_zeros(b, c).index_add_(0, image, v)

    rhs = (values[neighbour] * known_weight[..., None]).sum(1)  # (n, C)
    solution = torch.zeros_like(rhs)
    residual = rhs.clone()
    z = residual / degree
    direction = z.clone()
    rz = per_system(residual * z)
    target = rtol**2 * per_system(rhs * rhs)
    limit = max_iter if max_iter is not None else 10 * h * w
    iteration = 0
    while iteration < limit:
        if iteration % 8 == 0 and bool((per_system(residual * residual) <= target).all()):
            break
        iteration += 1
        product = operator(direction)
        curvature = per_system(direction * product)
        alpha = torch.where(curvature > 0, rz / curvature.clamp(min=1e-300), torch.zeros_like(rz))
        solution += alpha[image] * direction
        residual -= alpha[image] * product
        z = residual / degree
        rz_new = per_system(residual * z)
        beta = torch.where(rz > 0, rz_new / rz.clamp(min=1e-300), torch.zeros_like(rz))
        direction = z + beta[image] * direction
        rz = rz_new
    else:
        if not bool((per_system(residual * residual) <= target).all()):
            raise RuntimeError(f"the imputation did not reach rtol={rtol} in {limit} iterations; raise max_iter")
    values[position] = solution
    return values.view(b, h, w, c).permute(0, 3, 1, 2).to(images.dtype), iteration


def noisy_linear_imputation(
    images: torch.Tensor,
    removed: torch.Tensor,
    noise: float = 0.01,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    rtol: float = 1e-8,
    max_iter: int | None = None,
) -> torch.Tensor:
    """ROAD's noisy linear imputation (Rong et al. 2022, Sec. 4; ``NoisyLinearImputer``) for a batch.

    For every removed pixel i and channel, ``d_i x_i - sum_{j removed} w_ij x_j = sum_{j known}
    w_ij v_j``: x_i is the mean of its neighbours j, weighted ``w_ij`` = 1/6 (direct) or 1/12
    (diagonal), renormalised by ``d_i``, the sum of the weights of the neighbours inside the image
    (ROAD's ``sum_neighbors``). The matrix is symmetric and positive definite whenever some pixel is
    known, and is solved by Jacobi-preconditioned conjugate gradients in float64 until every
    system's residual is below ``rtol`` times its right-hand side's norm (``1e-8``: below 1e-6
    agreement with ``spsolve`` on 224 x 224 images). Then ``noise`` x N(0, 1) is added to the
    imputed pixels only; image i's noise is the i-th ``(C, H, W)`` draw from ``generator`` (its
    device), so splitting a batch into chunks draws the same noise; with a sequence of B generators,
    image i's noise is the next draw of the i-th (one stream per image, whatever else is in the
    batch). ``generator=None`` uses a fresh
    ``torch.Generator`` seeded 0 (never the global RNG).

    Args:
        images: ``(B, C, H, W)``.
        removed: ``(B, H, W)`` bool, True where the pixel is imputed (ROAD's bitmask is its
            complement: 1 = kept).

    Returns:
        ``(B, C, H, W)`` in ``images``' dtype; kept pixels unchanged.

    Raises:
        ValueError: ``images`` not ``(B, C, H, W)``, ``removed`` not ``(B, H, W)``, an image with
            every pixel removed (nothing to impute from: the system is singular), or ``noise < 0``.
        RuntimeError: CG did not converge in ``max_iter`` iterations (default ``10 * H * W``).
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    b, c, h, w = images.shape
    if tuple(removed.shape) != (b, h, w):
        raise ValueError(f"removed must be (B, H, W) = {(b, h, w)} to match images, got shape {tuple(removed.shape)}")
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    removed = removed.to(images.device, torch.bool)
    if bool(removed.flatten(1).all(1).any()):
        raise ValueError("removed marks every pixel of an image: the imputation needs at least one known pixel")
    imputed, _ = _solve(images, removed, rtol, max_iter)
    if noise > 0:
        generator = generator if generator is not None else torch.Generator().manual_seed(0)
        streams = [generator] * b if isinstance(generator, torch.Generator) else list(generator)
        if len(streams) != b:
            raise ValueError(f"generator: one per image needed, got {len(streams)} for {b} images")
        draws = torch.stack([torch.randn((c, h, w), generator=g, device=g.device) for g in streams])
        imputed = imputed + noise * draws.to(imputed) * removed[:, None].to(imputed)
    return imputed


def _check_percentages(percentages: Sequence[float]) -> list[float]:
    values = [float(p) for p in percentages]
    if not values:
        raise ValueError("percentages must hold at least one percentage")
    bad = [p for p in values if not 0 < p < 100]  # also refuses NaN
    if bad:
        raise ValueError(f"percentages must lie in (0, 100) (the share of pixels removed), got {bad}")
    return values


def removal_masks(maps: torch.Tensor, percentages: Sequence[float], order: str = "morf") -> torch.Tensor:
    """The pixels ROAD removes: ``(B, H, W)`` maps -> ``(P, B, H, W)`` bool, True = removed.

    Pixels are ranked by descending map value; ties are broken by a stable sort, so of two equal
    values the earlier one in row-major order counts as more relevant (ROAD instead adds 1e-4 x
    N(0, 1) to the maps). k = floor(H * W * p / 100) pixels are removed (ROAD's ``int(N * th_p)``):
    **MoRF** the k most relevant (ranks 0 .. k-1), **LeRF** the k least relevant (the last k of the
    same ranking). Both orders count ``p`` as the share *removed* (ROAD's ``run_road`` with
    ``morf=False`` and pytorch-grad-cam's ``percentile`` count the share kept; over the symmetric
    default grid the average is the same).

    Raises:
        ValueError: ``maps`` not ``(B, H, W)`` or not finite, ``order`` not "morf" / "lerf", or a
            percentage outside (0, 100).
    """
    if maps.dim() != 3:
        raise ValueError(f"maps must be (B, H, W), one 2-D map per image, got shape {tuple(maps.shape)}")
    check_finite("maps", maps)
    if order not in ("morf", "lerf"):
        raise ValueError(f"order must be 'morf' (most relevant first) or 'lerf' (least relevant first), got {order!r}")
    values = _check_percentages(percentages)
    b, h, w = maps.shape
    n = h * w
    ranking = torch.argsort(maps.reshape(b, n), dim=1, descending=True, stable=True)
    rank = torch.empty_like(ranking)
    rank.scatter_(1, ranking, torch.arange(n, device=maps.device).expand(b, -1))
    counts = torch.tensor([math.floor(n * p / 100 + 1e-9) for p in values], device=maps.device)
    if order == "lerf":
        rank = n - 1 - rank
    return (rank[None] < counts[:, None, None]).view(len(values), b, h, w)


def road_curves(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    order: str = "morf",
    noise: float = 0.01,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    batch: int = 64,
) -> torch.Tensor:
    """ROAD's curve (Rong et al. 2022, Sec. 4 and ``run_road``): the target class's softmax
    probability after :func:`removal_masks` pixels (``order`` "morf" or "lerf") are replaced by
    :func:`noisy_linear_imputation`. The ``P x B`` imputed images (percentage-major: image i at
    percentage j is draw ``j * B + i`` of ``generator``, whatever ``batch``; with one generator per
    image, image i's draws come from the i-th, in percentage order) are imputed and scored
    ``batch`` at a time, i.e. ``ceil(P * B / batch)`` solves and forward passes.

    Returns:
        ``(B, P)`` probabilities, column j for ``percentages[j]``.

    Raises:
        ValueError: ``images`` not ``(B, C, H, W)``, ``maps`` not ``(B, H, W)`` of the same B, H, W or
            not finite, ``targets`` not one class index per image, a percentage outside (0, 100), a
            bad ``order`` or ``batch < 1``.
    """
    b, _, _, targets = check_maps_for_images(images, maps, targets)
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    removed = removal_masks(maps.to(images.device), percentages, order).flatten(0, 1)  # (P * B, H, W)
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    if not isinstance(generator, torch.Generator) and len(generator) != b:
        raise ValueError(f"generator: one per image needed, got {len(generator)} for {b} images")
    n_pairs = removed.shape[0]
    scores: list[torch.Tensor] = []
    with explanation_scope(model):
        for start in range(0, n_pairs, batch):
            pairs = torch.arange(start, min(start + batch, n_pairs), device=images.device)
            owners = pairs % b  # the image of each pair
            streams = generator if isinstance(generator, torch.Generator) else [generator[i] for i in owners.tolist()]
            imputed = noisy_linear_imputation(images[owners], removed[pairs], noise, streams)
            scores.append(class_probabilities(model, imputed, targets[owners]))
    return torch.cat(scores).view(-1, b).T


def road_combined(
    model: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    maps: torch.Tensor,
    percentages: Sequence[float] = DEFAULT_PERCENTAGES,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    batch: int = 64,
) -> torch.Tensor:
    """The combined ROAD score, pytorch-grad-cam's ``ROADCombined``: the mean over ``percentages``
    of ``(LeRF - MoRF) / 2``, both at the same share removed (Rong et al. report the two curves
    separately and argue that with ROAD's imputation they rank methods consistently; the combined
    score puts both in one number). Higher is better: removing the least relevant pixels should keep
    the probability, removing the most relevant should lower it. The MoRF curve draws its noise from
    ``generator`` first, then the LeRF curve (:func:`road_curves`). ``(B,)``."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    morf = road_curves(model, images, targets, maps, percentages, "morf", noise, generator, batch)
    lerf = road_curves(model, images, targets, maps, percentages, "lerf", noise, generator, batch)
    return combined_score(morf, lerf)


def combined_score(morf: torch.Tensor, lerf: torch.Tensor) -> torch.Tensor:
    """``(B, P)`` MoRF and LeRF curves at the same percentages -> ``(B,)`` mean of ``(LeRF - MoRF) / 2``."""
    return (lerf - morf).mean(dim=1) / 2
