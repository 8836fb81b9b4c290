"""Pre-training objectives of the five papers, written once.

Each function cites the equation (or, where the paper leaves it open, the released code) it
implements. Where the paper and the code differ, the code is the default and the paper's form
is an option; the book's *Paper vs code* page
(``book/paper_vs_code.md``) lists the differences.

Contents
--------
* VTC: :func:`vtc_loss`, :class:`LearnableTemperature`.
* VTM: :func:`vtm_loss`, :func:`hard_negative_indices`, :func:`random_negative_indices`,
  :func:`vtm_pairs_with_hard_negatives`, :func:`vtm_pairs_with_random_videos`.
* Token prediction: :func:`mlm_loss`, :func:`masked_token_loss` (VLM Eq. 8-9),
  :func:`mfm_mlm_loss` (VLM Eq. 5-7).
* Regression: :func:`patchify_video`, :func:`unpatchify_video`,
  :func:`normalized_pixel_targets`, :func:`normalized_pixel_mse` (SimVTP),
  :func:`unmasked_token_alignment` (UMT).
* E-ViLM: :func:`focal_loss` (Eq. 6), :class:`VectorQuantizer` (Eq. 4, 7),
  :class:`CodebookUsage`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlbook.constants import IMAGENET_MEAN, IMAGENET_STD
from vlbook.distributed import all_gather_no_grad, all_gather_with_grad, get_rank, is_distributed
from vlbook.masking import gather_masked, gather_visible

__all__ = [
    "CodebookUsage",
    "LearnableTemperature",
    "MaskedTokenLossOutput",
    "UTAOutput",
    "VQOutput",
    "VTCOutput",
    "VTMPairs",
    "VectorQuantizer",
    "focal_loss",
    "hard_negative_indices",
    "masked_token_loss",
    "mfm_mlm_loss",
    "mlm_loss",
    "normalized_pixel_mse",
    "normalized_pixel_targets",
    "patchify_video",
    "random_negative_indices",
    "unmasked_token_alignment",
    "unpatchify_video",
    "vtc_loss",
    "vtm_loss",
    "vtm_pairs_with_hard_negatives",
    "vtm_pairs_with_random_videos",
]

IGNORE_INDEX = -100


def _zero_with_graph(*tensors: torch.Tensor) -> torch.Tensor:
    """A scalar 0 connected to the inputs' graphs (DDP needs every parameter used)."""
    return sum((t.sum() * 0.0 for t in tensors[1:]), tensors[0].sum() * 0.0)


# --------------------------------------------------------------------------------------------
# VTC
# --------------------------------------------------------------------------------------------


class LearnableTemperature(nn.Module):
    """Learnable softmax temperature, UMT/ALBEF style: init 0.07, clamped to [0.001, 0.5].

    The parameter *is* the temperature (not CLIP's log inverse). As in UMT's code, the value is
    clamped in place before each use, so it never leaves ``[min_value, max_value]``.
    """

    def __init__(self, init: float = 0.07, min_value: float = 0.001, max_value: float = 0.5):
        super().__init__()
        if not min_value <= init <= max_value:
            raise ValueError(f"init {init} outside [{min_value}, {max_value}]")
        self.min_value, self.max_value = min_value, max_value
        self.temperature = nn.Parameter(torch.tensor(float(init)))

    def forward(self) -> torch.Tensor:
        with torch.no_grad():
            self.temperature.clamp_(self.min_value, self.max_value)
        return self.temperature


@dataclass
class VTCOutput:
    """VTC result: ``loss`` plus each direction and the (global) video-to-text logits."""

    loss: torch.Tensor
    video_to_text: torch.Tensor | None
    text_to_video: torch.Tensor | None
    logits: torch.Tensor


def _soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


