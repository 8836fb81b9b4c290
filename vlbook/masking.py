"""Masks for video tokens and text tokens, shared by the five papers.

Conventions
-----------
* Every mask is a boolean tensor where ``True`` means *masked* (hidden from the encoder or
  replaced in the input).
* Video token masks have shape ``(B, N)`` with ``N = T' * H' * W'`` tokens in ``(t, h, w)``
  raster order, the order in which a patch/tubelet embedding flattens a clip. ``grid`` arguments
  are that ``(T', H', W')`` triple.
* Text masks have the shape of ``input_ids``: ``(B, L)``.
* Every sampler takes an optional ``torch.Generator``; the same generator state gives the same
  mask. Samplers are vectorised over the batch (no Python loop over samples).

Rounding of the masked counts follows the authors' code (see the book's *Paper vs code* page,
``book/paper_vs_code.md``): tube masking hides ``int(ratio * H'W')`` positions of every frame
(VideoMAE / SimVTP: ``int(0.9 * 196) = 176``); semantic masking keeps ``H'W' - int(ratio *
H'W')`` tokens per frame (UMT: 40 of 196 at 0.8); random masking hides ``int(ratio * N)``
tokens of the clip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "ModalityPlan",
    "TextMasking",
    "bernoulli_token_mask",
    "block_mask",
    "gather_masked",
    "gather_visible",
    "masked_modality_plan",
    "mask_text_tokens",
    "random_mask",
    "semantic_mask",
    "text_mask_ids_from_tokenizer",
    "tube_mask",
]

BERT_REPLACEMENT: tuple[float, float, float] = (0.8, 0.1, 0.1)
"""BERT's split of the selected tokens: [MASK], random word, unchanged."""


# --------------------------------------------------------------------------------------------
# small shared helpers
# --------------------------------------------------------------------------------------------


def _check_ratio(ratio: float, name: str = "ratio") -> None:
    if not 0.0 <= float(ratio) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {ratio}")


def _check_grid(grid: Sequence[int]) -> tuple[int, int, int]:
    if len(grid) != 3 or any(int(g) < 1 for g in grid):
        raise ValueError(f"grid must be (T', H', W') with positive sizes, got {tuple(grid)}")
    t, h, w = (int(g) for g in grid)
    return t, h, w


def _rand(shape: Sequence[int], generator: torch.Generator | None, device: Any) -> torch.Tensor:
    """Uniform [0, 1) draws made on the generator's device, returned on ``device``."""
    source = generator.device if generator is not None else device
    draws = torch.rand(tuple(shape), generator=generator, device=source)
    return draws if device is None else draws.to(device)


