"""Building the model and the data of a run, and a resumable, rank-sharded sampler.

The sampler draws one seeded permutation per epoch (independent of every global generator),
shards it by rank and can start at an offset inside the epoch, so a resumed run reads exactly
the samples the interrupted one would have read next.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vlbook.data import build_dataset as registry_build
from vlbook.data.loader import build_loader
from vlbook.models import create_model
from vlbook.train.config import ComponentSpec, ConfigError

#: Datasets the trainer knows besides :data:`vlbook.data.DATASETS` (the debugging pairs live
#: beside the debugging model, which may not import the data package).
_TRAINER_DATASETS = {"debug_pairs": "vlbook.models.debug:debug_pairs"}
#: Components that moved from the model files to the chapter layer: configs saved by earlier
#: runs still name the old place, and resuming them must keep working.
_MOVED = {"vlbook.models.evilm:build_pretraining_model":
          "vlbook.chapters.evilm:build_pretraining_model"}


def import_object(path: str) -> Any:
    """``"package.module:attribute"`` -> the attribute."""
    if ":" not in path:
        raise ConfigError(f"{path!r}: expected 'package.module:function'")
    path = _MOVED.get(path, path)
    module_name, attr = path.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{path!r}: cannot import module {module_name!r} ({err})") from err
    if not hasattr(module, attr):
        raise ConfigError(f"{path!r}: module {module_name!r} has no attribute {attr!r}")
    return getattr(module, attr)


def build_model(spec: ComponentSpec) -> torch.nn.Module:
    """The model named by ``spec`` (registry name or ``module:function``)."""
    if not spec.name:
        raise ConfigError("model.name is empty: name a registered model or 'module:function'")
    if ":" in spec.name:
        return import_object(spec.name)(**spec.kwargs)
    return create_model(spec.name, **spec.kwargs)


def build_dataset(spec: ComponentSpec) -> Dataset:
    """The dataset named by ``spec``: ``module:function``, or ``vlbook.data.build_dataset``."""
    if not spec.name:
        raise ConfigError("data.name is empty: name a registered dataset or 'module:function'")
    if ":" in spec.name:
        return import_object(spec.name)(**spec.kwargs)
    if spec.name in _TRAINER_DATASETS:
        return import_object(_TRAINER_DATASETS[spec.name])(**spec.kwargs)
    return registry_build(spec.name, **spec.kwargs)


class ResumableSampler(Sampler[int]):
    """Seeded per-epoch permutation, sharded by rank, startable mid-epoch.

    With ``drop_last`` the permutation is cut to a multiple of ``num_replicas``; otherwise it
    is padded by wrapping around (as ``DistributedSampler`` does).
    """

    def __init__(
        self,
        num_samples: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = True,
    ) -> None:
        if num_samples < 1:
            raise ValueError("the dataset is empty")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} outside [0, {num_replicas})")
        self.num_samples = num_samples
        self.num_replicas = num_replicas
        self.rank = rank
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0

    @property
    def shard_size(self) -> int:
        if self.drop_last:
            return self.num_samples // self.num_replicas
        return -(-self.num_samples // self.num_replicas)

    def set_position(self, epoch: int, start: int = 0) -> None:
        """Select the epoch's permutation and skip the first ``start`` samples of this shard.

        (Deliberately not called ``set_epoch``: loaders that call ``sampler.set_epoch(n)`` on
        every pass would reset the start offset.)
        """
        if not 0 <= start <= self.shard_size:
            raise ValueError(f"start={start} outside [0, {self.shard_size}]")
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed + 1_000_003 * self.epoch)
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.shard_size * self.num_replicas
        if total > len(order):
            order = (order * (total // len(order) + 1))[:total]
        order = order[:total]
        return order[self.rank :: self.num_replicas]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.shard_size - self.start


def make_loader(
    dataset: Dataset,
    sampler: ResumableSampler,
    batch_size: int,
    *,
    num_workers: int = 0,
    seed: int = 0,
    collate_fn: Callable | None = None,
) -> DataLoader:
    """A DataLoader over ``sampler`` that never draws from the global torch generator.

    (A DataLoader without its own generator draws its workers' base seed from the global
    generator each time an iterator starts, which would make a resumed run diverge.)
    """
    collate_fn = (
        collate_fn or getattr(dataset, "collate", None) or getattr(dataset, "collate_fn", None)
    )
    generator = torch.Generator().manual_seed(seed + 7919 * sampler.epoch + sampler.start)
    loader = build_loader(
        dataset,
        batch_size,
        shuffle=False,
        seed=seed,
        num_workers=num_workers,
        sampler=sampler,
        drop_last=True,
        collate_fn=collate_fn,
    )
    if getattr(loader, "generator", None) is None:
        loader.generator = generator
    if hasattr(loader, "set_epoch"):
        loader.set_epoch(sampler.epoch)  # datasets draw augmentation from (seed, epoch, index)
    return loader


def move_to(batch: Any, device: torch.device) -> Any:
    """Move every tensor in a (nested) batch to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: move_to(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        return type(batch)(move_to(v, device) for v in batch)
    return batch
