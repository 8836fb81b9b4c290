"""The UMT model (Li et al., ICCV 2023): the student ViT, its teachers and the stage-2 towers.

Stage 1 (UMT Sec. 3.1, Fig. 2, Table 19):

* **Student**: a vanilla ViT without class token; 1x16x16 patches (no temporal downsampling),
  fixed sine-cosine positions over the ``T*H'*W'`` tokens, joint spatiotemporal attention
  (``student_attention="spatial"`` restricts attention to each frame, Table 3).
* **Teacher**: an image model applied frame by frame (CLIP ViT-B/16 or L/14 through
  transformers, :class:`HFCLIPTeacher`; at toy scale a small CLIP trained on synthetic
  image-text pairs, :class:`ToyCLIP`). It always sees the whole clip.
* **Semantic masking (Eq. 1-2)**: the teacher's last-layer CLS-to-patch attention, averaged
  over heads, is the sampling weight of the tokens that stay visible (80 % masked per frame;
  ``mask_type="tube"``/``"random"`` are the Table 2 alternatives).
* **Unmasked token alignment (UTA)**: for each of the last ``K`` student blocks (default 6),
  the visible tokens go through the shared final LayerNorm, get their sinusoidal positions
  added, then a per-layer head (Linear -> LayerNorm -> L2 normalise) and are regressed onto the
  teacher's tokens at the same positions (each teacher layer through CLIP's ``ln_post`` and
  projection, L2 normalised) with ``2 - 2 cos`` (= MSE of unit vectors).
* **Table 1 targets**: ``masked_recovery_weight`` adds a VideoMAE-style decoder predicting the
  teacher's last-layer tokens at the masked positions; ``pixel_weight`` adds normalised-pixel
  reconstruction (VideoMAE) from the same decoder.

Stage 2 (UMT Sec. 3.2): a BERT text encoder (first ``text_layers`` layers of BERT) and a
cross-modal decoder (the last ``fusion_layers`` layers, with cross-attention to the video
tokens), built from transformers ``BertModel``/``BertLayer``. Objectives VTC (soft id-aware
targets, learnable temperature, mean of both directions) + VTM with hard negatives + MLM at
50 % + UTA, every one computed on the masked student video; images are single-frame videos
(``image_mask_ratio`` 0.5 vs 0.8 for videos). The video feature of VTC and retrieval is
``vision_proj(pool_norm(mean of the student's tokens))`` (the code's ``add_pool_norm``);
with ``keep_temporal`` the mean is taken per frame and the similarity is the mean over frames
of the per-frame cosines (:func:`frame_averaged_similarity`, the code's ``get_sim``).

Where the paper and the released code differ, the code is the default: the semantic mask is
drawn per frame from the (not renormalised) attention; the aligned student tokens pass the
shared final norm and get positions before the heads (the paper describes "a linear
projection"); MLM masks SEP as well (only PAD/CLS are excluded).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.losses import (
    LearnableTemperature,
    mlm_loss,
    normalized_pixel_mse,
    unmasked_token_alignment,
    vtc_loss,
    vtm_loss,
    vtm_pairs_with_hard_negatives,
)
from vlbook.masking import (
    gather_visible,
    mask_text_tokens,
    random_mask,
    semantic_mask,
    tube_mask,
)
from vlbook.models.base import VLModel
from vlbook.nn import Block, PatchEmbed2d, Transformer, TubeletEmbed, sinusoid_position_table

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MASK_TYPES",
    "STUDENT_ATTENTION",
    "UMT",
    "HFCLIPTeacher",
    "MultipleChoiceOutput",
    "TeacherOutput",
    "ToyCLIP",
    "ToyCLIPConfig",
    "UMTConfig",
    "UMTOutput",
    "UMTStage2Output",
    "frame_averaged_similarity",
    "student_parameter_count",
]

MASK_TYPES: tuple[str, ...] = ("semantic", "tube", "random")
STUDENT_ATTENTION: tuple[str, ...] = ("joint", "spatial")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class UMTConfig:
    """Hyper-parameters of UMT (defaults: UMT-B stage 1, Sec. 4.1 and Table 19)."""

    # student ViT (Table 19)
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool | str = "qv"  # the code's q_bias/v_bias layout (VideoMAE)
    image_size: int = 224
    patch_size: int = 16
    num_frames: int = 8
    channels: int = 3
    drop_path_rate: float = 0.1  # 0.2 for ViT-L
    student_attention: str = "joint"  # "spatial": per-frame attention (Table 3)
    # teacher and masking (Eq. 1-2, Table 2, Fig. 4)
    teacher_dim: int = 512  # CLIP-B/16 projection width (768 for L/14)
    align_layers: int = 6  # K, Fig. 3
    mask_type: str = "semantic"
    mask_ratio: float = 0.8
    image_mask_ratio: float = 0.5  # stage 2 images (Table 4)
    # targets (Table 1)
    uta_weight: float = 1.0
    masked_recovery_weight: float = 0.0
    pixel_weight: float = 0.0
    decoder_dim: int = 384  # VideoMAE-B decoder for the [M] / MAE targets
    decoder_depth: int = 4
    decoder_heads: int = 6
    # stage 2 (Sec. 3.2)
    stage: int = 1
    text_width: int = 768
    text_layers: int = 9
    fusion_layers: int = 3
    text_heads: int = 12
    text_intermediate: int = 3072
    vocab_size: int = 30522
    max_text_len: int = 512
    shared_dim: int = 512  # VTC projection
    temperature: float = 0.07
    vtc_weight: float = 1.0
    vtm_weight: float = 1.0
    mlm_weight: float = 1.0
    mlm_probability: float = 0.5
    mask_token_id: int = 103
    special_token_ids: tuple[int, ...] = (0, 101)  # PAD, CLS: the code lets SEP be masked
    # stage-2 video feature (multi_modality vit.py): LayerNorm (eps 1e-6) after the token mean;
    # None: on for stage 2, off for stage 1 (the code's add_pool_norm / single_modality)
    pool_norm: bool | None = None
    # per-frame video features (mean over each frame's tokens), similarity = mean over frames of
    # the per-frame cosines (the code's keep_temporal + get_sim; True in every released
    # multi_modality config: umt_base / umt_large). Pre-training with semantic or random masks
    # pools over all visible tokens whatever this says (the code overrides it there)
    keep_temporal: bool = False
    # downstream
    num_classes: int = 0

    def __post_init__(self) -> None:
        self.special_token_ids = tuple(int(i) for i in self.special_token_ids)
        if self.pool_norm is None:
            self.pool_norm = self.stage == 2
        checks = [
            (self.mask_type in MASK_TYPES, f"mask_type={self.mask_type!r}; accepted {MASK_TYPES}"),
            (self.student_attention in STUDENT_ATTENTION,
             f"student_attention={self.student_attention!r}; accepted {STUDENT_ATTENTION}"),
            (0.0 <= self.mask_ratio < 1.0, f"mask_ratio={self.mask_ratio}; expected [0, 1)"),
            (0.0 <= self.image_mask_ratio < 1.0,
             f"image_mask_ratio={self.image_mask_ratio}; expected [0, 1)"),
            (1 <= self.align_layers <= self.depth,
             f"align_layers={self.align_layers}; expected 1..depth={self.depth}"),
            (self.image_size % self.patch_size == 0,
             f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"),
            (self.embed_dim % self.num_heads == 0,
             f"embed_dim={self.embed_dim} is not a multiple of num_heads={self.num_heads}"),
            (self.stage in (1, 2), f"stage={self.stage}; expected 1 or 2"),
            (min(self.uta_weight, self.masked_recovery_weight, self.pixel_weight) >= 0,
             "target weights must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"UMTConfig: {message}")

    @property
    def grid(self) -> tuple[int, int, int]:
        side = self.image_size // self.patch_size
        return (self.num_frames, side, side)

    @property
    def tokens_per_frame(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def needs_decoder(self) -> bool:
        return self.masked_recovery_weight > 0 or self.pixel_weight > 0


# --------------------------------------------------------------------------------------------
# teachers
# --------------------------------------------------------------------------------------------


@dataclass
class TeacherOutput:
    """Teacher targets for a batch of frames ``(B*T, C, H, W)``.

    ``tokens`` ``(K, B*T, N, D)``: the last ``K`` layers' patch tokens after the final norm and
    the projection, L2-normalised. ``cls_attention`` ``(B*T, N)``: last-layer CLS-to-patch
    attention averaged over heads (UMT Eq. 1). ``pooled`` ``(B*T, D)``: the projected CLS.
    """

    tokens: torch.Tensor
    cls_attention: torch.Tensor
    pooled: torch.Tensor


def _cls_attention_of_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Head-averaged attention of token 0 to tokens 1.. in ``block`` for input ``x``."""
    q, k, _ = block.attn.qkv_projection(block.norm1(x))
    scores = (q[:, :, :1] @ k.transpose(-2, -1)) * block.attn.scale  # (B, h, 1, L)
    return scores.softmax(dim=-1)[:, :, 0, 1:].mean(dim=1)


