"""The one in-process loop of toy runs: every chapter's smoke/toy training goes through :func:`fit`.

:func:`vlbook.train.train` is the project's trainer (accelerate, checkpoints, resume) and every
``full`` run goes through it. Toy notebooks train many small variants for a few hundred steps
on clips already in memory (:mod:`vlbook.data.cache`); for those, :func:`fit` is the same
optimisation — :func:`vlbook.train.optim.build_optimizer` (AdamW with the project's one
weight-decay rule: no decay on biases, norms, position embeddings, special tokens,
temperatures and whatever the model or the chapter's ``no_weight_decay`` lists),
:func:`vlbook.train.schedules.lr_multiplier` (linear warm-up, then cosine / linear / constant),
gradient clipping — without the trainer's data loading and checkpointing. A chapter states its
optimiser settings (betas, clipping, schedule, extra no-decay names) in its preset's
``train`` section; there is no private loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from vlbook.data.cache import cached_batch
from vlbook.train.optim import build_optimizer
from vlbook.train.schedules import build_scheduler

StepFn = Callable[[nn.Module, dict[str, Any], torch.Generator], Any]
SampleFn = Callable[[torch.Tensor, torch.Generator], dict[str, Any]]
BatchSource = Callable[[torch.Generator], dict[str, Any]] | Iterable[dict[str, Any]]
AfterStep = Callable[[int, dict[str, Any]], None]


@dataclass
class ToyRun:
    """Per-step losses and the wall time of a :func:`fit` run."""

    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    samples: int = 0

    def last(self, key: str = "loss", window: int = 10) -> float:
        """Mean of ``key`` over the last ``window`` steps."""
        values = [h[key] for h in self.history[-window:] if key in h]
        return float(sum(values) / len(values)) if values else float("nan")

    @property
    def losses(self) -> list[float]:
        """The total loss of every step."""
        return [h["loss"] for h in self.history]


def _batch_size(batch: Mapping[str, Any]) -> int:
    for value in batch.values():
        if torch.is_tensor(value) and value.dim() > 0:
            return int(value.shape[0])
        if isinstance(value, list):
            return len(value)
    return 0


def _as_losses(out: Any) -> Mapping[str, torch.Tensor]:
    if torch.is_tensor(out):
        return {"loss": out}
    if isinstance(out, Mapping) and "loss" in out:
        return out
    loss = getattr(out, "loss", None)
    if torch.is_tensor(loss):
        return {"loss": loss}
    raise TypeError(f"fit: the step returned {type(out).__name__}; expected a loss tensor, a "
                    "mapping with 'loss' or an output with a .loss tensor")


def fit(
    model: nn.Module, batches: BatchSource, *, steps: int, lr: float,
    weight_decay: float = 0.05, betas: Sequence[float] = (0.9, 0.95),
    warmup_steps: int | None = None, warmup: float = 0.1, schedule: str = "cosine",
    clip_grad_norm: float | None = 1.0, no_weight_decay: Iterable[str] = (),
    layer_decay: float = 1.0, seed: int = 0, step_fn: StepFn | None = None,
    after_step: AfterStep | None = None,
    device: torch.device | str | None = None, parameters: nn.Module | None = None,
) -> ToyRun:
    """Train ``model`` for ``steps`` optimiser steps; returns the per-step loss terms.

    ``batches``: a callable ``batches(generator) -> batch`` (random rows of a cache) or an
    iterable of batches (cycled when it runs out: a list of pre-loaded batches or an
    epoch loader). ``step_fn(model, batch, generator)`` returns the loss (a tensor, a mapping
    with ``"loss"`` and other terms to log, or an output with ``.loss``); default
    ``model(batch)``. ``warmup_steps`` (default ``warmup`` x ``steps``) of linear warm-up from
    0, then ``schedule`` decay to 0 at ``steps``. ``after_step(step, batch)`` runs after each
    optimiser step (e.g. codebook restarts). ``layer_decay`` < 1 scales block ``i``'s learning
    rate by ``layer_decay ** (L + 1 - i)`` (fine-tuning recipes of BEiT / VideoMAE / UMT;
    :func:`vlbook.train.optim.param_groups`). ``parameters``: the module whose parameters are
    optimised (default ``model``). The global RNG and the batch generator are seeded with
    ``seed``, so a run is reproducible.
    """
    if steps < 0:
        raise ValueError(f"fit: steps={steps}; expected >= 0")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    trained = parameters if parameters is not None else model
    params = [p for p in trained.parameters() if p.requires_grad]
    opt = build_optimizer(trained, lr=lr, weight_decay=weight_decay,
                          betas=(float(betas[0]), float(betas[1])),
                          no_weight_decay=no_weight_decay, layer_decay=layer_decay)
    warm = int(warmup * steps) if warmup_steps is None else int(warmup_steps)
    sched = build_scheduler(opt, warmup_steps=max(warm, 0), total_steps=max(steps, 1),
                            kind=schedule)
    draw = batches if callable(batches) else None
    stream: Iterator[dict[str, Any]] | None = None
    run = ToyRun()
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        if draw is not None:
            batch = draw(gen)
        else:
            batch = next(stream, None) if stream is not None else None
            if batch is None:
                stream = iter(batches)  # type: ignore[arg-type]
                batch = next(stream, None)
                if batch is None:
                    raise ValueError("fit: the batch source is empty")
        if device is not None:
            batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v
                     for k, v in batch.items()}
        losses = _as_losses(step_fn(model, batch, gen) if step_fn is not None else model(batch))
        opt.zero_grad(set_to_none=True)
        losses["loss"].backward()
        if clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
        opt.step()
        sched.step()
        if after_step is not None:
            after_step(step, batch)
        run.history.append({k: float(v.detach()) for k, v in losses.items()
                            if torch.is_tensor(v) and v.numel() == 1})
        run.samples += _batch_size(batch)
    run.seconds = time.perf_counter() - start
    model.eval()
    return run


def random_rows(data: Mapping[str, Any], batch_size: int,
                keys: Sequence[str] | None = ("video", "input_ids", "attention_mask",
                                              "video_index"),
                sample: SampleFn | None = None) -> Callable[[torch.Generator], dict[str, Any]]:
    """Batch source of :func:`fit`: ``batch_size`` random rows of a stacked cache's ``keys``
    (or ``sample(rows, generator)`` for custom batches, e.g. a random caption per clip)."""
    n = len(data["video"]) if "video" in data else len(next(iter(data.values())))

    def draw(gen: torch.Generator) -> dict[str, Any]:
        pick = torch.randperm(n, generator=gen)[:batch_size]
        return sample(pick, gen) if sample is not None else cached_batch(dict(data), pick, keys)

    return draw


def epochs(dataset: Any, batch_size: int, seed: int = 0, drop_last: bool = True
           ) -> Iterator[dict[str, Any]]:
    """Batch source of :func:`fit`: shuffled epochs of a dataset, endlessly (``set_epoch`` is
    called before each epoch, so redrawn fields such as captions change)."""
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True,
                        drop_last=drop_last, generator=gen,
                        collate_fn=getattr(dataset, "collate", None))
    epoch = 0
    while True:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def toy_optim(train: Mapping[str, Any], steps: int) -> dict[str, Any]:
    """:func:`fit`'s optimiser keywords from a chapter preset's ``train`` section (the keys
    :func:`vlbook.train.config_from_preset` maps for ``full`` runs): ``lr``, ``weight_decay``
    (0.05), ``betas`` ((0.9, 0.95)), ``schedule`` (cosine), ``clip_grad_norm`` (none),
    ``no_weight_decay`` and ``warmup_steps``, capped at a tenth of a short run (at least 1)."""
    warm = train.get("warmup_steps")
    cap = max(steps // 10, 1)
    return {"lr": float(train["lr"]), "weight_decay": float(train.get("weight_decay", 0.05)),
            "betas": tuple(train.get("betas", (0.9, 0.95))),
            "schedule": train.get("schedule", "cosine"),
            "clip_grad_norm": train.get("clip_grad_norm"),
            "no_weight_decay": tuple(train.get("no_weight_decay", ())),
            "warmup_steps": cap if warm is None else min(int(warm), cap)}


def train_on_cache(model: nn.Module, data: Mapping[str, Any], *, steps: int, batch_size: int,
                   lr: float, keys: Sequence[str] = ("video", "input_ids", "attention_mask",
                                                     "video_index"),
                   sample: SampleFn | None = None, **kwargs: Any) -> ToyRun:
    """:func:`fit` on :func:`random_rows` of a stacked cache (the other keywords are
    :func:`fit`'s)."""
    return fit(model, random_rows(data, batch_size, keys, sample), steps=steps, lr=lr, **kwargs)


__all__ = ["ToyRun", "epochs", "fit", "random_rows", "toy_optim", "train_on_cache"]
