"""What every loaded network is to the book (:class:`ModelEntry`), and the one checkpoint reader
(:func:`read_checkpoint`, ``torch.load(..., weights_only=True)`` with errors that name the file)."""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradcam_lib.datasets.transforms import ImageTransform


@dataclass(frozen=True)
class ModelEntry:
    """A loaded classifier and what the book needs to explain it."""

    name: str
    model: nn.Module
    layer: nn.Module
    layer_name: str
    transform: ImageTransform
    class_names: tuple[str, ...]


def read_checkpoint(path: str | os.PathLike[str], what: str, remedy: str) -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` of a file that must hold a dict (a state dict, or a
    dict around one), with errors that name the file and say what to do (``remedy``, e.g. "delete
    it to download it again"). Every checkpoint loader of the library reads through this.

    Args:
        path: the checkpoint file.
        what: what the file is, for the messages (``"VOC checkpoint"``).
        remedy: what the user should do when the file is unusable.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, truncated or corrupt, holds pickled objects that
            ``weights_only=True`` refuses to run (a crafted file, or one saved with whole modules),
            or holds something other than a dict (a bare tensor, say).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist; {remedy}")
    if path.stat().st_size == 0:
        raise ValueError(f"{what} {path} is empty (0 bytes); {remedy}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch reports a cut or garbled file as EOFError, RuntimeError, KeyError ...
        # ... and a pickle that names a Python object to call (a crafted file) as "Unsupported GLOBAL"
        refused = isinstance(error, pickle.UnpicklingError) and "GLOBAL" in str(error)
        if not refused:
            raise ValueError(
                f"{what} {path} is truncated or corrupt ({type(error).__name__}: {_first_line(error)}); {remedy}"
            ) from error
        detail = next(line.strip() for line in str(error).splitlines() if "GLOBAL" in line)
        raise ValueError(
            f"{what} {path} was refused: it holds pickled Python objects other than tensors and plain "
            f"containers, which torch.load(weights_only=True) does not run ({detail}; a crafted or damaged "
            f"file, or one saved with whole modules). Save only the state_dict "
            f"(torch.save(model.state_dict(), path)); {remedy}"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(
            f"{what} {path} holds a {type(state).__name__}, not a state_dict (a dict of parameter name -> "
            f"tensor); {remedy}"
        )
    return state


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no details"


def load_weights(model: nn.Module, state: dict[str, Any], path: Path, what: str) -> None:
    """``model.load_state_dict(state)``; keys or shapes that do not fit are reported, counted and
    with a few examples, together with the file."""
    problem = ""
    try:
        result = model.load_state_dict(state, strict=False)
    except (RuntimeError, TypeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip().startswith("size mismatch")]
        problem = f"{len(lines)} tensors of another shape, e.g. {lines[0]}" if lines else _first_line(error)
    else:
        parts = [
            f"{len(keys)} {kind} keys (e.g. {', '.join(keys[:3])})"
            for kind, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
            if keys
        ]
        problem = "; ".join(parts)
    if problem:
        raise ValueError(
            f"{what} {path} does not fit {type(model).__name__}: {problem}. Use a checkpoint of this architecture."
        )


