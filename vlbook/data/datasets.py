"""Datasets over vlbook's unified annotations: one loading path for synthetic and real data.

Each dataset reads one JSON Lines file (:mod:`vlbook.data.annotations`), resolves media paths
against the file's folder, samples frames (:mod:`vlbook.data.sampling`), transforms them
(:mod:`vlbook.data.transforms`) and tokenises text. Samples are dicts; ``collate`` builds the
batch convention::

    video           float (B, T, C, H, W), ImageNet-normalised
    input_ids       long  (B, L)      attention_mask  long (B, L)
    video_index     long  (B,)        index of the clip in the annotation file
    text            list[str]
    + task fields: label (B,), options / option_ids (B, K, L), frame_labels (B, T), steps ...
    skipped         list[(path, reason)] of files skipped while building this batch

Bad files (zero-byte, truncated, not a video, unsupported codec) never stop training: the
sample is replaced by another one (drawn deterministically), a warning names the file once per
process, and the skip is carried in the batch so that :class:`vlbook.data.loader.SkipSummary`
can count it across worker processes. Files listed in the dataset's quarantine list
(``quarantine.jsonl``, written by ``vlbook-data verify``) are dropped at load time.

Randomness (frame choice, crops, caption choice) comes from a generator seeded by
``(seed, epoch, index)``: samples do not depend on the number of workers or on the order in
which they are drawn, and ``set_epoch`` changes them from one epoch to the next.
"""

from __future__ import annotations

import io
import json
import tarfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from vlbook.data.annotations import media_root, read_jsonl
from vlbook.data.registry import REAL_DATASETS, dataset_dir
from vlbook.data.sampling import sample_indices
from vlbook.data.tokenizer import load_tokenizer, tokenize
from vlbook.data.transforms import VideoTransform
from vlbook.data.video import VideoDecodeError, frame_span, read_video
from vlbook.registry import Registry

DATASETS: Registry = Registry("dataset")

QUARANTINE_FILE = "quarantine.jsonl"


#: The annotation task each dataset builder reads (``<task>_<split>.jsonl``), for datasets given
#: by name (``datasets=[...]``) rather than by annotation file.
BUILDER_TASKS: dict[str, str] = {
    "video_text": "retrieval", "video_mc": "mc", "video_qa": "qa",
    "video_classification": "classification", "video_frame_labels": "frame_labels",
    "video_steps": "steps", "image_text": "image_text", "feature_text": "feature_text",
}


class ConcatVideoDataset(torch.utils.data.ConcatDataset):
    """Several prepared datasets read as one (e.g. WebVid + CC3M), with their ``collate`` and
    ``set_epoch`` passed through."""

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        return self.datasets[0].collate(samples)

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


def build_dataset(name: str, **kwargs: Any) -> Dataset:
    """Create the dataset registered as ``name`` (see ``DATASETS.names()``).

    Give the data either as ``annotation=<file>`` or as ``datasets=[<registry name>, ...]``
    (real datasets prepared by ``vlbook-data prepare``, see :data:`vlbook.data.REAL_DATASETS`):
    each name resolves to ``<data_root>/<name>/<task>_<split>.jsonl``, ``task`` being the one
    the builder reads (:data:`BUILDER_TASKS`); several datasets are read as one. A dataset that
    is not prepared stops with the file that is missing and the commands that make it.
    """
    datasets = kwargs.pop("datasets", None)
    if datasets is None or "annotation" in kwargs:
        return DATASETS.create(name, **kwargs)
    if isinstance(datasets, str):
        datasets = [datasets]
    task = BUILDER_TASKS.get(name)
    if task is None:
        raise ValueError(f"build_dataset({name!r}, datasets=...): {name!r} does not read a "
                         f"task file; give annotation=<file> instead")
    split = kwargs.get("split", "train")
    parts = []
    for dataset in datasets:
        spec = REAL_DATASETS.get(dataset)
        if spec is None:
            raise ValueError(f"datasets: {dataset!r} is not a dataset vlbook can prepare; known: "
                             f"{sorted(REAL_DATASETS)}")
        annotation = dataset_dir(dataset) / f"{task}_{split}.jsonl"
        if not spec.offers(annotation.name):
            offered = ", ".join([*spec.annotations, *spec.optional]) or "nothing"
            raise ValueError(f"datasets: {dataset!r} offers {offered}, not the {task!r} "
                             f"annotations that {name!r} reads ({annotation.name})")
        if not annotation.is_file() and annotation.name in spec.optional:
            raise FileNotFoundError(
                f"{annotation} does not exist: it is written by `vlbook-data prepare {dataset}` "
                f"when {dataset_dir(dataset) / 'raw'} holds {spec.optional[annotation.name]}; "
                "put the file there and prepare again (with --overwrite if the other "
                "annotations exist)")
        if not annotation.is_file():
            raise FileNotFoundError(
                f"{annotation} does not exist: {spec.title} is not prepared. Run "
                f"`vlbook-data info {dataset}` (sources, licence), `vlbook-data download "
                f"{dataset}` where the files are public, then `vlbook-data prepare {dataset}` "
                f"(see data_scripts/README.md); set $VLBOOK_DATA if your copy lives elsewhere.")
        parts.append(DATASETS.create(name, annotation=annotation, **kwargs))
    return parts[0] if len(parts) == 1 else ConcatVideoDataset(parts)


