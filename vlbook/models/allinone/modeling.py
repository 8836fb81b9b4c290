"""All-in-one: one ViT for raw frames and text, with temporal token rolling (Wang et al., 2022).

The model (All-in-one Sec. 3, Fig. 2):

* **Embeddings (Eq. 1).** Text: learned word embeddings (BERT WordPiece vocabulary) + learned
  positions (40) + BERT's token-type row + LayerNorm, as ``BertEmbeddings``; frames: 16x16
  patches, a CLS token (DeiT-S also a distillation token), learned 2-D positions and a learned
  temporal embedding ``(1, S, D)`` added to each frame's patches (not for the distilled DeiT-S
  backbone: the code's ``DistilledVisionTransformer.visual_embed`` adds none;
  ``temporal_embedding``). Every token also gets a modality-type embedding (0 text, 1 video).
* **Backbone (Eq. 2).** One stack of timm ``Block`` s. In a *joint* pass the text is repeated for
  each of the ``S`` frames and each ``[text; frame]`` sequence is processed on its own; before
  every block (from ``roll_start_layer``) a temporal token rolling (TTR) moves a share of each
  frame's visual tokens to the neighbouring frame, so a frame's tokens (and the text attending
  to them) see the other frames at no extra cost. The frames' outputs are averaged
  (consensus, ``p = 1/S Σ z_i^L``) and a pooler (Linear + tanh) reads token 0, the text CLS.
* **Unimodal passes** (text only, video only) never roll; they feed the VTC projections used
  for retrieval (Sec. 3.3, dual-stream inference).

Paper vs released code, code by default:

* Rolling layout: the code rolls image tokens ``1..fold`` by +1 frame and the last ``fold`` by
  -1 frame, ``fold = n_image_tokens // 8`` (24 of 197, ~24 % moved in total,
  ``roll_layout="code"``); the paper describes one block of 25 % of the tokens rolled by one
  frame (``roll_layout="paper"``).
* Patch order: the code's ``visual_embed`` randomly permutes every frame's patches (after
  adding their positions), so the rolled slots hold random spatial positions at each call
  (``shuffle_patches=True``); ``False`` keeps raster order (used by the figures).
* Pre-training = MLM (15 %, whole-word) + VTM (half of the texts get a random other video). The
  code also adds a word-patch-alignment optimal-transport term (weight 0.1) to VTM; it is not
  implemented here (noted in the chapter).

Ablation alternatives of Table 8a: ``temporal="rolling"`` (default), ``"time_average"`` (no
temporal operation, frames averaged), ``"channel_shift"`` (TSM-style shift of 1/8 + 1/8 of the
channels of the patch tokens), ``"flatten"`` (text and all frames in one sequence), and
``"single_frame"`` (the middle frame only). Tables 8b / 11: ``roll_ratio``,
``roll_start_layer`` and ``roll_selection`` (``"block"``, ``"random"``, ``"varying"``).

This module holds the architecture; the checkpoint converters are in
:mod:`vlbook.models.allinone.convert`, the named variants in
:mod:`vlbook.models.allinone.variants` and the chapter's presets, data and evaluations in
:mod:`vlbook.chapters.allinone`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.losses import (
    VTMPairs,
    hard_negative_indices,
    mlm_loss,
    vtc_loss,
    vtm_loss,
    vtm_pairs_with_random_videos,
)
from vlbook.masking import mask_text_tokens
from vlbook.models.base import VLModel
from vlbook.nn.dropout import FastDropout, use_fast_dropout
from vlbook.nn.init import embedding_norms, init_additive_embedding_

__all__ = [
    "INITS",
    "ROLL_LAYOUTS",
    "ROLL_SELECTIONS",
    "TEMPORAL_MODES",
    "AllInOne",
    "AllInOneConfig",
    "AllInOneOutput",
    "MLMHead",
    "MLMTransform",
    "MultipleChoiceOutput",
    "PatchEmbed",
    "Pooler",
    "RollingPlan",
    "TextEmbeddings",
    "VTMHead",
    "VisionBackbone",
    "channel_shift",
    "rolled_share",
    "rolling_plan",
    "temporal_roll",
    "word_ids_from_continuations",
]

TEMPORAL_MODES: tuple[str, ...] = (
    "rolling",
    "time_average",
    "channel_shift",
    "flatten",
    "single_frame",
)
ROLL_LAYOUTS: tuple[str, ...] = ("code", "paper")
ROLL_SELECTIONS: tuple[str, ...] = ("block", "random", "varying")
#: Weight initialisations. ``"bert"`` is the code's; at the toy width (64) each N(0, 0.02)
#: linear layer has a gain of ``0.02 * sqrt(64) = 0.16`` (0.55 at 768), so at initialisation the
#: pooled text CLS of a joint pass barely depends on the video (its spread over 16 clips with a
#: fixed caption is 0.5 % of its size at width 64, 8 % at 768) and VTM sits at log 2;
#: ``"xavier"`` (toy only) gives 25 %.
INITS: tuple[str, ...] = ("bert", "xavier")


@dataclass
class AllInOneConfig:
    """Hyper-parameters of an All-in-one model (defaults: All-in-one-B, Table 1)."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    image_size: int = 224
    patch_size: int = 16
    channels: int = 3
    num_frames: int = 3
    distilled: bool = False  # DeiT-S distilled backbone: an extra distillation token
    # the learned temporal embedding added to each frame's patches; None: as the code, on for
    # ViT / DeiT-Ti, off for the distilled DeiT-S (DistilledVisionTransformer.visual_embed)
    temporal_embedding: bool | None = None
    vocab_size: int = 30522
    max_text_len: int = 40
    type_vocab_size: int = 2  # BERT token types inside the text embeddings
    layer_norm_eps: float = 1e-6  # ViT blocks; the text embeddings use BERT's 1e-12
    drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    # "bert": N(0, 0.02) for linear and embedding weights (ViLT / the released code);
    # "xavier": Xavier-uniform linear weights, whose gain does not shrink with the width (the
    # toy model: see ``INITS``)
    init: str = "bert"
    # None: the code's position tables (2-D positions N(0, 0.02), temporal embedding zeros);
    # a number: the patches' 2-D positions and the temporal embedding drawn at that std
    # (vlbook.nn.init.init_additive_embedding_). A toy option: at width 64 the patch tokens
    # have norm ~5 and N(0, 0.02) positions ~0.16, so where and when a shape is barely
    # registers next to its colour (``AllInOne.embedding_norms`` measures it)
    position_init_std: float | None = None
    # temporal modelling (Sec. 3.2, Tables 8, 11)
    temporal: str = "rolling"
    roll_ratio: float = 0.25
    roll_layout: str = "code"
    roll_selection: str = "block"
    roll_start_layer: int = 0
    shuffle_patches: bool = True
    channel_shift_ratio: float = 0.25
    # objectives (Sec. 3.3)
    mlm_probability: float = 0.15
    mask_token_id: int = 103
    special_token_ids: tuple[int, ...] = (0, 100, 101, 102, 103)
    whole_word_masking: bool = True
    vtm_negative_fraction: float = 0.5
    # "random": the negative video is any other clip (the code); "hard": drawn by VTC
    # similarity (ALBEF-style, needs vtc_weight > 0; a toy option, not All-in-one's)
    vtm_negatives: str = "random"
    mlm_weight: float = 1.0
    vtm_weight: float = 1.0
    vtc_weight: float = 0.0  # > 0 adds VTC with unimodal passes (retrieval fine-tuning)
    vtc_temperature: float = 0.05
    shared_embedding_dim: int = 512
    tie_mlm_decoder: bool = False  # the code's MLM decoder is untied
    # downstream
    num_answers: int = 0  # > 0 builds the open-ended QA head
    qa_hidden: int | None = None  # None: embed_dim // 2 (code); the paper says 768
    num_classes: int = 0  # > 0 builds the linear-probe classifier

    def __post_init__(self) -> None:
        self.special_token_ids = tuple(int(i) for i in self.special_token_ids)
        if self.temporal_embedding is None:
            self.temporal_embedding = not self.distilled
        checks = [
            (self.temporal in TEMPORAL_MODES, f"temporal={self.temporal!r}; accepted: "
             f"{TEMPORAL_MODES}"),
            (self.roll_layout in ROLL_LAYOUTS, f"roll_layout={self.roll_layout!r}; accepted: "
             f"{ROLL_LAYOUTS}"),
            (self.roll_selection in ROLL_SELECTIONS, f"roll_selection={self.roll_selection!r}; "
             f"accepted: {ROLL_SELECTIONS}"),
            (0.0 <= self.roll_ratio <= 1.0, f"roll_ratio={self.roll_ratio}; expected [0, 1]"),
            (0 <= self.roll_start_layer <= self.depth,
             f"roll_start_layer={self.roll_start_layer}; expected 0..depth={self.depth}"),
            (self.image_size % self.patch_size == 0,
             f"image_size={self.image_size} is not a multiple of patch_size={self.patch_size}"),
            (self.embed_dim % self.num_heads == 0,
             f"embed_dim={self.embed_dim} is not a multiple of num_heads={self.num_heads}"),
            (self.num_frames >= 1, f"num_frames={self.num_frames}; expected >= 1"),
            (self.init in INITS, f"init={self.init!r}; accepted: {INITS}"),
            (self.position_init_std is None or self.position_init_std >= 0,
             f"position_init_std={self.position_init_std}; expected None or >= 0"),
            (self.vtm_negatives in ("random", "hard"),
             f"vtm_negatives={self.vtm_negatives!r}; accepted: ('random', 'hard')"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"AllInOneConfig: {message}")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_prefix_tokens(self) -> int:
        return 2 if self.distilled else 1

    @property
    def num_image_tokens(self) -> int:
        return self.num_patches + self.num_prefix_tokens


# --------------------------------------------------------------------------------------------
# temporal operations
# --------------------------------------------------------------------------------------------


@dataclass
class RollingPlan:
    """Token positions (within a frame's image tokens) rolled by +1 and by -1 frame."""

    forward: torch.Tensor
    backward: torch.Tensor

    @property
    def moved(self) -> int:
        return int(self.forward.numel() + self.backward.numel())


def rolling_plan(
    num_tokens: int,
    *,
    ratio: float = 0.25,
    layout: str = "code",
    selection: str = "block",
    layer: int = 0,
    num_prefix_tokens: int = 1,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> RollingPlan:
    """Which image tokens temporal token rolling moves (All-in-one Sec. 3.2, Tables 8b, 11b).

    ``num_tokens`` image tokens per frame (prefix tokens + patches). ``layout="code"``: with
    ``fold = floor(num_tokens * ratio / 2)``, tokens ``1 .. fold`` are rolled +1 frame and the
    last ``fold`` tokens -1 frame (the released code: ``fold = 197 // 8 = 24`` at ratio 0.25;
    it starts at index 1 whatever the number of prefix tokens). ``layout="paper"``: one block of
    ``round(ratio * num_patches)`` patch tokens rolled +1 frame.

    ``selection``: ``"block"`` (the positions above), ``"random"`` (the same number of patch
    positions drawn at random at each call) or ``"varying"`` (layer ``l`` rolls the ``l``-th
    group of that size, cycling over the patches).
    """
    if layout not in ROLL_LAYOUTS:
        raise ValueError(f"layout={layout!r}; accepted: {ROLL_LAYOUTS}")
    if selection not in ROLL_SELECTIONS:
        raise ValueError(f"selection={selection!r}; accepted: {ROLL_SELECTIONS}")
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio={ratio}; expected a share in [0, 1]")
    num_patches = num_tokens - num_prefix_tokens
    if num_patches < 1:
        raise ValueError(f"num_tokens={num_tokens} leaves no patch after {num_prefix_tokens} "
                         "prefix token(s)")
    if layout == "code":
        fold = int(math.floor(num_tokens * ratio / 2 + 1e-9))
        fold = min(fold, (num_tokens - 1) // 2)
        counts, first = (fold, fold), 1
    else:
        counts, first = (int(round(ratio * num_patches)), 0), num_prefix_tokens
    total = counts[0] + counts[1]
    empty = torch.zeros(0, dtype=torch.long, device=device)
    if total == 0:
        return RollingPlan(empty, empty.clone())
    if selection == "block":
        if layout == "code":
            forward = torch.arange(first, first + counts[0], device=device)
            backward = torch.arange(num_tokens - counts[1], num_tokens, device=device)
            return RollingPlan(forward, backward)
        chosen = torch.arange(first, first + total, device=device)
    else:
        candidates = torch.arange(first, num_tokens, device=device)
        if selection == "random":
            order = torch.randperm(candidates.numel(), generator=generator)
            chosen = candidates[order.to(candidates.device)[:total]]
        else:  # varying: layer l takes the l-th consecutive group of ``total`` positions
            start = (layer * total) % candidates.numel()
            chosen = candidates[(torch.arange(total, device=device) + start) % candidates.numel()]
    return RollingPlan(chosen[: counts[0]], chosen[counts[0]:])


def temporal_roll(image_tokens: torch.Tensor, num_frames: int, plan: RollingPlan) -> torch.Tensor:
    """Temporal token rolling, All-in-one Eq. 2 (``TTR``): circular shift along time.

    ``image_tokens`` ``(B*S, N, D)``, frames of a clip consecutive. Positions ``plan.forward``
    of frame ``t`` receive those of frame ``t-1`` (frame 0 gets frame ``S-1``'s); positions
    ``plan.backward`` receive frame ``t+1``'s. Other tokens are unchanged.
    """
    if image_tokens.dim() != 3 or image_tokens.shape[0] % num_frames:
        raise ValueError(f"image_tokens must be (B*S, N, D) with S={num_frames}; got shape "
                         f"{tuple(image_tokens.shape)}")
    if plan.moved == 0 or num_frames == 1:
        return image_tokens
    bt, n, d = image_tokens.shape
    x = image_tokens.view(bt // num_frames, num_frames, n, d)
    out = x.clone()
    if plan.forward.numel():
        out[:, :, plan.forward] = x[:, :, plan.forward].roll(1, dims=1)
    if plan.backward.numel():
        out[:, :, plan.backward] = x[:, :, plan.backward].roll(-1, dims=1)
    return out.view(bt, n, d)


def channel_shift(
    image_tokens: torch.Tensor, num_frames: int, ratio: float = 0.25, num_prefix_tokens: int = 1
) -> torch.Tensor:
    """Channel shift (TSM, Lin et al. 2019), the alternative of All-in-one Table 8a.

    For every patch token, the first ``ratio/2`` of the channels take frame ``t-1``'s values
    and the next ``ratio/2`` frame ``t+1``'s, zero-padded at the clip ends (TSM's shift);
    prefix tokens are unchanged.
    """
    if image_tokens.shape[0] % num_frames:
        raise ValueError(f"image_tokens batch {image_tokens.shape[0]} is not a multiple of "
                         f"num_frames={num_frames}")
    bt, n, d = image_tokens.shape
    fold = int(d * ratio / 2)
    if fold == 0 or num_frames == 1:
        return image_tokens
    x = image_tokens.view(bt // num_frames, num_frames, n, d)
    patches = x[:, :, num_prefix_tokens:]
    shifted = patches.clone()
    shifted[:, 1:, :, :fold] = patches[:, :-1, :, :fold]
    shifted[:, :1, :, :fold] = 0
    shifted[:, :-1, :, fold: 2 * fold] = patches[:, 1:, :, fold: 2 * fold]
    shifted[:, -1:, :, fold: 2 * fold] = 0
    return torch.cat([x[:, :, :num_prefix_tokens], shifted], dim=2).view(bt, n, d)


def word_ids_from_continuations(
    input_ids: torch.Tensor, is_continuation: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """Word index of every token for whole-word masking; ``-1`` outside the text.

    ``is_continuation`` ``(V,)`` bool marks WordPiece ``##`` pieces: a word starts at every other
    token. Padding gets ``-1``.
    """
    continuation = is_continuation[input_ids.clamp(0, is_continuation.numel() - 1)]
    starts = (~continuation).long() * attention_mask.long()
    word_ids = starts.cumsum(dim=1) - 1
    return torch.where(attention_mask.bool(), word_ids.clamp(min=0), torch.full_like(word_ids, -1))


# --------------------------------------------------------------------------------------------
# modules
# --------------------------------------------------------------------------------------------


class TextEmbeddings(nn.Module):
    """``BertEmbeddings``: word + position + token type, LayerNorm, dropout (Eq. 1, text)."""

    def __init__(self, config: AllInOneConfig) -> None:
        super().__init__()
        d = config.embed_dim
        self.word_embeddings = nn.Embedding(config.vocab_size, d)
        self.position_embeddings = nn.Embedding(config.max_text_len, d)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, d)
        self.LayerNorm = nn.LayerNorm(d, eps=1e-12)  # noqa: N815 - BERT's parameter name
        self.dropout = FastDropout(config.drop_rate)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        if length > self.position_embeddings.num_embeddings:
            raise ValueError(f"input_ids has {length} tokens; the model has "
                             f"{self.position_embeddings.num_embeddings} text positions "
                             "(max_text_len)")
        positions = torch.arange(length, device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(positions)[None]
            + self.token_type_embeddings.weight[0]
        )
        return self.dropout(self.LayerNorm(x))


class PatchEmbed(nn.Module):
    """16x16 patch projection ``V`` of Eq. 1 (a strided convolution)."""

    def __init__(self, config: AllInOneConfig) -> None:
        super().__init__()
        p = config.patch_size
        self.proj = nn.Conv2d(config.channels, config.embed_dim, kernel_size=p, stride=p)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.proj(frames).flatten(2).transpose(1, 2)


class VisionBackbone(nn.Module):
    """The ViT/DeiT shared by both modalities: patch embedding, positions, timm blocks, norm."""

    def __init__(self, config: AllInOneConfig) -> None:
        super().__init__()
        from timm.models.vision_transformer import Block  # heavy optional dependency

        d = config.embed_dim
        self.patch_embed = PatchEmbed(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if config.distilled:
            self.dist_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.num_image_tokens, d))
        # None without a temporal embedding (DeiT-S): no unused parameter to train or gather
        self.temporal_embed = (nn.Parameter(torch.zeros(1, config.num_frames, d))
                               if config.temporal_embedding else None)
        self.pos_drop = FastDropout(config.drop_rate)
        rates = [config.drop_path_rate * i / max(config.depth - 1, 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(
            Block(
                dim=d,
                num_heads=config.num_heads,
                mlp_ratio=config.mlp_ratio,
                qkv_bias=config.qkv_bias,
                proj_drop=config.drop_rate,
                drop_path=rates[i],
                norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps),
            )
            for i in range(config.depth)
        )
        use_fast_dropout(self.blocks)  # timm's blocks build torch.nn.Dropout
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)


class Pooler(nn.Module):
    """Linear + tanh on token 0 (the text CLS in joint passes)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(hidden[:, 0]))


class VTMHead(nn.Module):
    """One linear layer on the pooled CLS → match / no-match logits (Sec. 3.3, VTM)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(dim, 2)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)


class MLMTransform(nn.Module):
    """``BertPredictionHeadTransform``: dense, GELU, LayerNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.LayerNorm = nn.LayerNorm(dim, eps=1e-12)  # noqa: N815 - BERT's parameter name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class MLMHead(nn.Module):
    """BERT's MLM head: transform, decoder (no bias) + separate bias (Sec. 3.3, MLM)."""

    def __init__(self, dim: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = MLMTransform(dim)
        self.decoder = nn.Linear(dim, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x)) + self.bias


# --------------------------------------------------------------------------------------------
# outputs
# --------------------------------------------------------------------------------------------


@dataclass
class AllInOneOutput:
    """A pass through the backbone.

    ``hidden``: last-layer tokens after the final norm, averaged over frames (consensus) —
    ``(B, L + N, D)`` in a joint pass (text first), ``(B, L + S*N, D)`` with ``flatten``,
    ``(B, L, D)`` text only, ``(B, N, D)`` video only. ``text_hidden`` / ``video_hidden``: its
    text and video parts (``None`` when absent). ``pooled``: pooler output on token 0 (joint
    passes). ``patch_order``: ``(B*S, P)`` the spatial index of the patch in each slot when
    patches were shuffled (``None`` in raster order). ``frames``: frames per clip used.
    """

    hidden: torch.Tensor
    text_hidden: torch.Tensor | None
    video_hidden: torch.Tensor | None
    pooled: torch.Tensor | None
    patch_order: torch.Tensor | None
    frames: int


@dataclass
class MultipleChoiceOutput:
    """Multiple choice by VTM (Sec. 4.2): ``scores`` ``(B, K)`` match logits, ``prediction``."""

    scores: torch.Tensor
    prediction: torch.Tensor


# --------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------


def _init_weights(module: nn.Module, init: str = "bert") -> None:
    """ViLT/All-in-one initialisation: N(0, 0.02) for linear and embedding weights.

    ``init="xavier"``: Xavier-uniform linear weights instead (embeddings keep N(0, 0.02)).
    """
    if isinstance(module, nn.Linear) and init == "xavier":
        nn.init.xavier_uniform_(module.weight)
    elif isinstance(module, (nn.Linear, nn.Embedding)):
        module.weight.data.normal_(0.0, 0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        module.bias.data.zero_()
    if isinstance(module, nn.LayerNorm):
        module.weight.data.fill_(1.0)
        module.bias.data.zero_()


class AllInOne(VLModel):
    """All-in-one Transformer (Sec. 3): one backbone for video, text and video+text.

    Batches follow vlbook's convention: ``video`` ``(B, S, C, H, W)`` ImageNet-normalised,
    ``input_ids`` / ``attention_mask`` ``(B, L)``, ``video_index`` ``(B,)``.
    """

    gathers_contrastive_features = False

    def __init__(self, config: AllInOneConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        config = replace(config or AllInOneConfig(), **overrides)
        self.config = config
        d = config.embed_dim
        self.text_embeddings = TextEmbeddings(config)
        self.token_type_embeddings = nn.Embedding(2, d)  # modality type: 0 text, 1 video
        self.transformer = VisionBackbone(config)
        self.pooler = Pooler(d)
        self.vtm_head = VTMHead(d)
        self.mlm_head = MLMHead(d, config.vocab_size)
        self.text_proj = nn.Linear(d, config.shared_embedding_dim)
        self.video_proj = nn.Linear(d, config.shared_embedding_dim)
        self.qa_head: nn.Sequential | None = None
        self.classifier: nn.Linear | None = None
        self.apply(partial(_init_weights, init=config.init))
        if config.init == "xavier":  # the vocabulary decoder keeps BERT's scale
            self.mlm_head.decoder.weight.data.normal_(0.0, 0.02)
        for p in (self.transformer.cls_token, self.transformer.pos_embed):
            nn.init.trunc_normal_(p, std=0.02)
        if config.distilled:
            nn.init.trunc_normal_(self.transformer.dist_token, std=0.02)
        if config.position_init_std is not None:  # toy option (see AllInOneConfig)
            prefix = config.num_prefix_tokens
            init_additive_embedding_(self.transformer.pos_embed.data[:, prefix:],
                                     config.position_init_std)
            if self.transformer.temporal_embed is not None:
                init_additive_embedding_(self.transformer.temporal_embed,
                                         config.position_init_std)
        if config.tie_mlm_decoder:
            self.mlm_head.decoder.weight = self.text_embeddings.word_embeddings.weight
        if config.num_answers > 0:
            self.build_qa_head(config.num_answers)
        if config.num_classes > 0:
            self.build_classifier(config.num_classes)
        self.register_buffer("is_continuation", torch.zeros(0, dtype=torch.bool),
                             persistent=False)

    # ---- set-up helpers ---------------------------------------------------------------
    def table1_parameter_count(self) -> int:
        """Parameters as Table 1 counts them: backbone, text embeddings, pooler, VTM head.

        Excluded: the pre-training MLM head (~V x D, untied in the code), the VTC projections
        and the downstream heads. Ti/S/B give 11.4 M / 33.6 M / 109.9 M (Table 1: 12/33/110 M).
        """
        excluded = ("mlm_head.", "text_proj.", "video_proj.", "qa_head.", "classifier.")
        return sum(p.numel() for n, p in self.named_parameters() if not n.startswith(excluded))

    def build_qa_head(self, num_answers: int) -> nn.Sequential:
        """Open-ended QA classifier on the pooled CLS (Sec. 4.2.1): a two-layer MLP.

        The code's layout: Dropout(0.5), Linear(D, hidden), LayerNorm, GELU, Linear(hidden,
        answers), hidden = ``qa_hidden`` or D/2 (the paper says 768).
        """
        hidden = self.config.qa_hidden or self.config.embed_dim // 2
        self.qa_head = nn.Sequential(
            FastDropout(0.5),
            nn.Linear(self.config.embed_dim, hidden),
            nn.LayerNorm(hidden),
            nn.GELU(),
            nn.Linear(hidden, num_answers),
        ).to(self.pooler.dense.weight.device)
        self.qa_head.apply(partial(_init_weights, init=self.config.init))
        self.config.num_answers = num_answers
        return self.qa_head

    def build_classifier(self, num_classes: int) -> nn.Linear:
        """Linear probe for action recognition (App. D.1): one linear layer on frozen features."""
        self.classifier = nn.Linear(self.config.embed_dim, num_classes).to(
            self.pooler.dense.weight.device
        )
        self.classifier.apply(partial(_init_weights, init=self.config.init))
        self.config.num_classes = num_classes
        return self.classifier

    def set_tokenizer(self, tokenizer: Any) -> None:
        """Take mask/special ids and the ``##`` piece table (whole-word MLM) from a tokenizer."""
        if getattr(tokenizer, "mask_token_id", None) is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no mask token")
        if len(tokenizer) > self.config.vocab_size:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens; the model's vocab_size is "
                             f"{self.config.vocab_size}")
        self.config.mask_token_id = int(tokenizer.mask_token_id)
        self.config.special_token_ids = tuple(int(i) for i in tokenizer.all_special_ids)
        tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        table = torch.tensor([str(t).startswith("##") for t in tokens], dtype=torch.bool)
        self.is_continuation = table.to(self.pooler.dense.weight.device)

    # ---- embeddings -------------------------------------------------------------------
    def _check_video(self, video: torch.Tensor) -> None:
        c = self.config
        if video.dim() != 5:
            raise ValueError(f"video: expected (B, S, C, H, W), got shape {tuple(video.shape)}")
        if tuple(video.shape[2:]) != (c.channels, c.image_size, c.image_size):
            raise ValueError(f"video: expected frames ({c.channels}, {c.image_size}, "
                             f"{c.image_size}), got {tuple(video.shape[2:])}")
        if video.shape[1] > c.num_frames:
            raise ValueError(f"video has {video.shape[1]} frames; the model's temporal "
                             f"embedding has {c.num_frames} (num_frames)")

    def embed_text(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Text tokens of Eq. 1 plus the text modality-type embedding: ``(B, L, D)``."""
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids: expected (B, L), got shape {tuple(input_ids.shape)}")
        if input_ids.device.type == "meta":  # FLOP counting: no values to check
            pass
        elif int(input_ids.max()) >= self.config.vocab_size or int(input_ids.min()) < 0:
            raise ValueError(f"input_ids: ids must be in [0, vocab_size={self.config.vocab_size})"
                             f", got range [{int(input_ids.min())}, {int(input_ids.max())}]")
        return self.text_embeddings(input_ids) + self.token_type_embeddings.weight[0]

    def embed_frames(
        self, video: torch.Tensor, shuffle: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Frame tokens of Eq. 1: ``(B*S, N, D)`` [CLS, (dist), patches] and the patch order.

        Patches get their 2-D position and the frame's temporal embedding (none for DeiT-S, as
        the code), then (code) a random order per frame; prefix tokens get their own positions;
        all get the video type embedding.
        """
        self._check_video(video)
        vt = self.transformer
        b, s = video.shape[:2]
        patches = vt.patch_embed(video.flatten(0, 1))  # (B*S, P, D)
        p, d = patches.shape[1:]
        prefix_count = self.config.num_prefix_tokens
        patches = patches + vt.pos_embed[:, prefix_count:]
        if vt.temporal_embed is not None:
            patches = (patches.view(b, s, p, d) + vt.temporal_embed[:, :s, None]
                       ).view(b * s, p, d)
        order = None
        shuffle = self.config.shuffle_patches if shuffle is None else shuffle
        if shuffle:
            order = torch.rand(b * s, p, device=patches.device).argsort(dim=1)
            patches = patches.gather(1, order[..., None].expand(-1, -1, d))
        prefix = [vt.cls_token] + ([vt.dist_token] if self.config.distilled else [])
        prefix_tokens = torch.cat(prefix, dim=1) + vt.pos_embed[:, :prefix_count]
        tokens = torch.cat([prefix_tokens.expand(b * s, -1, -1), patches], dim=1)
        tokens = vt.pos_drop(tokens) + self.token_type_embeddings.weight[1]
        return tokens, order

    def embedding_norms(self, video: torch.Tensor) -> dict[str, float]:
        """How loud *what*, *where* and *when* are in the frame tokens of Eq. 1: the mean L2
        norm of the patch projections of ``video`` (``content``), of the patches' 2-D position
        vectors (``position``) and of the temporal embeddings of its frames (``time``), with
        their ratios to the content (:func:`vlbook.nn.init.embedding_norms`)."""
        self._check_video(video)
        vt = self.transformer
        with torch.no_grad():
            content = vt.patch_embed(video.flatten(0, 1))
        tables = {"position": vt.pos_embed[:, self.config.num_prefix_tokens:]}
        if vt.temporal_embed is not None:  # DeiT-S has none (no "time" entry)
            tables["time"] = vt.temporal_embed[:, :video.shape[1]]
        return embedding_norms(content, **tables)

    # ---- backbone -----------------------------------------------------------------------
    @staticmethod
    def _attention_mask(keep: torch.Tensor | None) -> torch.Tensor | None:
        if keep is None or (keep.device.type != "meta" and bool(keep.all())):
            return None
        return keep.bool()[:, None, None, :]

    def _temporal_op(self, image: torch.Tensor, frames: int, layer: int) -> torch.Tensor:
        c = self.config
        if layer < c.roll_start_layer or frames == 1:
            return image
        if c.temporal == "rolling":
            plan = rolling_plan(
                image.shape[1],
                ratio=c.roll_ratio,
                layout=c.roll_layout,
                selection=c.roll_selection,
                layer=layer - c.roll_start_layer,
                num_prefix_tokens=c.num_prefix_tokens,
                device=image.device,
            )
            return temporal_roll(image, frames, plan)
        if c.temporal == "channel_shift":
            return channel_shift(image, frames, c.channel_shift_ratio, c.num_prefix_tokens)
        return image

    def _frames_for_mode(self, video: torch.Tensor) -> torch.Tensor:
        if self.config.temporal == "single_frame":
            middle = video.shape[1] // 2
            return video[:, middle: middle + 1]
        return video

    def forward_joint(
        self,
        video: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        shuffle: bool | None = None,
    ) -> AllInOneOutput:
        """Joint video-text pass (Eq. 2): per-frame ``[text; frame]`` with rolling, consensus.

        With ``temporal="flatten"`` the text and every frame's tokens form one sequence.
        """
        video = self._frames_for_mode(video)
        b, s = video.shape[:2]
        if input_ids.shape[0] != b or attention_mask.shape != input_ids.shape:
            raise ValueError(f"video batch {b}, input_ids {tuple(input_ids.shape)}, "
                             f"attention_mask {tuple(attention_mask.shape)}: expected (B, L) x2")
        text = self.embed_text(input_ids)
        image, order = self.embed_frames(video, shuffle)
        length, n = text.shape[1], image.shape[1]
        blocks = self.transformer.blocks
        if self.config.temporal == "flatten":
            x = torch.cat([text, image.reshape(b, s * n, -1)], dim=1)
            keep = torch.cat([attention_mask.bool(), attention_mask.new_ones(b, s * n).bool()], 1)
            mask = self._attention_mask(keep)
            for block in blocks:
                x = block(x, attn_mask=mask)
            x = self.transformer.norm(x)
            return AllInOneOutput(x, x[:, :length], x[:, length:], self.pooler(x), order, s)
        text = text.repeat_interleave(s, dim=0)
        keep = torch.cat(
            [attention_mask.bool().repeat_interleave(s, dim=0),
             attention_mask.new_ones(b * s, n).bool()], dim=1,
        )
        mask = self._attention_mask(keep)
        x = torch.cat([text, image], dim=1)
        for i, block in enumerate(blocks):
            if self.config.temporal in ("rolling", "channel_shift"):
                rolled = self._temporal_op(x[:, length:], s, i)
                x = torch.cat([x[:, :length], rolled], dim=1)
            x = block(x, attn_mask=mask)
        x = self.transformer.norm(x).view(b, s, length + n, -1).mean(dim=1)
        return AllInOneOutput(x, x[:, :length], x[:, length:], self.pooler(x), order, s)

    def forward_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> AllInOneOutput:
        """Text-only pass (no rolling), for VTC / retrieval."""
        x = self.embed_text(input_ids)
        mask = self._attention_mask(attention_mask.bool())
        for block in self.transformer.blocks:
            x = block(x, attn_mask=mask)
        x = self.transformer.norm(x)
        return AllInOneOutput(x, x, None, None, None, 0)

    def forward_video(self, video: torch.Tensor, shuffle: bool | None = None) -> AllInOneOutput:
        """Video-only pass (each frame alone, no rolling), frames averaged."""
        video = self._frames_for_mode(video)
        b, s = video.shape[:2]
        x, order = self.embed_frames(video, shuffle)
        for block in self.transformer.blocks:
            x = block(x)
        x = self.transformer.norm(x).view(b, s, x.shape[1], -1).mean(dim=1)
        return AllInOneOutput(x, None, x, None, order, s)

    # ---- VLModel surface ------------------------------------------------------------------
    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """L2-normalised video embeddings ``(B, 512)`` for VTC retrieval (image CLS, projected)."""
        out = self.forward_video(video)
        return F.normalize(self.video_proj(out.hidden[:, 0]), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """L2-normalised text embeddings ``(B, 512)`` for VTC retrieval (text CLS, projected)."""
        out = self.forward_text(input_ids, attention_mask)
        return F.normalize(self.text_proj(out.hidden[:, 0]), dim=-1)

    def mask_text(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_ids: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Any:
        """MLM corruption, 15 % with 80/10/10 (Sec. 3.3); whole words when the table is known."""
        c = self.config
        if word_ids is None and c.whole_word_masking and self.is_continuation.numel():
            word_ids = word_ids_from_continuations(input_ids, self.is_continuation,
                                                   attention_mask)
        return mask_text_tokens(
            input_ids,
            attention_mask,
            mask_token_id=c.mask_token_id,
            vocab_size=c.vocab_size,
            ratio=c.mlm_probability,
            special_token_ids=c.special_token_ids,
            word_ids=word_ids,
            generator=generator,
        )

    def pretrain_step(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """VTM + MLM (+ VTC when ``vtc_weight > 0``), All-in-one Sec. 3.3.

        Two joint passes, as the code: masked text with its own video (MLM), unmasked text with
        the video of ``vtm_pairs_with_random_videos`` (VTM, half negatives).
        """
        for key in ("video", "input_ids", "attention_mask"):
            if key not in batch:
                raise KeyError(f"batch has no {key!r} field; All-in-one needs video, input_ids, "
                               "attention_mask")
        c = self.config
        video, ids, mask = batch["video"], batch["input_ids"], batch["attention_mask"]
        b = ids.shape[0]
        losses: dict[str, torch.Tensor] = {}
        total = video.new_zeros(())
        if c.mlm_weight > 0:
            masking = self.mask_text(ids, mask, batch.get("word_ids"))
            out = self.forward_joint(video, masking.input_ids, mask)
            logits = self.mlm_head(out.text_hidden)
            loss_mlm = mlm_loss(logits, masking.labels)
            total = total + c.mlm_weight * loss_mlm
            losses["loss_mlm"] = loss_mlm.detach()
            picked = masking.labels != -100
            if bool(picked.any()):
                hits = (logits.argmax(-1) == masking.labels)[picked].float().mean()
                losses["acc_mlm"] = hits.detach()
        similarity = None
        if c.vtc_weight > 0:
            vtc = vtc_loss(self.video_proj(self.forward_video(video).hidden[:, 0]),
                           self.text_proj(self.forward_text(ids, mask).hidden[:, 0]),
                           temperature=c.vtc_temperature, combine="sum")
            total = total + c.vtc_weight * vtc.loss
            losses["loss_vtc"] = vtc.loss.detach()
            similarity = vtc.logits.detach()
        if c.vtm_weight > 0:
            clip_ids = batch.get("video_index")
            clip_ids = clip_ids.to(ids.device) if clip_ids is not None else torch.arange(b)
            fraction = c.vtm_negative_fraction
            if fraction > 0 and clip_ids.unique().numel() < 2:
                warnings.warn("VTM: every item of the batch is the same clip, so no negative "
                              "video can be drawn; using positives only", stacklevel=2)
                fraction = 0.0
            if fraction == 0:
                arange = torch.arange(b, device=ids.device)
                pairs = VTMPairs(arange, arange, torch.ones(b, dtype=torch.long, device=ids.device))
            else:
                pairs = vtm_pairs_with_random_videos(b, clip_ids, negative_fraction=fraction,
                                                     device=ids.device)
                if c.vtm_negatives == "hard":
                    if similarity is None:
                        raise ValueError("vtm_negatives='hard' needs vtc_weight > 0 (the "
                                         "negatives are drawn by VTC similarity)")
                    hard = hard_negative_indices(similarity.T, clip_ids)
                    pairs = VTMPairs(torch.where(pairs.labels == 0, hard, pairs.video_index),
                                     pairs.text_index, pairs.labels)
            out = self.forward_joint(video[pairs.video_index], ids, mask)
            logits = self.vtm_head(out.pooled)
            loss_vtm = vtm_loss(logits, pairs.labels)
            total = total + c.vtm_weight * loss_vtm
            losses["loss_vtm"] = loss_vtm.detach()
            losses["acc_vtm"] = (logits.argmax(-1) == pairs.labels).float().mean().detach()
        return {"loss": total, **losses}

    # ---- downstream heads ------------------------------------------------------------------
    def match_logits(
        self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """VTM logits ``(B, 2)`` of each (video, text) pair (index 1 = match)."""
        return self.vtm_head(self.forward_joint(video, input_ids, attention_mask).pooled)

    def score_options(
        self, video: torch.Tensor, option_ids: torch.Tensor, option_mask: torch.Tensor
    ) -> MultipleChoiceOutput:
        """Multiple choice by VTM (Sec. 4.2): the option with the highest match logit wins.

        ``option_ids`` / ``option_mask`` ``(B, K, L)``; the score is the match logit (the
        code's ``rank_output`` = row 1 of the VTM head).
        """
        if option_ids.dim() != 3 or option_mask.shape != option_ids.shape:
            raise ValueError(f"option_ids/option_mask: expected (B, K, L), got "
                             f"{tuple(option_ids.shape)} and {tuple(option_mask.shape)}")
        b, k, length = option_ids.shape
        videos = video.repeat_interleave(k, dim=0)
        logits = self.match_logits(videos, option_ids.reshape(b * k, length),
                                   option_mask.reshape(b * k, length))
        scores = logits[:, 1].view(b, k)
        return MultipleChoiceOutput(scores=scores, prediction=scores.argmax(dim=1))

    def answer_logits(
        self, video: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Open-ended QA (Sec. 4.2.1): answer logits ``(B, num_answers)`` from the pooled CLS."""
        if self.qa_head is None:
            raise RuntimeError("no QA head: call build_qa_head(num_answers) or set num_answers")
        return self.qa_head(self.forward_joint(video, input_ids, attention_mask).pooled)

    def linear_probe_features(self, video: torch.Tensor) -> torch.Tensor:
        """Frozen features for the linear probe (App. D.1): last-layer CLS of a video pass."""
        return self.forward_video(video).hidden[:, 0]

    def classify(self, video: torch.Tensor) -> torch.Tensor:
        """Action logits of the linear probe (backbone features detached)."""
        if self.classifier is None:
            raise RuntimeError("no classifier: call build_classifier(num_classes)")
        with torch.no_grad():
            features = self.linear_probe_features(video)
        return self.classifier(features)

    def example_batch(
        self, batch_size: int, frames: int | None = None, text_len: int = 16,
        generator: torch.Generator | None = None, device: torch.device | str | None = None,
    ) -> dict[str, Any]:
        """A random batch of the right shapes (benchmarks, FLOP counts, tests)."""
        c = self.config
        frames = frames or c.num_frames
        text_len = min(text_len, c.max_text_len)
        video = torch.randn(batch_size, frames, c.channels, c.image_size, c.image_size,
                            generator=generator)
        low = max(c.special_token_ids) + 1 if c.special_token_ids else 0
        ids = torch.randint(min(low, c.vocab_size - 1), c.vocab_size, (batch_size, text_len),
                            generator=generator)
        return {
            "video": video.to(device),
            "input_ids": ids.to(device),
            "attention_mask": torch.ones_like(ids).to(device),
            "video_index": torch.arange(batch_size, device=device),
            "text": [f"random caption {i}" for i in range(batch_size)],
        }


def rolled_share(config: AllInOneConfig) -> float:
    """Share of a frame's image tokens that one rolling layer moves."""
    plan = rolling_plan(config.num_image_tokens, ratio=config.roll_ratio,
                        layout=config.roll_layout, selection="block",
                        num_prefix_tokens=config.num_prefix_tokens)
    return plan.moved / config.num_image_tokens
