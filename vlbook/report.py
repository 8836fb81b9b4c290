"""A chapter's "paper vs ours" table, formatted for the rendered book.

:func:`paper_vs_ours` turns a chapter's ledger rows (:class:`vlbook.results.LedgerRow`) into
one compact HTML table: one line per row, the paper's number and ours side by side, each
rounded to the precision the paper printed, the status colour-coded (with its word, so it
reads without colour too), every note in full and wrapped. Missing values read "—", never
``NaN`` or ``None``. The table carries the class :data:`MARKER`, which the book's page check
(:func:`vlbook.book.chapter_page_problems`) looks for on every paper chapter.

In a chapter notebook, after its ``ledger`` list is complete::

    from vlbook.report import paper_vs_ours
    paper_vs_ours(ledger)
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from vlbook.results import (
    STATUSES,
    LedgerRow,
    _chapter_spec,
    _chapter_title,
    _rows_by_chapter,
    ledger_intro,
)

__all__ = [
    "MARKER",
    "STATUS_COLOURS",
    "PaperVsOurs",
    "STATUS_CHART_COLOURS",
    "format_value",
    "ledger_page",
    "paper_decimals",
    "paper_vs_ours",
    "plot_ledger_status",
]

#: Class (and ``data-vlbook`` attribute) of the table; the book's page check looks for it.
MARKER = "vlbook-paper-vs-ours"

#: Background, text colour and symbol of each status: greens for what the run reproduced,
#: orange for what it did not, grey for what it did not measure.
STATUS_COLOURS: dict[str, tuple[str, str, str]] = {
    "matches": ("#d4efdf", "#14613a", "✓"),
    "direction reproduced": ("#e4f3d4", "#3b6b14", "↗"),
    "differs": ("#fde2c8", "#9a3f00", "✗"),
    "not run": ("#ececec", "#5a5a5a", "–"),
}

#: Digits after the point beyond which a paper value's decimals are float noise.
MAX_DECIMALS = 6

_MISSING = "—"


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    if isinstance(value, str) and value.strip().lower() in ("", "nan", "none", "null", "<na>"):
        return True
    return False


def _decimal(value: Any) -> Decimal | None:
    """``value`` as an exact :class:`~decimal.Decimal` of its printed form, or None."""
    if isinstance(value, bool) or _is_missing(value):
        return None
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        if math.isinf(value):
            return None
        return Decimal(repr(value))  # the shortest repr: 27.05, not 27.0500000000000007
    if isinstance(value, str):
        try:
            number = Decimal(value.strip().replace(",", ""))
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def paper_decimals(value: Any) -> int | None:
    """How many decimals the paper printed, read from its value as the ledger holds it.

    A float keeps no trailing zeros, so ``27.05`` gives 2 and ``110.0`` gives 0 (the paper's
    "110 M"); a number given as a string keeps them (``"16.0"`` gives 1); an int gives 0.
    None when the value is no number (missing, or a text such as ``"higher"``)."""
    number = _decimal(value)
    if number is None:
        return None
    if isinstance(value, str):
        exponent = number.as_tuple().exponent
    else:
        exponent = number.normalize().as_tuple().exponent
    assert isinstance(exponent, int)
    return min(max(0, -exponent), MAX_DECIMALS)


def _default_decimals(value: Decimal) -> int:
    """Decimals for a number with no paper value to follow: 2, none from 10,000 up."""
    return 0 if abs(value) >= 10_000 else 2


def format_value(value: Any, decimals: int | None = None) -> str:
    """``value`` for a table cell: rounded half up to ``decimals`` (default: 2, or 0 from
    10,000 up), thousands separated; a non-zero number that would round to zero shows two
    significant digits instead; a text is shown as it is; a missing value is "—"."""
    if _is_missing(value):
        return _MISSING
    number = _decimal(value)
    if number is None:
        if isinstance(value, float):  # infinite
            return "∞" if value > 0 else "−∞"
        return str(value).strip()
    if decimals is None:
        decimals = _default_decimals(number)
    step = Decimal(1).scaleb(-decimals)
    rounded = number.quantize(step, rounding=ROUND_HALF_UP)
    if rounded == 0 and number != 0:
        return f"{float(number):.2g}"
    if rounded == 0:
        rounded = abs(rounded)  # no "-0.0"
    return f"{rounded:,.{decimals}f}" if abs(rounded) >= 10_000 else f"{rounded:.{decimals}f}"


@dataclass
class PaperVsOurs:
    """The formatted table: ``html`` (what a notebook displays), ``cells`` (the text of every
    cell, row by row, in :attr:`columns` order) and the ``rows`` it was made from."""

    rows: list[LedgerRow]
    columns: list[str]
    cells: list[list[str]]
    html: str

    def _repr_html_(self) -> str:
        return self.html

    def to_frame(self) -> Any:
        """The cells as a :class:`pandas.DataFrame` of strings."""
        import pandas as pd

        return pd.DataFrame(self.cells, columns=self.columns)

    def __repr__(self) -> str:  # a console or a plain-text front end
        widths = [max([len(c)] + [len(r[i]) for r in self.cells])
                  for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in self.cells]
        return "\n".join(line.rstrip() for line in lines)


# Inline styles (a notebook output cannot rely on a stylesheet), no class that a theme styles:
# Bootstrap, under the book's theme, gives ``.table`` and ``.row`` layouts of their own.
_CELL = "padding:0.25em 0.5em;vertical-align:top;"
_RULE = "border-bottom:1px solid rgba(128,128,128,0.35);"
_NUMBER = _CELL + "text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums;"
_TEXT = _CELL + "text-align:left;"
_NOTE = (_TEXT + "white-space:normal;padding-top:0;padding-left:1.2em;font-size:0.9em;"
         "opacity:0.85;")
_HEAD = ("padding:0.3em 0.5em;border-bottom:2px solid rgba(128,128,128,0.7);text-align:left;"
         "vertical-align:bottom;white-space:nowrap;")


def _status_cell(status: str, rowspan: int, rule: str) -> str:
    background, colour, symbol = STATUS_COLOURS.get(status, ("#ffffff", "#000000", ""))
    style = (_CELL + rule + f"background:{background};color:{colour};font-weight:600;"
             "min-width:7.5em;")  # "direction reproduced" may take two lines
    span = f' rowspan="{rowspan}"' if rowspan > 1 else ""
    return (f'<td class="vpo-status vpo-{status.replace(" ", "-")}"{span} style="{style}">'
            f"{html.escape(symbol)} {html.escape(status)}</td>")


def _ours_places(value: Any, places: int | None) -> int | None:
    """Decimals for our value: the paper's, but at least one for a non-integer number."""
    if places is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return places
    return places if float(value).is_integer() else max(places, 1)


