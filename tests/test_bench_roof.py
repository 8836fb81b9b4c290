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
    assert (tmp_path / "bench" / "roof-cpu-small.png").stat().st_size > 10_000


def _roof_payload() -> dict:
    return {"suite": "roof", "device": "cpu", "device_name": "CPU test", "threads": 2,
            "roof": {"fp32": {"gflops": 100.0, "path": "torch.mm", "shape": "s",
                              "gflops_median": 90.0},
                     "bf16": {"gflops": 250.0, "path": "oneDNN mkldnn_linear", "shape": "s",
                              "gflops_median": 240.0}},
            "models": [{"variant": "a", "chapter": "allinone", "batch_size": 1,
                        "precision": "no", "achieved_gflops": 20.0},
                       {"variant": "b", "chapter": "umt", "batch_size": 1, "precision": "bf16",
                        "achieved_gflops": 60.0},
                       {"variant": "c", "chapter": "vlm", "batch_size": 1, "precision": "no",
                        "achieved_gflops": None}]}  # FLOPs not counted: no bar


def test_roofline_figure_draws_a_bar_per_model_and_the_roofs_at_their_values(tmp_path):
    from vlbook.bench.roof import plot_roofline

    fig = plot_roofline(_roof_payload(), tmp_path / "roof.png")
    ax = fig.axes[0]
    (bars,) = ax.containers
    assert [b.get_height() for b in bars] == [20.0, 60.0]
    roofs = {line.get_label().split(" roof")[0]: line.get_ydata()[0] for line in ax.lines
             if "roof" in line.get_label()}
    assert roofs == {"fp32": 100.0, "bf16": 250.0}
    assert ax.get_ylabel() and ax.get_xlabel() and ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a\nbatch 1", "b (bf16)\nbatch 1"]
    assert ax.get_yscale() == "linear"
    assert (tmp_path / "roof.png").stat().st_size > 10_000


def test_roofline_uses_a_log_axis_when_the_values_span_decades():
    from vlbook.bench.roof import plot_roofline

    payload = _roof_payload()
    payload["roof"]["bf16"]["gflops"] = 900_000.0  # a GPU's bf16 roof beside a CPU step
    assert plot_roofline(payload).axes[0].get_yscale() == "log"


def test_benchmarks_page_embeds_the_roofline_drawn_from_the_json(tmp_path, monkeypatch):
    from vlbook import book

    results = tmp_path / "results"
    (results / "bench").mkdir(parents=True)
    monkeypatch.setenv("VLBOOK_RESULTS", str(results))
    (results / "bench" / "roof-cpu.json").write_text(json.dumps(_roof_payload()))
    (results / "bench" / "roof-cpu.md").write_text("# Matmul roof\n\ntext\n")
    (results / "bench" / "data.md").write_text("# Data\n\ntext\n")
    (results / "bench" / "data.json").write_text(json.dumps({"suite": "data"}))
    stage = tmp_path / "stage"
    page = book.write_benchmarks(stage).read_text()
    assert page.count("```{figure} bench/roof-cpu.png") == 1
    assert page.index("## Matmul roof") < page.index("bench/roof-cpu.png")
    assert (stage / "bench" / "roof-cpu.png").stat().st_size > 10_000
    assert not (results / "bench" / "roof-cpu.png").exists()  # drawn into the stage only
