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
