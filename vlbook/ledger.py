"""What each chapter must report to the reproduction ledger, and the check that it did.

The ledger page is generated from the ``ledger.json`` files the chapter notebooks write
(:func:`vlbook.results.save_ledger_rows`). This module is its specification: for every paper
chapter, the paper table rows the chapter touches, as ``(paper, table, row, metric)`` keys.
A chapter run must write every one of them at every scale — with status ``not run`` when the
scale does not measure it — so that the page never drops a row silently. The book build and the
test-suite call :func:`check_ledger`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlbook.chapters import NON_PAPER_CHAPTERS, RowKey, chapters
from vlbook.paths import results_root


def expected_rows() -> dict[str, tuple[RowKey, ...]]:
    """The ledger spec of every registered paper chapter (:attr:`Chapter.ledger_rows
    <vlbook.chapters.Chapter.ledger_rows>`), in book order."""
    return {c.name: c.ledger_rows for c in chapters()}


def __getattr__(name: str) -> Any:
    # EXPECTED_ROWS is computed from the chapter registry when first read: the chapter modules
    # sit above this one and register themselves on import.
    if name == "EXPECTED_ROWS":
        return expected_rows()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class LedgerError(RuntimeError):
    """A chapter's ledger file lacks rows the ledger expects."""


def ledger_path(chapter: str, scale: str, root: Path | None = None) -> Path:
    return (root or results_root()) / chapter / scale / "ledger.json"


def written_rows(chapter: str, scale: str, root: Path | None = None) -> list[dict]:
    """The rows a chapter run wrote (``FileNotFoundError`` naming the notebook if none)."""
    path = ledger_path(chapter, scale, root)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run notebooks/{chapter}.ipynb at scale={scale!r} first")
    return json.loads(path.read_text())["data"]


def _key(row: dict) -> RowKey:
    return (row["paper"], row["table"], row["row"], row["metric"])


def missing_rows(chapter: str, scale: str, root: Path | None = None) -> list[RowKey]:
    """Expected rows of ``chapter`` its ``scale`` run did not write, in the spec's order."""
    have = {_key(r) for r in written_rows(chapter, scale, root)}
    spec = expected_rows()
    if chapter not in spec:
        raise LedgerError(f"{chapter!r} is not a registered paper chapter (known: "
                          f"{sorted(spec)}): register it in vlbook/chapters/{chapter}.py "
                          "with its ledger rows")
    return [key for key in spec[chapter] if key not in have]


def check_ledger(names: list[str], scale: str, root: Path | None = None) -> None:
    """Raise :class:`LedgerError` naming each executed paper chapter whose ledger file is
    missing or lacks expected rows. The non-paper chapters (intro, capstone) have no rows;
    any other name must be a registered paper chapter (a notebook with no ledger spec fails)."""
    problems = []
    spec = expected_rows()
    for chapter in names:
        if chapter in NON_PAPER_CHAPTERS:
            continue
        if chapter not in spec:
            problems.append(f"{chapter}: notebooks/{chapter}.ipynb has no registered chapter "
                            f"(vlbook/chapters/{chapter}.py) and so no ledger rows; known "
                            f"paper chapters: {sorted(spec)}")
            continue
        try:
            missing = missing_rows(chapter, scale, root)
        except FileNotFoundError as err:
            problems.append(f"{chapter}: {err}")
            continue
        if missing:
            listed = "; ".join(" / ".join(key) for key in missing)
            problems.append(f"{chapter} ({ledger_path(chapter, scale, root)}) lacks "
                            f"{len(missing)} expected row(s): {listed}")
    if problems:
        raise LedgerError("reproduction ledger incomplete:\n  " + "\n  ".join(problems))


__all__ = ["LedgerError", "RowKey", "check_ledger", "expected_rows",
           "ledger_path", "missing_rows", "written_rows"]