def vtc_loss(
    video_features: torch.Tensor,
    text_features: torch.Tensor,
    *,
    temperature: float | torch.Tensor = 0.05,
    normalize: bool = True,
    directions: str = "both",
    combine: str = "sum",
    ids: torch.Tensor | None = None,
    gather: bool = False,
) -> VTCOutput:
    """Video-text contrastive loss: symmetric InfoNCE over the batch (CLIP; UMT Sec. 3.2).

    Row ``i`` of ``video_features`` ``(B, D)`` is paired with row ``i`` of ``text_features``.
    ``logits = sim(v, t) / temperature`` with ``sim`` the cosine (``normalize=True``) or the raw
    dot product (VLM's fine-tuning). ``directions``: ``"both"``, ``"video_to_text"`` or
    ``"text_to_video"``; ``combine``: ``"sum"`` (SimVTP, All-in-one NormSoftmax) or ``"mean"``
    (UMT) of the two directions.

    ``ids`` ``(B,)`` (e.g. the batch's ``video_index``): every pair with the same id is a
    positive and the target is uniform over them (UMT's soft targets); without ids the target
    is the diagonal. ``gather=True`` all-gathers features (with gradient) and ids from every
    rank, so negatives come from the global batch and every rank computes the same loss as one
    process on the whole batch (UMT); see :func:`vlbook.distributed.all_gather_with_grad` for the
    gradient scaling under DDP. Presets: SimVTP / All-in-one ``temperature=0.05, combine="sum"``;
    UMT ``temperature=LearnableTemperature()(), combine="mean", ids=video_index, gather=True``.
    """
    if video_features.dim() != 2 or text_features.dim() != 2:
        raise ValueError(
            f"features must be (B, D); got video {tuple(video_features.shape)}, "
            f"text {tuple(text_features.shape)}"
        )
    if video_features.shape != text_features.shape:
        raise ValueError(
            f"video features {tuple(video_features.shape)} and text features "
            f"{tuple(text_features.shape)} must be paired row by row"
        )
    if directions not in ("both", "video_to_text", "text_to_video"):
        raise ValueError(f"directions must be both/video_to_text/text_to_video, got {directions!r}")
    if combine not in ("sum", "mean"):
        raise ValueError(f"combine must be 'sum' or 'mean', got {combine!r}")
    if normalize:
        video_features = F.normalize(video_features, dim=-1)
        text_features = F.normalize(text_features, dim=-1)
    if ids is None:
        # positions in the (global) batch: only the diagonal is positive
        ids = torch.arange(video_features.shape[0], device=video_features.device)
        if gather and is_distributed():
            offsets = all_gather_no_grad(
                torch.tensor([video_features.shape[0]], device=video_features.device)
            )
            ids = ids + int(offsets[: get_rank()].sum())
    elif ids.shape != video_features.shape[:1]:
        raise ValueError(f"ids must be ({video_features.shape[0]},), got {tuple(ids.shape)}")
    if gather:
        video_features = all_gather_with_grad(video_features)
        text_features = all_gather_with_grad(text_features)
        ids = all_gather_no_grad(ids)
    logits = video_features @ text_features.T / temperature
    positives = (ids.view(-1, 1) == ids.view(1, -1)).to(logits.dtype)
    targets = positives / positives.sum(dim=1, keepdim=True)
    v2t = t2v = None
    if directions in ("both", "video_to_text"):
        v2t = _soft_cross_entropy(logits, targets)
    if directions in ("both", "text_to_video"):
        t2v = _soft_cross_entropy(logits.T, targets.T)
    parts = [x for x in (v2t, t2v) if x is not None]
    loss = sum(parts[1:], parts[0])
    if combine == "mean":
        loss = loss / len(parts)
    return VTCOutput(loss=loss, video_to_text=v2t, text_to_video=t2v, logits=logits)


# --------------------------------------------------------------------------------------------
# VTM
# --------------------------------------------------------------------------------------------


