"""SimVTP: a video-text masked autoencoder with one shared encoder (Ma et al., 2022).

The model itself: config, blocks, :class:`SimVTP` and its outputs, and the encoder FLOP count
of Table 4d. Weights are loaded by :mod:`vlbook.models.simvtp.convert`, the named variants live
in :mod:`vlbook.models.simvtp.variants`, the chapter in :mod:`vlbook.chapters.simvtp`.

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

Paper vs released code (the released code's choice is the default):

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
encoder initialisations of Table 4c
(:func:`~vlbook.models.simvtp.convert.load_videomae_encoder`,
:func:`~vlbook.models.simvtp.convert.load_timm_vit_encoder`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.analysis import count_flops
from vlbook.losses import (
    mlm_loss,
    normalized_pixel_mse,
    random_negative_indices,
    vtc_loss,
    vtm_loss,
)
from vlbook.masking import TextMasking, gather_masked, gather_visible, mask_text_tokens, tube_mask
from vlbook.models.base import VLModel
from vlbook.nn import Block, TubeletEmbed, sinusoid_position_table

__all__ = [
    "DECODER_TYPES",
    "POOLINGS",
    "TEXT_REPLACEMENTS",
    "VTM_NEGATIVES",
    "BlockStack",
    "JointOutput",
    "MultipleChoiceOutput",
    "SimVTP",
    "SimVTPConfig",
    "SimVTPOutput",
    "TextDecoder",
    "TextEmbeddings",
    "VideoDecoder",
    "VideoMasking",
    "encoder_flops_ratio",
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

