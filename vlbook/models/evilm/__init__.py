"""E-ViLM (Fang et al.): a small video-language model trained with a semantic VQ video tokenizer.

:mod:`~vlbook.models.evilm.modeling` holds the model and the tokenizer,
:mod:`~vlbook.models.evilm.convert` the EdgeNeXt weight loader,
:mod:`~vlbook.models.evilm.variants` the named variants (registered on import). The chapter
(presets, toy training, evaluations) is :mod:`vlbook.chapters.evilm`.
"""

from __future__ import annotations

from vlbook.models.evilm.convert import default_weights_dir, load_edgenext_weights
from vlbook.models.evilm.modeling import (
    INITS,
    TOKENIZER_TARGETS,
    VIDEO_BACKBONES,
    WORD_LOSSES,
    ClipFrameEncoder,
    ConvFrameEncoder,
    ConvStage,
    EdgeNeXtFrameEncoder,
    EViLM,
    EViLMConfig,
    EViLMOutput,
    MultipleChoiceOutput,
    SemanticVQTokenizer,
    TokenizerConfig,
    TokenizerOutput,
    TokenizerTraining,
    TransformerStack,
    ViTFrameEncoder,
    build_text_encoder,
    caption_word_targets,
    load_video_tokenizer,
    mask_video_regions,
    parameter_breakdown,
    save_video_tokenizer,
)
from vlbook.models.evilm.variants import (
    PAPER_PARAMS_M,
    PAPER_TABLE8,
    VARIANTS,
    evilm,
    evilm_toy,
)

__all__ = [
    "INITS",
    "PAPER_PARAMS_M",
    "PAPER_TABLE8",
    "TOKENIZER_TARGETS",
    "VARIANTS",
    "VIDEO_BACKBONES",
    "WORD_LOSSES",
    "ClipFrameEncoder",
    "ConvFrameEncoder",
    "ConvStage",
    "EViLM",
    "EViLMConfig",
    "EViLMOutput",
    "EdgeNeXtFrameEncoder",
    "MultipleChoiceOutput",
    "SemanticVQTokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "TokenizerTraining",
    "TransformerStack",
    "ViTFrameEncoder",
    "build_text_encoder",
    "caption_word_targets",
    "default_weights_dir",
    "evilm",
    "evilm_toy",
    "load_edgenext_weights",
    "load_video_tokenizer",
    "mask_video_regions",
    "parameter_breakdown",
    "save_video_tokenizer",
]
