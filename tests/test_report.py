"""A chapter's "paper vs ours" table: rounding to the paper's precision, colours, no NaN."""

from __future__ import annotations

import html.parser
import math

import pytest

from vlbook.report import (
    MARKER,
    STATUS_COLOURS,
    format_value,
    paper_decimals,
    paper_vs_ours,
)
from vlbook.results import LedgerRow

LONG_NOTE = ("criterion: MMM 50 % clearly above this row (paper: below); MMM 50% - MMM 0%: "
             "paper +11.93, ours +2.08 ± 4.70 (paired, 1 s.e.); within the noise")


def _rows() -> list[LedgerRow]:
    return [
        LedgerRow("VLM", "Table 1", "VLM", "params (M)", 110.0, 110.46, "exact", "matches",
                  "BERT-base + MLM head"),
        LedgerRow("VLM", "Table 8", "MMM 0%", "R@1", 15.12, 6.254, "toy",
                  "direction reproduced", LONG_NOTE),
        LedgerRow("VLM", "Table 8", "MMM 30%", "R@1", 25.3, 8.333333, "toy", "differs",
                  "within the noise"),
        LedgerRow("VLM", "Sec. 5", "full run", "epochs", None, float("nan"), "full", "not run"),
        LedgerRow("E-ViLM", "Table 1", "allinone_tiny", "GFLOPs", 12.0, 11.72, "exact",
                  "matches", "counted on the meta device"),
    ]


