"""A tiny debugging model and dataset for the trainer, benchmarks and tests — not a paper.

``debug_tiny`` is a two-tower video/text dual encoder (2 pre-norm transformer layers per
tower, width 32) trained with a symmetric InfoNCE loss at a fixed temperature (the VTC shape
shared by the papers, e.g. UMT §3.2 / All-in-one §3.3), on :func:`debug_pairs`: an in-memory
set of random "clips" whose text is a class-specific token sequence and whose frames are a
class-specific random pattern plus noise. It learns in a few dozen CPU steps, which is all it
is for: exercising the training machinery quickly and deterministically. Its numbers mean
nothing about video-language pre-training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from vlbook.distributed import all_gather_with_grad, get_rank, get_world_size
from vlbook.models.base import VLModel, register_model


class _Tower(nn.Module):
    """Pre-norm transformer layers over tokens plus learned positions (a debugging encoder)."""

    def __init__(self, dim: int, depth: int, heads: int, num_tokens: int, dropout: float) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(
            nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout, batch_first=True, norm_first=True
            )
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, padding: torch.Tensor | None = None) -> torch.Tensor:
        x = tokens + self.pos_embed[:, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x, src_key_padding_mask=padding)
        return self.norm(x)


class DebugDualEncoder(VLModel):
    """Debugging dual encoder: patch-embedded frames and embedded tokens, mean-pooled, InfoNCE.

    ``forward(batch)`` returns ``{"loss", "loss_t2v", "loss_v2t", "acc_t2v"}``: the loss is the
    mean of the two cross-entropies of the similarity matrix (divided by ``temperature``) with
    the diagonal as target; ``acc_t2v`` is in-batch top-1 accuracy (not differentiated).
    """

    gathers_contrastive_features = False

    def __init__(
        self,
        dim: int = 32,
        depth: int = 2,
        heads: int = 2,
        num_frames: int = 2,
        image_size: int = 16,
        patch_size: int = 8,
        channels: int = 3,
        vocab_size: int = 64,
        max_text_len: int = 8,
        temperature: float = 0.1,
        dropout: float = 0.1,
        gather: bool = False,
    ) -> None:
        super().__init__()
        # gather=True: in-batch negatives from every process (vlbook.distributed), so a
        # multi-process step computes the loss of the whole global batch
        self.gathers_contrastive_features = gather
        if image_size % patch_size:
            raise ValueError(f"image_size={image_size} is not a multiple of patch={patch_size}")
        self.num_frames, self.image_size, self.channels = num_frames, image_size, channels
        self.vocab_size, self.max_text_len = vocab_size, max_text_len
        self.temperature = temperature
        patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(channels, dim, patch_size, patch_size)
        self.word_embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.video_tower = _Tower(dim, depth, heads, num_frames * patches, dropout)
        self.text_tower = _Tower(dim, depth, heads, max_text_len, dropout)
        self.video_proj = nn.Linear(dim, dim)
        self.text_proj = nn.Linear(dim, dim)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5:
            raise ValueError(f"video: expected (B, T, C, H, W), got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        tokens = self.patch_embed(video.flatten(0, 1))  # (B*T, D, h, w)
        tokens = tokens.flatten(2).transpose(1, 2).reshape(b, -1, tokens.shape[1])
        pooled = self.video_tower(tokens).mean(dim=1)
        return F.normalize(self.video_proj(pooled), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        keep = attention_mask.bool()
        x = self.text_tower(self.word_embed(input_ids), padding=~keep)
        weights = keep.unsqueeze(-1).to(x.dtype)
        pooled = (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return F.normalize(self.text_proj(pooled), dim=-1)

    def pretrain_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        video = self.encode_video(batch["video"])
        text = self.encode_text(batch["input_ids"], batch["attention_mask"])
        target = torch.arange(text.shape[0], device=text.device)
        if self.gathers_contrastive_features and get_world_size() > 1:
            offset = get_rank() * text.shape[0]  # equal local batches (the trainer's plan)
            all_video, all_text = all_gather_with_grad(video), all_gather_with_grad(text)
            logits = text @ all_video.t() / self.temperature
            loss_t2v = F.cross_entropy(logits, target + offset)
            loss_v2t = F.cross_entropy(video @ all_text.t() / self.temperature, target + offset)
            acc = (logits.argmax(dim=1) == target + offset).float().mean().detach()
            return {"loss": (loss_t2v + loss_v2t) / 2, "loss_t2v": loss_t2v.detach(),
                    "loss_v2t": loss_v2t.detach(), "acc_t2v": acc}
        logits = text @ video.t() / self.temperature
        loss_t2v = F.cross_entropy(logits, target)
        loss_v2t = F.cross_entropy(logits.t(), target)
        acc = (logits.argmax(dim=1) == target).float().mean().detach()
        return {
            "loss": (loss_t2v + loss_v2t) / 2,
            "loss_t2v": loss_t2v.detach(),
            "loss_v2t": loss_v2t.detach(),
            "acc_t2v": acc,
        }

    def example_batch(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, Any]:
        """A random batch of the right shapes (for benchmarks and FLOP counts)."""
        video = torch.randn(
            batch_size,
            self.num_frames,
            self.channels,
            self.image_size,
            self.image_size,
            generator=generator,
        )
        ids = torch.randint(
            1, self.vocab_size, (batch_size, self.max_text_len), generator=generator
        )
        return {
            "video": video,
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "video_index": torch.arange(batch_size),
            "text": [f"random caption {i}" for i in range(batch_size)],
        }


@register_model
def debug_tiny(**kwargs: Any) -> DebugDualEncoder:
    """The debugging dual encoder (see the module docstring)."""
    return DebugDualEncoder(**kwargs)


class DebugPairs(Dataset):
    """In-memory clip/caption pairs for the debugging model (deterministic from ``seed``).

    Clip ``i`` belongs to class ``i % num_classes``; its frames are the class pattern plus
    Gaussian noise of std ``noise``; its caption is ``[CLS]`` and ``text_len - 1`` tokens drawn
    once per class. Several clips of a class share a caption (set ``num_classes=num_clips`` for
    all-distinct pairs).
    """

    def __init__(
        self,
        num_clips: int = 64,
        num_classes: int | None = None,
        num_frames: int = 2,
        image_size: int = 16,
        channels: int = 3,
        vocab_size: int = 64,
        text_len: int = 8,
        noise: float = 0.5,
        seed: int = 0,
    ) -> None:
        num_classes = num_clips if num_classes is None else num_classes
        if num_clips < 1 or num_classes < 1:
            raise ValueError(f"num_clips={num_clips}, num_classes={num_classes}: expected >= 1")
        gen = torch.Generator().manual_seed(seed)
        shape = (num_frames, channels, image_size, image_size)
        patterns = torch.randn(num_classes, *shape, generator=gen)
        words = torch.randint(2, vocab_size, (num_classes, text_len - 1), generator=gen)
        self.labels = torch.arange(num_clips) % num_classes
        self.video = patterns[self.labels] + noise * torch.randn(num_clips, *shape, generator=gen)
        cls = torch.ones(num_clips, 1, dtype=torch.long)
        self.input_ids = torch.cat([cls, words[self.labels]], dim=1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = int(self.labels[index])
        return {
            "video": self.video[index],
            "input_ids": self.input_ids[index],
            "attention_mask": torch.ones_like(self.input_ids[index]),
            "video_index": torch.tensor(index),
            "label": torch.tensor(label),
            "text": f"debug caption of class {label}",
        }


def debug_pairs(**kwargs: Any) -> DebugPairs:
    """Factory of :class:`DebugPairs` (``data.name: debug_pairs`` in a training config)."""
    return DebugPairs(**kwargs)
