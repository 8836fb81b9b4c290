"""vlbook.masking: exact counts, distributions, reproducibility, special tokens, bad input."""

from __future__ import annotations

import pytest
import torch

from vlbook import masking as M


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------------------------
# random / tube / block / semantic
# --------------------------------------------------------------------------------------------


def test_random_mask_exact_count_and_uniform_positions():
    mask = M.random_mask(4000, 10, 0.75, generator=gen())
    assert mask.dtype == torch.bool and mask.shape == (4000, 10)
    assert (mask.sum(dim=1) == 7).all()  # int(0.75 * 10) = 7 per sample
    # every position is equally likely: 7/10 of the samples hide it
    assert torch.allclose(mask.float().mean(dim=0), torch.full((10,), 0.7), atol=0.03)


def test_samplers_are_reproducible_from_a_generator():
    for sample in (
        lambda g: M.random_mask(3, 50, 0.5, generator=g),
        lambda g: M.tube_mask(3, (2, 4, 4), 0.5, generator=g),
        lambda g: M.block_mask(3, (2, 8, 8), 0.4, generator=g),
        lambda g: M.semantic_mask(torch.ones(3, 2, 16), 0.5, generator=g),
    ):
        assert torch.equal(sample(gen(7)), sample(gen(7)))
        assert not torch.equal(sample(gen(7)), sample(gen(8)))


def test_tube_mask_is_identical_on_every_frame_with_simvtp_count():
    mask = M.tube_mask(3, (8, 14, 14), 0.9, generator=gen())
    frames = mask.view(3, 8, 196)
    assert (frames == frames[:, :1]).all()  # same spatial positions on every temporal slice
    assert (frames.sum(dim=-1) == 176).all()  # int(0.9 * 196), SimVTP / VideoMAE
    assert not torch.equal(frames[0, 0], frames[1, 0])  # but independent across samples


def _masked_neighbour_fraction(mask: torch.Tensor, h: int, w: int) -> float:
    grid = mask.view(-1, h, w).float()
    padded = torch.nn.functional.pad(grid, (1, 1, 1, 1))
    neighbours = (
        padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
    )
    return float(((neighbours > 0) & (grid > 0)).sum() / grid.sum())


def test_block_mask_exact_count_and_contiguous_blocks():
    mask = M.block_mask(64, (4, 14, 14), 0.4, generator=gen())
    per_frame = mask.view(64, 4, 196)
    assert (per_frame.sum(dim=-1) == int(0.4 * 196)).all()
    assert not (per_frame == per_frame[:, :1]).all()  # per_frame=True: frames differ
    blockwise = _masked_neighbour_fraction(mask, 14, 14)
    scattered = _masked_neighbour_fraction(M.random_mask(256, 196, 0.4, generator=gen()), 14, 14)
    # a masked token of a block almost always touches another masked one; random ones far less
    assert blockwise > 0.97 and blockwise > scattered + 0.1


def test_block_mask_shared_over_frames_and_small_grids():
    mask = M.block_mask(5, (3, 8, 8), 0.4, per_frame=False, generator=gen())
    frames = mask.view(5, 3, 64)
    assert (frames == frames[:, :1]).all() and (frames.sum(-1) == 25).all()
    tiny = M.block_mask(20, (1, 3, 3), 0.5, generator=gen())  # no 16-token block fits: top-up
    assert (tiny.sum(dim=1) == 4).all()


def test_semantic_mask_keeps_umt_count_per_frame():
    attention = torch.softmax(torch.randn(2, 8, 196, generator=gen()), dim=-1)
    mask = M.semantic_mask(attention, 0.8, generator=gen())
    assert mask.shape == (2, 8 * 196)
    assert ((~mask).view(2, 8, 196).sum(-1) == 40).all()  # 196 - int(0.8 * 196) = 40 visible


def test_semantic_mask_keeps_only_attended_tokens_when_attention_is_sparse():
    attention = torch.zeros(1, 2, 10)
    attention[0, 0, [1, 4, 7]] = torch.tensor([0.2, 0.5, 0.3])
    attention[0, 1, [0, 2, 9]] = 1.0
    mask = M.semantic_mask(attention, 0.7, generator=gen())  # 10 - int(7.0) = 3 visible
    visible = (~mask).view(2, 10)
    assert visible[0].nonzero().flatten().tolist() == [1, 4, 7]
    assert visible[1].nonzero().flatten().tolist() == [0, 2, 9]


def test_semantic_mask_keeps_high_attention_tokens_more_often():
    weights = torch.ones(16)
    weights[:4] = 20.0  # four "object" tokens
    attention = (weights / weights.sum()).expand(2000, 1, 16)
    visible = ~M.semantic_mask(attention, 0.75, generator=gen())  # 4 of 16 visible
    keep_rate = visible.float().mean(dim=0)
    assert keep_rate[:4].min() > 0.75 and keep_rate[4:].max() < 0.15


