"""Checkpoints: bit-identical resume mid-epoch, corrupt or partial checkpoints refused."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from train_fixtures import debug_config, one_cpu_thread  # noqa: F401

from vlbook.train import (
    CheckpointError,
    TrainConfig,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    train,
    verify_checkpoint,
)
from vlbook.train.checkpoint import save_checkpoint


def config_for(out_dir, **overrides) -> TrainConfig:
    values = {
        "model": {"name": "debug_tiny", "kwargs": {"dropout": 0.2}},
        "max_per_device_batch": 4,  # 2 accumulation steps
        "weight_decay": 0.05,
        "warmup_steps": 2,
        "total_steps": 10,  # 4 steps per epoch: the run crosses two epoch boundaries
        "clip_grad_norm": 1.0,
        "checkpoint_every": 3,
        "keep_checkpoints": 3,
        "seed": 7,
    }
    return debug_config(out_dir, **{**values, **overrides})


def test_run_killed_mid_epoch_resumes_to_bit_identical_weights(tmp_path):
    reference = train(config_for(tmp_path / "ref"))

    # "kill" after 5 steps without a final checkpoint: the newest one is step 3, mid-epoch 0
    interrupted_cfg = config_for(tmp_path / "cut", max_steps_this_run=5, checkpoint_on_stop=False)
    interrupted = train(interrupted_cfg)
    assert interrupted.steps == 5 and not interrupted.finished
    assert [p.name for p in list_checkpoints(tmp_path / "cut" / "checkpoints")] == [
        "checkpoint-00000003"
    ]
    state, _ = load_checkpoint(tmp_path / "cut" / "checkpoints" / "checkpoint-00000003")
    assert state["epoch"] == 0 and state["position_in_epoch"] == 3 * 2 * 4

    resumed = train(config_for(tmp_path / "cut"))
    assert resumed.resumed_from.endswith("checkpoint-00000003")
    assert resumed.finished and resumed.steps == 10
    ref_weights = reference.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        assert torch.equal(value, ref_weights[name]), name
    assert resumed.weights_sha256 == reference.weights_sha256
    assert resumed.final_losses == reference.final_losses

    # the metrics log holds each step once, as in the uninterrupted run
    cut_log = pd.read_csv(tmp_path / "cut" / "metrics.csv")
    ref_log = pd.read_csv(tmp_path / "ref" / "metrics.csv")
    assert list(cut_log["step"]) == list(range(1, 11))
    pd.testing.assert_series_equal(cut_log["loss"], ref_log["loss"])


def _tiny_checkpoints(root):
    for step in (1, 2):
        save_checkpoint(root, step, {"model": {"w": torch.full((3,), float(step))}, "step": step})


def test_corrupt_checkpoint_is_refused_and_skipped(tmp_path):
    _tiny_checkpoints(tmp_path)
    newest = tmp_path / "checkpoint-00000002"
    data = bytearray((newest / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (newest / "state.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 does not match"):
        load_checkpoint(newest)
    with pytest.warns(UserWarning, match="skipping invalid checkpoint"):
        assert latest_checkpoint(tmp_path).name == "checkpoint-00000001"


def test_partial_checkpoints_are_refused(tmp_path):
    _tiny_checkpoints(tmp_path)
    newest = tmp_path / "checkpoint-00000002"
    (newest / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest.json"):
        verify_checkpoint(newest)
    older = tmp_path / "checkpoint-00000001"
    (older / "rng-rank0.pt").unlink()
    with pytest.raises(CheckpointError, match="rng-rank0.pt listed in the manifest is missing"):
        verify_checkpoint(older)
    truncated = tmp_path / "checkpoint-00000003"
    save_checkpoint(tmp_path, 3, {"model": {}, "step": 3})
    with (truncated / "state.pt").open("r+b") as handle:
        handle.truncate(10)
    with pytest.raises(CheckpointError, match="bytes, the manifest says"):
        verify_checkpoint(truncated)
    # an interrupted save leaves only a hidden temporary directory, never a candidate
    (tmp_path / ".tmp-checkpoint-00000004").mkdir()
    with pytest.warns(UserWarning):
        assert latest_checkpoint(tmp_path) is None


def test_explicit_resume_from_corrupt_checkpoint_raises(tmp_path):
    config = config_for(tmp_path / "run", total_steps=3, checkpoint_every=3)
    train(config)
    path = tmp_path / "run" / "checkpoints" / "checkpoint-00000003"
    with (path / "state.pt").open("r+b") as handle:
        handle.seek(100)
        handle.write(b"garbage")
    with pytest.raises(CheckpointError, match="state.pt"):
        train(config.with_overrides({"resume": str(path), "total_steps": 6}))