def vtm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Video-text matching: 2-way cross-entropy of the matching head (UMT, SimVTP, All-in-one).

    ``logits`` ``(M, 2)``, ``labels`` ``(M,)`` with 1 = matched pair, 0 = negative pair.
    """
    if logits.dim() != 2 or logits.shape[1] != 2 or labels.shape != logits.shape[:1]:
        raise ValueError(
            f"expected logits (M, 2) and labels (M,); got {tuple(logits.shape)}, "
            f"{tuple(labels.shape)}"
        )
    return F.cross_entropy(logits, labels.long())


def _sample_from_weights(
    weights: torch.Tensor, excluded: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    weights = weights.masked_fill(excluded, 0.0)
    has_negative = (~excluded).any(dim=1)
    if not bool(has_negative.all()):
        row = int((~has_negative).nonzero()[0])
        raise ValueError(
            f"row {row} has no negative candidate: every item of the batch shares its id"
        )
    # softmax can underflow to zero on every negative: fall back to uniform over them
    dead = weights.sum(dim=1) <= 0
    weights = torch.where(dead.view(-1, 1), (~excluded).to(weights.dtype), weights)
    source = generator.device if generator is not None else weights.device
    picks = torch.multinomial(weights.to(source), 1, generator=generator)
    return picks.view(-1).to(weights.device)


def _positive_mask(size: int, ids: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    if ids is None:
        return torch.eye(size, dtype=torch.bool, device=device)
    if ids.shape != (size,):
        raise ValueError(f"ids must be ({size},), got {tuple(ids.shape)}")
    return ids.view(-1, 1) == ids.view(1, -1)


@torch.no_grad()
def hard_negative_indices(
    similarity: torch.Tensor,
    ids: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One in-batch hard negative per row, sampled by similarity (ALBEF Sec. 3; UMT VTM).

    ``similarity`` ``(B, B)``: row = query (a text, for negative videos, or a video, for
    negative texts), column = candidate. Weights ``softmax(similarity[i])`` with every positive
    (the diagonal, or equal ``ids``) set to 0; one column is drawn by ``multinomial``. Returns
    ``(B,)`` column indices.
    """
    if similarity.dim() != 2 or similarity.shape[0] != similarity.shape[1]:
        raise ValueError(f"similarity must be square (B, B), got {tuple(similarity.shape)}")
    excluded = _positive_mask(similarity.shape[0], ids, similarity.device)
    weights = F.softmax(similarity.float(), dim=1)
    return _sample_from_weights(weights, excluded, generator)


def random_negative_indices(
    batch_size: int,
    ids: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """One uniformly random in-batch negative per row (All-in-one, SimVTP VTM).

    Every other item with a different id (or a different position when ``ids`` is None) is
    equally likely. Returns ``(B,)`` indices.
    """
    device = ids.device if ids is not None else device
    excluded = _positive_mask(batch_size, ids, torch.device(device or "cpu"))
    weights = torch.ones(batch_size, batch_size, device=excluded.device)
    return _sample_from_weights(weights, excluded, generator)


@dataclass
class VTMPairs:
    """Which video and which text form each matching-head input, and its 0/1 label."""

    video_index: torch.Tensor
    text_index: torch.Tensor
    labels: torch.Tensor


def vtm_pairs_with_hard_negatives(
    similarity_video_to_text: torch.Tensor,
    ids: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> VTMPairs:
    """UMT/ALBEF VTM batch: B positives, B (hard video, text), B (video, hard text): 3B pairs.

    Labels ``[1]*B + [0]*2B`` as in UMT's code. ``similarity_video_to_text`` ``(B, B)``: rows
    videos, columns texts (e.g. ``VTCOutput.logits`` of the local batch, detached).
    """
    b = similarity_video_to_text.shape[0]
    device = similarity_video_to_text.device
    negative_video = hard_negative_indices(similarity_video_to_text.T, ids, generator=generator)
    negative_text = hard_negative_indices(similarity_video_to_text, ids, generator=generator)
    arange = torch.arange(b, device=device)
    return VTMPairs(
        video_index=torch.cat([arange, negative_video, arange]),
        text_index=torch.cat([arange, arange, negative_text]),
        labels=torch.cat([torch.ones(b, device=device), torch.zeros(2 * b, device=device)]).long(),
    )


def vtm_pairs_with_random_videos(
    batch_size: int,
    ids: torch.Tensor | None = None,
    *,
    negative_fraction: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> VTMPairs:
    """All-in-one VTM batch: a random ``negative_fraction`` of the texts get a random other video.

    All-in-one's code gives half of the batch a "false video"; the pair count stays ``B``.
    """
    if not 0.0 <= negative_fraction <= 1.0:
        raise ValueError(f"negative_fraction must be in [0, 1], got {negative_fraction}")
    device = ids.device if ids is not None else torch.device(device or "cpu")
    source = generator.device if generator is not None else device
    keys = torch.rand(batch_size, generator=generator, device=source).to(device)
    negative = keys.argsort().argsort() < round(batch_size * negative_fraction)
    others = random_negative_indices(batch_size, ids, generator=generator, device=device)
    arange = torch.arange(batch_size, device=device)
    return VTMPairs(
        video_index=torch.where(negative, others, arange),
        text_index=arange,
        labels=(~negative).long(),
    )


# --------------------------------------------------------------------------------------------
# token prediction
# --------------------------------------------------------------------------------------------


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Masked language modelling: cross-entropy on positions whose label is not -100 (BERT).

    ``logits`` ``(..., V)``, ``labels`` ``(...)``. Mean over predicted positions; a batch with
    no predicted position gives 0 (with graph) instead of NaN.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} must be labels {tuple(labels.shape)} plus a vocab dim"
        )
    flat_labels = labels.reshape(-1)
    if not bool((flat_labels != IGNORE_INDEX).any()):
        return _zero_with_graph(logits)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), flat_labels, ignore_index=IGNORE_INDEX
    )


