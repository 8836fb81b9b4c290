"""Learning-rate schedules of the papers: linear warm-up, then cosine, linear or polynomial decay.

- VLM (fairseq) and All-in-one: warm-up then polynomial decay (power 1 = linear);
- SimVTP and UMT: warm-up then (half-)cosine decay (UMT stage 2; ``book/paper_vs_code.md``).

The multiplier follows the transformers convention: ``step / warmup`` during warm-up (so step 0
has lr 0), then decay from 1 to ``min_ratio`` at ``total_steps``; it stays at ``min_ratio``
afterwards.
"""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def lr_multiplier(
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    kind: str = "cosine",
    power: float = 1.0,
    min_ratio: float = 0.0,
) -> float:
    """Factor applied to the peak lr at optimiser step ``step`` (0-based)."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    if kind == "constant":
        return 1.0
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    if kind == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif kind == "linear":
        shape = 1.0 - progress
    elif kind == "polynomial":
        shape = (1.0 - progress) ** power
    else:
        raise ValueError(
            f"schedule {kind!r} is unknown; accepted: cosine, linear, polynomial, constant"
        )
    return min_ratio + (1.0 - min_ratio) * shape


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    warmup_steps: int,
    total_steps: int,
    kind: str = "cosine",
    power: float = 1.0,
    min_ratio: float = 0.0,
) -> LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_multiplier` to each group's own (layer-scaled) lr."""
    lr_multiplier(0, warmup_steps=warmup_steps, total_steps=total_steps, kind=kind)  # validate

    def factor(step: int) -> float:
        return lr_multiplier(
            step,
            warmup_steps=warmup_steps,
            total_steps=total_steps,
            kind=kind,
            power=power,
            min_ratio=min_ratio,
        )

    return LambdaLR(optimizer, factor)
