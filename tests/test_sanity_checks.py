"""Chapter 9's pieces: the similarity measures (against scipy and hand cases), the parameter
randomisation scope and stages, and the two sanity-check experiments (closed-form cases: a map that
does not depend on the randomised layers is unchanged, a model compared with itself is identical)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments.sanity import (
    DataRandomizationExperiment,
    DataRandomizationSettings,
    RandomizationExperiment,
    RandomizationSettings,
)
from gradcam_lib.metrics.similarity import hog_similarity, normalised, similarities, spearman, ssim
from gradcam_lib.models.mnist import seeded_small_cnn, small_entry
from gradcam_lib.models.randomization import randomization_stages, randomized

# --------------------------------------------------------------------------- similarity measures


def test_spearman_matches_scipy_with_ties_and_signs():
    rng = np.random.default_rng(0)
    a = np.round(rng.normal(size=(16, 16)), 1)  # rounding makes ties
    b = a + rng.normal(scale=0.5, size=a.shape)
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a.ravel(), b.ravel()).statistic, abs=1e-12)
    assert spearman(a, b, absolute=True) == pytest.approx(
        stats.spearmanr(np.abs(a).ravel(), np.abs(b).ravel()).statistic, abs=1e-12)
    # a sign flip reverses the ranking but not the ranking of the absolute values
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, -a, absolute=True) == pytest.approx(1.0)


def test_constant_maps_have_no_rank_or_hog_similarity():
    a = np.random.default_rng(1).random((32, 32))
    zero = np.zeros((32, 32))
    assert np.isnan(spearman(a, zero)) and np.isnan(hog_similarity(a, zero))
    row = similarities(a, zero)
    assert row["constant"] == 1.0 and np.isnan(row["spearman_abs"])
    assert similarities(a, a)["constant"] == 0.0


def test_ssim_is_one_for_the_same_map_up_to_scale_and_low_for_noise():
    rng = np.random.default_rng(2)
    y, x = np.mgrid[:64, :64]
    blob = np.exp(-((x - 20) ** 2 + (y - 30) ** 2) / 80.0)
    assert ssim(blob, 5 * blob + 2) == pytest.approx(1.0)  # min-max normalised first
    assert ssim(blob, rng.random(blob.shape)) < 0.2
    shifted = np.exp(-((x - 44) ** 2 + (y - 30) ** 2) / 80.0)
    assert ssim(blob, shifted) < ssim(blob, 0.9 * blob + 0.1 * shifted)


def test_ssim_hand_case_on_a_uniform_window():
    """One 3 x 3 window (win_size 3 on a 3 x 3 map): SSIM's closed form with the sample
    (ddof=1) covariances scikit-image uses, C1 = (0.01)^2, C2 = (0.03)^2."""
    a = np.array([[0.0, 0.5, 1.0], [0.2, 0.4, 0.6], [1.0, 0.0, 0.3]])
    b = np.array([[1.0, 0.1, 0.0], [0.3, 0.5, 0.2], [0.9, 0.4, 0.6]])
    x, y = normalised(a), normalised(b)
    mx, my = x.mean(), y.mean()
    vx, vy, cxy = x.var(ddof=1), y.var(ddof=1), np.cov(x.ravel(), y.ravel())[0, 1]
    c1, c2 = 0.01**2, 0.03**2
    expected = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    assert ssim(a, b) == pytest.approx(expected, rel=1e-9)


def test_hog_similarity_tells_vertical_from_horizontal_edges():
    vertical = np.zeros((48, 48))
    vertical[:, 24:] = 1.0
    assert hog_similarity(vertical, vertical) == pytest.approx(1.0)
    assert hog_similarity(vertical, vertical.T) < 0.1
    assert hog_similarity(vertical, np.roll(vertical, 2, axis=1)) > hog_similarity(vertical, vertical.T)


@pytest.mark.parametrize(("a", "b", "message"), [
    (np.zeros(9), np.zeros(9), "map_a must be a 2-D map"),
    (np.zeros((8, 8)), np.full((8, 8), np.nan), "map_b holds NaN"),
    (np.zeros((8, 8)), np.zeros((9, 8)), "differ in shape"),
])
def test_bad_maps_are_named(a, b, message):
    with pytest.raises(ValueError, match=message):
        spearman(a, b)


def test_hog_and_ssim_refuse_maps_too_small():
    with pytest.raises(ValueError, match="at least 24 pixels"):
        hog_similarity(np.eye(16), np.eye(16))
    with pytest.raises(ValueError, match="at least 3 x 3"):
        ssim(np.eye(2), np.eye(2))


# --------------------------------------------------------------------------- randomisation


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU()), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


def test_stages_run_from_the_logits_down_and_keep_norms_with_their_layer():
    assert [s.modules for s in randomization_stages(_net())] == [("5",), ("3.0",), ("0", "1")]
    assert [s.name for s in randomization_stages(seeded_small_cnn())] == ["fc2", "fc1", "conv"]
    with pytest.raises(ValueError, match="no parameters"):
        randomization_stages(nn.ReLU())


def test_randomized_redraws_only_the_chosen_stages_and_restores_them():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    stages = randomization_stages(net)
    with randomized(net, stages[:1], seed=3):
        inside = {k: v.clone() for k, v in net.state_dict().items()}
    assert not torch.equal(inside["5.weight"], before["5.weight"])
    for name in ("0.weight", "1.weight", "3.0.weight", "1.running_mean"):
        assert torch.equal(inside[name], before[name])
    # the draw keeps the tensor's mean and standard deviation (256 * 3 values)
    w = before["5.weight"]
    assert float(inside["5.weight"].mean()) == pytest.approx(float(w.mean()), abs=3 * float(w.std()) / 27)
    assert float(inside["5.weight"].std()) == pytest.approx(float(w.std()), rel=0.1)
    for name, values in net.state_dict().items():
        assert torch.equal(values, before[name]), name


def test_randomized_restores_on_an_exception_and_draws_the_same_weights_per_stage():
    net = _net()
    before = [p.clone() for p in net.parameters()]
    stages = randomization_stages(net)
    with pytest.raises(RuntimeError, match="inside"), randomized(net, stages, seed=1):
        raise RuntimeError("inside")
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before, strict=True))
    with randomized(net, stages[:2], seed=1):
        cascade = net[3][0].weight.clone()
    with randomized(net, [stages[1]], seed=1):
        alone = net[3][0].weight.clone()
    with randomized(net, [stages[1]], seed=2):
        other_seed = net[3][0].weight.clone()
    assert torch.equal(cascade, alone) and not torch.equal(alone, other_seed)


# --------------------------------------------------------------------------- experiments


def _digits(n: int = 3) -> tuple[list[Sample], torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, 28, 28, generator=generator)
    empty = torch.zeros((0, 4), dtype=torch.long)
    return [Sample(images[i], (i % 10,), empty, empty[:, 0], f"d{i}") for i in range(n)], images


def test_a_layer_map_is_unchanged_until_its_own_layers_are_randomised(tmp_path):
    """Eigen-CAM at relu1 depends on the conv weights only: randomising fc2 and fc1 (cascading
    stages 1, 2) leaves it identical (every measure 1), randomising conv (stage 3) changes it; the
    gradient depends on every layer and changes from stage 1."""
    entry = small_entry("cnn", seeded_small_cnn(seed=0), tuple(str(i) for i in range(10)), 1, 28)
    samples, _ = _digits()
    rows = RandomizationExperiment(entry, samples, "digits", RandomizationSettings(("eigen_cam", "backprop"),
                                                                                   hog_cell=2)).run(tmp_path)
    assert len(rows) == 3 * 2 * 3 and set(rows["layer"]) == {"fc2", "fc1", "conv"}
    eigen = rows[rows["method"] == "eigen_cam"].groupby("stage")
    assert np.allclose(eigen[["spearman", "spearman_abs", "ssim", "hog"]].min().loc[[1, 2]], 1.0)
    assert eigen["ssim"].max().loc[3] < 0.99
    assert rows[(rows["method"] == "backprop") & (rows["stage"] == 1)]["spearman"].max() < 0.99
    assert (rows["test"] == "cascading").all()


def test_independent_randomisation_changes_one_stage_at_a_time(tmp_path):
    entry = small_entry("cnn", seeded_small_cnn(seed=0), tuple(str(i) for i in range(10)), 1, 28)
    samples, _ = _digits(2)
    rows = RandomizationExperiment(entry, samples, "digits", RandomizationSettings(("eigen_cam",), cascading=False,
                                                                                   hog_cell=2)).run(tmp_path)
    # independent: stage 3 (conv) changes Eigen-CAM, stages 1 and 2 alone do not
    by_stage = rows.groupby("stage")["ssim"].min()
    assert by_stage.loc[1] == pytest.approx(1.0) and by_stage.loc[2] == pytest.approx(1.0) and by_stage.loc[3] < 0.99
    assert (rows["test"] == "independent").all()


def test_data_randomisation_of_a_model_against_itself_is_identity(tmp_path):
    names = tuple(str(i) for i in range(10))
    entry = small_entry("cnn", seeded_small_cnn(seed=0), names, 1, 28)
    samples, _ = _digits()
    same = DataRandomizationExperiment(entry, samples, "digits", DataRandomizationSettings(("gradcam", "backprop"), 2),
                                       small_entry("cnn", seeded_small_cnn(seed=0), names, 1, 28)).run(tmp_path)
    assert np.allclose(same[["spearman", "spearman_abs", "ssim", "hog"]], 1.0)
    other = DataRandomizationExperiment(entry, samples, "digits", DataRandomizationSettings(("backprop",), 2),
                                        small_entry("cnn", seeded_small_cnn(seed=5), names, 1, 28)).run(tmp_path)
    assert other["spearman"].max() < 0.9


# --------------------------------------------------------------------------- data randomisation network


def test_permuted_labels_keep_the_images_and_the_label_counts():
    from gradcam_lib.datasets.mnist import mnist_split
    from gradcam_lib.models.mnist import permuted_labels

    train, _ = mnist_split(seed=0)
    shuffled = permuted_labels(train, seed=0)
    assert shuffled.images is train.images
    assert torch.equal(torch.bincount(shuffled.labels), torch.bincount(train.labels))
    assert float((shuffled.labels == train.labels).float().mean()) < 0.2  # about 1 in 10 by chance
    assert torch.equal(permuted_labels(train, seed=0).labels, shuffled.labels)


def test_the_shipped_random_label_network_memorised_its_labels_and_nothing_else():
    """The checkpoint is what chapter 9 says: trained on permuted labels to at least the trained
    network's training accuracy (on the true labels), at chance on held-out digits."""
    from gradcam_lib.datasets.mnist import mnist_split
    from gradcam_lib.models import load_model
    from gradcam_lib.models.mnist import accuracy, permuted_labels

    train, test = mnist_split(seed=0)
    trained, memorised = load_model("mnist_cnn").model, load_model("mnist_cnn_random_labels").model
    assert accuracy(memorised, permuted_labels(train, seed=0)) >= accuracy(trained, train)
    assert accuracy(memorised, test) < 0.15 and accuracy(trained, test) > 0.9