class _Cells(html.parser.HTMLParser):
    """Text and style of every table cell, row by row."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[tuple[str, str]]] = []
        self.classes: list[str] = []
        self._cell: list[str] | None = None
        self._style = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.classes += (a.get("class") or "").split()
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell, self._style = [], a.get("style") or ""

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(("".join(self._cell), self._style))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(text: str) -> _Cells:
    parser = _Cells()
    parser.feed(text)
    return parser


def test_decimals_are_read_from_the_paper_value() -> None:
    assert paper_decimals(27.05) == 2
    assert paper_decimals(110.0) == 0  # the paper's "110 M"
    assert paper_decimals("16.0") == 1  # a string keeps its trailing zero
    assert paper_decimals(3) == 0
    assert paper_decimals(0.125) == 3
    assert paper_decimals(None) is None and paper_decimals(math.nan) is None
    assert paper_decimals("higher") is None


def test_values_are_rounded_half_up_and_missing_ones_read_a_dash() -> None:
    assert format_value(110.5, 0) == "111"  # half up, not to even
    assert format_value(8.333333, 2) == "8.33"
    assert format_value(25.3, 2) == "25.30"
    assert format_value(123456.78, 1) == "123,456.8"
    assert format_value(0.004, 1) == "0.004"  # never rounded away to "0.0"
    assert format_value(-0.01, 1) == "-0.01"
    assert format_value(0.0, 1) == "0.0"
    for missing in (None, math.nan, "nan", "None", ""):
        assert format_value(missing, 2) == "—"
    assert format_value("stage 1 + 2", 2) == "stage 1 + 2"
    assert format_value(9.981786962720777) == "9.98"  # no paper precision: 2 decimals


def test_table_rounds_to_the_paper_precision_per_table_column() -> None:
    table = paper_vs_ours(_rows())
    by_row = {(c[0], c[1]): c for c in table.cells}
    col = {name: i for i, name in enumerate(table.columns)}
    assert table.columns == ["table", "row", "metric", "paper", "ours", "scale", "status", "note"]
    params = by_row[("Table 1", "VLM")]
    # ours keeps one decimal: rounded to the paper's 0 it would read as the paper's value
    assert (params[col["paper"]], params[col["ours"]]) == ("110", "110.5")
    # Table 8's 25.3 is the paper's 25.30: the column shares the most decimals (2)
    mmm30 = by_row[("Table 8", "MMM 30%")]
    assert (mmm30[col["paper"]], mmm30[col["ours"]]) == ("25.30", "8.33")
    assert by_row[("Table 8", "MMM 0%")][col["ours"]] == "6.25"
    full = by_row[("Sec. 5", "full run")]
    assert (full[col["paper"]], full[col["ours"]], full[col["note"]]) == ("—", "—", "—")
    # a row about another paper's table names that paper
    assert ("E-ViLM Table 1", "allinone_tiny") in by_row
    # a metric's decimals can be given where the paper's value cannot tell
    forced = paper_vs_ours(_rows(), decimals={"params (M)": 1}, show_scale=False)
    assert "scale" not in forced.columns
    assert forced.cells[0][3:5] == ["110.0", "110.5"]


def test_html_has_the_marker_colours_full_notes_and_no_missing_values() -> None:
    rows = _rows()
    table = paper_vs_ours(rows, caption="Paper vs ours")
    page = _parse(table._repr_html_())
    assert MARKER in page.classes
    # no class that Bootstrap (under the book's theme) lays out as a grid or a table of its own
    assert not {"table", "row", "col", "status"} & set(page.classes)
    header, *body = page.rows
    shown = [c for c in table.columns if c != "note"]
    assert [t for t, _ in header] == shown
    # one line per ledger row, and its note (when it has one) on the line below
    assert len(body) == len(rows) + sum(bool(r.note) for r in rows)
    texts = [t for row in page.rows for t, _ in row]
    assert not any(t.strip() in ("NaN", "nan", "None", "") for t in texts)
    lines = iter(body)
    status = shown.index("status")
    for source in rows:
        line = next(lines)
        assert [t for t, _ in line][:2] == [table.cells[rows.index(source)][0], source.row]
        text, style = line[status]
        background, colour, symbol = STATUS_COLOURS[source.status]
        assert text == f"{symbol} {source.status}"
        assert f"background:{background}" in style and f"color:{colour}" in style
        if source.note:
            (note, note_style), = next(lines)
            assert note == source.note  # the whole note
            assert "white-space:normal" in note_style
    # reproduced rows are green, a differing one orange, a row not run grey
    greens = {STATUS_COLOURS[s][0] for s in ("matches", "direction reproduced")}
    assert all(int(g[3:5], 16) > int(g[1:3], 16) for g in greens)  # more green than red
    assert STATUS_COLOURS["differs"][0].startswith("#fd")
    grey = STATUS_COLOURS["not run"][0]
    assert grey[1:3] == grey[3:5] == grey[5:7]  # red = green = blue
    # the long note spans the table's width under its row; numbers never wrap
    assert f'colspan="{len(shown) - 1}"' in table.html
    _, ours_style = body[2][shown.index("ours")]
    assert "text-align:right" in ours_style and "white-space:nowrap" in ours_style
    assert LONG_NOTE in [t for row in body for t, _ in row]
    assert "<caption" in table.html and "Paper vs ours" in table.html


def test_text_is_escaped_and_an_unknown_status_is_refused() -> None:
    row = LedgerRow("P", "Table <1>", "a & b", "R@1", 1.0, 2.0, "toy", "differs", "x < y")
    text = paper_vs_ours([row]).html
    assert "Table &lt;1&gt;" in text and "a &amp; b" in text and "x &lt; y" in text
    row.status = "better"
    with pytest.raises(ValueError, match="not one of"):
        paper_vs_ours([row])


def test_plain_text_and_frame_views() -> None:
    table = paper_vs_ours(_rows())
    text = repr(table)
    assert text.splitlines()[0].split() == ["table", "row", "metric", "paper", "ours", "scale",
                                            "status", "note"]
    assert "NaN" not in text and "None" not in text
    frame = table.to_frame()
    assert list(frame.columns) == table.columns and len(frame) == len(_rows())
    assert paper_vs_ours([]).cells == []


def _write_ledger(root, chapter: str, scale: str, keys, status: str = "differs") -> None:
    import json
    from dataclasses import asdict

    rows = [asdict(LedgerRow(*key, 1.25, 2.5, scale, status, f"note of {key[2]}"))
            for key in keys]
    path = root / chapter / scale / "ledger.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"chapter": chapter, "scale": scale, "data": rows}))


def test_ledger_page_has_the_chart_and_counts_on_top_and_chapters_in_book_order(tmp_path):
    from vlbook.ledger import EXPECTED_ROWS
    from vlbook.report import ledger_page

    _write_ledger(tmp_path, "evilm", "toy", EXPECTED_ROWS["evilm"])
    _write_ledger(tmp_path, "allinone", "toy", EXPECTED_ROWS["allinone"], "matches")
    _write_ledger(tmp_path, "vlm", "smoke", EXPECTED_ROWS["vlm"])  # not part of a toy book
    page = ledger_page(tmp_path, scales=("toy", "full"), chart="ledger_status.png")
    sections = [x for x in page.splitlines() if x.startswith("## ")]
    assert [s.split(":")[0] for s in sections] == ["## VLM", "## SimVTP", "## Unmasked Teacher",
                                                   "## All-in-one", "## E-ViLM"]
    top = page.split("\n## ")[0]
    assert "![Ledger rows of each chapter by status](ledger_status.png)" in top
    assert "vlbook-ledger-summary" in top
    # every section is one paper-vs-ours table holding that chapter's rows, notes in full
    parts = dict(zip([s.split(":")[0][3:] for s in sections], page.split("\n## ")[1:]))
    for chapter, title in [("allinone", "All-in-one"), ("evilm", "E-ViLM")]:
        section = parts[title]
        assert section.count(f'class="{MARKER}"') == 1
        cells = _parse(section)
        assert len([r for r in cells.rows if len(r) > 1]) == len(EXPECTED_ROWS[chapter]) + 1
        assert f"note of {EXPECTED_ROWS[chapter][-1][2]}" in section
    # All-in-one's FLOP rows of E-ViLM's Table 1 stay in its section and name E-ViLM
    assert "E-ViLM Table 1" in parts["All-in-one"]
    assert "E-ViLM Table 1" not in parts["E-ViLM"]
    # chapters that never ran at this scale list their rows as not run, never NaN or None
    assert "notebooks/vlm.ipynb" in parts["VLM"] and "vpo-differs" not in parts["VLM"]
    assert parts["VLM"].count("vpo-not-run") == len(EXPECTED_ROWS["vlm"])
    texts = [t for row in _parse(page).rows for t, _ in row]
    assert not any(t.strip() in ("NaN", "nan", "None", "") for t in texts)
    # before any chapter ran, every expected row is there, not run
    empty = ledger_page(tmp_path / "empty")
    assert empty.count("vpo-not-run") == sum(len(k) for k in EXPECTED_ROWS.values())


def test_ledger_status_chart_stacks_the_counts_of_each_chapter(tmp_path):
    from vlbook.report import STATUS_CHART_COLOURS, plot_ledger_status

    counts = {"VLM": {"matches": 1, "direction reproduced": 0, "differs": 2, "not run": 3},
              "UMT": {"matches": 4, "direction reproduced": 1, "differs": 0, "not run": 0}}
    fig = plot_ledger_status(counts, tmp_path / "status.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["UMT", "VLM"]  # VLM on top
    widths = {(c.get_label(), round(b.get_y() + b.get_height() / 2)): b.get_width()
              for c in ax.containers for b in c}
    assert widths[("differs", 1)] == 2 and widths[("matches", 0)] == 4
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == list(STATUS_CHART_COLOURS)
    assert ax.get_xlabel() == "ledger rows"
    assert (tmp_path / "status.png").stat().st_size > 5_000
