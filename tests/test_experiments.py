"""The experiment template (gradcam_lib.experiments.base): one batch step per chapter, and the rest
shared -- the run key, the results file, exactly-once resume, and the caller's model state."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from toy_models import toy_entry

from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.base import Experiment
from gradcam_lib.methods import grad_cam


@dataclass(frozen=True)
class PeakSettings:
    method: str = "gradcam"
    scale: float = 1.0


class PeakExperiment(Experiment[PeakSettings]):
    """One row per image: the peak of the Grad-CAM map of class 0, times ``scale``."""

    calls: int = 0
    fail_on: str | None = None

    def batch(self, images: torch.Tensor, samples):
        type(self).calls += len(samples)
        if self.fail_on in {s.image_id for s in samples}:
            raise RuntimeError("a failing batch")
        assert not self.entry.model.training  # the template runs the model in eval mode
        maps = grad_cam(self.entry.model, self.entry.layer, images, 0)
        return [{"image_id": s.image_id, "peak": float(m.max()) * self.settings.scale} for s, m in zip(samples, maps)]


def _data(n: int = 5) -> list[Sample]:
    generator = torch.Generator().manual_seed(1)
    empty = torch.zeros((0, 4), dtype=torch.long)
    return [Sample(torch.randn(3, 12, 12, generator=generator), (0,), empty, torch.zeros(0, dtype=torch.long),
                   f"{i:03d}") for i in range(n)]


@pytest.fixture(autouse=True)
def _reset_calls():
    PeakExperiment.calls = 0


def test_rows_carry_model_method_and_dataset_and_match_a_direct_computation(tmp_path) -> None:
    entry, data = toy_entry(), _data()
    rows = PeakExperiment(entry, data, "toy_set", PeakSettings()).run(tmp_path, batch_size=2)
    assert list(rows.columns) == ["image_id", "peak", "model", "method", "dataset"]
    assert rows["image_id"].tolist() == ["000", "001", "002", "003", "004"]  # ids stay strings
    assert set(rows["model"]) == {"toy"} and set(rows["method"]) == {"gradcam"} and set(rows["dataset"]) == {"toy_set"}
    direct = grad_cam(entry.model, entry.layer, torch.stack([s.image for s in data]), 0).amax(dim=(1, 2))
    torch.testing.assert_close(torch.tensor(rows["peak"].to_numpy(), dtype=torch.float32), direct)


def test_a_second_run_computes_nothing_and_returns_the_same_rows(tmp_path) -> None:
    experiment = PeakExperiment(toy_entry(), _data(), "toy_set", PeakSettings())
    first = experiment.run(tmp_path, batch_size=2)
    assert PeakExperiment.calls == 5
    again = experiment.run(tmp_path, batch_size=3)
    assert PeakExperiment.calls == 5
    assert again.equals(first)


def test_an_interrupted_run_resumes_without_losing_or_repeating_a_row(tmp_path) -> None:
    experiment = PeakExperiment(toy_entry(), _data(), "toy_set", PeakSettings())
    experiment.fail_on = "003"
    with pytest.raises(RuntimeError, match="a failing batch"):
        experiment.run(tmp_path, batch_size=1)
    experiment.fail_on = None
    rows = experiment.run(tmp_path, batch_size=1)
    assert rows["image_id"].tolist() == ["000", "001", "002", "003", "004"]
    assert PeakExperiment.calls == 4 + 2  # 000-002 and the failed 003, then 003 and 004


def test_the_key_changes_with_settings_weights_layer_and_data(tmp_path) -> None:
    data = _data()
    base = PeakExperiment(toy_entry(), data, "toy_set", PeakSettings()).path(tmp_path)
    assert base.name.startswith("toy_gradcam_toy_set_") and base.suffix == ".csv"
    assert PeakExperiment(toy_entry(), data, "toy_set", PeakSettings()).path(tmp_path) == base
    assert PeakExperiment(toy_entry(), data, "toy_set", PeakSettings(scale=2.0)).path(tmp_path) != base
    assert PeakExperiment(toy_entry(seed=1), data, "toy_set", PeakSettings()).path(tmp_path) != base
    other_layer = toy_entry()
    other_layer = type(other_layer)(other_layer.name, other_layer.model, other_layer.model[0], "0",
                                    other_layer.transform, other_layer.class_names)
    assert PeakExperiment(other_layer, data, "toy_set", PeakSettings()).path(tmp_path) != base
    relabelled = _data()
    relabelled[2] = Sample(relabelled[2].image, (1,), relabelled[2].boxes, relabelled[2].box_labels, "002")
    assert PeakExperiment(toy_entry(), relabelled, "toy_set", PeakSettings()).path(tmp_path) != base
    odd = PeakExperiment(toy_entry(), data, "x/ray:set", PeakSettings()).path(tmp_path)
    assert odd.parent == tmp_path and odd.name.startswith("toy_gradcam_x_ray_set_")


@pytest.mark.parametrize("fail", [False, True])
def test_the_callers_model_state_is_restored(tmp_path, fail: bool) -> None:
    entry = toy_entry()
    entry.model.train()
    entry.model[0].weight.requires_grad_(False)
    experiment = PeakExperiment(entry, _data(), "toy_set", PeakSettings())
    experiment.fail_on = "000" if fail else None
    if fail:
        with pytest.raises(RuntimeError):
            experiment.run(tmp_path)
    else:
        experiment.run(tmp_path)
    assert entry.model.training and all(m.training for m in entry.model.modules())
    assert not entry.model[0].weight.requires_grad and entry.model[2].weight.requires_grad


def test_settings_must_be_a_dataclass_instance(tmp_path) -> None:
    with pytest.raises(TypeError, match="settings must be a dataclass instance"):
        PeakExperiment(toy_entry(), _data(), "toy_set", {"method": "gradcam"})  # type: ignore[arg-type]


def test_a_run_leaves_the_global_rngs_alone(tmp_path) -> None:
    import random

    import numpy as np

    states = torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()
    PeakExperiment(toy_entry(), _data(), "toy_set", PeakSettings()).run(tmp_path, batch_size=2)
    assert torch.equal(torch.get_rng_state(), states[0])
    assert (np.random.get_state()[1] == states[1]).all() and random.getstate() == states[2]
