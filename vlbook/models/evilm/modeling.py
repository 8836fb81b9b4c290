"""The E-ViLM model: EdgeNeXt + tiny BERT + decoder, and the semantic VQ video tokenizer.

E-ViLM has **no public code**: the paper is the only specification, so every choice it leaves
open is vlbook's and is listed here (and in the chapter).

The model (E-ViLM Sec. 3.1, Fig. 3, Table 8):

* **Video encoder** ``ENC_V``: EdgeNeXt-small (timm ``edgenext_small``, 5.3 M without its
  classifier) on each of 4 sparse frames at 256 px; its stride-32 grid (8x8 x 304 channels per
  frame) is flattened over frames and projected to the decoder width by a linear layer ("Visual
  MLP Layer", 304x384 + 384 = 117 K).
* **Language encoder** ``ENC_L``: a BERT with hidden 128, 4 heads. *Choices:* 12 layers and
  intermediate 512 (Google's BERT L-12/H-128; 12 x 198 K = 2.4 M, Table 8 "Textual Encoder");
  vocabulary 9,420 words and 40 positions (1.21 M, Table 8 "Textual Embedding Layer 1.2 M"; the
  paper keeps "the top 30 % most frequent words" without the count). A linear layer maps 128 to
  384 ("Textual MLP Layer" 49.5 K).
* **Multimodal decoder** ``DEC_VL`` (Eq. 2): ``[e_CLS, e_L + t_L, e_V + t_V]`` through 4
  pre-norm transformer blocks at 384 (*choice:* 6 heads, MLP ratio 4; 4 x 1.77 M = 7.1 M).
  *Choice:* one ``Embedding(3, 384)`` holds ``e_CLS`` (row 0) and ``t_L``, ``t_V`` (rows 1, 2):
  1,152 parameters = Table 8's "Token Type Emb. Layer 1.2 K". The pooler (Linear + tanh on the
  CLS, 147 K) and the 2-way VTM head (770) follow. *Choice:* a learned temporal embedding per
  frame (``temporal_embedding``) is off for the paper variant (Table 8 lists none) and on for
  the toy model, whose synthetic captions describe motion.

Masked video modelling with the semantic tokenizer (Sec. 3.2-3.3, Eq. 3-7):

* The tokenizer (:class:`SemanticVQTokenizer`) encodes each frame with a ViT, projects every
  patch to 32-d, and quantises it with a 9,420-code, L2-normalised codebook
  (:class:`vlbook.losses.VectorQuantizer`, Eq. 4). An 8-layer transformer decoder reads the
  codes, mean-pools them and predicts the caption's words as multi-label targets with the focal
  loss (Eq. 5-6); Eq. 7 adds codebook and commitment terms, gradients pass straight through.
  After training only encoder + quantiser are kept. *Choices:* CLIP ViT-B/32 for ``full``
  (its 32 px patches at 256 px give the same 8x8 grid as EdgeNeXt's stride 32, so one code is
  one video token), a learned position per (frame, patch) in the decoder, decoder width 512.
  Ablations (Tables 6-7): ``word_loss="bce"`` and ``target="pixels"`` (a dVAE-like tokenizer
  that reconstructs the patches' pixels instead of the words).
* MVM (Eq. 3): block-wise masking (BEiT) of 40 % of each frame's regions, the masked pixels
  set to zero (*choice:* zero of the normalised input, i.e. the dataset mean colour);
  a linear head on each masked video token predicts the tokenizer's code of the same region,
  computed on the *unmasked* frames; cross-entropy averaged over masked regions.
* Pre-training loss (Eq. 8): ``L = L_MLM + L_VTM + L_MVM``, MLM 15 % (BERT 80/10/10), VTM with
  half of the captions paired with a random other clip. *Choice:* one joint pass per step
  (masked text, masked video, VTM pairs); MLM counts only matched pairs, MVM all rows.

Downstream (Sec. 4.2): open-ended QA and linear-probe classification heads on pooled
features, multiple choice by the VTM score, retrieval with unimodal encoding (text-only and
video-only passes through the decoder, "fast retrieval" of Sec. 4.4) and an optional VTC loss
for its fine-tuning.

The named variants are in :mod:`~vlbook.models.evilm.variants`, the EdgeNeXt weight loader in
:mod:`~vlbook.models.evilm.convert`; the chapter (presets, toy training, evaluations) is
:mod:`vlbook.chapters.evilm`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.losses import (
    VectorQuantizer,
    focal_loss,
    mlm_loss,
    patchify_video,
    vtc_loss,
    vtm_loss,
    vtm_pairs_with_random_videos,
)
from vlbook.masking import block_mask, mask_text_tokens
from vlbook.models.base import VLModel
from vlbook.models.evilm.convert import load_edgenext_weights
from vlbook.nn import Block, PatchEmbed2d
from vlbook.serialization import safe_load

__all__ = [
    "INITS",
    "TOKENIZER_TARGETS",
    "VIDEO_BACKBONES",
    "WORD_LOSSES",
    "ClipFrameEncoder",
    "ConvFrameEncoder",
    "ConvStage",
    "EViLM",
    "EViLMConfig",
    "EViLMOutput",
    "EdgeNeXtFrameEncoder",
    "MultipleChoiceOutput",
    "SemanticVQTokenizer",
    "TokenizerConfig",
    "TokenizerOutput",
    "TokenizerTraining",
    "TransformerStack",
    "ViTFrameEncoder",
    "build_text_encoder",
    "caption_word_targets",
    "load_video_tokenizer",
    "mask_video_regions",
    "parameter_breakdown",
    "save_video_tokenizer",
]

VIDEO_BACKBONES: tuple[str, ...] = ("edgenext_small", "conv")
TOKENIZER_TARGETS: tuple[str, ...] = ("words", "pixels")
WORD_LOSSES: tuple[str, ...] = ("focal", "bce")
#: Linear-weight initialisations of the decoder, projections and heads (the backbones keep
#: their own). ``"bert"``: N(0, 0.02), the usual choice for the paper-size model. ``"xavier"``:
#: Xavier-uniform, used by the toy model, whose width is too small for N(0, 0.02).
INITS: tuple[str, ...] = ("bert", "xavier")


# --------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------


@dataclass
class EViLMConfig:
    """Hyper-parameters of E-ViLM (defaults: the paper's model, Sec. 4.1 and Table 8)."""

    image_size: int = 256
    num_frames: int = 4
    channels: int = 3
    video_backbone: str = "edgenext_small"
    conv_dims: tuple[int, ...] = (32, 64)  # toy "conv" backbone: one stage per width
    conv_stride: int = 16  # toy backbone's output stride (edgenext: 32)
    temporal_embedding: bool = False
    video_token_norm: bool = False  # LayerNorm after the visual MLP (toy; not in Table 8)
    vocab_size: int = 9420
    max_text_len: int = 40
    text_hidden: int = 128
    text_layers: int = 12
    text_heads: int = 4
    text_intermediate: int = 512
    hidden: int = 384
    decoder_depth: int = 4
    decoder_heads: int = 6
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0
    # "bert": truncated N(0, 0.02) linear weights (BERT/ViLT convention; the paper says
    # nothing); "xavier": Xavier-uniform linear weights (toy model, see ``INITS``)
    init: str = "bert"
    # objectives (Eq. 3, 8)
    use_vtm: bool = True
    use_mlm: bool = True
    use_mvm: bool = True
    num_codes: int = 9420  # the tokenizer's codebook size = MVM classes
    mvm_ratio: float = 0.4
    # False: one joint pass over the masked frames reads all three losses (the paper's Fig. 3:
    # the backbone "encodes the masked video frames"); True: VTM and MLM read a pass over the
    # unmasked frames and MVM a second pass over the masked ones (VIOLET's arrangement; the
    # paper does not say which). Costs a second joint pass per step.
    mvm_separate_pass: bool = False
    mlm_probability: float = 0.15
    mask_token_id: int = 103
    special_token_ids: tuple[int, ...] = (0, 100, 101, 102, 103)
    vtm_negative_fraction: float = 0.5
    vtc_weight: float = 0.0  # > 0: unimodal contrastive loss (retrieval fine-tuning, Sec. 4.4)
    vtc_temperature: float = 0.05
    # downstream
    num_answers: int = 0
    num_classes: int = 0

    def __post_init__(self) -> None:
        self.conv_dims = tuple(int(d) for d in self.conv_dims)
        self.special_token_ids = tuple(int(i) for i in self.special_token_ids)
        checks = [
            (self.video_backbone in VIDEO_BACKBONES,
             f"video_backbone={self.video_backbone!r}; accepted: {VIDEO_BACKBONES}"),
            (self.image_size % self.stride == 0,
             f"image_size={self.image_size} is not a multiple of the backbone stride "
             f"{self.stride}"),
            (self.hidden % self.decoder_heads == 0,
             f"hidden={self.hidden} is not a multiple of decoder_heads={self.decoder_heads}"),
            (self.text_hidden % self.text_heads == 0,
             f"text_hidden={self.text_hidden} is not a multiple of text_heads={self.text_heads}"),
            (self.init in INITS, f"init={self.init!r}; accepted: {INITS}"),
            (0.0 < self.mvm_ratio < 1.0, f"mvm_ratio={self.mvm_ratio}; expected (0, 1)"),
            (self.num_frames >= 1, f"num_frames={self.num_frames}; expected >= 1"),
            (self.num_codes >= 2, f"num_codes={self.num_codes}; expected >= 2"),
        ]
        if self.video_backbone == "conv":
            checks.append((self.conv_stride % (2 ** (len(self.conv_dims) - 1)) == 0
                           and self.conv_stride >= 2 ** (len(self.conv_dims) - 1),
                           f"conv_stride={self.conv_stride} must be a multiple of "
                           f"2**(len(conv_dims)-1)={2 ** (len(self.conv_dims) - 1)}"))
        for ok, message in checks:
            if not ok:
                raise ValueError(f"EViLMConfig: {message}")

    @property
    def stride(self) -> int:
        return 32 if self.video_backbone == "edgenext_small" else self.conv_stride

    @property
    def grid(self) -> tuple[int, int, int]:
        """(frames, rows, columns) of video tokens; one token = one ``stride`` x ``stride``
        region, the MVM unit."""
        side = self.image_size // self.stride
        return (self.num_frames, side, side)

    @property
    def num_video_tokens(self) -> int:
        t, h, w = self.grid
        return t * h * w


# --------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------


class TransformerStack(nn.Module):
    """Pre-norm blocks (``vlbook.nn.Block``) + final LayerNorm. Same layout as
    ``vlbook.nn.Transformer``, whose ``torch.linspace(...).tolist()`` fails on the meta device
    (needed for counting the paper-size model); drop-path rates are computed in Python here."""

    def __init__(self, dim: int, depth: int, num_heads: int, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.0) -> None:
        super().__init__()
        rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio, drop_path=rate)
                                    for rate in rates)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return self.norm(x)


