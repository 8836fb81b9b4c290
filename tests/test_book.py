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
    if book.find_chromium() is None:
        pytest.skip("Chromium is not installed (CI installs Debian's chromium)")
    report = book.check_html(html, chapters, tmp_path / "shots")
    assert report.browser
    assert all(s.exists() and s.stat().st_size > 10_000 for s in report.screenshots)
    intro = report.pages["chapters/intro.html"]
    assert intro["rendered_images"] >= 1, "the intro chapter should show figures"