def read_quarantine(path: str | Path) -> dict[str, str]:
    """``{resolved path: reason}`` from a quarantine list (empty when the file is absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    root = path.resolve().parent
    out = {}
    for rec in read_jsonl(path):
        if "path" not in rec:
            continue
        out[str((root / rec["path"]).resolve())] = str(rec.get("reason", ""))
    return out


def collate_video_text(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack tensors, turn ints/floats into tensors, keep the rest as lists; merge ``skipped``."""
    if not samples:
        raise ValueError("collate_video_text got an empty list of samples")
    batch: dict[str, Any] = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if key == "skipped":
            batch[key] = [item for v in values for item in v]
        elif isinstance(values[0], torch.Tensor):
            same = all(v.shape == values[0].shape for v in values)
            batch[key] = torch.stack(values) if same else values  # e.g. varying step counts
        elif isinstance(values[0], bool):
            batch[key] = torch.tensor(values, dtype=torch.bool)
        elif isinstance(values[0], (int, np.integer)):
            batch[key] = torch.tensor(values, dtype=torch.long)
        elif isinstance(values[0], float):
            batch[key] = torch.tensor(values, dtype=torch.float32)
        else:
            batch[key] = values
    return batch


class AnnotatedVideoDataset(Dataset):
    """Base of the video datasets: annotations, quarantine, frames, skipping of bad files.

    Args:
        annotation: a ``.jsonl`` file in the unified format.
        split: ``"train"`` samples randomly (random frame per segment, random crop/caption);
            anything else is deterministic (middle frames, centre crop, first caption).
        num_frames, size: frames per clip and output side (pixels).
        sampling, stride: see :func:`vlbook.data.sampling.sample_indices`.
        crop, flip: see :class:`vlbook.data.transforms.VideoTransform`.
        tokenizer: a transformers tokenizer, a name/path for
            :func:`~vlbook.data.tokenizer.load_tokenizer`, or ``None`` (no token ids).
        max_len: token sequence length (padded/truncated).
        media_root: folder the media paths are relative to (default: the annotation's folder).
        quarantine: a quarantine list; ``"auto"`` reads ``<media_root>/quarantine.jsonl``.
        backend: video reader (``auto``, ``decord``, ``pyav``).
        seed: base seed of the per-sample generators.
    """

    task = "retrieval"
    media_field = "video"

    def __init__(
        self,
        annotation: str | Path,
        *,
        split: str = "train",
        num_frames: int = 8,
        size: int = 224,
        tokenizer: Any = None,
        max_len: int = 32,
        sampling: str = "segment",
        stride: int = 1,
        crop: str = "resize",
        flip: bool = False,
        media_root: str | Path | None = None,
        quarantine: str | Path | None = "auto",
        backend: str = "auto",
        seed: int = 0,
        max_retries: int = 10,
        train: bool | None = None,
    ) -> None:
        self.annotation = Path(annotation)
        self.split = split
        self.train = (split == "train") if train is None else train
        self.num_frames, self.size = num_frames, size
        self.sampling, self.stride, self.backend = sampling, stride, backend
        self.max_len, self.seed, self.max_retries = max_len, seed, max_retries
        self.epoch = 0
        self.root = Path(media_root).resolve() if media_root else _media_root(self.annotation)
        self.tokenizer = (
            load_tokenizer(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
        )
        self.transform = VideoTransform(size, train=self.train, crop=crop, flip=flip)
        records = read_jsonl(self.annotation, self.task)
        if quarantine == "auto":
            quarantine = self.root / QUARANTINE_FILE
        self.quarantined = read_quarantine(quarantine) if quarantine else {}
        kept = [r for r in records if self.media_path(r) not in self.quarantined]
        if len(kept) < len(records):
            warnings.warn(
                f"{self.annotation}: {len(records) - len(kept)} record(s) skipped because their "
                f"file is in the quarantine list {quarantine}",
                stacklevel=2,
            )
        if not kept:
            raise ValueError(f"{self.annotation}: no usable records")
        self.records = kept
        self._bad: dict[str, str] = {}
        self.items = self._build_items()

    # -- overridable --------------------------------------------------------------------
    def _build_items(self) -> list[tuple[int, int]]:
        """``(record index, sub-index)`` pairs; one per record by default."""
        return [(i, 0) for i in range(len(self.records))]

    def _fields(self, rec: dict, sub: int, rng: np.random.Generator) -> dict[str, Any]:
        """Task fields of a sample (text, labels)."""
        return {}

    # -- machinery ----------------------------------------------------------------------
    def media_path(self, rec: dict) -> str:
        return str((self.root / rec[self.media_field]).resolve())

    def set_epoch(self, epoch: int) -> None:
        """Change the random draws of every sample (called by the loader each epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _rng(self, index: int, attempt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index, attempt])

    def sample_fields(self, index: int) -> dict[str, Any]:
        """Sample ``index`` without its frames: ``video_index`` and the task fields (text,
        labels) drawn for this epoch (what :class:`vlbook.data.cache.ClipCache` redraws)."""
        rec_index, sub = self.items[index]
        return {"video_index": rec_index,
                **self._fields(self.records[rec_index], sub, self._rng(index))}

    def load_frames(self, rec: dict, rng: np.random.Generator) -> torch.Tensor:
        """Decoded, sampled, transformed frames ``(T, C, H, W)`` of a record."""
        path = self.media_path(rec)
        # a clip in seconds: map it with the frames' timestamps (variable-frame-rate files)
        # (and steps in seconds, which StepsDataset places on the sampled frames)
        clipped = (rec.get("start") is not None or rec.get("end") is not None
                   or bool(rec.get("steps")))

        def choose(info):
            first, last = frame_span(info, rec.get("start"), rec.get("end"))
            idx = sample_indices(
                self.sampling,
                last - first,
                self.num_frames,
                train=self.train,
                rng=rng,
                stride=self.stride,
            )
            return [first + i for i in idx]

        frames, self._last_indices, self._last_info = read_video(
            path, choose, self.backend, frame_times=clipped
        )
        return self.transform(frames, rng)

    def _tokens(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return tokenize(self.tokenizer, texts, self.max_len)

    def __getitem__(self, index: int) -> dict[str, Any]:
        skipped: list[tuple[str, str]] = []
        rng = self._rng(index)
        item = index
        for attempt in range(self.max_retries + 1):
            rec_index, sub = self.items[item]
            rec = self.records[rec_index]
            path = self.media_path(rec)
            if path not in self._bad:
                try:
                    sample = {"video": self.load_frames(rec, rng), "video_index": rec_index}
                    sample.update(self._fields(rec, sub, rng))
                    sample["skipped"] = skipped
                    return sample
                except VideoDecodeError as err:
                    self._bad[path] = err.reason
                    warnings.warn(f"skipping {err.path}: {err.reason}", stacklevel=2)
            skipped.append((path, self._bad[path]))
            rng = self._rng(index, attempt + 1)
            item = int(rng.integers(len(self.items)))
        raise RuntimeError(
            f"{self.annotation}: {self.max_retries + 1} files in a row failed to decode "
            f"(last: {skipped[-1][0]}: {skipped[-1][1]}); run `vlbook-data verify` on the "
            "dataset and check the video backend"
        )

    collate = staticmethod(collate_video_text)

    def skip_summary(self) -> dict[str, str]:
        """Files this process skipped so far: ``{path: reason}``."""
        return dict(self._bad)


def _tar_member(path: str) -> tuple[str | None, str]:
    """``(shard, member)`` of a ``<shard>.tar#<member>`` media path, else ``(None, "")``."""
    shard, sep, member = path.partition(".tar#")
    return (shard + ".tar", member) if sep else (None, "")


def _media_root(annotation: Path) -> Path:
    return media_root(annotation)


@DATASETS.register("video_text")
class VideoTextDataset(AnnotatedVideoDataset):
    """Video + caption pairs (retrieval, captioning, pre-training): ``captions`` field.

    ``caption_mode``: ``"random"`` (one sample per clip, a random caption — training default),
    ``"first"`` (one per clip, its first caption — evaluation default; MSR-VTT 1k-A has one
    caption per clip) or ``"all"`` (one sample per caption; ``video_index`` tells which clip).
    """

    task = "retrieval"

    def __init__(self, annotation: str | Path, *, caption_mode: str | None = None, **kw: Any):
        kw_split = kw.get("split", "train")
        self.caption_mode = caption_mode or ("random" if kw_split == "train" else "first")
        if self.caption_mode not in ("random", "first", "all"):
            raise ValueError(f"caption_mode {caption_mode!r}; choose random, first or all")
        super().__init__(annotation, **kw)

    def _build_items(self) -> list[tuple[int, int]]:
        if self.caption_mode == "all":
            return [(i, k) for i, r in enumerate(self.records) for k in range(len(r["captions"]))]
        return super()._build_items()

    def _fields(self, rec: dict, sub: int, rng: np.random.Generator) -> dict[str, Any]:
        caps = rec["captions"]
        if self.caption_mode == "random":
            sub = int(rng.integers(len(caps)))
        elif self.caption_mode == "first":
            sub = 0
        text = caps[sub]
        out: dict[str, Any] = {"text": text, "caption_index": sub}
        if self.tokenizer is not None:
            ids, mask = self._tokens([text])
            out["input_ids"], out["attention_mask"] = ids[0], mask[0]
        return out

    def texts(self) -> list[tuple[int, str]]:
        """Every ``(clip index, caption)`` pair, for text-side retrieval evaluation."""
        return [(i, c) for i, r in enumerate(self.records) for c in r["captions"]]


@DATASETS.register("video_mc")
class MultipleChoiceDataset(AnnotatedVideoDataset):
    """Multiple choice (MSR-VTT MC, synthetic ``mc``): ``options`` + ``answer`` index.

    Adds ``options`` (list[str]), ``label`` (answer index) and, with a tokenizer,
    ``option_ids`` / ``option_mask`` ``(K, L)``.
    """

    task = "mc"

    def _fields(self, rec: dict, sub: int, rng: np.random.Generator) -> dict[str, Any]:
        out: dict[str, Any] = {"options": list(rec["options"]), "label": int(rec["answer"])}
        out["text"] = rec.get("question", "")
        if "option_attributes" in rec:
            out["option_attributes"] = rec["option_attributes"]
        if self.tokenizer is not None:
            out["option_ids"], out["option_mask"] = self._tokens(rec["options"])
        return out


def _answer_vocab(annotation: Path, answers: Any) -> list[str] | None:
    if answers is None:
        candidate = annotation.resolve().parent / "answers.json"
        if not candidate.is_file():
            return None
        answers = candidate
    if isinstance(answers, (str, Path)):
        return list(json.loads(Path(answers).read_text()))
    return list(answers)


@DATASETS.register("video_qa")
class OpenQADataset(AnnotatedVideoDataset):
    """Open-ended QA (MSRVTT-QA, synthetic ``qa``): ``question`` + ``answer`` text.

    ``label`` is the answer's index in the answer vocabulary (``answers`` list or file;
    default ``answers.json`` next to the annotation), or -100 when the answer is outside it.
    Count those as wrong: All-in-one drops them from the denominator, which inflates accuracy.
    """

    task = "qa"

    def __init__(self, annotation: str | Path, *, answers: Any = None, **kw: Any) -> None:
        self.answers = _answer_vocab(Path(annotation), answers)
        self._answer_index = {a: i for i, a in enumerate(self.answers or [])}
        super().__init__(annotation, **kw)

    def _fields(self, rec: dict, sub: int, rng: np.random.Generator) -> dict[str, Any]:
        out: dict[str, Any] = {
            "text": rec["question"],
            "answer": rec["answer"],
            "label": self._answer_index.get(rec["answer"], -100),
        }
        if "temporal" in rec:
            out["temporal"] = bool(rec["temporal"])
        if self.tokenizer is not None:
            ids, mask = self._tokens([rec["question"]])
            out["input_ids"], out["attention_mask"] = ids[0], mask[0]
        return out


@DATASETS.register("video_classification")
class ClassificationDataset(AnnotatedVideoDataset):
    """Clip classification (Kinetics-400/710, synthetic ``classification``): ``label``."""

    task = "classification"

    def _fields(self, rec: dict, sub: int, rng: np.random.Generator) -> dict[str, Any]:
        return {"label": int(rec["label"]), "text": rec.get("label_name", str(rec["label"]))}


@DATASETS.register("video_frame_labels")
class FrameLabelDataset(AnnotatedVideoDataset):
    """Per-frame action labels (COIN-like segmentation): ``frame_labels`` of the sampled frames.

    The record's ``frame_labels`` has one entry per frame of the video; the sample carries the
    labels of the frames actually sampled, ``(T,)`` long.
    """

    task = "frame_labels"

    def _fields(self, rec: dict, sub: int, rng: np.random.Generator) -> dict[str, Any]:
        labels = rec["frame_labels"]
        idx = [min(i, len(labels) - 1) for i in self._last_indices]
        return {
            "frame_labels": torch.tensor([labels[i] for i in idx], dtype=torch.long),
            "frame_indices": torch.tensor(idx, dtype=torch.long),
        }


@DATASETS.register("video_steps")
class StepsDataset(AnnotatedVideoDataset):
    """Clips with ordered steps (CrossTask-like localisation): ``steps`` [{text, start, end}].

    Adds ``steps`` (list[str]), ``step_times`` ``(S, 2)`` seconds and, per sampled frame,
    ``frame_step`` ``(T,)``: the index of the step under way (-1 when none).
    """

    task = "steps"

    def _fields(self, rec: dict, sub: int, rng: np.random.Generator) -> dict[str, Any]:
        steps = rec["steps"]
        times = torch.tensor([[float(s["start"]), float(s["end"])] for s in steps])
        fps = self._last_info.fps or 1.0
        stamps = self._last_info.frame_times  # each frame's own time (variable frame rates)
        frame_step = []
        for i in self._last_indices:
            t = float(stamps[i]) if stamps is not None else i / fps
            inside = [k for k, s in enumerate(steps) if s["start"] <= t < s["end"]]
            frame_step.append(inside[-1] if inside else -1)
        return {
            "steps": [s["text"] for s in steps],
            "step_times": times,
            "frame_step": torch.tensor(frame_step, dtype=torch.long),
        }


@DATASETS.register("image_text")
class ImageTextDataset(AnnotatedVideoDataset):
    """Images with captions (CC3M, synthetic ``image_text``) as single-frame videos.

    ``video`` is ``(num_frames, C, H, W)`` with the image repeated (default ``num_frames=1``),
    so image-text batches go through the same model path (UMT stage 2 co-training).
    """

    task = "image_text"
    media_field = "image"

    def __init__(self, annotation: str | Path, **kw: Any) -> None:
        kw.setdefault("num_frames", 1)
        super().__init__(annotation, **kw)

    def load_frames(self, rec: dict, rng: np.random.Generator) -> torch.Tensor:
        from PIL import Image, UnidentifiedImageError

        path = self.media_path(rec)
        try:
            shard, member = _tar_member(path)
            if shard is not None:  # img2dataset's webdataset shards: "00000.tar#000000012.jpg"
                data = self._read_member(shard, member)
                if not data:
                    raise VideoDecodeError(path, "zero-byte tar member")
                source: Any = io.BytesIO(data)
            elif Path(path).stat().st_size == 0:
                raise VideoDecodeError(path, "zero-byte file")
            else:
                source = path
            with Image.open(source) as img:
                frame = np.asarray(img.convert("RGB"))
        except KeyError as err:
            raise VideoDecodeError(path, f"no member {member!r} in the tar shard") from err
        except tarfile.TarError as err:
            raise VideoDecodeError(path, f"not a readable tar shard ({err})") from err
        except FileNotFoundError as err:
            raise VideoDecodeError(path, "file does not exist") from err
        except (UnidentifiedImageError, OSError) as err:
            raise VideoDecodeError(path, f"not a readable image ({err})") from err
        self._last_indices = [0] * self.num_frames
        frames = np.repeat(frame[None], self.num_frames, axis=0)
        return self.transform(frames, rng)

    def _read_member(self, shard: str, member: str) -> bytes:
        """Bytes of ``member`` of the tar ``shard`` (each shard's index is read once)."""
        tars = self.__dict__.setdefault("_tars", {})
        if shard not in tars:
            tars[shard] = tarfile.open(shard)
        handle = tars[shard].extractfile(tars[shard].getmember(member))
        return handle.read() if handle is not None else b""

    def __getstate__(self) -> dict[str, Any]:  # open shards are not sent to loader workers
        state = dict(self.__dict__)
        state.pop("_tars", None)
        return state

    def _fields(self, rec: dict, sub: int, rng: np.random.Generator) -> dict[str, Any]:
        caps = rec["captions"]
        text = caps[int(rng.integers(len(caps)))] if self.train else caps[0]
        out: dict[str, Any] = {"text": text}
        if self.tokenizer is not None:
            ids, mask = self._tokens([text])
            out["input_ids"], out["attention_mask"] = ids[0], mask[0]
        return out