def test_train_to_accuracy_stops_at_the_target_and_refuses_an_unreachable_one():
    from gradcam_lib.datasets.mnist import Split
    from gradcam_lib.models.mnist import accuracy, train_to_accuracy

    generator = torch.Generator().manual_seed(0)
    data = Split(torch.rand(64, 1, 28, 28, generator=generator), torch.randint(0, 10, (64,), generator=generator))
    model, epochs, reached = train_to_accuracy(seeded_small_cnn(seed=0), data, 0.5, rounds_of=2)
    assert reached >= 0.5 and reached == accuracy(model, data) and epochs % 2 == 0 and epochs > 0
    with pytest.raises(RuntimeError, match="below the target 1.01"):
        train_to_accuracy(seeded_small_cnn(seed=0), data, 1.01, rounds_of=1, max_epochs=1)


def test_interval_table_scores_constant_maps_zero_and_leaves_out_undefined_ones():
    """Three images: a constant randomised map (NaN ranks, scored 0), an undefined comparison (the
    trained map constant: NaN, left out) and an ordinary one."""
    import pandas as pd

    from gradcam_lib.report.sanity import interval_table, scored, wide

    rows = pd.DataFrame({"image_id": ["a", "b", "c"], "method": "m", "stage": 1,
                         "spearman": [np.nan, np.nan, 0.5], "spearman_abs": [np.nan, np.nan, 0.5],
                         "ssim": [0.1, 0.2, 0.3], "hog": [np.nan, np.nan, 0.25], "constant": [1.0, 0.0, 0.0]})
    assert scored(rows)["spearman"].tolist()[0] == 0.0 and np.isnan(scored(rows)["spearman"].tolist()[1])
    table = interval_table(rows, ["method"]).set_index("measure")
    assert table.loc["spearman", "mean"] == pytest.approx(0.25) and table.loc["spearman", "n"] == 2
    assert table.loc["ssim", "mean"] == pytest.approx(0.2) and table.loc["ssim", "n"] == 3
    assert (table["constant"] == 1).all()
    grid = wide(interval_table(rows, ["method"]), "method", "measure", {"m": "M"})
    assert list(grid.index) == ["M"] and grid.loc["M", "ssim"].startswith("0.20 [")
