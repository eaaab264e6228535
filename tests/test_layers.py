"""The library's architecture, checked: layers whose dependencies only go down, chapter modules that
do not import each other, and modules small enough to read (about 400 lines at most)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "gradcam_lib"

#: Bottom to top; a module may import its own layer and the layers below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("validate", "stats", "acceleration"),
    ("datasets",),
    ("run_keys", "results", "shards"),
    ("models",),
    ("methods",),
    ("metrics",),
    ("attacks",),
    ("experiments",),
    ("report",),
    ("runner",),
)
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}
#: In these packages a chapter's module may import only the package's shared modules.
SHARED = {"experiments": {"base"}, "report": {"tables", "claims", "viz", "published"}}
MAX_LINES = 400


def _chapter(module: str) -> str:
    """The chapter a module belongs to: ``user_study_figures`` is ``user_study``'s."""
    return module.removesuffix("_figures")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _top(path: Path) -> list[str]:
    """``gradcam_lib/metrics/occlusion.py`` -> ``["metrics", "occlusion"]``."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _imports(path: Path) -> list[list[str]]:
    """The gradcam_lib modules ``path`` imports, as parts below the package (``["methods", "cam"]``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            base = node.module.split(".")
            names = [base + [alias.name] for alias in node.names] if base == ["gradcam_lib"] else [base]
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        found += [name[1:] for name in names if name[0] == "gradcam_lib" and len(name) > 1]
    return found


def test_every_module_is_in_a_layer() -> None:
    unknown = {_top(p)[0] for p in _modules() if _top(p)} - set(RANK)
    assert not unknown, f"modules outside LAYERS: {sorted(unknown)}; add each to its layer in tests/test_layers.py"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_dependencies_only_go_down(path: Path) -> None:
    here = _top(path)
    if not here or here[-1] == "__main__":  # the package's public surface (loaded lazily from every layer);
        return  # a command-line entry point (``python -m gradcam_lib.experiments``) stands above every layer
    upward = [".".join(target) for target in _imports(path) if RANK.get(target[0], -1) > RANK[here[0]]]
    assert not upward, f"{path.relative_to(PACKAGE)} (layer {here[0]}) imports the higher layer(s) {upward}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_chapter_modules_do_not_import_each_other(path: Path) -> None:
    here = _top(path)
    if len(here) < 2 or here[0] not in SHARED:
        return
    siblings = [".".join(t) for t in _imports(path)
                if t[0] == here[0] and len(t) > 1 and _chapter(t[1]) != _chapter(here[1])
                and t[1] not in SHARED[here[0]]]
    assert not siblings, f"{path.relative_to(PACKAGE)} imports another chapter's module {siblings}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_are_short(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(PACKAGE)} has {lines} lines (> {MAX_LINES}): split it by idea"


def test_the_checks_see_a_violation(tmp_path: Path) -> None:
    """The import parser finds an upward import and a sibling import (so the tests above can fail)."""
    source = tmp_path / "bad.py"
    source.write_text("from gradcam_lib.report.tables import Table\nimport gradcam_lib.experiments.pointing\n"
                      "from gradcam_lib import methods\n")
    assert _imports(source) == [["report", "tables"], ["experiments", "pointing"], ["methods"]]


def test_the_api_page_documents_every_module() -> None:
    page = (PACKAGE.parent / "book" / "api.md").read_text()
    documented = set(re.findall(r"automodule:: (gradcam_lib[\w.]*)", page))
    modules = {"gradcam_lib." + ".".join(_top(p)) for p in _modules()
               if _top(p) and _top(p) != ["runner"] and _top(p)[-1] != "__main__"}  # commands: in the README
    modules -= {m for m in modules if m.startswith("gradcam_lib.report.published.")}  # under report.published
    assert modules - documented == set(), "modules missing from book/api.md"
