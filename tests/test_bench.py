"""The benchmark's timing statistics (bench/benchmark.py) against hand-computed order statistics."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
from scipy import stats

_spec = importlib.util.spec_from_file_location("benchmark", Path(__file__).parent.parent / "bench" / "benchmark.py")
benchmark = importlib.util.module_from_spec(_spec)
sys.modules["benchmark"] = benchmark  # dataclasses look their module up there
_spec.loader.exec_module(benchmark)


def test_median_interval_uses_binomial_ranks():
    # n = 10: P(Bin(10, 1/2) <= 1) = 11/1024 < 0.025 <= P(<= 2) = 56/1024, so ppf = 2: ranks 2 and 9
    values = [float(v) for v in (5, 1, 9, 3, 7, 2, 8, 4, 10, 6)]
    assert stats.binom.ppf(0.025, 10, 0.5) == 2
    assert benchmark.median_interval(values) == (2.0, 9.0)
    # n = 5: ppf = 1 -> the extremes
    assert benchmark.median_interval([3.0, 1.0, 2.0, 5.0, 4.0]) == (1.0, 5.0)


def test_paired_ratio_of_a_call_against_itself_is_near_one():
    calls = []

    def work() -> None:
        calls.append(1)
        sum(i * i for i in range(20_000))

    ratio = benchmark.paired_ratio(work, work, min_rounds=6, max_rounds=6)
    assert ratio.rounds == 6 and len(calls) == 2 + 12  # warm-up, then both calls every round
    assert ratio.low <= ratio.median <= ratio.high
    assert ratio.median == pytest.approx(1.0, rel=0.5)  # loose: a loaded machine, two identical calls
