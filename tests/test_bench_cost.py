"""vlbook.bench.cost: full-run GPU-hours from a models result, checked by hand."""

from __future__ import annotations

import argparse
import json

import pytest

from vlbook.bench import cost


def _payload(rows):
    return {"suite": "models", "results": [
        {"name": n, "mode": m, "batch_size": b, "flops_per_step": f} for n, m, b, f in rows]}


def test_gpu_hours_by_hand():
    # 3.6e18 FLOPs at 50 % of 1000 TFLOP/s: 3.6e18 / 5e14 = 7200 s = 2 h
    assert cost.gpu_hours(3.6e18, 1000.0, 0.5) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="mfu"):
        cost.gpu_hours(1.0, 1.0, 0.0)


def test_estimate_uses_the_train_step_per_sample_and_the_papers_hours():
    run = next(r for r in cost.RUNS if r.chapter == "umt")
    payload = _payload([(run.bench_row, "train", 2, 2 * 400e9)])
    row = next(r for r in cost.estimate(payload, mfu=0.5) if r.chapter == "umt")
    total = run.samples * 400e9
    assert row.gflops_per_sample == pytest.approx(400.0)
    assert row.total_eflop == pytest.approx(total / 1e18)
    assert row.estimate_gpu_hours["A100 (bf16)"] == pytest.approx(total / (312e12 * 0.5) / 3600)
    assert row.paper_implied_mfu == pytest.approx(total / (1920 * 3600 * 312e12))


def test_uncounted_train_step_falls_back_to_three_forwards_only_where_declared():
    evilm = next(r for r in cost.RUNS if r.chapter == "evilm")
    vlm = next(r for r in cost.RUNS if r.chapter == "vlm")
    payload = _payload([(evilm.bench_row, "train", 1, None), (evilm.bench_row, "infer", 1, 10e9),
                        (vlm.bench_row, "train", 1, None), (vlm.bench_row, "infer", 1, 10e9)])
    rows = {r.chapter: r for r in cost.estimate(payload)}
    assert rows["evilm"].gflops_per_sample == pytest.approx(30.0)
    assert "3 x" in rows["evilm"].flops_from
    assert rows["vlm"].gflops_per_sample is None  # no silent 3x where none is declared
    assert rows["simvtp"].flops_from.startswith("no 'simvtp")


def test_run_writes_the_page_and_names_a_missing_result(tmp_path, monkeypatch):
    monkeypatch.setenv("VLBOOK_RESULTS", str(tmp_path / "results"))
    missing = tmp_path / "none.json"
    args = argparse.Namespace(models_result=missing, mfu=0.4, name="cost")
    with pytest.raises(FileNotFoundError, match="none.json"):
        cost.run(args)
    src = tmp_path / "models.json"
    src.write_text(json.dumps(_payload([(r.bench_row, "train", 1, 1e9) for r in cost.RUNS])))
    cost.run(argparse.Namespace(models_result=src, mfu=0.4, name="cost"))
    page = (tmp_path / "results" / "bench" / "cost.md").read_text()
    assert "Estimate, not a measurement" in page and page.count("\n| ") == 1 + len(cost.RUNS)
