"""The in-memory clip cache of toy runs: decode each clip once, reuse it for every step.

Toy chapters train for a few hundred steps over the same few thousand clips; decoding mp4
files at every step would cost as much as the model. One mechanism, two ways to hold it:

- :class:`ClipCache` wraps a dataset and keeps the fields named in ``keep`` (the decoded
  ``video`` by default) after a sample's first read; the other fields (a caption drawn at
  random, its tokens) are still drawn anew at each access through the dataset's
  ``sample_fields``. ``keep=None`` keeps whole samples (for datasets whose samples never
  change, e.g. pre-extracted features with clip-long captions).
- Stacked tensors: :func:`cache_dataset` decodes a dataset into one tensor per field
  (``video`` ``(N, T, C, H, W)``, token ids, labels), :func:`cached_batch` draws rows from it,
  and :class:`StackedClips` is a dataset view over such a cache whose caption fields hold
  ``K`` alternatives per clip (``(N, K, L)``), one of them drawn per access.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset


class ClipCache(Dataset):
    """``dataset`` with the fields ``keep`` of each sample kept in memory after its first read.

    Later reads of a kept sample return the stored fields with the dataset's other fields for
    that index drawn again (``dataset.sample_fields(index)``: the caption is redrawn at every
    epoch, the frames of the first draw are reused — no temporal jitter). ``keep=None`` stores
    whole samples; ``eager=True`` reads every sample at construction. A sample whose file was
    replaced by another (``skipped`` not empty) is returned but not stored, so the clip is
    decoded again next time. ``items``, ``collate`` and ``set_epoch`` are the dataset's.
    """

    def __init__(self, dataset: Any, keep: Sequence[str] | None = ("video",),
                 eager: bool = False) -> None:
        if keep is not None and not callable(getattr(dataset, "sample_fields", None)):
            raise TypeError(f"ClipCache(keep={tuple(keep)}): {type(dataset).__name__} has no "
                            "sample_fields(index) to redraw the other fields; pass keep=None "
                            "to keep whole samples")
        self.dataset = dataset
        self.keep = None if keep is None else tuple(keep)
        self.stored: dict[int, dict[str, Any]] = {}
        if eager:
            for index in range(len(dataset)):
                self[index]

    @property
    def items(self) -> list[Any]:
        return list(getattr(self.dataset, "items", range(len(self.dataset))))

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.dataset.collate(samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if index in self.stored:
            kept = self.stored[index]
            if self.keep is None:
                return kept
            return {**kept, **self.dataset.sample_fields(index), "skipped": []}
        sample = self.dataset[index]
        if not sample.get("skipped"):
            self.stored[index] = sample if self.keep is None else {
                k: sample[k] for k in self.keep}
        return sample


class StackedClips(Dataset):
    """A dataset view over stacked tensors (a :func:`cache_dataset`-style dict).

    Fields in ``choices`` hold ``K`` alternatives per clip on their second axis (tensors
    ``(N, K, ...)`` or lists of ``K``-lists, e.g. the captions of each clip and their tokens);
    each access returns one of them, drawn at random when ``random_choice``, else the first.
    Half-precision tensors are returned as float32.
    """

    def __init__(self, data: dict[str, Any],
                 choices: Sequence[str] = ("input_ids", "attention_mask", "text"),
                 random_choice: bool = True) -> None:
        lengths = {k: len(v) for k, v in data.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"StackedClips: fields of different lengths {lengths}; expected "
                             "one row per clip in every field")
        self.data = data
        self.choices = tuple(c for c in choices if c in data)
        self.random_choice = random_choice

    def __len__(self) -> int:
        return len(next(iter(self.data.values())))

    @property
    def num_choices(self) -> int:
        first = self.data[self.choices[0]] if self.choices else None
        return 1 if first is None else len(first[0])

    def __getattr__(self, name: str) -> Any:
        data = self.__dict__.get("data")
        if data is not None and name in data:
            return data[name]
        raise AttributeError(name)

    @staticmethod
    def _row(value: Any, idx: torch.Tensor, choice: int | None) -> Any:
        if torch.is_tensor(value):
            out = value[idx] if choice is None else value[idx, choice]
            return out.float() if out.dtype == torch.float16 else out
        rows = [value[int(i)] for i in idx]
        return rows if choice is None else [r[choice] for r in rows]

    def batch(self, indices: Any, choice: int = 0) -> dict[str, Any]:
        """Clips ``indices`` as one batch, alternative ``choice`` of each choice field, plus
        their ``video_index``."""
        idx = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        out = {k: self._row(v, idx, choice if k in self.choices else None)
               for k, v in self.data.items()}
        out["video_index"] = idx
        return out

    def sample(self, batch_size: int, generator: torch.Generator) -> dict[str, Any]:
        """``batch_size`` random clips with one random alternative (the same for the batch)."""
        idx = torch.randperm(len(self), generator=generator)[:batch_size]
        choice = int(torch.randint(self.num_choices, (), generator=generator))
        return self.batch(idx, choice)

    def __getitem__(self, index: int) -> dict[str, Any]:
        choice = int(torch.randint(self.num_choices, ())) if self.random_choice else 0
        row = self.batch([index], choice)
        return {k: v[0] for k, v in row.items()}

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in samples[0]:
            values = [s[key] for s in samples]
            out[key] = (torch.stack(values) if torch.is_tensor(values[0]) else
                        torch.tensor(values) if isinstance(values[0], int) else values)
        return out


def cache_dataset(dataset: Any, max_items: int | None = None, batch_size: int = 64
                  ) -> dict[str, Any]:
    """Decode ``dataset`` (or its first ``max_items``) once into stacked tensors.

    Tensor fields are concatenated along the first axis, list fields (``text``, ``options``)
    flattened into one list per field; ``skipped`` (bad files replaced in a batch) is dropped.
    """
    if max_items is not None and max_items < len(dataset):
        dataset = Subset(dataset, range(max_items))
    collate = getattr(getattr(dataset, "dataset", dataset), "collate", None)
    parts: dict[str, list[Any]] = {}
    for batch in DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate):
        for key, value in batch.items():
            if key != "skipped":
                parts.setdefault(key, []).append(value)
    cached: dict[str, Any] = {}
    for key, values in parts.items():
        if torch.is_tensor(values[0]):
            cached[key] = torch.cat(values)
        elif isinstance(values[0], list):
            cached[key] = [x for v in values for x in v]
    return cached


def cached_batch(data: dict[str, Any], pick: torch.Tensor,
                 keys: tuple[str, ...] | list[str] | None = None) -> dict[str, Any]:
    """Rows ``pick`` of every tensor field of a cache (only ``keys`` when given)."""
    names = keys if keys is not None else [k for k, v in data.items() if torch.is_tensor(v)]
    return {k: data[k][pick] for k in names if k in data}


__all__ = ["ClipCache", "StackedClips", "cache_dataset", "cached_batch"]
