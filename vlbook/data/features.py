"""Pre-extracted video features (VLM): one 512-d vector per second, stored as ``.npy``.

VLM (MMPT) never sees pixels: its video tokens are HowTo100M S3D features, one per second (VLM
§3.1; the book's *Paper vs code* page, ``book/paper_vs_code.md``). A ``feature_text`` record
names a per-video feature file ``(seconds, D)`` and the video's timed captions (ASR
sentences)::

    {"video_id": "abc", "features": "features/abc.npy",
     "captions": ["...", "..."], "starts": [0.0, 3.2], "ends": [3.2, 7.9]}

A sample is one caption with the features of its time span (``floor(start)`` to
``ceil(end)`` seconds), padded or cut to ``max_video_len`` (32 in VLM)::

    video_features  float (T, D)   video_mask  bool (T,)   + text, input_ids, attention_mask

Bad feature files (missing, unreadable, wrong shape) are skipped like bad videos.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlbook.data.annotations import media_root, read_jsonl
from vlbook.data.datasets import DATASETS, collate_video_text
from vlbook.data.tokenizer import load_tokenizer, tokenize

FEATURE_DIM = 512


class FeatureFileError(RuntimeError):
    def __init__(self, path: str | Path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read features {path}: {reason}")


def load_features(path: str | Path, dim: int | None = FEATURE_DIM) -> np.ndarray:
    """A ``(seconds, dim)`` float32 array from ``.npy``; :class:`FeatureFileError` if invalid."""
    path = Path(path)
    if not path.is_file():
        raise FeatureFileError(path, "file does not exist")
    if path.stat().st_size == 0:
        raise FeatureFileError(path, "zero-byte file")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise FeatureFileError(path, f"not a readable .npy ({err})") from err
    if arr.ndim != 2 or (dim is not None and arr.shape[1] != dim) or arr.shape[0] == 0:
        raise FeatureFileError(path, f"expected shape (seconds, {dim}), got {arr.shape}")
    return arr.astype(np.float32, copy=False)


@DATASETS.register("feature_text")
class FeatureTextDataset(Dataset):
    """Caption + per-second features of its time span (VLM pre-training and fine-tuning).

    One sample per caption (``items``); ``train`` draws a random span jitter of up to one
    second at each end, evaluation uses the annotated span.
    """

    def __init__(
        self,
        annotation: str | Path,
        *,
        split: str = "train",
        tokenizer: Any = None,
        max_len: int = 61,
        max_video_len: int = 32,
        feature_dim: int = FEATURE_DIM,
        media_root: str | Path | None = None,
        seed: int = 0,
        max_retries: int = 10,
    ) -> None:
        self.annotation = Path(annotation)
        self.train = split == "train"
        self.root = Path(media_root) if media_root else _root(self.annotation)
        self.records = read_jsonl(self.annotation, "feature_text")
        self.items = [(i, k) for i, r in enumerate(self.records) for k in range(len(r["captions"]))]
        self.tokenizer = (
            load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        )
        self.max_len, self.max_video_len, self.dim = max_len, max_video_len, feature_dim
        self.seed, self.epoch, self.max_retries = seed, 0, max_retries
        self._bad: dict[str, str] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _sample(self, index: int, rng: np.random.Generator) -> dict[str, Any]:
        rec_index, k = self.items[index]
        rec = self.records[rec_index]
        path = self.root / rec["features"]
        feats = load_features(path, self.dim)
        start, end = float(rec["starts"][k]), float(rec["ends"][k])
        if self.train:
            start = max(0.0, start - rng.uniform(0, 1))
            end = end + rng.uniform(0, 1)
        first = min(int(np.floor(start)), len(feats) - 1)
        last = min(max(int(np.ceil(end)), first + 1), len(feats), first + self.max_video_len)
        chunk = feats[first:last]
        video = np.zeros((self.max_video_len, self.dim), dtype=np.float32)
        video[: len(chunk)] = chunk
        mask = np.zeros(self.max_video_len, dtype=bool)
        mask[: len(chunk)] = True
        text = rec["captions"][k]
        out: dict[str, Any] = {
            "video_features": torch.from_numpy(video),
            "video_mask": torch.from_numpy(mask),
            "video_index": rec_index,
            "text": text,
            "start": start,
            "end": end,
        }
        if self.tokenizer is not None:
            ids, att = tokenize(self.tokenizer, [text], self.max_len)
            out["input_ids"], out["attention_mask"] = ids[0], att[0]
        return out

    def __getitem__(self, index: int) -> dict[str, Any]:
        skipped: list[tuple[str, str]] = []
        item = index
        for attempt in range(self.max_retries + 1):
            rng = np.random.default_rng([self.seed, self.epoch, index, attempt])
            path = str(self.root / self.records[self.items[item][0]]["features"])
            if path not in self._bad:
                try:
                    sample = self._sample(item, rng)
                    sample["skipped"] = skipped
                    return sample
                except FeatureFileError as err:
                    self._bad[path] = err.reason
                    warnings.warn(f"skipping {err.path}: {err.reason}", stacklevel=2)
            skipped.append((path, self._bad[path]))
            item = int(rng.integers(len(self.items)))
        raise RuntimeError(f"{self.annotation}: {len(skipped)} feature files in a row failed")

    collate = staticmethod(collate_video_text)


def _root(annotation: Path) -> Path:
    return media_root(annotation)


def write_features(path: str | Path, features: np.ndarray) -> Path:
    """Save ``(seconds, D)`` features as float32 ``.npy`` (creating folders)."""
    arr = np.asarray(features, dtype=np.float32)
    if arr.ndim != 2:
        raise ValueError(f"features should be (seconds, D), got {arr.shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return path
