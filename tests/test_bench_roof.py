"""The matmul roof probe, achieved FLOP/s against it, and FLOPs of fused attention on CPU."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlbook.analysis import count_flops
from vlbook.bench.roof import measure_models, probe_matmul, roofs


class FusedAttention(nn.Module):
    """Projections around ``scaled_dot_product_attention`` (the CPU flash kernel on CPU)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, d)


def test_fused_attention_is_counted_on_cpu_as_on_meta_and_by_hand():
    b, n, d, h = 2, 12, 16, 4
    x = torch.randn(b, n, d)
    projection = 2 * b * n * d * 3 * d
    attention = 2 * (2 * b * h * n * n * (d // h))  # Q K^T and A V
    for device in ("meta", "cpu"):
        forward = count_flops(FusedAttention(d, h), x, device=device)
        assert forward.total == projection + attention, device
    on_cpu = count_flops(FusedAttention(d, h), x, device="cpu")
    assert "_scaled_dot_product_flash_attention_for_cpu" in on_cpu.per_operator
    # backward: the weight gradient of the projection (the input needs none) and the four
    # products of the attention backward (dQ, dK, dA, dV), twice the forward's two
    both_cpu = count_flops(FusedAttention(d, h), x, device="cpu", backward=True)
    both_meta = count_flops(FusedAttention(d, h), x, device="meta", backward=True)
    assert both_cpu.total == both_meta.total == 2 * projection + 3 * attention


def test_probe_measures_fp32_and_bf16_paths_and_picks_the_best_as_roof():
    probes = probe_matmul("cpu", repeats=1, shapes=(("tiny", 64, 32, 48),))
    paths = {(p.path, p.precision) for p in probes}
    assert {("torch.mm", "fp32"), ("F.linear", "fp32"), ("torch.mm", "bf16"),
            ("F.linear under autocast", "bf16")} <= paths
    assert all(p.gflops_median > 0 and p.gflops_best >= p.gflops_median for p in probes)
    assert all(p.max_rel_error < (1e-5 if p.precision == "fp32" else 3e-2) for p in probes)
    roof = roofs(probes)
    assert set(roof) == {"fp32", "bf16"}
    assert roof["fp32"]["gflops"] == max(p.gflops_best for p in probes
                                         if p.precision == "fp32")


def test_model_step_is_set_against_the_roof():
    roof = {"fp32": {"gflops": 10.0, "path": "x", "shape": "y"}}
    (row,) = measure_models(["allinone_toy"], roof, batch_size=2, steps=1, warmup=0,
                            precision="no", device="cpu")
    assert row.chapter == "allinone" and row.flops_per_step > 0
    assert row.achieved_gflops == pytest.approx(row.flops_per_step / row.step_s / 1e9)
    assert row.fraction_of_roof["fp32"] == pytest.approx(row.achieved_gflops / 10.0)


def test_cli_writes_the_roof_files(tmp_path, monkeypatch):
    from vlbook.bench.__main__ import main

    monkeypatch.setenv("VLBOOK_RESULTS", str(tmp_path))
    assert main(["roof", "--small", "--repeats", "1", "--device", "cpu"]) == 0
    payload = json.loads((tmp_path / "bench" / "roof-cpu-small.json").read_text())
    assert set(payload["roof"]) == {"fp32", "bf16"} and len(payload["load_average_before"]) == 3
    assert "## Roof" in (tmp_path / "bench" / "roof-cpu-small.md").read_text()