def paper_vs_ours(rows: Sequence[LedgerRow], *, decimals: Mapping[str, int] | None = None,
                  show_scale: bool = True, caption: str | None = None,
                  paper: str | None = None) -> PaperVsOurs:
    """A chapter's ledger rows as one formatted "paper vs ours" table.

    One entry per row: table, row, metric, paper, ours, (scale,) status on one line, and the
    row's note in full on a line below it, across the table's width. ``paper`` and
    ``ours`` are rounded to the decimals the paper printed (:func:`paper_decimals`; ``decimals``
    maps a metric name to a number of decimals where the paper's value cannot tell, e.g.
    ``{"memory (G)": 1}`` for a paper that printed "16.0"). A float loses trailing zeros, so
    the rows of one paper table and metric share the most decimals any of their paper values
    has (Table 8's 25.3 beside 27.05 is the paper's 25.30). A row with no paper number shows
    ours with two decimals. A row about another paper's table than ``paper`` (default: the
    paper of most rows; E-ViLM's FLOPs of All-in-one in the All-in-one chapter) names that
    paper before its table. Status is colour-coded, with its word; notes are shown
    in full, wrapped; a missing value reads "—"."""
    rows = list(rows)
    for r in rows:
        if r.status not in STATUSES:
            raise ValueError(f"status {r.status!r} is not one of {STATUSES}")
    decimals = dict(decimals or {})
    # a float keeps no trailing zero (the paper's 25.30 is 25.3): a table's column of one
    # metric is printed with the most decimals any of its paper values has
    column_places: dict[tuple[str, str, str], int] = {}
    for r in rows:
        places = paper_decimals(r.paper_value)
        key = (r.paper, r.table, r.metric)
        if places is not None:
            column_places[key] = max(places, column_places.get(key, 0))
    own = paper
    if own is None and rows:
        own = max(dict.fromkeys(r.paper for r in rows), key=[r.paper for r in rows].count)
    columns = ["table", "row", "metric", "paper", "ours", *(["scale"] if show_scale else []),
               "status", "note"]
    shown = [c for c in columns if c != "note"]  # the note goes on a line of its own
    cells: list[list[str]] = []
    body: list[str] = []
    for r in rows:
        places = decimals.get(r.metric)
        if places is None and paper_decimals(r.paper_value) is not None:
            places = column_places[(r.paper, r.table, r.metric)]
        table = r.table if r.paper == own else f"{r.paper} {r.table}"
        values = {
            "table": table or _MISSING,
            "row": r.row or _MISSING,
            "metric": r.metric or _MISSING,
            "paper": format_value(r.paper_value, places),
            # ours keeps at least one decimal when it has any, so that rounding to the
            # paper's precision cannot move it onto (or off) the paper's value: 110.46 M is
            # "110.5" beside the paper's "110", not "110"
            "ours": format_value(r.ours, _ours_places(r.ours, places)),
            "scale": r.scale or _MISSING,
            "status": r.status,
            "note": (r.note or "").strip() or _MISSING,
        }
        cells.append([values[c] for c in columns])
        note = (r.note or "").strip()
        rule = "" if note else _RULE
        tds = []
        for c in shown:
            if c == "status":
                tds.append(_status_cell(r.status, 2 if note else 1, _RULE))
                continue
            if c in ("paper", "ours"):
                style = _NUMBER
            else:  # short labels stay on one line, long ones wrap
                style = _TEXT + ("white-space:nowrap;" if len(values[c]) <= 14 else
                                 "min-width:7em;")
            tds.append(f'<td class="vpo-{c}" style="{style}{rule}">{html.escape(values[c])}</td>')
        body.append('<tr class="vpo-entry">' + "".join(tds) + "</tr>")
        if note:  # the note in full, wrapped across the width of the table, under its row
            body.append(f'<tr class="vpo-note-row"><td class="vpo-note" colspan="{len(shown) - 1}"'
                        f' style="{_NOTE}{_RULE}">{html.escape(note)}</td></tr>')
    head = "".join(
        f'<th style="{_HEAD}{"text-align:right;" if c in ("paper", "ours") else ""}">'
        f"{html.escape(c)}</th>" for c in shown)
    legend = " · ".join(
        f'<span style="background:{b};color:{f};padding:0 0.35em;border-radius:3px">'
        f"{html.escape(sym)} {html.escape(name)}</span>"
        for name, (b, f, sym) in STATUS_COLOURS.items())
    parts = [f'<div class="{MARKER}-wrap" style="overflow-x:auto;margin:0.5em 0 1em 0">',
             f'<table class="{MARKER}" data-vlbook="{MARKER}" '
             'style="border-collapse:collapse;width:100%;font-size:0.88em;line-height:1.35">']
    if caption:
        parts.append(f'<caption style="caption-side:top;text-align:left;font-weight:600;'
                     f'padding-bottom:0.3em">{html.escape(caption)}</caption>')
    parts += [f"<thead><tr>{head}</tr></thead>", "<tbody>", *body, "</tbody></table>",
              '<p style="font-size:0.8em;margin:0.3em 0 0 0">Numbers rounded to the paper\'s '
              f"precision; each row's note below it. {legend}</p>", "</div>"]
    return PaperVsOurs(rows, columns, cells, "\n".join(parts))