def test_semantic_mask_rejects_bad_attention():
    with pytest.raises(ValueError, match=r"\(B, T, H'W'\)"):
        M.semantic_mask(torch.ones(4, 16), 0.5)
    with pytest.raises(ValueError, match="non-negative"):
        M.semantic_mask(-torch.ones(1, 1, 16), 0.5)
    sparse = torch.zeros(1, 1, 16)
    sparse[0, 0, 0] = 1.0
    with pytest.raises(ValueError, match="positive attention"):
        M.semantic_mask(sparse, 0.5)
    with pytest.raises(ValueError, match="ratio"):
        M.tube_mask(1, (1, 2, 2), 1.5)
    with pytest.raises(ValueError, match="grid"):
        M.block_mask(1, (2, 0, 4), 0.5)


def test_bernoulli_token_mask_respects_padding_and_per_example_probability():
    valid = torch.ones(3, 1000, dtype=torch.bool)
    valid[:, 900:] = False
    mask = M.bernoulli_token_mask(valid, torch.tensor([0.0, 1.0, 0.15]), generator=gen())
    assert not mask[:, 900:].any()
    assert mask[0].sum() == 0 and mask[1].sum() == 900
    assert abs(mask[2, :900].float().mean().item() - 0.15) < 0.04


# --------------------------------------------------------------------------------------------
# VLM masked modality model
# --------------------------------------------------------------------------------------------


def test_masked_modality_plan_paper_proportions():
    plan = M.masked_modality_plan(8, exact=True, generator=gen())
    assert int(plan.whole_video.sum()) == 2 and int(plan.whole_text.sum()) == 2
    assert int(plan.mfm_mlm.sum()) == 4
    assert not (plan.whole_video & plan.whole_text).any()
    # MMPT's two coin flips: 25 / 25 / 50 in expectation
    coin = M.masked_modality_plan(20000, generator=gen())
    assert abs(coin.whole_video.float().mean().item() - 0.25) < 0.015
    assert abs(coin.whole_text.float().mean().item() - 0.25) < 0.015
    assert not (coin.whole_video & coin.whole_text).any()


def test_modality_plan_probabilities():
    plan = M.ModalityPlan(
        whole_video=torch.tensor([True, False, False]),
        whole_text=torch.tensor([False, True, False]),
    )
    assert plan.video_probability(0.15).tolist() == pytest.approx([1.0, 0.0, 0.15])
    assert plan.text_probability(0.15).tolist() == pytest.approx([0.0, 1.0, 0.15])


# --------------------------------------------------------------------------------------------
# text masking
# --------------------------------------------------------------------------------------------

CLS, SEP, PAD, MASK, VOCAB = 101, 102, 0, 103, 30522


def _batch(n: int = 512, length: int = 40) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1000, 2000, (n, length), generator=gen(3))
    lengths = torch.randint(5, length + 1, (n,), generator=gen(4))
    positions = torch.arange(length).expand(n, length)
    ids[:, 0] = CLS
    ids[torch.arange(n), lengths - 1] = SEP
    ids[positions >= lengths.view(-1, 1)] = PAD
    return ids, (ids != PAD).long()


def test_text_masking_never_touches_special_or_padding_tokens():
    ids, attention = _batch()
    out = M.mask_text_tokens(
        ids, attention, mask_token_id=MASK, vocab_size=VOCAB, ratio=0.9,
        special_token_ids=(CLS, SEP, PAD), generator=gen(),
    )  # fmt: skip
    special = (ids == CLS) | (ids == SEP) | (ids == PAD)
    assert not out.mask[special].any()
    assert torch.equal(out.input_ids[special], ids[special])
    assert torch.equal(out.labels[out.mask], ids[out.mask])
    assert (out.labels[~out.mask] == -100).all()
    # UMT: only CLS and PAD excluded, so [SEP] can be masked
    umt = M.mask_text_tokens(
        ids, attention, mask_token_id=MASK, vocab_size=VOCAB, ratio=0.9,
        special_token_ids=(CLS, PAD), generator=gen(),
    )  # fmt: skip
    assert umt.mask[ids == SEP].any() and not umt.mask[(ids == CLS) | (ids == PAD)].any()


def test_bert_80_10_10_proportions_and_selection_rate():
    ids, attention = _batch(2000)
    out = M.mask_text_tokens(
        ids, attention, mask_token_id=MASK, vocab_size=VOCAB, ratio=0.15,
        special_token_ids=(CLS, SEP, PAD), generator=gen(),
    )  # fmt: skip
    maskable = (attention.bool()) & (ids != CLS) & (ids != SEP)
    assert abs(out.mask.sum().item() / maskable.sum().item() - 0.15) < 0.01
    selected = out.mask.sum().item()
    as_mask = (out.input_ids[out.mask] == MASK).sum().item() / selected
    unchanged = (out.input_ids[out.mask] == ids[out.mask]).sum().item() / selected
    assert abs(as_mask - 0.8) < 0.02
    assert abs(out.replaced_by_random.sum().item() / selected - 0.1) < 0.015
    # a random word can equal the original by chance (1/30522): "unchanged" is ~10%
    assert abs(unchanged - 0.1) < 0.015
    assert torch.equal(out.replaced_by_mask, out.input_ids.eq(MASK) & out.mask)