def _select_lowest(keys: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Boolean ``(M, K)``: for each row, the ``counts[row]`` positions with the smallest keys."""
    order = keys.argsort(dim=1)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(keys.shape[1], device=keys.device).expand_as(order))
    return ranks < counts.view(-1, 1)


# --------------------------------------------------------------------------------------------
# video token masks
# --------------------------------------------------------------------------------------------


def random_mask(
    batch_size: int,
    num_tokens: int,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniformly random token mask over the whole clip (VideoMAE "random", SimVTP Table 4a).

    Exactly ``int(ratio * num_tokens)`` tokens are masked in every sample, each subset equally
    likely. Returns a ``(batch_size, num_tokens)`` bool tensor, ``True`` = masked.
    """
    _check_ratio(ratio)
    num_masked = int(ratio * num_tokens)
    keys = _rand((batch_size, num_tokens), generator, device)
    counts = torch.full((batch_size,), num_masked, device=keys.device)
    return _select_lowest(keys, counts)


def tube_mask(
    batch_size: int,
    grid: Sequence[int],
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Tube mask: one random spatial mask repeated on every temporal slice (SimVTP Sec. 3.2).

    As VideoMAE's ``TubeMaskingGenerator`` (used by SimVTP and UMT's "tube" option), each frame
    hides exactly ``int(ratio * H' * W')`` positions, the same ones on every frame: SimVTP's 90%
    on 8x14x14 tokens hides 176 positions x 8 slices. Returns ``(B, T'*H'*W')`` bool.
    """
    _check_ratio(ratio)
    t, h, w = _check_grid(grid)
    spatial = random_mask(batch_size, h * w, ratio, generator=generator, device=device)
    return spatial.unsqueeze(1).expand(batch_size, t, h * w).reshape(batch_size, t * h * w)


def block_mask(
    batch_size: int,
    grid: Sequence[int],
    ratio: float,
    *,
    per_frame: bool = True,
    min_block_tokens: int = 16,
    min_aspect: float = 0.3,
    max_aspect: float | None = None,
    max_rounds: int = 100,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """BEiT block-wise masking (BEiT Alg. 1), used by E-ViLM at 40% (E-ViLM Sec. 4.2).

    Rectangles of ``s`` tokens (``s`` uniform between ``min_block_tokens`` and the tokens still
    to mask, aspect ratio log-uniform in ``[min_aspect, 1/min_aspect]``, strictly narrower and
    shorter than the grid as in BEiT) are added while they do not overshoot the target
    ``int(ratio * H' * W')``. Every sample proposes one rectangle per round, all samples at once.
    BEiT gives up after ten failed proposals and may mask fewer tokens; here, after
    ``max_rounds`` rounds the rest is topped up with random tokens so that every frame hides
    *exactly* the target count (E-ViLM publishes no code, this choice is vlbook's).

    ``per_frame=True`` draws an independent 2-D mask for every temporal slice (each frame is an
    image for the frame-level E-ViLM backbone); ``False`` repeats one mask on all slices.
    Returns ``(B, T'*H'*W')`` bool.
    """
    _check_ratio(ratio)
    t, h, w = _check_grid(grid)
    if min_aspect <= 0:
        raise ValueError(f"min_aspect must be positive, got {min_aspect}")
    max_aspect = 1.0 / min_aspect if max_aspect is None else max_aspect
    if max_aspect < min_aspect:
        raise ValueError(f"max_aspect {max_aspect} is below min_aspect {min_aspect}")
    target = int(ratio * h * w)
    images = batch_size * t if per_frame else batch_size
    mask = torch.zeros(images, h, w, dtype=torch.bool, device=device)
    count = torch.zeros(images, dtype=torch.long, device=mask.device)
    rows = torch.arange(h, device=mask.device).view(1, h, 1)
    cols = torch.arange(w, device=mask.device).view(1, 1, w)
    low = float(min(min_block_tokens, target))
    log_aspects = (math.log(min_aspect), math.log(max_aspect))
    for _ in range(max_rounds):
        remaining = target - count
        active = remaining > 0
        if not bool(active.any()):
            break
        u = _rand((images, 4), generator, mask.device)
        area = low + (remaining.float() - low) * u[:, 0]
        aspect = torch.exp(log_aspects[0] + (log_aspects[1] - log_aspects[0]) * u[:, 1])
        bh = torch.round(torch.sqrt(area * aspect)).long()
        bw = torch.round(torch.sqrt(area / aspect)).long()
        fits = (bh < h) & (bw < w) & (bh > 0) & (bw > 0)
        top = torch.floor(u[:, 2] * (h - bh + 1).clamp(min=1)).long()
        left = torch.floor(u[:, 3] * (w - bw + 1).clamp(min=1)).long()
        top, left = top.view(-1, 1, 1), left.view(-1, 1, 1)
        block = (rows >= top) & (rows < top + bh.view(-1, 1, 1))
        block = block & (cols >= left) & (cols < left + bw.view(-1, 1, 1))
        new = block & ~mask
        delta = new.sum(dim=(1, 2))
        accept = fits & active & (delta > 0) & (delta <= remaining)
        mask |= new & accept.view(-1, 1, 1)
        count += delta * accept
    flat = mask.view(images, h * w)
    remaining = target - count
    if bool((remaining > 0).any()):
        keys = _rand((images, h * w), generator, mask.device).masked_fill(flat, 2.0)
        flat = flat | _select_lowest(keys, remaining)
    if per_frame:
        return flat.view(batch_size, t * h * w)
    return flat.unsqueeze(1).expand(batch_size, t, h * w).reshape(batch_size, t * h * w)


def semantic_mask(
    attention: torch.Tensor,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """UMT semantic mask from the teacher's CLS attention (UMT Sec. 3.1, Eq. 1-2).

    ``attention`` is ``(B, T, H'W')``: per frame, the last-layer attention of the teacher's CLS
    query to the patch tokens, averaged over heads (Eq. 1; the code does not renormalise it
    after dropping the CLS column, and neither do we: multinomial sampling only needs the
    ratios). Per frame, ``H'W' - int(ratio * H'W')`` tokens are drawn *without replacement* with
    probability proportional to the attention and stay visible; the rest are masked
    (UMT: 40 of 196 visible at ratio 0.8). Frames are independent, it is not a tube.
    Returns ``(B, T*H'W')`` bool.
    """
    _check_ratio(ratio)
    if attention.dim() != 3:
        raise ValueError(
            "attention must be (B, T, H'W') CLS-to-patch weights, "
            f"got shape {tuple(attention.shape)}"
        )
    b, t, n = attention.shape
    weights = attention.detach().float().reshape(b * t, n)
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
        raise ValueError("attention weights must be finite and non-negative")
    num_visible = n - int(ratio * n)
    positive = (weights > 0).sum(dim=1)
    if bool((positive < num_visible).any()):
        raise ValueError(
            f"every frame needs at least {num_visible} tokens with positive attention to keep "
            f"{num_visible} visible; the smallest frame has {int(positive.min())}"
        )
    mask = torch.ones(b * t, n, dtype=torch.bool, device=attention.device)
    if num_visible > 0:
        if generator is not None and generator.device != weights.device:
            weights = weights.to(generator.device)
        visible = torch.multinomial(weights, num_visible, replacement=False, generator=generator)
        mask.scatter_(1, visible.to(mask.device), False)
    return mask.view(b, t * n)


def bernoulli_token_mask(
    valid: torch.Tensor,
    probability: float | torch.Tensor,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Independent Bernoulli mask over valid tokens (VLM MFM, Sec. 3.2: frames at 15%).

    ``valid`` ``(B, N)`` bool marks real (non-padding) tokens; ``probability`` is a float or a
    ``(B,)`` tensor of per-example probabilities (see :meth:`ModalityPlan.video_probability`).
    Counts vary per sample, as in MMPT's ``FrameMaskingProcessor``.
    """
    valid = valid.bool()
    p = torch.as_tensor(probability, dtype=torch.float, device=valid.device)
    p = p.view(-1, 1) if p.dim() == 1 else p
    if bool((p < 0).any()) or bool((p > 1).any()):
        raise ValueError("probability must be in [0, 1]")
    return (_rand(valid.shape, generator, valid.device).to(valid.device) < p) & valid


# --------------------------------------------------------------------------------------------
# VLM masked modality model
# --------------------------------------------------------------------------------------------


@dataclass
class ModalityPlan:
    """Per-example masking plan of VLM (Sec. 3.3, Fig. 2).

    ``whole_video[i]``: every video token of example ``i`` is masked (text intact);
    ``whole_text[i]``: every text token is masked (video intact); neither: MFM-MLM at the usual
    per-token ratio.
    """

    whole_video: torch.Tensor
    whole_text: torch.Tensor

    @property
    def mfm_mlm(self) -> torch.Tensor:
        """Examples masked token by token (MFM-MLM)."""
        return ~(self.whole_video | self.whole_text)

    def video_probability(self, mfm_probability: float = 0.15) -> torch.Tensor:
        """Per-example frame masking probability: 1, 0 or ``mfm_probability``."""
        p = torch.full(self.whole_video.shape, mfm_probability, device=self.whole_video.device)
        return p.masked_fill(self.whole_video, 1.0).masked_fill(self.whole_text, 0.0)

    def text_probability(self, mlm_probability: float = 0.15) -> torch.Tensor:
        """Per-example text masking probability: 1, 0 or ``mlm_probability``."""
        p = torch.full(self.whole_text.shape, mlm_probability, device=self.whole_text.device)
        return p.masked_fill(self.whole_text, 1.0).masked_fill(self.whole_video, 0.0)


def masked_modality_plan(
    batch_size: int,
    *,
    mmm_probability: float = 0.5,
    whole_video_share: float = 0.5,
    exact: bool = False,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> ModalityPlan:
    """Choose, per example, whole-video / whole-text / MFM-MLM masking (VLM Sec. 3.3).

    The paper: 25% whole video, 25% whole text, 50% MFM-MLM (Sec. 4, "Implementation").
    MMPT's ``MFMMLMAligner`` gives the same expectation by two coin flips per example:
    ``mm_prob = 0.5`` for modality-level masking, then 50/50 video or text
    (``exact=False``, the default, reproduces that: counts vary per batch). ``exact=True``
    assigns exactly ``round(B * mmm_probability * whole_video_share)`` whole-video and
    ``round(B * mmm_probability) -`` that many whole-text examples to a random subset, so every
    batch has the paper's proportions.
    """
    _check_ratio(mmm_probability, "mmm_probability")
    _check_ratio(whole_video_share, "whole_video_share")
    u = _rand((batch_size, 2), generator, device)
    if exact:
        n_mmm = round(batch_size * mmm_probability)
        n_video = round(batch_size * mmm_probability * whole_video_share)
        order_keys = u[:, 0:1].T
        in_mmm = _select_lowest(order_keys, torch.tensor([n_mmm], device=u.device))[0]
        whole_video = _select_lowest(order_keys, torch.tensor([n_video], device=u.device))[0]
        whole_text = in_mmm & ~whole_video
    else:
        in_mmm = u[:, 0] < mmm_probability
        whole_video = in_mmm & (u[:, 1] < whole_video_share)
        whole_text = in_mmm & ~whole_video
    return ModalityPlan(whole_video=whole_video, whole_text=whole_text)


# --------------------------------------------------------------------------------------------
# text masking
# --------------------------------------------------------------------------------------------


@dataclass
class TextMasking:
    """Result of :func:`mask_text_tokens`.

    ``input_ids``: the corrupted ids fed to the model; ``labels``: the original id where a
    prediction is asked, ``-100`` elsewhere (PyTorch's ``ignore_index``); ``mask``: the selected
    positions (``labels != -100``); ``replaced_by_mask`` / ``replaced_by_random``: which of them
    became [MASK] or a random word (the rest are unchanged).
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    mask: torch.Tensor
    replaced_by_mask: torch.Tensor
    replaced_by_random: torch.Tensor


def text_mask_ids_from_tokenizer(tokenizer: Any) -> dict[str, Any]:
    """``mask_token_id``, ``vocab_size`` and ``special_token_ids`` of a Hugging Face tokenizer.

    Spread the result into :func:`mask_text_tokens`. All special ids (CLS, SEP, PAD, MASK, UNK,
    ...) are excluded from masking, as in VLM's MMPT (CLS/SEP/PAD); UMT masks [SEP]: pass
    ``special_token_ids=(cls_id, pad_id)`` for it.
    """
    if getattr(tokenizer, "mask_token_id", None) is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no mask token")
    return {
        "mask_token_id": int(tokenizer.mask_token_id),
        "vocab_size": len(tokenizer),
        "special_token_ids": tuple(int(i) for i in tokenizer.all_special_ids),
    }


def _select_units(
    candidates: torch.Tensor,
    probability: torch.Tensor,
    exact: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Select among ``candidates`` ``(B, K)``: Bernoulli(p) each, or exactly round(p * n)."""
    keys = _rand(candidates.shape, generator, candidates.device).to(candidates.device)
    if not exact:
        return (keys < probability) & candidates
    available = candidates.sum(dim=1)
    counts = torch.round(available.float() * probability.view(-1)).long()
    counts = torch.where((available > 0) & (probability.view(-1) > 0), counts.clamp(min=1), counts)
    return _select_lowest(keys.masked_fill(~candidates, 2.0), counts) & candidates


def mask_text_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    mask_token_id: int,
    vocab_size: int,
    ratio: float | torch.Tensor = 0.15,
    special_token_ids: Iterable[int] = (),
    special_tokens_mask: torch.Tensor | None = None,
    replace: tuple[float, float, float] | str = BERT_REPLACEMENT,
    word_ids: torch.Tensor | None = None,
    exact: bool = False,
    generator: torch.Generator | None = None,
) -> TextMasking:
    """BERT masked-language-model corruption at any ratio (BERT Sec. 3.1; MLM in all 5 papers).

    Selection: each maskable token independently with probability ``ratio`` (HF
    ``DataCollatorForLanguageModeling``, used by VLM, UMT and SimVTP) or, with ``exact=True``,
    exactly ``max(1, round(ratio * n_maskable))`` per sequence (BERT's original data script).
    ``ratio`` may be a ``(B,)`` tensor (VLM's per-example plan, see :class:`ModalityPlan`).

    Never masked: padding (``attention_mask == 0``), ids in ``special_token_ids`` and positions
    flagged in ``special_tokens_mask``. VLM excludes CLS/SEP/PAD; UMT only CLS/PAD.

    Replacement of the selected tokens: ``replace=(p_mask, p_random, p_keep)``, BERT's
    ``(0.8, 0.1, 0.1)`` by default; ``"all-mask"`` = ``(1, 0, 0)``, SimVTP's released code.
    Random words are drawn uniformly from ``[0, vocab_size)`` as in the HF collator.

    Whole-word masking (All-in-one): ``word_ids`` ``(B, L)`` gives each token's word index
    (``-1`` for tokens outside words, e.g. from a fast tokenizer's ``word_ids()``); words are
    then selected as units (every piece of a selected word is masked) and the replacement is
    drawn per token, as in HF ``DataCollatorForWholeWordMask``. With ``exact=True`` the count is
    in words, whereas HF's collator counts tokens.
    """
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (B, L), got shape {tuple(input_ids.shape)}")
    if isinstance(replace, str):
        if replace != "all-mask":
            raise ValueError(f"replace must be 'all-mask' or a 3-tuple, got {replace!r}")
        replace = (1.0, 0.0, 0.0)
    if len(replace) != 3 or any(p < 0 for p in replace) or abs(sum(replace) - 1.0) > 1e-6:
        raise ValueError(f"replace must be three non-negative shares summing to 1, got {replace}")
    device = input_ids.device
    probability = torch.as_tensor(ratio, dtype=torch.float, device=device)
    if probability.dim() == 0:
        probability = probability.expand(input_ids.shape[0])
    if probability.shape != (input_ids.shape[0],):
        raise ValueError(
            f"ratio must be a float or a (B,) tensor, got shape {tuple(probability.shape)}"
        )
    if bool((probability < 0).any()) or bool((probability > 1).any()):
        raise ValueError("ratio must be in [0, 1]")
    probability = probability.view(-1, 1)

    maskable = torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
                f"{tuple(input_ids.shape)}"
            )
        maskable &= attention_mask.bool()
    specials = torch.tensor(sorted(set(int(i) for i in special_token_ids)), device=device)
    if specials.numel():
        maskable &= ~torch.isin(input_ids, specials)
    if special_tokens_mask is not None:
        maskable &= ~special_tokens_mask.bool()

    if word_ids is None:
        selected = _select_units(maskable, probability, exact, generator)
    else:
        if word_ids.shape != input_ids.shape:
            raise ValueError(
                f"word_ids shape {tuple(word_ids.shape)} differs from input_ids "
                f"{tuple(input_ids.shape)}"
            )
        in_word = maskable & (word_ids >= 0)
        index = word_ids.clamp(min=0).long()
        if bool((index >= input_ids.shape[1]).any()):
            raise ValueError("word_ids must be < sequence length (one index per word)")
        # words[b, k] = number of maskable tokens of word k in sample b
        words = torch.zeros(input_ids.shape, dtype=torch.long, device=device)
        words.scatter_add_(1, index, in_word.long())
        chosen_words = _select_units(words > 0, probability, exact, generator)
        selected = chosen_words.gather(1, index) & in_word

    u = _rand(input_ids.shape, generator, device).to(device)
    by_mask = selected & (u < replace[0])
    by_random = selected & (u >= replace[0]) & (u < replace[0] + replace[1])
    random_words = torch.randint(
        vocab_size,
        input_ids.shape,
        generator=generator,
        device=generator.device if generator is not None else device,
    ).to(device)
    corrupted = input_ids.clone()
    corrupted[by_mask] = mask_token_id
    corrupted[by_random] = random_words[by_random]
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, -100))
    return TextMasking(
        input_ids=corrupted,
        labels=labels,
        mask=selected,
        replaced_by_mask=by_mask,
        replaced_by_random=by_random,
    )


# --------------------------------------------------------------------------------------------
# using masks
# --------------------------------------------------------------------------------------------


def _gather_where(x: torch.Tensor, keep: torch.Tensor, what: str) -> torch.Tensor:
    if x.dim() < 2 or keep.shape != x.shape[:2]:
        raise ValueError(
            f"mask shape {tuple(keep.shape)} must equal the first two dims of x {tuple(x.shape)}"
        )
    counts = keep.sum(dim=1)
    if bool((counts != counts[0]).any()):
        raise ValueError(
            f"every sample must have the same number of {what} tokens to stack them; got "
            f"{counts.tolist()}"
        )
    # stable sort puts kept tokens first, in their original order
    order = (~keep).to(torch.uint8).argsort(dim=1, stable=True)[:, : int(counts[0])]
    index = order.view(*order.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, index)


def gather_visible(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Tokens of ``x`` ``(B, N, ...)`` where ``mask`` ``(B, N)`` is False, in original order.

    The encoder input of every masked video model (MAE/VideoMAE, SimVTP Sec. 3.2, UMT Sec. 3.1):
    returns ``(B, N_visible, ...)``. Each sample must have the same number of visible tokens
    (true for random, tube, block and semantic masks).
    """
    return _gather_where(x, ~mask.bool(), "visible")


def gather_masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Tokens of ``x`` ``(B, N, ...)`` where ``mask`` is True, in original order.

    Selects the reconstruction targets of masked positions (SimVTP Sec. 3.2):
    ``(B, N_masked, ...)``; same count per sample required.
    """
    return _gather_where(x, mask.bool(), "masked")
