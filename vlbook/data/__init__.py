"""Data: the synthetic benchmark, real dataset preparation and robust video loading.

Toy and full runs share one loading path and differ only in the annotation file they read.

Unified annotation format
-------------------------
JSON Lines (``.jsonl``), one record per line, one file per task and split
(``<task>_<split>.jsonl``). Media paths are relative to the folder holding the annotation file
(the dataset root). Required fields per task (:data:`vlbook.data.annotations.TASK_FIELDS`):

================  ==========================================  =================================
task              required fields                             dataset (``build_dataset`` name)
================  ==========================================  =================================
retrieval         video, video_id, captions (list[str])       ``video_text``
caption           video, video_id, captions                   ``video_text``
mc                video, video_id, options (list[str]),       ``video_mc``
                  answer (int, index into options)
qa                video, video_id, question, answer (str)     ``video_qa``
frame_labels      video, video_id, frame_labels (list[int],   ``video_frame_labels``
                  one per video frame)
steps             video, video_id, steps ([{text, start,      ``video_steps``
                  end}], seconds)
classification    video, video_id, label (int)                ``video_classification``
image_text        image, image_id, captions                   ``image_text``
feature_text      video_id, features (.npy), captions,        ``feature_text``
                  starts, ends (seconds)
================  ==========================================  =================================

Optional: ``start``/``end`` (seconds; a clip inside a longer video), ``label_name``,
``answer_type``, ``temporal``, ``option_attributes``, ``split_note``. A record missing a
required field fails at load time naming file, line and field.

Batches (``dataset.collate`` = :func:`collate_video_text`): ``video`` float (B, T, C, H, W)
ImageNet-normalised; ``input_ids``/``attention_mask`` long (B, L); ``video_index`` long (B,);
``text`` list[str]; task fields (``label``, ``options``, ``option_ids``, ``frame_labels``,
``steps`` ...); ``skipped`` (bad files replaced while building the batch). Feature datasets
give ``video_features`` (B, T, 512) and ``video_mask`` (B, T) instead of ``video``.

Modules: :mod:`.synthetic` (benchmark), :mod:`.video` (decord/PyAV readers), :mod:`.sampling`,
:mod:`.transforms`, :mod:`.tokenizer`, :mod:`.annotations`, :mod:`.datasets`, :mod:`.features`,
:mod:`.loader`, :mod:`.registry` (real datasets), :mod:`.prepare` (converters, downloads),
:mod:`.verify` (quarantine lists), :mod:`.cli` (``vlbook-data``).
"""

from vlbook.data.annotations import TASK_FIELDS, AnnotationError, read_jsonl, write_jsonl
from vlbook.data.datasets import (
    BUILDER_TASKS,
    DATASETS,
    AnnotatedVideoDataset,
    ConcatVideoDataset,
    build_dataset,
    collate_video_text,
)
from vlbook.data.features import FeatureTextDataset
from vlbook.data.loader import SkipSummary, build_loader, seed_worker
from vlbook.data.registry import REAL_DATASETS, dataset_dir
from vlbook.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vlbook.data.video import VideoDecodeError, read_frames

__all__ = [
    "BUILDER_TASKS",
    "DATASETS",
    "REAL_DATASETS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TASK_FIELDS",
    "AnnotatedVideoDataset",
    "AnnotationError",
    "ConcatVideoDataset",
    "FeatureTextDataset",
    "SkipSummary",
    "VideoDecodeError",
    "build_dataset",
    "build_loader",
    "collate_video_text",
    "dataset_dir",
    "read_frames",
    "read_jsonl",
    "seed_worker",
    "write_jsonl",
]