def test_all_mask_replacement_and_exact_counts():
    ids, attention = _batch(64)
    out = M.mask_text_tokens(
        ids, attention, mask_token_id=MASK, vocab_size=VOCAB, ratio=0.75, replace="all-mask",
        special_token_ids=(CLS, SEP, PAD), exact=True, generator=gen(),
    )  # fmt: skip
    assert (out.input_ids[out.mask] == MASK).all()  # SimVTP's code: 100% [MASK]
    maskable = (attention.bool() & (ids != CLS) & (ids != SEP)).sum(dim=1).float()
    expected = torch.round(maskable * 0.75).clamp(min=1).long()
    assert torch.equal(out.mask.sum(dim=1), expected)


def test_per_example_ratio_masks_whole_text_or_nothing():
    ids, attention = _batch(3)
    out = M.mask_text_tokens(
        ids, attention, mask_token_id=MASK, vocab_size=VOCAB,
        ratio=torch.tensor([1.0, 0.0, 0.15]), special_token_ids=(CLS, SEP, PAD), generator=gen(),
    )  # fmt: skip
    maskable = attention.bool() & (ids != CLS) & (ids != SEP)
    assert torch.equal(out.mask[0], maskable[0]) and not out.mask[1].any()


def test_whole_word_masking_masks_all_pieces_of_a_word():
    # 6 words of 1-3 pieces: [CLS] w0 w1 w1 w2 w3 w3 w3 w4 w5 w5 [SEP]
    word_ids = torch.tensor([[-1, 0, 1, 1, 2, 3, 3, 3, 4, 5, 5, -1]]).expand(3000, -1)
    ids = torch.arange(500, 512).expand(3000, -1).clone()
    ids[:, 0], ids[:, -1] = CLS, SEP
    out = M.mask_text_tokens(
        ids, torch.ones_like(ids), mask_token_id=MASK, vocab_size=VOCAB, ratio=0.3,
        special_token_ids=(CLS, SEP), word_ids=word_ids, generator=gen(),
    )  # fmt: skip
    for pieces in ([2, 3], [5, 6, 7], [9, 10]):
        chosen = out.mask[:, pieces]
        assert (chosen.all(dim=1) | ~chosen.any(dim=1)).all()  # all or none of the pieces
    word_rate = out.mask[:, [1, 2, 4, 5, 8, 9]].float().mean().item()
    assert abs(word_rate - 0.3) < 0.02  # per word, not per token
    assert not out.mask[:, [0, 11]].any()


def test_text_masking_bad_input():
    ids, attention = _batch(2)
    kwargs = {"mask_token_id": MASK, "vocab_size": VOCAB}
    with pytest.raises(ValueError, match="replace"):
        M.mask_text_tokens(ids, attention, replace=(0.5, 0.1, 0.1), **kwargs)
    with pytest.raises(ValueError, match="attention_mask shape"):
        M.mask_text_tokens(ids, attention[:, :3], **kwargs)
    with pytest.raises(ValueError, match=r"input_ids must be \(B, L\)"):
        M.mask_text_tokens(ids[0], **kwargs)
    with pytest.raises(ValueError, match="ratio"):
        M.mask_text_tokens(ids, attention, ratio=torch.tensor([0.1, 0.2, 0.3]), **kwargs)


def test_text_mask_ids_from_a_real_tokenizer():
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat", "runs"]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(words)})
    ids = M.text_mask_ids_from_tokenizer(tokenizer)
    assert ids["mask_token_id"] == 4 and ids["vocab_size"] == 8
    assert set(ids["special_token_ids"]) == {0, 1, 2, 3, 4}
    encoded = tokenizer(["a cat runs", "a cat"], padding=True, return_tensors="pt")
    out = M.mask_text_tokens(
        encoded["input_ids"], encoded["attention_mask"], ratio=1.0, generator=gen(), **ids
    )
    assert out.mask.tolist() == [
        [False, True, True, True, False],
        [False, True, True, False, False],
    ]


# --------------------------------------------------------------------------------------------
# gather helpers
# --------------------------------------------------------------------------------------------


def test_gather_visible_and_masked_keep_order():
    x = torch.arange(12.0).view(2, 6, 1).expand(2, 6, 3)
    mask = torch.tensor([[True, False, False, True, True, False], [False] * 3 + [True] * 3])
    visible = M.gather_visible(x, mask)
    assert visible[..., 0].tolist() == [[1, 2, 5], [6, 7, 8]]
    assert M.gather_masked(x, mask)[..., 0].tolist() == [[0, 3, 4], [9, 10, 11]]
    assert M.gather_visible(torch.arange(6).view(1, 6), mask[:1]).tolist() == [[1, 2, 5]]
    with pytest.raises(ValueError, match="same number of visible"):
        M.gather_visible(x, torch.tensor([[True] * 6, [False] * 6]))
    with pytest.raises(ValueError, match="mask shape"):
        M.gather_visible(x, mask[:, :5])
