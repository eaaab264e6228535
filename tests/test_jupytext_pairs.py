"""Every chapter's notebook and its jupytext pair (``book/<chapter>.py``, see ``jupytext.toml``)
hold the same code and prose, so that a chapter's diff in git can be read in the script."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gradcam_lib.runner import Book, commit_notebook, paired_text

NOTEBOOKS = sorted((Book().sources).glob("*.ipynb"))


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_matches_notebook(notebook: Path) -> None:
    pair = notebook.with_suffix(".py")
    assert pair.exists(), f"{pair.name} is missing: run `.venv/bin/jupytext --sync book/{notebook.name}`"
    assert pair.read_text(encoding="utf-8") == paired_text(notebook), (
        f"{notebook.name} and {pair.name} disagree: edit one in JupyterLab (jupytext syncs on save) "
        f"or run `.venv/bin/jupytext --sync book/{notebook.name}`")


def test_pair_sees_a_change_of_code(tmp_path: Path) -> None:
    """The check above can fail: a notebook whose code changed no longer matches the old pair."""
    notebook = tmp_path / "book" / NOTEBOOKS[0].name
    notebook.parent.mkdir()
    (tmp_path / "jupytext.toml").write_text((Book().root / "jupytext.toml").read_text())
    content = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    notebook.write_text(json.dumps(content), encoding="utf-8")
    before = paired_text(notebook)
    code = next(cell for cell in content["cells"] if cell["cell_type"] == "code")
    code["source"] = "seed = 12345\n"
    notebook.write_text(json.dumps(content), encoding="utf-8")
    assert paired_text(notebook) != before and "seed = 12345" in paired_text(notebook)


def test_commit_notebook_writes_the_pair(tmp_path: Path) -> None:
    """``make notebooks`` (commit_notebook) rewrites the pair with the notebook, without the
    empty tags papermill adds and without this machine's paths."""
    (tmp_path / "jupytext.toml").write_text((Book().root / "jupytext.toml").read_text())
    (tmp_path / "book").mkdir()
    content = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    content["metadata"]["papermill"] = {"input_path": "/somewhere/else/x.ipynb", "output_path": "/tmp/y.ipynb"}
    for cell in content["cells"]:
        cell["metadata"].setdefault("tags", [])
    executed = tmp_path / "executed.ipynb"
    executed.write_text(json.dumps(content), encoding="utf-8")
    chapter = tmp_path / "book" / NOTEBOOKS[0].name
    commit_notebook(executed, chapter)
    written = json.loads(chapter.read_text(encoding="utf-8"))
    assert written["metadata"]["papermill"]["input_path"] == chapter.name
    assert all(cell["metadata"].get("tags", ["x"]) != [] for cell in written["cells"])
    pair = chapter.with_suffix(".py").read_text(encoding="utf-8")
    assert pair == paired_text(chapter) and "tags=[]" not in pair and "/somewhere" not in pair
