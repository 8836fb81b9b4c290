"""Downstream metrics: multiple choice, open-ended QA, action segmentation, step localisation,
linear probe.

Each function states the counting convention it implements, because the papers' code differ
(the book's *Paper vs code* page, ``book/paper_vs_code.md``): All-in-one's open-ended QA drops
questions whose answer is outside the answer vocabulary from the denominator; vlbook counts
them as wrong unless asked otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "LinearProbeResult",
    "QAAccuracy",
    "StepRecall",
    "frame_accuracy",
    "linear_probe_accuracy",
    "multiple_choice_accuracy",
    "normalize_answer",
    "open_ended_qa_accuracy",
    "step_localisation_recall",
]

OOVPolicy = Literal["count_as_wrong", "drop_from_denominator_inflates_accuracy"]
OOV_POLICIES: tuple[str, ...] = ("count_as_wrong", "drop_from_denominator_inflates_accuracy")


def _scale(units: str) -> float:
    if units not in ("percent", "fraction"):
        raise ValueError(f"units={units!r}; expected 'percent' or 'fraction'")
    return 100.0 if units == "percent" else 1.0


def multiple_choice_accuracy(scores: torch.Tensor, answer: torch.Tensor,
                             ties: Literal["wrong", "first"] = "wrong",
                             units: str = "percent") -> float:
    """Accuracy of picking the answer among K candidates (MSR-VTT MC: 5 captions, All-in-one
    Sec. 4.2.3; TGIF Action/Transition; VLM Sec. 4.4).

    ``scores`` ``(N, K)`` (higher = better), ``answer`` ``(N,)`` candidate indices. With
    ``ties="wrong"`` (default) a question counts as correct only if the answer's score is strictly
    the highest, so a model that scores all candidates equally gets 0, not the accuracy of
    "always pick the first"; ``ties="first"`` reproduces ``argmax`` (first maximum wins).
    """
    scores = torch.as_tensor(scores)
    answer = torch.as_tensor(answer).long()
    if scores.dim() != 2 or answer.shape != (scores.shape[0],):
        raise ValueError(f"scores must be (N, K) and answer (N,); got {tuple(scores.shape)} and "
                         f"{tuple(answer.shape)}")
    if len(answer) == 0:
        raise ValueError("multiple_choice_accuracy needs at least one question")
    if answer.min() < 0 or answer.max() >= scores.shape[1]:
        raise ValueError(f"answer indices must be in [0, {scores.shape[1]})")
    if ties == "first":
        correct = scores.argmax(1) == answer
    elif ties == "wrong":
        own = scores.gather(1, answer[:, None])
        others = scores.clone()
        others.scatter_(1, answer[:, None], float("-inf"))
        correct = (own[:, 0] > others.max(1).values)
    else:
        raise ValueError(f"ties={ties!r}; expected 'wrong' or 'first'")
    return float(correct.double().mean()) * _scale(units)


#: Distractor attributes of the synthetic MC items that need more than one frame to reject.
TEMPORAL_ATTRIBUTES: tuple[str, ...] = ("motion", "order")


def multiple_choice_breakdown(scores: torch.Tensor, answer: torch.Tensor,
                              attributes: Sequence[Sequence[str | None]],
                              temporal: Sequence[str] = TEMPORAL_ATTRIBUTES,
                              units: str = "percent") -> dict[str, float]:
    """K-way accuracy and, per distractor attribute, how often the answer outscores it.

    When every distractor changes one attribute of the true caption (the synthetic ``mc``
    task's ``option_attributes``), the K-way accuracy mixes easy and hard distractors; scoring
    each pair separately says which changes a model notices. ``attributes[i][j]`` names what
    option ``j`` of item ``i`` changes (None for the answer). Returns ``accuracy``,
    ``pairwise/<attribute>`` and ``pairwise/temporal`` / ``pairwise/static`` pooled over
    ``temporal`` and the rest. Ties count as losses.
    """
    scores = torch.as_tensor(scores)
    answer = torch.as_tensor(answer).long()
    if len(attributes) != scores.shape[0]:
        raise ValueError(f"{len(attributes)} attribute lists for {scores.shape[0]} questions")
    out = {"accuracy": multiple_choice_accuracy(scores, answer, units=units)}
    wins: dict[str, list[bool]] = {}
    for i, attrs in enumerate(attributes):
        right = scores[i, answer[i]]
        for j, attr in enumerate(attrs):
            if j == int(answer[i]) or attr is None:
                continue
            won = bool(right > scores[i, j])
            wins.setdefault(attr, []).append(won)
            wins.setdefault("temporal" if attr in temporal else "static", []).append(won)
    for key, values in sorted(wins.items()):
        out[f"pairwise/{key}"] = sum(values) / len(values) * _scale(units)
    return out


def normalize_answer(text: str) -> str:
    """Lower-case, strip, collapse whitespace (the QA datasets' answers are single words)."""
    return re.sub(r"\s+", " ", text.strip().lower())


@dataclass(frozen=True)
class QAAccuracy:
    """Open-ended QA accuracy with the counts and the out-of-vocabulary policy behind it."""

    accuracy: float
    num_correct: int
    num_counted: int
    num_questions: int
    num_out_of_vocabulary: int
    oov_policy: str
    units: str

    def card(self) -> str:
        return (f"{self.num_correct}/{self.num_counted} correct; {self.num_out_of_vocabulary} of "
                f"{self.num_questions} answers outside the vocabulary, policy={self.oov_policy}")


def open_ended_qa_accuracy(predicted: Sequence[str], answers: Sequence[str],
                           vocabulary: Collection[str],
                           oov_policy: OOVPolicy = "count_as_wrong",
                           units: str = "percent") -> QAAccuracy:
    """Top-1 accuracy of open-ended QA cast as classification over an answer vocabulary
    (All-in-one Sec. 4.2.2: MSRVTT-QA, MSVD-QA, TGIF-Frame; E-ViLM Table 1).

    A question whose ground-truth answer is outside ``vocabulary`` can never be answered by a
    classifier over that vocabulary. ``"count_as_wrong"`` (default) keeps it in the denominator;
    ``"drop_from_denominator_inflates_accuracy"`` drops it, as All-in-one's code does, which
    raises the number without the model doing better. Answers are compared after
    :func:`normalize_answer`.
    """
    if oov_policy not in OOV_POLICIES:
        raise ValueError(f"oov_policy={oov_policy!r}; expected one of {OOV_POLICIES}")
    if len(predicted) != len(answers):
        raise ValueError(f"predicted has {len(predicted)} entries but answers has {len(answers)}")
    if not answers:
        raise ValueError("open_ended_qa_accuracy needs at least one question")
    vocab = {normalize_answer(a) for a in vocabulary}
    correct = counted = oov = 0
    for pred, gold in zip(predicted, answers):
        gold_n = normalize_answer(gold)
        in_vocab = gold_n in vocab
        oov += not in_vocab
        if not in_vocab and oov_policy != "count_as_wrong":
            continue
        counted += 1
        correct += in_vocab and normalize_answer(pred) == gold_n
    acc = correct / counted * _scale(units) if counted else float("nan")
    return QAAccuracy(acc, correct, counted, len(answers), oov, oov_policy, units)


def frame_accuracy(predicted: torch.Tensor | Sequence[torch.Tensor],
                   target: torch.Tensor | Sequence[torch.Tensor], ignore_index: int = -100,
                   units: str = "percent") -> float:
    """Action-segmentation frame accuracy: correct frames / labelled frames over all videos
    (COIN, VLM Sec. 4.2 and Table 4).

    ``predicted`` holds labels ``(..., T)`` or logits ``(..., T, C)`` (arg-maxed), either one
    tensor or a list of per-video tensors of different lengths. Frames whose target equals
    ``ignore_index`` (padding) are not counted. Accuracy is pooled over frames (micro).
    """
    preds = [predicted] if isinstance(predicted, torch.Tensor) else list(predicted)
    targets = [target] if isinstance(target, torch.Tensor) else list(target)
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions for {len(targets)} targets")
    correct = total = 0
    for i, (p, t) in enumerate(zip(preds, targets)):
        p, t = torch.as_tensor(p), torch.as_tensor(t)
        if p.dim() == t.dim() + 1:
            p = p.argmax(-1)
        if p.shape != t.shape:
            raise ValueError(f"video {i}: predicted labels {tuple(p.shape)} do not match target "
                             f"{tuple(t.shape)}")
        keep = t != ignore_index
        correct += int((p[keep] == t[keep]).sum())
        total += int(keep.sum())
    if total == 0:
        raise ValueError("frame_accuracy: no labelled frame (all targets are ignore_index)")
    return correct / total * _scale(units)


@dataclass(frozen=True)
class StepRecall:
    """CrossTask step-localisation recall, averaged over tasks, with per-task values."""

    recall: float
    per_task: dict[str, float]
    units: str


def step_localisation_recall(predictions: Sequence[torch.Tensor], targets: Sequence[torch.Tensor],
                             tasks: Sequence[str] | None = None,
                             units: str = "percent") -> StepRecall:
    """Step-localisation recall (CrossTask, Zhukov et al. 2019; VLM Table 5).

    Per video, ``targets[i]`` is a boolean ``(T, K)`` matrix (frame t lies in a ground-truth
    interval of step k) and ``predictions[i]`` either scores ``(T, K)`` (each step is placed at
    its highest-scoring frame) or a boolean ``(T, K)`` with one predicted frame per step (e.g.
    from an order-constrained Viterbi decoding). A step is recalled when its predicted frame is
    inside one of its intervals. Per task: recalled steps / steps present (steps with at least one
    annotated frame), summed over the task's videos; the result is the mean over tasks, as in the
    official CrossTask evaluation. Without ``tasks`` all videos form one task.
    """
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    tasks = list(tasks) if tasks is not None else ["all"] * len(targets)
    if len(tasks) != len(targets):
        raise ValueError(f"{len(tasks)} task names for {len(targets)} videos")
    hits: dict[str, int] = {}
    present: dict[str, int] = {}
    for i, (pred, gt, task) in enumerate(zip(predictions, targets, tasks)):
        pred, gt = torch.as_tensor(pred), torch.as_tensor(gt).bool()
        if pred.shape != gt.shape or gt.dim() != 2:
            raise ValueError(f"video {i}: prediction {tuple(pred.shape)} and target "
                             f"{tuple(gt.shape)} must both be (T, K)")
        if pred.dtype == torch.bool:
            if not bool((pred.sum(0) <= 1).all()):
                raise ValueError(f"video {i}: a boolean prediction must mark at most one frame "
                                 "per step")
            chosen = pred
        else:
            chosen = F.one_hot(pred.argmax(0), pred.shape[0]).t().bool()
        step_present = gt.any(0)
        hits[task] = hits.get(task, 0) + int((chosen & gt).any(0)[step_present].sum())
        present[task] = present.get(task, 0) + int(step_present.sum())
    per_task = {t: hits[t] / present[t] * _scale(units) for t in hits if present[t] > 0}
    if not per_task:
        raise ValueError("step_localisation_recall: no annotated step in any video")
    return StepRecall(sum(per_task.values()) / len(per_task), per_task, units)


@dataclass(frozen=True)
class LinearProbeResult:
    """Held-out accuracy of a linear classifier on frozen features."""

    accuracy: float
    train_accuracy: float
    weight_decay: float
    units: str
    predictions: torch.Tensor | None = None  # held-out predicted class per test row


def linear_probe_accuracy(train_features: torch.Tensor, train_labels: torch.Tensor,
                          test_features: torch.Tensor, test_labels: torch.Tensor,
                          weight_decay: float = 1e-4, max_iter: int = 200,
                          standardize: bool = True, units: str = "percent") -> LinearProbeResult:
    """Linear-probe accuracy: multinomial logistic regression on frozen features, held-out top-1
    (E-ViLM Table 3 and All-in-one Table 12: HMDB51 and K400 action recognition).

    The classifier (weights + bias, L2 penalty ``weight_decay`` on the weights) is fitted
    full-batch with L-BFGS on the training features, standardised with the training mean and
    standard deviation when ``standardize``; deterministic for given inputs.
    """
    xtr = torch.as_tensor(train_features).detach().double()
    xte = torch.as_tensor(test_features).detach().double()
    ytr = torch.as_tensor(train_labels).long()
    yte = torch.as_tensor(test_labels).long()
    if xtr.dim() != 2 or xte.dim() != 2 or xtr.shape[1] != xte.shape[1]:
        raise ValueError(f"features must be (N, D) with the same D; got {tuple(xtr.shape)} and "
                         f"{tuple(xte.shape)}")
    if ytr.shape != (xtr.shape[0],) or yte.shape != (xte.shape[0],):
        raise ValueError("train_labels/test_labels must have one label per feature row")
    if len(ytr) == 0 or len(yte) == 0:
        raise ValueError("linear_probe_accuracy needs training and test examples")
    if ytr.min() < 0:
        raise ValueError("labels must be non-negative class indices")
    num_classes = int(max(ytr.max(), yte.max())) + 1
    if standardize:
        mean, std = xtr.mean(0), xtr.std(0, unbiased=False).clamp_min(1e-8)
        xtr, xte = (xtr - mean) / std, (xte - mean) / std
    weight = torch.zeros(xtr.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter,
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(xtr @ weight + bias, ytr) + weight_decay * weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    with torch.no_grad():
        train_acc = float(((xtr @ weight + bias).argmax(1) == ytr).double().mean())
        predictions = (xte @ weight + bias).argmax(1)
        test_acc = float((predictions == yte).double().mean())
    scale = _scale(units)
    return LinearProbeResult(test_acc * scale, train_acc * scale, weight_decay, units,
                             predictions)
