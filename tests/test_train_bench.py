"""The training-step benchmark: fields, FLOPs consistent with the analysis, files written."""

from __future__ import annotations

import json

import pytest
import torch
from train_fixtures import one_cpu_thread  # noqa: F401

from vlbook.analysis import count_flops
from vlbook.bench import train as bench_train
from vlbook.bench.__main__ import main as bench_main
from vlbook.models import create_model


def test_benchmark_reports_step_time_memory_and_flops():
    model = create_model("debug_tiny")
    batch = model.example_batch(4)
    result = bench_train.benchmark(
        lambda: create_model("debug_tiny"), batch, name="t", steps=2, warmup=1, device="cpu"
    )
    assert result.mode == "train" and result.batch_size == 4 and result.device == "cpu"
    assert result.step_time_s_median > 0
    assert result.clips_per_s == pytest.approx(4 / result.step_time_s_median)
    assert result.parameters == sum(p.numel() for p in model.parameters())
    assert result.flops_per_step == count_flops(model, batch, backward=True).total
    assert result.peak_memory_mb is None or result.peak_memory_mb > 0
    assert result.mfu is None  # no MFU without a GPU peak
    infer = bench_train.benchmark(
        lambda: create_model("debug_tiny"), batch, name="t", mode="infer", steps=1, warmup=0
    )
    # a forward is a third of forward + backward when every weight needs a gradient, less
    # here since the input needs none: strictly between a quarter and a half
    assert 0.25 < infer.flops_per_step / result.flops_per_step < 0.5


def test_benchmark_rejects_bad_settings():
    batch = create_model("debug_tiny").example_batch(2)
    with pytest.raises(ValueError, match="mode='fit'"):
        bench_train.benchmark(lambda: create_model("debug_tiny"), batch, name="t", mode="fit")
    with pytest.raises(ValueError, match="precision='fp8'"):
        bench_train.benchmark(lambda: create_model("debug_tiny"), batch, name="t", precision="fp8")


def test_mfu_peak_table_matches_device_names():
    assert bench_train._peak_tflops("NVIDIA H200", "bf16") == pytest.approx(989.5)
    assert bench_train._peak_tflops("NVIDIA A100-SXM4-80GB", "fp16") == pytest.approx(312.0)
    assert bench_train._peak_tflops("Some Unknown GPU", "bf16") is None


def test_cli_suite_writes_json_and_markdown(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("VLBOOK_RESULTS", str(tmp_path))
    bench_main(
        [
            "train",
            "--model",
            "debug_tiny",
            "--batch-size",
            "2",
            "--steps",
            "1",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--name",
            "smoke",
        ]
    )
    payload = json.loads((tmp_path / "bench" / "train-smoke.json").read_text())
    assert [r["mode"] for r in payload["results"]] == ["train", "infer"]
    assert "| clips_per_s |" in (tmp_path / "bench" / "train-smoke.md").read_text()
    assert "ms/step" in capsys.readouterr().out


class _NeedsValues(torch.nn.Module):
    """A forward that reads a value (``.item()``), as masking code does: not countable on meta."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 1)

    def forward(self, batch):
        scale = 1.0 if batch["video"].abs().sum().item() > 0 else 0.0
        return {"loss": scale * self.linear(batch["video"].flatten(1)).mean()}


def test_flops_fall_back_to_cpu_when_meta_cannot_run_the_model():
    batch = {"video": torch.randn(2, 1, 1, 2, 2)}
    with pytest.warns(UserWarning, match="not countable on the meta device"):
        result = bench_train.benchmark(_NeedsValues, batch, name="t", steps=1, warmup=0)
    assert result.flops_counted_on.startswith("cpu")
    # forward 2*B*in*out, plus the weight gradient of the same size (the input needs none)
    assert result.flops_per_step == 2 * (2 * 2 * 4 * 1)
