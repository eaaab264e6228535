"""The claims a chapter's prose makes, checked on the run the reader is looking at.

A chapter states a finding in its text and then checks it in a claims cell::

    claims = Claims()
    test = mcnemar(cam_hits, grad_hits)
    claims.check("Grad-CAM localises more images than Backprop", test.p_value < 0.05 and test.difference > 0, test)
    claims                                   # renders a pass / fail list

A check is a statement, its verdict and the evidence (a test result, an interval) that decided it;
nothing is asserted that the numbers could not contradict.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

__all__ = ["Claim", "Claims"]


@dataclass(frozen=True)
class Claim:
    statement: str
    holds: bool
    evidence: str = ""


@dataclass
class Claims:
    """An ordered list of checked claims that renders as pass / fail (HTML in the book, text in
    a terminal and in nbval's comparison)."""

    items: list[Claim] = field(default_factory=list)

    def check(self, statement: str, holds: object, evidence: object = "") -> bool:
        """Record ``statement`` with its verdict (``bool(holds)``) and the evidence behind it."""
        claim = Claim(statement, bool(holds), str(evidence))
        self.items.append(claim)
        return claim.holds

    @property
    def all_hold(self) -> bool:
        return all(claim.holds for claim in self.items)

    def __repr__(self) -> str:
        lines = [f"{'PASS' if c.holds else 'FAIL'}  {c.statement}" + (f"  [{c.evidence}]" if c.evidence else "")
                 for c in self.items]
        return "\n".join(lines) or "(no claims checked)"

    def _repr_html_(self) -> str:
        """An admonition (the book theme's styles): green ``tip`` when every claim holds, red
        ``error`` naming how many fail; one line per claim with its verdict and evidence."""
        failed = sum(not c.holds for c in self.items)
        if not self.items:
            kind, title = "note", "No claims checked"
        elif failed:
            kind, title = "error", f"{failed} of {len(self.items)} claims FAIL on this run"
        else:
            kind, title = "tip", f"All {len(self.items)} claims hold on this run"
        lines = "".join(
            f"<li><strong style='color:{'#1a7f37' if c.holds else '#cf222e'}'>"
            f"{'&#10004; pass' if c.holds else '&#10008; FAIL'}</strong> {html.escape(c.statement)}"
            + (f" <span style='color:#57606a'>[{html.escape(c.evidence)}]</span>" if c.evidence else "")
            + "</li>"
            for c in self.items
        )
        return (f"<div class='admonition {kind} claims'><p class='admonition-title'>{html.escape(title)}</p>"
                f"<ul>{lines}</ul></div>")