# --------------------------------------------------------------------------------------------
# the reproduction ledger page: every chapter's table, in book order, with a summary on top
# --------------------------------------------------------------------------------------------

#: Bar colours of the ledger's summary chart, the status colours of the tables saturated.
STATUS_CHART_COLOURS: dict[str, str] = {"matches": "#1e8a4c", "direction reproduced": "#8cc152",
                                        "differs": "#e6772e", "not run": "#bdbdbd"}


def plot_ledger_status(counts: Mapping[str, Mapping[str, int]], path: Any = None) -> Any:
    """Stacked horizontal bars of ledger rows by status, one bar per chapter (book order from
    the top), each segment labelled with its count; the legend above the bars, so it never
    covers the axis label. ``counts`` is :func:`vlbook.results.ledger_counts`. Saved as a PNG
    to ``path`` when given; returns the :class:`matplotlib.figure.Figure`."""
    from matplotlib.figure import Figure

    titles = list(counts)[::-1]
    fig = Figure(figsize=(7.5, 0.42 * len(titles) + 1.5))
    ax = fig.subplots()
    left = [0] * len(titles)
    for status in STATUSES:
        values = [counts[t].get(status, 0) for t in titles]
        bars = ax.barh(titles, values, left=left, color=STATUS_CHART_COLOURS[status],
                       label=status, height=0.62)
        ax.bar_label(bars, labels=[str(v) if v else "" for v in values], label_type="center",
                     fontsize=7.5, color="black" if status != "matches" else "white")
        left = [a + b for a, b in zip(left, values)]
    ax.set_xlabel("ledger rows")
    ax.set_xlim(0, max(left + [1]) * 1.02)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(STATUSES),
              frameon=False, fontsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110, facecolor="white", bbox_inches="tight")
    return fig