@dataclass
class MaskedTokenLossOutput:
    """Total token loss and its video and text parts (means over their masked tokens)."""

    loss: torch.Tensor
    video_loss: torch.Tensor
    text_loss: torch.Tensor
    num_video_tokens: int
    num_text_tokens: int


def _check_token_inputs(
    video_hidden: torch.Tensor,
    video_targets: torch.Tensor,
    unmasked_video: torch.Tensor,
    text_hidden: torch.Tensor,
    text_labels: torch.Tensor,
    word_embeddings: torch.Tensor,
) -> None:
    d = word_embeddings.shape[-1]
    for name, t in (
        ("video_hidden", video_hidden),
        ("video_targets", video_targets),
        ("unmasked_video", unmasked_video),
        ("text_hidden", text_hidden),
    ):
        if t.dim() != 2 or t.shape[1] != d:
            raise ValueError(f"{name} must be (M, {d}) like word_embeddings, got {tuple(t.shape)}")
    if video_targets.shape != video_hidden.shape:
        raise ValueError(
            f"video_targets {tuple(video_targets.shape)} must match video_hidden "
            f"{tuple(video_hidden.shape)}"
        )
    if text_labels.shape != text_hidden.shape[:1]:
        raise ValueError(
            f"text_labels must be ({text_hidden.shape[0]},), got {tuple(text_labels.shape)}"
        )


def _combine_token_losses(
    video_rows: torch.Tensor, text_rows: torch.Tensor, *graph: torch.Tensor
) -> MaskedTokenLossOutput:
    zero = _zero_with_graph(*graph)
    mv, mt = video_rows.numel(), text_rows.numel()
    video_loss = video_rows.mean() if mv else zero
    text_loss = text_rows.mean() if mt else zero
    return MaskedTokenLossOutput(
        loss=zero,
        video_loss=video_loss,
        text_loss=text_loss,
        num_video_tokens=mv,
        num_text_tokens=mt,
    )


