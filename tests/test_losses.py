"""vlbook.losses against hand-computed cases, explicit loops and small learning runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vlbook import losses as L
from vlbook.masking import gather_masked, tube_mask


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def nll(positive: float, others: list[float]) -> float:
    """-log(exp(positive) / (exp(positive) + sum exp(others))), written out."""
    return -math.log(math.exp(positive) / (math.exp(positive) + sum(math.exp(o) for o in others)))


# --------------------------------------------------------------------------------------------
# VTC
# --------------------------------------------------------------------------------------------

VIDEO = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
TEXT = torch.tensor([[1.0, 0.0], [0.6, 0.8]])  # similarities [[1, 0.6], [0, 0.8]]


def test_vtc_two_by_two_by_hand():
    v2t = (nll(1.0, [0.6]) + nll(0.8, [0.0])) / 2  # rows: each video against both texts
    t2v = (nll(1.0, [0.0]) + nll(0.8, [0.6])) / 2  # columns: each text against both videos
    out = L.vtc_loss(VIDEO, TEXT, temperature=1.0, normalize=False, combine="sum")
    assert out.video_to_text.item() == pytest.approx(v2t, abs=1e-6)
    assert out.text_to_video.item() == pytest.approx(t2v, abs=1e-6)
    assert out.loss.item() == pytest.approx(v2t + t2v, abs=1e-6)
    mean = L.vtc_loss(VIDEO, TEXT, temperature=1.0, normalize=False, combine="mean")
    assert mean.loss.item() == pytest.approx((v2t + t2v) / 2, abs=1e-6)
    one_way = L.vtc_loss(VIDEO, TEXT, temperature=1.0, normalize=False, directions="text_to_video")
    assert one_way.video_to_text is None and one_way.loss.item() == pytest.approx(t2v, abs=1e-6)
    hot = L.vtc_loss(VIDEO, TEXT, temperature=0.5, normalize=False, directions="video_to_text")
    assert hot.loss.item() == pytest.approx((nll(2.0, [1.2]) + nll(1.6, [0.0])) / 2, abs=1e-6)


def test_vtc_cosine_is_scale_invariant_raw_dot_product_is_not():
    a = L.vtc_loss(VIDEO, TEXT, temperature=0.05).loss
    b = L.vtc_loss(3 * VIDEO, 0.5 * TEXT, temperature=0.05).loss
    assert a.item() == pytest.approx(b.item(), rel=1e-5)
    raw = L.vtc_loss(3 * VIDEO, TEXT, temperature=1.0, normalize=False).loss
    assert raw.item() != pytest.approx(
        L.vtc_loss(VIDEO, TEXT, temperature=1.0, normalize=False).loss.item()
    )


def test_vtc_soft_targets_for_shared_video_ids():
    # both captions describe the same clip: each row's target is (1/2, 1/2)
    out = L.vtc_loss(
        VIDEO, TEXT, temperature=1.0, normalize=False, ids=torch.tensor([7, 7]), combine="sum"
    )

    def row(a: float, b: float) -> float:  # soft target (1/2, 1/2) over two logits
        log_z = math.log(math.exp(a) + math.exp(b))
        return -0.5 * (a - log_z) - 0.5 * (b - log_z)

    v2t = (row(1.0, 0.6) + row(0.0, 0.8)) / 2
    t2v = (row(1.0, 0.0) + row(0.6, 0.8)) / 2
    assert out.loss.item() == pytest.approx(v2t + t2v, abs=1e-6)
    distinct = L.vtc_loss(VIDEO, TEXT, temperature=1.0, normalize=False, ids=torch.tensor([1, 2]))
    plain = L.vtc_loss(VIDEO, TEXT, temperature=1.0, normalize=False)
    assert distinct.loss.item() == pytest.approx(plain.loss.item())


def test_vtc_gather_in_one_process_and_learnable_temperature():
    v, t = torch.randn(6, 8, generator=gen()), torch.randn(6, 8, generator=gen(1))
    tau = L.LearnableTemperature()
    out = L.vtc_loss(v, t, temperature=tau(), gather=True, combine="mean")
    assert out.loss.item() == pytest.approx(
        L.vtc_loss(v, t, temperature=0.07, combine="mean").loss.item()
    )
    out.loss.backward()
    assert tau.temperature.grad is not None and tau.temperature.grad.abs() > 0
    with torch.no_grad():
        tau.temperature.fill_(3.0)
    assert tau().item() == pytest.approx(0.5)  # clamped to UMT's [0.001, 0.5]


def test_vtc_bad_input():
    with pytest.raises(ValueError, match="paired row by row"):
        L.vtc_loss(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match="directions"):
        L.vtc_loss(VIDEO, TEXT, directions="left")
    with pytest.raises(ValueError, match="ids"):
        L.vtc_loss(VIDEO, TEXT, ids=torch.tensor([1, 2, 3]))


def test_vtc_learns_to_align_paired_features():
    torch.manual_seed(0)
    video_in, text_in = torch.randn(32, 16), torch.randn(32, 16)
    video_proj, text_proj = torch.nn.Linear(16, 8), torch.nn.Linear(16, 8)
    opt = torch.optim.Adam([*video_proj.parameters(), *text_proj.parameters()], lr=0.05)
    first = None
    for _ in range(60):
        out = L.vtc_loss(video_proj(video_in), text_proj(text_in), temperature=0.1)
        first = out.loss.item() if first is None else first
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    accuracy = (out.logits.argmax(dim=1) == torch.arange(32)).float().mean().item()
    assert out.loss.item() < 0.3 * first and accuracy > 0.9


# --------------------------------------------------------------------------------------------
# VTM
# --------------------------------------------------------------------------------------------


def test_vtm_loss_is_two_way_cross_entropy():
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    labels = torch.tensor([1, 0])
    assert L.vtm_loss(logits, labels).item() == pytest.approx(
        (nll(2.0, [0.0]) + nll(1.0, [-1.0])) / 2, abs=1e-6
    )
    with pytest.raises(ValueError, match=r"\(M, 2\)"):
        L.vtm_loss(torch.zeros(2, 3), labels)


def test_hard_negatives_follow_softmax_and_skip_positives():
    sim = torch.tensor([[9.0, 0.0, math.log(3.0)], [0.0, 9.0, 0.0], [0.0, 0.0, 9.0]])
    sim = sim.expand(1, 3, 3)[0]
    picks = torch.stack([L.hard_negative_indices(sim, generator=gen(s)) for s in range(2000)])
    assert (picks != torch.arange(3)).all()  # never the positive on the diagonal
    assert (picks[:, 0] == 2).float().mean().item() == pytest.approx(0.75, abs=0.03)
    assert (picks[:, 1] == 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
    ids = torch.tensor([0, 0, 1])  # videos 0 and 1 show the same clip: both are positives
    picks = torch.stack([L.hard_negative_indices(sim, ids, generator=gen(s)) for s in range(50)])
    assert (picks[:, 0] == 2).all() and (picks[:, 1] == 2).all()
    with pytest.raises(ValueError, match="no negative"):
        L.hard_negative_indices(sim, torch.tensor([4, 4, 4]))


def test_hard_negatives_survive_softmax_underflow():
    sim = torch.tensor([[0.0, -1e4, -1e4], [-1e4, 0.0, -1e4], [-1e4, -1e4, 0.0]])
    picks = L.hard_negative_indices(sim, generator=gen())
    assert (picks != torch.arange(3)).all()


def test_random_negatives_and_pair_builders():
    picks = torch.stack([L.random_negative_indices(4, generator=gen(s)) for s in range(3000)])
    assert (picks != torch.arange(4)).all()
    assert (picks[:, 0] == 1).float().mean().item() == pytest.approx(1 / 3, abs=0.03)
    pairs = L.vtm_pairs_with_hard_negatives(torch.randn(5, 5), generator=gen())
    assert pairs.labels.tolist() == [1] * 5 + [0] * 10
    assert (pairs.video_index[:5] == pairs.text_index[:5]).all()
    assert (pairs.video_index[5:] != pairs.text_index[5:]).all()
    half = L.vtm_pairs_with_random_videos(8, torch.arange(8), generator=gen())
    assert int((half.labels == 0).sum()) == 4
    negative = half.labels == 0
    assert (half.video_index[negative] != half.text_index[negative]).all()
    assert (half.video_index[~negative] == half.text_index[~negative]).all()


# --------------------------------------------------------------------------------------------
# MLM, VLM masked token loss and MFM-MLM
# --------------------------------------------------------------------------------------------


def test_mlm_loss_only_counts_labelled_positions():
    logits = torch.randn(2, 3, 5, generator=gen(), requires_grad=True)
    labels = torch.tensor([[-100, 4, -100], [1, -100, -100]])
    expected = (
        F.cross_entropy(logits[0, 1:2], labels[0, 1:2])
        + F.cross_entropy(logits[1, 0:1], labels[1, 0:1])
    ) / 2
    assert L.mlm_loss(logits, labels).item() == pytest.approx(expected.item(), abs=1e-6)
    empty = L.mlm_loss(logits, torch.full((2, 3), -100))
    assert empty.item() == 0.0
    empty.backward()  # no NaN, graph intact
    assert torch.equal(logits.grad, torch.zeros_like(logits))


def _token_case(seed: int = 0):
    g = gen(seed)
    d, vocab = 4, 6
    return {
        "video_hidden": torch.randn(2, d, generator=g, requires_grad=True),
        "video_targets": torch.randn(2, d, generator=g, requires_grad=True),
        "unmasked_video": torch.randn(3, d, generator=g),
        "text_hidden": torch.randn(3, d, generator=g),
        "text_labels": torch.tensor([5, 0, 2]),
        "word_embeddings": torch.randn(vocab, d, generator=g),
        "vocab_bias": torch.randn(vocab, generator=g),
    }


def _loop_masked_token_loss(case, zero_logit: bool) -> float:
    """Eq. 8-9 token by token, with plain Python sums."""
    words = case["word_embeddings"].tolist()
    bias = case["vocab_bias"].tolist()
    unmasked = case["unmasked_video"].tolist()
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    terms = []
    for e, x in zip(case["video_hidden"].tolist(), case["video_targets"].tolist()):
        others = [dot(e, u) for u in unmasked] + [dot(e, w) + b for w, b in zip(words, bias)]
        terms.append(nll(dot(e, x), others))
    for e, s in zip(case["text_hidden"].tolist(), case["text_labels"].tolist()):
        vocab_scores = [dot(e, w) + b for w, b in zip(words, bias)]
        others = [dot(e, u) for u in unmasked]
        others += [v for k, v in enumerate(vocab_scores) if k != s]  # D minus s
        others += [0.0] if zero_logit else []
        terms.append(nll(vocab_scores[s], others))
    return sum(terms) / len(terms)


@pytest.mark.parametrize("zero_logit", [True, False])
def test_masked_token_loss_equals_explicit_loop(zero_logit):
    case = _token_case()
    out = L.masked_token_loss(**case, text_zero_logit=zero_logit)
    assert out.loss.item() == pytest.approx(_loop_masked_token_loss(case, zero_logit), abs=1e-5)
    assert (out.num_video_tokens, out.num_text_tokens) == (2, 3)
    combined = (2 * out.video_loss + 3 * out.text_loss) / 5
    assert out.loss.item() == pytest.approx(combined.item(), abs=1e-6)
    out.loss.backward()
    assert case["video_targets"].grad.abs().sum() > 0  # MMPT does not detach the targets


def test_masked_token_loss_with_no_masked_video_tokens():
    case = _token_case()
    case["video_hidden"] = torch.zeros(0, 4, requires_grad=True)
    case["video_targets"] = torch.zeros(0, 4)
    out = L.masked_token_loss(**case)
    text_only = dict(case)
    assert out.num_video_tokens == 0 and out.video_loss.item() == 0.0
    assert out.loss.item() == pytest.approx(_loop_masked_token_loss(text_only, True), abs=1e-5)
    with pytest.raises(ValueError, match="video_targets"):
        L.masked_token_loss(**{**case, "video_targets": torch.zeros(1, 4)})


def test_mfm_mlm_loss_is_two_separate_losses():
    case = _token_case(1)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    unmasked = case["unmasked_video"].tolist()
    mfm = [
        nll(dot(e, x), [dot(e, u) for u in unmasked])  # Eq. 6: only non-masked video tokens
        for e, x in zip(case["video_hidden"].tolist(), case["video_targets"].tolist())
    ]
    scores = case["text_hidden"] @ case["word_embeddings"].T + case["vocab_bias"]
    mlm = F.cross_entropy(scores, case["text_labels"]).item()
    out = L.mfm_mlm_loss(**case)
    assert out.video_loss.item() == pytest.approx(sum(mfm) / 2, abs=1e-5)
    assert out.text_loss.item() == pytest.approx(mlm, abs=1e-5)
    assert out.loss.item() == pytest.approx(sum(mfm) / 2 + mlm, abs=1e-5)  # Eq. 7


# --------------------------------------------------------------------------------------------
# pixels
# --------------------------------------------------------------------------------------------


def test_patchify_order_and_round_trip():
    video = torch.arange(1 * 4 * 3 * 8 * 8, dtype=torch.float).view(1, 4, 3, 8, 8)
    tokens = L.patchify_video(video, tubelet=2, patch=4)
    assert tokens.shape == (1, 2 * 2 * 2, 2 * 4 * 4 * 3)
    # token 1 = (t'=0, h'=0, w'=1); first pixel (dt=0, dy=0, dx=0), channels fastest
    assert tokens[0, 1, :3].tolist() == video[0, 0, :, 0, 4].tolist()
    # token 2 = (t'=0, h'=1, w'=0); element 3 = (dt=0, dy=0, dx=1, c=0)
    assert tokens[0, 2, 3].item() == video[0, 0, 0, 4, 1].item()
    # token 4 = (t'=1, ...); the second frame of the tubelet comes after 4*4*3 values
    assert tokens[0, 4, 48].item() == video[0, 3, 0, 0, 0].item()
    assert torch.equal(L.unpatchify_video(tokens, (2, 2, 2), 2, 4), video)
    with pytest.raises(ValueError, match="divisible"):
        L.patchify_video(video, tubelet=3, patch=4)


def test_normalized_pixel_targets_match_hand_computation():
    video = torch.randn(2, 4, 3, 8, 8, generator=gen())
    targets = L.normalized_pixel_targets(video, 2, 4)
    mean = torch.tensor(L.IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(L.IMAGENET_STD).view(1, 1, 3, 1, 1)
    pixels = video * std + mean
    # token 0 of sample 1, channel 2: frames 0-1, rows 0-3, cols 0-3
    values = pixels[1, 0:2, 2, 0:4, 0:4].reshape(-1)
    expected = (values - values.mean()) / (values.std(unbiased=True) + 1e-6)
    assert torch.allclose(targets[1, 0].view(-1, 3)[:, 2], expected, atol=1e-5)
    per_channel = targets.view(2, 8, 32, 3)
    assert torch.allclose(per_channel.mean(dim=2), torch.zeros(2, 8, 3), atol=1e-5)
    assert torch.allclose(per_channel.std(dim=2), torch.ones(2, 8, 3), atol=1e-4)


def test_normalized_pixel_mse_on_masked_tubes():
    video = torch.randn(2, 4, 3, 8, 8, generator=gen())
    mask = tube_mask(2, (2, 2, 2), 0.5, generator=gen())
    targets = gather_masked(L.normalized_pixel_targets(video, 2, 4), mask)
    assert L.normalized_pixel_mse(targets, video, mask, 2, 4).item() == pytest.approx(0, abs=1e-9)
    off = targets + 0.5
    assert L.normalized_pixel_mse(off, video, mask, 2, 4).item() == pytest.approx(0.25, abs=1e-6)
    with pytest.raises(ValueError, match="N_masked"):
        L.normalized_pixel_mse(torch.zeros(2, 8, 96), video, mask, 2, 4)


# --------------------------------------------------------------------------------------------
# UMT alignment
# --------------------------------------------------------------------------------------------


def test_unmasked_token_alignment_by_hand():
    s = torch.tensor([[[1.0, 0.0], [2.0, 0.0]]])  # (B=1, N=2, D=2)
    t = torch.tensor([[[0.0, 5.0], [1.0, 0.0]]])  # orthogonal, then parallel
    out = L.unmasked_token_alignment([s, s], [t, s])
    assert out.per_layer[0].item() == pytest.approx((2.0 + 0.0) / 2)
    assert out.per_layer[1].item() == pytest.approx(0.0)
    assert out.loss.item() == pytest.approx(0.5)
    # 2 - 2cos equals the squared error of the unit vectors
    a, b = torch.randn(2, 5, 8, generator=gen()), torch.randn(2, 5, 8, generator=gen(1))
    squared = (F.normalize(a, dim=-1) - F.normalize(b, dim=-1)).pow(2).sum(-1).mean()
    assert L.unmasked_token_alignment(a, b).loss.item() == pytest.approx(squared.item(), abs=1e-6)


def test_unmasked_token_alignment_selects_teacher_visible_tokens():
    teacher = torch.randn(2, 6, 4, generator=gen())
    mask = torch.tensor([[True, False, True, False, True, False]] * 2)
    student = teacher[:, [1, 3, 5]].clone().requires_grad_()
    out = L.unmasked_token_alignment([student], [teacher], visible_mask=mask)
    assert out.loss.item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="layer 0"):
        L.unmasked_token_alignment([student], [teacher])


# --------------------------------------------------------------------------------------------
# E-ViLM focal loss and vector quantiser
# --------------------------------------------------------------------------------------------


def test_focal_loss_eq6_by_hand_and_bce_limit():
    logits = torch.tensor([[0.0, 0.0]])  # p = 0.5 for both words
    targets = torch.tensor([[1.0, 0.0]])
    # -(1/K) [log 0.5 + 0.5 * log 0.5] with K = 2
    expected = -(math.log(0.5) + 0.5 * math.log(0.5)) / 2
    assert L.focal_loss(logits, targets).item() == pytest.approx(expected, abs=1e-6)
    z = torch.randn(4, 10, generator=gen())
    y = (torch.rand(4, 10, generator=gen(1)) < 0.2).float()
    bce = F.binary_cross_entropy_with_logits(z, y)
    assert L.focal_loss(z, y, gamma_negative=0.0).item() == pytest.approx(bce.item(), abs=1e-6)
    # easy negatives weigh less than in BCE
    assert L.focal_loss(z, y).item() < bce.item()


def test_vector_quantizer_nearest_code_and_straight_through():
    vq = L.VectorQuantizer(num_codes=3, dim=2, l2_normalize=False)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    z = torch.tensor([[0.9, 0.2], [0.1, 0.7], [-2.0, -0.5]], requires_grad=True)
    out = vq(z)
    assert out.codes.tolist() == [0, 1, 2]
    assert torch.equal(out.quantized.detach(), vq.codebook.detach())
    upstream = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    (out.quantized * upstream).sum().backward()
    assert torch.equal(z.grad, upstream)  # gradient copied straight through the look-up
    diff = (torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]) - z.detach()).pow(2).sum(-1)
    assert out.codebook_loss.item() == pytest.approx(diff.mean().item())
    assert out.commitment_loss.item() == pytest.approx(diff.mean().item())
    assert out.usage_rate.item() == pytest.approx(1.0)
    assert out.perplexity.item() == pytest.approx(3.0, abs=1e-5)


def test_vector_quantizer_loss_terms_feed_different_sides():
    vq = L.VectorQuantizer(num_codes=4, dim=3)
    z = torch.randn(5, 3, generator=gen(), requires_grad=True)
    vq(z).codebook_loss.backward()
    assert z.grad is None and vq.codebook.grad.abs().sum() > 0  # sg[E(x)]
    vq.codebook.grad = None
    vq(z).commitment_loss.backward()
    assert vq.codebook.grad is None and z.grad.abs().sum() > 0  # sg[c]


def test_vector_quantizer_l2_normalised_lookup_and_usage():
    vq = L.VectorQuantizer(num_codes=4, dim=2)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[10.0, 0.0], [0.0, 0.1], [-1.0, 0.0], [0.0, -1.0]]))
    # by cosine, not by raw distance: (0, 3) is closest to the tiny code (0, 0.1)
    out = vq(torch.tensor([[[0.0, 3.0], [5.0, 0.1]]]))
    assert out.codes.tolist() == [[1, 0]]
    assert out.quantized.norm(dim=-1).allclose(torch.ones(1, 2))
    assert out.usage_rate.item() == pytest.approx(0.5)
    usage = L.CodebookUsage(4)
    usage.update(torch.tensor([0, 1, 1]))
    usage.update(torch.tensor([[0]]))
    assert usage.usage_rate == pytest.approx(0.5)
    assert usage.perplexity == pytest.approx(2.0, abs=1e-5)  # two codes used equally
    with pytest.raises(ValueError, match="codes must be"):
        usage.update(torch.tensor([4]))
    with pytest.raises(ValueError, match="last dim"):
        vq(torch.zeros(2, 3))


def test_vector_quantizer_codebook_learns_the_data():
    torch.manual_seed(0)
    centres = F.normalize(torch.randn(4, 8), dim=-1)
    data = F.normalize(centres.repeat(50, 1) + 0.05 * torch.randn(200, 8), dim=-1)
    vq = L.VectorQuantizer(num_codes=16, dim=8)
    opt = torch.optim.SGD(vq.parameters(), lr=0.5)
    first = vq(data).codebook_loss.item()
    for _ in range(100):
        out = vq(data)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    assert out.codebook_loss.item() < 0.2 * first
