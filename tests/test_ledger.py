"""The reproduction ledger: every chapter writes the rows the ledger expects."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pytest

from vlbook.ledger import EXPECTED_ROWS, LedgerError, check_ledger, missing_rows
from vlbook.results import LedgerRow, ledger_markdown


@pytest.mark.parametrize("chapter", sorted(EXPECTED_ROWS))
def test_smoke_run_writes_every_expected_row(chapter: str, executed_smoke_notebooks) -> None:
    result = executed_smoke_notebooks[chapter]
    if isinstance(result, Exception):
        raise result
    assert missing_rows(chapter, "smoke") == []


def _write(root: Path, chapter: str, scale: str, keys) -> None:
    rows = [asdict(LedgerRow(*key, 1.0, 2.0, scale, "differs", "")) for key in keys]
    path = root / chapter / scale / "ledger.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"chapter": chapter, "scale": scale, "data": rows}))


def test_a_dropped_row_is_reported_and_fails_the_build_check(tmp_path: Path) -> None:
    expected = EXPECTED_ROWS["umt"]
    dropped = expected[4]
    _write(tmp_path, "umt", "toy", [k for k in expected if k != dropped])
    assert missing_rows("umt", "toy", tmp_path) == [dropped]
    with pytest.raises(LedgerError, match=r"umt .* lacks 1 expected row") as err:
        check_ledger(["intro", "umt"], "toy", tmp_path)
    assert dropped[2] in str(err.value)
    _write(tmp_path, "umt", "toy", expected)
    check_ledger(["intro", "umt"], "toy", tmp_path)  # complete again: no error


def test_an_executed_chapter_without_a_ledger_file_fails(tmp_path: Path) -> None:
    with pytest.raises(LedgerError, match="notebooks/vlm.ipynb"):
        check_ledger(["vlm"], "toy", tmp_path)


def test_page_lists_missing_rows_as_not_run_and_keeps_scales_apart(tmp_path: Path) -> None:
    expected = EXPECTED_ROWS["simvtp"]
    _write(tmp_path, "simvtp", "toy", expected[1:])
    _write(tmp_path, "simvtp", "smoke", expected)
    page = ledger_markdown(tmp_path, scales=("toy", "full"))
    paper, table, row, metric = expected[0]
    line = next(x for x in page.splitlines() if f"| {table} | {row} | {metric} |" in x)
    assert "not run |" in line
    ref = line.rsplit("|", 2)[1].strip()  # the note's number, e.g. "[1]"
    section = page.split("## SimVTP")[1].split("\n## ")[0]  # notes are numbered per chapter
    note = next(x for x in section.splitlines() if x.startswith(ref.strip("[]") + ". "))
    assert "simvtp" in note
    assert "| smoke |" not in page  # the smoke run is not part of a toy book
    # chapters that never ran appear too, as not run
    vlm_key = EXPECTED_ROWS["vlm"][0]
    assert f"| {vlm_key[1]} | {vlm_key[2]} | {vlm_key[3]} |" in page
    assert "notebooks/vlm.ipynb has not been run" in page


def test_page_follows_book_order_and_keeps_rows_with_the_chapter_that_wrote_them(
        tmp_path: Path) -> None:
    from vlbook.results import ledger_counts

    _write(tmp_path, "evilm", "toy", EXPECTED_ROWS["evilm"])
    _write(tmp_path, "vlm", "toy", EXPECTED_ROWS["vlm"])
    page = ledger_markdown(tmp_path, scales=("toy",), chart="ledger_status.png")
    sections = [x for x in page.splitlines() if x.startswith("## ")]
    assert sections[0].startswith("## VLM") and sections[-1].startswith("## E-ViLM")
    assert "![Ledger rows per chapter by status](ledger_status.png)" in page
    # E-ViLM's Table 1 rows about All-in-one stay in the E-ViLM section, under that table
    evilm = page.split("## E-ViLM")[1]
    assert "| Table 1 | allinone_tiny |" in evilm
    counts = ledger_counts(tmp_path, scales=("toy",))
    assert list(counts) == ["VLM", "SimVTP", "Unmasked Teacher", "All-in-one", "E-ViLM"]
    assert counts["VLM"]["differs"] == len(EXPECTED_ROWS["vlm"])
    assert counts["SimVTP"]["not run"] == len(EXPECTED_ROWS["simvtp"])


def test_binomial_standard_error_by_hand() -> None:
    from vlbook.results import binomial_se

    # p = 0.2 on 100 items: sqrt(0.2 * 0.8 / 100) = 0.04 -> 4 points
    assert binomial_se(20.0, 100) == pytest.approx(4.0)
    assert binomial_se(50.0, 400) == pytest.approx(2.5)
    assert binomial_se(0.0, 10) == 0.0
    with pytest.raises(ValueError, match="number of evaluated items"):
        binomial_se(20.0, 0)


def test_above_chance_needs_two_standard_errors() -> None:
    from vlbook.results import above_chance

    # chance 20 % on 500 items: s.e. sqrt(.2 * .8 / 500) = 1.79 points, threshold 3.58
    assert not above_chance(22.0, 20.0, 500)  # the VLM toy MC of an earlier run
    assert above_chance(24.0, 20.0, 500)
    assert not above_chance(24.0, 20.0, 50)  # same gap, ten times fewer items


def test_clearly_greater_combines_both_errors() -> None:
    from vlbook.results import clearly_greater, difference_note, trend_status

    # 60 % vs 50 % on 200 items each: s.e. hypot(3.46, 3.54) = 4.95, threshold 9.9
    assert clearly_greater(60.0, 50.0, 200)
    assert not clearly_greater(59.0, 50.0, 200)
    assert not clearly_greater(50.0, 60.0, 200)  # the wrong way round
    assert difference_note(60.0, 50.0, 200) == "+10 ± 4.9 (1 s.e.)"
    # other means: explicit standard errors (CIDEr 80 ± 3 vs 70 ± 3: threshold 8.5)
    assert clearly_greater(80.0, 70.0, se_a=3.0, se_b=3.0)
    assert not clearly_greater(80.0, 72.0, se_a=3.0, se_b=3.0)
    with pytest.raises(ValueError, match="item count"):
        clearly_greater(80.0, 70.0)
    assert trend_status(True, "smoke") == "not run"
    assert trend_status(True, "toy") == "direction reproduced"
    assert trend_status(False, "full") == "differs"


def test_verdict_markdown_counts_and_lists_what_the_rows_say() -> None:
    from vlbook.results import verdict_markdown

    rows = [LedgerRow("P", "Table 1", "model", "params (M)", 10.0, 10.1, "exact", "matches"),
            LedgerRow("P", "Table 2", "a vs b", "R@1", 5.0, 3.25, "toy", "direction reproduced"),
            LedgerRow("P", "Table 3", "c vs d", "R@1", 7.0, 1.0, "toy", "differs"),
            LedgerRow("P", "Table 4", "e", "acc", 9.0, 2.0, "toy", "differs"),
            LedgerRow("P", "Sec. 5", "full run", "epochs", None, None, "full", "not run")]
    text = verdict_markdown(rows)
    assert "in 1 of 3 trained rows" in text
    reproduced, rest = text.split("It does not")
    assert "**Table 2, a vs b** (R@1): ours 3.25, paper 5.00" in reproduced
    assert "Table 3" in rest and "Table 4" in rest and "Table 3" not in reproduced
    assert "1 of 1 match" in text and "1 rows need" in text
