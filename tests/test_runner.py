"""The runner builds each profile apart: book/ is never rewritten, and a failed chapter stops the
build with a non-zero exit that names the chapter and the cell."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from gradcam_lib.runner import Book, main


def _write_book(root: Path) -> None:
    book = root / "book"
    (book / "params" / "default").mkdir(parents=True)
    (book / "params" / "broken").mkdir(parents=True)
    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("fail = False\nprofile = 'default'")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# A chapter"),
        parameters,
        nbformat.v4.new_code_cell("if fail:\n    raise ValueError('the data set is missing')\nprint('ran', profile)"),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, book / "01_chapter.ipynb")
    (book / "intro.md").write_text("# The book\n\nIntro.\n")
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/01_chapter\n")
    (book / "params" / "default" / "01_chapter.yaml").write_text("profile: default\n")
    (book / "params" / "broken" / "01_chapter.yaml").write_text("profile: broken\nfail: true\n")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failing_chapter_leaves_book_untouched_and_exits_non_zero(tmp_path, capsys):
    _write_book(tmp_path)
    before = _snapshot(tmp_path / "book")
    assert main(["--profile", "broken", "--no-build"], Book(tmp_path)) == 1
    assert _snapshot(tmp_path / "book") == before
    message = capsys.readouterr().err
    assert "01_chapter (broken) failed in cell 3 of the executed copy (starting `if fail:`)" in message and "the data set is missing" in message
    failed = json.loads((tmp_path / "_build" / "broken" / "src" / "book" / "01_chapter.ipynb").read_text())
    assert any(o.get("output_type") == "error" for c in failed["cells"] for o in c.get("outputs", []))


def test_a_profile_executes_into_its_own_copy_and_says_so(tmp_path, capfd):
    _write_book(tmp_path)
    before = _snapshot(tmp_path / "book")
    assert main(["--profile", "default", "--no-build"], Book(tmp_path)) == 0
    assert _snapshot(tmp_path / "book") == before
    src = tmp_path / "_build" / "default" / "src"
    executed = nbformat.read(src / "book" / "01_chapter.ipynb", as_version=4)
    assert "ran default" in executed.cells[-1].outputs[0]["text"]
    assert "`default`" in (src / "book" / "intro.md").read_text()
    assert (src / "results").resolve() == (tmp_path / "results").resolve()
    # a quiet kernel start: no "Kernel is running over TCP without encryption" per chapter
    assert "without encryption" not in capfd.readouterr().err


def test_update_committed_writes_only_default_and_only_after_success(tmp_path):
    _write_book(tmp_path)
    chapter = tmp_path / "book" / "01_chapter.ipynb"
    assert main(["--update-committed", "--no-build"], Book(tmp_path)) == 0
    assert "ran default" in nbformat.read(chapter, as_version=4).cells[-1].outputs[0]["text"]
    assert str(tmp_path) not in chapter.read_text()  # no absolute paths of this machine
    with pytest.raises(SystemExit):
        main(["--profile", "broken", "--update-committed", "--no-build"], Book(tmp_path))


def test_the_chapters_are_those_of_the_table_of_contents_in_its_order(tmp_path):
    _write_book(tmp_path)
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "book" / "00_first.ipynb")
    nbformat.write(nbformat.v4.new_notebook(), tmp_path / "book" / "02_not_in_the_toc.ipynb")
    toc = tmp_path / "_toc.yml"
    toc.write_text("format: jb-book\nroot: book/intro\nchapters:\n  - file: book/01_chapter\n  - file: book/00_first\n")
    assert [c.name for c in Book(tmp_path).chapters()] == ["01_chapter.ipynb", "00_first.ipynb"]
    toc.write_text(toc.read_text() + "  - file: book/03_gone\n")
    with pytest.raises(FileNotFoundError, match="_toc.yml lists 'book/03_gone'"):
        Book(tmp_path).chapters()


def test_the_committed_book_runs_every_notebook_of_its_table_of_contents():
    assert {c.name for c in Book().chapters()} == {p.name for p in Book().sources.glob("*.ipynb")}


def test_unknown_profile_and_chapter_are_refused(tmp_path):
    _write_book(tmp_path)
    with pytest.raises(SystemExit, match="no parameter profile 'nope'"):
        main(["--profile", "nope"], Book(tmp_path))
    with pytest.raises(SystemExit):
        main(["--chapters", "99_missing"], Book(tmp_path))


def test_refreshing_an_unchanged_book_leaves_it_byte_identical(tmp_path):
    """`make notebooks` twice on an unchanged tree: the second run writes the same bytes (no
    timings, no random ids, no progress bars in the committed notebooks)."""
    _write_book(tmp_path)
    assert main(["--update-committed", "--no-build"], Book(tmp_path)) == 0
    first = _snapshot(tmp_path / "book")
    assert main(["--update-committed", "--no-build"], Book(tmp_path)) == 0
    assert _snapshot(tmp_path / "book") == first


def test_run_details_are_dropped_and_printed_text_is_joined():
    from gradcam_lib.runner import without_run_details

    stream = lambda name, text: {"output_type": "stream", "name": name, "text": [text]}  # noqa: E731
    notebook = {"metadata": {"papermill": {"duration": 3.2, "start_time": "t0", "end_time": "t1", "parameters": {"a": 1}}},
                "cells": [
                    {"cell_type": "code", "id": "r4nd0m", "metadata": {"tags": ["injected-parameters"], "papermill": {}},
                     "outputs": []},
                    {"cell_type": "code", "id": "c1", "metadata": {"tags": ["remove-stderr"], "execution": {"x": 1}},
                     "outputs": [stream("stdout", "a\n"), stream("stderr", "10%|#\n"), stream("stdout", "b\n"),
                                 stream("stdout", "c\n"), {"output_type": "display_data", "data": {}}, stream("stdout", "d\n")]},
                    {"cell_type": "code", "id": "c2", "metadata": {"tags": []},
                     "outputs": [stream("stdout", "e\n"), stream("stderr", "warn\n"), stream("stdout", "f\n")]},
                ]}
    clean = without_run_details(notebook)
    assert clean["metadata"]["papermill"] == {"parameters": {"a": 1}}
    injected, hidden, shown = clean["cells"]
    assert injected["id"] == "injected-parameters" and "papermill" not in injected["metadata"]
    assert "execution" not in hidden["metadata"] and "tags" not in shown["metadata"]
    assert [(o.get("name"), "".join(o.get("text", ""))) for o in hidden["outputs"]] == [
        ("stdout", "a\nb\nc\n"), (None, ""), ("stdout", "d\n")]
    assert [(o["name"], "".join(o["text"])) for o in shown["outputs"]] == [("stdout", "e\n"), ("stderr", "warn\n"),
                                                                           ("stdout", "f\n")]