@dataclass
class ToyCLIPConfig:
    """A small CLIP (image and text towers) for toy runs; trained on synthetic image-text pairs."""

    image_size: int = 32
    patch_size: int = 8
    width: int = 64
    depth: int = 4
    heads: int = 4
    text_width: int = 64
    text_depth: int = 2
    vocab_size: int = 1000
    max_text_len: int = 32
    output_dim: int = 64
    temperature: float = 0.07


class ToyCLIP(VLModel):
    """CLIP-style image-text model (Radford et al., 2021) used as the toy teacher.

    ``pretrain_step`` is the symmetric image-text contrastive loss on batches whose ``video``
    is ``(B, 1, C, H, W)`` (vlbook's ``image_text`` dataset). As a teacher it returns
    :class:`TeacherOutput` via :meth:`teacher_outputs`.
    """

    def __init__(self, config: ToyCLIPConfig | None = None) -> None:
        super().__init__()
        self.config = c = config or ToyCLIPConfig()
        self.patch_embed = PatchEmbed2d(c.image_size, c.patch_size, 3, c.width)
        n = (c.image_size // c.patch_size) ** 2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.width))
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, c.width) * 0.02)
        self.visual = Transformer(c.width, c.depth, c.heads)
        self.visual_projection = nn.Linear(c.width, c.output_dim, bias=False)
        self.token_embedding = nn.Embedding(c.vocab_size, c.text_width)
        self.text_pos = nn.Parameter(torch.randn(1, c.max_text_len, c.text_width) * 0.01)
        self.text = Transformer(c.text_width, c.text_depth, c.heads)
        self.text_projection = nn.Linear(c.text_width, c.output_dim, bias=False)
        self.temperature = LearnableTemperature(c.temperature)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def _visual_hidden(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.patch_embed(images)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        hidden = [x]
        for block in self.visual.blocks:
            x = block(x)
            hidden.append(x)
        return tuple(hidden)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Projected CLS ``(B, D)`` of images ``(B, C, H, W)``."""
        return self.visual_projection(self.visual.norm(self._visual_hidden(images)[-1][:, 0]))

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Frame-wise CLS features averaged over time (the "CLIP-S" teacher of Table 3)."""
        b, t = video.shape[:2]
        return self.encode_image(video.flatten(0, 1)).view(b, t, -1).mean(dim=1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        length = min(input_ids.shape[1], self.config.max_text_len)
        ids, mask = input_ids[:, :length], attention_mask[:, :length].bool()
        x = self.token_embedding(ids) + self.text_pos[:, :length]
        x = self.text(x, key_padding_mask=mask)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self.text_projection(pooled)

    def pretrain_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Image-text contrastive loss (CLIP Fig. 3) on single-frame batches."""
        images = batch["video"][:, 0]
        out = vtc_loss(self.encode_image(images),
                       self.encode_text(batch["input_ids"], batch["attention_mask"]),
                       temperature=self.temperature(), combine="mean",
                       ids=batch.get("video_index"))
        return {"loss": out.loss, "itc": out.loss.detach()}

    @torch.no_grad()
    def teacher_outputs(self, frames: torch.Tensor, num_layers: int) -> TeacherOutput:
        """Targets of the last ``num_layers`` blocks for frames ``(N, C, H, W)``."""
        if num_layers > self.config.depth:
            raise ValueError(f"the teacher has {self.config.depth} layers; {num_layers} asked")
        hidden = self._visual_hidden(frames)
        last = self.visual.blocks[-1]
        attention = _cls_attention_of_block(last, hidden[-2])
        layers = torch.stack([self.visual_projection(self.visual.norm(h)) for h in
                              hidden[-num_layers:]])
        layers = F.normalize(layers, dim=-1)
        return TeacherOutput(tokens=layers[:, :, 1:], cls_attention=attention,
                             pooled=layers[-1, :, 0])


class HFCLIPTeacher(nn.Module):
    """CLIP image encoder from transformers (``CLIPVisionModelWithProjection``) as UMT teacher.

    Frames arrive ImageNet-normalised (vlbook's convention) and are re-normalised with CLIP's
    statistics and resized to the teacher's resolution (224 for B/16; 196 for L/14, so both give
    a 14x14 grid as in the code). Every layer's tokens pass CLIP's ``post_layernorm`` and
    ``visual_projection`` and are L2-normalised (the code's ``ln_post`` and ``proj``).
    ``fast`` (default): the layers run with fused attention and only the last layer's CLS row
    of attention weights is computed (``fast=False``: transformers' forward with every layer's
    weights; the same targets to float rounding, measured in ``results/bench/official-cpu``).
    """

    def __init__(self, model: nn.Module, image_size: int | None = None, *,
                 fast: bool = True) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        #: ``True``: the encoder layers run here with fused attention and only the last layer's
        #: CLS row of attention is computed explicitly (what Eq. 1 reads; the official
        #: teacher also asks for weights only there). ``False``: transformers' forward with
        #: ``output_attentions`` (every layer's full weights). Same targets either way.
        self.fast = fast
        config = model.config
        self.image_size = int(image_size or config.image_size)
        self.patch_size = int(config.patch_size)
        self.output_dim = int(config.projection_dim)
        self.register_buffer("shift", torch.tensor(
            [(im - cm) / cs for im, cm, cs in zip(IMAGENET_MEAN, CLIP_MEAN, CLIP_STD)]
        ).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(
            [im / cs for im, cs in zip(IMAGENET_STD, CLIP_STD)]).view(1, 3, 1, 1),
            persistent=False)

    @classmethod
    def from_pretrained(cls, source: str | Path, image_size: int | None = None) -> HFCLIPTeacher:
        """Load ``openai/clip-vit-base-patch16`` (or a local folder) through transformers."""
        from transformers import CLIPVisionModelWithProjection  # heavy optional dependency

        try:
            model = CLIPVisionModelWithProjection.from_pretrained(
                str(source), attn_implementation="eager")
        except OSError as err:
            raise RuntimeError(
                f"could not load the CLIP teacher {str(source)!r}: {err}. Pass a local folder "
                "holding config.json and the weights, or allow hub downloads (HF_HUB_OFFLINE=0)"
            ) from err
        return cls(model, image_size)

    @torch.no_grad()
    def teacher_outputs(self, frames: torch.Tensor, num_layers: int) -> TeacherOutput:
        frames = frames * self.scale + self.shift
        if frames.shape[-1] != self.image_size or frames.shape[-2] != self.image_size:
            frames = F.interpolate(frames, size=(self.image_size, self.image_size),
                                   mode="bicubic", align_corners=False)
        vision = self.model.vision_model
        interpolate = frames.shape[-1] != self.model.config.image_size
        if self.fast:
            hidden, attention = self._encode(vision, frames, num_layers, interpolate)
        else:
            out = vision(pixel_values=frames, output_hidden_states=True, output_attentions=True,
                         interpolate_pos_encoding=interpolate)
            attention = out.attentions[-1][:, :, 0, 1:].mean(dim=1)
            hidden = list(out.hidden_states[-num_layers:])
        layers = torch.stack([self.model.visual_projection(vision.post_layernorm(h))
                              for h in hidden])
        layers = F.normalize(layers, dim=-1)
        return TeacherOutput(tokens=layers[:, :, 1:], cls_attention=attention,
                             pooled=layers[-1, :, 0])

    @staticmethod
    def _encode(vision: nn.Module, frames: torch.Tensor, num_layers: int, interpolate: bool
                ) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The last ``num_layers`` layer outputs of CLIP's vision tower and the last layer's
        head-averaged CLS-to-patch attention, every layer through fused attention."""
        x = vision.pre_layrnorm(vision.embeddings(frames, interpolate_pos_encoding=interpolate))
        layers = vision.encoder.layers
        if num_layers > len(layers) + 1:  # + 1: the embeddings, as transformers counts
            raise ValueError(f"the teacher has {len(layers)} layers; {num_layers} asked")
        hidden: list[torch.Tensor] = [x] if num_layers == len(layers) + 1 else []
        attention = x.new_zeros(())
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            b, length, width = x.shape
            h = layer.layer_norm1(x)
            q, k, v = (proj(h).view(b, length, attn.num_heads, attn.head_dim).transpose(1, 2)
                       for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
            if i == len(layers) - 1:  # Eq. 1 reads the CLS row of the last layer only
                scores = (q[:, :, :1] @ k.transpose(-2, -1)) * attn.scale
                attention = scores.softmax(dim=-1)[:, :, 0, 1:].mean(dim=1)
            mixed = F.scaled_dot_product_attention(q, k, v, scale=attn.scale)
            x = x + attn.out_proj(mixed.transpose(1, 2).reshape(b, length, width))
            x = x + layer.mlp(layer.layer_norm2(x))
            if i >= len(layers) - num_layers:
                hidden.append(x)
        return hidden, attention


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


@dataclass
class UMTOutput:
    """Stage-1 losses and what the figures need: ``mask`` ``(B, N)`` (True = masked),
    ``cls_attention`` ``(B, T, H'W')`` of the teacher, per-layer UTA losses."""

    loss: torch.Tensor
    uta: torch.Tensor
    uta_per_layer: list[torch.Tensor]
    masked_recovery: torch.Tensor
    pixel: torch.Tensor
    mask: torch.Tensor
    cls_attention: torch.Tensor | None
    tokens: torch.Tensor  # visible tokens after the final norm (B, N_visible, D)


@dataclass
class UMTStage2Output:
    """Stage-2 losses (UMT Sec. 3.2): total and VTC, VTM, MLM, UTA terms (weighted)."""

    loss: torch.Tensor
    vtc: torch.Tensor
    vtm: torch.Tensor
    mlm: torch.Tensor
    uta: torch.Tensor


@dataclass
class MultipleChoiceOutput:
    """Scores ``(B, K)`` of each option and the argmax ``prediction`` ``(B,)``."""

    scores: torch.Tensor
    prediction: torch.Tensor


def _bert_config(config: UMTConfig, *, cross: bool) -> Any:
    from transformers import BertConfig  # heavy optional dependency

    bert = BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.text_width,
        num_hidden_layers=config.text_layers if not cross else config.fusion_layers,
        num_attention_heads=config.text_heads, intermediate_size=config.text_intermediate,
        max_position_embeddings=max(config.max_text_len, 8), is_decoder=cross,
        add_cross_attention=cross,
    )
    bert._attn_implementation = "sdpa"
    return bert


def _extended_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``(B, L)`` 1/0 -> additive ``(B, 1, 1, L)`` mask for transformers' attention."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class UMT(VLModel):
    """UMT student (stage 1) and, with ``stage=2``, the video-language model (UMT Fig. 2)."""

    gathers_contrastive_features = True

    def __init__(self, config: UMTConfig | None = None, teacher: Any = None) -> None:
        super().__init__()
        self.config = c = config or UMTConfig()
        self.patch_embed = TubeletEmbed(c.image_size, c.patch_size, 1, c.channels, c.embed_dim,
                                        c.num_frames)
        n = math.prod(c.grid)
        self.register_buffer("pos_embed", sinusoid_position_table(n, c.embed_dim),
                             persistent=False)
        rates = [c.drop_path_rate * i / max(c.depth - 1, 1) for i in range(c.depth)]
        self.blocks = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, c.mlp_ratio, c.qkv_bias, drop_path=rate,
                  norm_layer=lambda d: nn.LayerNorm(d, eps=1e-6))
            for rate in rates
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=1e-6)
        # the stage-2 encoder's pool_norm (vit.py: norm_layer, eps 1e-6) after the token mean
        self.pool_norm = nn.LayerNorm(c.embed_dim, eps=1e-6) if c.pool_norm else None
        # UTA heads: Linear -> LayerNorm -> L2 (the code's Linear_Decoder), one per aligned layer;
        # the LayerNorm's eps is the encoder's 1e-6 in single_modality (stage 1) but
        # nn.LayerNorm's default 1e-5 in multi_modality (stage 2)
        head_eps = 1e-6 if c.stage == 1 else 1e-5
        self.uta_heads = nn.ModuleList(
            nn.ModuleDict({"head": nn.Linear(c.embed_dim, c.teacher_dim),
                           "norm": nn.LayerNorm(c.teacher_dim, eps=head_eps)})
            for _ in range(c.align_layers)
        )
        self.decoder = None
        if c.needs_decoder:
            self.decoder = nn.ModuleDict({
                "embed": nn.Linear(c.embed_dim, c.decoder_dim),
                # blocks built here (not vlbook.nn.Transformer) so the model builds on meta
                "blocks": nn.ModuleList(Block(c.decoder_dim, c.decoder_heads)
                                        for _ in range(c.decoder_depth)),
                "norm": nn.LayerNorm(c.decoder_dim, eps=1e-6),
            })
            self.mask_token = nn.Parameter(torch.zeros(1, 1, c.decoder_dim))
            self.register_buffer("decoder_pos", sinusoid_position_table(n, c.decoder_dim),
                                 persistent=False)
            self.recovery_head = (nn.Linear(c.decoder_dim, c.teacher_dim)
                                  if c.masked_recovery_weight > 0 else None)
            self.pixel_head = (nn.Linear(c.decoder_dim, c.channels * c.patch_size ** 2)
                               if c.pixel_weight > 0 else None)
        self.head = nn.Linear(c.embed_dim, c.num_classes) if c.num_classes > 0 else None
        self.text_encoder = self.fusion = self.mlm_head = None
        if c.stage == 2:
            self._build_stage2()
        self.apply(_init_weights)
        self.__dict__["teacher"] = teacher  # frozen, outside the module tree and state dict

    # ---------------------------------------------------------------- construction helpers
    def _build_stage2(self) -> None:
        # transformers: heavy optional dependency, imported only for stage 2
        from transformers import BertModel
        from transformers.models.bert.modeling_bert import BertLayer, BertLMPredictionHead

        c = self.config
        self.text_encoder = BertModel(_bert_config(c, cross=False), add_pooling_layer=False)
        fusion_config = _bert_config(c, cross=True)
        self.fusion = nn.ModuleList(BertLayer(fusion_config, layer_idx=i)
                                    for i in range(c.fusion_layers))
        for layer in self.fusion:  # bidirectional self-attention, as ALBEF/UMT's fusion layers
            layer.attention.self.is_causal = False
        self.mlm_head = BertLMPredictionHead(fusion_config)
        self.mlm_head.decoder.weight = self.text_encoder.embeddings.word_embeddings.weight
        self.video_to_text = (nn.Linear(c.embed_dim, c.text_width)
                              if c.embed_dim != c.text_width else nn.Identity())
        self.vision_proj = nn.Linear(c.embed_dim, c.shared_dim)
        self.text_proj = nn.Linear(c.text_width, c.shared_dim)
        self.itm_head = nn.Linear(c.text_width, 2)
        self.temp = LearnableTemperature(c.temperature)

    def set_teacher(self, teacher: Any) -> None:
        """Attach a frozen teacher (object with ``teacher_outputs(frames, num_layers)``)."""
        if hasattr(teacher, "requires_grad_"):
            teacher.requires_grad_(False)
            teacher.eval()
        self.__dict__["teacher"] = teacher

    def no_weight_decay(self) -> set[str]:
        return {"temp.temperature", "mask_token"}

    def num_layers(self) -> int:
        return self.config.depth

    def layer_id_for_param(self, name: str) -> int:
        if name.startswith("patch_embed"):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.config.depth + 1

    # ---------------------------------------------------------------- student
    def _attention_mask(self, frame_of_token: torch.Tensor) -> torch.Tensor | None:
        """Per-frame attention (``student_attention="spatial"``): bool ``(B, 1, L, L)``."""
        if self.config.student_attention == "joint":
            return None
        return (frame_of_token[:, :, None] == frame_of_token[:, None, :])[:, None]

    def forward_student(
        self, video: torch.Tensor, mask: torch.Tensor | None = None, *,
        return_layers: int = 0,
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """Visible tokens through the ViT (UMT Sec. 3.1).

        ``mask`` ``(B, N)`` True = dropped. Returns the final tokens (after the norm), the
        last ``return_layers`` block outputs (before the norm) and the kept positions
        ``(B, N_visible)``.
        """
        c = self.config
        expected = (c.channels, c.image_size, c.image_size)
        if video.dim() != 5 or tuple(video.shape[2:]) != expected or not (
                1 <= video.shape[1] <= c.num_frames):
            shape = ", ".join(map(str, expected))
            raise ValueError(f"UMT expects video (B, T<={c.num_frames}, {shape}), "
                             f"got {tuple(video.shape)}")
        x = self.patch_embed.proj(video.transpose(1, 2)).flatten(2).transpose(1, 2)
        b, n, d = x.shape
        x = x + self.pos_embed[:n].to(x.dtype)
        positions = torch.arange(n, device=x.device).expand(b, n)
        if mask is not None:
            x = gather_visible(x, mask)
            positions = gather_visible(positions[..., None], mask)[..., 0]
        frame = torch.div(positions, self.config.tokens_per_frame, rounding_mode="floor")
        attn_mask = self._attention_mask(frame)
        hidden: list[torch.Tensor] = []
        first = self.config.depth - return_layers
        for i, block in enumerate(self.blocks):
            x = block(x, attn_mask=attn_mask)
            if i >= first:
                hidden.append(x)
        return self.norm(x), hidden, positions

    def encode_video_tokens(self, video: torch.Tensor) -> torch.Tensor:
        """All output tokens ``(B, N, D)`` of an unmasked clip (or image, ``T=1``)."""
        return self.forward_student(video)[0]

    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """Mean-pooled tokens ``(B, D)``: the representation for action recognition."""
        return self.encode_video_tokens(video).mean(dim=1)

    def pool_video(self, tokens: torch.Tensor, num_frames: int, *,
                   keep_temporal: bool = False) -> torch.Tensor:
        """The video feature before ``vision_proj`` (multi_modality ``vit.py``): the mean of
        ``tokens`` ``(B, N, D)`` over all of them (``(B, D)``) or, with ``keep_temporal``, over
        each frame's ``N / num_frames`` tokens (``(B, T, D)``), then ``pool_norm`` when the
        model has one (stage 2)."""
        if keep_temporal:
            b, n, d = tokens.shape
            if n % num_frames:
                raise ValueError(f"{n} tokens do not split into {num_frames} frames")
            pooled = tokens.view(b, num_frames, n // num_frames, d).mean(dim=2)
        else:
            pooled = tokens.mean(dim=1)
        return self.pool_norm(pooled) if self.pool_norm is not None else pooled

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """One embedding ``(B, D)`` per clip: stage 2 ``vision_proj(pool_norm(token mean))``
        (the code's VTC feature without ``keep_temporal``), stage 1 the pooled tokens. For the
        per-frame features of ``keep_temporal`` see :meth:`encode_video_frames`."""
        pooled = self.pool_video(self.encode_video_tokens(video), video.shape[1])
        return self.vision_proj(pooled) if self.config.stage == 2 else pooled

    def encode_video_frames(self, video: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings ``(B, T, D)`` (the code's ``keep_temporal=True``): each frame's
        token mean, ``pool_norm``, then ``vision_proj`` (stage 2). Score them against texts
        with :func:`frame_averaged_similarity`."""
        pooled = self.pool_video(self.encode_video_tokens(video), video.shape[1],
                                 keep_temporal=True)
        return self.vision_proj(pooled) if self.config.stage == 2 else pooled

    def classify(self, video: torch.Tensor) -> torch.Tensor:
        """Action-recognition logits ``(B, num_classes)`` (fine-tuning head, Sec. 4.3)."""
        if self.head is None:
            raise ValueError("UMTConfig.num_classes is 0: no classification head")
        return self.head(self.video_features(video))

    # ---------------------------------------------------------------- masking and targets
    def make_mask(self, batch_size: int, num_frames: int, cls_attention: torch.Tensor | None,
                  *, ratio: float | None = None, generator: torch.Generator | None = None,
                  device: torch.device | None = None) -> torch.Tensor:
        """The student's token mask ``(B, T*H'W')`` (UMT Eq. 1-2; Table 2 alternatives)."""
        c = self.config
        ratio = c.mask_ratio if ratio is None else ratio
        grid = (num_frames, *c.grid[1:])
        if c.mask_type == "semantic":
            if cls_attention is None:
                raise ValueError("semantic masking needs the teacher's CLS attention")
            return semantic_mask(cls_attention.view(batch_size, num_frames, -1), ratio,
                                 generator=generator).to(device or cls_attention.device)
        if c.mask_type == "tube":
            return tube_mask(batch_size, grid, ratio, generator=generator, device=device)
        return random_mask(batch_size, math.prod(grid), ratio, generator=generator,
                           device=device)

    def teacher_targets(self, video: torch.Tensor, num_layers: int) -> TeacherOutput:
        """Run the frozen teacher on every frame (the teacher always sees the whole clip)."""
        teacher = self.__dict__.get("teacher")
        if teacher is None:
            raise RuntimeError("UMT needs a teacher: model.set_teacher(ToyCLIP or HFCLIPTeacher)")
        b, t = video.shape[:2]
        if isinstance(teacher, nn.Module):
            param = next(teacher.parameters(), None)
            if param is not None and param.device != video.device:
                teacher.to(video.device)
        out = teacher.teacher_outputs(video.flatten(0, 1), num_layers)
        expected = self.config.tokens_per_frame
        if out.tokens.shape[2] != expected:
            raise ValueError(f"teacher gives {out.tokens.shape[2]} tokens per frame; the student "
                             f"has {expected} ({self.config.grid[1]}x{self.config.grid[2]})")
        tokens = out.tokens.reshape(num_layers, b, t * expected, -1)
        return TeacherOutput(tokens=tokens, cls_attention=out.cls_attention.view(b, t, -1),
                             pooled=out.pooled.view(b, t, -1))

    def uta_predictions(self, hidden: list[torch.Tensor], positions: torch.Tensor
                        ) -> list[torch.Tensor]:
        """Student side of UTA: shared norm, + positions, per-layer Linear -> LN -> L2."""
        pos = self.pos_embed[positions].to(hidden[0].dtype)
        return [F.normalize(h["norm"](h["head"](self.norm(x) + pos)), dim=-1)
                for h, x in zip(self.uta_heads, hidden)]

    def _decode(self, visible: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """VideoMAE decoder: visible tokens + mask tokens; returns masked-position outputs."""
        dec = self.decoder
        b, n = mask.shape
        x = dec["embed"](visible)
        full = self.mask_token.expand(b, n, -1).clone()
        full[~mask] = x.reshape(-1, x.shape[-1])
        full = full + self.decoder_pos.to(full.dtype)
        for block in dec["blocks"]:
            full = block(full)
        out = dec["norm"](full)
        return out[mask].view(b, -1, out.shape[-1])

    def stage1_losses(self, video: torch.Tensor, *, generator: torch.Generator | None = None,
                      mask_ratio: float | None = None) -> UMTOutput:
        """Stage-1 objective (UMT Sec. 3.1): UTA (+ the Table 1 alternatives)."""
        c = self.config
        b, t = video.shape[:2]
        k = c.align_layers
        ratio = mask_ratio if mask_ratio is not None else (
            c.mask_ratio if t > 1 else c.image_mask_ratio)
        target = self.teacher_targets(video, k)
        mask = self.make_mask(b, t, target.cls_attention, ratio=ratio, generator=generator,
                              device=video.device)
        aligned = k if c.uta_weight > 0 else 0
        tokens, hidden, positions = self.forward_student(video, mask, return_layers=aligned)
        zero = tokens.sum() * 0.0
        uta_loss, per_layer = zero, []
        if aligned:
            uta = unmasked_token_alignment(self.uta_predictions(hidden, positions),
                                           list(target.tokens[-k:]), visible_mask=mask)
            uta_loss, per_layer = uta.loss, uta.per_layer
        recovery = pixel = zero
        if self.decoder is not None:
            decoded = self._decode(tokens, mask)
            if self.recovery_head is not None:
                predicted = F.normalize(self.recovery_head(decoded), dim=-1)
                wanted = target.tokens[-1][mask].view(b, -1, predicted.shape[-1])
                recovery = (2 - 2 * (predicted * wanted).sum(-1)).mean()
            if self.pixel_head is not None:
                pixel = normalized_pixel_mse(self.pixel_head(decoded), video, mask, 1,
                                             c.patch_size)
        total = (c.uta_weight * uta_loss + c.masked_recovery_weight * recovery
                 + c.pixel_weight * pixel)
        return UMTOutput(loss=total, uta=uta_loss, uta_per_layer=per_layer,
                         masked_recovery=recovery, pixel=pixel, mask=mask,
                         cls_attention=target.cls_attention, tokens=tokens)

    # ---------------------------------------------------------------- stage 2
    def encode_text_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor
                           ) -> torch.Tensor:
        """Text encoder (the first BERT layers) tokens ``(B, L, W)``."""
        if self.text_encoder is None:
            raise ValueError("text encoder exists only with UMTConfig(stage=2)")
        return self.text_encoder(input_ids=input_ids, attention_mask=attention_mask
                                 ).last_hidden_state

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Retrieval embedding of the text: ``text_proj`` of the CLS token."""
        return self.text_proj(self.encode_text_tokens(input_ids, attention_mask)[:, 0])

    def fuse(self, text_tokens: torch.Tensor, attention_mask: torch.Tensor,
             video_tokens: torch.Tensor) -> torch.Tensor:
        """Cross-modal decoder: the last BERT layers with cross-attention to the video."""
        x = text_tokens
        ext = _extended_mask(attention_mask, x.dtype)
        context = self.video_to_text(video_tokens)
        for layer in self.fusion:
            x = layer(x, attention_mask=ext, encoder_hidden_states=context)
        return x

    def match_logits(self, video_tokens: torch.Tensor, text_tokens: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:
        """VTM logits ``(B, 2)`` from the fusion CLS."""
        return self.itm_head(self.fuse(text_tokens, attention_mask, video_tokens)[:, 0])

    def stage2_losses(self, batch: Mapping[str, Any], *,
                      generator: torch.Generator | None = None) -> UMTStage2Output:
        """VTC + VTM (hard negatives) + MLM + UTA on the masked video (UMT Sec. 3.2)."""
        c = self.config
        video = batch["video"]
        ids, att = batch["input_ids"], batch["attention_mask"]
        index = batch.get("video_index")
        stage1 = self.stage1_losses(video, generator=generator)  # images: T=1, 50 % masked
        visible_tokens = stage1.tokens
        text_tokens = self.encode_text_tokens(ids, att)
        text_emb = self.text_proj(text_tokens[:, 0])
        # the code (encode_vision) keeps frames apart in masked training only with tube masks
        per_frame = c.keep_temporal and c.mask_type == "tube"
        video_emb = self.vision_proj(self.pool_video(visible_tokens, video.shape[1],
                                                     keep_temporal=per_frame))
        normalize = True
        if per_frame:  # mean_t cos(v_t, t) = (mean_t v_t/|v_t|) . t/|t|: get_sim's logits
            video_emb = F.normalize(video_emb, dim=-1).mean(dim=1)
            text_emb, normalize = F.normalize(text_emb, dim=-1), False
        vtc = vtc_loss(video_emb, text_emb, temperature=self.temp(), combine="mean", ids=index,
                       normalize=normalize, gather=torch.distributed.is_available()
                       and torch.distributed.is_initialized())
        pairs = vtm_pairs_with_hard_negatives(vtc.logits.detach().float(), index,
                                              generator=generator)
        logits = self.match_logits(visible_tokens[pairs.video_index],
                                   text_tokens[pairs.text_index], att[pairs.text_index])
        vtm = vtm_loss(logits, pairs.labels)
        masking = mask_text_tokens(ids, att, mask_token_id=c.mask_token_id,
                                   vocab_size=c.vocab_size, ratio=c.mlm_probability,
                                   special_token_ids=c.special_token_ids, generator=generator)
        fused = self.fuse(self.encode_text_tokens(masking.input_ids, att), att, visible_tokens)
        mlm = mlm_loss(self.mlm_head(fused), masking.labels)
        total = (c.vtc_weight * vtc.loss + c.vtm_weight * vtm + c.mlm_weight * mlm
                 + c.uta_weight * stage1.uta)
        return UMTStage2Output(loss=total, vtc=vtc.loss, vtm=vtm, mlm=mlm, uta=stage1.uta)

    def pretrain_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Stage 1 (UTA and Table 1 targets) or stage 2 (VTC+VTM+MLM+UTA), by ``config.stage``."""
        if self.config.stage == 2:
            out2 = self.stage2_losses(batch)
            return {"loss": out2.loss, "vtc": out2.vtc.detach(), "vtm": out2.vtm.detach(),
                    "mlm": out2.mlm.detach(), "uta": out2.uta.detach()}
        out = self.stage1_losses(batch["video"])
        return {"loss": out.loss, "uta": out.uta.detach(),
                "masked_recovery": out.masked_recovery.detach(), "pixel": out.pixel.detach()}

    # ---------------------------------------------------------------- downstream
    @torch.no_grad()
    def retrieval_scores(self, video: torch.Tensor, input_ids: torch.Tensor,
                         attention_mask: torch.Tensor, *, keep_temporal: bool | None = None
                         ) -> torch.Tensor:
        """VTC similarities ``(texts, videos)`` (zero-shot retrieval, Sec. 4.4): with
        ``keep_temporal`` (default: the config's) the mean over frames of the per-frame cosines
        (:func:`frame_averaged_similarity`, the code's evaluation), else the cosine of the
        pooled embeddings."""
        keep = self.config.keep_temporal if keep_temporal is None else keep_temporal
        t = self.encode_text(input_ids, attention_mask)
        if keep:
            return frame_averaged_similarity(self.encode_video_frames(video), t)
        v = F.normalize(self.encode_video(video), dim=-1)
        return F.normalize(t, dim=-1) @ v.T

    @torch.no_grad()
    def score_options(self, video: torch.Tensor, option_ids: torch.Tensor,
                      option_mask: torch.Tensor, method: str = "vtc") -> MultipleChoiceOutput:
        """Multiple-choice QA as retrieval (Sec. 4.4): each option scored by the VTC cosine
        (``method="vtc"``) or the VTM match probability (``"vtm"``)."""
        if method not in ("vtc", "vtm"):
            raise ValueError(f"method={method!r}; expected 'vtc' or 'vtm'")
        b, k, length = option_ids.shape
        video_tokens = self.encode_video_tokens(video)
        text = self.encode_text_tokens(option_ids.view(b * k, length),
                                       option_mask.view(b * k, length))
        if method == "vtc":  # per-frame cosines averaged with keep_temporal (retrieval_mc.py)
            pooled = self.pool_video(video_tokens, video.shape[1],
                                     keep_temporal=self.config.keep_temporal)
            v = F.normalize(self.vision_proj(pooled), dim=-1)
            v = v if v.dim() == 3 else v[:, None]
            t = F.normalize(self.text_proj(text[:, 0]), dim=-1).view(b, k, -1)
            scores = torch.einsum("bkd,btd->bk", t, v) / v.shape[1]
        else:
            logits = self.match_logits(video_tokens.repeat_interleave(k, 0), text,
                                       option_mask.view(b * k, length))
            scores = logits.softmax(-1)[:, 1].view(b, k)
        return MultipleChoiceOutput(scores=scores, prediction=scores.argmax(-1))

    def example_batch(self, batch_size: int = 2, generator: torch.Generator | None = None
                      ) -> dict[str, Any]:
        """A random batch of the right shapes (used by the benchmark)."""
        c = self.config
        video = torch.randn(batch_size, c.num_frames, c.channels, c.image_size, c.image_size,
                            generator=generator)
        length = 16
        low = 1000 if c.vocab_size > 2000 else 5
        ids = torch.randint(low, c.vocab_size, (batch_size, length), generator=generator)
        ids[:, 0] = 101
        return {"video": video, "input_ids": ids,
                "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
                "video_index": torch.arange(batch_size)}


def frame_averaged_similarity(video: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """UMT's video-text similarity ``(texts, videos)`` (multi_modality ``get_sim``).

    ``video`` ``(V, T, D)``: one embedding per frame (``(V, D)``: one per clip); ``text``
    ``(N, D)``. Every frame and text embedding is L2-normalised, each frame's cosine with each
    text is taken, and the cosines are averaged over the frames: the average comes after the
    cosine, so this is not the cosine of the frame-averaged embedding. No temperature (the code
    divides by it for VTC logits and applies no softmax before the average).
    """
    if video.dim() == 2:
        video = video[:, None]
    if video.dim() != 3 or text.dim() != 2 or video.shape[-1] != text.shape[-1]:
        raise ValueError(f"expected video (V, T, D) and text (N, D); got {tuple(video.shape)} "
                         f"and {tuple(text.shape)}")
    v = F.normalize(video, dim=-1)
    t = F.normalize(text, dim=-1)
    return torch.einsum("nd,vtd->nv", t, v) / video.shape[1]


def _init_weights(module: nn.Module) -> None:
    """Xavier-uniform linears, unit LayerNorms (the code's ``_init_weights``)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)



def student_parameter_count(model: UMT) -> int:
    """Parameters of the student ViT (patch embedding, blocks, final norm): the paper's
    "Param" column (UTA heads, decoder and text parts excluded)."""
    return sum(p.numel() for n, p in model.named_parameters()
               if n.startswith(("patch_embed.", "blocks.", "norm.")))
