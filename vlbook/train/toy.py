"""The in-process loop of toy runs over a decoded-once cache (:mod:`vlbook.data.cache`).

:func:`vlbook.train.train` is the project's trainer (accelerate, checkpoints, resume) and every
``full`` run goes through it. Toy notebooks train many small variants for a few hundred steps on
clips already in memory; for those, this loop is the same optimisation (AdamW with weight-decay
exclusions, linear warm-up, cosine decay, gradient clipping) without the trainer's data loading
and checkpointing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from vlbook.data.cache import cached_batch

StepFn = Callable[[nn.Module, dict[str, Any], torch.Generator], Mapping[str, torch.Tensor]]
SampleFn = Callable[[torch.Tensor, torch.Generator], dict[str, Any]]


@dataclass
class ToyRun:
    """Per-step losses and the wall time of a :func:`train_on_cache` run."""

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 0

    def last(self, key: str = "loss", window: int = 10) -> float:
        """Mean of ``key`` over the last ``window`` steps."""
        values = [h[key] for h in self.history[-window:] if key in h]
        return float(sum(values) / len(values)) if values else float("nan")


def train_on_cache(
    model: nn.Module, data: Mapping[str, Any], *, steps: int, batch_size: int, lr: float,
    weight_decay: float = 0.05, betas: tuple[float, float] = (0.9, 0.95), warmup: float = 0.1,
    clip_grad_norm: float | None = 1.0, seed: int = 0, step_fn: StepFn | None = None,
    keys: Sequence[str] = ("video", "input_ids", "attention_mask", "video_index"),
    sample: SampleFn | None = None, device: torch.device | str | None = None,
) -> ToyRun:
    """AdamW, linear warm-up over ``warmup`` of the steps, then cosine decay, on random batches.

    Batches are ``batch_size`` random rows of the cache's ``keys`` (or ``sample(pick, gen)``
    for custom batches, e.g. a random caption per clip), moved to ``device`` when given (the
    model must already be there). ``step_fn(model, batch, generator)``
    returns the loss dict (default ``model(batch)``); the seeded generator drives the batches
    and whatever masks ``step_fn`` draws, so a run is reproducible.
    """
    from vlbook.train.optim import build_optimizer

    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = build_optimizer(model, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    warm = max(int(warmup * steps), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: min((i + 1) / warm, 0.5 * (
        1 + math.cos(math.pi * min(i / max(steps, 1), 1.0)))))
    n = len(data["video"]) if "video" in data else len(next(iter(data.values())))
    run = ToyRun()
    model.train()
    start = time.perf_counter()
    for _ in range(steps):
        pick = torch.randperm(n, generator=gen)[:batch_size]
        batch = sample(pick, gen) if sample is not None else cached_batch(data, pick, keys)
        if device is not None:
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
        out = step_fn(model, batch, gen) if step_fn is not None else model(batch)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        if clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        opt.step()
        sched.step()
        run.history.append({k: float(v.detach()) for k, v in out.items()})
        run.samples += len(pick)
    run.seconds = time.perf_counter() - start
    model.eval()
    return run


__all__ = ["ToyRun", "train_on_cache"]
