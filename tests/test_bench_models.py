"""The models and reference benchmark suites: correct comparisons and complete tables."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from vlbook.bench import models as models_suite
from vlbook.bench import reference
from vlbook.paths import results_root


def test_explicit_attention_is_the_same_computation() -> None:
    torch.manual_seed(0)
    row = reference.compare_attention(2, 24, 32, 4, "cpu", repeats=1)
    assert row.max_abs_diff < 1e-5 and row.library_ms > 0 and row.reference_ms > 0
    # the textbook version keeps the L x L attention matrix for backward; SDPA does not
    assert row.reference_saved_mb > row.library_saved_mb


def test_a_wrong_reference_is_caught_before_timing(monkeypatch) -> None:
    def wrong(attention, x):
        q, k, v = attention.qkv_projection(x)
        out = (q.softmax(-1) @ k.transpose(-2, -1) @ v).transpose(1, 2)  # not attention
        return attention.proj(out.reshape(x.shape[0], x.shape[1], attention.dim))

    monkeypatch.setattr(reference, "explicit_attention", wrong)
    with pytest.raises(AssertionError, match="attention outputs differ"):
        reference.compare_attention(1, 8, 16, 2, "cpu", repeats=1)


def test_looped_references_match_the_library() -> None:
    from vlbook.losses import patchify_video
    from vlbook.models.allinone import rolling_plan, temporal_roll

    video = torch.randn(2, 4, 3, 16, 16)
    assert torch.equal(reference.looped_patchify(video, 2, 8), patchify_video(video, 2, 8))
    plan = rolling_plan(17, ratio=0.25, layout="code")
    tokens = torch.randn(2 * 3, 17, 8)
    rolled = reference.looped_roll(tokens, 3, plan.forward.tolist(), plan.backward.tolist())
    assert torch.equal(rolled, temporal_roll(tokens, 3, plan))
    # the loop really moves tokens: frame 1 now holds frame 0's rolled positions
    p = plan.forward[0]
    assert torch.equal(rolled.view(2, 3, 17, 8)[:, 1, p], tokens.view(2, 3, 17, 8)[:, 0, p])


def test_variant_rows_cover_every_chapter_at_both_sizes() -> None:
    names = models_suite.chapter_names()
    assert names[:5] == ["vlm", "simvtp", "umt", "allinone", "evilm"]  # book order
    rows = models_suite.variants(names, ("toy", "paper"))
    assert {c for c, _, _ in rows} == set(names)
    for chapter in names:
        sizes = {s for c, s, _ in rows if c == chapter}
        assert sizes == {"toy", "paper"}, chapter
    with pytest.raises(ValueError, match="unknown size"):
        models_suite.variants(["vlm"], ["huge"])


def test_models_suite_writes_one_row_per_model_and_mode() -> None:
    torch.set_num_threads(1)
    parser = argparse.ArgumentParser()
    models_suite.add_arguments(parser)
    args = parser.parse_args(["--chapters", "allinone", "vlm", "--sizes", "toy", "--steps", "1",
                              "--warmup", "0", "--toy-batch-size", "2"])
    payload = models_suite.run(args)
    results = payload["results"]
    assert [(r["model"], r["mode"]) for r in results] == [  # in the order asked
        ("allinone_toy", "train"), ("allinone_toy", "infer"),
        ("vlm_toy", "train"), ("vlm_toy", "infer")]
    from vlbook.models import create_model

    for r in results:
        own = sum(p.numel() for p in create_model(r["model"]).parameters())
        assert r["parameters"] == own
        assert r["step_time_s_median"] > 0 and r["flops_per_step"] > 0
    train = {r["model"]: r["flops_per_step"] for r in results if r["mode"] == "train"}
    infer = {r["model"]: r["flops_per_step"] for r in results if r["mode"] == "infer"}
    assert all(train[m] > infer[m] for m in train)  # backward costs more than nothing
    written = json.loads((results_root() / "bench" / "models-cpu-no.json").read_text())
    assert len(written["results"]) == 4
    table = (results_root() / "bench" / "models-cpu-no.md").read_text()
    assert sum(line.startswith("| allinone-") or line.startswith("| vlm-")
               for line in table.splitlines()) == 4
    # each variant and mode ran in a fresh process: its idle level (Python + torch) is below
    # its peak, and a toy model's step costs far less than the interpreter itself
    assert "above idle MB" in table
    for r in results:
        assert 0 < r["process_idle_mb"] <= r["peak_memory_mb"]
        assert r["peak_memory_mb"] - r["process_idle_mb"] < r["process_idle_mb"]


def test_models_suite_without_isolation_runs_in_process() -> None:
    parser = argparse.ArgumentParser()
    models_suite.add_arguments(parser)
    args = parser.parse_args(["--chapters", "vlm", "--sizes", "toy", "--steps", "1", "--warmup",
                              "0", "--toy-batch-size", "2", "--mode", "train", "--no-isolate",
                              "--no-flops"])
    results = models_suite.run(args)["results"]
    assert [(r["model"], r["mode"]) for r in results] == [("vlm_toy", "train")]
    assert results[0]["process_idle_mb"] is None
