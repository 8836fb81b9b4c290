"""Nothing lost: corrupt checkpoints refused, fresh starts keep old metrics, finished runs
are left alone, a full disk is named."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from train_fixtures import debug_config, one_cpu_thread  # noqa: F401

from vlbook.train import TrainConfig, list_checkpoints, train
from vlbook.train import checkpoint as ckpt
from vlbook.train.trainer import ResumeError, TrainResult, WriteError


def config_for(out_dir, **overrides) -> TrainConfig:
    values = {"data": {"name": "debug_pairs", "kwargs": {"num_clips": 16}},
              "global_batch_size": 4, "total_steps": 6, "checkpoint_every": 2,
              "keep_checkpoints": 3, "seed": 3}
    return debug_config(out_dir, **{**values, **overrides})


def test_all_checkpoints_corrupt_is_refused_then_fresh_start_keeps_old_metrics(tmp_path, capsys):
    run = tmp_path / "run"
    train(config_for(run, max_steps_this_run=5))  # killed at step 5: checkpoints 2, 4, 5
    checkpoints = list_checkpoints(run / "checkpoints")
    assert [p.name for p in checkpoints] == [
        "checkpoint-00000002", "checkpoint-00000004", "checkpoint-00000005"]
    for path in checkpoints:  # a killed writer leaves truncated files
        state = path / "state.pt"
        with state.open("r+b") as handle:
            handle.truncate(state.stat().st_size // 2)
    metrics_before = (run / "metrics.csv").read_bytes()
    result_before = (run / "result.json").read_bytes()

    with pytest.raises(ResumeError) as info:
        train(config_for(run))
    message = str(info.value)
    assert isinstance(info.value, RuntimeError)
    assert str(run) in message
    for path in checkpoints:
        assert path.name in message
    assert message.count("bytes, the manifest says") == 3
    assert "fresh_start=true" in message
    assert (run / "metrics.csv").read_bytes() == metrics_before
    assert (run / "result.json").read_bytes() == result_before
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == [p.name for p in checkpoints]

    capsys.readouterr()
    fresh = train(config_for(run, fresh_start=True))
    log = capsys.readouterr().out
    assert fresh.resumed_from is None and fresh.finished and fresh.steps == 6
    previous = Path(fresh.previous_run)
    assert previous.is_dir() and str(previous) in log and "from step 0" in log
    # the old rows are all still there, byte for byte, and so are the refused checkpoints
    assert (previous / "metrics.csv").read_bytes() == metrics_before
    assert (previous / "result.json").read_bytes() == result_before
    assert len(list_checkpoints(previous / "checkpoints")) == 3
    assert list(pd.read_csv(run / "metrics.csv")["step"]) == list(range(1, 7))
    assert TrainResult.load(run).previous_run == str(previous)


def test_rerunning_a_finished_run_changes_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    first = train(config_for(run, total_steps=4))
    assert first.finished and first.final_losses and first.last_checkpoint
    result_bytes = (run / "result.json").read_bytes()
    metrics_bytes = (run / "metrics.csv").read_bytes()
    checkpoints = [p.name for p in list_checkpoints(run / "checkpoints")]
    capsys.readouterr()

    again = train(config_for(run, total_steps=4))
    log = capsys.readouterr().out
    assert f"run complete at step 4: {first.last_checkpoint}; nothing to do" in log
    assert again == first
    assert again.to_dict() == TrainResult.load(run).to_dict()
    assert (run / "result.json").read_bytes() == result_bytes
    assert (run / "metrics.csv").read_bytes() == metrics_bytes
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == checkpoints
    # the returned model holds the final weights
    first_weights = first.model.state_dict()
    for name, value in again.model.state_dict().items():
        assert torch.equal(value, first_weights[name]), name

    # a longer run still resumes from the final checkpoint instead
    longer = train(config_for(run, total_steps=6))
    assert longer.resumed_from == first.last_checkpoint and longer.steps == 6


def test_disk_full_while_checkpointing_names_path_and_free_space(tmp_path, monkeypatch):
    run = tmp_path / "run"

    def full_disk(tmp, state):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0 "
            "basic_ios::clear: iostream error")

    monkeypatch.setattr(ckpt, "write_state", full_disk)
    with pytest.raises(WriteError) as info:
        train(config_for(run, total_steps=2))
    message = str(info.value)
    assert str(run / "checkpoints" / ".tmp-checkpoint-00000002" / "state.pt") in message
    assert "MB free of" in message and "basic_ios::clear" in message
    assert "filesystem at /" in message
    assert not (run / "checkpoints" / ".tmp-checkpoint-00000002").exists()
    assert list(pd.read_csv(run / "metrics.csv")["step"]) == [1, 2]
