"""A sixth paper is four files: registering a chapter is all the book, the ledger check, the
benchmarks and the contract tests need to pick it up (see CONTRIBUTING.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from test_contract import check_paper_model_on_meta, check_toy_model, toy_cases

from vlbook import book
from vlbook.bench import models as models_suite
from vlbook.chapters import CHAPTERS, Chapter, chapter, register_chapter
from vlbook.ledger import LedgerError, check_ledger, expected_rows, missing_rows
from vlbook.results import LedgerRow, ledger_markdown

ROWS = (("Dummy", "Table 1", "debug model", "R@1"), ("Dummy", "Table 2", "debug model", "loss"))


@pytest.fixture
def dummy(monkeypatch: pytest.MonkeyPatch) -> Chapter:
    """A tiny paper registered in-process (the debugging model stands in for its model
    package); the registry is restored afterwards."""
    monkeypatch.setattr(CHAPTERS, "_items", dict(CHAPTERS._items))
    return register_chapter(Chapter(name="dummy", title="Dummy", order=6,
                                    toy_models=("debug_tiny",), paper_models=("debug_tiny",),
                                    ledger_rows=ROWS, module=__name__))


def test_the_book_lists_the_new_chapter_after_the_papers(dummy: Chapter, tmp_path: Path
                                                         ) -> None:
    order = [stem for stem, _ in book.chapter_order()]
    assert order[-3:] == ["evilm", "dummy", "capstone"]
    for stem in ("intro", "vlm", "dummy"):
        (tmp_path / f"{stem}.ipynb").write_text("{}")
    assert book.existing_chapters(tmp_path) == [
        ("intro", "Foundations"), ("vlm", "The papers"), ("dummy", "The papers")]
    toc = book.write_toc(tmp_path, book.existing_chapters(tmp_path)).read_text()
    assert toc.index("chapters/vlm") < toc.index("chapters/dummy")


def test_the_ledger_checks_the_new_chapters_rows(dummy: Chapter, tmp_path: Path) -> None:
    assert expected_rows()["dummy"] == ROWS and chapter("dummy") is dummy
    with pytest.raises(LedgerError, match="notebooks/dummy.ipynb"):
        check_ledger(["intro", "dummy"], "toy", tmp_path)
    path = tmp_path / "dummy" / "toy" / "ledger.json"
    path.parent.mkdir(parents=True)
    row = asdict(LedgerRow(*ROWS[0], 10.0, 12.0, "toy", "differs", "one seed"))
    path.write_text(json.dumps({"chapter": "dummy", "scale": "toy", "data": [row]}))
    assert missing_rows("dummy", "toy", tmp_path) == [ROWS[1]]
    with pytest.raises(LedgerError, match="lacks 1 expected row"):
        check_ledger(["dummy"], "toy", tmp_path)
    page = ledger_markdown(tmp_path, scales=("toy",))
    assert "| Table 1 | debug model | R@1 |" in page and "| Table 2 | debug model | loss |" in page


def test_a_notebook_without_a_registered_chapter_fails_the_ledger_check(tmp_path: Path
                                                                        ) -> None:
    with pytest.raises(LedgerError, match=r"notebooks/sixth\.ipynb has no registered chapter"):
        check_ledger(["intro", "sixth"], "toy", tmp_path)
    with pytest.raises(ValueError, match="no ledger rows"):
        Chapter(name="sixth", title="Sixth", order=7, toy_models=("debug_tiny",),
                paper_models=(), ledger_rows=())


def test_the_benchmarks_time_the_new_chapter(dummy: Chapter) -> None:
    assert "dummy" in models_suite.chapter_names()
    rows = models_suite.variants(["dummy"], ["toy", "paper"])
    assert rows == [("dummy", "toy", "debug_tiny"), ("dummy", "paper", "debug_tiny")]
    # no vlbook.bench.dummy suite: the generic step on the model's example batch
    torch.manual_seed(0)
    results = models_suite.bench_one("dummy", "debug_tiny", batch_size=2, steps=1, warmup=0,
                                     modes=("train",), precision="no", device="cpu",
                                     count_flops=True)
    assert len(results) == 1 and results[0].model == "debug_tiny"
    assert results[0].step_time_s_median > 0 and (results[0].flops_per_step or 0) > 0


def test_the_contract_tests_run_over_the_new_chapter(dummy: Chapter) -> None:
    assert ("dummy", "debug_tiny") in toy_cases()
    measured = check_toy_model("debug_tiny")
    assert measured["width"] == 32
    assert check_paper_model_on_meta("debug_tiny") > 0
