"""Weights for UMT: the official checkpoints (OpenGVLab/unmasked_teacher) and BERT.

:func:`convert_official_state_dict` renames an official stage-1 or stage-2 checkpoint to
vlbook's names (every tensor mapped or listed as dropped, with the reason);
:func:`load_official_checkpoint` loads one into a :class:`~vlbook.models.umt.UMT`;
:func:`load_bert_weights` starts stage 2 from a BERT checkpoint.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vlbook.models.umt.modeling import UMT
from vlbook.serialization import FAIRSEQ_TYPES, safe_load

__all__ = [
    "ConversionResult",
    "convert_official_state_dict",
    "load_bert_weights",
    "load_official_checkpoint",
]


@dataclass
class ConversionResult:
    """Official checkpoint -> vlbook: ``state_dict``, ``mapping`` source -> target and
    ``dropped`` source -> reason."""

    state_dict: dict[str, torch.Tensor]
    mapping: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)


_STAGE1_PREFIXES = ("patch_embed.", "blocks.", "norm.")
_DROPPED: tuple[tuple[str, str], ...] = (
    ("clip_teacher.", "the frozen CLIP teacher (loaded from CLIP's own weights)"),
    ("teacher.", "the frozen CLIP teacher (loaded from CLIP's own weights)"),
    ("encoder.head.", "identity / classifier of the pre-training encoder, unused"),
    ("pos_embed", "fixed sinusoidal table (recomputed)"),
    ("clip_pos_embed", "fixed sinusoidal table (recomputed)"),
    ("text_encoder.bert.embeddings.position_ids", "buffer (positions are computed)"),
    ("text_encoder.bert.embeddings.token_type_ids", "buffer"),
    ("text_encoder.cls.predictions.decoder.weight", "tied to the word embeddings"),
    ("text_encoder.cls.predictions.decoder.bias", "same tensor as predictions.bias"),
)


def _vision_key(key: str) -> str | None:
    """vlbook name of a stage-1 student tensor (``encoder.*`` / ``clip_decoder.*``)."""
    if key.startswith("encoder."):
        key = key[len("encoder."):]
    if key.startswith("clip_decoder."):
        return "uta_heads." + key[len("clip_decoder."):]
    if key.startswith(_STAGE1_PREFIXES + ("pool_norm.",)):  # pool_norm: stage 2 only
        return key
    if key.startswith("head."):
        return key  # fine-tuned classifier
    return None


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, text_layers: int = 9,
) -> ConversionResult:
    """Rename an official UMT checkpoint (OpenGVLab/unmasked_teacher) to vlbook's names.

    Stage 1 (``single_modality``): ``encoder.patch_embed.proj``, ``encoder.blocks.i.{norm1,
    attn.qkv, attn.q_bias, attn.v_bias, attn.proj, norm2, mlp.fc1, mlp.fc2}``,
    ``encoder.norm``, ``clip_decoder.k.{head, norm}`` (the UTA heads). Stage 2
    (``multi_modality``): the same under ``vision_encoder.`` plus ``vision_encoder.pool_norm``
    (the LayerNorm after the token mean, -> ``pool_norm``), BERT under
    ``text_encoder.bert.`` (layers ``< text_layers`` -> the text encoder, the others -> the
    fusion layers), ``text_encoder.cls.predictions`` -> ``mlm_head``, ``vision_proj``,
    ``text_proj``, ``itm_head``, ``temp``. Wrappers ``{"model": ...}``/``{"module": ...}`` and a
    ``module.`` prefix are accepted. Every tensor is mapped or listed in ``dropped``; an
    unknown name raises ``KeyError``.
    """
    for wrapper in ("model", "module", "state_dict"):
        if wrapper in state_dict and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    result = ConversionResult(state_dict={})
    for raw_key, value in state_dict.items():
        key = raw_key[len("module."):] if raw_key.startswith("module.") else raw_key
        reason = next((why for prefix, why in _DROPPED
                       if key == prefix or key.startswith(prefix)
                       or key.endswith("." + prefix)), None)
        if reason is not None:
            result.dropped[raw_key] = reason
            continue
        target: str | None = None
        if key.startswith("vision_encoder."):
            target = _vision_key(key[len("vision_encoder."):])
        elif key.startswith(("encoder.", "clip_decoder.", "head.")) or key.startswith(
                _STAGE1_PREFIXES):
            target = _vision_key(key)
        elif key.startswith("text_encoder.bert.encoder.layer."):
            parts = key.split(".")
            layer = int(parts[4])
            rest = ".".join(parts[5:])
            if layer < text_layers:
                target = f"text_encoder.encoder.layer.{layer}.{rest}"
            else:
                target = f"fusion.{layer - text_layers}.{rest}"
        elif key.startswith("text_encoder.bert.embeddings."):
            target = "text_encoder." + key[len("text_encoder.bert."):]
        elif key.startswith("text_encoder.cls.predictions."):
            target = "mlm_head." + key[len("text_encoder.cls.predictions."):]
        elif key.startswith(("vision_proj.", "text_proj.", "itm_head.")):
            target = key
        elif key == "temp":
            target = "temp.temperature"
        if target is None:
            raise KeyError(f"official UMT tensor {raw_key!r} has no vlbook counterpart and is "
                           "not a known unused tensor")
        result.state_dict[target] = value
        result.mapping[raw_key] = target
    return result


def load_official_checkpoint(
    model: UMT, source: str | Path | Mapping[str, torch.Tensor], *, trust: bool = False
) -> ConversionResult:
    """Load an official UMT checkpoint (path or state dict) into ``model``.

    Raises ``ValueError`` naming unknown tensors or shape mismatches; warns about model tensors
    the checkpoint lacks (e.g. the UTA heads in a fine-tuned checkpoint). A file is read
    without running pickled code; one needing more than tensors, containers and
    ``argparse.Namespace`` raises :class:`~vlbook.serialization.UnsafeCheckpointError` unless
    ``trust=True``.
    """
    state = source if isinstance(source, Mapping) else safe_load(
        source, allow=FAIRSEQ_TYPES, trust=trust)
    result = convert_official_state_dict(state, text_layers=model.config.text_layers)
    own = model.state_dict()
    unknown = [k for k in result.state_dict if k not in own]
    wrong = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in result.state_dict.items() if k in own and v.shape != own[k].shape]
    if unknown or wrong:
        raise ValueError(f"official UMT checkpoint does not fit this model: unknown "
                         f"{unknown[:5]}, shape mismatches {wrong[:5]}")
    absent = [k for k in own if k not in result.state_dict
              and not k.startswith("mlm_head.decoder.")]  # tied to the word embeddings
    if absent:
        warnings.warn(f"official checkpoint lacks {len(absent)} model tensor(s) (kept at their "
                      f"initial values): {absent[:6]}", stacklevel=2)
    model.load_state_dict(result.state_dict, strict=False)
    return result


def load_bert_weights(model: UMT, source: str | Path) -> list[str]:
    """Initialise stage 2 from BERT: embeddings and layers ``< text_layers`` -> text encoder,
    the remaining layers -> fusion self-attention/FFN (cross-attention stays random), MLM head
    from ``cls.predictions`` when present (UMT Sec. 4.1: BERT-base, fusion from layer 9)."""
    if model.text_encoder is None:
        raise ValueError("load_bert_weights needs a stage-2 model (UMTConfig(stage=2))")
    from transformers import BertForMaskedLM  # heavy optional dependency

    try:
        bert = BertForMaskedLM.from_pretrained(str(source))
    except OSError as err:
        raise RuntimeError(f"could not load BERT {str(source)!r}: {err}. Pass a local folder or "
                           "allow hub downloads (HF_HUB_OFFLINE=0)") from err
    state = {f"text_encoder.{k}": v for k, v in bert.state_dict().items()}
    converted = convert_official_state_dict(
        {k: v for k, v in state.items() if not k.endswith(("position_ids", "token_type_ids"))},
        text_layers=model.config.text_layers)
    own = model.state_dict()
    usable = {k: v for k, v in converted.state_dict.items()
              if k in own and own[k].shape == v.shape}
    model.load_state_dict(usable, strict=False)
    return sorted(usable)
