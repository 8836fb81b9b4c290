"""Downstream metrics (vlbook.eval.downstream) on hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from vlbook.eval import (
    frame_accuracy,
    linear_probe_accuracy,
    multiple_choice_accuracy,
    open_ended_qa_accuracy,
    step_localisation_recall,
)


def test_multiple_choice_accuracy_and_tie_policy():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.1], [0.3, 0.3, 0.3], [0.2, 0.7, 0.7]])
    answer = torch.tensor([1, 1, 0, 2])
    # correct: q0 only strictly; q2 and q3 are ties -> wrong by default
    assert multiple_choice_accuracy(scores, answer) == pytest.approx(25.0)
    # argmax picks the first maximum: q2 (answer 0) becomes correct, q3 (answer 2) does not
    assert multiple_choice_accuracy(scores, answer, ties="first") == pytest.approx(50.0)
    assert multiple_choice_accuracy(scores, answer, units="fraction") == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"answer indices must be in \[0, 3\)"):
        multiple_choice_accuracy(scores, torch.tensor([0, 1, 2, 3]))


def test_open_ended_qa_out_of_vocabulary_policies():
    vocab = ["dog", "cat", "two"]
    answers = ["dog", "Cat ", "three", "piano", "two"]
    predicted = ["dog", "cat", "two", "dog", "one"]
    strict = open_ended_qa_accuracy(predicted, answers, vocab)
    assert (strict.num_correct, strict.num_counted, strict.num_out_of_vocabulary) == (2, 5, 2)
    assert strict.accuracy == pytest.approx(40.0)
    inflated = open_ended_qa_accuracy(predicted, answers, vocab,
                                      oov_policy="drop_from_denominator_inflates_accuracy")
    assert inflated.accuracy == pytest.approx(200 / 3)  # 2 of 3 in-vocabulary questions
    assert "2 of 5 answers outside" in inflated.card()
    with pytest.raises(ValueError, match="oov_policy"):
        open_ended_qa_accuracy(predicted, answers, vocab, oov_policy="drop")
    with pytest.raises(ValueError, match="5 entries but answers has 4"):
        open_ended_qa_accuracy(predicted, answers[:4], vocab)


def test_frame_accuracy_pools_frames_and_ignores_padding():
    pred = [torch.tensor([0, 1, 1, 2]), torch.tensor([3, 3])]
    target = [torch.tensor([0, 1, 2, -100]), torch.tensor([3, 0])]
    # correct 2 of 3 labelled frames + 1 of 2 = 3 / 5 (not the mean of per-video 2/3 and 1/2)
    assert frame_accuracy(pred, target) == pytest.approx(60.0)
    logits = torch.nn.functional.one_hot(torch.tensor([[0, 1, 1, 2]]), 4).float()
    assert frame_accuracy(logits, torch.tensor([[0, 1, 2, 2]])) == pytest.approx(75.0)
    with pytest.raises(ValueError, match="video 0"):
        frame_accuracy([torch.tensor([0, 1])], [torch.tensor([0, 1, 2])])


def test_step_localisation_recall_crosstask_counting():
    # video A (task "eggs"): 3 steps, step 2 never annotated
    gt_a = torch.zeros(5, 3, dtype=torch.bool)
    gt_a[0:2, 0] = True
    gt_a[3:5, 1] = True
    scores_a = torch.zeros(5, 3)
    scores_a[1, 0] = 1.0  # step 0 at frame 1: inside [0, 2) -> hit
    scores_a[2, 1] = 1.0  # step 1 at frame 2: outside [3, 5) -> miss
    # video B (task "eggs"): one step, hit
    gt_b = torch.tensor([[False], [True]])
    pred_b = torch.tensor([[False], [True]])
    # video C (task "tea"): one step, miss
    gt_c = torch.tensor([[True], [False]])
    pred_c = torch.tensor([[False], [True]])
    res = step_localisation_recall([scores_a, pred_b, pred_c], [gt_a, gt_b, gt_c],
                                   tasks=["eggs", "eggs", "tea"])
    assert res.per_task == pytest.approx({"eggs": 200 / 3, "tea": 0.0})
    assert res.recall == pytest.approx(100 / 3)  # mean over tasks, not over steps (2/4)
    with pytest.raises(ValueError, match="at most one frame"):
        step_localisation_recall([torch.ones(2, 1, dtype=torch.bool)], [gt_b])


def test_linear_probe_learns_separable_classes_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=gen) * 3
    ytr = torch.arange(90) % 3
    yte = torch.arange(60) % 3
    xtr = centers[ytr] + torch.randn(90, 16, generator=gen)
    xte = centers[yte] + torch.randn(60, 16, generator=gen)
    res = linear_probe_accuracy(xtr, ytr, xte, yte)
    assert res.accuracy > 95.0 and res.train_accuracy > 95.0
    noise = linear_probe_accuracy(torch.randn(90, 16, generator=gen), ytr,
                                  torch.randn(300, 16, generator=gen), torch.arange(300) % 3)
    assert noise.accuracy < 50.0  # chance is 33%
    with pytest.raises(ValueError, match="same D"):
        linear_probe_accuracy(xtr, ytr, xte[:, :8], yte)


def test_multiple_choice_breakdown_pools_temporal_and_static_distractors() -> None:
    from vlbook.eval import multiple_choice_breakdown

    scores = torch.tensor([[0.2, 0.5, 0.1], [0.9, 0.4, 0.9]])
    answer = torch.tensor([0, 0])
    attributes = [[None, "motion", "colour"], [None, "order", "shape"]]
    out = multiple_choice_breakdown(scores, answer, attributes, units="fraction")
    assert out["accuracy"] == 0.0  # item 0 loses to motion, item 1 ties with shape
    assert out["pairwise/motion"] == 0.0 and out["pairwise/order"] == 1.0
    assert out["pairwise/colour"] == 1.0 and out["pairwise/shape"] == 0.0
    assert out["pairwise/temporal"] == 0.5 and out["pairwise/static"] == 0.5
    with pytest.raises(ValueError, match="attribute lists"):
        multiple_choice_breakdown(scores, answer, attributes[:1])
