"""The named UMT variants (UMT Sec. 4.1), each registered under its function's name.

``create_model("umt_base", teacher=True)`` attaches the variant's CLIP teacher of
:data:`CLIP_TEACHERS` through transformers (or a hub name / local folder given as ``teacher``);
``bert=True`` (or a BERT name / folder) starts stage 2 from ``bert-base-uncased``;
``checkpoint=`` loads an official UMT checkpoint on top. Other keyword arguments override
:class:`~vlbook.models.umt.UMTConfig` fields.
"""

from __future__ import annotations

from typing import Any

from vlbook.models.base import register_model
from vlbook.models.umt.convert import load_bert_weights, load_official_checkpoint
from vlbook.models.umt.modeling import UMT, HFCLIPTeacher, UMTConfig

__all__ = [
    "CLIP_TEACHERS",
    "PAPER_GFLOPS",
    "PAPER_PARAMS_M",
    "umt_base",
    "umt_large",
    "umt_toy",
]

#: Table 5 / 6 (ViT-B/L at 8x224): parameters (millions) and GFLOPs (fvcore multiply-adds).
PAPER_PARAMS_M: dict[str, float] = {"umt_base": 87, "umt_large": 304}
PAPER_GFLOPS: dict[str, float] = {"umt_base": 180, "umt_large": 596}
#: The CLIP teacher of each paper variant (``teacher=True``).
CLIP_TEACHERS: dict[str, str] = {"umt_base": "openai/clip-vit-base-patch16",
                                 "umt_large": "openai/clip-vit-large-patch14"}


def _build(name: str, defaults: dict[str, Any], **kwargs: Any) -> UMT:
    """``UMT`` of ``defaults`` updated by ``kwargs``; ``teacher=`` (``True``: the variant's
    :data:`CLIP_TEACHERS` entry, or a name / folder), ``bert=`` (``True``:
    ``bert-base-uncased``) and ``checkpoint=`` (an official checkpoint) load weights."""
    teacher = kwargs.pop("teacher", None)
    checkpoint = kwargs.pop("checkpoint", None)
    bert = kwargs.pop("bert", None)
    model = UMT(UMTConfig(**{**defaults, **kwargs}))
    if teacher:
        source = CLIP_TEACHERS.get(name) if teacher is True else teacher
        if source is None:
            raise ValueError(f"{name} has no default CLIP teacher; pass a path or name")
        image_size = 196 if "large" in str(source) else None
        model.set_teacher(HFCLIPTeacher.from_pretrained(source, image_size=image_size))
    if bert:
        load_bert_weights(model, "bert-base-uncased" if bert is True else bert)
    if checkpoint:
        load_official_checkpoint(model, checkpoint)
    return model


@register_model
def umt_toy(**kwargs: Any) -> UMT:
    """A CPU-sized UMT for the synthetic benchmark (not in the paper): 64-wide student of 4
    blocks on 32 px clips, 2 aligned layers, small decoder and BERT towers; retrieval pools the
    frames first (``keep_temporal=False``, the chapter's zero-shot probe)."""
    return _build("umt_toy", {"embed_dim": 64, "depth": 4, "num_heads": 4, "image_size": 32,
                              "patch_size": 8, "num_frames": 8, "teacher_dim": 64,
                              "align_layers": 2, "drop_path_rate": 0.0, "decoder_dim": 32,
                              "decoder_depth": 1, "decoder_heads": 4, "text_width": 64,
                              "text_layers": 2, "fusion_layers": 1, "text_heads": 4,
                              "text_intermediate": 128, "shared_dim": 64, "max_text_len": 32},
                  **kwargs)


@register_model
def umt_base(**kwargs: Any) -> UMT:
    """UMT-B (Sec. 4.1, Table 5): ViT-B/16 student, CLIP ViT-B/16 teacher, BERT-base towers
    (9 text + 3 fusion layers); 87 M student parameters. Stage-2 retrieval keeps the frames
    apart (``keep_temporal=True``, as every released multi_modality config)."""
    return _build("umt_base", {"keep_temporal": True}, **kwargs)


@register_model
def umt_large(**kwargs: Any) -> UMT:
    """UMT-L (Sec. 4.1, Table 5): ViT-L/16 student, CLIP ViT-L/14 teacher (at 196 px),
    BERT-large-sized towers (19 text + 5 fusion layers); 304 M student parameters;
    ``keep_temporal=True`` as UMT-B."""
    return _build("umt_large", {"embed_dim": 1024, "depth": 24, "num_heads": 16,
                                "keep_temporal": True, "teacher_dim": 768,
                                "drop_path_rate": 0.2, "decoder_dim": 512, "decoder_heads": 8,
                                "text_width": 1024, "text_layers": 19, "fusion_layers": 5,
                                "text_heads": 16,
                                "text_intermediate": 4096},
                  **kwargs)
