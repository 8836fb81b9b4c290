"""The named All-in-one variants (Table 1), each registered under its function's name.

``create_model("allinone_tiny", pretrained=True)`` starts the backbone from the timm weights of
:data:`TIMM_BACKBONES` (or a timm name / local file given as ``pretrained``);
``checkpoint=`` loads an official All-in-one checkpoint on top. Other keyword arguments override
:class:`~vlbook.models.allinone.AllInOneConfig` fields.
"""

from __future__ import annotations

from typing import Any

from vlbook.models.allinone.convert import load_official_checkpoint, load_timm_backbone
from vlbook.models.allinone.modeling import AllInOne, AllInOneConfig
from vlbook.models.base import register_model

__all__ = [
    "PAPER_PARAMS_M",
    "TIMM_BACKBONES",
    "allinone_base",
    "allinone_small",
    "allinone_tiny",
    "allinone_toy",
]

#: timm weights each paper variant's backbone starts from (Table 1 "Initialization").
TIMM_BACKBONES: dict[str, str] = {
    "allinone_tiny": "deit_tiny_patch16_224.fb_in1k",
    "allinone_small": "deit_small_distilled_patch16_224.fb_in1k",
    "allinone_base": "vit_base_patch16_224.augreg2_in21k_ft_in1k",
}
#: Table 1 parameter counts (millions).
PAPER_PARAMS_M: dict[str, float] = {"allinone_tiny": 12, "allinone_small": 33,
                                    "allinone_base": 110}


def _build(name: str, defaults: dict[str, Any], **kwargs: Any) -> AllInOne:
    """``AllInOne`` of ``defaults`` updated by ``kwargs``; ``pretrained=`` (``True``: the
    variant's :data:`TIMM_BACKBONES` entry, or a timm name / path) and ``checkpoint=`` (an
    official checkpoint) load weights."""
    pretrained = kwargs.pop("pretrained", None)
    checkpoint = kwargs.pop("checkpoint", None)
    model = AllInOne(AllInOneConfig(**{**defaults, **kwargs}))
    if pretrained:
        source = TIMM_BACKBONES.get(name) if pretrained is True else pretrained
        if source is None:
            raise ValueError(f"{name} has no pretrained backbone; pass a timm name or path")
        load_timm_backbone(model, source)
    if checkpoint:
        load_official_checkpoint(model, checkpoint)
    return model


@register_model
def allinone_toy(**kwargs: Any) -> AllInOne:
    """A CPU-sized All-in-one for the synthetic benchmark (not in the paper)."""
    return _build("allinone_toy", dict(embed_dim=64, depth=3, num_heads=2, image_size=48,
                                       patch_size=8, vocab_size=1000, max_text_len=32,
                                       drop_path_rate=0.0, init="xavier"), **kwargs)


@register_model
def allinone_tiny(**kwargs: Any) -> AllInOne:
    """All-in-one-Ti (Table 1): DeiT-Ti backbone, 12 M parameters."""
    return _build("allinone_tiny", dict(embed_dim=192, depth=12, num_heads=3), **kwargs)


@register_model
def allinone_small(**kwargs: Any) -> AllInOne:
    """All-in-one-S (Table 1): DeiT-S distilled backbone (a distillation token), 33 M
    parameters; no temporal embedding (the code's ``DistilledVisionTransformer.visual_embed``
    adds none)."""
    return _build("allinone_small", dict(embed_dim=384, depth=12, num_heads=6, distilled=True,
                                         temporal_embedding=False), **kwargs)


@register_model
def allinone_base(**kwargs: Any) -> AllInOne:
    """All-in-one-B (Table 1): ViT-B/16 backbone, 110 M parameters."""
    return _build("allinone_base", dict(embed_dim=768, depth=12, num_heads=12), **kwargs)
