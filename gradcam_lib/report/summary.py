"""What a chapter says about itself before its results: a compact "this run" box made from its
parameters (profile, models, data, number of images), and its headline table, saved so that the
book's at-a-glance page (``book/glance.ipynb``) can show every chapter's headline numbers together.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["HEADLINES", "ThisRun", "read_headlines", "save_headline", "this_run"]

HEADLINES = "headlines"
"""The folder under ``results/<profile>/`` that holds one headline CSV per chapter."""


def _text(value: object) -> str:
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(_text(v) for v in value)
    return "-" if value is None else str(value)


class ThisRun:
    """The facts of one run, shown as a box (HTML) or one line per fact (text)."""

    def __init__(self, profile: str, facts: dict[str, object]) -> None:
        self.facts = {"profile": profile, **facts}

    def __repr__(self) -> str:
        return "\n".join(f"{name.replace('_', ' ')}: {_text(value)}" for name, value in self.facts.items())

    def _repr_html_(self) -> str:
        rows = "".join(f"<dt>{html.escape(name.replace('_', ' '))}</dt><dd>{html.escape(_text(value))}</dd>"
                       for name, value in self.facts.items())
        return ('<div class="admonition note this-run"><p class="admonition-title">This run</p>'
                '<dl style="display: grid; grid-template-columns: max-content auto; gap: 0.1em 1em; margin: 0">'
                f"{rows}</dl></div>")


def this_run(profile: str, **facts: object) -> ThisRun:
    """``this_run(profile, models=[...], data=..., images=160)``: the box a chapter shows first."""
    return ThisRun(profile, facts)


def save_headline(table: pd.DataFrame, chapter: str, title: str, results_dir: str | Path, profile: str) -> Path:
    """Write a chapter's headline table (this run beside the published rows, a ``source`` column
    first) to ``<results_dir>/<profile>/headlines/<chapter>.csv``, with its title as the first line."""
    if "source" not in table.columns:
        raise ValueError(f"the headline table of {chapter} needs a 'source' column (this run / paper / KTH)")
    path = Path(results_dir) / profile / HEADLINES / f"{chapter}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as out:
        out.write(f"# {title}\n")
        table.to_csv(out, index=False)
    return path


Headline = tuple[str, str, pd.DataFrame | None]


def read_headlines(results_dir: str | Path, profile: str, chapters: Sequence[str]) -> list[Headline]:
    """``(chapter, title, table)`` for each of ``chapters`` in order; ``table`` is None (and the title
    says so) for a chapter that has not been run in this profile."""
    found = []
    for chapter in chapters:
        path = Path(results_dir) / profile / HEADLINES / f"{chapter}.csv"
        if not path.is_file():
            found.append((chapter, f"not run in the {profile} profile yet", None))
            continue
        with open(path, encoding="utf-8") as source:
            title = source.readline().removeprefix("# ").strip()
            found.append((chapter, title, pd.read_csv(source, keep_default_na=False, na_values=[""])))
    return found