def _summary_table(by_chapter: Mapping[str, list[LedgerRow]], titles: Mapping[str, str]) -> str:
    head = [f'<th style="{_HEAD}">chapter</th>']
    for status in STATUSES:
        background, colour, symbol = STATUS_COLOURS[status]
        head.append(f'<th style="{_HEAD}text-align:right;background:{background};'
                    f'color:{colour}">{html.escape(symbol)} {html.escape(status)}</th>')
    head.append(f'<th style="{_HEAD}text-align:right">rows</th>')
    body = []
    for name, rows in by_chapter.items():
        tds = [f'<td style="{_TEXT}{_RULE}">{html.escape(titles[name])}</td>']
        tds += [f'<td style="{_NUMBER}{_RULE}">{sum(r.status == s for r in rows)}</td>'
                for s in STATUSES]
        tds.append(f'<td style="{_NUMBER}{_RULE}font-weight:600">{len(rows)}</td>')
        body.append("<tr>" + "".join(tds) + "</tr>")
    return ('<div style="overflow-x:auto;margin:0.5em 0 1em 0">'
            '<table class="vlbook-ledger-summary" style="border-collapse:collapse;'
            f'font-size:0.88em"><thead><tr>{"".join(head)}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div>")


def ledger_page(root: Any = None, scales: tuple[str, ...] | None = None,
                chart: str | None = None) -> str:
    """The reproduction ledger page as MyST markdown, for readers: the summary chart
    (``chart``, an image path; :func:`plot_ledger_status` draws it) and a count of rows by
    status per chapter at the top, then one section per chapter in book order with its rows as
    a :func:`paper_vs_ours` table (the paper's precision, status colours, each note in full
    under its row). Rows are those :func:`vlbook.results.ledger_markdown` lists: what each
    chapter wrote at ``scales`` plus every expected row no run wrote, as ``not run``; a row
    about another paper's table stays with the chapter that measured it and names that
    paper."""
    from vlbook.paths import results_root

    by_chapter = _rows_by_chapter(root or results_root(), scales)
    lines = ledger_intro("Numbers are rounded to the precision the paper printed; each row's"
                         " note, under it, says how it was measured and decided.")
    if not by_chapter:
        lines.append("No chapter has written ledger rows yet.")
        return "\n".join(lines) + "\n"
    titles = {name: _chapter_title(name, short=True) for name in by_chapter}
    if chart:
        lines += [f"![Ledger rows of each chapter by status]({chart})", ""]
    lines += [_summary_table(by_chapter, titles), ""]
    for name, rows in by_chapter.items():
        spec = _chapter_spec(name)
        own = spec.ledger_rows[0][0] if spec is not None and spec.ledger_rows else None
        lines += [f"## {_chapter_title(name)}", "", paper_vs_ours(rows, paper=own).html, ""]
    return "\n".join(lines) + "\n"
