"""The named E-ViLM variants, each registered under its function's name.

``create_model("evilm", pretrained=True)`` starts the EdgeNeXt backbone from its ImageNet
weights (:func:`~vlbook.models.evilm.convert.load_edgenext_weights`; a timm name or a local
file may be given as ``pretrained``). Other keyword arguments override
:class:`~vlbook.models.evilm.EViLMConfig` fields.
"""

from __future__ import annotations

from typing import Any

from vlbook.models.base import register_model
from vlbook.models.evilm.modeling import EViLM, EViLMConfig

__all__ = ["PAPER_PARAMS_M", "PAPER_TABLE8", "VARIANTS", "evilm", "evilm_toy"]

#: E-ViLM Table 8 (MSRVTT-QA model), parameters per group.
PAPER_TABLE8: dict[str, float] = {
    "text_embeddings": 1.2e6, "text_encoder": 2.4e6, "text_projection": 49.5e3,
    "token_type": 1.2e3, "video_encoder": 5.3e6, "video_projection": 117e3,
    "decoder": 7.1e6, "pooler": 147e3, "vtm_head": 770, "total": 16.3e6,
}
#: E-ViLM Table 1: parameters (M).
PAPER_PARAMS_M: float = 16.0

#: Each variant's :class:`~vlbook.models.evilm.EViLMConfig` defaults (the chapter notebook
#: reads the toy's widths from here); the functions below register them.
VARIANTS: dict[str, dict[str, Any]] = {
    "evilm": {},
    "evilm_toy": {"image_size": 64, "video_backbone": "conv", "conv_dims": (32, 64),
                  "conv_stride": 16, "temporal_embedding": True, "video_token_norm": True,
                  "init": "xavier", "vocab_size": 512,
                  "max_text_len": 32, "text_hidden": 64, "text_layers": 2, "text_heads": 4,
                  "text_intermediate": 128, "hidden": 96, "decoder_depth": 2,
                  "decoder_heads": 4, "num_codes": 64},
}


def _build(name: str, **kwargs: Any) -> EViLM:
    """``EViLM`` of ``VARIANTS[name]`` updated by ``kwargs``; ``pretrained=`` (``True``, a timm
    name or a weight file) loads the EdgeNeXt backbone."""
    pretrained = kwargs.pop("pretrained", None)
    return EViLM(EViLMConfig(**{**VARIANTS[name], **kwargs}), pretrained=pretrained)


@register_model
def evilm(**kwargs: Any) -> EViLM:
    """E-ViLM (Table 8): EdgeNeXt-small on 4 frames at 256 px, a 12-layer BERT at 128 and a
    4-layer decoder at 384; 16.3 M parameters counted as Table 8 does."""
    return _build("evilm", **kwargs)


@register_model
def evilm_toy(**kwargs: Any) -> EViLM:
    """A CPU-sized E-ViLM for the synthetic benchmark (not in the paper): a two-stage conv
    backbone at 64 px, a 2-layer BERT at 64 and a 2-layer decoder at 96, Xavier init."""
    return _build("evilm_toy", **kwargs)
