"""The book builds from the executed notebooks and renders in a real browser."""

from __future__ import annotations

from pathlib import Path

import pytest

from vlbook import book


def test_toc_follows_the_chapter_order(tmp_path: Path) -> None:
    chapters = [("intro", "Foundations"), ("vlm", "The papers"), ("umt", "The papers")]
    text = book.write_toc(tmp_path, chapters).read_text()
    assert text.index("chapters/intro") < text.index("chapters/vlm") < text.index("chapters/umt")
    assert text.count("caption: The papers") == 1
    assert text.index("file: ledger") < text.index("file: references")


def test_chapter_order_is_the_papers_order() -> None:
    assert [c for c, _ in book.chapter_order()] == [
        "intro", "vlm", "simvtp", "umt", "allinone", "evilm", "capstone"
    ]


def test_static_check_finds_a_broken_image(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text('<html><body><img src="_images/missing.png"></body>')
    with pytest.raises(book.HtmlCheckError, match="missing.png"):
        book._static_check(tmp_path, "page.html")
    with pytest.raises(book.HtmlCheckError, match="missing page"):
        book._static_check(tmp_path, "other.html")


@pytest.mark.book
def test_smoke_book_builds_and_renders(tmp_path: Path, executed_smoke_notebooks) -> None:
    failed = {k: v for k, v in executed_smoke_notebooks.items() if isinstance(v, Exception)}
    if failed:
        pytest.skip(f"notebooks failed (reported elsewhere): {sorted(failed)}")
    html = book.build("smoke", tmp_path / "stage", check=False, executed=executed_smoke_notebooks)
    chapters = [f"chapters/{c}.html" for c, _ in book.existing_chapters()]
    pages = ["index.html", *chapters, "ledger.html", "paper_vs_code.html", "benchmarks.html",
             "references.html"]
    # what a reader should not see: papermill's second "# Parameters" cell, the machine's
    # absolute paths, raw markdown tables, thebe's duplicate script, require.js from a CDN
    assert book.page_problems(html, pages) == {}
    # each paper chapter's diagram, paper-vs-ours table and take-away: a failure once
    # book.STRICT_CHAPTER_PAGES is switched on, a printed list until then
    lacking = book.chapter_page_problems(html, chapters)
    print("chapter pages lack:", lacking)
    if book.STRICT_CHAPTER_PAGES:
        assert lacking == {}
    assert (html / "architectures.png").exists() or list((html / "_images").glob("architectures*"))
    if book.find_chromium() is None:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium)")
    report = book.check_html(html, chapters, tmp_path / "shots")
    assert report.browser
    assert all(s.exists() and s.stat().st_size > 10_000 for s in report.screenshots)
    intro = report.pages["chapters/intro.html"]
    assert intro["rendered_images"] >= 1, "the intro chapter should show figures"


# ---------------------------------------------------------------------------------------------
# what a reader must not see on a page (issue: the rendered book, for its readers)
# ---------------------------------------------------------------------------------------------

CLEAN_PAGE = """<html><head><script src="_static/sphinx-book-theme.js"></script></head><body>
<div class="cell docutils container"><div class="cell_input docutils container">
<pre>scale = "smoke"
print("| --- | --- |")  # a table rule inside code is code</pre></div>
<div class="cell_output docutils container"><pre>benchmark at data/synthetic/smoke</pre></div>
</div><table class="dataframe"><tr><td>1</td></tr></table></body></html>"""


