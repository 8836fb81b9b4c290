"""Multi-process training: 2 CPU processes (gloo) through ``accelerate launch``; the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from train_fixtures import debug_config

from vlbook.train import (
    LaunchError,
    TrainConfig,
    launch,
    launch_command,
    load_checkpoint,
    run_training,
)
from vlbook.train.trainer import weights_checksum


def _config(out_dir, **overrides) -> TrainConfig:
    values = {"lr": 3e-3, "warmup_steps": 1, "total_steps": 6, "log_every": 2}
    return debug_config(out_dir, **{**values, **overrides})


def test_two_cpu_processes_finish_with_identical_weights(tmp_path):
    lines: list[str] = []
    result = launch(
        _config(tmp_path / "ddp"),
        num_processes=2,
        log=lines.append,
        timeout_s=120,
        env={"OMP_NUM_THREADS": "1"},
    )
    assert result.num_processes == 2 and result.per_device_batch == 4
    assert result.accumulation_steps == 1 and result.finished and result.steps == 6
    assert len(result.weights_sha256) == 2
    assert result.weights_sha256[0] == result.weights_sha256[1]
    # the final checkpoint holds those same weights
    import torch

    from vlbook.models import create_model

    state, rng = load_checkpoint(tmp_path / "ddp" / "checkpoints" / "checkpoint-00000006")
    model = create_model("debug_tiny")
    model.load_state_dict(state["model"])
    assert weights_checksum(model) == result.weights_sha256[0]
    assert isinstance(rng["torch"], torch.Tensor)
    assert (tmp_path / "ddp" / "checkpoints" / "checkpoint-00000006" / "rng-rank1.pt").is_file()
    assert any("step 6/6" in line for line in lines)  # the log was streamed


def _losses(run_dir):
    import pandas as pd

    return pd.read_csv(run_dir / "metrics.csv").set_index("step")[["loss", "loss_t2v",
                                                                   "loss_v2t"]]


def test_two_processes_equal_one_process_at_the_same_global_batch(tmp_path):
    """No accumulation, in-batch negatives gathered across processes: two processes with 4
    clips each take the steps one process takes with the 8 clips (DDP averages gradients).
    Compared on the losses of every step: AdamW's first updates divide near-zero gradients by
    their own size, so weights after a few steps differ at float noise x lr, not the losses."""
    from vlbook.train import train

    def config(name, gather):
        return _config(tmp_path / name, total_steps=6, seed=5, log_every=1,
                       model={"name": "debug_tiny", "kwargs": {"gather": gather,
                                                               "dropout": 0.0}})

    one = train(config("one", gather=True))
    two = launch(config("two", gather=True), num_processes=2, log=None, timeout_s=180,
                 env={"OMP_NUM_THREADS": "1"})
    assert (one.per_device_batch, two.per_device_batch) == (8, 4)
    assert one.contrastive_batch_size == two.contrastive_batch_size == 8
    a, b = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(a) == len(b) == 6
    np.testing.assert_allclose(a.to_numpy(), b.to_numpy(), rtol=1e-4)
    assert float(a["loss"].iloc[-1]) < float(a["loss"].iloc[0])  # it trains
    # without the gather each process scores its 4 clips against 4 candidates, not 8: another
    # objective (lower loss at step 1: fewer negatives)
    local = launch(config("local", gather=False), num_processes=2, log=None, timeout_s=180,
                   env={"OMP_NUM_THREADS": "1"})
    assert local.contrastive_batch_size == 4
    c = _losses(tmp_path / "local")
    assert float(c["loss"].iloc[0]) < float(a["loss"].iloc[0]) - 0.3


def test_launch_command_for_cpu_gloo():
    cmd, env = launch_command("run/config.yaml", num_processes=2, use_cpu=True)
    assert env == {"ACCELERATE_USE_CPU": "1"}
    assert "--multi_gpu" in cmd and cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[-3:] == ["-m", "vlbook.train", "run/config.yaml"]
    single, _ = launch_command("c.yaml", num_processes=1, use_cpu=True)
    assert "--multi_gpu" not in single


def test_cli_runs_config_with_overrides(tmp_path):
    path = _config(tmp_path / "cli").save(tmp_path / "c.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "vlbook.train", str(path), "-o", "total_steps=2", "-o", "lr=1e-3"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "cli" / "result.json").read_text())
    assert result["steps"] == 2
    assert TrainConfig.load(tmp_path / "cli" / "config.yaml").lr == pytest.approx(1e-3)


def test_cli_rejects_unknown_override(tmp_path):
    path = _config(tmp_path / "cli").save(tmp_path / "c.yaml")
    done = subprocess.run(
        [sys.executable, "-m", "vlbook.train", str(path), "-o", "learning_rate=1"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode != 0 and "learning_rate" in done.stderr


def test_failed_launch_raises_with_the_error_lines(tmp_path):
    config = _config(tmp_path / "bad", model={"name": "no_such_model"})
    with pytest.raises(LaunchError, match="no_such_model"):
        launch(config, num_processes=1, log=None, timeout_s=120, env={"OMP_NUM_THREADS": "1"})


def test_run_training_stays_in_process_for_one_process(tmp_path):
    result = run_training(_config(tmp_path / "inproc", total_steps=2, progress_bar=False))
    assert result.model is not None and result.steps == 2  # only in-process results hold it
