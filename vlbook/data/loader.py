"""DataLoaders with deterministic per-worker seeding and a summary of skipped files.

``build_loader`` seeds the sampler's generator with ``seed``; each worker's Python, NumPy and
torch generators are seeded by :func:`seed_worker` from torch's per-worker seed (itself drawn
from that generator), so a run is reproducible for any ``num_workers``. vlbook's datasets also
draw their own randomness from ``(seed, epoch, index)``; the loader calls
``dataset.set_epoch(n)`` before its ``n``-th pass (or the value given to :meth:`set_epoch`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed ``random`` and NumPy from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class SkipSummary:
    """Counts the bad files skipped in batches (``batch["skipped"]``), across workers."""

    def __init__(self) -> None:
        self.reasons: dict[str, str] = {}
        self.events = 0

    def update(self, batch: dict[str, Any]) -> None:
        for path, reason in batch.get("skipped", []) or []:
            self.events += 1
            self.reasons.setdefault(path, reason)

    @property
    def num_files(self) -> int:
        return len(self.reasons)

    def by_reason(self) -> Counter:
        """How many distinct files failed for each reason (first line, no file name)."""
        return Counter(r.split(" (")[0] for r in self.reasons.values())

    def report(self) -> str:
        if not self.reasons:
            return "no bad files skipped"
        lines = [f"{self.num_files} bad file(s) skipped ({self.events} time(s)):"]
        lines += [f"  {path}: {reason}" for path, reason in sorted(self.reasons.items())]
        return "\n".join(lines)


class VLDataLoader(DataLoader):
    """A DataLoader that sets the dataset's epoch per pass and keeps a :class:`SkipSummary`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_summary = SkipSummary()
        self._epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch of the next pass (for resuming). A custom sampler is left to its owner."""
        self._epoch = int(epoch)

    def __iter__(self) -> Iterator[Any]:
        epoch = self._epoch
        self._epoch += 1
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)
        if self.generator is not None and getattr(self, "_vl_seed", None) is not None:
            self.generator.manual_seed(self._vl_seed + epoch)
        for batch in super().__iter__():
            if isinstance(batch, dict):
                self.skip_summary.update(batch)
            yield batch


def build_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    sampler: Sampler | None = None,
    drop_last: bool = False,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> VLDataLoader:
    """A :class:`VLDataLoader` whose order, per-worker seeds and samples depend only on ``seed``.

    Pass your own ``sampler`` (e.g. a resumable distributed one) with ``shuffle=False``.
    ``collate_fn`` defaults to ``dataset.collate`` when the dataset has one.
    """
    if sampler is not None and shuffle:
        raise ValueError("build_loader: give either shuffle=True or a sampler, not both")
    generator = torch.Generator()
    generator.manual_seed(seed)
    if collate_fn is None:
        collate_fn = getattr(dataset, "collate", None)
    loader = VLDataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_fn,
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=False,
    )
    loader._vl_seed = seed
    return loader
