"""The claims cell: a pass / fail list whose verdicts come from the checks, rendered as an
admonition that is green when every claim holds and red (naming the count) when one fails."""

from __future__ import annotations

from gradcam_lib.report.claims import Claims


def test_verdicts_follow_the_checks_and_the_text_form_lists_them() -> None:
    claims = Claims()
    assert claims.check("1 < 2", 1 < 2, "p = 0.01") is True
    assert claims.check("2 < 1", 2 < 1) is False
    assert not claims.all_hold
    assert repr(claims).splitlines() == ["PASS  1 < 2  [p = 0.01]", "FAIL  2 < 1"]


def test_html_is_a_green_admonition_when_all_hold_and_red_when_one_fails() -> None:
    holding = Claims()
    holding.check("a <b> claim", True, "CI [0.1, 0.2]")
    page = holding._repr_html_()
    assert "admonition tip" in page and "All 1 claims hold on this run" in page
    assert "a &lt;b&gt; claim" in page and "<b>" not in page  # statements are escaped
    failing = Claims()
    failing.check("holds", True)
    failing.check("fails", False)
    page = failing._repr_html_()
    assert "admonition error" in page and "1 of 2 claims FAIL on this run" in page
    assert page.index("&#10008; FAIL") > page.index("&#10004; pass")
    assert "No claims checked" in Claims()._repr_html_()
