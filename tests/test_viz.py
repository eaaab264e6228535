"""gradcam_lib.report.viz against hand-computed pictures: what each figure helper hands to matplotlib."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from gradcam_lib.report import viz  # noqa: E402


@pytest.fixture
def ax():
    fig, axes = viz.figure_grid(1, 1)
    yield axes[0, 0]
    plt.close(fig)


def _layers(ax) -> list[np.ndarray]:
    return [np.asarray(image.get_array()) for image in ax.get_images()]


PICTURE = np.linspace(0, 1, 4 * 4 * 3, dtype=np.float32).reshape(4, 4, 3)


def test_overlay_resizes_a_small_map_bilinearly_to_the_picture(ax):
    """A 2 x 2 map on a 4 x 4 picture: bilinear with align_corners=False samples the map at
    (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1] -> 0, 0.25, 0.75, 1."""
    viz.show_overlay(ax, PICTURE, torch.tensor([[0.0, 1.0], [2.0, 3.0]]))
    picture, heat = _layers(ax)
    f = np.array([0.0, 0.25, 0.75, 1.0])
    expected = (f[None, :] * 1.0 + f[:, None] * 2.0) / 3.0  # value = x + 2 y, divided by the max 3
    np.testing.assert_allclose(heat, expected, rtol=1e-6)
    np.testing.assert_array_equal(picture, PICTURE)
    assert ax.get_images()[1].get_extent() == ax.get_images()[0].get_extent()


def test_overlay_of_a_same_size_map_is_the_map_over_its_maximum(ax):
    heat = np.array([[0.0, 0.5], [1.0, 2.0]], dtype=np.float32)
    viz.show_overlay(ax, PICTURE[:2, :2], heat)
    np.testing.assert_array_equal(_layers(ax)[1], heat / 2.0)


def test_overlay_accepts_a_channel_first_tensor(ax):
    viz.show_overlay(ax, torch.from_numpy(PICTURE).permute(2, 0, 1), np.ones((4, 4)))
    np.testing.assert_array_equal(_layers(ax)[0], PICTURE)


@pytest.mark.parametrize("normalize, low", [("max", 0.17 / 0.47), ("minmax", 0.0)])
def test_overlay_normalisation(ax, normalize, low):
    """A map from 0.17 to 0.47: "max" keeps its floor at 0.17 / 0.47 of the scale, "minmax"
    stretches it over the whole scale."""
    heat = np.array([[0.17, 0.32], [0.47, 0.17]], dtype=np.float32)
    viz.show_overlay(ax, PICTURE[:2, :2], heat, normalize=normalize)
    shown = _layers(ax)[1]
    np.testing.assert_allclose([shown.min(), shown.max()], [low, 1.0], rtol=1e-6)
    np.testing.assert_allclose(shown[0, 1], (0.32 - 0.17) / 0.30 if normalize == "minmax" else 0.32 / 0.47, rtol=1e-5)


def test_overlay_refuses_unknown_normalisation_and_a_stack_of_maps(ax):
    with pytest.raises(ValueError, match="normalize must be one of"):
        viz.show_overlay(ax, PICTURE, np.ones((4, 4)), normalize="softmax")
    with pytest.raises(ValueError, match="one 2-D map"):
        viz.show_overlay(ax, PICTURE, np.ones((2, 4, 4)))


def test_constant_map_shows_the_picture_alone(ax):
    viz.show_overlay(ax, PICTURE, np.full((4, 4), 0.3), normalize="minmax")
    assert len(ax.get_images()) == 1


def _display_by_hand(g: np.ndarray) -> np.ndarray:
    """The textbook deprocessing in float64: (g - mean) / std * 0.1 + 0.5, clipped, channels last."""
    g = g.astype(np.float64)
    return np.clip((g - g.mean()) / g.std() * 0.1 + 0.5, 0, 1).transpose(1, 2, 0)


@pytest.mark.parametrize("scale", [1.0, 1.3e-16])
def test_guided_display_does_not_depend_on_the_maps_magnitude(scale):
    """A map of std ~1e-16 (random-weight GoogLeNet's Guided Grad-CAM) is shown like any other,
    not as flat grey."""
    g = torch.randn(3, 5, 6, generator=torch.Generator().manual_seed(0)) * scale
    shown = viz.guided_to_display(g)
    assert shown.shape == (5, 6, 3)
    np.testing.assert_allclose(shown, _display_by_hand(g.numpy() / scale), atol=1e-5)
    assert shown.std() > 0.05


def test_guided_display_of_a_zero_map_is_grey():
    np.testing.assert_array_equal(viz.guided_to_display(np.zeros((3, 2, 2))), np.full((2, 2, 3), 0.5))
