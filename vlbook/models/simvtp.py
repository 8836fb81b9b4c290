"""SimVTP: a video-text masked autoencoder with one shared encoder (Ma et al., 2022).

The model (SimVTP Sec. 3, Fig. 2):

* **Tokens.** Video: Conv3d cube embedding of 2x16x16 tubes (16 frames at 224 px give
  8x14x14 = 1568 tokens) plus the fixed sinusoidal position table, no CLS. Text: BERT
  WordPiece ids through BERT-base's embedding layer (word + position + token type, LayerNorm).
* **Masking.** Tube masking of the video at ``video_mask_ratio`` (90 %): the same
  ``int(ratio * H'W')`` spatial positions hidden on every temporal slice. Text tokens are
  selected with probability ``text_mask_ratio`` (75 %) and replaced by [MASK] (the "learnable
  [M]": BERT's [MASK] word embedding).
* **Encoder.** One ViT (ViT-B: 768 wide, 12 blocks, separate q/v biases) on the concatenation
  ``[visible video tubes; all text tokens]`` (text padding masked out of the keys).
* **Decoders.** Video: ``encoder_to_decoder`` to half width, a learnable mask token at every
  hidden tube, the sinusoidal positions, 4 blocks, a linear head to the 2*16*16*3 pixels.
  Text: one linear layer to the vocabulary. MSM loss = MSE on per-patch normalised pixels of
  the masked tubes + cross-entropy on the masked words.
* **Cross-modal objectives.** VTC: the shared encoder on the (masked) video alone and the
  (masked) text alone, mean pooled, symmetric InfoNCE with temperature 0.05. VTM: the joint
  pass of the B matched pairs plus B pairs whose video is a random other one of the batch, mean
  pooled, a linear 2-way head. ``L = L_msm + L_vtc + L_vtm`` (Eq. 1).

Paper vs released code (``OFFICIAL_CODE_NOTES.md``), code by default:

* Text corruption: the code replaces 100 % of the selected words by [MASK]
  (``text_replace="all-mask"``); the paper's Table 4f prefers BERT's 80/10/10
  (``text_replace="bert"``).
* VTM negatives: the code gives each text a random other *video* (with that video's mask); the
  paper speaks of a random other *text* for each video (``vtm_negative="text"``).
* Pooling: the code's mean runs over every token, padding included (``pool_padding=True``).

Toy-only departure (smoke/toy presets): ``cross_modal_video_mask_ratio`` /
``cross_modal_text_mask_ratio`` give VTC and VTM masks of their own (50 % / 15 %) instead of the
MSM masks; at 32 px the code's 90 % / 75 % leave the pair nothing to match and both sit at chance.

Table 4 alternatives: ``decoder_type`` (``"dual"`` / ``"shared"``), ``video_decoder_depth``,
``text_decoder_depth`` (0 = linear), ``text_mask_token`` (``True``: the encoder sees the text
with [M]; ``False``: only the unmasked words, the text decoder inserts the mask tokens) and the
encoder initialisations of Table 4c (:func:`load_videomae_encoder`, :func:`load_timm_vit_encoder`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.config import Param, register_chapter_params, register_preset
from vlbook.losses import (
    mlm_loss,
    normalized_pixel_mse,
    random_negative_indices,
    vtc_loss,
    vtm_loss,
)
from vlbook.masking import TextMasking, gather_masked, gather_visible, mask_text_tokens, tube_mask
from vlbook.models.base import MODELS, VLModel
from vlbook.nn import Block, TubeletEmbed, sinusoid_position_table

__all__ = [
    "full_pretrain_config",
    "DECODER_TYPES",
    "ConversionResult",
    "JointOutput",
    "MultipleChoiceOutput",
    "SimVTP",
    "SimVTPConfig",
    "SimVTPOutput",
    "VideoMasking",
    "convert_videomae_state_dict",
    "encoder_flops_ratio",
    "load_bert_embeddings",
    "load_timm_vit_encoder",
    "load_videomae_encoder",
]

DECODER_TYPES: tuple[str, ...] = ("dual", "shared")
TEXT_REPLACEMENTS: dict[str, tuple[float, float, float]] = {
    "all-mask": (1.0, 0.0, 0.0),
    "bert": (0.8, 0.1, 0.1),
}
POOLINGS: tuple[str, ...] = ("all", "valid")
VTM_NEGATIVES: tuple[str, ...] = ("video", "text")


@dataclass
class SimVTPConfig:
    """Hyper-parameters of SimVTP (defaults: the released ViT-B model, Sec. 4.1)."""

    # video tokens
    image_size: int = 224
    patch_size: int = 16
    tubelet_size: int = 2
    num_frames: int = 16
    channels: int = 3
    # shared encoder (ViT-B, VideoMAE layout)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool | str = "qv"
    layer_norm_eps: float = 1e-6
    drop_path_rate: float = 0.0
    # text embeddings (BERT-base)
    vocab_size: int = 30522
    max_text_len: int = 512
    type_vocab_size: int = 2
    mask_token_id: int = 103
    special_token_ids: tuple[int, ...] = (0, 100, 101, 102, 103)
    # decoders (Sec. 3, Table 4a/4b/4e)
    decoder_dim: int = 384
    decoder_heads: int = 6
    video_decoder_depth: int = 4
    text_decoder_depth: int = 0
    decoder_type: str = "dual"
    # masking (Sec. 3, Figure 3, Table 4d/4f)
    video_mask_ratio: float = 0.9
    text_mask_ratio: float = 0.75
    text_replace: str = "all-mask"
    text_mask_token: bool = True
    # objectives (Eq. 1, Table 5)
    msm_weight: float = 1.0
    vtc_weight: float = 1.0
    vtm_weight: float = 1.0
    vtc_temperature: float = 0.05
    vtc_on_masked: bool = True
    # masking ratios of the VTC / VTM inputs. None (the code and the paper): the MSM masks are
    # reused, so VTC and VTM see 90 %-masked video and 75 %-masked text. A number draws separate,
    # lighter masks for the cross-modal passes (toy-only departure: at 32 px a 90 % tube mask
    # leaves 2 of 16 patches per slice and a 75 % text mask usually hides every colour/shape
    # word, so from scratch VTC and VTM have almost nothing to match and sit at chance)
    cross_modal_video_mask_ratio: float | None = None
    cross_modal_text_mask_ratio: float | None = None
    vtm_negative: str = "video"
    normalize_target: bool = True
    pool_padding: bool = True
    # downstream
    num_answers: int = 0
    qa_hidden: int | None = None

    def __post_init__(self) -> None:
        self.special_token_ids = tuple(int(i) for i in self.special_token_ids)
        checks = [
            (self.decoder_type in DECODER_TYPES,
             f"decoder_type={self.decoder_type!r}; accepted: {DECODER_TYPES}"),
            (self.text_replace in TEXT_REPLACEMENTS,
             f"text_replace={self.text_replace!r}; accepted: {tuple(TEXT_REPLACEMENTS)}"),
            (self.vtm_negative in VTM_NEGATIVES,
             f"vtm_negative={self.vtm_negative!r}; accepted: {VTM_NEGATIVES}"),
            (0.0 <= self.video_mask_ratio < 1.0,
             f"video_mask_ratio={self.video_mask_ratio}; expected [0, 1) (some tube must stay "
             "visible)"),
            (0.0 <= self.text_mask_ratio <= 1.0,
             f"text_mask_ratio={self.text_mask_ratio}; expected [0, 1]"),
            (self.image_size % self.patch_size == 0,
             f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"),
            (self.num_frames % self.tubelet_size == 0,
             f"num_frames={self.num_frames} is not a multiple of tubelet_size="
             f"{self.tubelet_size}"),
            (self.embed_dim % self.num_heads == 0,
             f"embed_dim={self.embed_dim} is not a multiple of num_heads={self.num_heads}"),
            (self.decoder_dim % self.decoder_heads == 0,
             f"decoder_dim={self.decoder_dim} is not a multiple of decoder_heads="
             f"{self.decoder_heads}"),
            (self.video_decoder_depth >= 0 and self.text_decoder_depth >= 0,
             "decoder depths must be >= 0"),
            (self.cross_modal_video_mask_ratio is None
             or 0.0 <= self.cross_modal_video_mask_ratio < 1.0,
             f"cross_modal_video_mask_ratio={self.cross_modal_video_mask_ratio}; expected None "
             "or [0, 1)"),
            (self.cross_modal_text_mask_ratio is None
             or 0.0 <= self.cross_modal_text_mask_ratio <= 1.0,
             f"cross_modal_text_mask_ratio={self.cross_modal_text_mask_ratio}; expected None "
             "or [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"SimVTPConfig: {message}")

    @property
    def grid(self) -> tuple[int, int, int]:
        """Token grid ``(T', H', W')`` of a clip."""
        side = self.image_size // self.patch_size
        return (self.num_frames // self.tubelet_size, side, side)

    @property
    def num_video_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def pixels_per_token(self) -> int:
        return self.tubelet_size * self.patch_size**2 * self.channels

    @property
    def num_visible_video_tokens(self) -> int:
        """Visible tubes after tube masking: ``T' * (H'W' - int(ratio * H'W'))``."""
        t, h, w = self.grid
        return t * (h * w - int(self.video_mask_ratio * h * w))


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


@dataclass
class VideoMasking:
    """A video mask and the indices to undo it: ``mask`` ``(B, N)`` True = hidden tube."""

    mask: torch.Tensor

    @property
    def num_visible(self) -> int:
        return int((~self.mask[0]).sum())


@dataclass
class JointOutput:
    """One pass of the shared encoder.

    ``video_hidden`` ``(B, N_vis, D)`` (``None`` in a text-only pass), ``text_hidden``
    ``(B, L_enc, D)`` (``None`` in a video-only pass), ``pooled`` ``(B, D)`` mean over the
    tokens (padding included when ``pool_padding``), ``text_keep`` ``(B, L_enc)`` which text
    slots hold a token, ``text_positions`` ``(B, L_enc)`` their index in the caption.
    """

    video_hidden: torch.Tensor | None
    text_hidden: torch.Tensor | None
    pooled: torch.Tensor
    text_keep: torch.Tensor | None = None
    text_positions: torch.Tensor | None = None


@dataclass
class SimVTPOutput:
    """Everything one pre-training step computed (for figures and tests).

    ``video_mask`` ``(B, N)``; ``video_prediction`` ``(B, N_masked, P)`` decoder outputs of the
    hidden tubes (normalised-pixel space); ``text_masking`` the text corruption;
    ``text_logits`` ``(B, L, V)``; ``losses`` the loss dict of :meth:`SimVTP.pretrain_step`.
    """

    video_mask: torch.Tensor
    video_prediction: torch.Tensor | None
    text_masking: TextMasking
    text_logits: torch.Tensor | None
    losses: dict[str, torch.Tensor]


@dataclass
class MultipleChoiceOutput:
    """Multiple choice through the VTM head (Sec. 4.1): ``scores`` ``(B, K)``, ``prediction``."""

    scores: torch.Tensor
    prediction: torch.Tensor


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------


class TextEmbeddings(nn.Module):
    """BERT-base's embedding layer: word + position + token type, LayerNorm (eps 1e-12)."""

    def __init__(self, config: SimVTPConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.word_embeddings = nn.Embedding(config.vocab_size, d)
        self.position_embeddings = nn.Embedding(config.max_text_len, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=1e-12)  # noqa: N815 - BERT's parameter name

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor | None = None
                ) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"input_ids has {length} tokens; the model has "
                             f"{self.position_embeddings.num_embeddings} text positions "
                             "(max_text_len)")
        if positions is None:
            positions = torch.arange(length, device=input_ids.device)[None]
        x = (self.word_embeddings(input_ids) + self.position_embeddings(positions)
             + self.token_type_embeddings.weight[0])
        return self.LayerNorm(x)


class BlockStack(nn.Module):
    """Pre-norm ViT blocks and a final LayerNorm (``blocks.N``, ``norm``: VideoMAE's layout).

    Like :class:`vlbook.nn.Transformer`, but its drop-path rates are computed in Python so that
    it can be built on the meta device (parameter counts and FLOPs of ViT-B without memory).
    """

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 qkv_bias: bool | str = True, drop_path_rate: float = 0.0,
                 eps: float = 1e-6) -> None:
        super().__init__()
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio, qkv_bias, drop_path=rate,
                  norm_layer=lambda d: nn.LayerNorm(d, eps=eps))
            for rate in rates
        )
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return self.norm(x)


