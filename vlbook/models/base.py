"""The surface every vlbook model offers.

``forward(batch)`` runs the pre-training step and returns a dict of losses with the total under
``"loss"``, so the trainer (and DDP, which only synchronises gradients of calls that go through
``forward``) can treat every paper alike. ``encode_video``/``encode_text`` give the unimodal
embeddings used by retrieval; paper modules add their downstream heads.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vlbook.registry import Registry

MODELS: Registry = Registry("model")

#: ``@register_model def allinone_tiny(**kwargs): ...`` registers a variant under its function
#: name (timm style), so every variant can be found with ``grep "def allinone_tiny"``.
register_model = MODELS.register()


class VLModel(nn.Module):
    """Base class of vlbook's video-language models."""

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:  # noqa: D401
        return self.pretrain_step(batch)

    def pretrain_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Losses of one pre-training step; the total is under ``"loss"``."""
        raise NotImplementedError

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Video embeddings ``(B, D)`` for retrieval from frames ``(B, T, C, H, W)``."""
        raise NotImplementedError

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text embeddings ``(B, D)`` for retrieval."""
        raise NotImplementedError