def test_page_problems_passes_a_clean_page(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(CLEAN_PAGE)
    assert book.page_problems(tmp_path, ["page.html"]) == {}


def test_page_problems_finds_what_a_reader_should_not_see(tmp_path: Path) -> None:
    from vlbook.paths import REPO_ROOT, data_root

    page = f"""<html><head>
<script>const THEBE_JS_URL = "x"; const thebe_selector = ".thebe"</script>
<script>const THEBE_JS_URL = "x"; const thebe_selector = ".thebe"</script>
<script crossorigin="anonymous" src="https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js"></script>
</head><body>
<div class="cell_input"><pre><span class="c1"># Parameters</span></pre></div>
<div class="cell_input"><pre><span class="c1"># Parameters</span></pre></div>
<div class="cell_output"><pre>benchmark at {data_root() / 'synthetic' / 'toy'}</pre>
<pre>[vlbook.train] run {REPO_ROOT / 'results' / 'runs' / 'x'} | 500 steps</pre>
<p>| variant | mode |
|---|---|
| vlm_toy | train |</p></div></body></html>"""
    (tmp_path / "page.html").write_text(page)
    problems = "\n".join(book.page_problems(tmp_path, ["page.html"])["page.html"])
    assert "'# Parameters' appears 2 times" in problems
    assert f"absolute path {str(data_root())!r}" in problems
    assert f"absolute path {str(REPO_ROOT)!r}" in problems
    assert "raw markdown table text" in problems
    assert "THEBE_JS_URL declared 2 times" in problems
    assert "require.js" in problems


def test_sphinx_extension_drops_thebe_and_widget_scripts() -> None:
    from sphinx.builders.html._assets import _JavaScript

    scripts = [
        _JavaScript("_static/jquery.js"),
        _JavaScript(None, body='const THEBE_JS_URL = "https://unpkg.com/thebe"'),
        _JavaScript(None, body='const THEBE_JS_URL = "https://unpkg.com/thebe"'),
        _JavaScript("_static/sphinx-thebe.js", **{"async": "async"}),
        _JavaScript("https://cdnjs.cloudflare.com/ajax/libs/require.js/2.3.4/require.min.js"),
        _JavaScript("https://cdn.jsdelivr.net/npm/@jupyter-widgets/html-manager@1.0.6/dist/"
                    "embed-amd.js"),
        _JavaScript("mathjax/tex-chtml.js"),
    ]
    context = {"script_files": scripts}
    book._drop_unwanted_scripts(None, "index", "page.html", context, None)
    assert [js.filename for js in context["script_files"]] == ["_static/jquery.js",
                                                              "mathjax/tex-chtml.js"]
    assert "vlbook.book" in (book.BOOK_SRC / "_config.yml").read_text()


def test_executed_page_shows_its_parameters_once(tmp_path: Path) -> None:
    import json

    from vlbook.notebook import tidy_executed_notebook

    def code(source: str, tags: list[str], outputs: list | None = None) -> dict:
        return {"cell_type": "code", "execution_count": 1, "id": tags[0] if tags else "c",
                "metadata": {"tags": tags}, "outputs": outputs or [],
                "source": source.splitlines(keepends=True)}

    widget = {"output_type": "display_data", "metadata": {},
              "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "m"},
                       "text/plain": "train: 0%"}}
    nb = {"nbformat": 4, "nbformat_minor": 5,
          "metadata": {"widgets": {"application/vnd.jupyter.widget-state+json": {"state": {}}}},
          "cells": [code('scale = "toy"  # smoke | toy | full\nseed = 0\n', ["parameters"]),
                    code('# Parameters\nscale = "smoke"\n', ["injected-parameters"]),
                    code("run()", ["run"], [widget])]}
    path = tmp_path / "page.ipynb"
    path.write_text(json.dumps(nb))
    tidy_executed_notebook(path)
    tidy_executed_notebook(path)  # idempotent
    out = json.loads(path.read_text())
    params, injected, run = out["cells"]
    assert "".join(params["source"]) == 'scale = "smoke"  # smoke | toy | full\nseed = 0\n'
    assert injected["metadata"]["tags"] == ["injected-parameters", "remove-cell"]
    assert run["outputs"] == [] and "widgets" not in out["metadata"]


def test_display_path_hides_the_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from vlbook.notebook import display_path
    from vlbook.paths import REPO_ROOT

    assert display_path(REPO_ROOT / "data" / "synthetic" / "toy") == "data/synthetic/toy"
    monkeypatch.setenv("VLBOOK_DATA", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("VLBOOK_RUNS", str(tmp_path / "runs"))
    assert display_path(tmp_path / "elsewhere" / "synthetic") == "$VLBOOK_DATA/synthetic"
    assert display_path(tmp_path / "runs" / "umt" / "toy") == "$VLBOOK_RUNS/umt/toy"
    assert str(tmp_path) not in display_path(tmp_path / "other" / "file.txt")


def test_bench_markdown_tables_become_dataframes() -> None:
    from vlbook.capstone import markdown_blocks

    text = ("# Models (CPU)\n\nMeasured on a laptop.\n\n| variant | mode | ms/step |\n"
            "|---|---|---|\n| vlm_toy | train | 15.6 |\n| vlm_toy | infer | 5.5 |\n")
    kinds = [k for k, _ in markdown_blocks(text)]
    assert kinds == ["heading", "text", "table"]
    table = markdown_blocks(text)[2][1]
    assert table.index.name == "variant" and list(table.columns) == ["mode", "ms/step"]
    assert table.loc["vlm_toy"].iloc[1]["ms/step"] == "5.5"
    assert "|---|" not in table.to_html()


def test_training_in_a_notebook_prints_a_few_lines(tmp_path: Path, monkeypatch, capsys) -> None:
    from tests.train_fixtures import debug_config
    from vlbook.train import trainer

    monkeypatch.setattr(trainer, "_in_notebook", lambda: True)
    trainer.train(debug_config(tmp_path / "run", total_steps=40, log_every=1))
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if "] step " in ln]
    assert 1 <= len(lines) <= trainer.NOTEBOOK_LOG_LINES + 1
    assert lines[-1].startswith("[vlbook.train] step 40/40")
    assert "[vlbook.train] run " in out and str(tmp_path) not in out


