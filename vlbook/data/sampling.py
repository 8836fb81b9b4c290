"""Frame sampling as the five papers use it.

``segment``
    sparse TSN-style sampling (Wang et al. 2016), used by UMT and All-in-one (and SimVTP's
    ``TSN`` sampler): split the video into ``num`` equal segments and take one frame from each —
    a random one in training, the middle one in evaluation.
``dense``
    a contiguous clip of ``num`` frames ``stride`` apart (VideoMAE/SimVTP "16 frames at rate 4"),
    starting at a random offset in training, centred in evaluation.
``uniform``
    ``num`` evenly spaced frames from first to last (deterministic; visualisations, feature
    extraction).

Every function takes the video's frame count and returns a list of ``num`` valid indices; a
video shorter than the request repeats frames rather than failing. Papers' frame counts: 1
(images, UMT stage 2 image-text), 3 (All-in-one), 4 (UMT stage 2), 8 (UMT stage 1), 12 (UMT
retrieval fine-tuning), 16 (SimVTP).
"""

from __future__ import annotations

import numpy as np

STRATEGIES: tuple[str, ...] = ("segment", "dense", "uniform")


def _check(total: int, num: int) -> None:
    if total < 1:
        raise ValueError(f"cannot sample from a video with {total} frames")
    if num < 1:
        raise ValueError(f"number of frames to sample must be >= 1, got {num}")


def segment_indices(
    total: int, num: int, *, train: bool, rng: np.random.Generator | None = None
) -> list[int]:
    """TSN segment sampling: one frame per equal segment, random (train) or middle (eval).

    Segment ``k`` covers ``[floor(k*total/num), floor((k+1)*total/num))``; when a segment is
    empty (``total < num``) its start frame is used, so short videos repeat frames.
    """
    _check(total, num)
    edges = np.floor(np.linspace(0, total, num + 1)).astype(int)
    out = []
    for start, end in zip(edges[:-1], edges[1:]):
        end = max(end, start + 1)
        if train:
            if rng is None:
                raise ValueError("segment_indices(train=True) needs an rng")
            out.append(int(rng.integers(start, end)))
        else:
            out.append(int((start + end - 1) // 2))
    return [min(i, total - 1) for i in out]


def dense_indices(
    total: int,
    num: int,
    *,
    stride: int = 1,
    train: bool,
    rng: np.random.Generator | None = None,
) -> list[int]:
    """A clip of ``num`` frames ``stride`` apart; random start (train) or centred (eval).

    When the clip is longer than the video its indices are clamped to the last frame.
    """
    _check(total, num)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    span = (num - 1) * stride + 1
    slack = max(total - span, 0)
    if train:
        if rng is None:
            raise ValueError("dense_indices(train=True) needs an rng")
        start = int(rng.integers(0, slack + 1))
    else:
        start = slack // 2
    return [min(start + i * stride, total - 1) for i in range(num)]


def uniform_indices(total: int, num: int) -> list[int]:
    """``num`` evenly spaced indices from the first to the last frame (rounded)."""
    _check(total, num)
    if num == 1:
        return [(total - 1) // 2]
    return [int(round(x)) for x in np.linspace(0, total - 1, num)]


def sample_indices(
    strategy: str,
    total: int,
    num: int,
    *,
    train: bool,
    rng: np.random.Generator | None = None,
    stride: int = 1,
) -> list[int]:
    """Dispatch to :func:`segment_indices`, :func:`dense_indices` or :func:`uniform_indices`."""
    if strategy == "segment":
        return segment_indices(total, num, train=train, rng=rng)
    if strategy == "dense":
        return dense_indices(total, num, stride=stride, train=train, rng=rng)
    if strategy == "uniform":
        return uniform_indices(total, num)
    raise ValueError(f"frame sampling {strategy!r} is not known; choose one of {STRATEGIES}")
