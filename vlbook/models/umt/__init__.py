"""Unmasked Teacher (UMT, Li et al., ICCV 2023): CLIP-guided masked video modelling.

:mod:`~vlbook.models.umt.modeling` holds the student, the teachers and the stage-2 towers,
:mod:`~vlbook.models.umt.convert` the official-checkpoint and BERT loaders,
:mod:`~vlbook.models.umt.variants` the named variants (registered on import). The chapter
(presets, data, training runs, evaluations) is :mod:`vlbook.chapters.umt`.
"""

from __future__ import annotations

from vlbook.models.umt.convert import (
    ConversionResult,
    convert_official_state_dict,
    load_bert_weights,
    load_official_checkpoint,
)
from vlbook.models.umt.modeling import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MASK_TYPES,
    STUDENT_ATTENTION,
    UMT,
    HFCLIPTeacher,
    MultipleChoiceOutput,
    TeacherOutput,
    ToyCLIP,
    ToyCLIPConfig,
    UMTConfig,
    UMTOutput,
    UMTStage2Output,
    student_parameter_count,
)
from vlbook.models.umt.variants import (
    CLIP_TEACHERS,
    PAPER_GFLOPS,
    PAPER_PARAMS_M,
    umt_base,
    umt_large,
    umt_toy,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "CLIP_TEACHERS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MASK_TYPES",
    "PAPER_GFLOPS",
    "PAPER_PARAMS_M",
    "STUDENT_ATTENTION",
    "UMT",
    "ConversionResult",
    "HFCLIPTeacher",
    "MultipleChoiceOutput",
    "TeacherOutput",
    "ToyCLIP",
    "ToyCLIPConfig",
    "UMTConfig",
    "UMTOutput",
    "UMTStage2Output",
    "convert_official_state_dict",
    "load_bert_weights",
    "load_official_checkpoint",
    "student_parameter_count",
    "umt_base",
    "umt_large",
    "umt_toy",
]
