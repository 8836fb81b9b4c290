"""AdamW with weight-decay exclusions and layer-wise learning-rate decay.

Weight decay is not applied to biases, normalisation weights (every parameter with fewer than
two dimensions), position embeddings, class/mask tokens, temperatures, or any name the model
lists in ``no_weight_decay()`` (the timm/BEiT convention, used by SimVTP and UMT's code).

Layer-wise lr decay (BEiT §3, used by VideoMAE/SimVTP/UMT fine-tuning): a parameter in
transformer layer ``i`` (``1..L``; embeddings are layer 0, heads layer ``L+1``) gets
``lr * decay ** (L + 1 - i)``. Models may define ``layer_id_for_param(name) -> int`` and
``num_layers() -> int``; otherwise the layer id is read from names such as ``blocks.3.`` or
``layers.3.``/``layer.3.`` and ``L`` is the largest index found plus one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

_LAYER_RE = re.compile(r"(?:^|\.)(?:blocks|layers|layer|resblocks)\.(\d+)\.")
_EMBED_WORDS = ("embed", "cls_token", "pos_", "mask_token", "token_type", "patch_")
_NO_DECAY_WORDS = ("pos_embed", "position", "cls_token", "mask_token", "temp", "logit_scale")


def _model_no_decay(model: nn.Module) -> set[str]:
    fn = getattr(model, "no_weight_decay", None)
    return set(fn()) if callable(fn) else set()


def excluded_from_weight_decay(name: str, param: torch.Tensor, extra: Iterable[str] = ()) -> bool:
    """Whether ``name`` gets no weight decay (biases, norms, embeddings of positions, …)."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return True
    leaf = name.split(".")[-1]
    if any(word in leaf for word in _NO_DECAY_WORDS):
        return True
    return any(name == e or name.startswith(e + ".") or leaf == e for e in extra)


def default_layer_id(name: str, num_layers: int) -> int:
    """Layer id of ``name`` for layer-wise decay: 0 embeddings, ``i+1`` block ``i``, else L+1."""
    match = _LAYER_RE.search(name)
    if match:
        return int(match.group(1)) + 1
    leaf = name.split(".")[-1]
    if any(word in name for word in _EMBED_WORDS) or leaf in ("cls_token", "pos_embed"):
        return 0
    return num_layers + 1


def _num_layers(model: nn.Module) -> int:
    fn = getattr(model, "num_layers", None)
    if callable(fn):
        return int(fn())
    found = [int(m.group(1)) for n, _ in model.named_parameters() if (m := _LAYER_RE.search(n))]
    return max(found) + 1 if found else 0


def param_groups(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    no_weight_decay: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Parameter groups for AdamW: one per (layer id, decay or not), each with its ``lr``.

    Each group also carries ``lr_scale`` (the layer-wise factor) and ``names`` (for inspection).
    """
    extra = set(no_weight_decay) | _model_no_decay(model)
    num_layers = _num_layers(model)
    layer_id_fn = getattr(model, "layer_id_for_param", None)
    groups: dict[tuple[int, bool], dict[str, Any]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = excluded_from_weight_decay(name, param, extra)
        if layer_decay < 1.0:
            layer_id = layer_id_fn(name) if callable(layer_id_fn) else None
            if layer_id is None:
                layer_id = default_layer_id(name, num_layers)
            scale = layer_decay ** (num_layers + 1 - layer_id)
        else:
            layer_id, scale = 0, 1.0
        key = (layer_id, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "names": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr": lr * scale,
                "lr_scale": scale,
                "layer_id": layer_id,
            }
        groups[key]["params"].append(param)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    layer_decay: float = 1.0,
    no_weight_decay: Iterable[str] = (),
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` (decoupled weight decay, Loshchilov & Hutter 2019)."""
    groups = param_groups(
        model,
        lr=lr,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        no_weight_decay=no_weight_decay,
    )
    if not groups:
        raise ValueError(f"{type(model).__name__} has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
