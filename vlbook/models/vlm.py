"""VLM: task-agnostic video-language pre-training of one BERT (Xu et al., 2021).

The model (VLM Sec. 3, Fig. 2-3):

* **Video tokens (Eq. 1).** A frozen video encoder gives one feature per time step (S3D, 512-d,
  one per second in the paper); a trainable MLP (Linear, GELU, LayerNorm, Linear: MMPT's
  ``VideoTokenMLP``) maps it to BERT's width.
* **One encoder (Eq. 2-3).** ``[CLS] v_1..v_T [SEP] t_1..t_n [SEP]`` goes through one
  ``transformers`` ``BertModel``; token type 0 for CLS/video/first SEP, 1 for text. Positions:
  CLS 0, video ``1..T``, the video's [SEP] ``max_video_len + 1`` and the text after it (MMPT's
  layout; contiguous when the video is padded to ``max_video_len``).
* **Shared head (Eq. 4).** BERT's MLM prediction transform ``e = W h + b`` is applied to video
  and text states alike; its decoder is tied to the word embeddings.
* **Masked modality model + masked token loss (Sec. 3.3, Eq. 8-9).** Per example: whole video
  masked (25 %), whole text masked (25 %) or MFM-MLM at 15 % (50 %); masked video tokens are
  zero vectors. A masked token's ``e`` is contrasted with its original token against the
  batch's non-masked video tokens and the vocabulary (:func:`vlbook.losses.masked_token_loss`).
  The MFM-MLM baseline (Eq. 5-7, ``loss="mfm_mlm"``) uses two separate losses.
* **Fine-tuning through attention masks only (Sec. 4, Fig. 3).** ``mode="isolated"``: video
  and text cannot attend each other (retrieval, step localisation, multiple choice,
  segmentation); ``mode="causal_text"``: text sees the video and the earlier text
  (captioning with the LM head reused).

Paper vs released code (``OFFICIAL_CODE_NOTES.md``), code by default:

* Word rows of the masked token loss get one extra zero logit in MMPT
  (``text_zero_logit=True``); Eq. 9 has none (``False``).
* The code's masked-token head has no vocabulary bias; MFM-MLM uses BERT's MLM bias.
* Retrieval fine-tuning: MMPT's loss is one direction (text to video) on raw dot products
  (``retrieval_directions="text_to_video"``); ``"both"`` is the symmetric variant.
* The masking plan draws two coins per example (counts vary per batch); ``exact_plan=True``
  gives every batch the paper's 25/25/50 proportions.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vlbook.config import Param, register_chapter_params, register_preset
from vlbook.losses import masked_token_loss, mfm_mlm_loss, mlm_loss, vtc_loss
from vlbook.masking import bernoulli_token_mask, mask_text_tokens, masked_modality_plan
from vlbook.models.base import MODELS, VLModel

__all__ = [
    "full_pretrain_config",
    "ATTENTION_MODES",
    "VLM",
    "VLMConfig",
    "VLMConversionResult",
    "VLMEncoding",
    "VLMPretrainOutput",
    "ToyFrameEncoder",
    "VideoTokenMLP",
    "evaluate_captioning",
    "evaluate_multiple_choice",
    "evaluate_retrieval",
    "evaluate_segmentation",
    "evaluate_step_localisation",
    "MaterialisedDataset",
    "extract_synthetic_features",
    "fit",
    "pretrain",
    "synthetic_datasets",
    "attention_mask_for",
    "convert_mmpt_state_dict",
    "load_bert_weights",
    "load_mmpt_checkpoint",
    "sliding_windows",
]

ATTENTION_MODES: tuple[str, ...] = ("joint", "isolated", "causal_text")
LOSSES: tuple[str, ...] = ("masked_token", "mfm_mlm")
DIRECTIONS: tuple[str, ...] = ("text_to_video", "both")


@dataclass
class VLMConfig:
    """Hyper-parameters of VLM (defaults: BERT-base uncased + the video MLP, Sec. 5.2)."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout: float = 0.1
    attention_dropout: float = 0.1
    feature_dim: int = 512  # S3D feature width
    max_video_len: int = 32  # video tokens (Sec. 5.2: 32 of the 96)
    max_len: int = 96  # whole sequence
    # special ids (BERT uncased defaults; set_tokenizer() replaces them)
    pad_token_id: int = 0
    cls_token_id: int = 101
    sep_token_id: int = 102
    mask_token_id: int = 103
    special_token_ids: tuple[int, ...] = (0, 100, 101, 102, 103)
    # pre-training (Sec. 3.3, 5.2)
    mmm_probability: float = 0.5
    whole_video_share: float = 0.5
    mfm_probability: float = 0.15
    mlm_probability: float = 0.15
    exact_plan: bool = False
    loss: str = "masked_token"
    text_zero_logit: bool = True
    # fine-tuning (Sec. 4)
    retrieval_directions: str = "text_to_video"
    retrieval_temperature: float | None = None  # None: raw dot products (MMPT)
    num_segment_classes: int = 0
    segment_window: int = 32
    segment_stride: int = 16
    # initialisation: None (random) or a BERT source (local dir or hub name)
    pretrained: str | None = None

    def __post_init__(self) -> None:
        self.special_token_ids = tuple(int(i) for i in self.special_token_ids)
        checks = [
            (self.loss in LOSSES, f"loss={self.loss!r}; accepted: {LOSSES}"),
            (self.retrieval_directions in DIRECTIONS,
             f"retrieval_directions={self.retrieval_directions!r}; accepted: {DIRECTIONS}"),
            (self.hidden_size % self.num_heads == 0,
             f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}"),
            (0 < self.max_video_len < self.max_len,
             f"max_video_len={self.max_video_len} must be in (0, max_len={self.max_len})"),
            (self.max_len + 2 <= self.max_position_embeddings,
             f"max_len={self.max_len} needs max_position_embeddings >= {self.max_len + 2}"),
            (0 < self.segment_stride <= self.segment_window,
             f"segment_stride={self.segment_stride} must be in (0, segment_window]"),
        ]
        for name in ("mmm_probability", "whole_video_share", "mfm_probability", "mlm_probability"):
            value = getattr(self, name)
            checks.append((0.0 <= value <= 1.0, f"{name}={value}; expected [0, 1]"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"VLMConfig: {message}")

    @property
    def max_text_len(self) -> int:
        """Text tokens + its [SEP] that fit after ``[CLS] video [SEP]`` (61 at paper size)."""
        return self.max_len - self.max_video_len - 2

    def bert_config(self) -> Any:
        from transformers import BertConfig

        return BertConfig(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            num_hidden_layers=self.num_layers, num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            max_position_embeddings=self.max_position_embeddings,
            type_vocab_size=self.type_vocab_size, hidden_dropout_prob=self.hidden_dropout,
            attention_probs_dropout_prob=self.attention_dropout, pad_token_id=self.pad_token_id,
            tie_word_embeddings=True, attn_implementation="sdpa",
        )


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


class VideoTokenMLP(nn.Module):
    """Trainable MLP from frozen video features to BERT's width (VLM Eq. 1; MMPT order:
    Linear, GELU, LayerNorm, Linear)."""

    def __init__(self, feature_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.input_proj = nn.Linear(feature_dim, hidden_size)
        self.norm = nn.LayerNorm(hidden_size, eps=1e-12)
        self.output_proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.output_proj(self.norm(F.gelu(self.input_proj(features))))


class ToyFrameEncoder(nn.Module):
    """Frozen stand-in for S3D on the synthetic clips: one ``feature_dim`` vector per frame.

    Each frame's background colour (its per-channel median) is subtracted first, so the
    objects, not the backdrop, drive the features; then a fixed random convolution (seeded,
    never trained), ReLU of both signs (``[relu(z), relu(-z)]``), average pooling to a
    ``grid x grid`` map, flattened: ``2 * channels * grid**2 = feature_dim``. The grid keeps
    coarse position and size, the random filters respond to colours and edges, so a single
    token says what is where; motion needs several tokens (the transformer's job).
    """

    def __init__(self, feature_dim: int = 512, grid: int = 4, kernel: int = 4,
                 seed: int = 0) -> None:
        super().__init__()
        if feature_dim % (2 * grid * grid):
            raise ValueError(f"feature_dim={feature_dim} is not a multiple of "
                             f"2 * grid**2={2 * grid**2}")
        self.grid = grid
        self.conv = nn.Conv2d(3, feature_dim // (2 * grid * grid), kernel, stride=kernel // 2,
                              padding=kernel // 4)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen) * 0.5)
            self.conv.bias.zero_()  # background (0 after subtraction) gives no response
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> ToyFrameEncoder:  # always frozen
        return super().train(False)

    @torch.no_grad()
    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """``(B, T, C, H, W)`` ImageNet-normalised frames to ``(B, T, feature_dim)``."""
        if video.dim() != 5:
            raise ValueError(f"video must be (B, T, C, H, W), got shape {tuple(video.shape)}")
        b, t = video.shape[:2]
        frames = video.flatten(0, 1)
        frames = frames - frames.flatten(2).median(dim=-1).values[..., None, None]
        z = self.conv(frames)
        x = F.adaptive_avg_pool2d(torch.cat([F.relu(z), F.relu(-z)], dim=1), self.grid)
        return x.reshape(b, t, -1)


@dataclass
class VLMEncoding:
    """One forward pass of the shared encoder, split by segment.

    ``hidden`` ``(B, N, D)`` last layer; ``video_hidden`` ``(B, T, D)``, ``text_hidden``
    ``(B, Lt, D)`` (text tokens and its final [SEP]); ``video_sep`` ``(B, D)``;
    ``video_valid`` / ``text_valid`` their non-padding masks.
    """

    hidden: torch.Tensor
    video_hidden: torch.Tensor | None
    text_hidden: torch.Tensor | None
    video_sep: torch.Tensor
    video_valid: torch.Tensor | None
    text_valid: torch.Tensor | None


@dataclass
class VLMPretrainOutput:
    """Losses and masking statistics of one pre-training step (VLM Eq. 5-9)."""

    loss: torch.Tensor
    video_loss: torch.Tensor
    text_loss: torch.Tensor
    num_masked_video: int
    num_masked_text: int
    whole_video: torch.Tensor
    whole_text: torch.Tensor


def attention_mask_for(mode: str, video_valid: torch.Tensor, text_valid: torch.Tensor,
                       ) -> torch.Tensor:
    """Boolean ``(B, 1, N, N)`` self-attention mask (True = may attend) of VLM's Fig. 3.

    Layout ``[CLS] video(T) [SEP] text(Lt)`` with ``N = T + 2 + Lt``. ``"joint"``: every
    valid token sees every valid token (pre-training). ``"isolated"``: the video group
    (CLS, video, first SEP) and the text group (text + its SEP) see only themselves
    (retrieval, localisation, multiple choice, segmentation). ``"causal_text"``: the video
    group sees itself, a text token sees the video group and the text up to itself
    (captioning). Padding is never a key; every query keeps itself so no row is empty.
    """
    if mode not in ATTENTION_MODES:
        raise ValueError(f"attention mode {mode!r}; accepted: {ATTENTION_MODES}")
    b, t = video_valid.shape
    device = video_valid.device
    ones = torch.ones(b, 1, dtype=torch.bool, device=device)
    keys = torch.cat([ones, video_valid.bool(), ones, text_valid.bool()], dim=1)  # (B, N)
    n = keys.shape[1]
    is_video_group = torch.zeros(n, dtype=torch.bool, device=device)
    is_video_group[: t + 2] = True
    allowed = keys[:, None, :].expand(b, n, n).clone()
    if mode != "joint":
        same_group = is_video_group[:, None] == is_video_group[None, :]
        if mode == "isolated":
            allowed &= same_group
        else:
            text_idx = torch.arange(n, device=device)
            causal = text_idx[None, :] <= text_idx[:, None]
            text_rows = ~is_video_group[:, None]
            video_cols = is_video_group[None, :]
            rule = torch.where(text_rows, video_cols | causal, same_group)
            allowed &= rule
    allowed |= torch.eye(n, dtype=torch.bool, device=device)
    return allowed[:, None]


def sliding_windows(length: int, window: int, stride: int) -> list[tuple[int, int]]:
    """Windows ``[start, end)`` covering ``length`` steps (VLM Sec. 5.1.2: 32 / 16 on COIN).

    The last window is aligned to the end so every step is covered.
    """
    if length <= window:
        return [(0, length)]
    starts = list(range(0, length - window + 1, stride))
    if starts[-1] + window < length:
        starts.append(length - window)
    return [(s, s + window) for s in starts]


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


class VLM(VLModel):
    """One BERT over ``[CLS] video [SEP] text [SEP]`` with VLM's objectives and heads."""

    def __init__(self, config: VLMConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        from transformers.models.bert.modeling_bert import BertModel, BertOnlyMLMHead

        config = config or VLMConfig()
        if overrides:
            config = VLMConfig(**{**asdict(config), **overrides})
        self.config = config
        bert_config = config.bert_config()
        self.video_mlp = VideoTokenMLP(config.feature_dim, config.hidden_size)
        self.encoder = BertModel(bert_config, add_pooling_layer=False)
        self.lm_head = BertOnlyMLMHead(bert_config)
        self.lm_head.predictions.decoder.weight = self.encoder.embeddings.word_embeddings.weight
        self.segment_head = (nn.Linear(config.hidden_size, config.num_segment_classes)
                             if config.num_segment_classes else None)
        self.frame_encoder: ToyFrameEncoder | None = None
        self._init_new_layers()
        if config.pretrained:
            load_bert_weights(self, config.pretrained)

    def _init_new_layers(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, std=0.02)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    # ---------------------------------------------------------------- setup
    def set_tokenizer(self, tokenizer: Any) -> None:
        """Take special ids from a Hugging Face tokenizer (vocabulary size must match)."""
        if len(tokenizer) > self.config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size "
                             f"is {self.config.vocab_size}")
        c = self.config
        c.pad_token_id, c.cls_token_id = int(tokenizer.pad_token_id), int(tokenizer.cls_token_id)
        c.sep_token_id, c.mask_token_id = int(tokenizer.sep_token_id), int(tokenizer.mask_token_id)
        c.special_token_ids = tuple(int(i) for i in tokenizer.all_special_ids)

    def attach_frame_encoder(self, frame_encoder: ToyFrameEncoder) -> None:
        """Let ``encode_video`` / ``pretrain_step`` accept frames ``(B, T, C, H, W)``."""
        self.frame_encoder = frame_encoder

    def table1_parameter_count(self) -> int:
        """Parameters counted by Table 1: BERT (embeddings, layers, MLM head) + video MLP."""
        return sum(p.numel() for name, p in self.named_parameters()
                   if not name.startswith("segment_head"))

    # ---------------------------------------------------------------- inputs
    def _features(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        if "video_features" in batch:
            feats = batch["video_features"]
            valid = batch.get("video_mask")
        elif "video" in batch and batch["video"].dim() == 3:
            feats, valid = batch["video"], batch.get("video_mask")
        elif "video" in batch:
            if self.frame_encoder is None:
                raise ValueError("batch has frames 'video' (B, T, C, H, W) but no frame encoder is "
                                 "attached; call attach_frame_encoder() or pass 'video_features'")
            feats, valid = self.frame_encoder(batch["video"]), None
        else:
            raise KeyError("VLM batch needs 'video_features' (B, T, feature_dim) or 'video'")
        if feats.dim() != 3 or feats.shape[-1] != self.config.feature_dim:
            raise ValueError(f"video_features must be (B, T, {self.config.feature_dim}), got "
                             f"{tuple(feats.shape)}")
        if feats.shape[1] > self.config.max_video_len:
            raise ValueError(f"video_features has {feats.shape[1]} tokens; max_video_len is "
                             f"{self.config.max_video_len}")
        if valid is None:
            valid = torch.ones(feats.shape[:2], dtype=torch.bool, device=feats.device)
        return feats, valid.bool()

    def _text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenizer ids ``[CLS] t.. [SEP] pad`` to the text segment ``t.. [SEP] pad``."""
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids and attention_mask must both be (B, L); got "
                             f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
        ids, valid = input_ids[:, 1:], attention_mask[:, 1:].bool()
        if ids.shape[1] > self.config.max_text_len:
            ids, valid = ids[:, : self.config.max_text_len], valid[:, : self.config.max_text_len]
        return ids, valid

    def _special(self, token_id: int, b: int, device: torch.device) -> torch.Tensor:
        ids = torch.full((b, 1), token_id, dtype=torch.long, device=device)
        return self.encoder.embeddings.word_embeddings(ids)

    def encode(
        self,
        video_tokens: torch.Tensor | None,
        video_valid: torch.Tensor | None,
        text_ids: torch.Tensor | None,
        text_valid: torch.Tensor | None,
        mode: str = "joint",
        text_embeds: torch.Tensor | None = None,
    ) -> VLMEncoding:
        """Run BERT on ``[CLS] video [SEP] text`` (VLM Eq. 2-3) under an attention ``mode``.

        ``video_tokens`` are MLP outputs ``(B, T, D)`` (``None``: no video tokens, a text-only
        pass); ``text_ids`` the text segment ``(B, Lt)`` (``None``: video-only pass).
        """
        c = self.config
        ref = video_tokens if video_tokens is not None else text_ids
        b, device = ref.shape[0], ref.device
        if video_tokens is None:
            video_tokens = torch.zeros(b, 0, c.hidden_size, device=device)
            video_valid = torch.zeros(b, 0, dtype=torch.bool, device=device)
        if text_ids is None and text_embeds is None:
            text_embeds = torch.zeros(b, 0, c.hidden_size, device=device)
            text_valid = torch.zeros(b, 0, dtype=torch.bool, device=device)
        elif text_embeds is None:
            text_embeds = self.encoder.embeddings.word_embeddings(text_ids)
        t, lt = video_tokens.shape[1], text_embeds.shape[1]
        embeds = torch.cat([self._special(c.cls_token_id, b, device), video_tokens,
                            self._special(c.sep_token_id, b, device), text_embeds], dim=1)
        positions = torch.cat([torch.arange(t + 1, device=device),
                               c.max_video_len + 1 + torch.arange(lt + 1, device=device)])
        token_types = torch.cat([torch.zeros(t + 2, dtype=torch.long, device=device),
                                 torch.ones(lt, dtype=torch.long, device=device)])
        mask = attention_mask_for(mode, video_valid, text_valid)
        hidden = self.encoder(
            inputs_embeds=embeds, attention_mask=mask,
            position_ids=positions[None].expand(b, -1),
            token_type_ids=token_types[None].expand(b, -1),
        ).last_hidden_state
        return VLMEncoding(
            hidden=hidden, video_hidden=hidden[:, 1: t + 1], text_hidden=hidden[:, t + 2:],
            video_sep=hidden[:, t + 1], video_valid=video_valid, text_valid=text_valid,
        )

    # ---------------------------------------------------------------- pre-training
    def pretrain_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        out = self.pretrain_losses(batch)
        return {"loss": out.loss, "video_loss": out.video_loss.detach(),
                "text_loss": out.text_loss.detach()}

    def pretrain_losses(self, batch: Mapping[str, Any],
                        generator: torch.Generator | None = None) -> VLMPretrainOutput:
        """Masked modality model + masked token loss (VLM Sec. 3.3, Eq. 8-9), or MFM-MLM."""
        c = self.config
        feats, video_valid = self._features(batch)
        text_ids, text_valid = self._text(batch["input_ids"], batch["attention_mask"])
        b = feats.shape[0]
        plan = masked_modality_plan(b, mmm_probability=c.mmm_probability,
                                    whole_video_share=c.whole_video_share, exact=c.exact_plan,
                                    generator=generator, device=feats.device)
        frame_mask = bernoulli_token_mask(video_valid, plan.video_probability(c.mfm_probability),
                                          generator=generator)
        text_masking = mask_text_tokens(
            text_ids, text_valid, mask_token_id=c.mask_token_id, vocab_size=c.vocab_size,
            ratio=plan.text_probability(c.mlm_probability), special_token_ids=c.special_token_ids,
            generator=generator,
        )
        tokens = self.video_mlp(feats)  # original tokens: targets (not detached, as MMPT)
        inputs = tokens.masked_fill(frame_mask[..., None], 0.0)  # masked video token = zeros
        enc = self.encode(inputs, video_valid, text_masking.input_ids, text_valid, "joint")
        transform = self.lm_head.predictions.transform
        text_picked = text_masking.labels != -100
        video_e = transform(enc.video_hidden[frame_mask])
        text_e = transform(enc.text_hidden[text_picked])
        args = (video_e, tokens[frame_mask], tokens[video_valid & ~frame_mask], text_e,
                text_masking.labels[text_picked], self.encoder.embeddings.word_embeddings.weight)
        if c.loss == "masked_token":
            out = masked_token_loss(*args, text_zero_logit=c.text_zero_logit)
        else:
            out = mfm_mlm_loss(*args, vocab_bias=self.lm_head.predictions.bias)
        return VLMPretrainOutput(
            loss=out.loss, video_loss=out.video_loss, text_loss=out.text_loss,
            num_masked_video=out.num_video_tokens, num_masked_text=out.num_text_tokens,
            whole_video=plan.whole_video, whole_text=plan.whole_text,
        )

    # ---------------------------------------------------------------- retrieval (Sec. 4.1)
    @staticmethod
    def _masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        w = valid.to(x.dtype)[..., None]
        return (x * w).sum(1) / w.sum(1).clamp(min=1.0)

    def _pool_video(self, enc: VLMEncoding) -> torch.Tensor:
        """Mean of the video tokens and the video's [SEP]."""
        states = torch.cat([enc.video_hidden, enc.video_sep[:, None]], dim=1)
        valid = torch.cat([enc.video_valid, enc.video_valid.new_ones(len(states), 1)], dim=1)
        return self._masked_mean(states, valid)

    def _pool_text(self, enc: VLMEncoding) -> torch.Tensor:
        """Mean of the text tokens (with the text's [SEP])."""
        return self._masked_mean(enc.text_hidden, enc.text_valid)

    def encode_video(self, video: torch.Tensor, video_mask: torch.Tensor | None = None,
                     ) -> torch.Tensor:
        """Pooled video states of a video-only pass (VLM Sec. 4.1, evaluation), ``(B, D)``.

        ``video``: features ``(B, T, feature_dim)`` or frames ``(B, T, C, H, W)`` (needs an
        attached frame encoder).
        """
        batch = {"video_features": video} if video.dim() == 3 else {"video": video}
        if video_mask is not None:
            batch["video_mask"] = video_mask
        feats, valid = self._features(batch)
        enc = self.encode(self.video_mlp(feats), valid, None, None, "isolated")
        return self._pool_video(enc)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled text states of a text-only pass (VLM Sec. 4.1, evaluation), ``(B, D)``."""
        ids, valid = self._text(input_ids, attention_mask)
        return self._pool_text(self.encode(None, None, ids, valid, "isolated"))

    def retrieval_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """In-batch contrastive loss on pooled states of one isolated-mask pass (Sec. 4.1).

        Raw dot products, no temperature (MMPT, ``retrieval_temperature=None``), or cosine
        similarities over a temperature; clips that share ``video_index`` are all positives of
        each other's captions.
        """
        feats, valid = self._features(batch)
        ids, text_valid = self._text(batch["input_ids"], batch["attention_mask"])
        enc = self.encode(self.video_mlp(feats), valid, ids, text_valid, "isolated")
        temperature = self.config.retrieval_temperature
        return vtc_loss(self._pool_video(enc), self._pool_text(enc),
                        temperature=temperature or 1.0, normalize=temperature is not None,
                        directions=self.config.retrieval_directions,
                        ids=batch.get("video_index")).loss

    # ---------------------------------------------------------------- captioning (Sec. 4.5)
    def caption_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Next-token loss through the causal text mask and the reused LM head (Fig. 3).

        Text segment input: ``[CLS] t_1 .. t_{n-1}`` (the tokenizer's CLS acts as the start
        token), labels ``t_1 .. t_n [SEP]``.
        """
        feats, valid = self._features(batch)
        ids, att = batch["input_ids"], batch["attention_mask"].bool()
        ids, att = ids[:, : self.config.max_text_len + 1], att[:, : self.config.max_text_len + 1]
        inputs, in_valid = ids[:, :-1], att[:, :-1]
        labels = ids[:, 1:].masked_fill(~att[:, 1:], -100)
        enc = self.encode(self.video_mlp(feats), valid, inputs, in_valid, "causal_text")
        return mlm_loss(self.lm_head(enc.text_hidden), labels)

    @torch.no_grad()
    def generate_caption(self, video: torch.Tensor, video_mask: torch.Tensor | None = None,
                         max_length: int = 20, num_beams: int = 1) -> list[list[int]]:
        """Greedy (``num_beams=1``) or beam-search captions, ids without CLS/SEP (Sec. 4.5)."""
        batch = {"video_features": video} if video.dim() == 3 else {"video": video}
        if video_mask is not None:
            batch["video_mask"] = video_mask
        feats, valid = self._features(batch)
        tokens = self.video_mlp(feats)
        return [self._beam_search(tokens[i: i + 1], valid[i: i + 1], max_length, num_beams)
                for i in range(len(tokens))]

    def _next_logprobs(self, tokens: torch.Tensor, valid: torch.Tensor,
                       prefixes: torch.Tensor) -> torch.Tensor:
        k = prefixes.shape[0]
        enc = self.encode(tokens.expand(k, -1, -1), valid.expand(k, -1), prefixes,
                          torch.ones_like(prefixes, dtype=torch.bool), "causal_text")
        return F.log_softmax(self.lm_head(enc.text_hidden[:, -1]), dim=-1)

    def _beam_search(self, tokens: torch.Tensor, valid: torch.Tensor, max_length: int,
                     num_beams: int) -> list[int]:
        c = self.config
        banned = [i for i in c.special_token_ids if i != c.sep_token_id]
        beams = [([c.cls_token_id], 0.0)]
        finished: list[tuple[list[int], float]] = []
        for _ in range(max_length):
            prefixes = torch.tensor([seq for seq, _ in beams], device=tokens.device)
            logp = self._next_logprobs(tokens, valid, prefixes)
            logp[:, banned] = float("-inf")
            scores = logp + torch.tensor([s for _, s in beams], device=logp.device)[:, None]
            top = scores.flatten().topk(num_beams)
            candidates = []
            for score, flat in zip(top.values.tolist(), top.indices.tolist()):
                beam, word = divmod(flat, logp.shape[1])
                seq = beams[beam][0] + [word]
                (finished if word == c.sep_token_id else candidates).append((seq, score))
            beams = candidates
            if len(finished) >= num_beams or not beams:
                break
        pool = finished or beams
        best = max(pool, key=lambda item: item[1] / max(len(item[0]) - 1, 1))[0]
        return [i for i in best[1:] if i != c.sep_token_id]

    # ---------------------------------------------------------------- token-level tasks
    def frame_states(self, video: torch.Tensor, video_mask: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """Last-layer video token states of a video-only isolated pass, ``(B, T, D)``."""
        batch = {"video_features": video} if video.dim() == 3 else {"video": video}
        if video_mask is not None:
            batch["video_mask"] = video_mask
        feats, valid = self._features(batch)
        return self.encode(self.video_mlp(feats), valid, None, None, "isolated").video_hidden, valid

    def step_scores(self, video: torch.Tensor, step_ids: torch.Tensor, step_mask: torch.Tensor,
                    video_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Frame-to-step log-probabilities ``(B, T, K)``: dot products of frame states with
        pooled step texts, softmax over the K steps (VLM Sec. 4.3). ``step_ids``
        ``(B, K, L)``."""
        frames, _ = self.frame_states(video, video_mask)
        b, k, length = step_ids.shape
        steps = self.encode_text(step_ids.reshape(b * k, length),
                                 step_mask.reshape(b * k, length)).reshape(b, k, -1)
        return F.log_softmax(torch.einsum("btd,bkd->btk", frames, steps), dim=-1)

    def segment_logits(self, video: torch.Tensor, video_mask: torch.Tensor | None = None,
                       ) -> torch.Tensor:
        """Per-video-token class logits ``(B, T, C)`` (VLM Sec. 4.2, one window)."""
        if self.segment_head is None:
            raise RuntimeError("no segmentation head: build the model with num_segment_classes>0 "
                               "or call build_segment_head()")
        frames, _ = self.frame_states(video, video_mask)
        return self.segment_head(frames)

    def build_segment_head(self, num_classes: int) -> nn.Linear:
        self.config.num_segment_classes = num_classes
        self.segment_head = nn.Linear(self.config.hidden_size, num_classes)
        nn.init.normal_(self.segment_head.weight, std=0.02)
        nn.init.zeros_(self.segment_head.bias)
        return self.segment_head

    @torch.no_grad()
    def segment_long_video(self, features: torch.Tensor) -> torch.Tensor:
        """Logits ``(T, C)`` of a video of any length ``(T, feature_dim)``: windows of
        ``segment_window`` every ``segment_stride`` steps, overlapping logits averaged
        (VLM Sec. 5.1.2, COIN)."""
        c = self.config
        total = torch.zeros(features.shape[0], c.num_segment_classes, device=features.device)
        count = torch.zeros(features.shape[0], 1, device=features.device)
        for start, end in sliding_windows(features.shape[0], c.segment_window, c.segment_stride):
            total[start:end] += self.segment_logits(features[None, start:end])[0]
            count[start:end] += 1
        return total / count

    def segment_loss(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Cross-entropy of per-token classes; ``batch["frame_labels"]`` ``(B, T)``, -100 = none."""
        feats, valid = self._features(batch)
        logits = self.segment_logits(feats, valid)
        labels = batch["frame_labels"].masked_fill(~valid, -100)
        return F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)

    # ---------------------------------------------------------------- benchmark
    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None,
                      ) -> dict[str, torch.Tensor]:
        """A random pre-training batch of the configured sizes (for tests and benchmarks)."""
        c = self.config
        t, lt = c.max_video_len, c.max_text_len + 1
        ids = torch.randint(max(c.special_token_ids) + 1, c.vocab_size, (batch_size, lt),
                            generator=generator)
        ids[:, 0] = c.cls_token_id
        ids[:, -1] = c.sep_token_id
        return {
            "video_features": torch.randn(batch_size, t, c.feature_dim, generator=generator),
            "video_mask": torch.ones(batch_size, t, dtype=torch.bool),
            "input_ids": ids,
            "attention_mask": torch.ones(batch_size, lt, dtype=torch.long),
            "video_index": torch.arange(batch_size),
        }


# --------------------------------------------------------------------------------------------
# variants and presets
# --------------------------------------------------------------------------------------------

_VARIANTS: dict[str, dict[str, Any]] = {
    # VLM = BERT-base uncased + the video MLP (Table 1, Sec. 5.2)
    "vlm_base": {},
    # toy width for the synthetic benchmark: 16 frame tokens, short captions
    "vlm_toy": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256,
                "vocab_size": 512, "max_position_embeddings": 64, "max_video_len": 16,
                "max_len": 48, "hidden_dropout": 0.0, "attention_dropout": 0.0},
}


def _make_factory(defaults: dict[str, Any]) -> Any:
    def factory(**kwargs: Any) -> VLM:
        return VLM(VLMConfig(**{**defaults, **kwargs}))

    return factory


for _name, _defaults in _VARIANTS.items():
    MODELS.register(_name)(_make_factory(_defaults))


register_preset(
    "vlm",
    {
        "smoke": {
            "model": {"name": "vlm_toy", "kwargs": {"hidden_size": 32, "num_layers": 1,
                                                    "num_heads": 2, "intermediate_size": 64,
                                                    "max_video_len": 8, "max_len": 32}},
            "data": {"synthetic": "smoke", "max_len": 24, "feature_dim": 512},
            "train": {"steps": 8, "batch_size": 16, "lr": 1e-3, "weight_decay": 0.01,
                      "warmup_steps": 1, "schedule": "linear", "betas": (0.9, 0.98),
                      "clip_grad_norm": 2.0},
            "finetune": {"steps": 4, "batch_size": 16, "lr": 1e-3, "videos": None},
            "eval": {"max_items": 16, "caption_items": 4, "num_beams": 2, "max_caption_len": 8},
            "ablation": {"steps": 8, "finetune_steps": 2, "eval_items": 16,
                         "mmm": [0.0, 0.3, 0.5, 0.7], "losses": ["masked_token", "mfm_mlm"]},
        },
        "toy": {
            "model": {"name": "vlm_toy", "kwargs": {}},
            "data": {"synthetic": "toy", "max_len": 24, "feature_dim": 512},
            # a constant 2e-3 after warm-up: retrieval after fine-tuning beats training
            # from scratch only after ~750 pre-training steps at this width (measured)
            "train": {"steps": 800, "batch_size": 64, "lr": 2e-3, "weight_decay": 0.01,
                      "warmup_steps": 25, "schedule": "constant", "betas": (0.9, 0.98),
                      "clip_grad_norm": 2.0},
            "finetune": {"steps": 150, "batch_size": 64, "lr": 1e-3, "videos": 200},
            "eval": {"max_items": 500, "caption_items": 60, "num_beams": 3,
                     "max_caption_len": 20},
            # rows share the main run's length (MMM 50 % is the main run): shorter
            # pre-training (300 steps measured) is still in the phase where it hurts
            # fine-tuning and the rows say nothing. Each row costs ~50 s CPU; the notebook
            # trains them side by side, one per core (vlbook.parallel.map_runs).
            "ablation": {"steps": 800, "finetune_steps": 80, "eval_items": 500,
                         "mmm": [0.0, 0.3, 0.5, 0.7], "losses": ["masked_token", "mfm_mlm"]},
        },
        "full": {
            # Sec. 5.2 + MMPT: HowTo100M S3D features, BERT-base uncased, batch 256 (8 videos x
            # 32 clips) on 8 GPUs, Adam (0.9, 0.98) lr 5e-5, 1000 warm-up steps, polynomial
            # decay, clip 2.0, fp16, 15 epochs; fine-tuning: same with 122 warm-up steps.
            "model": {"name": "vlm_base", "kwargs": {"pretrained": "bert-base-uncased"}},
            "data": {"datasets": ["howto100m"], "name": "feature_text", "max_len": 61,
                     "max_video_len": 32, "feature_dim": 512},
            "train": {"epochs": 15, "batch_size": 256, "lr": 5e-5, "weight_decay": 0.0,
                      "warmup_steps": 1000, "schedule": "polynomial", "betas": (0.9, 0.98),
                      "clip_grad_norm": 2.0, "precision": "fp16", "max_per_device_batch": 32},
            "finetune": {"epochs": 10, "batch_size": 256, "lr": 5e-5, "warmup_steps": 122,
                         "videos": None},
            "eval": {"max_items": None, "caption_items": None, "num_beams": 5,
                     "max_caption_len": 20},
            "ablation": {"steps": None, "finetune_steps": None, "eval_items": None,
                         "mmm": [0.0, 0.3, 0.5, 0.7], "losses": ["masked_token", "mfm_mlm"]},
        },
    },
)


register_chapter_params("vlm", (
    Param("run_ablation", True, type=bool, help="train the Table 8-9 ablation models"),
))

#: The paper's numbers the chapter compares with (YouCook2 / MSR-VTT / COIN / CrossTask).
#: Percent units like vlbook's metrics: the paper's CIDEr 1.3869 is 138.69 here.
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "table1_params_M": {"VLM": 110.0},
    "table2_msrvtt_retrieval": {"R@1": 28.10, "R@5": 55.50, "R@10": 67.40, "MdR": 4.0},
    "table3_youcook_retrieval": {"R@1": 27.05, "R@5": 56.88, "R@10": 69.38, "MdR": 4.0},
    "table4_coin_segmentation": {"frame accuracy": 68.39},
    "table5_crosstask": {"zero-shot": 28.5, "supervised": 46.5},
    "table6_msrvtt_mc": {"accuracy": 91.64},
    "table7_youcook_captioning": {"BLEU-3": 17.78, "BLEU-4": 12.27, "METEOR": 18.22,
                                  "ROUGE-L": 41.51, "CIDEr": 138.69},
}
#: Tables 8 (retrieval R@1, YouCook2) and 9 (captioning BLEU-4 / CIDEr) ablation rows.
PAPER_ABLATION: dict[str, dict[str, float]] = {
    "MMM 50%": {"R@1": 27.05, "BLEU-4": 12.27, "CIDEr": 138.69},
    "MMM 0%": {"R@1": 15.12, "BLEU-4": 10.54, "CIDEr": 121.63},
    "MMM 30%": {"R@1": 25.30, "BLEU-4": 11.30, "CIDEr": 132.15},
    "MMM 70%": {"R@1": 25.17, "BLEU-4": 11.68, "CIDEr": 137.39},
    "MFM-MLM loss": {"R@1": 26.93, "BLEU-4": 11.53, "CIDEr": 132.24},
}


# --------------------------------------------------------------------------------------------
# weights: BERT initialisation and the official MMPT checkpoint
# --------------------------------------------------------------------------------------------


def load_bert_weights(model: VLM, source: str | Path) -> list[str]:
    """Initialise the encoder and LM head from a BERT MLM checkpoint (Sec. 5.2).

    ``source``: a local folder, a name looked up under ``weights_root()`` first, or a hub
    name. Returns the model tensors left at their initial values (the video MLP, ...).
    """
    from transformers import BertForMaskedLM

    from vlbook.paths import weights_root

    candidates = [Path(source)] if Path(source).exists() else []
    local = weights_root() / str(source)
    if local.exists():
        candidates.insert(0, local)
    target = str(candidates[0]) if candidates else str(source)
    try:
        bert = BertForMaskedLM.from_pretrained(target)
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"cannot load BERT weights {source!r}: not found at {local} nor on the hub "
            f"(offline? put a save_pretrained() copy of {source} in {local}): {err}"
        ) from err
    own = model.state_dict()
    loaded = {f"encoder.{k}": v for k, v in bert.bert.state_dict().items()}
    loaded.update({f"lm_head.{k}": v for k, v in bert.cls.state_dict().items()})
    loaded = {k: v for k, v in loaded.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(loaded, strict=False)
    return sorted(k for k in own if k not in loaded)


@dataclass
class VLMConversionResult:
    """A state dict in vlbook names plus what the mapping dropped or could not place."""

    state_dict: dict[str, torch.Tensor]
    mapping: dict[str, str] = field(default_factory=dict)  # official name -> vlbook name
    dropped: list[str] = field(default_factory=list)  # official tensors vlbook does not use
    unmapped: list[str] = field(default_factory=list)  # official tensors with no rule


_MMPT_COMPONENT = re.compile(r"^(?:[\w]+\.)*?(videomlp|bert|cls)\.(.+)$")
_MMPT_RENAMES: tuple[tuple[str, str], ...] = (
    ("videomlp.linear1.", "video_mlp.input_proj."),
    ("videomlp.LayerNorm.", "video_mlp.norm."),
    ("videomlp.linear2.", "video_mlp.output_proj."),
    ("bert.embeddings.", "encoder.embeddings."),
    ("bert.encoder.", "encoder.encoder."),
    ("cls.predictions.", "lm_head.predictions."),
)
_MMPT_DROPPED = ("bert.pooler.", "bert.embeddings.position_ids")


def convert_mmpt_state_dict(state_dict: Mapping[str, torch.Tensor]) -> VLMConversionResult:
    """Rename a fairseq MMPT VLM checkpoint (``MMBertForMTM`` / ``MMBertForJoint``) to vlbook.

    Any wrapper prefix (``mmmodel.``, ``model.``, ``mm_encoder.``, ``video_encoder.``) is
    stripped up to the first ``videomlp.`` / ``bert.`` / ``cls.``. BERT's sub-module names
    (``encoder.layer.N.attention.self.query`` ...) are the same in MMPT's transformers 3 and
    in vlbook's ``BertModel``. The pooler is dropped (VLM never uses it); the decoder weight
    maps to the tied word embeddings.
    """
    result = VLMConversionResult(state_dict={})
    for name, tensor in state_dict.items():
        match = _MMPT_COMPONENT.match(name)
        if match is None:
            result.unmapped.append(name)
            continue
        local = f"{match.group(1)}.{match.group(2)}"
        if local.startswith(_MMPT_DROPPED):
            result.dropped.append(name)
            continue
        if local == "cls.predictions.decoder.weight":
            new = "encoder.embeddings.word_embeddings.weight"
            if new in result.state_dict or any(
                    k.endswith("bert.embeddings.word_embeddings.weight") for k in state_dict):
                result.dropped.append(name)  # tied: the word embeddings are authoritative
                continue
        else:
            for old, replacement in _MMPT_RENAMES:
                if local.startswith(old):
                    new = replacement + local[len(old):]
                    break
            else:
                result.unmapped.append(name)
                continue
        result.mapping[name] = new
        result.state_dict[new] = tensor
    return result


def load_mmpt_checkpoint(model: VLM, path: str | Path) -> VLMConversionResult:
    """Load an MMPT ``checkpoint_best.pt`` (fairseq: weights under ``"model"``) into ``model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MMPT checkpoint {path} does not exist")
    raw = torch.load(path, map_location="cpu", weights_only=False)
    state = raw.get("model", raw) if isinstance(raw, dict) else raw
    result = convert_mmpt_state_dict(state)
    own = model.state_dict()
    bad = [k for k, v in result.state_dict.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{path}: {len(bad)} converted tensor(s) do not fit the model "
                         f"(name or shape): {bad[:5]}")
    missing = [k for k in own if k not in result.state_dict
               and k != "lm_head.predictions.decoder.weight" and not k.startswith("segment_head")]
    if missing:
        warnings.warn(f"{path} lacks {len(missing)} model tensor(s), kept at initial values: "
                      f"{missing[:6]}", stacklevel=2)
    model.load_state_dict(result.state_dict, strict=False)
    return result


def mmpt_names(model: VLM) -> dict[str, str]:
    """vlbook name -> MMPT name of every tensor (for checks of the converter)."""
    names = {}
    for name in model.state_dict():
        if name == "lm_head.predictions.decoder.weight" or name.startswith("segment_head"):
            continue
        for old, replacement in _MMPT_RENAMES:
            if name.startswith(replacement):
                names[name] = "mmmodel.mm_encoder." + old + name[len(replacement):]
                break
    return names


# --------------------------------------------------------------------------------------------
# chapter helpers: toy features, datasets, fine-tuning and evaluation
# --------------------------------------------------------------------------------------------


def config_summary(config: VLMConfig) -> dict[str, Any]:
    """The config as a plain dict (for results files)."""
    return asdict(config)


def extract_synthetic_features(root: str | Path, encoder: ToyFrameEncoder | None = None,
                               splits: Sequence[str] = ("train", "val", "test"),
                               batch_size: int = 32) -> Path:
    """Run the frozen toy encoder over the synthetic mp4s; write VLM feature files.

    Writes ``root/vlm_features/features/<video_id>.npy`` ``(frames, 512)`` with
    :func:`vlbook.data.features.write_features` (one token per frame: the toy clips are two
    seconds long, so "one per second" would leave two tokens), and
    ``root/vlm_features/feature_text_<split>.jsonl`` records (times in frame units) so the
    ``feature_text`` dataset reads them. Reused when present for the same encoder seed.
    """
    from vlbook.data.annotations import read_jsonl, write_jsonl
    from vlbook.data.features import write_features
    from vlbook.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from vlbook.data.video import read_frames

    root = Path(root)
    encoder = encoder or ToyFrameEncoder()
    out = root / "vlm_features"
    tag = {"version": 2, "conv_shape": list(encoder.conv.weight.shape),
           "checksum": float(encoder.conv.weight.double().sum())}
    meta = out / "extractor.json"
    done = (meta.is_file() and json.loads(meta.read_text()) == tag
            and all((out / f"feature_text_{s}.jsonl").is_file() for s in splits))
    if done:
        return out
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    num_frames = json.loads((root / "manifest.json").read_text())["settings"]["num_frames"]
    for split in splits:
        records = read_jsonl(root / f"retrieval_{split}.jsonl", "retrieval")
        rows = []
        for start in range(0, len(records), batch_size):
            chunk = records[start: start + batch_size]
            frames = np.stack([read_frames(root / r["video"], range(num_frames)) for r in chunk])
            video = torch.from_numpy(frames).permute(0, 1, 4, 2, 3).float() / 255.0
            video = (video - mean) / std
            feats = encoder(video).numpy()
            for rec, f in zip(chunk, feats):
                rel = f"features/{rec['video_id']}.npy"
                write_features(out / rel, f)
                n = len(rec["captions"])
                rows.append({"video_id": rec["video_id"], "features": rel,
                             "captions": rec["captions"], "starts": [0.0] * n,
                             "ends": [float(num_frames)] * n})
        write_jsonl(out / f"feature_text_{split}.jsonl", rows, overwrite=True)
    meta.write_text(json.dumps(tag))
    return out


def synthetic_datasets(preset: Mapping[str, Any], root: str | Path | None = None) -> dict[str, Any]:
    """Toy VLM data: frozen features of the synthetic clips and their ``feature_text`` sets.

    Returns ``{"root", "features", "tokenizer", "num_frames", "fps", "train", "test"}``;
    ``train`` / ``test`` are :class:`vlbook.data.features.FeatureTextDataset` (one item per
    caption).
    """
    from vlbook.data import build_dataset
    from vlbook.data.synthetic import ensure_synthetic
    from vlbook.data.tokenizer import load_tokenizer

    data = preset["data"]
    root = Path(root) if root is not None else ensure_synthetic(data["synthetic"])
    settings = json.loads((root / "manifest.json").read_text())["settings"]
    features = extract_synthetic_features(root)
    tokenizer = load_tokenizer(root / "tokenizer")
    common = dict(tokenizer=tokenizer, max_len=data["max_len"],
                  max_video_len=settings["num_frames"], feature_dim=data["feature_dim"])
    return {
        "root": root, "features": features, "tokenizer": tokenizer,
        "num_frames": settings["num_frames"], "fps": settings["fps"],
        "max_len": data["max_len"],
        "train": MaterialisedDataset(build_dataset(
            "feature_text", annotation=features / "feature_text_train.jsonl", split="train",
            **common)),
        "test": MaterialisedDataset(build_dataset(
            "feature_text", annotation=features / "feature_text_test.jsonl", split="test",
            **common)),
    }


class MaterialisedDataset(torch.utils.data.Dataset):
    """Every sample of a dataset read once and kept in memory (same ``items`` / ``collate``).

    The toy captions span their whole clip, so a ``feature_text`` training sample is the same
    at every epoch; keeping them saves the per-step ``.npy`` reads and tokenisation.
    """

    def __init__(self, dataset: Any) -> None:
        self.samples = [dataset[i] for i in range(len(dataset))]
        self.items = list(getattr(dataset, "items", range(len(dataset))))
        self.collate = dataset.collate

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.samples[index]


def build_chapter_model(preset: Mapping[str, Any], data: Mapping[str, Any],
                        **overrides: Any) -> VLM:
    """The preset's model sized to the tokenizer and clip length, with its special ids."""
    from vlbook.models import create_model

    spec = preset["model"]
    tokenizer = data["tokenizer"]
    kwargs = {**spec.get("kwargs", {}), "vocab_size": len(tokenizer),
              "max_video_len": data["num_frames"],
              "max_len": data["num_frames"] + data["max_len"] + 1, **overrides}
    kwargs["max_position_embeddings"] = max(kwargs.get("max_position_embeddings", 64),
                                            kwargs["max_len"] + 2)
    model = create_model(spec["name"], **kwargs)
    model.set_tokenizer(tokenizer)
    return model


@dataclass
class FitResult:
    """Loss curve of a :func:`fit` run."""

    losses: list[float]
    steps: int
    seconds: float


def fit(model: nn.Module, dataset: Any, loss_fn: Any, *, steps: int, lr: float,
        batch_size: int, weight_decay: float = 0.01, warmup_steps: int | None = None,
        betas: tuple[float, float] = (0.9, 0.98), clip_grad_norm: float | None = 2.0,
        seed: int = 0, schedule: str = "linear", **_: Any) -> FitResult:
    """A short in-process run: AdamW, warm-up then decay, gradient clipping (Sec. 5.2).

    ``loss_fn(model, batch) -> tensor``; ``dataset`` is cycled with a seeded shuffle.
    """
    import time

    from torch.utils.data import DataLoader

    from vlbook.train.optim import build_optimizer
    from vlbook.train.schedules import lr_multiplier

    torch.manual_seed(seed)
    optimizer = build_optimizer(model, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    warmup = max(steps // 10, 0) if warmup_steps is None else min(warmup_steps, steps // 5)
    gen = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=min(batch_size, len(dataset)), shuffle=True,
                        drop_last=True, generator=gen,
                        collate_fn=getattr(dataset, "collate", None))
    model.train()
    losses: list[float] = []
    start = time.perf_counter()
    epoch = 0
    while len(losses) < steps:
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        for batch in loader:
            if len(losses) >= steps:
                break
            for group in optimizer.param_groups:
                group["lr"] = lr * lr_multiplier(len(losses), warmup_steps=warmup,
                                                 total_steps=steps, kind=schedule)
            loss = loss_fn(model, batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm:
                nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            losses.append(float(loss.detach()))
        epoch += 1
    model.eval()
    return FitResult(losses=losses, steps=len(losses), seconds=time.perf_counter() - start)


def pretrain(model: VLM, dataset: Any, preset: Mapping[str, Any], *, steps: int | None = None,
             seed: int = 0) -> FitResult:
    """Toy pre-training with the model's objective (MMM + masked token loss by default)."""
    t = dict(preset["train"])
    t["steps"] = steps or t["steps"]
    return fit(model, dataset, lambda m, b: m.pretrain_step(b)["loss"], seed=seed, **t)


def full_pretrain_config(preset: Mapping[str, Any], *, seed: int = 0,
                         output_dir: str | Path = "") -> Any:
    """The ``full`` pre-training run of ``preset`` as a :class:`vlbook.train.TrainConfig`:
    the masked modality model on the HowTo100M S3D features prepared by ``vlbook-data prepare
    howto100m`` (Sec. 5.2 hyper-parameters, BERT-base tokenizer)."""
    from vlbook.train import config_from_preset

    data = dict(preset["data"])
    name = data.pop("name", "feature_text")
    data.pop("synthetic", None)
    if data.get("datasets"):
        data.setdefault("tokenizer", "bert-base-uncased")
    return config_from_preset({"name": preset["model"]["name"],
                               "kwargs": preset["model"].get("kwargs", {})},
                              {"name": name, "kwargs": data}, preset["train"], seed=seed,
                              output_dir=str(output_dir))


def _feature_bank(features: Path, split: str) -> tuple[list[dict[str, Any]], dict[str, int]]:
    from vlbook.data.annotations import read_jsonl

    records = read_jsonl(features / f"feature_text_{split}.jsonl", "feature_text")
    return records, {r["video_id"]: i for i, r in enumerate(records)}


def _stack_features(features: Path, records: Sequence[Mapping[str, Any]]) -> torch.Tensor:
    from vlbook.data.features import load_features

    return torch.from_numpy(np.stack([load_features(features / r["features"]) for r in records]))


@torch.no_grad()
def _encode_in_batches(fn: Any, *tensors: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    return torch.cat([fn(*(t[i: i + batch_size] for t in tensors))
                      for i in range(0, len(tensors[0]), batch_size)])


@torch.no_grad()
def evaluate_retrieval(model: VLM, data: Mapping[str, Any], split: str = "test",
                       max_videos: int | None = None) -> Any:
    """Text-to-video retrieval with separately encoded video and text (VLM Sec. 4.1).

    Every caption of the first ``max_videos`` clips is a query; returns a
    :class:`vlbook.eval.RetrievalResult` (R@1/5/10, MdR in percent/ranks).
    """
    from vlbook.data.tokenizer import tokenize
    from vlbook.eval import RetrievalProtocol, retrieval_metrics

    model.eval()
    records, _ = _feature_bank(data["features"], split)
    records = records[:max_videos] if max_videos else records
    video = _stack_features(data["features"], records)
    texts = [c for r in records for c in r["captions"]]
    text_to_video = torch.tensor([i for i, r in enumerate(records) for _ in r["captions"]])
    ids, att = tokenize(data["tokenizer"], texts, data["max_len"])
    video_emb = _encode_in_batches(model.encode_video, video)
    text_emb = _encode_in_batches(model.encode_text, ids, att)
    return retrieval_metrics(text_emb @ video_emb.T, text_to_video,
                             RetrievalProtocol(captions_per_video="all"))


@torch.no_grad()
def evaluate_multiple_choice(model: VLM, data: Mapping[str, Any], split: str = "test",
                             max_items: int | None = None) -> dict[str, float]:
    """Multiple choice by video-answer similarity of separate passes (VLM Sec. 4.4, Table 6)."""
    from vlbook.data.annotations import read_jsonl
    from vlbook.data.tokenizer import tokenize
    from vlbook.eval import multiple_choice_breakdown

    model.eval()
    records, index = _feature_bank(data["features"], split)
    questions = read_jsonl(data["root"] / f"mc_{split}.jsonl", "mc")
    questions = [q for q in questions if q["video_id"] in index][:max_items]
    video = _stack_features(data["features"], [records[index[q["video_id"]]] for q in questions])
    k = len(questions[0]["options"])
    ids, att = tokenize(data["tokenizer"], [o for q in questions for o in q["options"]],
                        data["max_len"])
    video_emb = _encode_in_batches(model.encode_video, video)
    text_emb = _encode_in_batches(model.encode_text, ids, att).reshape(len(questions), k, -1)
    scores = torch.einsum("nd,nkd->nk", video_emb, text_emb)
    answer = torch.tensor([q["answer"] for q in questions])
    # pairwise: the true caption against each one-attribute distractor (chance 50 %); with
    # four such edits a model right on every attribute with probability p scores about p**4
    # on the 5-way question, which can sit below 20 % even when p > 50 %.
    attributes = [q.get("option_attributes") or [None] * k for q in questions]
    breakdown = multiple_choice_breakdown(scores, answer, attributes)
    out = {"accuracy": breakdown.pop("accuracy"), "chance": 100.0 / k, "items": len(questions)}
    out.update({f"vs {key.split('/', 1)[1]} (chance 50)": value
                for key, value in breakdown.items()})
    return out


def caption_loss(model: VLM, batch: Mapping[str, Any]) -> torch.Tensor:
    return model.caption_loss(batch)


def retrieval_loss(model: VLM, batch: Mapping[str, Any]) -> torch.Tensor:
    return model.retrieval_loss(batch)


@torch.no_grad()
def evaluate_captioning(model: VLM, data: Mapping[str, Any], split: str = "test",
                        max_items: int | None = None, num_beams: int = 1,
                        max_length: int = 20) -> dict[str, Any]:
    """Captions of held-out clips by the causal-mask decoder (VLM Sec. 4.5, Table 7 metrics)."""
    from vlbook.eval import caption_metrics

    model.eval()
    records, _ = _feature_bank(data["features"], split)
    records = records[:max_items] if max_items else records
    video = _stack_features(data["features"], records)
    tok = data["tokenizer"]
    predictions = [tok.decode(ids, skip_special_tokens=True)
                   for ids in model.generate_caption(video, max_length=max_length,
                                                     num_beams=num_beams)]
    references = [r["captions"] for r in records]
    scores = caption_metrics(predictions, references)
    return {"scores": scores.scores, "unavailable": scores.unavailable,
            "standard_errors": {m: scores.standard_error(m) for m in scores.per_item},
            "predictions": predictions, "references": references, "items": len(records)}


class _FrameLabelSet(torch.utils.data.Dataset):
    """Random ``window``-token crops of clips with per-frame labels (segmentation)."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, window: int,
                 seed: int = 0) -> None:
        self.features, self.labels, self.window = features, labels, window
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        t = self.features.shape[1]
        start = int(self.rng.integers(0, max(t - self.window, 0) + 1))
        end = min(start + self.window, t)
        return {"video_features": self.features[i, start:end],
                "frame_labels": self.labels[i, start:end]}


def _frame_labels(data: Mapping[str, Any], split: str, max_items: int | None,
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    from vlbook.data.annotations import read_jsonl

    records, index = _feature_bank(data["features"], split)
    rows = [r for r in read_jsonl(data["root"] / f"frame_labels_{split}.jsonl", "frame_labels")
            if r["video_id"] in index][:max_items]
    feats = _stack_features(data["features"], [records[index[r["video_id"]]] for r in rows])
    labels = torch.tensor([r["frame_labels"][: feats.shape[1]] for r in rows])
    return feats, labels


def finetune_segmentation(model: VLM, data: Mapping[str, Any], *, num_classes: int, steps: int,
                          lr: float, batch_size: int, max_items: int | None = None,
                          seed: int = 0) -> FitResult:
    """Per-video-token classification on random windows (VLM Sec. 4.2)."""
    feats, labels = _frame_labels(data, "train", max_items)
    if model.segment_head is None or model.segment_head.out_features != num_classes:
        model.build_segment_head(num_classes)
    dataset = _FrameLabelSet(feats, labels, model.config.segment_window, seed)
    return fit(model, dataset, lambda m, b: m.segment_loss(b), steps=steps, lr=lr,
               batch_size=batch_size, seed=seed)


@torch.no_grad()
def evaluate_segmentation(model: VLM, data: Mapping[str, Any], split: str = "test",
                          max_items: int | None = None) -> dict[str, float]:
    """Frame accuracy with sliding windows and averaged overlapping logits (Table 4)."""
    from vlbook.eval import frame_accuracy

    model.eval()
    feats, labels = _frame_labels(data, split, max_items)
    predictions = [model.segment_long_video(f) for f in feats]
    majority = torch.bincount(labels.flatten()).max().item() / labels.numel() * 100
    return {"frame_accuracy": frame_accuracy(predictions, list(labels)),
            "majority_class": majority, "items": len(feats)}


class _StepSet(torch.utils.data.Dataset):
    def __init__(self, items: list[dict[str, torch.Tensor]]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.items[i]


def _step_items(data: Mapping[str, Any], split: str, max_items: int | None,
                ) -> list[dict[str, torch.Tensor]]:
    from vlbook.data.annotations import read_jsonl
    from vlbook.data.tokenizer import tokenize

    records, index = _feature_bank(data["features"], split)
    rows = [r for r in read_jsonl(data["root"] / f"steps_{split}.jsonl", "steps")
            if r["video_id"] in index][:max_items]
    feats = _stack_features(data["features"], [records[index[r["video_id"]]] for r in rows])
    fps, t = data["fps"], feats.shape[1]
    items = []
    for row, f in zip(rows, feats):
        ids, att = tokenize(data["tokenizer"], [s["text"] for s in row["steps"]], data["max_len"])
        target = torch.zeros(t, len(row["steps"]), dtype=torch.bool)
        for k, step in enumerate(row["steps"]):
            target[int(round(step["start"] * fps)): int(round(step["end"] * fps)), k] = True
        items.append({"video_features": f, "step_ids": ids, "step_mask": att,
                      "target": target})
    return items


def _step_loss(model: VLM, batch: Mapping[str, Any]) -> torch.Tensor:
    logp = model.step_scores(batch["video_features"], batch["step_ids"], batch["step_mask"])
    target = batch["target"].float()
    labelled = target.sum(-1) > 0
    return -(logp * target).sum(-1)[labelled].mean()


def finetune_step_localisation(model: VLM, data: Mapping[str, Any], *, steps: int, lr: float,
                               batch_size: int, max_items: int | None = None,
                               seed: int = 0) -> FitResult:
    """Supervised step localisation: frames classified over their video's step texts
    (VLM Sec. 4.3, Table 5 "supervised")."""
    items = [i for i in _step_items(data, "train", max_items)
             if i["step_ids"].shape[0] == 2]  # equal step counts batch together
    return fit(model, _StepSet(items), _step_loss, steps=steps, lr=lr, batch_size=batch_size,
               seed=seed)


@torch.no_grad()
def evaluate_step_localisation(model: VLM, data: Mapping[str, Any], split: str = "test",
                               max_items: int | None = None) -> dict[str, float]:
    """Step recall: each step placed at its best frame (Table 5); chance = covered share."""
    from vlbook.eval import step_localisation_recall

    model.eval()
    items = _step_items(data, split, max_items)
    predictions = [model.step_scores(i["video_features"][None], i["step_ids"][None],
                                     i["step_mask"][None])[0] for i in items]
    chance = float(np.mean([i["target"].float().mean(0).mean() for i in items])) * 100
    recall = step_localisation_recall(predictions, [i["target"] for i in items])
    return {"recall": recall.recall,
            "chance": chance, "items": len(items)}


@torch.no_grad()
def masked_token_accuracy(model: VLM, dataset: Any, *, max_items: int = 256, seed: int = 0,
                          ) -> dict[str, float]:
    """Held-out accuracy of the masked token prediction under each masking kind.

    Text: share of masked words whose id is ranked first among vocabulary and video tokens;
    video: share of masked video tokens whose original token beats every other candidate.
    Reported separately for whole-text, whole-video and MFM-MLM examples.
    """
    from torch.utils.data import DataLoader, Subset

    model.eval()
    c = model.config
    gen = torch.Generator().manual_seed(seed)
    subset = Subset(dataset, range(min(max_items, len(dataset))))
    hits: dict[str, list[float]] = {}
    for batch in DataLoader(subset, batch_size=64, collate_fn=dataset.collate):
        feats, video_valid = model._features(batch)
        text_ids, text_valid = model._text(batch["input_ids"], batch["attention_mask"])
        plan = masked_modality_plan(len(feats), mmm_probability=0.5, generator=gen)
        frame_mask = bernoulli_token_mask(video_valid, plan.video_probability(c.mfm_probability),
                                          generator=gen)
        masking = mask_text_tokens(text_ids, text_valid, mask_token_id=c.mask_token_id,
                                   vocab_size=c.vocab_size,
                                   ratio=plan.text_probability(c.mlm_probability),
                                   special_token_ids=c.special_token_ids, generator=gen)
        tokens = model.video_mlp(feats)
        enc = model.encode(tokens.masked_fill(frame_mask[..., None], 0.0), video_valid,
                           masking.input_ids, text_valid, "joint")
        transform = model.lm_head.predictions.transform
        words = model.encoder.embeddings.word_embeddings.weight
        unmasked = tokens[video_valid & ~frame_mask]
        kinds = {"whole_text": plan.whole_text, "whole_video": plan.whole_video,
                 "mfm_mlm": plan.mfm_mlm}
        picked = masking.labels != -100
        e_text = transform(enc.text_hidden)
        text_scores = torch.cat([e_text @ words.T,
                                 e_text @ unmasked.T], dim=-1).argmax(-1)
        e_video = transform(enc.video_hidden)
        pos = (e_video * tokens).sum(-1, keepdim=True)
        neg = torch.cat([e_video @ unmasked.T, e_video @ words.T], dim=-1)
        video_hit = (pos > neg.max(-1, keepdim=True).values).squeeze(-1)
        for kind, rows in kinds.items():
            tp = picked & rows[:, None]
            if bool(tp.any()):
                hits.setdefault(f"text_{kind}", []).extend(
                    (text_scores[tp] == masking.labels[tp]).float().tolist())
            vp = frame_mask & rows[:, None]
            if bool(vp.any()):
                hits.setdefault(f"video_{kind}", []).extend(video_hit[vp].float().tolist())
    return {k: 100.0 * float(np.mean(v)) for k, v in hits.items()}


def labelled_subset(dataset: Any, num_videos: int | None) -> Any:
    """The items of the first ``num_videos`` clips (all their captions): the small labelled
    set of a fine-tuning task, as YouCook2 is small next to HowTo100M."""
    from torch.utils.data import Subset

    if num_videos is None:
        return dataset
    keep = [i for i, (record, _) in enumerate(dataset.items) if record < num_videos]
    subset = Subset(dataset, keep)
    subset.collate = dataset.collate
    return subset
