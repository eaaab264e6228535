"""The report layer's tables and boxes: HTML for the book, the same numbers as text for nbval."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from gradcam_lib.report import MISSING, Table, side_by_side
from gradcam_lib.report.summary import read_headlines, save_headline, this_run


def _ours() -> pd.DataFrame:
    return pd.DataFrame({"model": ["lite0", "lite2"], "error": [77.5, 48.125]})


def test_a_table_prints_as_its_frame_and_renders_the_same_html_every_time() -> None:
    table = Table(_ours(), caption="errors in %")
    assert repr(table) == _ours().to_string()
    assert repr(Table(_ours(), index=False)) == _ours().to_string(index=False)
    html = table._repr_html_()
    assert html == Table(_ours(), caption="errors in %")._repr_html_()  # no random ids
    assert "errors in %" in html and ">77.500<" in html and ">48.125<" in html  # the digits of the text
    assert "<table" in html and "text-align: right" in html


def _styled_rows(html: str, css: str) -> set[int]:
    """The row numbers whose cells a CSS rule with ``css`` selects (Styler groups equal rules)."""
    rows = set()
    for selectors, body in re.findall(r"([^{}]+)\{([^{}]*)\}", html):
        if css in body:
            rows |= {int(r) for r in re.findall(r"_row(\d+)_col\d+", selectors)}
    return rows


def test_side_by_side_stacks_sources_in_order_and_highlights_this_run() -> None:
    paper = pd.DataFrame({"model": ["VGG-16"], "error": [56.51], "images": [50000]})
    table = side_by_side({"this run": _ours(), "paper": paper})
    assert list(table.frame.columns) == ["source", "model", "error", "images"]
    assert table.frame["source"].tolist() == ["this run", "this run", "paper"]
    assert table.frame["images"].isna().tolist() == [True, True, False]
    html = table._repr_html_()
    assert _styled_rows(html, "font-weight: 600") == {0, 1}  # the rows of this run
    assert _styled_rows(html, "border-top: 2px solid") == {2}  # one rule, above the paper's row
    assert f">{MISSING}<" in html  # the missing image counts of this run
    assert ">50000<" in html and ">56.510<" in html  # a count stays whole; numbers as the text prints them


def test_side_by_side_refuses_nothing_to_show_and_a_table_an_unknown_group() -> None:
    with pytest.raises(ValueError, match="no rows"):
        side_by_side({"this run": _ours().iloc[:0]})
    with pytest.raises(KeyError, match="'source'"):
        Table(_ours(), group="source")


def test_the_this_run_box_lists_every_fact_and_escapes_html() -> None:
    box = this_run("default", models=["efficientnet_lite0", "efficientnet_lite2"], data="composite <160>", images=160)
    assert repr(box) == ("profile: default\nmodels: efficientnet_lite0, efficientnet_lite2\n"
                         "data: composite <160>\nimages: 160")
    html = box._repr_html_()
    assert "This run" in html and "composite &lt;160&gt;" in html and "<dd>160</dd>" in html


def test_headlines_round_trip_and_a_chapter_not_run_says_so(tmp_path) -> None:
    table = side_by_side({"this run": _ours(), "paper": pd.DataFrame({"model": ["VGG-16"], "error": [56.51]})}).frame
    path = save_headline(table, "01_localization", "Localisation error (%)", tmp_path, "default")
    assert path == tmp_path / "default" / "headlines" / "01_localization.csv"
    (chapter, title, read), (missing, note, nothing) = read_headlines(tmp_path, "default",
                                                                      ["01_localization", "02_pointing_game"])
    assert (chapter, title) == ("01_localization", "Localisation error (%)")
    pd.testing.assert_frame_equal(read, table)
    assert missing == "02_pointing_game" and nothing is None and "not run in the default profile" in note
    with pytest.raises(ValueError, match="'source' column"):
        save_headline(_ours(), "x", "t", tmp_path, "default")
