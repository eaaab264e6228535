"""The method registry (gradcam_lib.methods): lookup, aliases and errors; one conformance test over
every registered method; and, for each of the four method tables it replaced, the registry path
against a frozen copy of the old dispatch code (bit-identical maps on a toy model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from toy_models import toy_cnn

from gradcam_lib import methods as ex
from gradcam_lib.datasets.base import Sample
from gradcam_lib.experiments import chest_xray as chestxray
from gradcam_lib.experiments import user_study
from gradcam_lib.experiments.localization import LocalizationExperiment, LocalizationSettings
from gradcam_lib.experiments.pointing import PointingExperiment, PointingSettings
from gradcam_lib.methods import (
    ALIASES,
    attribute,
    canonical_key,
    labels,
    maps,
    method,
    method_keys,
    register_method,
    top_k,
)
from gradcam_lib.methods.attributions import (
    completeness_gap,
    converged_ig,
    gradient_shap,
    integrated_gradients,
    shap_expected_gradients,
)
from gradcam_lib.metrics.agreement import STUDY_METHODS
from gradcam_lib.metrics.fidelity import method_options

CAMS = ("gradcam", "gradcam_pp", "backprop", "guided_backprop", "guided_gradcam")


# --------------------------------------------------------------------------------------------
# Lookup
# --------------------------------------------------------------------------------------------


def test_keys_are_function_names_and_old_keys_are_aliases():
    for key in method_keys():
        assert method(key).key == key == method(key).function.__name__
    assert ALIASES == {"gradcam": "grad_cam", "gradcam_pp": "grad_cam_pp", "backprop": "input_gradient",
                       "guided_gradcam": "guided_grad_cam", "ig": "first_class_converged_ig",
                       "shap": "shap_expected_gradients"}
    assert method("gradcam") is method("grad_cam") and canonical_key("backprop") == "input_gradient"
    assert method("grad_cam").function is ex.grad_cam
    assert {"grad_cam", "grad_cam_pp", "input_gradient", "guided_backprop", "guided_grad_cam",
            "integrated_gradients", "gradient_shap", "shap_expected_gradients"} <= set(method_keys())


def test_an_unknown_key_is_a_key_error_that_lists_the_known_ones():
    with pytest.raises(KeyError, match=r"unknown method 'lime'; known: .*grad_cam.*gradcam"):
        method("lime")
    for call in (lambda: ex.heatmaps("lime", None, None, None, None),  # type: ignore[arg-type]
                 lambda: maps("lime", None, None, None, None, reduction="sum")):  # type: ignore[arg-type]
        with pytest.raises(KeyError, match="unknown method 'lime'; known:"):
            call()


def test_a_key_cannot_be_registered_twice():
    with pytest.raises(ValueError, match="registered already"):
        register_method(label="again", space="layer")(ex.grad_cam)
    with pytest.raises(ValueError, match="space"):
        register_method(label="x", space="pixels")  # type: ignore[arg-type]


def test_the_old_tables_are_views_with_the_old_keys_and_labels():
    assert ex.HEATMAP_METHODS == {"gradcam": "Grad-CAM", "gradcam_pp": "Grad-CAM++", "backprop": "Backprop (gradient)",
                                  "guided_backprop": "Guided Backprop", "guided_gradcam": "Guided Grad-CAM"}
    assert labels(("gradcam", "ig", "shap")) == {"gradcam": "Grad-CAM", "ig": "Integrated Gradients",
                                            "shap": "SHAP (GradientExplainer)"}
    assert chestxray.XRAY_METHODS == {
        "gradcam": "Grad-CAM", "gradcam_pp": "Grad-CAM++", "ig_mean_colour": "IG (mean-colour baseline)",
        "ig_black": "IG (black baseline)", "gradient_shap": "GradientShap (mean-colour baseline)",
        "shap": "SHAP (GradientExplainer)"}
    assert STUDY_METHODS == {"guided_backprop": "Guided Backprop", "guided_gradcam": "Guided Grad-CAM"}
    assert labels(["grad_cam", "gradcam"]) == {"grad_cam": "Grad-CAM", "gradcam": "Grad-CAM"}


def test_an_unknown_reduction_is_refused_before_any_work():
    with pytest.raises(ValueError, match="reduction"):
        maps("grad_cam", toy_cnn(), "2", torch.zeros(1, 3, 8, 8), [0], reduction="mean")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Conformance of every registered method
# --------------------------------------------------------------------------------------------

_BACKGROUND = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
OPTIONS = {  # the options a method needs to run on the toy model (cheap settings)
    "integrated_gradients": {"steps": 4},
    "first_class_converged_ig": {"steps": (2, 4)},
    "converged_ig": {"baseline": torch.zeros(1, 3, 8, 8), "steps": (2, 4)},
    "gradient_shap": {"baselines": _BACKGROUND, "n_samples": 3},
    "shap_expected_gradients": {"background": _BACKGROUND, "n_samples": 4},
}


def _state(model: torch.nn.Module) -> tuple:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()])


@pytest.mark.parametrize("key", method_keys())
def test_every_method_conforms(key):
    entry = method(key)
    model = toy_cnn().train()  # a train-mode model: the method must run it in eval mode and give it back
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    targets = torch.tensor([[1, 4], [0, 2]])
    options = OPTIONS.get(key, {})
    calls = []
    counter = model.register_forward_pre_hook(lambda *_: calls.append(model.training))
    before = _state(model)
    rng = torch.random.get_rng_state()

    result = attribute(key, model, model[2], images, targets, reduction="none", **options)
    assert _state(model) == before and torch.equal(torch.random.get_rng_state(), rng)
    assert calls and not any(calls)  # every forward pass in eval mode
    per_image = (8, 8) if entry.space == "layer" else (3, 8, 8)
    assert result.maps.shape == (2, 2, *per_image) and torch.equal(result.targets, targets)
    assert set(result.info) == set(entry.returns)
    if entry.nonnegative:
        assert (result.maps >= 0).all()
    one = maps(key, model, model[2], images, targets[:, 0], reduction="none", **options)
    assert one.shape == (2, *per_image)
    if not entry.per_class or key != "gradient_shap":  # GradientShap draws its noise per batch
        torch.testing.assert_close(one, result.maps[:, 0], rtol=1e-5, atol=1e-6)
    for reduction in ("max_abs", "sum"):
        assert maps(key, model, model[2], images, targets, reduction=reduction, **options).shape == (2, 2, 8, 8)

    if entry.one_pass:  # K classes share the forward passes
        counts = []
        for k in (1, 3):
            calls.clear()
            maps(key, model, model[2], images, torch.tensor([[0, 1, 2][:k]] * 2), reduction="none", **options)
            counts.append(len(calls))
        assert counts[0] == counts[1]

    def refuse(logits: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("chooser failed")

    with pytest.raises(RuntimeError, match="chooser failed"):
        attribute(key, model, model[2], images, refuse, reduction="none", **options)
    assert _state(model) == before
    assert not torch.overrides._get_current_function_mode_stack()  # no guided ReLUs left active
    counter.remove()


@pytest.mark.parametrize("key", [k for k in method_keys() if method(k).chooses])
def test_a_chooser_picks_the_classes_in_the_methods_own_forward_pass(key):
    model = toy_cnn()
    images = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        chosen = torch.cat([model(images).topk(2, dim=1).indices, torch.tensor([[5], [3]])], dim=1)
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    result = attribute(key, model, model[2], images, top_k(2, also=torch.tensor([5, 3])), reduction="none")
    passes = len(calls)
    assert torch.equal(result.targets, chosen)
    assert torch.equal(result.maps, maps(key, model, model[2], images, chosen, reduction="none"))
    assert passes == len(calls) - passes  # choosing costs no extra forward pass


# --------------------------------------------------------------------------------------------
# The registry path against the old dispatch code, frozen here (bit-identical)
# --------------------------------------------------------------------------------------------


def _old_heatmaps(method_key, model, layer, images, targets):  # explain.heatmaps before the registry
    saliency = lambda m: m.abs().amax(dim=-3)  # noqa: E731
    if method_key == "gradcam":
        return ex.grad_cam(model, layer, images, targets)
    if method_key == "gradcam_pp":
        return ex.grad_cam_pp(model, layer, images, targets)
    if method_key == "backprop":
        return saliency(ex.input_gradient(model, images, targets))
    if method_key == "guided_backprop":
        return saliency(ex.guided_backprop(model, images, targets))
    return saliency(ex.guided_grad_cam(model, layer, images, targets))


def _old_ig_maps(model, images, classes, steps, baseline=0.0, tolerance=0.05):  # fidelity.ig_maps before
    batch, k = classes.shape
    internal_batch_size = max(1, 2**22 // images[0].numel())
    repeated = images.repeat_interleave(k, dim=0)
    flat = classes.reshape(-1)
    for count in steps:
        values = integrated_gradients(model, repeated, flat, count, baseline, internal_batch_size)
        gaps = completeness_gap(model, repeated, flat, values, baseline).view(batch, k).cpu()
        if float(gaps[:, 0].max()) < tolerance:
            break
    return values.sum(1).view(batch, k, *images.shape[-2:]), gaps, count


def _old_fidelity_maps(method_key, model, layer, images, classes, background, steps, samples):
    batch, k = classes.shape
    if method_key == "gradcam":
        return ex.grad_cam(model, layer, images, classes)
    if method_key == "ig":
        return _old_ig_maps(model, images, classes, steps)[0]
    values = shap_expected_gradients(model, images.repeat_interleave(k, dim=0), classes.reshape(-1), background,
                                     n_samples=samples, seed=0)
    return values.sum(1).view(batch, k, *images.shape[-2:])


def _old_xray_maps(method_key, entry, images, targets, settings):  # chestxray.method_maps before
    model = entry.model
    if method_key == "gradcam":
        return ex.grad_cam(model, entry.layer, images, targets), None, None
    if method_key == "gradcam_pp":
        return ex.grad_cam_pp(model, entry.layer, images, targets), None, None
    if method_key in chestxray.IG_METHODS:
        baseline = chestxray.ig_baseline(chestxray.IG_METHODS[method_key], entry.transform, images)
        values, gaps, used = converged_ig(model, images, targets, baseline, settings.ig_steps, settings.ig_tolerance)
        return values.sum(-3), gaps, used
    if method_key == "gradient_shap":
        baseline = chestxray.ig_baseline("mean_colour", entry.transform, images[:1])
        return gradient_shap(model, images, targets, baseline, settings.gradient_shap_samples,
                             seed=settings.seed).sum(-3), None, None
    return shap_expected_gradients(model, images, targets, settings.background, settings.shap_samples,
                                   seed=settings.seed).sum(-3), None, None


def _equal(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


@pytest.fixture
def toy(cnn_entry, toy_images):
    return cnn_entry, toy_images


@pytest.mark.parametrize("key", CAMS)
def test_heatmaps_match_the_old_dispatch(toy, key):
    entry, images = toy
    for targets in (torch.tensor([[1, 4], [0, 2], [5, 3]]), torch.tensor([1, 0, 5]), 2):
        old = _old_heatmaps(key, entry.model, entry.layer, images, targets)
        assert _equal(ex.heatmaps(key, entry.model, entry.layer, images, targets), old)
        canonical = canonical_key(key)
        assert _equal(maps(canonical, entry.model, entry.layer, images, targets, reduction="max_abs"), old)


@pytest.mark.parametrize("key", ["gradcam", "ig", "shap"])
def test_fidelity_maps_match_the_old_dispatch(toy, key):
    entry, images = toy
    classes = torch.tensor([[1, 4, 0], [0, 2, 1], [5, 3, 2]])
    background = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    old = _old_fidelity_maps(key, entry.model, entry.layer, images, classes, background, (2, 4), 5)
    new = maps(key, entry.model, entry.layer, images, classes, reduction="sum",
               **method_options(key, background, (2, 4), 5, 0))
    assert _equal(new, old)
    if key == "ig":
        old_maps, old_gaps, old_steps = _old_ig_maps(entry.model, images, classes, (2, 4))
        new_ig = attribute("ig", entry.model, None, images, classes, reduction="sum",
                           **method_options("ig", None, (2, 4), 0, 0))
        new_maps, new_gaps, new_steps = new_ig.maps, new_ig.info["gaps"], new_ig.info["steps"]
        assert _equal(new_maps, old_maps) and _equal(new_gaps, old_gaps) and new_steps == old_steps


@pytest.mark.parametrize("key", list(chestxray.XRAY_METHODS))
def test_chest_xray_maps_match_the_old_dispatch(toy, key):
    entry, images = toy
    targets = torch.tensor([1, 0, 5])
    settings = chestxray.AttributionSettings(ig_steps=(2, 4), gradient_shap_samples=3, shap_samples=4,
                                             background=torch.randn(4, 3, 12, 12))
    old = _old_xray_maps(key, entry, images, targets, settings)
    new = chestxray.method_maps(key, entry, images, targets, settings)
    assert all(_equal(a, b) for a, b in zip(new, old, strict=True))


def test_study_maps_match_the_old_dispatch(toy):
    entry, images = toy
    targets = torch.tensor([1, 0, 5])
    guided = ex.guided_backprop(entry.model, images, targets)
    old = {"guided_backprop": guided, "guided_gradcam": ex.guided_grad_cam(entry.model, entry.layer, images, targets)}
    new = user_study._explain(entry, images, targets, list(STUDY_METHODS))
    assert list(new) == list(old) and all(_equal(new[m], old[m]) for m in old)


def _samples(images: torch.Tensor) -> list[Sample]:
    boxes = torch.tensor([[1, 2, 6, 7], [3, 3, 10, 9]])
    return [Sample(images[i], (i, i + 1), boxes, torch.tensor([i, i + 1]), f"im{i}") for i in range(len(images))]


@pytest.mark.parametrize("key", CAMS)
def test_top_k_by_a_chooser_matches_the_old_special_cases(toy, key):
    """localization / pointing special-cased Grad-CAM by string (grad_cam_top_k, one pass) and
    took the top-k of a separate no-grad pass for the other methods: the chooser gives the same."""
    entry, images = toy
    truth = torch.tensor([[0], [1], [2]])
    if key == "gradcam":
        _, classes, old = ex.grad_cam_top_k(entry.model, entry.layer, images, 3, also=truth)
    else:
        with torch.no_grad():
            classes = torch.cat([entry.model(images).topk(3, dim=1).indices, truth], dim=1)
        old = ex.heatmaps(key, entry.model, entry.layer, images, classes)
    new = attribute(key, entry.model, entry.layer, images, top_k(3, also=truth), reduction="max_abs")
    assert torch.equal(new.targets, classes) and _equal(new.maps, old)
    # pointing's order: ground truth first (Grad-CAM's one-pass maps were reordered before)
    chooser = lambda logits: torch.cat([truth, logits.topk(3, dim=1).indices], dim=1)  # noqa: E731
    reordered = attribute(key, entry.model, entry.layer, images, chooser, reduction="max_abs")
    assert _equal(reordered.maps, torch.cat([old[:, 3:], old[:, :3]], dim=1))
    experiment = LocalizationExperiment(entry, [], "t", LocalizationSettings(key, (0.15, 0.5), 3))
    rows = experiment.batch(images, _samples(images))
    assert len(rows) == 6 and all(np.isfinite(r["gt_iou"]) for r in rows)


def test_pointing_rows_use_the_one_pass_top_k(toy):
    entry, images = toy
    settings = PointingSettings(tuple(CAMS), ("gradcam", "backprop"), 3)
    rows = PointingExperiment(entry, [], "t", settings).batch(images, _samples(images))
    top = [r for r in rows if r["kind"] == "topk"]
    with torch.no_grad():
        predicted = entry.model(images).topk(3, dim=1).indices
    assert len(top) == 2 * 3 * 3
    assert [r["label"] for r in top if r["method"] == "gradcam"] == predicted.reshape(-1).tolist()


# ---- mutation tests: the registry's record of a method


def test_register_method_records_every_field_and_the_documented_defaults(monkeypatch):
    """A method's entry holds what the decorator was given; unset flags take the documented defaults
    (nonnegative=False, one_pass=True, chooses=False, per_class=False, no returns, no aliases); a
    method whose second parameter is ``layer`` uses the layer."""
    from gradcam_lib.methods import registry
    from gradcam_lib.methods.registry import Method

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    monkeypatch.setattr(registry, "ALIASES", dict(registry.ALIASES))

    def toy_layer_map(model, layer, images, targets):
        return images

    def toy_input_map(model, images, targets):
        return images

    assert registry.register_method(label="Toy", space="layer", aliases=("toy_alias",))(toy_layer_map) is toy_layer_map
    assert registry.method("toy_alias") == Method("toy_layer_map", "Toy", toy_layer_map, "layer", True, False, True,
                                                  False, False, (), ("toy_alias",))
    registry.register_method(label="In", space="input", nonnegative=True, one_pass=False, chooses=True,
                             per_class=True, returns=("gaps",))(toy_input_map)
    assert registry.method("toy_input_map") == Method("toy_input_map", "In", toy_input_map, "input", False, True,
                                                      False, True, True, ("gaps",), ())
    assert registry.canonical_key("toy_alias") == "toy_layer_map"
    def toy_other(model, images, targets):
        return images

    with pytest.raises(ValueError, match="'toy_alias' is registered already"):
        registry.register_method(label="Again", space="input", aliases=("toy_alias",))(toy_other)
    with pytest.raises(ValueError, match="space"):
        registry.register_method(label="Bad", space="pixels")
