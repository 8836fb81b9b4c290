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

Paper vs released code (fairseq MMPT), code by default:

* Word rows of the masked token loss get one extra zero logit in MMPT
  (``text_zero_logit=True``); Eq. 9 has none (``False``).
* The code's masked-token head has no vocabulary bias; MFM-MLM uses BERT's MLM bias.
* Retrieval fine-tuning: MMPT's loss is one direction (text to video) on raw dot products
  (``retrieval_directions="text_to_video"``); ``"both"`` is the symmetric variant.
* The masking plan draws two coins per example (counts vary per batch); ``exact_plan=True``
  gives every batch the paper's 25/25/50 proportions.

The checkpoint converters are :mod:`vlbook.models.vlm.convert`, the named variants
:mod:`vlbook.models.vlm.variants`; the chapter (presets, toy data, fine-tuning and
evaluations) is :mod:`vlbook.chapters.vlm`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.losses import masked_token_loss, mfm_mlm_loss, mlm_loss, vtc_loss
from vlbook.masking import bernoulli_token_mask, mask_text_tokens, masked_modality_plan
from vlbook.models.base import VLModel
from vlbook.models.vlm.convert import load_bert_weights
from vlbook.nn.dropout import use_fast_dropout

__all__ = [
    "ATTENTION_MODES",
    "DIRECTIONS",
    "LOSSES",
    "VLM",
    "ToyFrameEncoder",
    "VLMConfig",
    "VLMEncoding",
    "VLMPretrainOutput",
    "VideoTokenMLP",
    "attention_mask_for",
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
        from transformers import BertConfig  # heavy optional dependency

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
        # heavy optional dependency
        from transformers.models.bert.modeling_bert import BertModel, BertOnlyMLMHead

        config = config or VLMConfig()
        if overrides:
            config = VLMConfig(**{**asdict(config), **overrides})
        self.config = config
        bert_config = config.bert_config()
        self.video_mlp = VideoTokenMLP(config.feature_dim, config.hidden_size)
        self.encoder = BertModel(bert_config, add_pooling_layer=False)
        use_fast_dropout(self.encoder)  # hidden / attention-probability dropout of BERT
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
