"""Weights for SimVTP's shared encoder and text embeddings (Table 4c).

SimVTP publishes no checkpoint of its own in a format vlbook reads; the released code starts
the encoder from VideoMAE's K400 ViT-B and the text embeddings from BERT-base.
:func:`convert_videomae_state_dict` / :func:`load_videomae_encoder` take transformers'
VideoMAE weights, :func:`convert_timm_vit_state_dict` / :func:`load_timm_vit_encoder` timm's
image ViTs (IN-21k supervised, IN-1k MAE), :func:`load_bert_embeddings` BERT's embedding layer;
:func:`initialise_encoder` applies a Table 4c initialisation by name
(:data:`ENCODER_INITIALISATIONS`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vlbook.models.simvtp.modeling import SimVTP

__all__ = [
    "ENCODER_INITIALISATIONS",
    "ConversionResult",
    "convert_timm_vit_state_dict",
    "convert_videomae_state_dict",
    "initialise_encoder",
    "load_bert_embeddings",
    "load_timm_vit_encoder",
    "load_videomae_encoder",
]

@dataclass
class ConversionResult:
    """Source weights → vlbook names: ``state_dict`` (vlbook names), ``mapping`` source →
    target (fused q/k/v list all three sources), ``dropped`` source → reason."""

    state_dict: dict[str, torch.Tensor]
    mapping: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)


_VIDEOMAE_LAYER = {
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "intermediate.dense.weight": "mlp.fc1.weight",
    "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight",
    "output.dense.bias": "mlp.fc2.bias",
    "layernorm_before.weight": "norm1.weight",
    "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight",
    "layernorm_after.bias": "norm2.bias",
    "attention.attention.q_bias": "attn.q_bias",
    "attention.attention.v_bias": "attn.v_bias",
    "attention.attention.query.bias": "attn.q_bias",
    "attention.attention.value.bias": "attn.v_bias",
}


def convert_videomae_state_dict(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Rename a transformers ``VideoMAEModel``/``VideoMAEForPreTraining`` state dict to SimVTP.

    Encoder tensors (``[videomae.]embeddings.*``, ``[videomae.]encoder.layer.N.*``, the final
    ``layernorm``/``fc_norm``) map to ``video_embed``/``encoder``; separate query/key/value
    weights are fused into ``attn.qkv.weight``. With ``VideoMAEForPreTraining`` the decoder
    (``encoder_to_decoder``, ``decoder.decoder_layers``, ``decoder.norm``, ``decoder.head``,
    ``mask_token``) maps to ``video_decoder``. Unknown names raise ``KeyError``.
    """
    result = ConversionResult(state_dict={})
    pending: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    for raw_key, value in state_dict.items():
        key = raw_key[len("videomae."):] if raw_key.startswith("videomae.") else raw_key
        target: str | None = None
        if key == "embeddings.patch_embeddings.projection.weight":
            target = "video_embed.proj.weight"
        elif key == "embeddings.patch_embeddings.projection.bias":
            target = "video_embed.proj.bias"
        elif key in ("embeddings.position_embeddings", "embeddings.position_ids"):
            result.dropped[raw_key] = "fixed sinusoidal table, recomputed"
            continue
        elif key.startswith(("layernorm.", "fc_norm.")):
            target = "encoder.norm." + key.split(".", 1)[1]
        elif key.startswith("classifier."):
            result.dropped[raw_key] = "Kinetics classifier, unused"
            continue
        elif key == "mask_token":
            target = "video_decoder.mask_token"
        elif key == "encoder_to_decoder.weight":
            target = "video_decoder.encoder_to_decoder.weight"
        elif key.startswith("decoder.norm."):
            target = "video_decoder.blocks.norm." + key.split(".")[-1]
        elif key.startswith("decoder.head."):
            target = "video_decoder.head." + key.split(".")[-1]
        elif key.startswith(("encoder.layer.", "decoder.decoder_layers.")):
            parts = key.split(".")
            layer, rest = parts[2], ".".join(parts[3:])
            prefix = (f"encoder.blocks.{layer}." if key.startswith("encoder.")
                      else f"video_decoder.blocks.blocks.{layer}.")
            if rest in ("attention.attention.query.weight", "attention.attention.key.weight",
                        "attention.attention.value.weight"):
                which = rest.split(".")[2]
                pending.setdefault(prefix, {})[which] = (raw_key, value)
                continue
            if rest == "attention.attention.key.bias":
                result.dropped[raw_key] = "key bias is fixed at zero in VideoMAE's layout"
                continue
            if rest in _VIDEOMAE_LAYER:
                target = prefix + _VIDEOMAE_LAYER[rest]
        if target is None:
            raise KeyError(f"VideoMAE tensor {raw_key!r} has no SimVTP counterpart")
        result.state_dict[target] = value
        result.mapping[raw_key] = target
    for prefix, qkv in pending.items():
        if set(qkv) != {"query", "key", "value"}:
            raise KeyError(f"{prefix}: VideoMAE checkpoint has only {sorted(qkv)} of q/k/v")
        target = prefix + "attn.qkv.weight"
        result.state_dict[target] = torch.cat([qkv[w][1] for w in ("query", "key", "value")])
        for w in ("query", "key", "value"):
            result.mapping[qkv[w][0]] = target
    return result


