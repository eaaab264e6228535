"""GPU fast-path setting for long runs: bf16 autocast (channels-last memory format is applied by the
loops themselves, see :class:`gradcam_lib.experiments.localization.LocalizationExperiment`).

Opt-in. bf16 maps are not bit-identical to fp32 maps; ``tests/test_acceleration.py`` bounds the
difference on a real model.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["precision"]


@contextmanager
def precision(device: str | torch.device, bf16: bool) -> Iterator[None]:
    """Autocast to bfloat16 on ``device`` when ``bf16``; a no-op otherwise."""
    with torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
        yield
