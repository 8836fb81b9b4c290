"""vlbook.bench threads: one thread vs every core, alternated in one process."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from vlbook.bench import threads as bench_threads


def test_time_variant_compares_both_settings_and_restores_the_threads(monkeypatch):
    seen = []

    class Result:
        def __init__(self, seconds):
            self.step_time_s_median = seconds

    def fake_bench(chapter, variant, **kwargs):
        n = torch.get_num_threads()
        seen.append(n)
        # a step that takes 0.3 s on one thread and 0.2 s on more; the later round is faster
        return [Result((0.3 if n == 1 else 0.2) - 0.01 * (len(seen) > 2))]

    monkeypatch.setattr(bench_threads, "bench_one", fake_bench)
    before = torch.get_num_threads()
    row = bench_threads.time_variant("vlm", "vlm_toy", batch_size=4, threads=2, rounds=2,
                                     steps=1)
    assert seen == [1, 2, 1, 2]  # alternated, round by round
    assert torch.get_num_threads() == before
    assert row["one_thread_s"] == pytest.approx(0.29)  # the fastest round of each
    assert row["threads_s"] == pytest.approx(0.19)
    assert row["speedup"] == pytest.approx(0.29 / 0.19)
    table = bench_threads.markdown([row], "# header")
    assert "| vlm | vlm_toy | 4 | 290 | 190 | 1.53x |" in table


def test_a_real_toy_step_is_timed_and_written(tmp_path, monkeypatch):
    monkeypatch.setenv("VLBOOK_RESULTS", str(tmp_path))
    monkeypatch.setattr(bench_threads, "default_workers", lambda: 2)
    args = argparse.Namespace(chapters=["vlm"], batch_size=2, threads=0, rounds=1, steps=1,
                              name="threads-test")
    payload = bench_threads.run(args)
    (row,) = payload["rows"]
    assert row["variant"] == "vlm_toy" and row["threads"] == 2
    assert row["one_thread_s"] > 0 and row["threads_s"] > 0
    stored = json.loads((tmp_path / "bench" / "threads-test.json").read_text())
    assert stored["rows"][0]["speedup"] == pytest.approx(row["speedup"])
    assert "vlm_toy" in (tmp_path / "bench" / "threads-test.md").read_text()


def test_one_core_is_refused_with_a_reason(monkeypatch):
    monkeypatch.setattr(bench_threads, "default_workers", lambda: 1)
    args = argparse.Namespace(chapters=["vlm"], batch_size=2, threads=0, rounds=1, steps=1,
                              name="x")
    with pytest.raises(SystemExit, match="only 1 core"):
        bench_threads.run(args)
