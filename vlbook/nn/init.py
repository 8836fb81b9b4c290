"""Initialisation of additive position / time embeddings at small widths, and its diagnostic.

A ViT adds a learned position embedding (and a video model a temporal one) to each patch
token. The usual initialisations (N(0, 0.02), or zeros for the temporal table) are tuned for
pre-trained backbones at width 768, where the patch projection of a real image is itself
small. At a toy width trained from scratch the patch tokens are an order of magnitude larger
than the position and time vectors added to them: *what* is in a patch drowns *where* and
*when* it is, and a model learns colours long before it learns motion. Two helpers:

- :func:`init_additive_embedding_` draws such a table at a chosen scale (truncated normal at
  ``±2 std``, the timm/ViT convention) — a toy option a model config can expose;
- :func:`embedding_norms` measures the balance: the mean L2 norm of one token's content,
  position and time vectors, and their ratios to the content.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["embedding_norms", "init_additive_embedding_"]


@torch.no_grad()
def init_additive_embedding_(table: torch.Tensor, std: float) -> torch.Tensor:
    """Fill ``table`` in place with N(0, std²) truncated at ``±2 std``; returns ``table``.

    A vector of ``D`` such entries has an expected L2 norm of about ``0.88 std sqrt(D)``
    (the truncation removes ~12 % of the variance): at ``std=0.5`` and ``D=64`` about 3.5, the
    order of a toy model's patch tokens, against 0.14 at ViT's ``std=0.02``. ``std=0`` zeroes
    the table (ViLT / All-in-one's temporal embedding).
    """
    if std < 0:
        raise ValueError(f"init_additive_embedding_: std={std}; expected >= 0")
    if std == 0:
        return table.zero_()
    return nn.init.trunc_normal_(table, std=std, a=-2 * std, b=2 * std)


@torch.no_grad()
def embedding_norms(content: torch.Tensor, **additive: torch.Tensor) -> dict[str, float]:
    """Mean L2 norm of the ``content`` token vectors and of each ``additive`` table's vectors.

    ``content``: token vectors ``(..., D)`` (e.g. a patch projection's output);
    ``additive``: tables added to them, ``(..., D)`` each (e.g. ``position=pos_embed``,
    ``time=temporal_embed``). Returns ``{"content": c, name: n, f"{name}/content": n / c}``
    for every table: the ratio says how loud *where* / *when* is next to *what*.
    """
    dim = content.shape[-1]
    out = {"content": float(content.detach().reshape(-1, dim).norm(dim=-1).mean())}
    for name, table in additive.items():
        if table.shape[-1] != dim:
            raise ValueError(f"embedding_norms: {name} has width {table.shape[-1]}, content "
                             f"{dim}; expected the same last dimension")
        out[name] = float(table.detach().reshape(-1, dim).norm(dim=-1).mean())
    for name in additive:
        out[f"{name}/content"] = out[name] / max(out["content"], 1e-12)
    return out

