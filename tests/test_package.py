"""The package's top-level surface: every public name resolves to the function of its module."""

from __future__ import annotations

import importlib

import pytest

import gradcam_lib


@pytest.mark.parametrize("name", gradcam_lib.__all__)
def test_public_names_resolve_to_their_modules(name):
    module = importlib.import_module(f"gradcam_lib.{gradcam_lib._PUBLIC[name]}")
    assert getattr(gradcam_lib, name) is getattr(module, name)


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        gradcam_lib.nope  # noqa: B018
    from gradcam_lib import max_box_acc

    assert max_box_acc([[[0.0, 1.0], [0.0, 0.0]]], [[(1, 0, 1, 0)]]) == 1.0


def test_docstring_lists_every_public_name_and_its_example_runs():
    import doctest

    for name in gradcam_lib.__all__:
        assert f"``{name}``" in gradcam_lib.__doc__, name
    finder = doctest.DocTestFinder(recurse=False)
    (test,) = finder.find(gradcam_lib, "gradcam_lib")
    assert len(test.examples) == 5
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test, out=lambda _: None)
    assert result.failed == 0 and result.attempted == 5
