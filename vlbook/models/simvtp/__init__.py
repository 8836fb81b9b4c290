"""SimVTP (Ma et al., 2022): a video-text masked autoencoder with one shared encoder.

:mod:`~vlbook.models.simvtp.modeling` holds the config, the blocks and the model,
:mod:`~vlbook.models.simvtp.convert` the VideoMAE / timm / BERT weight loaders (Table 4c),
:mod:`~vlbook.models.simvtp.variants` the named variants (registered on import). The chapter
(presets, data, toy runs, evaluations) is :mod:`vlbook.chapters.simvtp`.
"""

from __future__ import annotations

from vlbook.models.simvtp.convert import (
    ENCODER_INITIALISATIONS,
    ConversionResult,
    convert_timm_vit_state_dict,
    convert_videomae_state_dict,
    initialise_encoder,
    load_bert_embeddings,
    load_timm_vit_encoder,
    load_videomae_encoder,
)
from vlbook.models.simvtp.modeling import (
    DECODER_TYPES,
    POOLINGS,
    TEXT_REPLACEMENTS,
    VTM_NEGATIVES,
    BlockStack,
    JointOutput,
    MultipleChoiceOutput,
    SimVTP,
    SimVTPConfig,
    SimVTPOutput,
    TextDecoder,
    TextEmbeddings,
    VideoDecoder,
    VideoMasking,
    encoder_flops_ratio,
)
from vlbook.models.simvtp.variants import REFERENCE_PARAMS_M, simvtp_base, simvtp_toy

__all__ = [
    "DECODER_TYPES",
    "ENCODER_INITIALISATIONS",
    "POOLINGS",
    "REFERENCE_PARAMS_M",
    "TEXT_REPLACEMENTS",
    "VTM_NEGATIVES",
    "BlockStack",
    "ConversionResult",
    "JointOutput",
    "MultipleChoiceOutput",
    "SimVTP",
    "SimVTPConfig",
    "SimVTPOutput",
    "TextDecoder",
    "TextEmbeddings",
    "VideoDecoder",
    "VideoMasking",
    "convert_timm_vit_state_dict",
    "convert_videomae_state_dict",
    "encoder_flops_ratio",
    "initialise_encoder",
    "load_bert_embeddings",
    "load_timm_vit_encoder",
    "load_videomae_encoder",
    "simvtp_base",
    "simvtp_toy",
]
