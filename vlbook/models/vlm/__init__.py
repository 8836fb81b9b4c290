"""VLM: task-agnostic video-language pre-training of one BERT (Xu et al., Findings of ACL 2021).

:mod:`~vlbook.models.vlm.modeling` holds the config, the video token MLP, the toy frame encoder,
the attention masks of Fig. 3 and the model, :mod:`~vlbook.models.vlm.convert` the BERT and
official MMPT checkpoint loaders, :mod:`~vlbook.models.vlm.variants` the named variants
(registered on import). The chapter (presets, toy data, fine-tuning and evaluations) is
:mod:`vlbook.chapters.vlm`.
"""

from __future__ import annotations

from vlbook.models.vlm.convert import (
    VLMConversionResult,
    convert_mmpt_state_dict,
    default_weights_dir,
    load_bert_weights,
    load_mmpt_checkpoint,
    mmpt_names,
)
from vlbook.models.vlm.modeling import (
    ATTENTION_MODES,
    DIRECTIONS,
    LOSSES,
    VLM,
    ToyFrameEncoder,
    VideoTokenMLP,
    VLMConfig,
    VLMEncoding,
    VLMPretrainOutput,
    attention_mask_for,
    sliding_windows,
)
from vlbook.models.vlm.variants import PAPER_PARAMS_M, vlm_base, vlm_toy

__all__ = [
    "ATTENTION_MODES",
    "DIRECTIONS",
    "LOSSES",
    "PAPER_PARAMS_M",
    "VLM",
    "ToyFrameEncoder",
    "VLMConfig",
    "VLMConversionResult",
    "VLMEncoding",
    "VLMPretrainOutput",
    "VideoTokenMLP",
    "attention_mask_for",
    "convert_mmpt_state_dict",
    "default_weights_dir",
    "load_bert_weights",
    "load_mmpt_checkpoint",
    "mmpt_names",
    "sliding_windows",
    "vlm_base",
    "vlm_toy",
]
