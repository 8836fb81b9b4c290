"""All-in-one (Wang et al., 2022): one ViT for raw frames and text, with temporal token rolling.

:mod:`~vlbook.models.allinone.modeling` holds the model, :mod:`~vlbook.models.allinone.convert`
the timm and official-checkpoint loaders, :mod:`~vlbook.models.allinone.variants` the named
variants of Table 1 (registered on import). The chapter (presets, data, evaluations) is
:mod:`vlbook.chapters.allinone`.
"""

from __future__ import annotations

from vlbook.models.allinone.convert import (
    ConversionResult,
    convert_official_state_dict,
    load_official_checkpoint,
    load_timm_backbone,
)
from vlbook.models.allinone.modeling import (
    INITS,
    ROLL_LAYOUTS,
    ROLL_SELECTIONS,
    TEMPORAL_MODES,
    AllInOne,
    AllInOneConfig,
    AllInOneOutput,
    MLMHead,
    MLMTransform,
    MultipleChoiceOutput,
    PatchEmbed,
    Pooler,
    RollingPlan,
    TextEmbeddings,
    VisionBackbone,
    VTMHead,
    channel_shift,
    rolled_share,
    rolling_plan,
    temporal_roll,
    word_ids_from_continuations,
)
from vlbook.models.allinone.variants import (
    PAPER_PARAMS_M,
    TIMM_BACKBONES,
    allinone_base,
    allinone_small,
    allinone_tiny,
    allinone_toy,
)

__all__ = [
    "INITS",
    "PAPER_PARAMS_M",
    "ROLL_LAYOUTS",
    "ROLL_SELECTIONS",
    "TEMPORAL_MODES",
    "TIMM_BACKBONES",
    "AllInOne",
    "AllInOneConfig",
    "AllInOneOutput",
    "ConversionResult",
    "MLMHead",
    "MLMTransform",
    "MultipleChoiceOutput",
    "PatchEmbed",
    "Pooler",
    "RollingPlan",
    "TextEmbeddings",
    "VTMHead",
    "VisionBackbone",
    "allinone_base",
    "allinone_small",
    "allinone_tiny",
    "allinone_toy",
    "channel_shift",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "load_timm_backbone",
    "rolled_share",
    "rolling_plan",
    "temporal_roll",
    "word_ids_from_continuations",
]
