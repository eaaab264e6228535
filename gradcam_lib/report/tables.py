"""Result tables as a reader sees them: HTML in the rendered book, the same text for nbval.

:class:`Table` wraps a DataFrame: ``_repr_html_`` is a styled table (numbers right-aligned, groups of
rows separated, the rows of this run highlighted, a fixed id so that the HTML is the same on every
run) and ``__repr__`` is ``DataFrame.to_string()``, the text that nbval compares.
:func:`side_by_side` stacks this run's rows above the published ones, with a ``source`` column.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import pandas as pd

__all__ = ["MISSING", "Table", "side_by_side"]

MISSING = "-"
"""How a cell without a number is shown (a published table that has no such row, say)."""

_CSS = [
    {"selector": "", "props": "border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0;"},
    {"selector": "th, td", "props": "padding: 0.2em 0.6em; border-bottom: 1px solid #ddd;"},
    {"selector": "th", "props": "text-align: left; background: #f5f5f5;"},
    {"selector": "td", "props": "text-align: right; font-variant-numeric: tabular-nums;"},
    {"selector": "caption", "props": "caption-side: top; text-align: left; color: #555; padding-bottom: 0.3em;"},
]


class Table:
    """A DataFrame shown as an HTML table; ``group``: the column whose runs of equal values are
    separated by a rule; ``highlight``: the value of ``group`` whose rows are emphasised; ``index``:
    show the row labels (in the text form too, which is ``frame.to_string(index=index,
    na_rep=MISSING)``). The HTML shows each number as the text does: round the frame to round both."""

    def __init__(self, frame: pd.DataFrame, caption: str | None = None, group: str | None = None,
                 highlight: str | None = None, index: bool = True) -> None:
        if group is not None and group not in frame.columns:
            raise KeyError(f"group column {group!r} is not in the table's columns {list(frame.columns)}")
        self.frame, self.caption, self.group, self.highlight, self.index = frame, caption, group, highlight, index

    def __repr__(self) -> str:
        return self.frame.to_string(index=self.index, na_rep=MISSING)

    def _repr_html_(self) -> str:
        frame = self.frame
        uid = hashlib.sha256(frame.to_csv().encode()).hexdigest()[:10]  # same table, same HTML
        styler = _as_printed(frame).style.set_uuid(uid).set_table_styles(_CSS)
        text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        styler = styler.set_properties(subset=text, **{"text-align": "left"}) if text else styler
        if self.caption:
            styler = styler.set_caption(self.caption)
        if self.group is not None:
            values = frame[self.group].tolist()
            starts = {i for i in range(1, len(values)) if values[i] != values[i - 1]}
            positions = {label: i for i, label in enumerate(frame.index)}
            highlight = self.highlight

            def style_row(row: pd.Series) -> list[str]:
                css = "border-top: 2px solid #888;" if positions[row.name] in starts else ""
                if highlight is not None and row[self.group] == highlight:
                    css += "background: #eef6ee; font-weight: 600;"
                return [css] * len(row)

            styler = styler.apply(style_row, axis=1)
        return (styler if self.index else styler.hide(axis="index")).to_html()


def _as_printed(frame: pd.DataFrame) -> pd.DataFrame:
    """The cells as ``to_string`` prints them (so the HTML shows the digits the text shows and nbval
    checks), with whole-valued float columns as whole numbers (counts with gaps: 50000, not
    50000.0) and missing cells as :data:`MISSING`."""
    shown = frame.astype(object).where(frame.notna(), MISSING)
    for column in range(frame.shape[1]):
        values = frame.iloc[:, column]
        if not pd.api.types.is_float_dtype(values):
            continue
        if values.dropna().map(float.is_integer).all():
            cells = [MISSING if pd.isna(v) else f"{v:.0f}" for v in values]
        else:
            cells = [c.strip() for c in values.to_frame().to_string(index=False, header=False,
                                                                     na_rep=MISSING).splitlines()]
        shown.iloc[:, column] = cells
    return shown


def side_by_side(tables: Mapping[str, pd.DataFrame], caption: str | None = None, ours: str = "this run") -> Table:
    """One table of ``{source: frame}`` stacked in order, with ``source`` as the first column;
    columns that a source lacks are left empty (shown as :data:`MISSING`); the rows of ``ours``
    are highlighted."""
    frames = [frame.assign(source=source) for source, frame in tables.items() if len(frame)]
    if not frames:
        raise ValueError("side_by_side got no rows: every table is empty")
    stacked = pd.concat(frames, ignore_index=True)
    stacked = stacked[["source", *[c for c in stacked.columns if c != "source"]]]
    return Table(stacked, caption, group="source", highlight=ours, index=False)
