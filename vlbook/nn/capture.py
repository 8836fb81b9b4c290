"""On-demand capture of per-layer, per-head attention weights.

::

    with capture_attention(model) as store:
        model(batch)
    store["encoder.blocks.0.attn"]          # (B, heads, Lq, Lk), rows sum to 1
    store.stacked()                         # (layers, B, heads, Lq, Lk) when shapes agree

Supported attention modules (found anywhere inside ``model``):

* vlbook's :class:`~vlbook.nn.Attention` and :class:`~vlbook.nn.CrossAttention`: the module
  computes the explicit softmax next to its fused SDPA call, only while capturing.
* timm's ``Attention`` (``timm.models.vision_transformer.Attention`` = ``timm.layers.Attention``,
  used by All-in-one's and E-ViLM's timm ViTs): a forward hook recomputes ``softmax(q k^T s +
  mask)`` from the module's input with the module's own ``qkv``, ``q_norm``/``k_norm`` and
  ``scale``, whether it runs fused or not.
* transformers' BERT ``BertSelfAttention`` and ``BertCrossAttention`` (any
  ``attn_implementation``; no ``output_attentions`` needed): the same recomputation from
  ``hidden_states``, ``encoder_hidden_states`` and the 4-D ``attention_mask`` the layer receives.
  Cached decoding (``past_key_values``) is not supported: such calls are skipped with a warning
  (transformers 5 only allows BERT cross-attention in decoders, which cache by default: call the
  model with ``use_cache=False`` while capturing).

The model's outputs are unchanged by capture (the stored weights are a side computation). Weights
are the pre-dropout probabilities, detached, on the module's device unless ``to_cpu=True``.
A module called several times inside one ``with`` block keeps every call
(:meth:`AttentionStore.calls`); ``store[name]`` is the last call.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from vlbook.nn.attention import _AttentionBase

__all__ = ["AttentionStore", "capture_attention", "supported_attention_modules"]


class AttentionStore(Mapping[str, torch.Tensor]):
    """Captured attention weights keyed by module name, in the model's layer order."""

    def __init__(self, order: list[str]) -> None:
        self._order = order
        self._calls: dict[str, list[torch.Tensor]] = {}

    def _add(self, name: str, weights: torch.Tensor) -> None:
        self._calls.setdefault(name, []).append(weights)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._calls:
            raise KeyError(f"no attention captured for {name!r}; captured: {list(self)}")
        return self._calls[name][-1]

    def __iter__(self) -> Iterator[str]:
        return (n for n in self._order if n in self._calls)

    def __len__(self) -> int:
        return len(self._calls)

    def calls(self, name: str) -> list[torch.Tensor]:
        """Every captured call of module ``name``, in call order."""
        return list(self._calls.get(name, []))

    def stacked(self) -> torch.Tensor:
        """Last call of every layer stacked: ``(layers, B, heads, Lq, Lk)``."""
        tensors = list(self.values())
        if not tensors:
            raise ValueError("no attention was captured: did the model run inside the block?")
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) != 1:
            raise ValueError(f"captured layers have different shapes {sorted(shapes)}; "
                             "select layers with the same shape before stacking")
        return torch.stack(tensors)

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {tuple(self[n].shape)}" for n in self)
        return f"AttentionStore({inner})"


