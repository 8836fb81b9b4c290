"""Multi-head attention with fused kernels and on-demand weight capture.

Every vlbook transformer attends through :class:`Attention` (self-attention) or
:class:`CrossAttention` (queries from one sequence, keys and values from another; UMT's fusion
layers, SimVTP/VideoMAE-style decoders). Training calls
:func:`torch.nn.functional.scaled_dot_product_attention`; the explicit softmax is computed only
while :func:`vlbook.nn.capture_attention` is active, and the returned output still comes from the
fused kernel, so capture never changes what the model computes.

Masks follow one convention across vlbook:

* ``key_padding_mask`` ``(B, Lk)``: boolean with ``True`` = attend (an attention mask as produced
  by tokenizers), or a float tensor added to the scores (``0`` keep, large negative drop).
* ``attn_mask`` ``(Lq, Lk)``, ``(B, Lq, Lk)`` or ``(B, heads, Lq, Lk)``: same two forms.

Both are merged into one additive float mask in which dropped positions get the dtype's most
negative finite value, so a query whose keys are all masked attends uniformly instead of
producing NaN (BERT's -10000 convention gives the same).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.nn.dropout import FastDropout

__all__ = ["Attention", "CrossAttention", "merge_masks"]


def _check_mask_shape(name: str, mask: torch.Tensor, batch: int, lq: int, lk: int) -> None:
    ok_shapes = {(lq, lk), (batch, lq, lk), (1, lq, lk)}
    if mask.dim() == 4:
        if mask.shape[0] in (1, batch) and mask.shape[2:] == (lq, lk):
            return
    elif tuple(mask.shape) in ok_shapes:
        return
    raise ValueError(
        f"{name} has shape {tuple(mask.shape)}; expected ({lq}, {lk}), ({batch}, {lq}, {lk}) or "
        f"({batch}, heads, {lq}, {lk}) for batch={batch}, queries={lq}, keys={lk}"
    )


def merge_masks(
    key_padding_mask: torch.Tensor | None,
    attn_mask: torch.Tensor | None,
    batch: int,
    num_queries: int,
    num_keys: int,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """One additive float mask ``(B or 1, 1 or heads, Lq, Lk)`` from the two user-facing masks.

    Boolean masks mean ``True`` = attend; float masks are added to the attention scores. Dropped
    positions receive ``torch.finfo(dtype).min`` (not ``-inf``), so fully masked rows stay finite.
    """
    if key_padding_mask is None and attn_mask is None:
        return None
    neg = torch.finfo(dtype).min
    additive: torch.Tensor | None = None
    keep: torch.Tensor | None = None

    def add(mask4d: torch.Tensor) -> None:
        nonlocal additive, keep
        if mask4d.dtype == torch.bool:
            keep = mask4d if keep is None else keep & mask4d
        else:
            m = mask4d.to(dtype)
            additive = m if additive is None else additive + m

    if key_padding_mask is not None:
        if key_padding_mask.shape != (batch, num_keys):
            raise ValueError(
                f"key_padding_mask has shape {tuple(key_padding_mask.shape)}; expected "
                f"(batch={batch}, keys={num_keys}) with True (or 0.0) = attend"
            )
        add(key_padding_mask[:, None, None, :])
    if attn_mask is not None:
        _check_mask_shape("attn_mask", attn_mask, batch, num_queries, num_keys)
        if attn_mask.dim() == 2:
            attn_mask = attn_mask[None, None]
        elif attn_mask.dim() == 3:
            attn_mask = attn_mask[:, None]
        add(attn_mask)

    if additive is None:
        assert keep is not None
        additive = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
    if keep is not None:
        shape = torch.broadcast_shapes(additive.shape, keep.shape)
        additive = additive.expand(shape).masked_fill(~keep.expand(shape), neg)
    return additive


class _AttentionBase(nn.Module):
    """Shared part of self- and cross-attention: heads, SDPA call and the capture hook."""

    def __init__(self, dim: int, num_heads: int, attn_drop: float, proj_drop: float,
                 qk_scale: float | None) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = qk_scale if qk_scale is not None else self.head_dim**-0.5
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = FastDropout(proj_drop)
        #: Set by :func:`vlbook.nn.capture_attention`; receives ``(B, heads, Lq, Lk)`` weights.
        self.capture_hook: Callable[[torch.Tensor], None] | None = None

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_padding_mask: torch.Tensor | None,
                attn_mask: torch.Tensor | None) -> torch.Tensor:
        b, _, lq, _ = q.shape
        lk = k.shape[2]
        mask = merge_masks(key_padding_mask, attn_mask, b, lq, lk, q.dtype)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.attn_drop if self.training else 0.0,
            scale=self.scale,
        )
        if self.capture_hook is not None:
            # Explicit weights, computed only while capturing; the output above is untouched.
            scores = (q @ k.transpose(-2, -1)) * self.scale
            if mask is not None:
                scores = scores + mask
            self.capture_hook(scores.softmax(dim=-1))
        out = out.transpose(1, 2).reshape(b, lq, self.dim)
        return self.proj_drop(self.proj(out))


class Attention(_AttentionBase):
    """Multi-head self-attention (Vaswani et al. 2017, Eq. 1) with one fused QKV projection.

    ``qkv_bias`` may be ``True``/``False`` or ``"qv"``: learnable query and value biases and a
    fixed zero key bias, the layout of VideoMAE/SimVTP checkpoints (SimVTP Sec. 3.1 encoder).
    """

    def __init__(self, dim: int, num_heads: int = 8, qkv_bias: bool | str = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0,
                 qk_scale: float | None = None) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, qk_scale)
        if qkv_bias not in (True, False, "qv"):
            raise ValueError(f"qkv_bias must be True, False or 'qv', got {qkv_bias!r}")
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias is True)
        if qkv_bias == "qv":
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None

    def qkv_projection(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries, keys and values ``(B, heads, L, head_dim)`` of tokens ``x`` ``(B, L, D)``."""
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.chunk(3, dim=-1)
        return self._split_heads(q), self._split_heads(k), self._split_heads(v)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"Attention input must be (B, L, {self.dim}), got {tuple(x.shape)}")
        q, k, v = self.qkv_projection(x)
        return self._attend(q, k, v, key_padding_mask, attn_mask)


class CrossAttention(_AttentionBase):
    """Multi-head cross-attention: queries from ``x``, keys/values from ``context``.

    Used by UMT's fusion layers (text queries over video tokens, UMT Sec. 3.2 stage 2) and by
    E-ViLM/ALBEF-style fusion. ``context_dim`` defaults to ``dim``.
    """

    def __init__(self, dim: int, num_heads: int = 8, context_dim: int | None = None,
                 qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 qk_scale: float | None = None) -> None:
        super().__init__(dim, num_heads, attn_drop, proj_drop, qk_scale)
        self.context_dim = context_dim or dim
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(self.context_dim, 2 * dim, bias=qkv_bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``key_padding_mask`` ``(B, Lc)`` masks the *context* tokens."""
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"CrossAttention x must be (B, L, {self.dim}), got {tuple(x.shape)}")
        if context.dim() != 3 or context.shape[-1] != self.context_dim \
                or context.shape[0] != x.shape[0]:
            raise ValueError(
                f"CrossAttention context must be ({x.shape[0]}, Lc, {self.context_dim}), "
                f"got {tuple(context.shape)}"
            )
        q = self._split_heads(self.q(x))
        k, v = self.kv(context).chunk(2, dim=-1)
        return self._attend(q, self._split_heads(k), self._split_heads(v),
                            key_padding_mask, attn_mask)