class ConvStage(nn.Module):
    """A ConvNeXt-style block (7x7 depth-wise conv, LayerNorm, pointwise MLP, residual)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        return x + self.mlp(self.norm(y)).permute(0, 3, 1, 2)


class ConvFrameEncoder(nn.Module):
    """Toy stand-in for EdgeNeXt: a patchifying stem then one block per width, 2x down-sampling
    between widths; output stride ``stride``. ``(N, C, H, W) -> (N, dims[-1], H/s, W/s)``."""

    def __init__(self, dims: Sequence[int], stride: int, in_chans: int = 3) -> None:
        super().__init__()
        stem = stride // 2 ** (len(dims) - 1)
        layers: list[nn.Module] = [nn.Conv2d(in_chans, dims[0], stem, stem), ConvStage(dims[0])]
        for previous, dim in zip(dims[:-1], dims[1:]):
            layers += [nn.GroupNorm(1, previous), nn.Conv2d(previous, dim, 2, 2), ConvStage(dim)]
        self.layers = nn.Sequential(*layers)
        self.num_features = dims[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class EdgeNeXtFrameEncoder(nn.Module):
    """timm ``edgenext_small`` without its classifier: ``forward_features`` (stride 32)."""

    def __init__(self, pretrained: str | Path | bool | None = None) -> None:
        super().__init__()
        import timm  # heavy optional dependency

        self.net = timm.create_model("edgenext_small", pretrained=False, num_classes=0)
        self.net.reset_classifier(0, "")
        # the classifier's pre-logits LayerNorm (head.norm) is not used by forward_features
        if hasattr(self.net, "head"):
            self.net.head = nn.Identity()
        self.num_features = self.net.num_features
        if pretrained:
            load_edgenext_weights(self, pretrained)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_features(x)


def build_text_encoder(config: EViLMConfig) -> nn.Module:
    """The tiny BERT (transformers ``BertModel`` from a config, no pooler)."""
    from transformers import BertConfig, BertModel  # heavy optional dependency

    bert_config = BertConfig(
        vocab_size=config.vocab_size, hidden_size=config.text_hidden,
        num_hidden_layers=config.text_layers, num_attention_heads=config.text_heads,
        intermediate_size=config.text_intermediate, max_position_embeddings=config.max_text_len,
        type_vocab_size=2, pad_token_id=0,
    )
    bert_config._attn_implementation = "sdpa"
    return BertModel(bert_config, add_pooling_layer=False)


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


@dataclass
class EViLMOutput:
    """Decoder output of a joint or unimodal pass: ``hidden`` ``(B, 1+L+N, D)`` in the order
    ``[CLS, text, video]`` (absent parts are empty), ``pooled`` = pooler(CLS)."""

    hidden: torch.Tensor
    pooled: torch.Tensor
    text_hidden: torch.Tensor
    video_hidden: torch.Tensor


@dataclass
class MultipleChoiceOutput:
    """VTM match scores ``(B, K)`` of K candidate captions and the chosen index ``(B,)``."""

    scores: torch.Tensor
    prediction: torch.Tensor


# --------------------------------------------------------------------------------------------
# masking
# --------------------------------------------------------------------------------------------


def mask_video_regions(video: torch.Tensor, mask: torch.Tensor, grid: Sequence[int],
                       value: float = 0.0) -> torch.Tensor:
    """Set the pixels of masked regions to ``value`` (E-ViLM Sec. 3.2: "replacing them with
    zero-value pixels"). ``video`` ``(B, T, C, H, W)``, ``mask`` ``(B, T*h*w)`` bool over the
    ``grid = (T, h, w)`` of regions; each region is ``H/h x W/w`` pixels."""
    b, t, c, height, width = video.shape
    gt, gh, gw = (int(g) for g in grid)
    if (gt, height % gh, width % gw) != (t, 0, 0) or mask.shape != (b, gt * gh * gw):
        raise ValueError(f"mask {tuple(mask.shape)} / grid {tuple(grid)} do not fit video "
                         f"{tuple(video.shape)}")
    pixels = mask.view(b, t, 1, gh, 1, gw, 1).expand(b, t, 1, gh, height // gh, gw, width // gw)
    pixels = pixels.reshape(b, t, 1, height, width)
    return video.masked_fill(pixels, value)


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


def _init_weights(module: nn.Module, init: str = "bert") -> None:
    """BERT-style initialisation: truncated N(0, 0.02) linear weights, zero biases, unit
    LayerNorms. ``init="xavier"``: Xavier-uniform linear weights instead (see ``INITS``)."""
    if isinstance(module, nn.Linear) and init == "xavier":
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class EViLM(VLModel):
    """E-ViLM (Sec. 3.1, Eq. 1-2) with MVM/MLM/VTM pre-training (Eq. 3, 8).

    ``set_tokenizer(word_tokenizer)`` sets the MLM mask ids; ``set_video_tokenizer(vq)``
    attaches the frozen semantic tokenizer that gives MVM its targets (it is not a submodule:
    it is not trained, saved or counted with the model). Without one, MVM is skipped with a
    warning.
    """

    def __init__(self, config: EViLMConfig | None = None, *, pretrained: Any = None,
                 **overrides: Any) -> None:
        super().__init__()
        if config is None:
            config = EViLMConfig(**overrides)
        elif overrides:
            config = EViLMConfig(**{**asdict(config), **overrides})
        self.config = c = config
        if c.video_backbone == "edgenext_small":
            self.video_encoder: nn.Module = EdgeNeXtFrameEncoder(pretrained)
        else:
            self.video_encoder = ConvFrameEncoder(c.conv_dims, c.conv_stride, c.channels)
        self.video_projection = nn.Linear(self.video_encoder.num_features, c.hidden)
        self.video_norm = nn.LayerNorm(c.hidden) if c.video_token_norm else nn.Identity()
        self.text_encoder = build_text_encoder(c)
        self.text_projection = nn.Linear(c.text_hidden, c.hidden)
        self.token_type = nn.Embedding(3, c.hidden)  # 0: CLS, 1: text, 2: video
        self.frame_embedding = (nn.Parameter(torch.zeros(1, c.num_frames, 1, c.hidden))
                                if c.temporal_embedding else None)
        self.decoder = TransformerStack(c.hidden, c.decoder_depth, c.decoder_heads, c.mlp_ratio,
                                        c.drop_path_rate)
        self.pooler = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.Tanh())
        self.vtm_head = nn.Linear(c.hidden, 2)
        self.mlm_head = nn.Sequential(nn.Linear(c.hidden, c.text_hidden), nn.GELU(),
                                      nn.LayerNorm(c.text_hidden),
                                      nn.Linear(c.text_hidden, c.vocab_size))
        self.mvm_head = nn.Linear(c.hidden, c.num_codes)
        self.video_embed_proj = nn.Linear(c.hidden, c.hidden)  # VTC projections (retrieval)
        self.text_embed_proj = nn.Linear(c.hidden, c.hidden)
        self.qa_head = nn.Linear(c.hidden, c.num_answers) if c.num_answers else None
        self.classifier = nn.Linear(c.hidden, c.num_classes) if c.num_classes else None
        for name, module in self.named_children():
            if name not in ("video_encoder", "text_encoder"):
                module.apply(partial(_init_weights, init=c.init))
        if c.init == "xavier":  # the vocabulary projection keeps BERT's scale
            nn.init.trunc_normal_(self.mlm_head[-1].weight, std=0.02)
        nn.init.trunc_normal_(self.token_type.weight, std=0.02)
        self.video_tokenizer: SemanticVQTokenizer | None = None

    # -- setup -----------------------------------------------------------------------------

    def set_tokenizer(self, tokenizer: Any) -> None:
        """Take the MLM mask id and special ids from a Hugging Face word tokenizer."""
        if len(tokenizer) > self.config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens > vocab_size "
                             f"{self.config.vocab_size}")
        self.config.mask_token_id = int(tokenizer.mask_token_id)
        self.config.special_token_ids = tuple(int(i) for i in tokenizer.all_special_ids)

    def set_video_tokenizer(self, tokenizer: SemanticVQTokenizer | None) -> None:
        """Attach the trained (frozen) video tokenizer whose codes are the MVM targets."""
        if tokenizer is not None:
            if tokenizer.config.num_codes != self.config.num_codes:
                raise ValueError(f"video tokenizer has {tokenizer.config.num_codes} codes, the "
                                 f"MVM head predicts {self.config.num_codes}")
            if tokenizer.grid(self.config.num_frames) != self.config.grid:
                raise ValueError(f"video tokenizer grid {tokenizer.grid(self.config.num_frames)}"
                                 f" != model grid {self.config.grid}: its patch size must equal "
                                 f"the backbone stride {self.config.stride}")
            tokenizer.eval().requires_grad_(False)
        object.__setattr__(self, "video_tokenizer", tokenizer)

    def paper_parameter_count(self) -> int:
        """Parameters counted by Table 8 (no MLM/MVM/VTC/downstream heads beyond VTM)."""
        return sum(parameter_breakdown(self).values())

    # -- encoders ----------------------------------------------------------------------------

    def _check_video(self, video: torch.Tensor) -> None:
        c = self.config
        expected = (c.num_frames, c.channels, c.image_size, c.image_size)
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(f"batch['video'] must be (B, {', '.join(map(str, expected))}), "
                             f"got {tuple(video.shape)}")

    def embed_video(self, video: torch.Tensor) -> torch.Tensor:
        """``e^V + t^V`` (Sec. 3.1): frame grids flattened over frames, projected, ``(B, N, D)``."""
        self._check_video(video)
        b, t = video.shape[:2]
        features = self.video_encoder(video.flatten(0, 1))  # (B*T, C', h, w)
        tokens = self.video_norm(self.video_projection(features.flatten(2).transpose(1, 2)))
        tokens = tokens.view(b, t, -1, self.config.hidden)
        if self.frame_embedding is not None:
            tokens = tokens + self.frame_embedding
        return tokens.flatten(1, 2) + self.token_type.weight[2]

    def embed_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``e^L + t^L``: the tiny BERT's last layer projected to the decoder width."""
        if input_ids.shape[1] > self.config.max_text_len:
            raise ValueError(f"batch['input_ids'] has {input_ids.shape[1]} tokens > "
                             f"max_text_len {self.config.max_text_len}")
        # HF's mask helper calls .item(), impossible on the meta device used to count FLOPs;
        # there the mask is dropped (counting uses all-ones masks, the FLOPs are the same)
        bert_mask = None if attention_mask.device.type == "meta" else attention_mask
        hidden = self.text_encoder(input_ids=input_ids,
                                   attention_mask=bert_mask).last_hidden_state
        return self.text_projection(hidden) + self.token_type.weight[1]

    def decode(self, text: torch.Tensor | None, text_mask: torch.Tensor | None,
               video: torch.Tensor | None) -> EViLMOutput:
        """``DEC_VL([e_CLS, e^L + t^L, e^V + t^V])`` (Eq. 2); either modality may be absent."""
        reference = text if text is not None else video
        assert reference is not None
        b, d = reference.shape[0], self.config.hidden
        cls = self.token_type.weight[0].expand(b, 1, d)
        parts, keep = [cls], [torch.ones(b, 1, dtype=torch.bool, device=reference.device)]
        empty = reference.new_zeros(b, 0, d)
        if text is not None:
            parts.append(text)
            keep.append(text_mask.bool() if text_mask is not None else
                        torch.ones(text.shape[:2], dtype=torch.bool, device=text.device))
        if video is not None:
            parts.append(video)
            keep.append(torch.ones(video.shape[:2], dtype=torch.bool, device=video.device))
        x = torch.cat(parts, 1)
        padding = torch.cat(keep, 1)
        hidden = self.decoder(x, key_padding_mask=padding if text_mask is not None else None)
        n_text = text.shape[1] if text is not None else 0
        return EViLMOutput(
            hidden=hidden, pooled=self.pooler(hidden[:, 0]),
            text_hidden=hidden[:, 1:1 + n_text] if text is not None else empty,
            video_hidden=hidden[:, 1 + n_text:] if video is not None else empty,
        )

    def forward_joint(self, video: torch.Tensor, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor) -> EViLMOutput:
        """Joint pass over a video and its (possibly masked) caption."""
        return self.decode(self.embed_text(input_ids, attention_mask), attention_mask,
                           self.embed_video(video))

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Video-only pass (fast retrieval, Sec. 4.4), L2-normalised ``(B, D)``."""
        out = self.decode(None, None, self.embed_video(video))
        return F.normalize(self.video_embed_proj(out.pooled), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text-only pass (fast retrieval, Sec. 4.4), L2-normalised ``(B, D)``."""
        out = self.decode(self.embed_text(input_ids, attention_mask), attention_mask, None)
        return F.normalize(self.text_embed_proj(out.pooled), dim=-1)

    def video_features(self, video: torch.Tensor) -> torch.Tensor:
        """Frozen features for linear probing (Table 3): pooled video-only pass ``(B, D)``."""
        return self.decode(None, None, self.embed_video(video)).pooled

    # -- pre-training ------------------------------------------------------------------------

    def mask_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, *,
                  generator: torch.Generator | None = None) -> Any:
        """MLM corruption, 15 % with BERT's 80/10/10 (Sec. 4.1)."""
        c = self.config
        return mask_text_tokens(input_ids, attention_mask, mask_token_id=c.mask_token_id,
                                vocab_size=c.vocab_size, ratio=c.mlm_probability,
                                special_token_ids=c.special_token_ids, generator=generator)

    def mask_video(self, batch_size: int, *, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
        """Block-wise mask of ``mvm_ratio`` of each frame's regions ``(B, N)`` (Sec. 4.1)."""
        t, h, w = self.config.grid
        return block_mask(batch_size, (t, h, w), self.config.mvm_ratio, per_frame=True,
                          min_block_tokens=max(1, min(16, h * w // 4)), generator=generator,
                          device=device)

    def mvm_targets(self, video: torch.Tensor) -> torch.Tensor | None:
        """Codes ``(B, N)`` of the unmasked frames from the attached video tokenizer."""
        if self.video_tokenizer is None:
            return None
        # the tokenizer is not a submodule: follow the model's device (accelerate, .to())
        if next(self.video_tokenizer.parameters()).device != video.device:
            self.video_tokenizer.to(video.device)
        with torch.no_grad():
            return self.video_tokenizer.encode(video).codes

    def pretrain_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``L = L_MLM + L_VTM + L_MVM`` (Eq. 8) in one joint pass over the masked frames (or
        two, ``mvm_separate_pass``); objectives switch off with ``use_vtm/use_mlm/use_mvm``
        (Table 5)."""
        c = self.config
        video, ids, mask = batch["video"], batch["input_ids"], batch["attention_mask"]
        b = ids.shape[0]
        device = ids.device
        if c.use_vtm and b >= 2:
            pairs = vtm_pairs_with_random_videos(b, batch.get("video_index"),
                                                 negative_fraction=c.vtm_negative_fraction,
                                                 device=device)
            video = video[pairs.video_index]
            matched = pairs.labels.bool()
        else:
            pairs, matched = None, torch.ones(b, dtype=torch.bool, device=device)
        targets = self.mvm_targets(video) if c.use_mvm else None
        if c.use_mvm and targets is None:
            warnings.warn("use_mvm=True but no video tokenizer attached "
                          "(set_video_tokenizer): MVM skipped", stacklevel=2)
        region_mask = None
        masked_video = video
        if targets is not None:
            region_mask = self.mask_video(b, device=device)
            masked_video = mask_video_regions(video, region_mask, c.grid)
        text_masking = self.mask_text(ids, mask) if c.use_mlm else None
        text_in = text_masking.input_ids if text_masking is not None else ids
        separate = c.mvm_separate_pass and region_mask is not None
        out = self.forward_joint(video if separate else masked_video, text_in, mask)
        mvm_out = self.forward_joint(masked_video, ids, mask) if separate else out
        losses: dict[str, torch.Tensor] = {}
        total = out.pooled.sum() * 0.0
        if pairs is not None:
            losses["vtm"] = vtm_loss(self.vtm_head(out.pooled), pairs.labels)
            total = total + losses["vtm"]
        if text_masking is not None:
            labels = text_masking.labels.masked_fill(~matched[:, None], -100)
            losses["mlm"] = mlm_loss(self.mlm_head(out.text_hidden), labels)
            total = total + losses["mlm"]
        if targets is not None and region_mask is not None:
            logits = self.mvm_head(mvm_out.video_hidden[region_mask])
            losses["mvm"] = F.cross_entropy(logits, targets[region_mask])
            total = total + losses["mvm"]
        if c.vtc_weight > 0:
            v = self.encode_video(batch["video"])
            t = self.encode_text(ids, mask)
            losses["vtc"] = vtc_loss(v, t, temperature=c.vtc_temperature,
                                     ids=batch.get("video_index"), combine="mean").loss
            total = total + c.vtc_weight * losses["vtc"]
        losses["loss"] = total
        return losses

    # -- downstream heads -------------------------------------------------------------------

    def match_logits(self, video: torch.Tensor, input_ids: torch.Tensor,
                     attention_mask: torch.Tensor) -> torch.Tensor:
        """VTM logits ``(B, 2)`` (index 1 = match)."""
        return self.vtm_head(self.forward_joint(video, input_ids, attention_mask).pooled)

    def score_options(self, video: torch.Tensor, option_ids: torch.Tensor,
                      option_mask: torch.Tensor) -> MultipleChoiceOutput:
        """Multiple choice by VTM (Table 1 MC, Table 4 zero-shot): ``option_ids`` ``(B, K, L)``."""
        b, k, length = option_ids.shape
        videos = video.unsqueeze(1).expand(b, k, *video.shape[1:]).flatten(0, 1)
        logits = self.match_logits(videos, option_ids.reshape(b * k, length),
                                   option_mask.reshape(b * k, length))
        scores = (logits[:, 1] - logits[:, 0]).view(b, k)
        return MultipleChoiceOutput(scores=scores, prediction=scores.argmax(-1))

    def answer_logits(self, video: torch.Tensor, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor) -> torch.Tensor:
        """Open-ended QA over ``num_answers`` answers from the pooled CLS (Table 1)."""
        if self.qa_head is None:
            raise RuntimeError("EViLM was built with num_answers=0: no QA head")
        return self.qa_head(self.forward_joint(video, input_ids, attention_mask).pooled)

    def classify(self, video: torch.Tensor) -> torch.Tensor:
        """Linear-probe classifier on frozen video features (Table 3)."""
        if self.classifier is None:
            raise RuntimeError("EViLM was built with num_classes=0: no classifier")
        with torch.no_grad():
            features = self.video_features(video)
        return self.classifier(features)

    def example_batch(self, batch_size: int = 2,
                      generator: torch.Generator | None = None) -> dict[str, Any]:
        """A random batch of the right shapes (benchmarks, tests)."""
        c = self.config
        length = min(c.max_text_len, 16)
        ids = torch.randint(5, c.vocab_size, (batch_size, length), generator=generator)
        ids[:, 0] = 2
        return {
            "video": torch.randn(batch_size, c.num_frames, c.channels, c.image_size,
                                 c.image_size, generator=generator),
            "input_ids": ids, "attention_mask": torch.ones_like(ids),
            "video_index": torch.arange(batch_size), "text": ["x"] * batch_size,
        }


def parameter_breakdown(model: EViLM) -> dict[str, int]:
    """Parameters grouped as in Table 8 (the "CLS HEAD" row is the 2-way VTM head)."""
    def count(module: nn.Module | None) -> int:
        return 0 if module is None else sum(p.numel() for p in module.parameters())

    text = model.text_encoder
    frame = model.frame_embedding.numel() if model.frame_embedding is not None else 0
    return {
        "text_embeddings": count(text.embeddings), "text_encoder": count(text.encoder),
        "text_projection": count(model.text_projection),
        "token_type": count(model.token_type) + frame,
        "video_encoder": count(model.video_encoder),
        "video_projection": count(model.video_projection) + count(model.video_norm),
        "decoder": count(model.decoder),
        "pooler": count(model.pooler), "vtm_head": count(model.vtm_head),
    }


# --------------------------------------------------------------------------------------------
# the semantic vector-quantised video tokenizer (Sec. 3.3, Fig. 4, Eq. 4-7)
# --------------------------------------------------------------------------------------------


@dataclass
class TokenizerConfig:
    """Video tokenizer hyper-parameters (defaults: paper, ``full``: CLIP ViT-B/32 encoder)."""

    encoder: str = "clip"  # "clip" (transformers CLIPVisionModel) or "vit" (vlbook.nn, toy)
    clip_name: str = "openai/clip-vit-base-patch32"
    image_size: int = 256
    patch_size: int = 32
    channels: int = 3
    max_frames: int = 4
    encoder_dim: int = 768  # "vit": width of the toy ViT
    encoder_depth: int = 2
    encoder_heads: int = 4
    num_codes: int = 9420
    code_dim: int = 32
    decoder_dim: int = 512
    decoder_depth: int = 8
    decoder_heads: int = 8
    vocab_size: int = 9420
    target: str = "words"  # "pixels": dVAE-like reconstruction baseline (Tables 6-7)
    word_loss: str = "focal"  # "bce": Table 6's T.L_BCE
    gamma_negative: float = 1.0
    codebook_weight: float = 1.0
    commitment_weight: float = 1.0
    special_token_ids: tuple[int, ...] = (0, 100, 101, 102, 103)

    def __post_init__(self) -> None:
        self.special_token_ids = tuple(int(i) for i in self.special_token_ids)
        if self.target not in TOKENIZER_TARGETS:
            raise ValueError(f"TokenizerConfig: target={self.target!r}; accepted: "
                             f"{TOKENIZER_TARGETS}")
        if self.word_loss not in WORD_LOSSES:
            raise ValueError(f"TokenizerConfig: word_loss={self.word_loss!r}; accepted: "
                             f"{WORD_LOSSES}")
        if self.encoder not in ("clip", "vit"):
            raise ValueError(f"TokenizerConfig: encoder={self.encoder!r}; accepted: clip, vit")
        if self.image_size % self.patch_size:
            raise ValueError(f"TokenizerConfig: image_size={self.image_size} is not a multiple "
                             f"of patch_size={self.patch_size}")


@dataclass
class TokenizerOutput:
    """Tokenizer pass: ``codes`` ``(B, T*h*w)``, quantiser output ``vq``, the decoder's
    prediction (word logits ``(B, K)`` or patch pixels ``(B, N, P)``) and ``loss`` (Eq. 7)."""

    codes: torch.Tensor
    vq: Any
    prediction: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    extras: dict[str, float] = field(default_factory=dict)


class ClipFrameEncoder(nn.Module):
    """CLIP's vision tower (transformers ``CLIPVisionModel``) returning patch tokens."""

    def __init__(self, name: str, image_size: int, config_only: bool = False) -> None:
        super().__init__()
        from transformers import CLIPVisionConfig, CLIPVisionModel  # heavy optional dependency

        if config_only:
            self.net = CLIPVisionModel(CLIPVisionConfig(patch_size=32))
        else:
            try:
                self.net = CLIPVisionModel.from_pretrained(name)
            except OSError as error:
                raise RuntimeError(f"could not load CLIP vision weights {name!r} (local path or "
                                   f"hub; offline without a local copy): {error}") from error
        self.image_size = image_size
        self.num_features = self.net.config.hidden_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(pixel_values=x, interpolate_pos_encoding=x.shape[-1] != 224)
        return out.last_hidden_state[:, 1:]


class ViTFrameEncoder(nn.Module):
    """A small ViT (vlbook.nn) for the toy tokenizer: patches + positions + blocks."""

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        self.patch = PatchEmbed2d(config.image_size, config.patch_size, config.channels,
                                  config.encoder_dim)
        self.position = nn.Parameter(torch.zeros(1, self.patch.num_patches, config.encoder_dim))
        nn.init.trunc_normal_(self.position, std=0.02)
        self.blocks = TransformerStack(config.encoder_dim, config.encoder_depth,
                                       config.encoder_heads)
        self.num_features = config.encoder_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.patch(x) + self.position)


class SemanticVQTokenizer(nn.Module):
    """Encoder + VQ + (training only) decoder: E-ViLM's video tokenizer (Fig. 4, Eq. 4-7)."""

    def __init__(self, config: TokenizerConfig | None = None, *, config_only: bool = False,
                 **overrides: Any) -> None:
        super().__init__()
        self.config = c = config or TokenizerConfig(**overrides)
        if c.encoder == "clip":
            self.encoder: nn.Module = ClipFrameEncoder(c.clip_name, c.image_size, config_only)
        else:
            self.encoder = ViTFrameEncoder(c)
        self.to_code = nn.Linear(self.encoder.num_features, c.code_dim)
        self.quantizer = VectorQuantizer(c.num_codes, c.code_dim,
                                         codebook_weight=c.codebook_weight,
                                         commitment_weight=c.commitment_weight)
        side = c.image_size // c.patch_size
        self.from_code = nn.Linear(c.code_dim, c.decoder_dim)
        self.decoder_position = nn.Parameter(torch.zeros(1, c.max_frames * side * side,
                                                         c.decoder_dim))
        nn.init.trunc_normal_(self.decoder_position, std=0.02)
        self.decoder = TransformerStack(c.decoder_dim, c.decoder_depth, c.decoder_heads)
        out = c.vocab_size if c.target == "words" else c.patch_size ** 2 * c.channels
        self.head = nn.Linear(c.decoder_dim, out)
        for module in (self.to_code, self.from_code, self.decoder, self.head):
            module.apply(_init_weights)

    def grid(self, num_frames: int) -> tuple[int, int, int]:
        side = self.config.image_size // self.config.patch_size
        return (num_frames, side, side)

    def encode(self, video: torch.Tensor) -> TokenizerOutput:
        """Codes of every frame patch (Eq. 4), ``video`` ``(B, T, C, H, W)``."""
        c = self.config
        if video.dim() != 5 or video.shape[-1] != c.image_size or video.shape[-2] != c.image_size:
            raise ValueError(f"video must be (B, T, {c.channels}, {c.image_size}, "
                             f"{c.image_size}), got {tuple(video.shape)}")
        b, t = video.shape[:2]
        tokens = self.encoder(video.flatten(0, 1))  # (B*T, n, D)
        vq = self.quantizer(self.to_code(tokens).reshape(b, -1, c.code_dim))
        return TokenizerOutput(codes=vq.codes, vq=vq)

    def forward(self, video: torch.Tensor, word_targets: torch.Tensor | None = None
                ) -> TokenizerOutput:
        """Training pass: ``L_SVQ = L_TOKEN + codebook + commitment`` (Eq. 5-7). ``word_targets``
        ``(B, K)`` multi-hot caption words (``target="words"``); ``"pixels"`` reconstructs each
        patch's pixels (MSE), the dVAE-like baseline."""
        c = self.config
        out = self.encode(video)
        n = out.codes.shape[1]
        if n > self.decoder_position.shape[1]:
            raise ValueError(f"{n} tokens > decoder positions {self.decoder_position.shape[1]} "
                             f"(max_frames={c.max_frames})")
        h = self.decoder(self.from_code(out.vq.quantized) + self.decoder_position[:, :n])
        if c.target == "words":
            if word_targets is None:
                raise ValueError("target='words' needs word_targets (B, vocab_size)")
            logits = self.head(h.mean(1))  # Eq. 5: pooled decoder output
            gamma = c.gamma_negative if c.word_loss == "focal" else 0.0
            rec = focal_loss(logits, word_targets, gamma_positive=0.0, gamma_negative=gamma)
            # Eq. 6 averages over K words; with a large K that scale is tiny next to the VQ
            # terms. vlbook rescales by K / (mean number of positive words) (our choice).
            positives = word_targets.float().sum(-1).mean().clamp_min(1.0)
            rec = rec * (word_targets.shape[-1] / positives)
            prediction = logits
        else:
            pixels = patchify_video(video, 1, c.patch_size)
            prediction = self.head(h)
            rec = F.mse_loss(prediction, pixels)
        out.prediction, out.reconstruction_loss = prediction, rec
        out.loss = rec + out.vq.loss
        return out


def caption_word_targets(input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int,
                         special_token_ids: Sequence[int] = ()) -> torch.Tensor:
    """Multi-hot ``(B, vocab_size)`` of the words in each caption (Eq. 6 targets ``y^S``),
    special tokens and padding excluded."""
    keep = attention_mask.bool().clone()
    for i in special_token_ids:
        keep &= input_ids != int(i)
    targets = torch.zeros(input_ids.shape[0], vocab_size, device=input_ids.device)
    rows = torch.arange(input_ids.shape[0], device=input_ids.device)[:, None].expand_as(input_ids)
    targets[rows[keep], input_ids[keep]] = 1.0
    return targets


# --------------------------------------------------------------------------------------------
# saving and loading a trained tokenizer; the tokenizer as a trainer model
# --------------------------------------------------------------------------------------------


def save_video_tokenizer(tokenizer: SemanticVQTokenizer, path: str | Path) -> Path:
    """Write a trained tokenizer (config + weights) for :func:`load_video_tokenizer`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": asdict(tokenizer.config), "state_dict": tokenizer.state_dict()}, path)
    return path


def load_video_tokenizer(path: str | Path, *, trust: bool = False) -> SemanticVQTokenizer:
    """A tokenizer written by :func:`save_video_tokenizer` (built from its config without
    downloading the CLIP encoder, then loaded), frozen in eval mode.

    The file holds only a plain config dict and tensors, so it is read without running pickled
    code; a file needing more raises :class:`~vlbook.serialization.UnsafeCheckpointError`
    unless ``trust=True``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video tokenizer checkpoint {path} does not exist (train one "
                                f"with train_tokenizer + save_video_tokenizer first)")
    saved = safe_load(path, trust=trust)
    if not isinstance(saved, dict) or {"config", "state_dict"} - set(saved):
        raise ValueError(f"{path}: expected a dict with 'config' and 'state_dict'")
    tokenizer = SemanticVQTokenizer(TokenizerConfig(**saved["config"]), config_only=True)
    tokenizer.load_state_dict(saved["state_dict"])
    return tokenizer.eval().requires_grad_(False)


class TokenizerTraining(nn.Module):
    """The video tokenizer as a ``vlbook.train`` model: ``forward(batch)`` returns Eq. 7's loss
    dict, the caption's words (``y^S``) taken from the batch's token ids. Used by ``full`` runs
    (``accelerate launch``); the toy notebook uses :func:`vlbook.chapters.evilm.train_tokenizer`,
    whose data-initialised codebook and dead-code restarts are vlbook's toy remedies and not in
    the paper."""

    def __init__(self, config: TokenizerConfig | dict[str, Any]) -> None:
        super().__init__()
        if isinstance(config, dict):
            config = TokenizerConfig(**config)
        self.tokenizer = SemanticVQTokenizer(config)

    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        c = self.tokenizer.config
        targets = caption_word_targets(batch["input_ids"], batch["attention_mask"],
                                       c.vocab_size, c.special_token_ids)
        out = self.tokenizer(batch["video"], targets)
        return {"loss": out.loss, "reconstruction": out.reconstruction_loss.detach(),
                "vq": out.vq.loss.detach(), "usage": out.vq.usage_rate.detach()}