def _softmax_with_mask(scores: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask.to(scores.dtype)
    return scores.softmax(dim=-1)


def _timm_classes() -> tuple[type, ...]:
    try:
        from timm.models.vision_transformer import Attention as TimmAttention
    except Exception:  # timm missing or broken: nothing of timm's can be inside the model
        return ()
    return (TimmAttention,)


def _bert_classes() -> tuple[type, ...]:
    try:
        from transformers.models.bert.modeling_bert import BertCrossAttention, BertSelfAttention
    except Exception:
        return ()
    return (BertSelfAttention, BertCrossAttention)


def _timm_weights(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor:
    """``softmax(q k^T * scale + mask)`` of a timm ViT ``Attention`` call."""
    from timm.layers.attention import resolve_self_attn_mask

    x = args[0] if args else kwargs["x"]
    attn_mask = args[1] if len(args) > 1 else kwargs.get("attn_mask")
    is_causal = args[2] if len(args) > 2 else kwargs.get("is_causal", False)
    b, n, _ = x.shape
    qkv = module.qkv(x).reshape(b, n, 3, module.num_heads, module.head_dim).permute(2, 0, 3, 1, 4)
    q, k, _ = qkv.unbind(0)
    q, k = module.q_norm(q), module.k_norm(k)
    scores = (q * module.scale) @ k.transpose(-2, -1)
    bias = resolve_self_attn_mask(n, scores, attn_mask, is_causal)
    return _softmax_with_mask(scores, bias)


def _bert_weights(module: nn.Module, args: tuple, kwargs: dict) -> torch.Tensor | None:
    """Attention probabilities of a BERT self- or cross-attention call (any implementation)."""
    if kwargs.get("past_key_values") is not None:
        warnings.warn(f"attention capture skips {type(module).__name__} calls with "
                      "past_key_values (cached decoding is not supported)", stacklevel=3)
        return None
    hidden = args[0] if args else kwargs["hidden_states"]
    bert_classes = _bert_classes()
    if len(bert_classes) == 2 and isinstance(module, bert_classes[1]):  # BertCrossAttention
        context = kwargs.get("encoder_hidden_states", args[1] if len(args) > 1 else None)
        mask = kwargs.get("attention_mask", args[2] if len(args) > 2 else None)
    else:
        context = hidden
        mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    d = module.attention_head_size
    q = module.query(hidden).view(*hidden.shape[:-1], -1, d).transpose(1, 2)
    k = module.key(context).view(*context.shape[:-1], -1, d).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) * module.scaling
    if getattr(module, "is_causal", False) and mask is None:
        lq, lk = scores.shape[-2:]
        mask = torch.ones(lq, lk, dtype=torch.bool, device=scores.device).tril(lk - lq)
    return _softmax_with_mask(scores, mask)


def supported_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every attention module :func:`capture_attention` can read."""
    classes = (_AttentionBase, *_timm_classes(), *_bert_classes())
    return [(name, m) for name, m in model.named_modules() if isinstance(m, classes)]


@contextmanager
def capture_attention(model: nn.Module, include: Callable[[str], bool] | str | None = None,
                      to_cpu: bool = False) -> Iterator[AttentionStore]:
    """Record attention weights of every supported attention module of ``model``.

    ``include`` restricts capture to module names containing a substring (``str``) or accepted
    by a predicate. Raises ``ValueError`` if the model has no supported attention module (the
    message lists the supported types). Hooks are removed on exit, even after an exception.
    """
    modules = supported_attention_modules(model)
    if isinstance(include, str):
        pattern = include
        modules = [(n, m) for n, m in modules if pattern in n]
    elif include is not None:
        modules = [(n, m) for n, m in modules if include(n)]
    if not modules:
        raise ValueError(
            f"capture_attention found no attention module in {type(model).__name__}"
            f"{' matching include=' + repr(include) if include is not None else ''}; supported: "
            "vlbook.nn.Attention/CrossAttention, timm vision_transformer.Attention, "
            "transformers BertSelfAttention/BertCrossAttention"
        )
    store = AttentionStore([n for n, _ in modules])
    handles: list[Any] = []
    timm_types = _timm_classes()

    def keep(name: str, weights: torch.Tensor) -> None:
        weights = weights.detach()
        store._add(name, weights.cpu() if to_cpu else weights)

    try:
        for name, module in modules:
            if isinstance(module, _AttentionBase):
                if module.capture_hook is not None:
                    raise RuntimeError(f"attention capture is already active on {name!r}")
                module.capture_hook = (lambda w, _n=name: keep(_n, w))
                continue
            reader = _timm_weights if isinstance(module, timm_types) else _bert_weights

            def hook(mod: nn.Module, args: tuple, kwargs: dict, output: Any,
                     _name: str = name, _reader: Callable = reader) -> None:
                with torch.no_grad():
                    weights = _reader(mod, args, kwargs)
                if weights is not None:
                    keep(_name, weights)

            handles.append(module.register_forward_hook(hook, with_kwargs=True))
        yield store
    finally:
        for _, module in modules:
            if isinstance(module, _AttentionBase):
                module.capture_hook = None
        for h in handles:
            h.remove()
