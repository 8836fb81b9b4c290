"""Pre-norm transformer blocks (ViT, Dosovitskiy et al. 2021, Eq. 2-3) and a block stack.

``Block``: ``x + DropPath(Attn(LN(x)))`` then ``x + DropPath(MLP(LN(x)))``, the layout of
every ViT-based encoder in the book (SimVTP, UMT student, All-in-one, E-ViLM).
``CrossBlock`` inserts a cross-attention sub-layer between the two (UMT stage-2 fusion layers,
BERT-style). Optional layer scale (``init_values``) follows VideoMAE/UMT checkpoints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from vlbook.nn.attention import Attention, CrossAttention
from vlbook.nn.dropout import FastDropout

__all__ = ["Block", "CrossBlock", "DropPath", "LayerScale", "Mlp", "Transformer",
           "TransformerOutput", "drop_path"]


def drop_path(x: torch.Tensor, drop_prob: float = 0.0, training: bool = False,
              scale_by_keep: bool = True) -> torch.Tensor:
    """Stochastic depth (Huang et al. 2016): drop whole residual branches per sample."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    mask = x.new_empty(shape).bernoulli_(keep)
    if scale_by_keep and keep > 0.0:
        mask = mask / keep
    return x * mask


class DropPath(nn.Module):
    """Module form of :func:`drop_path` (UMT uses 0.1 for ViT-B, 0.2 for ViT-L)."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_prob must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return drop_path(x, self.drop_prob, self.training, self.scale_by_keep)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Module):
    """Two-layer feed-forward network ``fc2(drop(act(fc1(x))))`` of a transformer block."""

    def __init__(self, in_features: int, hidden_features: int | None = None,
                 out_features: int | None = None,
                 act_layer: Callable[[], nn.Module] = nn.GELU, drop: float = 0.0) -> None:
        super().__init__()
        hidden_features = hidden_features or in_features
        out_features = out_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
        self.drop = FastDropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class LayerScale(nn.Module):
    """Per-channel learnable residual scale (CaiT), initialised to ``init_values``."""

    def __init__(self, dim: int, init_values: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def _layer_norm(dim: int) -> nn.Module:
    return nn.LayerNorm(dim, eps=1e-6)


class Block(nn.Module):
    """Pre-norm self-attention block (ViT Eq. 2-3)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool | str = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path: float = 0.0, init_values: float | None = None,
                 norm_layer: Callable[[int], nn.Module] = _layer_norm,
                 act_layer: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=drop)
        self.ls1 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.ls2 = LayerScale(dim, init_values) if init_values else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x), key_padding_mask, attn_mask)))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x


class CrossBlock(nn.Module):
    """Pre-norm block with self-attention, cross-attention to ``context``, then MLP.

    The fusion layer of UMT stage 2 (text tokens attend to video tokens, UMT Sec. 3.2) and of
    E-ViLM's cross-modal encoder.
    """

    def __init__(self, dim: int, num_heads: int, context_dim: int | None = None,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0,
                 attn_drop: float = 0.0, drop_path: float = 0.0,
                 norm_layer: Callable[[int], nn.Module] = _layer_norm,
                 act_layer: Callable[[], nn.Module] = nn.GELU) -> None:
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop,
                              proj_drop=drop)
        self.norm_cross = norm_layer(dim)
        self.cross_attn = CrossAttention(dim, num_heads, context_dim=context_dim,
                                         qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None,
                context_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), key_padding_mask, attn_mask))
        x = x + self.drop_path(self.cross_attn(self.norm_cross(x), context, context_padding_mask))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x


@dataclass
class TransformerOutput:
    """Output of :class:`Transformer` with ``return_hidden_states=True``.

    ``hidden_states[i]`` is the output of block ``i`` (before the final norm), so UMT's aligned
    layers 6..11 are ``hidden_states[6:12]``.
    """

    last_hidden_state: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...]


class Transformer(nn.Module):
    """A stack of :class:`Block` with linearly increasing drop-path and an optional final norm."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool | str = True, drop: float = 0.0, attn_drop: float = 0.0,
                 drop_path_rate: float = 0.0, init_values: float | None = None,
                 final_norm: bool = True,
                 norm_layer: Callable[[int], nn.Module] = _layer_norm) -> None:
        super().__init__()
        # stochastic depth grows linearly with depth (plain Python: works on the meta device)
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop, rate, init_values,
                  norm_layer)
            for rate in rates
        )
        self.norm = norm_layer(dim) if final_norm else nn.Identity()

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None,
                attn_mask: torch.Tensor | None = None,
                return_hidden_states: bool = False) -> torch.Tensor | TransformerOutput:
        hidden: list[torch.Tensor] = []
        for block in self.blocks:
            x = block(x, key_padding_mask, attn_mask)
            if return_hidden_states:
                hidden.append(x)
        out = self.norm(x)
        if return_hidden_states:
            return TransformerOutput(last_hidden_state=out, hidden_states=tuple(hidden))
        return out
