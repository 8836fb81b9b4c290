"""Helpers for the trainer tests: the debug run's config and one intra-op thread."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from vlbook.train import TrainConfig


def debug_config(out_dir: str | Path, **overrides: Any) -> TrainConfig:
    """A short run of ``debug_tiny`` on ``debug_pairs`` writing to ``out_dir`` (no progress
    bar, no TensorBoard); ``overrides`` replace any field."""
    values: dict[str, Any] = {
        "model": {"name": "debug_tiny"},
        "data": {"name": "debug_pairs", "kwargs": {"num_clips": 32}},
        "global_batch_size": 8,
        "lr": 2e-3,
        "total_steps": 10,
        "log_every": 1,
        "output_dir": str(out_dir),
        "progress_bar": False,
        "tensorboard": False,
    }
    values.update(overrides)
    return TrainConfig.from_dict(values)


@pytest.fixture(autouse=True, scope="module")
def one_cpu_thread() -> Iterator[None]:
    """Tiny models on shared CPU cores run ~10x faster with one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
