"""The capstone comparison: shared budget, shared data, shared evaluation."""

from __future__ import annotations

import math

import pytest
import torch

from vlbook import capstone as C
from vlbook.config import get_preset


@pytest.fixture(scope="module")
def smoke_budget() -> C.Budget:
    return C.Budget(**{**get_preset("capstone", "smoke")["budget"], "seeds": [0]})


@pytest.fixture(scope="module")
def smoke_data(smoke_budget: C.Budget) -> dict:
    torch.set_num_threads(1)
    return C.load_benchmark(smoke_budget, scale="smoke")


def test_mc_breakdown_scores_each_distractor_against_the_answer() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.95, 0.2, 0.9],
                           [0.3, 0.8, 0.1, 0.7, 0.0]])
    answer = torch.tensor([0, 1])
    attributes = [[None, "colour", "order", "motion", "size"],
                  ["shape", None, "order", "motion", "count"]]
    out = C.mc_breakdown(scores, answer, attributes)
    assert out["accuracy"] == 50.0  # item 0 loses to the order swap
    assert out["pairwise/order"] == 50.0
    assert out["pairwise/size"] == 0.0  # a tie counts as a loss
    assert out["pairwise/colour"] == 100.0 and out["pairwise/motion"] == 100.0
    assert out["pairwise/temporal"] == 75.0  # order x2 + motion x2: 3 wins of 4
    assert out["pairwise/static"] == pytest.approx(100 * 3 / 4)  # colour, size, shape, count


def test_budget_rejects_inconsistent_sizes() -> None:
    with pytest.raises(ValueError, match="heads"):
        C.Budget(width=30, heads=4)
    with pytest.raises(ValueError, match="patch_size"):
        C.Budget(size=30, patch_size=8)


def test_benchmark_views_point_at_the_cached_clips(smoke_data: dict, smoke_budget) -> None:
    train, test = smoke_data["train"], smoke_data["test"]
    assert train["video"].shape[1:] == (smoke_budget.num_frames, 3, smoke_budget.size,
                                        smoke_budget.size)
    assert train["caption_ids"].shape[0] == len(train["video"])
    assert train["caption_ids"].shape[1] >= 2  # several captions per clip to draw from
    assert torch.equal(train["caption_ids"][:, 0], train["input_ids"])
    mc = smoke_data["mc"]
    assert mc["option_ids"].shape[:2] == (len(mc["label"]), 5)
    assert int(mc["video_row"].max()) < len(test["video"])
    for view, clips in (("qa_train", train), ("qa_test", test), ("cls_train", train),
                        ("cls_test", test)):
        rows = smoke_data[view]["video_row"]
        assert len(rows) > 0 and int(rows.max()) < len(clips["video"])
    # every MC item has exactly one answer slot without a distractor attribute
    for attrs, label in zip(mc["option_attributes"], mc["label"]):
        assert attrs[int(label)] is None and sum(a is None for a in attrs) == 1


def test_methods_share_the_budget_width(smoke_data: dict, smoke_budget) -> None:
    widths = {}
    for name in C.METHOD_NAMES:
        model = C.METHODS[name].build(smoke_budget, smoke_data["tokenizer"])
        widths[name] = {p.shape[-1] for n, p in model.named_parameters()
                        if p.dim() == 2 and "norm" not in n}
    for name, dims in widths.items():
        assert smoke_budget.width in dims, name


@pytest.mark.parametrize("name", C.METHOD_NAMES)
def test_each_method_pretrains_reproducibly_and_is_evaluated(name: str, smoke_data: dict,
                                                             smoke_budget) -> None:
    torch.set_num_threads(1)
    first = C.pretrain_method(name, smoke_data, smoke_budget, seed=0)
    again = C.pretrain_method(name, smoke_data, smoke_budget, seed=0)
    losses = [h["loss"] for h in first.run.history]
    assert losses == [h["loss"] for h in again.run.history]  # same seed, same run
    acc = first.accounting()
    assert acc["steps"] == smoke_budget.steps
    assert acc["samples_seen"] == smoke_budget.steps * smoke_budget.batch_size
    assert acc["params"] == sum(p.numel() for p in first.model.parameters())
    assert acc["step_gflops"] > 0
    metrics = C.evaluate_method(first, smoke_data, smoke_budget)
    for key in ("t2v_R@1", "v2t_R@1", "mc_accuracy", "mc_pairwise/temporal",
                "mc_pairwise/static", "qa_accuracy", "qa_temporal", "probe_accuracy"):
        assert 0.0 <= metrics[key] <= 100.0 and not math.isnan(metrics[key]), key


def test_uniform_scores_give_chance_on_every_distractor() -> None:
    scores = torch.zeros(4, 5)  # a model that knows nothing: all ties, all losses
    attributes = [[None, "colour", "order", "motion", "size"]] * 4
    out = C.mc_breakdown(scores, torch.zeros(4, dtype=torch.long), attributes)
    assert out["accuracy"] == 0.0 and out["pairwise/temporal"] == 0.0