def _load_into(model: SimVTP, converted: ConversionResult, what: str,
               required_prefix: str = "encoder.blocks.") -> list[str]:
    own = model.state_dict()
    unknown = [k for k in converted.state_dict if k not in own]
    wrong = [f"{k}: source {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in converted.state_dict.items() if k in own and v.shape != own[k].shape]
    if unknown or wrong:
        raise ValueError(f"{what} does not fit the SimVTP model: unknown {unknown[:5]}, shape "
                         f"mismatches {wrong[:5]}")
    missing = [k for k in own if k.startswith(required_prefix) and k not in converted.state_dict]
    if missing:
        raise ValueError(f"{what} lacks encoder tensors: {missing[:5]}")
    model.load_state_dict(converted.state_dict, strict=False)
    return sorted(converted.state_dict)


def _read_state(source: str | Path | Mapping[str, torch.Tensor]
                ) -> Mapping[str, torch.Tensor] | None:
    if isinstance(source, Mapping):
        return source
    path = Path(str(source)).expanduser()
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        return None
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # optional dependency

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    return state


def load_videomae_encoder(model: SimVTP,
                          source: str | Path | Mapping[str, torch.Tensor] = "MCG-NJU/videomae-base"
                          ) -> ConversionResult:
    """Initialise the shared encoder from VideoMAE K400 weights (Table 4c, the default).

    ``source``: a state dict in transformers' VideoMAE names, a local ``.bin``/``.safetensors``
    file or model folder, or a hub id loaded with ``VideoMAEModel.from_pretrained`` (needs
    network or a filled hub cache; offline it raises ``RuntimeError`` saying what to do).
    """
    state = _read_state(source)
    if state is None:
        try:
            from transformers import VideoMAEForPreTraining  # heavy optional dependency

            state = VideoMAEForPreTraining.from_pretrained(str(source)).state_dict()
        except Exception as err:  # noqa: BLE001 - say what to do instead
            raise RuntimeError(
                f"could not load VideoMAE weights {str(source)!r} ({type(err).__name__}: "
                f"{str(err)[:160]}); pass a local file/folder in transformers' VideoMAE naming "
                "or allow hub downloads (HF_HUB_OFFLINE=0 with network)"
            ) from err
    converted = convert_videomae_state_dict(state)
    _load_into(model, converted, f"VideoMAE weights {str(source)[:60]!r}")
    return converted


def convert_timm_vit_state_dict(state_dict: Mapping[str, torch.Tensor], tubelet_size: int = 2
                                ) -> ConversionResult:
    """timm ViT-B/16 (ImageNet-21k supervised, ImageNet-1k MAE: Table 4c) → the shared encoder.

    The 2-D patch filter is inflated to the tube (repeated over time and divided by
    ``tubelet_size``, I3D style); ``qkv.bias`` is split into q and v biases (its key part is
    dropped); the CLS token, learned positions and classifier are dropped.
    """
    result = ConversionResult(state_dict={})
    for key, value in state_dict.items():
        if key == "patch_embed.proj.weight":
            inflated = value.unsqueeze(2).repeat(1, 1, tubelet_size, 1, 1) / tubelet_size
            result.state_dict["video_embed.proj.weight"] = inflated
            result.mapping[key] = "video_embed.proj.weight"
        elif key == "patch_embed.proj.bias":
            result.state_dict["video_embed.proj.bias"] = value
            result.mapping[key] = "video_embed.proj.bias"
        elif key.startswith("blocks.") and key.endswith("attn.qkv.bias"):
            prefix = "encoder." + key[: -len("qkv.bias")]
            q, _, v = value.chunk(3)
            result.state_dict[prefix + "q_bias"], result.state_dict[prefix + "v_bias"] = q, v
            result.mapping[key] = prefix + "q_bias"
        elif key.startswith("blocks."):
            result.state_dict["encoder." + key] = value
            result.mapping[key] = "encoder." + key
        elif key.startswith(("norm.", "fc_norm.")) and value.numel():
            target = "encoder.norm." + key.split(".", 1)[1]
            result.state_dict[target] = value
            result.mapping[key] = target
        else:
            result.dropped[key] = "CLS/positions/classifier of the image model, unused"
    return result


def load_timm_vit_encoder(model: SimVTP, source: str | Path | Mapping[str, torch.Tensor]
                          ) -> ConversionResult:
    """Initialise the shared encoder from a timm ViT (Table 4c: IN-21k sup., IN-1k MAE).

    ``source``: a state dict, a local file, or a timm name (e.g.
    ``"vit_base_patch16_224.mae"``, ``"vit_base_patch16_224.augreg_in21k"``) fetched by timm.
    """
    state = _read_state(source)
    if state is None:
        try:
            import timm  # heavy optional dependency

            state = timm.create_model(str(source), pretrained=True, num_classes=0).state_dict()
        except Exception as err:  # noqa: BLE001
            raise RuntimeError(
                f"could not load timm weights {str(source)!r} ({type(err).__name__}: "
                f"{str(err)[:160]}); pass a local state-dict file or allow hub downloads"
            ) from err
    converted = convert_timm_vit_state_dict(state, model.config.tubelet_size)
    _load_into(model, converted, f"timm weights {str(source)[:60]!r}")
    return converted


def load_bert_embeddings(model: SimVTP, source: str | Path | Mapping[str, torch.Tensor]
                         = "bert-base-uncased") -> list[str]:
    """Initialise the text embeddings from BERT-base's embedding layer (as the released code).

    ``source``: a state dict with ``[bert.]embeddings.*`` names, a local file/folder, or a hub
    id loaded through ``BertModel.from_pretrained``.
    """
    state = _read_state(source)
    if state is None:
        try:
            from transformers import BertModel  # heavy optional dependency

            state = BertModel.from_pretrained(str(source)).state_dict()
        except Exception as err:  # noqa: BLE001
            raise RuntimeError(
                f"could not load BERT weights {str(source)!r} ({type(err).__name__}: "
                f"{str(err)[:160]}); pass a local file/folder or allow hub downloads"
            ) from err
    own = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        short = key[len("bert."):] if key.startswith("bert.") else key
        if not short.startswith("embeddings.") or "position_ids" in short:
            continue
        target = "text_embeddings." + short[len("embeddings."):]
        if target not in own:
            continue
        if value.shape != own[target].shape:
            raise ValueError(f"BERT tensor {key} has shape {tuple(value.shape)}; the model's "
                             f"{target} has {tuple(own[target].shape)}")
        loaded[target] = value
    expected = [k for k in own if k.startswith("text_embeddings.")]
    if sorted(loaded) != sorted(expected):
        raise ValueError(f"BERT weights lack {sorted(set(expected) - set(loaded))}")
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)


#: Table 4c encoder initialisations and where vlbook loads them from.
ENCODER_INITIALISATIONS: dict[str, tuple[str, str | None]] = {
    "scratch": ("none", None),
    "k400_videomae": ("videomae", "MCG-NJU/videomae-base"),
    "in1k_mae": ("timm", "vit_base_patch16_224.mae"),
    "in21k_sup": ("timm", "vit_base_patch16_224.augreg_in21k"),
}


def initialise_encoder(model: SimVTP, init: str, source: Any = None) -> list[str]:
    """Apply a Table 4c initialisation by name (``ENCODER_INITIALISATIONS``)."""
    if init not in ENCODER_INITIALISATIONS:
        raise ValueError(f"init={init!r}; accepted: {tuple(ENCODER_INITIALISATIONS)} (BERT "
                         "encoder initialisation is not provided)")
    kind, default = ENCODER_INITIALISATIONS[init]
    if kind == "none":
        return []
    if kind == "videomae":
        return sorted(load_videomae_encoder(model, source or default).state_dict)
    return sorted(load_timm_vit_encoder(model, source or default).state_dict)
