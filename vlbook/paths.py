"""Where vlbook reads data and weights and writes results.

Every location can be moved with an environment variable, so that a cluster user can point
the same notebooks at a shared file system:

============================  ==========================  =====================================
variable                      default                     holds
============================  ==========================  =====================================
``VLBOOK_DATA``               ``<repo>/data``             datasets (``synthetic/``, ``msrvtt/``…)
``VLBOOK_WEIGHTS``            ``<repo>/weights``          pretrained checkpoints (BERT, CLIP…)
``VLBOOK_RESULTS``            ``<repo>/results``          metrics and benchmark files the book reads
``VLBOOK_RUNS``               ``<repo>/results/runs``     training runs: logs and checkpoints
============================  ==========================  =====================================
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _env_path(var: str, default: Path) -> Path:
    value = os.environ.get(var)
    return Path(value).expanduser().resolve() if value else default


def data_root() -> Path:
    """Root folder of all datasets (``$VLBOOK_DATA``)."""
    return _env_path("VLBOOK_DATA", REPO_ROOT / "data")


def weights_root() -> Path:
    """Root folder of pretrained weights (``$VLBOOK_WEIGHTS``)."""
    return _env_path("VLBOOK_WEIGHTS", REPO_ROOT / "weights")


def results_root() -> Path:
    """Root folder of result files that the book's ledger reads (``$VLBOOK_RESULTS``)."""
    return _env_path("VLBOOK_RESULTS", REPO_ROOT / "results")


def runs_root() -> Path:
    """Root folder of training runs (``$VLBOOK_RUNS``)."""
    return _env_path("VLBOOK_RUNS", results_root() / "runs")


def synthetic_root() -> Path:
    """Default location of the generated synthetic benchmark."""
    return data_root() / "synthetic"
