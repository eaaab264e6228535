"""Model-parameter randomisation, the first sanity check of Adebayo et al. (NeurIPS 2018, "Sanity
checks for saliency maps", Sec. 3.1): re-draw the learnt weights of some layers and see whether a
saliency method's map changes.

:func:`randomization_stages` cuts a network into *stages*, the layers that hold parameters in the
order the model defines them (containers -- ``nn.Sequential``, ``nn.ModuleList``, ``nn.ModuleDict``
-- are opened; a normalisation layer joins the layer before it), listed **from the logits down to
the first layer**. The *cascading* test randomises stages ``1..L`` together, for L = 1, 2, ...;
the *independent* test randomises stage L alone.

:func:`randomized` is a scope: inside it, every parameter of the chosen stages is replaced by a draw
from a normal distribution with that tensor's own mean and standard deviation (so activations keep
their scale; Adebayo et al. re-draw from the initialisation distribution). Each stage's draw comes
from its own generator, seeded by ``seed`` and the stage's name, so stage L gets the same weights
in both tests and in every run. BatchNorm running statistics are buffers and stay; on exit (also on
an exception) every parameter gets its trained values back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Stage", "randomization_stages", "randomized"]

_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.instancenorm._InstanceNorm)


@dataclass(frozen=True)
class Stage:
    """One randomisation stage: its name (the first module's) and the modules' qualified names."""

    name: str
    modules: tuple[str, ...]


def _units(module: nn.Module, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    """The non-container modules that hold parameters, in definition order (containers opened)."""
    for name, child in module.named_children():
        qualified = f"{prefix}{name}"
        if isinstance(child, _CONTAINERS):
            yield from _units(child, f"{qualified}.")
        elif any(True for _ in child.parameters()):
            yield qualified, child


def randomization_stages(model: nn.Module) -> list[Stage]:
    """The model's stages from the output down to the input (see the module notes).

    Raises:
        ValueError: the model has no parameters.
    """
    groups: list[list[str]] = []
    for name, unit in _units(model):
        if isinstance(unit, _NORMS) and groups:
            groups[-1].append(name)
        else:
            groups.append([name])
    if not groups:
        raise ValueError(f"{type(model).__name__} has no parameters to randomise")
    return [Stage(group[0], tuple(group)) for group in reversed(groups)]


def _generator(seed: int, stage: Stage) -> torch.Generator:
    digest = hashlib.sha256(f"{seed}:{stage.name}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


@contextmanager
def randomized(model: nn.Module, stages: Sequence[Stage], seed: int = 0) -> Iterator[nn.Module]:
    """``model`` with the parameters of ``stages`` re-drawn (see the module notes), restored on exit."""
    saved: list[tuple[nn.Parameter, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for stage in stages:
                generator = _generator(seed, stage)
                for module_name in stage.modules:
                    for parameter in model.get_submodule(module_name).parameters(recurse=True):
                        saved.append((parameter, parameter.detach().clone()))
                        values = parameter.detach().double().cpu()
                        scale = float(values.std()) if values.numel() > 1 else 0.0
                        draw = torch.randn(values.shape, generator=generator, dtype=torch.float64)
                        parameter.copy_((float(values.mean()) + scale * draw).to(parameter.dtype))
        yield model
    finally:
        with torch.no_grad():
            for parameter, values in reversed(saved):
                parameter.copy_(values)
