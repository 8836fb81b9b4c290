"""Transformer building blocks shared by the five paper models.

Small, timm-like modules with explicit forwards: fused attention
(:func:`torch.nn.functional.scaled_dot_product_attention`) in training, explicit attention
weights on demand through :func:`capture_attention`.
"""

from vlbook.nn.attention import Attention, CrossAttention, merge_masks
from vlbook.nn.blocks import (
    Block,
    CrossBlock,
    DropPath,
    LayerScale,
    Mlp,
    Transformer,
    TransformerOutput,
    drop_path,
)
from vlbook.nn.capture import AttentionStore, capture_attention, supported_attention_modules
from vlbook.nn.embeddings import PatchEmbed2d, TubeletEmbed, sinusoid_position_table

__all__ = [
    "Attention",
    "AttentionStore",
    "Block",
    "CrossAttention",
    "CrossBlock",
    "DropPath",
    "LayerScale",
    "Mlp",
    "PatchEmbed2d",
    "Transformer",
    "TransformerOutput",
    "TubeletEmbed",
    "capture_attention",
    "drop_path",
    "merge_masks",
    "sinusoid_position_table",
    "supported_attention_modules",
]
