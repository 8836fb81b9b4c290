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
    assert "| not run |" in line and "simvtp" in line
    assert "| smoke |" not in page  # the smoke run is not part of a toy book
    # chapters that never ran appear too, as not run
    vlm_key = EXPECTED_ROWS["vlm"][0]
    assert f"| {vlm_key[1]} | {vlm_key[2]} | {vlm_key[3]} |" in page
    assert "notebooks/vlm.ipynb has not been run" in page