def masked_token_loss(
    video_hidden: torch.Tensor,
    video_targets: torch.Tensor,
    unmasked_video: torch.Tensor,
    text_hidden: torch.Tensor,
    text_labels: torch.Tensor,
    word_embeddings: torch.Tensor,
    vocab_bias: torch.Tensor | None = None,
    *,
    text_zero_logit: bool = True,
) -> MaskedTokenLossOutput:
    """VLM masked token loss: one NCE over video tokens and the vocabulary (VLM Eq. 8-9).

    Inputs are the prediction head's outputs ``e`` (Eq. 4) at masked positions and the
    candidate embeddings, all of width ``D``:

    * ``video_hidden`` ``(Mv, D)``: ``e`` at masked video tokens; ``video_targets`` ``(Mv, D)``:
      their original tokens ``x_v = MLP(feature)`` (positives; MMPT does not detach them);
      ``unmasked_video`` ``(Nu, D)``: every non-masked video token of the batch (``V'``).
    * ``text_hidden`` ``(Mt, D)``: ``e`` at masked words; ``text_labels`` ``(Mt,)`` their ids.
    * ``word_embeddings`` ``(V, D)`` (``D``, tied to BERT's input embeddings) and the decoder's
      ``vocab_bias`` ``(V,)``.

    A masked video token scores ``[<e, x_v>, <e, V'>, <e, D> + b]`` with target the first
    column; a masked word scores ``[<e, D> + b, <e, V'>]`` with target its id, so its negatives
    are ``V' U D minus s`` (Eq. 8). As in MMPT's ``MTM`` loss, the word rows get one extra
    constant 0 logit (``text_zero_logit=True``, code) so that both kinds fit one logits matrix;
    ``False`` is Eq. 9 exactly. ``loss`` is the mean over all ``Mv + Mt`` masked tokens (one
    cross-entropy over the stacked rows, no temperature).
    """
    _check_token_inputs(
        video_hidden, video_targets, unmasked_video, text_hidden, text_labels, word_embeddings
    )
    bias = vocab_bias if vocab_bias is not None else word_embeddings.new_zeros(())

    def vocab_logits(h: torch.Tensor) -> torch.Tensor:
        return h @ word_embeddings.T + bias

    video_logits = torch.cat(
        [
            (video_hidden * video_targets).sum(dim=-1, keepdim=True),
            video_hidden @ unmasked_video.T,
            vocab_logits(video_hidden),
        ],
        dim=1,
    )
    video_rows = F.cross_entropy(
        video_logits,
        torch.zeros(video_hidden.shape[0], dtype=torch.long, device=video_hidden.device),
        reduction="none",
    )
    text_parts = [vocab_logits(text_hidden), text_hidden @ unmasked_video.T]
    if text_zero_logit:
        text_parts.append(text_hidden.new_zeros(text_hidden.shape[0], 1))
    text_rows = F.cross_entropy(torch.cat(text_parts, dim=1), text_labels.long(), reduction="none")
    out = _combine_token_losses(video_rows, text_rows, video_hidden, text_hidden, word_embeddings)
    count = out.num_video_tokens + out.num_text_tokens
    if count:
        out.loss = (video_rows.sum() + text_rows.sum()) / count
    return out


def mfm_mlm_loss(
    video_hidden: torch.Tensor,
    video_targets: torch.Tensor,
    unmasked_video: torch.Tensor,
    text_hidden: torch.Tensor,
    text_labels: torch.Tensor,
    word_embeddings: torch.Tensor,
    vocab_bias: torch.Tensor | None = None,
) -> MaskedTokenLossOutput:
    """VLM's MFM-MLM baseline: L_MFM + L_MLM, two separate losses (VLM Eq. 5-7).

    MFM (Eq. 5-6): each masked video token contrasts its original token against the batch's
    non-masked video tokens ``V'`` only. MLM: cross-entropy over the vocabulary only. Inputs as
    :func:`masked_token_loss`; ``loss = video_loss + text_loss`` (a missing part counts 0).
    """
    _check_token_inputs(
        video_hidden, video_targets, unmasked_video, text_hidden, text_labels, word_embeddings
    )
    video_logits = torch.cat(
        [(video_hidden * video_targets).sum(dim=-1, keepdim=True), video_hidden @ unmasked_video.T],
        dim=1,
    )
    video_rows = F.cross_entropy(
        video_logits,
        torch.zeros(video_hidden.shape[0], dtype=torch.long, device=video_hidden.device),
        reduction="none",
    )
    text_logits = text_hidden @ word_embeddings.T
    if vocab_bias is not None:
        text_logits = text_logits + vocab_bias
    text_rows = F.cross_entropy(text_logits, text_labels.long(), reduction="none")
    out = _combine_token_losses(video_rows, text_rows, video_hidden, text_hidden, word_embeddings)
    out.loss = out.video_loss + out.text_loss
    return out


# --------------------------------------------------------------------------------------------
# pixel and feature regression
# --------------------------------------------------------------------------------------------