# ---------------------------------------------------------------------------------------------
# tracebacks, stderr, missing values in tables; what a paper chapter's page must have
# ---------------------------------------------------------------------------------------------

#: A code cell as myst-nb renders it with ``hide-input``: the source (highlighted, one span per
#: token) inside a ``<details>``, then the outputs.
_CELL = """<div class="cell tag_hide-input docutils container">
<details class="hide above-input"><summary>Show code cell source</summary>
<div class="cell_input docutils container"><div class="highlight-ipython3 notranslate">
<div class="highlight"><pre><span></span>{source}</pre></div></div></div></details>
<div class="cell_output docutils container">{output}</div></div>"""

_DIAGRAM = _CELL.format(
    source='<span class="kn">from</span> <span class="nn">vlbook.diagrams</span> '
           '<span class="kn">import</span> <span class="n">show_architecture</span>\n\n'
           '<span class="n">show_architecture</span><span class="p">(</span>'
           '<span class="s2">&quot;umt&quot;</span><span class="p">)</span>',
    output='<img alt="../_images/0a1b.png" src="../_images/0a1b.png" />')


def _heading(level: int, title: str) -> str:
    anchor = title.lower().replace(" ", "-")
    return (f'<h{level}>{title}<a class="headerlink" href="#{anchor}" title="Link to this '
            f'heading">#</a></h{level}>')


def _table_cell() -> str:
    from vlbook.report import paper_vs_ours
    from vlbook.results import LedgerRow

    rows = [LedgerRow("UMT", "Table 5", "umt_base", "params (M)", 87.0, 86.9, "exact",
                      "matches", "the classifier included"),
            LedgerRow("UMT", "Sec. 4.1", "pre-training run", "schedules", None, None, "full",
                      "not run", "needs the paper's data")]
    return _CELL.format(source='<span class="n">paper_vs_ours</span>(ledger)',
                        output='<div class="output text_html">'
                               + paper_vs_ours(rows).html + "</div>")


def _chapter(diagram: bool = True, table: bool = True, take_away: bool = True,
             take_away_first: bool = False, extra: str = "") -> str:
    take = (_heading(2, "What to take away") + "<p>One encoder, and a teacher.</p>"
            if take_away else "")
    parts = [_heading(1, "Unmasked Teacher"), "<p>Two families of pre-training.</p>",
             _heading(2, "The architecture at a glance"), _DIAGRAM if diagram else "",
             take if take_away_first else "",
             _heading(2, "Paper vs ours"), _table_cell() if table else "",
             "" if take_away_first else take, extra, _heading(2, "References")]
    return ('<html><head><script src="_static/sphinx-book-theme.js"></script></head><body>'
            '<main><section id="umt">' + "\n".join(parts) + "</section></main></body></html>")


def _write_pages(root: Path, pages: dict[str, str]) -> None:
    for name, text in pages.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    (root / "_images").mkdir(exist_ok=True)
    (root / "_images" / "0a1b.png").write_bytes(b"\x89PNG not empty")


def test_a_complete_chapter_page_passes_both_checks(tmp_path: Path) -> None:
    _write_pages(tmp_path, {"chapters/umt.html": _chapter()})
    assert book.page_problems(tmp_path, ["chapters/umt.html"]) == {}
    assert book.chapter_page_problems(tmp_path, ["chapters/umt.html"]) == {}