class VideoDecoder(nn.Module):
    """VideoMAE-style decoder (SimVTP Sec. 3 "SimVTP decoder", Table 4a).

    Visible tokens projected to ``decoder_dim`` + positions, a shared mask token + positions at
    every hidden tube, ``depth`` blocks, LayerNorm and a linear head to the tube's pixels.
    """

    def __init__(self, config: SimVTPConfig) -> None:
        super().__init__()
        dd = config.decoder_dim
        self.encoder_to_decoder = nn.Linear(config.embed_dim, dd, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dd))
        self.blocks = BlockStack(dd, config.video_decoder_depth, config.decoder_heads,
                                 config.mlp_ratio, qkv_bias=config.qkv_bias)
        self.head = nn.Linear(dd, config.pixels_per_token)
        self.register_buffer("pos", sinusoid_position_table(config.num_video_tokens, dd)[None],
                             persistent=False)

    def tokens(self, visible: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Decoder input ``[visible + pos; mask token + pos]`` ``(B, N, Dd)``."""
        b = visible.shape[0]
        pos = self.pos.expand(b, -1, -1).to(visible.dtype)
        x_vis = self.encoder_to_decoder(visible) + gather_visible(pos, mask)
        pos_masked = gather_masked(pos, mask)
        return torch.cat([x_vis, self.mask_token.expand_as(pos_masked) + pos_masked], dim=1)

    def forward(self, visible: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predictions ``(B, N_masked, P)`` for the hidden tubes, in raster order."""
        num_masked = int(mask[0].sum())
        x = self.blocks(self.tokens(visible, mask))
        return self.head(x[:, x.shape[1] - num_masked:])


class TextDecoder(nn.Module):
    """Text decoder (Table 4b): ``depth`` blocks at the encoder width (0 = none) and a linear
    layer to the vocabulary. With ``text_mask_token=False`` it also inserts a learnable mask
    token (+ learned positions) where the encoder skipped the masked words (Table 4d)."""

    def __init__(self, config: SimVTPConfig) -> None:
        super().__init__()
        d = config.embed_dim
        depth = config.text_decoder_depth
        if not config.text_mask_token:
            depth = max(depth, 1)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
            self.position_embeddings = nn.Embedding(config.max_text_len, d)
        else:
            self.mask_token = None
            self.position_embeddings = None
        self.blocks = (BlockStack(d, depth, config.num_heads, config.mlp_ratio,
                                  qkv_bias=config.qkv_bias) if depth else None)
        self.head = nn.Linear(d, config.vocab_size)

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        x = hidden
        if self.blocks is not None:
            x = self.blocks(x, key_padding_mask=attention_mask.bool())
        return self.head(x)


def _init_weights(module: nn.Module) -> None:
    """MAE/VideoMAE initialisation: Xavier-uniform linear layers, N(0, 0.02) embeddings."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


class SimVTP(VLModel):
    """SimVTP (Sec. 3): shared ViT encoder, video/text decoders, VTC and VTM heads.

    Batches follow vlbook's convention: ``video`` ``(B, T, C, H, W)`` ImageNet-normalised,
    ``input_ids`` / ``attention_mask`` ``(B, L)``, ``video_index`` ``(B,)``.
    """

    gathers_contrastive_features = False  # the code's VTC uses the local batch only

    def __init__(self, config: SimVTPConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = replace(config or SimVTPConfig(), **overrides)
        self.config = config
        d = config.embed_dim
        self.video_embed = TubeletEmbed(config.image_size, config.patch_size, config.tubelet_size,
                                        config.channels, d, config.num_frames)
        self.register_buffer("video_pos", sinusoid_position_table(config.num_video_tokens, d)[None],
                             persistent=False)
        self.text_embeddings = TextEmbeddings(config)
        self.encoder = BlockStack(d, config.depth, config.num_heads, config.mlp_ratio,
                                  qkv_bias=config.qkv_bias, drop_path_rate=config.drop_path_rate,
                                  eps=config.layer_norm_eps)
        self.video_decoder = VideoDecoder(config)
        if config.decoder_type == "shared":
            # one decoder for both modalities: text goes through the video decoder's blocks
            self.text_decoder = None
            self.shared_text_head = nn.Linear(config.decoder_dim, config.vocab_size)
            self.shared_text_pos = nn.Embedding(config.max_text_len, config.decoder_dim)
        else:
            self.text_decoder = TextDecoder(config)
            self.shared_text_head = None
            self.shared_text_pos = None
        self.vtm_head = nn.Linear(d, 2)
        self.qa_head: nn.Sequential | None = None
        self.apply(_init_weights)
        nn.init.trunc_normal_(self.video_decoder.mask_token, std=0.02)
        if self.text_decoder is not None and self.text_decoder.mask_token is not None:
            nn.init.trunc_normal_(self.text_decoder.mask_token, std=0.02)
        if config.num_answers > 0:
            self.build_qa_head(config.num_answers)

    # ---- set-up --------------------------------------------------------------------------
    def set_tokenizer(self, tokenizer: Any) -> None:
        """Take the [MASK] id and the special ids (never masked) from a tokenizer."""
        if getattr(tokenizer, "mask_token_id", None) is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no mask token")
        if len(tokenizer) > self.config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens; the model's vocab_size is "
                             f"{self.config.vocab_size}")
        self.config.mask_token_id = int(tokenizer.mask_token_id)
        self.config.special_token_ids = tuple(int(i) for i in tokenizer.all_special_ids)

    def build_qa_head(self, num_answers: int) -> nn.Sequential:
        """Open-ended QA classifier (Sec. 4.1): a two-layer MLP on the pooled joint tokens."""
        d = self.config.embed_dim
        hidden = self.config.qa_hidden or 2 * d
        device = self.vtm_head.weight.device
        self.qa_head = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.LayerNorm(hidden),
                                     nn.Linear(hidden, num_answers)).to(device)
        self.qa_head.apply(_init_weights)
        self.config.num_answers = num_answers
        return self.qa_head

    def encoder_parameter_count(self) -> int:
        """Parameters of the shared ViT (cube embedding, blocks, final norm)."""
        modules = (self.video_embed, self.encoder)
        return sum(p.numel() for m in modules for p in m.parameters())

    # ---- inputs --------------------------------------------------------------------------
    def _check_video(self, video: torch.Tensor) -> None:
        c = self.config
        expected = (c.num_frames, c.channels, c.image_size, c.image_size)
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            shape = ", ".join(map(str, expected))
            raise ValueError(f"video: expected (B, T, C, H, W) = (B, {shape}), got "
                             f"{tuple(video.shape)}")

    def _check_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids/attention_mask: expected two (B, L) tensors, got "
                             f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
        if input_ids.device.type != "meta" and input_ids.numel():
            low, high = int(input_ids.min()), int(input_ids.max())
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(f"input_ids: ids must be in [0, vocab_size="
                                 f"{self.config.vocab_size}), got range [{low}, {high}]")

    def mask_video(self, batch_size: int, ratio: float | None = None,
                   generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
        """Tube mask ``(B, N)`` at ``ratio`` (default ``video_mask_ratio``), Sec. 3."""
        ratio = self.config.video_mask_ratio if ratio is None else ratio
        return tube_mask(batch_size, self.config.grid, ratio, generator=generator,
                         device=device or self.video_pos.device)

    def mask_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                  ratio: float | None = None,
                  generator: torch.Generator | None = None) -> TextMasking:
        """Text corruption at ``text_mask_ratio`` (Sec. 3, Table 4f): each non-special token
        with that probability; [MASK] only (code) or 80/10/10 (paper)."""
        c = self.config
        return mask_text_tokens(
            input_ids, attention_mask, mask_token_id=c.mask_token_id, vocab_size=c.vocab_size,
            ratio=c.text_mask_ratio if ratio is None else ratio,
            special_token_ids=c.special_token_ids, replace=TEXT_REPLACEMENTS[c.text_replace],
            generator=generator,
        )

    def embed_video(self, video: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Cube tokens + sinusoidal positions, the visible ones only when ``mask`` is given."""
        self._check_video(video)
        tokens = self.video_embed(video) + self.video_pos.to(video.dtype)
        return tokens if mask is None else gather_visible(tokens, mask)

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   keep: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Text tokens ``(B, L', D)``, their padding mask and caption positions.

        ``keep`` ``(B, L)`` (``text_mask_token=False``): only those tokens are embedded, packed
        to the left and padded to the longest row.
        """
        self._check_text(input_ids, attention_mask)
        b, length = input_ids.shape
        positions = torch.arange(length, device=input_ids.device).expand(b, length)
        valid = attention_mask.bool()
        if keep is not None:
            keep = keep & valid
            order = (~keep).to(torch.uint8).argsort(dim=1, stable=True)
            width = max(int(keep.sum(dim=1).max()), 1)
            order = order[:, :width]
            input_ids, positions = input_ids.gather(1, order), positions.gather(1, order)
            valid = keep.gather(1, order)
        return self.text_embeddings(input_ids, positions), valid, positions

    def _pool(self, hidden: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        if self.config.pool_padding:
            return hidden.mean(dim=1)
        weights = keep.to(hidden.dtype).unsqueeze(-1)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    # ---- encoder passes ----------------------------------------------------------------------
    def forward_encoder(
        self,
        video: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        *,
        video_mask: torch.Tensor | None = None,
        text_keep: torch.Tensor | None = None,
    ) -> JointOutput:
        """The shared encoder on video, text or both (Sec. 3 "SimVTP encoder").

        ``video_mask`` ``(B, N)``: only visible tubes enter (``None``: all). ``text_keep``:
        only these text tokens enter (Table 4d, text w/o [M]).
        """
        parts, keeps = [], []
        n_video = 0
        if video is not None:
            v = self.embed_video(video, video_mask)
            n_video = v.shape[1]
            parts.append(v)
            keeps.append(torch.ones(v.shape[:2], dtype=torch.bool, device=v.device))
        positions = text_valid = None
        if input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            t, text_valid, positions = self.embed_text(input_ids, attention_mask, text_keep)
            parts.append(t)
            keeps.append(text_valid)
        if not parts:
            raise ValueError("forward_encoder needs video, text or both")
        if len(parts) == 2 and parts[0].shape[0] != parts[1].shape[0]:
            raise ValueError(f"video batch {parts[0].shape[0]} != text batch {parts[1].shape[0]}")
        x = torch.cat(parts, dim=1)
        keep = torch.cat(keeps, dim=1)
        padding = None if keep.device.type == "meta" or bool(keep.all()) else keep
        hidden = self.encoder(x, key_padding_mask=padding)
        return JointOutput(
            video_hidden=hidden[:, :n_video] if video is not None else None,
            text_hidden=hidden[:, n_video:] if input_ids is not None else None,
            pooled=self._pool(hidden, keep),
            text_keep=text_valid,
            text_positions=positions,
        )

    # ---- decoders ------------------------------------------------------------------------
    def decode(self, out: JointOutput, video_mask: torch.Tensor, attention_mask: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Video predictions ``(B, N_masked, P)`` and text logits ``(B, L, V)`` (Sec. 3)."""
        c = self.config
        b, length = attention_mask.shape
        text = out.text_hidden
        if c.decoder_type == "shared":
            dec = self.video_decoder
            video_tokens = dec.tokens(out.video_hidden, video_mask)
            positions = out.text_positions
            text_tokens = dec.encoder_to_decoder(text) + self.shared_text_pos(positions)
            n = video_tokens.shape[1]
            keep = torch.cat([torch.ones(b, n, dtype=torch.bool, device=text.device),
                              out.text_keep], dim=1)
            x = dec.blocks(torch.cat([video_tokens, text_tokens], dim=1), key_padding_mask=keep)
            num_masked = int(video_mask[0].sum())
            video_pred = dec.head(x[:, n - num_masked: n])
            text_logits = self.shared_text_head(x[:, n:])
            return video_pred, self._scatter_text(text_logits, out, length)
        video_pred = self.video_decoder(out.video_hidden, video_mask)
        decoder = self.text_decoder
        if decoder.mask_token is not None:  # Table 4d: insert [M] after the encoder
            full = decoder.mask_token.expand(b, length, -1).clone()
            full = full + decoder.position_embeddings.weight[:length][None]
            index = out.text_positions.unsqueeze(-1).expand_as(text)
            kept = out.text_keep.unsqueeze(-1).to(text.dtype)
            placed = torch.zeros_like(full).scatter(1, index, text * kept)
            filled = torch.zeros(b, length, 1, dtype=text.dtype, device=text.device)
            filled = filled.scatter(1, index[..., :1], kept)
            text = placed + (1 - filled) * full
        return video_pred, decoder(text, attention_mask)

    @staticmethod
    def _scatter_text(logits: torch.Tensor, out: JointOutput, length: int) -> torch.Tensor:
        if logits.shape[1] == length:
            return logits
        full = logits.new_zeros(logits.shape[0], length, logits.shape[2])
        index = out.text_positions.unsqueeze(-1).expand_as(logits)
        return full.scatter(1, index, logits)

    # ---- pre-training ----------------------------------------------------------------------
    def run_pretraining(self, batch: Mapping[str, Any],
                        generator: torch.Generator | None = None) -> SimVTPOutput:
        """One pre-training step, returning masks and predictions too (Eq. 1)."""
        for key in ("video", "input_ids", "attention_mask"):
            if key not in batch:
                raise KeyError(f"batch has no {key!r} field; SimVTP needs video, input_ids, "
                               "attention_mask")
        c = self.config
        video, ids, attn = batch["video"], batch["input_ids"], batch["attention_mask"]
        b = ids.shape[0]
        device = ids.device
        video_mask = self.mask_video(b, generator=generator, device=device)
        masking = self.mask_text(ids, attn, generator=generator)
        text_keep = None if c.text_mask_token else ~masking.mask
        losses: dict[str, torch.Tensor] = {}
        total = video.new_zeros(())
        joint = self.forward_encoder(video, masking.input_ids, attn, video_mask=video_mask,
                                     text_keep=text_keep)
        video_pred = text_logits = None
        if c.msm_weight > 0:
            video_pred, text_logits = self.decode(joint, video_mask, attn)
            loss_video = normalized_pixel_mse(video_pred, video, video_mask, c.tubelet_size,
                                              c.patch_size, normalize_target=c.normalize_target)
            loss_text = mlm_loss(text_logits, masking.labels)
            total = total + c.msm_weight * (loss_video + loss_text)
            losses["loss_video"] = loss_video.detach()
            losses["loss_text"] = loss_text.detach()
            picked = masking.labels != -100
            if picked.device.type != "meta" and bool(picked.any()):
                hits = (text_logits.argmax(-1) == masking.labels)[picked].float().mean()
                losses["acc_text"] = hits.detach()
        # inputs of VTC / VTM: the MSM masks (code) or lighter masks of their own (toy option)
        separate_masks = (c.cross_modal_video_mask_ratio is not None
                          or c.cross_modal_text_mask_ratio is not None)
        cm_video_mask, cm_ids, cm_keep = video_mask, masking.input_ids, text_keep
        if separate_masks and (c.vtc_weight > 0 or c.vtm_weight > 0):
            cm_video_mask = self.mask_video(b, c.cross_modal_video_mask_ratio, generator=generator,
                                            device=device)
            if c.cross_modal_text_mask_ratio is None:
                cm_masking = masking
            else:
                cm_masking = self.mask_text(ids, attn, c.cross_modal_text_mask_ratio,
                                            generator=generator)
            cm_ids = cm_masking.input_ids
            cm_keep = None if c.text_mask_token else ~cm_masking.mask
        if c.vtc_weight > 0:
            if c.vtc_on_masked:
                v = self.forward_encoder(video, video_mask=cm_video_mask).pooled
                t = self.forward_encoder(None, cm_ids, attn, text_keep=cm_keep).pooled
            else:  # the paper's "VTC on original pairs" ablation (Sec. 4.3)
                v = self.forward_encoder(video).pooled
                t = self.forward_encoder(None, ids, attn).pooled
            loss_vtc = vtc_loss(v, t, temperature=c.vtc_temperature, combine="sum").loss
            total = total + c.vtc_weight * loss_vtc
            losses["loss_vtc"] = loss_vtc.detach()
        if c.vtm_weight > 0:
            ids_clip = batch.get("video_index")
            ids_clip = ids_clip.to(device) if ids_clip is not None else None
            if b < 2 or (ids_clip is not None and ids_clip.unique().numel() < 2):
                warnings.warn("VTM: the batch holds fewer than two different clips, so no "
                              "negative pair can be drawn; VTM skipped", stacklevel=2)
            else:
                others = random_negative_indices(b, ids_clip, generator=generator, device=device)
                # the code reuses the MSM joint pass as the positive pairs
                positive = (self.forward_encoder(video, cm_ids, attn, video_mask=cm_video_mask,
                                                 text_keep=cm_keep).pooled
                            if separate_masks else joint.pooled)
                if c.vtm_negative == "video":  # code: text i with a random other video
                    neg = self.forward_encoder(video[others], cm_ids, attn,
                                               video_mask=cm_video_mask[others], text_keep=cm_keep)
                else:  # paper: video i with a random other text
                    other_keep = cm_keep[others] if cm_keep is not None else None
                    neg = self.forward_encoder(video, cm_ids[others], attn[others],
                                               video_mask=cm_video_mask, text_keep=other_keep)
                logits = self.vtm_head(torch.cat([positive, neg.pooled]))
                labels = torch.cat([torch.ones(b, dtype=torch.long, device=device),
                                    torch.zeros(b, dtype=torch.long, device=device)])
                loss_vtm = vtm_loss(logits, labels)
                total = total + c.vtm_weight * loss_vtm
                losses["loss_vtm"] = loss_vtm.detach()
                losses["acc_vtm"] = (logits.argmax(-1) == labels).float().mean().detach()
        losses = {"loss": total, **losses}
        return SimVTPOutput(video_mask=video_mask, video_prediction=video_pred,
                            text_masking=masking, text_logits=text_logits, losses=losses)

    def pretrain_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """MSM + VTC + VTM with their weights, SimVTP Eq. 1; total under ``"loss"``."""
        return self.run_pretraining(batch).losses

    # ---- downstream --------------------------------------------------------------------------
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """L2-normalised video embeddings ``(B, D)``: all tubes, mean pooled (retrieval)."""
        return F.normalize(self.forward_encoder(video).pooled, dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings ``(B, D)``: the same encoder on the text alone."""
        return F.normalize(self.forward_encoder(None, input_ids, attention_mask).pooled, dim=-1)

    def retrieval_loss(self, batch: Mapping[str, Any], video_mask_ratio: float = 0.0
                       ) -> dict[str, torch.Tensor]:
        """Retrieval fine-tuning (Sec. 4.1): VTC of the shared encoder's unimodal features.

        ``video_mask_ratio`` > 0 drops that share of tubes (masking as augmentation).
        """
        video, ids, attn = batch["video"], batch["input_ids"], batch["attention_mask"]
        mask = (self.mask_video(ids.shape[0], video_mask_ratio, device=ids.device)
                if video_mask_ratio > 0 else None)
        v = self.forward_encoder(video, video_mask=mask).pooled
        t = self.forward_encoder(None, ids, attn).pooled
        loss = vtc_loss(v, t, temperature=self.config.vtc_temperature, combine="sum",
                        ids=batch.get("video_index")).loss
        return {"loss": loss}

    def match_logits(self, video: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:
        """VTM logits ``(B, 2)`` of each (video, text) pair, all tubes visible (1 = match)."""
        return self.vtm_head(self.forward_encoder(video, input_ids, attention_mask).pooled)

    def score_options(self, video: torch.Tensor, option_ids: torch.Tensor,
                      option_mask: torch.Tensor) -> MultipleChoiceOutput:
        """Multiple-choice QA (Sec. 4.1): each option with the video through the VTM head;
        the score is ``logit(match) - logit(no match)``."""
        if option_ids.dim() != 3 or option_mask.shape != option_ids.shape:
            raise ValueError(f"option_ids/option_mask: expected (B, K, L), got "
                             f"{tuple(option_ids.shape)} and {tuple(option_mask.shape)}")
        b, k, length = option_ids.shape
        logits = self.match_logits(video.repeat_interleave(k, dim=0),
                                   option_ids.reshape(b * k, length),
                                   option_mask.reshape(b * k, length))
        scores = (logits[:, 1] - logits[:, 0]).view(b, k)
        return MultipleChoiceOutput(scores=scores, prediction=scores.argmax(dim=1))

    def answer_logits(self, video: torch.Tensor, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor) -> torch.Tensor:
        """Open-ended QA as classification (Sec. 4.1): ``(B, num_answers)``."""
        if self.qa_head is None:
            raise RuntimeError("no QA head: call build_qa_head(num_answers) or set num_answers")
        return self.qa_head(self.forward_encoder(video, input_ids, attention_mask).pooled)

    def example_batch(self, batch_size: int, text_len: int = 18,
                      generator: torch.Generator | None = None,
                      device: torch.device | str | None = None) -> dict[str, Any]:
        """A random batch of the right shapes (benchmarks, FLOP counts, tests)."""
        c = self.config
        text_len = min(text_len, c.max_text_len)
        video = torch.randn(batch_size, c.num_frames, c.channels, c.image_size, c.image_size,
                            generator=generator)
        low = min(max(c.special_token_ids) + 1 if c.special_token_ids else 0, c.vocab_size - 1)
        ids = torch.randint(low, c.vocab_size, (batch_size, text_len), generator=generator)
        return {
            "video": video.to(device),
            "input_ids": ids.to(device),
            "attention_mask": torch.ones_like(ids).to(device),
            "video_index": torch.arange(batch_size, device=device),
            "text": [f"random caption {i}" for i in range(batch_size)],
        }


# --------------------------------------------------------------------------------------------
# compute: visible-only vs all tokens
# --------------------------------------------------------------------------------------------


def encoder_flops_ratio(config: SimVTPConfig, text_len: int = 18,
                        text_mask_token: bool = True) -> dict[str, float]:
    """Encoder FLOPs of one clip + caption, all tubes vs visible tubes (Sec. 3, Table 4d).

    Counted on the meta device with :func:`vlbook.analysis.count_flops` (forward only).
    Returns GFLOPs of the full-token and visible-token passes and their ratio.
    """
    from vlbook.analysis import count_flops

    def factory() -> SimVTP:
        return SimVTP(config)

    batch = {k: v for k, v in SimVTP(replace(config, depth=0)).example_batch(
        1, text_len=text_len).items() if k != "text"}
    batch = {k: v.to("meta") for k, v in batch.items()}
    num_visible = config.num_visible_video_tokens
    kept_words = text_len - int(round(config.text_mask_ratio * text_len))
    words = text_len if text_mask_token else kept_words

    def full(m: SimVTP, b: dict[str, Any]) -> Any:
        return m.forward_encoder(b["video"], b["input_ids"], b["attention_mask"]).pooled

    def visible(m: SimVTP, b: dict[str, Any]) -> Any:
        # which tubes / words are kept does not change the count: take the first ones (the
        # meta device has no values to gather with)
        video = m.embed_video(b["video"])[:, :num_visible]
        text = m.text_embeddings(b["input_ids"][:, :words])
        return m.encoder(torch.cat([video, text], dim=1)).mean(dim=1)

    all_tokens = count_flops(factory, batch, forward=full).gflops
    visible_tokens = count_flops(factory, batch, forward=visible).gflops
    return {"all_tokens_gflops": all_tokens, "visible_tokens_gflops": visible_tokens,
            "ratio": all_tokens / visible_tokens}


# --------------------------------------------------------------------------------------------
# weights: VideoMAE (transformers), timm ViTs and BERT embeddings (Table 4c)
# --------------------------------------------------------------------------------------------


@dataclass
class ConversionResult:
    """Source weights → vlbook names: ``state_dict`` (vlbook names), ``mapping`` source →
    target (fused q/k/v list all three sources), ``dropped`` source → reason."""

    state_dict: dict[str, torch.Tensor]
    mapping: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)


_VIDEOMAE_LAYER = {
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "intermediate.dense.weight": "mlp.fc1.weight",
    "intermediate.dense.bias": "mlp.fc1.bias",
    "output.dense.weight": "mlp.fc2.weight",
    "output.dense.bias": "mlp.fc2.bias",
    "layernorm_before.weight": "norm1.weight",
    "layernorm_before.bias": "norm1.bias",
    "layernorm_after.weight": "norm2.weight",
    "layernorm_after.bias": "norm2.bias",
    "attention.attention.q_bias": "attn.q_bias",
    "attention.attention.v_bias": "attn.v_bias",
    "attention.attention.query.bias": "attn.q_bias",
    "attention.attention.value.bias": "attn.v_bias",
}


def convert_videomae_state_dict(state_dict: Mapping[str, torch.Tensor]) -> ConversionResult:
    """Rename a transformers ``VideoMAEModel``/``VideoMAEForPreTraining`` state dict to SimVTP.

    Encoder tensors (``[videomae.]embeddings.*``, ``[videomae.]encoder.layer.N.*``, the final
    ``layernorm``/``fc_norm``) map to ``video_embed``/``encoder``; separate query/key/value
    weights are fused into ``attn.qkv.weight``. With ``VideoMAEForPreTraining`` the decoder
    (``encoder_to_decoder``, ``decoder.decoder_layers``, ``decoder.norm``, ``decoder.head``,
    ``mask_token``) maps to ``video_decoder``. Unknown names raise ``KeyError``.
    """
    result = ConversionResult(state_dict={})
    pending: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    for raw_key, value in state_dict.items():
        key = raw_key[len("videomae."):] if raw_key.startswith("videomae.") else raw_key
        target: str | None = None
        if key == "embeddings.patch_embeddings.projection.weight":
            target = "video_embed.proj.weight"
        elif key == "embeddings.patch_embeddings.projection.bias":
            target = "video_embed.proj.bias"
        elif key in ("embeddings.position_embeddings", "embeddings.position_ids"):
            result.dropped[raw_key] = "fixed sinusoidal table, recomputed"
            continue
        elif key.startswith(("layernorm.", "fc_norm.")):
            target = "encoder.norm." + key.split(".", 1)[1]
        elif key.startswith("classifier."):
            result.dropped[raw_key] = "Kinetics classifier, unused"
            continue
        elif key == "mask_token":
            target = "video_decoder.mask_token"
        elif key == "encoder_to_decoder.weight":
            target = "video_decoder.encoder_to_decoder.weight"
        elif key.startswith("decoder.norm."):
            target = "video_decoder.blocks.norm." + key.split(".")[-1]
        elif key.startswith("decoder.head."):
            target = "video_decoder.head." + key.split(".")[-1]
        elif key.startswith(("encoder.layer.", "decoder.decoder_layers.")):
            parts = key.split(".")
            layer, rest = parts[2], ".".join(parts[3:])
            prefix = (f"encoder.blocks.{layer}." if key.startswith("encoder.")
                      else f"video_decoder.blocks.blocks.{layer}.")
            if rest in ("attention.attention.query.weight", "attention.attention.key.weight",
                        "attention.attention.value.weight"):
                which = rest.split(".")[2]
                pending.setdefault(prefix, {})[which] = (raw_key, value)
                continue
            if rest == "attention.attention.key.bias":
                result.dropped[raw_key] = "key bias is fixed at zero in VideoMAE's layout"
                continue
            if rest in _VIDEOMAE_LAYER:
                target = prefix + _VIDEOMAE_LAYER[rest]
        if target is None:
            raise KeyError(f"VideoMAE tensor {raw_key!r} has no SimVTP counterpart")
        result.state_dict[target] = value
        result.mapping[raw_key] = target
    for prefix, qkv in pending.items():
        if set(qkv) != {"query", "key", "value"}:
            raise KeyError(f"{prefix}: VideoMAE checkpoint has only {sorted(qkv)} of q/k/v")
        target = prefix + "attn.qkv.weight"
        result.state_dict[target] = torch.cat([qkv[w][1] for w in ("query", "key", "value")])
        for w in ("query", "key", "value"):
            result.mapping[qkv[w][0]] = target
    return result


def _load_into(model: SimVTP, converted: ConversionResult, what: str,
               required_prefix: str = "encoder.blocks.") -> list[str]:
    own = model.state_dict()
    unknown = [k for k in converted.state_dict if k not in own]
    wrong = [f"{k}: source {tuple(v.shape)} vs model {tuple(own[k].shape)}"
             for k, v in converted.state_dict.items() if k in own and v.shape != own[k].shape]
    if unknown or wrong:
        raise ValueError(f"{what} does not fit the SimVTP model: unknown {unknown[:5]}, shape "
                         f"mismatches {wrong[:5]}")
    missing = [k for k in own if k.startswith(required_prefix) and k not in converted.state_dict]
    if missing:
        raise ValueError(f"{what} lacks encoder tensors: {missing[:5]}")
    model.load_state_dict(converted.state_dict, strict=False)
    return sorted(converted.state_dict)


def _read_state(source: str | Path | Mapping[str, torch.Tensor]
                ) -> Mapping[str, torch.Tensor] | None:
    if isinstance(source, Mapping):
        return source
    path = Path(str(source)).expanduser()
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
    if not path.is_file():
        return None
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict", "module"):
        if isinstance(state, dict) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    return state


def load_videomae_encoder(model: SimVTP,
                          source: str | Path | Mapping[str, torch.Tensor] = "MCG-NJU/videomae-base"
                          ) -> ConversionResult:
    """Initialise the shared encoder from VideoMAE K400 weights (Table 4c, the default).

    ``source``: a state dict in transformers' VideoMAE names, a local ``.bin``/``.safetensors``
    file or model folder, or a hub id loaded with ``VideoMAEModel.from_pretrained`` (needs
    network or a filled hub cache; offline it raises ``RuntimeError`` saying what to do).
    """
    state = _read_state(source)
    if state is None:
        try:
            from transformers import VideoMAEForPreTraining

            state = VideoMAEForPreTraining.from_pretrained(str(source)).state_dict()
        except Exception as err:  # noqa: BLE001 - say what to do instead
            raise RuntimeError(
                f"could not load VideoMAE weights {str(source)!r} ({type(err).__name__}: "
                f"{str(err)[:160]}); pass a local file/folder in transformers' VideoMAE naming "
                "or allow hub downloads (HF_HUB_OFFLINE=0 with network)"
            ) from err
    converted = convert_videomae_state_dict(state)
    _load_into(model, converted, f"VideoMAE weights {str(source)[:60]!r}")
    return converted


def convert_timm_vit_state_dict(state_dict: Mapping[str, torch.Tensor], tubelet_size: int = 2
                                ) -> ConversionResult:
    """timm ViT-B/16 (ImageNet-21k supervised, ImageNet-1k MAE: Table 4c) → the shared encoder.

    The 2-D patch filter is inflated to the tube (repeated over time and divided by
    ``tubelet_size``, I3D style); ``qkv.bias`` is split into q and v biases (its key part is
    dropped); the CLS token, learned positions and classifier are dropped.
    """
    result = ConversionResult(state_dict={})
    for key, value in state_dict.items():
        if key == "patch_embed.proj.weight":
            inflated = value.unsqueeze(2).repeat(1, 1, tubelet_size, 1, 1) / tubelet_size
            result.state_dict["video_embed.proj.weight"] = inflated
            result.mapping[key] = "video_embed.proj.weight"
        elif key == "patch_embed.proj.bias":
            result.state_dict["video_embed.proj.bias"] = value
            result.mapping[key] = "video_embed.proj.bias"
        elif key.startswith("blocks.") and key.endswith("attn.qkv.bias"):
            prefix = "encoder." + key[: -len("qkv.bias")]
            q, _, v = value.chunk(3)
            result.state_dict[prefix + "q_bias"], result.state_dict[prefix + "v_bias"] = q, v
            result.mapping[key] = prefix + "q_bias"
        elif key.startswith("blocks."):
            result.state_dict["encoder." + key] = value
            result.mapping[key] = "encoder." + key
        elif key.startswith(("norm.", "fc_norm.")) and value.numel():
            target = "encoder.norm." + key.split(".", 1)[1]
            result.state_dict[target] = value
            result.mapping[key] = target
        else:
            result.dropped[key] = "CLS/positions/classifier of the image model, unused"
    return result


def load_timm_vit_encoder(model: SimVTP, source: str | Path | Mapping[str, torch.Tensor]
                          ) -> ConversionResult:
    """Initialise the shared encoder from a timm ViT (Table 4c: IN-21k sup., IN-1k MAE).

    ``source``: a state dict, a local file, or a timm name (e.g.
    ``"vit_base_patch16_224.mae"``, ``"vit_base_patch16_224.augreg_in21k"``) fetched by timm.
    """
    state = _read_state(source)
    if state is None:
        try:
            import timm

            state = timm.create_model(str(source), pretrained=True, num_classes=0).state_dict()
        except Exception as err:  # noqa: BLE001
            raise RuntimeError(
                f"could not load timm weights {str(source)!r} ({type(err).__name__}: "
                f"{str(err)[:160]}); pass a local state-dict file or allow hub downloads"
            ) from err
    converted = convert_timm_vit_state_dict(state, model.config.tubelet_size)
    _load_into(model, converted, f"timm weights {str(source)[:60]!r}")
    return converted


def load_bert_embeddings(model: SimVTP, source: str | Path | Mapping[str, torch.Tensor]
                         = "bert-base-uncased") -> list[str]:
    """Initialise the text embeddings from BERT-base's embedding layer (as the released code).

    ``source``: a state dict with ``[bert.]embeddings.*`` names, a local file/folder, or a hub
    id loaded through ``BertModel.from_pretrained``.
    """
    state = _read_state(source)
    if state is None:
        try:
            from transformers import BertModel

            state = BertModel.from_pretrained(str(source)).state_dict()
        except Exception as err:  # noqa: BLE001
            raise RuntimeError(
                f"could not load BERT weights {str(source)!r} ({type(err).__name__}: "
                f"{str(err)[:160]}); pass a local file/folder or allow hub downloads"
            ) from err
    own = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        short = key[len("bert."):] if key.startswith("bert.") else key
        if not short.startswith("embeddings.") or "position_ids" in short:
            continue
        target = "text_embeddings." + short[len("embeddings."):]
        if target not in own:
            continue
        if value.shape != own[target].shape:
            raise ValueError(f"BERT tensor {key} has shape {tuple(value.shape)}; the model's "
                             f"{target} has {tuple(own[target].shape)}")
        loaded[target] = value
    expected = [k for k in own if k.startswith("text_embeddings.")]
    if sorted(loaded) != sorted(expected):
        raise ValueError(f"BERT weights lack {sorted(set(expected) - set(loaded))}")
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)


#: Table 4c encoder initialisations and where vlbook loads them from.
ENCODER_INITIALISATIONS: dict[str, tuple[str, str | None]] = {
    "scratch": ("none", None),
    "k400_videomae": ("videomae", "MCG-NJU/videomae-base"),
    "in1k_mae": ("timm", "vit_base_patch16_224.mae"),
    "in21k_sup": ("timm", "vit_base_patch16_224.augreg_in21k"),
}


def initialise_encoder(model: SimVTP, init: str, source: Any = None) -> list[str]:
    """Apply a Table 4c initialisation by name (``ENCODER_INITIALISATIONS``)."""
    if init not in ENCODER_INITIALISATIONS:
        raise ValueError(f"init={init!r}; accepted: {tuple(ENCODER_INITIALISATIONS)} (BERT "
                         "encoder initialisation is not provided)")
    kind, default = ENCODER_INITIALISATIONS[init]
    if kind == "none":
        return []
    if kind == "videomae":
        return sorted(load_videomae_encoder(model, source or default).state_dict)
    return sorted(load_timm_vit_encoder(model, source or default).state_dict)


# --------------------------------------------------------------------------------------------
# variants and presets
# --------------------------------------------------------------------------------------------

VARIANTS: dict[str, dict[str, Any]] = {
    # the released model: ViT-B encoder, 16 frames at 224 px (Sec. 4.1)
    "simvtp_base": dict(),
    # a CPU-sized model for the synthetic benchmark (not in the paper)
    "simvtp_toy": dict(image_size=32, patch_size=8, num_frames=8, embed_dim=96, depth=3,
                       num_heads=3, decoder_dim=48, decoder_heads=3, video_decoder_depth=1,
                       vocab_size=1000, max_text_len=32),
}
#: Reference counts (millions): VideoMAE's ViT-B (SimVTP initialises from it; VideoMAE
#: Table 1 lists 87 M) and BERT-base's embedding layer (23.8 M).
REFERENCE_PARAMS_M: dict[str, float] = {"encoder": 87.0, "text_embeddings": 23.8}


def _make_factory(name: str, defaults: dict[str, Any]) -> Any:
    def factory(**kwargs: Any) -> SimVTP:
        init = kwargs.pop("encoder_init", None)
        init_source = kwargs.pop("encoder_source", None)
        bert = kwargs.pop("bert_embeddings", None)
        model = SimVTP(SimVTPConfig(**{**defaults, **kwargs}))
        if init:
            initialise_encoder(model, init, init_source)
        if bert:
            load_bert_embeddings(model, "bert-base-uncased" if bert is True else bert)
        return model

    factory.__name__ = name
    factory.__doc__ = f"SimVTP variant {name!r} ({defaults})."
    return factory


for _name, _defaults in VARIANTS.items():
    MODELS.register(_name)(_make_factory(_name, _defaults))


#: Toy-only departure: VTC / VTM get their own, lighter masks (50 % of the tubes, 15 % of the
#: words). With the MSM masks (90 % / 75 %, the code) a 32-px clip keeps 2 of its 16 patches per
#: slice and a caption usually loses every colour and shape word, so from scratch VTC stays at
#: 2 ln B and VTM at ln 2 even on a fixed batch; ViT-B at 224 px from VideoMAE keeps 20 patches.
_TOY_CROSS_MODAL: dict[str, float] = {"cross_modal_video_mask_ratio": 0.5,
                                      "cross_modal_text_mask_ratio": 0.15}

register_preset(
    "simvtp",
    {
        "smoke": {
            "model": {"name": "simvtp_toy", "kwargs": {"depth": 1, "embed_dim": 48,
                                                       "num_heads": 2, "decoder_dim": 24,
                                                       "decoder_heads": 2, **_TOY_CROSS_MODAL}},
            "data": {"synthetic": "smoke", "num_frames": 8, "size": 32, "max_len": 24,
                     "max_train": 32, "max_test": 16},
            "train": {"steps": 4, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.05,
                      "warmup_steps": 1, "schedule": "cosine", "betas": (0.9, 0.95)},
            "finetune": {"steps": 3, "batch_size": 8, "lr": 1e-3},
            "eval": {"max_items": 16},
            "ablation": {"steps": 2, "finetune_steps": 2, "text_ratios": [0.15, 0.75],
                         "video_ratios": [0.75, 0.9]},
        },
        "toy": {
            "model": {"name": "simvtp_toy", "kwargs": dict(_TOY_CROSS_MODAL)},
            "data": {"synthetic": "toy", "num_frames": 8, "size": 32, "max_len": 24,
                     "max_train": 1000, "max_test": 200},
            "train": {"steps": 300, "batch_size": 32, "lr": 1e-3, "weight_decay": 0.05,
                      "warmup_steps": 20, "schedule": "cosine", "betas": (0.9, 0.95)},
            "finetune": {"steps": 80, "batch_size": 32, "lr": 5e-4},
            "eval": {"max_items": 200},
            "ablation": {"steps": 60, "finetune_steps": 40,
                         "text_ratios": [0.15, 0.45, 0.75, 0.9],
                         "video_ratios": [0.5, 0.75, 0.9]},
        },
        "full": {
            # Sec. 4.1 / release code: WebVid-2M, 16 frames at 224 (stride 4), 64 GPUs x 16
            # = 1024, AdamW (0.9, 0.95), wd 0.05, lr 1.5e-4 x 1024/256, 200 epochs, 40 warm-up
            # epochs, cosine, fp32; encoder from VideoMAE K400, text embeddings from BERT.
            "model": {"name": "simvtp_base", "kwargs": {"encoder_init": "k400_videomae",
                                                        "bert_embeddings": True}},
            "data": {"datasets": ["webvid2m"], "num_frames": 16, "size": 224, "max_len": 32,
                     "sampling": "segment", "tokenizer": "bert-base-uncased"},
            "train": {"epochs": 200, "warmup_epochs": 40, "batch_size": 1024, "lr": 6e-4,
                      "weight_decay": 0.05, "schedule": "cosine", "betas": (0.9, 0.95),
                      "precision": "no", "max_per_device_batch": 16},
            "finetune": {"epochs": 30, "batch_size": 128, "lr": 1e-4},
            "eval": {"max_items": None},
            "ablation": {"epochs": 100, "text_ratios": [0.15, 0.2, 0.45, 0.6, 0.7, 0.75, 0.8,
                                                        0.9],
                         "video_ratios": [0.75, 0.8, 0.85, 0.9, 0.95]},
        },
    },
)

register_chapter_params("simvtp", (
    Param("run_ablation", True, type=bool, help="train the Figure 3 / Table 5 ablation models"),
))


def config_summary(config: SimVTPConfig) -> dict[str, Any]:
    """The config as a plain dict (for results files)."""
    return asdict(config)


def full_pretrain_config(preset: Mapping[str, Any], *, seed: int = 0,
                         output_dir: str | Path = "") -> Any:
    """The ``full`` pre-training run of ``preset`` as a :class:`vlbook.train.TrainConfig`:
    Eq. 1 on the prepared pre-training corpus (``preset["data"]["datasets"]``, e.g.
    ``vlbook-data prepare webvid2m``) with the release's hyper-parameters (Sec. 4.1), warm-up
    given in epochs. ``accelerate launch -m vlbook.train`` runs the written YAML."""
    from vlbook.train import config_from_preset

    return config_from_preset(preset["model"], {"name": "video_text", "kwargs": preset["data"]},
                              preset["train"], seed=seed, output_dir=str(output_dir))


# --------------------------------------------------------------------------------------------
# chapter helpers: cached synthetic clips, short runs, evaluation
# --------------------------------------------------------------------------------------------


class CachedClips(torch.utils.data.Dataset):
    """Decoded clips held in memory with every caption tokenised (toy-scale pre-training).

    Decoding a clip costs ~20 ms of CPU; a toy run reads each clip many times, so the clips are
    decoded once (middle frames, centre crop) and kept as float16. Each access returns the clip
    with one of its captions drawn at random (the pre-training sampler of Sec. 4.1).
    ``video`` ``(N, T, C, H, W)``, ``input_ids``/``attention_mask`` ``(N, K, L)``,
    ``captions`` list of K-lists.
    """

    def __init__(self, video: torch.Tensor, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor, captions: list[list[str]],
                 random_caption: bool = True) -> None:
        if not (video.shape[0] == input_ids.shape[0] == attention_mask.shape[0] == len(captions)):
            raise ValueError(f"CachedClips: {video.shape[0]} clips, {input_ids.shape[0]} caption "
                             f"rows, {len(captions)} caption lists; expected equal counts")
        self.video, self.input_ids, self.attention_mask = video, input_ids, attention_mask
        self.captions = captions
        self.random_caption = random_caption

    def __len__(self) -> int:
        return self.video.shape[0]

    def __getitem__(self, index: int) -> dict[str, Any]:
        k = int(torch.randint(self.input_ids.shape[1], ())) if self.random_caption else 0
        return {"video": self.video[index].float(), "input_ids": self.input_ids[index, k],
                "attention_mask": self.attention_mask[index, k], "video_index": index,
                "text": self.captions[index][k]}

    @staticmethod
    def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "video": torch.stack([s["video"] for s in samples]),
            "input_ids": torch.stack([s["input_ids"] for s in samples]),
            "attention_mask": torch.stack([s["attention_mask"] for s in samples]),
            "video_index": torch.tensor([s["video_index"] for s in samples]),
            "text": [s["text"] for s in samples],
        }

    def batch(self, indices: Any, caption: int = 0) -> dict[str, Any]:
        """The clips ``indices`` with caption number ``caption`` as one batch."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return {"video": self.video[idx].float(), "input_ids": self.input_ids[idx, caption],
                "attention_mask": self.attention_mask[idx, caption], "video_index": idx,
                "text": [self.captions[int(i)][caption] for i in idx]}


def _cache_clips(annotation: Path, tokenizer: Any, num_frames: int, size: int, max_len: int,
                 max_items: int | None, cache_file: Path | None) -> dict[str, Any]:
    if cache_file is not None and cache_file.is_file():
        return torch.load(cache_file, weights_only=False)
    from vlbook.data import build_dataset
    from vlbook.data.annotations import read_jsonl
    from vlbook.data.tokenizer import tokenize

    dataset = build_dataset("video_text", annotation=annotation, split="test",
                            num_frames=num_frames, size=size, tokenizer=None, max_len=max_len)
    count = len(dataset) if max_items is None else min(max_items, len(dataset))
    records = read_jsonl(annotation, "retrieval")
    video = torch.stack([dataset[i]["video"].half() for i in range(count)])
    captions = [list(records[i]["captions"]) for i in range(count)]
    per_clip = min(len(c) for c in captions)
    captions = [c[:per_clip] for c in captions]
    ids, mask = tokenize(tokenizer, [t for c in captions for t in c], max_len)
    data = {"video": video, "input_ids": ids.view(count, per_clip, -1),
            "attention_mask": mask.view(count, per_clip, -1), "captions": captions,
            "video_ids": [r.get("video_id", r["video"]) for r in records[:count]]}
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(data, cache_file)
    return data


def synthetic_data(preset: Mapping[str, Any], root: str | Path | None = None,
                   cache: bool = True) -> dict[str, Any]:
    """The synthetic benchmark of ``preset["data"]`` as cached clips.

    Returns ``{"root", "tokenizer", "train", "test", "mc"}``: ``train``/``test``
    :class:`CachedClips` (``max_train``/``max_test`` clips), ``mc`` a dict of the test clips'
    multiple-choice items (``option_ids``, ``option_mask`` ``(N, K, L)``, ``label``,
    ``option_attributes``) aligned with ``test``.
    """
    from vlbook.data.annotations import read_jsonl
    from vlbook.data.synthetic import annotation_path, ensure_synthetic
    from vlbook.data.tokenizer import load_tokenizer, tokenize
    from vlbook.paths import runs_root

    data = preset["data"]
    root = Path(root) if root else ensure_synthetic(data["synthetic"])
    tokenizer = load_tokenizer(root / "tokenizer")
    out: dict[str, Any] = {"root": root, "tokenizer": tokenizer}
    for split, limit in (("train", data.get("max_train")), ("test", data.get("max_test"))):
        cache_file = None
        if cache:
            tag = f"{root.name}_{split}_{limit}_{data['num_frames']}f_{data['size']}px"
            cache_file = runs_root() / "simvtp" / "cache" / f"{tag}_{data['max_len']}tok.pt"
        clips = _cache_clips(annotation_path(root, "retrieval", split), tokenizer,
                             data["num_frames"], data["size"], data["max_len"], limit, cache_file)
        out[split] = CachedClips(clips["video"], clips["input_ids"], clips["attention_mask"],
                                 clips["captions"], random_caption=split == "train")
        out[f"{split}_video_ids"] = clips["video_ids"]
    by_id = {vid: i for i, vid in enumerate(out["test_video_ids"])}
    items = [r for r in read_jsonl(annotation_path(root, "mc", "test"), "mc")
             if r.get("video_id") in by_id]
    if items:
        k = len(items[0]["options"])
        ids, mask = tokenize(tokenizer, [o for r in items for o in r["options"]], data["max_len"])
        out["mc"] = {"clip": torch.tensor([by_id[r["video_id"]] for r in items]),
                     "option_ids": ids.view(len(items), k, -1),
                     "option_mask": mask.view(len(items), k, -1),
                     "label": torch.tensor([int(r["answer"]) for r in items]),
                     "option_attributes": [r.get("option_attributes") for r in items],
                     "options": [r["options"] for r in items]}
    return out


def build_chapter_model(preset: Mapping[str, Any], tokenizer: Any, **overrides: Any) -> SimVTP:
    """The preset's model sized to the tokenizer's vocabulary, with its mask and special ids."""
    from vlbook.models import create_model

    spec = preset["model"]
    kwargs = {**spec.get("kwargs", {}), "vocab_size": len(tokenizer),
              "max_text_len": max(preset["data"]["max_len"], 8),
              "num_frames": preset["data"]["num_frames"], "image_size": preset["data"]["size"],
              **overrides}
    model = create_model(spec["name"], **kwargs)
    model.set_tokenizer(tokenizer)
    return model


def pretrain(model: SimVTP, dataset: CachedClips, preset: Mapping[str, Any], *,
             steps: int | None = None, seed: int = 0) -> list[dict[str, float]]:
    """A short in-process pre-training run (Eq. 1 with the model's loss weights).

    AdamW with the preset's betas and weight decay, linear warm-up then cosine decay, random
    batches of clips with one random caption each. A plain loop rather than
    :func:`vlbook.train.train` so that a dozen ablation runs fit in the toy budget; ``full``
    runs go through :func:`vlbook.train.run_training`. Returns the per-step losses.
    """
    t = preset["train"]
    steps = steps or t["steps"]
    warmup = min(t["warmup_steps"], max(steps // 10, 1))
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"],
                                  betas=tuple(t["betas"]))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    history = []
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(dataset), generator=gen)[: t["batch_size"]]
        caption = int(torch.randint(dataset.input_ids.shape[1], (), generator=gen))
        losses = model(dataset.batch(idx, caption))
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        schedule.step()
        history.append({k: float(v.detach()) for k, v in losses.items()})
    model.eval()
    return history


def finetune_retrieval(model: SimVTP, dataset: CachedClips, *, steps: int, batch_size: int,
                       lr: float, seed: int = 0, video_mask_ratio: float = 0.0) -> list[float]:
    """Retrieval fine-tuning (Sec. 4.1): VTC on the shared encoder's unimodal features.

    AdamW, cosine decay, random batches of clips with a random caption each; returns the
    losses. (The code fine-tunes two copies of the encoder; toy runs keep one.)
    """
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05,
                                  betas=(0.9, 0.999))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(steps, 1))
    losses = []
    model.train()
    for _ in range(steps):
        idx = torch.randperm(len(dataset), generator=gen)[:batch_size]
        caption = int(torch.randint(dataset.input_ids.shape[1], (), generator=gen))
        loss = model.retrieval_loss(dataset.batch(idx, caption), video_mask_ratio)["loss"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def evaluate_retrieval(model: SimVTP, dataset: CachedClips, batch_size: int = 64) -> Any:
    """Text-to-video retrieval on held-out clips (first caption each), ``RetrievalResult``."""
    from vlbook.eval import RetrievalProtocol, retrieval_metrics_from_embeddings

    model.eval()
    videos, texts = [], []
    for start in range(0, len(dataset), batch_size):
        b = dataset.batch(range(start, min(start + batch_size, len(dataset))))
        videos.append(model.encode_video(b["video"]))
        texts.append(model.encode_text(b["input_ids"], b["attention_mask"]))
    protocol = RetrievalProtocol(split="test", captions_per_video="first",
                                 tie_policy="average", dataset="vlbook synthetic")
    return retrieval_metrics_from_embeddings(torch.cat(texts), torch.cat(videos),
                                             torch.arange(len(dataset)), protocol)


@torch.no_grad()
def evaluate_multiple_choice(model: SimVTP, data: Mapping[str, Any], clips: CachedClips,
                             max_items: int | None = None, batch_size: int = 16
                             ) -> dict[str, float]:
    """Zero-shot multiple choice (Sec. 4.1): accuracy and chance.

    ``mc_accuracy``: through the VTM head (the paper's protocol); ``mc_accuracy_vtc``: the option
    whose text embedding is closest (cosine) to the clip's, i.e. through the VTC features.
    """
    from vlbook.eval import multiple_choice_breakdown

    model.eval()
    n = len(data["label"]) if max_items is None else min(max_items, len(data["label"]))
    hits = hits_vtc = 0
    vtm_scores, vtc_scores = [], []
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        video = clips.video[data["clip"][sl]].float()
        ids, mask, label = data["option_ids"][sl], data["option_mask"][sl], data["label"][sl]
        out = model.score_options(video, ids, mask)
        hits += int((out.prediction == label).sum())
        b, k, length = ids.shape
        text = model.encode_text(ids.reshape(b * k, length), mask.reshape(b * k, length))
        similarity = torch.einsum("bd,bkd->bk", model.encode_video(video), text.view(b, k, -1))
        hits_vtc += int((similarity.argmax(dim=1) == label).sum())
        vtm_scores.append(out.scores)
        vtc_scores.append(similarity)
    result = {"mc_accuracy": hits / max(n, 1), "mc_accuracy_vtc": hits_vtc / max(n, 1),
              "mc_chance": 1 / data["option_ids"].shape[1], "mc_items": n}
    attributes = data.get("option_attributes")
    if n and attributes is not None and all(a is not None for a in attributes[:n]):
        # the true caption against its static / temporal one-attribute distractors (chance .5)
        for name, scores in (("mc", vtm_scores), ("mc_vtc", vtc_scores)):
            breakdown = multiple_choice_breakdown(torch.cat(scores), data["label"][:n],
                                                  attributes[:n], units="fraction")
            result[f"{name}_vs_static"] = breakdown["pairwise/static"]
            result[f"{name}_vs_temporal"] = breakdown["pairwise/temporal"]
    return result


@torch.no_grad()
def evaluate_reconstruction(model: SimVTP, dataset: CachedClips, max_items: int = 64,
                            seed: int = 0) -> dict[str, float]:
    """Held-out MSM: masked-word accuracy (chance ~1/V; ``word_majority``: always guessing the
    most frequent masked word) and masked-tube MSE (1.0 = predicting the per-patch mean), at
    the model's masking ratios."""
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    batch = dataset.batch(range(min(max_items, len(dataset))))
    out = model.run_pretraining(batch, generator=gen)
    picked = out.text_masking.labels != -100
    hits = (out.text_logits.argmax(-1) == out.text_masking.labels)[picked].float().mean()
    targets = out.text_masking.labels[picked]
    majority = float(torch.bincount(targets).max()) / max(len(targets), 1) if len(targets) else 0.0
    return {"masked_word_accuracy": float(hits), "masked_tube_mse": float(out.losses[
        "loss_video"]), "word_chance": 1 / model.config.vocab_size,
            "word_majority": majority, "masked_words": int(picked.sum())}