def patchify_video(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Cut ``(B, T, C, H, W)`` into tubelets: ``(B, N, tubelet * patch * patch * C)``.

    Tokens in ``(t, h, w)`` raster order (``N = T/tubelet * H/patch * W/patch``, the order of a
    Conv3d patch embedding and of vlbook's masks); inside a token the pixels are ordered
    ``(dt, dy, dx, c)`` with the channel fastest, as VideoMAE/SimVTP's target layout.
    """
    if video.dim() != 5:
        raise ValueError(f"video must be (B, T, C, H, W), got shape {tuple(video.shape)}")
    b, t, c, h, w = video.shape
    if t % tubelet or h % patch or w % patch:
        raise ValueError(
            f"video (T={t}, H={h}, W={w}) is not divisible by tubelet {tubelet} / patch {patch}"
        )
    x = video.reshape(b, t // tubelet, tubelet, c, h // patch, patch, w // patch, patch)
    x = x.permute(0, 1, 4, 6, 2, 5, 7, 3)  # b, t', h', w', dt, dy, dx, c
    return x.reshape(b, (t // tubelet) * (h // patch) * (w // patch), tubelet * patch * patch * c)


def unpatchify_video(
    patches: torch.Tensor, grid: Sequence[int], tubelet: int, patch: int, channels: int = 3
) -> torch.Tensor:
    """Inverse of :func:`patchify_video`: ``(B, N, P)`` with ``grid = (T', H', W')`` to video."""
    t, h, w = (int(g) for g in grid)
    b = patches.shape[0]
    if patches.shape[1:] != (t * h * w, tubelet * patch * patch * channels):
        raise ValueError(
            f"patches {tuple(patches.shape)} do not match grid {tuple(grid)}, tubelet {tubelet},"
            f" patch {patch}, channels {channels}"
        )
    x = patches.reshape(b, t, h, w, tubelet, patch, patch, channels)
    x = x.permute(0, 1, 4, 7, 2, 5, 3, 6)  # b, t', dt, c, h', dy, w', dx
    return x.reshape(b, t * tubelet, channels, h * patch, w * patch)


@torch.no_grad()
def normalized_pixel_targets(
    video: torch.Tensor,
    tubelet: int,
    patch: int,
    *,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Per-patch normalised pixel targets (MAE Sec. 3 "normalized pixels"; SimVTP, VideoMAE).

    ``video`` is ImageNet-normalised ``(B, T, C, H, W)``; the normalisation is undone first
    (pass ``mean=None, std=None`` for raw pixels). Each channel of each tubelet is then
    standardised over the tubelet's ``tubelet*patch*patch`` pixels with the *unbiased* variance:
    ``(x - mean) / (sqrt(var) + eps)``, as SimVTP's code. Returns ``(B, N, P*C)``.
    """
    c = video.shape[2]
    if mean is not None and std is not None:
        m = torch.as_tensor(mean, dtype=video.dtype, device=video.device).view(1, 1, c, 1, 1)
        s = torch.as_tensor(std, dtype=video.dtype, device=video.device).view(1, 1, c, 1, 1)
        video = video * s + m
    tokens = patchify_video(video, tubelet, patch)
    b, n, pc = tokens.shape
    per_channel = tokens.view(b, n, pc // c, c)
    centred = per_channel - per_channel.mean(dim=2, keepdim=True)
    scale = per_channel.var(dim=2, unbiased=True, keepdim=True).sqrt() + eps
    return (centred / scale).view(b, n, pc)


def normalized_pixel_mse(
    predictions: torch.Tensor,
    video: torch.Tensor,
    mask: torch.Tensor,
    tubelet: int,
    patch: int,
    *,
    normalize_target: bool = True,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
) -> torch.Tensor:
    """SimVTP masked video reconstruction: MSE to per-patch normalised pixels of masked tubes.

    ``predictions`` ``(B, N_masked, P*C)``: decoder outputs for the masked tokens, in the order
    of :func:`vlbook.masking.gather_masked`; ``mask`` ``(B, N)`` True = masked. Mean over all
    elements (SimVTP's ``nn.MSELoss``). ``normalize_target=False`` regresses raw pixels.
    """
    if normalize_target:
        targets = normalized_pixel_targets(video, tubelet, patch, mean=mean, std=std)
    else:
        with torch.no_grad():
            c = video.shape[2]
            raw = video
            if mean is not None and std is not None:
                m = torch.as_tensor(mean, dtype=video.dtype, device=video.device)
                s = torch.as_tensor(std, dtype=video.dtype, device=video.device)
                raw = video * s.view(1, 1, c, 1, 1) + m.view(1, 1, c, 1, 1)
            targets = patchify_video(raw, tubelet, patch)
    if mask.shape != targets.shape[:2]:
        raise ValueError(
            f"mask {tuple(mask.shape)} must be (B, N) with N = {targets.shape[1]} tubelets"
        )
    masked_targets = gather_masked(targets, mask)
    if predictions.shape != masked_targets.shape:
        raise ValueError(
            f"predictions {tuple(predictions.shape)} must be (B, N_masked, P*C) = "
            f"{tuple(masked_targets.shape)}"
        )
    return F.mse_loss(predictions, masked_targets.to(predictions.dtype))


@dataclass
class UTAOutput:
    """UTA total (mean over aligned layers) and the loss of each layer."""

    loss: torch.Tensor
    per_layer: list[torch.Tensor]


def unmasked_token_alignment(
    student: Sequence[torch.Tensor] | torch.Tensor,
    teacher: Sequence[torch.Tensor] | torch.Tensor,
    *,
    visible_mask: torch.Tensor | None = None,
) -> UTAOutput:
    """UMT unmasked token alignment (UMT Sec. 3.1 "Target"): mean over K layers of 2 - 2cos.

    ``student`` and ``teacher``: K tensors ``(B, N_visible, D)`` (or stacked ``(K, B, N, D)``)
    of projected tokens. Both are L2-normalised, so ``2 - 2 cos = ||s - t||^2`` is the squared
    error of unit vectors (the paper's "MSE between the normalized pairs"); mean over tokens,
    then over layers. If the teacher holds all ``N`` tokens, pass the student's
    ``visible_mask`` ``(B, N)`` (True = masked) to select the teacher's visible ones.
    """
    students = list(student) if not torch.is_tensor(student) else list(student.unbind(0))
    teachers = list(teacher) if not torch.is_tensor(teacher) else list(teacher.unbind(0))
    if len(students) != len(teachers) or not students:
        raise ValueError(
            f"need as many student as teacher layers (>0); got {len(students)} and {len(teachers)}"
        )
    per_layer = []
    for k, (s, t) in enumerate(zip(students, teachers)):
        if visible_mask is not None and t.shape[1] != s.shape[1]:
            t = gather_visible(t, visible_mask)
        if s.shape != t.shape:
            raise ValueError(
                f"layer {k}: student {tuple(s.shape)} and teacher {tuple(t.shape)} differ"
            )
        cos = (F.normalize(s, dim=-1) * F.normalize(t.detach(), dim=-1)).sum(dim=-1)
        per_layer.append((2.0 - 2.0 * cos).mean())
    return UTAOutput(loss=torch.stack(per_layer).mean(), per_layer=per_layer)


# --------------------------------------------------------------------------------------------
# E-ViLM: focal loss and vector quantisation
# --------------------------------------------------------------------------------------------


def focal_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma_positive: float = 0.0,
    gamma_negative: float = 1.0,
) -> torch.Tensor:
    """Asymmetric focal loss for multi-label word prediction (E-ViLM Eq. 6, after ASL [7]).

    ``logits`` ``(B, K)`` over the K words, ``targets`` ``(B, K)`` in {0, 1}; ``p =
    sigmoid(logits)``. Per sample ``-(1/K) sum_k [y (1-p)^g+ log p + (1-y) p^g- log(1-p)]``,
    mean over samples. Eq. 6 as printed is ``log p`` for positives and ``p log(1-p)`` for
    negatives, i.e. ``g+ = 0, g- = 1`` (the defaults), with the minus sign of a loss dropped.
    ``g+ = g- = 0`` is binary cross-entropy (E-ViLM's "BCE" tokenizer ablation).
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} differ")
    y = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    log_p = F.logsigmoid(logits)
    log_not_p = F.logsigmoid(-logits)
    positive = y * (1 - p).pow(gamma_positive) * log_p
    negative = (1 - y) * p.pow(gamma_negative) * log_not_p
    return -(positive + negative).mean(dim=-1).mean()


@dataclass
class VQOutput:
    """Vector quantiser output.

    ``quantized``: code vectors with straight-through gradient to the encoder; ``codes``:
    indices; ``loss = codebook_weight * codebook_loss + commitment_weight * commitment_loss``;
    ``perplexity`` and ``usage_rate`` (fraction of codes used, E-ViLM's "VOC. RATE") of this
    batch.
    """

    quantized: torch.Tensor
    codes: torch.Tensor
    loss: torch.Tensor
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor
    perplexity: torch.Tensor
    usage_rate: torch.Tensor


def _usage(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    probs = counts.float() / counts.sum().clamp(min=1)
    entropy = -(probs * torch.log(probs.clamp(min=1e-12))).sum()
    return entropy.exp(), (counts > 0).float().mean()


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser with straight-through gradient (E-ViLM Eq. 4 and 7; VQ-VAE).

    E-ViLM: 9,420 codes of dimension 32, random init, encoder outputs and codes both
    L2-normalised before the Euclidean look-up (Sec. 4.2). ``forward(z)`` with ``z`` ``(..., D)``
    returns :class:`VQOutput`. Eq. 7's terms ``||sg[E(x)] - c||^2`` (codebook) and
    ``||E(x) - sg[c]||^2`` (commitment) are squared L2 distances per vector, averaged over
    vectors, weight 1 each as in Eq. 7 (VQ-VAE uses 0.25 for the commitment).
    """

    def __init__(
        self,
        num_codes: int = 9420,
        dim: int = 32,
        *,
        l2_normalize: bool = True,
        codebook_weight: float = 1.0,
        commitment_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if num_codes < 1 or dim < 1:
            raise ValueError(f"num_codes and dim must be positive, got {num_codes}, {dim}")
        self.num_codes, self.dim = num_codes, dim
        self.l2_normalize = l2_normalize
        self.codebook_weight, self.commitment_weight = codebook_weight, commitment_weight
        self.codebook = nn.Parameter(torch.randn(num_codes, dim))

    def code_vectors(self) -> torch.Tensor:
        """The codebook as used in the look-up (normalised if ``l2_normalize``)."""
        return F.normalize(self.codebook, dim=-1) if self.l2_normalize else self.codebook

    def forward(self, z: torch.Tensor) -> VQOutput:
        if z.shape[-1] != self.dim:
            raise ValueError(f"last dim of z must be {self.dim}, got shape {tuple(z.shape)}")
        flat = z.reshape(-1, self.dim)
        if self.l2_normalize:
            flat = F.normalize(flat, dim=-1)
        codebook = self.code_vectors()
        with torch.no_grad():
            distances = (
                flat.pow(2).sum(1, keepdim=True)
                - 2 * flat @ codebook.T
                + codebook.pow(2).sum(1).view(1, -1)
            )
            codes = distances.argmin(dim=1)
        chosen = codebook[codes]
        codebook_loss = (chosen - flat.detach()).pow(2).sum(-1).mean()
        commitment_loss = (flat - chosen.detach()).pow(2).sum(-1).mean()
        quantized = flat + (chosen - flat).detach()  # straight-through estimator
        perplexity, usage_rate = _usage(torch.bincount(codes, minlength=self.num_codes))
        return VQOutput(
            quantized=quantized.view(z.shape),
            codes=codes.view(z.shape[:-1]),
            loss=self.codebook_weight * codebook_loss + self.commitment_weight * commitment_loss,
            codebook_loss=codebook_loss,
            commitment_loss=commitment_loss,
            perplexity=perplexity,
            usage_rate=usage_rate,
        )


class CodebookUsage:
    """Code counts accumulated over many batches: ``usage_rate`` (E-ViLM Table 6-7 "VOC. RATE")
    and ``perplexity`` over a whole evaluation set rather than one batch."""

    def __init__(self, num_codes: int) -> None:
        self.counts = torch.zeros(num_codes, dtype=torch.long)

    def update(self, codes: torch.Tensor) -> None:
        """Add the codes ``(...)`` of one batch."""
        flat = codes.detach().reshape(-1).cpu()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.counts.numel()):
            raise ValueError(f"codes must be in [0, {self.counts.numel()})")
        self.counts += torch.bincount(flat, minlength=self.counts.numel())

    @property
    def usage_rate(self) -> float:
        """Fraction of the codebook used at least once."""
        return float((self.counts > 0).float().mean())

    @property
    def perplexity(self) -> float:
        """``exp`` of the entropy of the code distribution (= number of equally used codes)."""
        return float(_usage(self.counts)[0])
