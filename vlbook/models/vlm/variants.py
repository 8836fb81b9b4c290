"""The named VLM variants, each registered under its function's name.

``create_model("vlm_base", pretrained="bert-base-uncased")`` starts the encoder and LM head
from BERT (:attr:`VLMConfig.pretrained <vlbook.models.vlm.VLMConfig.pretrained>`); every
keyword argument overrides a :class:`~vlbook.models.vlm.VLMConfig` field.
"""

from __future__ import annotations

from typing import Any

from vlbook.models.base import register_model
from vlbook.models.vlm.modeling import VLM, VLMConfig

__all__ = ["PAPER_PARAMS_M", "vlm_base", "vlm_toy"]

#: Table 1: parameters (millions) of the paper-size variant (BERT-base + the video MLP).
PAPER_PARAMS_M: dict[str, float] = {"vlm_base": 110.0}


def _build(defaults: dict[str, Any], **kwargs: Any) -> VLM:
    """``VLM`` of ``defaults`` updated by ``kwargs``."""
    return VLM(VLMConfig(**{**defaults, **kwargs}))


@register_model
def vlm_base(**kwargs: Any) -> VLM:
    """VLM = BERT-base uncased + the video MLP (Table 1, Sec. 5.2), 110 M parameters."""
    return _build({}, **kwargs)


@register_model
def vlm_toy(**kwargs: Any) -> VLM:
    """Toy width for the synthetic benchmark (not in the paper): 16 frame tokens, short
    captions."""
    return _build({"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256,
                   "vocab_size": 512, "max_position_embeddings": 64, "max_video_len": 16,
                   "max_len": 48, "hidden_dropout": 0.0, "attention_dropout": 0.0}, **kwargs)
