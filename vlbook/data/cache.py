"""Decoded-once clip caches for toy runs: the same few thousand clips are reused many times.

Toy chapters train for a few hundred steps over the same clips; decoding mp4 files at every
step would dominate the run. :func:`cache_dataset` decodes a dataset once into stacked tensors
(``video`` ``(N, T, C, H, W)``, token ids, labels); :func:`cached_batch` draws a batch from
such a cache.
"""

from __future__ import annotations

from typing import Any

import torch


def cache_dataset(dataset: Any, max_items: int | None = None, batch_size: int = 64
                  ) -> dict[str, Any]:
    """Decode ``dataset`` (or its first ``max_items``) once into stacked tensors.

    Tensor fields are concatenated along the first axis, list fields (``text``, ``options``)
    flattened into one list per field; ``skipped`` (bad files replaced in a batch) is dropped.
    """
    from torch.utils.data import DataLoader, Subset

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


__all__ = ["cache_dataset", "cached_batch"]