def test_page_problems_finds_tracebacks_stderr_and_missing_values(tmp_path: Path) -> None:
    stderr = ('<div class="output stderr highlight-myst-ansi notranslate"><div class="highlight">'
              "<pre><span></span>UserWarning: the toy teacher is small</pre></div></div>")
    traceback = ('<div class="output traceback highlight-ipythontb notranslate"><pre>'
                 '<span class="ansi-red-fg">Traceback (most recent call last)</span>\n'
                 "KeyError: 'umt'</pre></div>")
    table = ('<table class="dataframe"><thead><tr><th></th><th>paper</th><th>ours</th></tr>'
             "</thead><tbody><tr><th>umt_base</th><td>NaN</td><td>86.9</td></tr>"
             "<tr><th>umt_large</th><td>None None</td><td>Nonetheless</td></tr></tbody></table>")
    printed = ("<pre>Traceback (most recent call last):\n  File \"x.py\", line 1\n"
               "ValueError: bad</pre>")
    pages = {"a.html": _chapter(extra=_CELL.format(source="run()", output=stderr)),
             "b.html": _chapter(extra=_CELL.format(source="run()", output=traceback)),
             "c.html": _chapter(extra=table),
             "d.html": _chapter(extra=_CELL.format(source="run()", output=printed))}
    _write_pages(tmp_path, pages)
    found = book.page_problems(tmp_path, list(pages))
    assert set(found) == set(pages)
    assert found["a.html"] == ["stderr output: 'UserWarning: the toy teacher is small'"]
    assert len(found["b.html"]) == 1 and found["b.html"][0].startswith("traceback output")
    assert "KeyError" in found["b.html"][0]
    assert found["c.html"] == ["2 table cells show a missing value as 'NaN', 'None None'"]
    assert len(found["d.html"]) == 1 and "a traceback in the text" in found["d.html"][0]


def test_page_problems_ignores_code_and_cell_tags(tmp_path: Path) -> None:
    # a cell tagged remove-stderr (class tag_remove-stderr), "None" and a traceback written in
    # the code itself, and "None" inside a sentence of a table are no problem
    code = _CELL.format(source='x = None  <span class="c1"># Traceback (most recent call last)'
                               "</span>", output="<pre>done</pre>")
    tagged = code.replace("tag_hide-input", "tag_remove-stderr")
    table = "<table><tr><td>None of the rows</td><td>—</td></tr></table>"
    _write_pages(tmp_path, {"page.html": _chapter(extra=code + tagged + table)})
    assert book.page_problems(tmp_path, ["page.html"]) == {}


def test_chapter_page_problems_names_what_a_chapter_lacks(tmp_path: Path) -> None:
    pages = {"chapters/vlm.html": _chapter(diagram=False),
             "chapters/simvtp.html": _chapter(table=False),
             "chapters/umt.html": _chapter(take_away=False),
             "chapters/allinone.html": _chapter(take_away_first=True),
             "chapters/evilm.html": _chapter(),
             # the intro and the capstone are not a paper's chapter: nothing is required
             "chapters/intro.html": _chapter(False, False, False),
             "chapters/capstone.html": _chapter(False, False, False)}
    _write_pages(tmp_path, pages)
    found = book.chapter_page_problems(tmp_path, list(pages))
    assert found == {
        "chapters/vlm.html": ["no architecture diagram (vlbook.diagrams.show_architecture)"],
        "chapters/simvtp.html": ["no paper-vs-ours table (vlbook.report.paper_vs_ours, class "
                                 "'vlbook-paper-vs-ours')"],
        "chapters/umt.html": ["no take-away section (a heading with 'take away')"],
        "chapters/allinone.html": ["the take-away section ('What to take away#') comes before "
                                   "the paper-vs-ours table"],
    }
    assert book.chapter_pages(list(pages)) == [p for p in pages if "intro" not in p
                                               and "capstone" not in p]


def test_a_diagram_marked_by_class_or_alt_counts(tmp_path: Path) -> None:
    marked = _chapter(diagram=False, extra='<figure class="vlbook-architecture">'
                                          '<img src="../_images/0a1b.png" alt=""/></figure>')
    alt = _chapter(diagram=False, extra='<img src="../_images/0a1b.png" '
                                        'alt="Architecture of UMT"/>')
    _write_pages(tmp_path, {"chapters/umt.html": marked, "chapters/vlm.html": alt})
    assert book.chapter_page_problems(tmp_path, ["chapters/umt.html", "chapters/vlm.html"]) == {}


def test_check_html_warns_about_chapter_pages_unless_strict(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(book, "find_chromium", lambda: None)
    _write_pages(tmp_path, {"index.html": CLEAN_PAGE, "ledger.html": CLEAN_PAGE,
                            "chapters/umt.html": _chapter(table=False)})
    report = book.check_html(tmp_path, ["chapters/umt.html"], strict_chapters=False)
    assert list(report.warnings) == ["chapters/umt.html"]
    assert "warning: chapters/umt.html: no paper-vs-ours table" in report.summary()
    with pytest.raises(book.HtmlCheckError, match="no paper-vs-ours table"):
        book.check_html(tmp_path, ["chapters/umt.html"], strict_chapters=True)
    monkeypatch.setattr(book, "STRICT_CHAPTER_PAGES", True)
    with pytest.raises(book.HtmlCheckError, match="no paper-vs-ours table"):
        book.check_html(tmp_path, ["chapters/umt.html"])
