"""Shared test set-up: offline hubs, a private data/results root, executed smoke notebooks."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")  # in-process plots; notebook kernels get the inline backend

# Before anything imports vlbook.paths users: every test (and every notebook kernel the tests
# start, which inherits the environment) reads and writes under one temporary root.
_ROOT = Path(tempfile.mkdtemp(prefix="vlbook-tests-"))
os.environ.setdefault("VLBOOK_DATA", str(_ROOT / "data"))
os.environ.setdefault("VLBOOK_RESULTS", str(_ROOT / "results"))
os.environ.setdefault("VLBOOK_WEIGHTS", str(_ROOT / "weights"))
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"


def all_notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.fixture(scope="session")
def tests_root() -> Path:
    return _ROOT


@pytest.fixture(scope="session")
def executed_smoke_notebooks(tests_root: Path) -> dict[str, Path]:
    """Every notebook executed once at ``scale="smoke"`` (papermill), keyed by stem.

    A notebook that fails is recorded as the exception, so each notebook's own test reports
    its own failure.
    """
    from vlbook.notebook import execute_notebook

    out_dir = tests_root / "executed"
    results: dict[str, Path] = {}
    for nb in all_notebooks():
        out = out_dir / nb.name
        try:
            execute_notebook(nb, out, {"scale": "smoke"}, cwd=NOTEBOOK_DIR, timeout=600)
            results[nb.stem] = out
        except Exception as err:  # noqa: BLE001 - reported by the per-notebook test
            results[nb.stem] = err  # type: ignore[assignment]
    return results
