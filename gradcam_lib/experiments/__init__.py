"""Experiments: one :class:`~gradcam_lib.experiments.base.Experiment` per chapter (its settings and
its batch step), run resumably and exactly once; the chapters call these and report the rows."""

from gradcam_lib.experiments.base import Experiment

__all__ = ["Experiment"]
