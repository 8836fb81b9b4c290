"""Retrieval metrics, protocols and the faiss path (vlbook.eval.retrieval)."""

from __future__ import annotations

import pytest
import torch

from vlbook.eval import (
    RetrievalProtocol,
    dual_softmax,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    retrieval_table,
)

# 4 texts, 3 videos; texts 0 and 1 both describe video 0.
SIM = torch.tensor([
    [0.9, 0.1, 0.5],
    [0.2, 0.8, 0.2],
    [0.3, 0.3, 0.9],
    [0.1, 0.2, 0.7],
])
T2V = torch.tensor([0, 0, 1, 2])


@pytest.mark.parametrize("policy, t1_rank", [("optimistic", 2.0), ("pessimistic", 3.0),
                                              ("average", 2.5)])
def test_hand_computed_ranks_and_tie_policies(policy, t1_rank):
    res = retrieval_metrics(SIM, T2V, RetrievalProtocol(tie_policy=policy))
    # text 1: one video scores higher (0.8); its own video ties with video 2 at 0.2
    # text 2: one higher (0.9); ties with video 0 at 0.3
    assert res.t2v_ranks.tolist() == [1.0, t1_rank, t1_rank, 1.0]
    # video 0: best caption is text 0 (0.9) -> 1; video 1: text 1 scores 0.8 > 0.3 -> 2;
    # video 2: text 2 scores 0.9 > 0.7 -> 2. No ties in that direction.
    assert res.v2t_ranks.tolist() == [1.0, 2.0, 2.0]
    assert res.t2v["R@1"] == pytest.approx(50.0)
    assert res.t2v["MdR"] == pytest.approx((1 + t1_rank) / 2)
    assert res.t2v["MnR"] == pytest.approx((2 + 2 * t1_rank) / 4)
    assert res.v2t["R@1"] == pytest.approx(100 / 3)
    assert res.v2t["R@5"] == pytest.approx(100.0)
    assert res.v2t["MdR"] == 2.0


def test_fraction_units_and_card():
    res = retrieval_metrics(SIM, T2V, RetrievalProtocol(split="1k-A", dataset="msrvtt"),
                            units="fraction")
    assert res.t2v["R@1"] == pytest.approx(0.5)
    card = res.card()
    for piece in ("dataset=msrvtt", "split=1k-A", "captions=all", "dual-softmax=off",
                  "re-rank=off", "ties=optimistic", "fraction", "4 texts x 3 videos"):
        assert piece in card
    assert "protocol:" in str(res) and "| T2V |" in str(res)


def test_matches_sorting_definition_on_random_scores():
    torch.manual_seed(0)
    sim = torch.randn(60, 25)
    t2v = torch.randint(0, 25, (60,))
    t2v[:25] = torch.arange(25)  # every video has a caption
    res = retrieval_metrics(sim, t2v)
    order = sim.argsort(dim=1, descending=True)
    expected_t2v = (order == t2v[:, None]).float().argmax(1) + 1
    assert torch.equal(res.t2v_ranks.long(), expected_t2v)
    order_v = sim.t().argsort(dim=1, descending=True)  # (videos, texts)
    expected_v2t = torch.stack([
        (t2v[order_v[v]] == v).float().argmax() + 1 for v in range(25)
    ])
    assert torch.equal(res.v2t_ranks.long(), expected_v2t)


def test_first_caption_policy_uses_one_query_per_video():
    res = retrieval_metrics(SIM, T2V, RetrievalProtocol(captions_per_video="first"))
    assert res.num_texts == 3
    assert res.t2v_ranks.tolist() == [1.0, 2.0, 1.0]  # texts 0, 2, 3


def test_dual_softmax_definition_and_protocol():
    sim = torch.tensor([[1.0, 0.0], [0.5, 0.2]])
    out = dual_softmax(sim, temperature=1.0, dim=0)
    prior_col0 = torch.softmax(torch.tensor([1.0, 0.5]), 0)
    torch.testing.assert_close(out[:, 0], sim[:, 0] * prior_col0)
    # a "hub" video that every text likes loses the texts it does not own
    hub = torch.tensor([[0.90, 0.80], [0.95, 0.10]])
    t2v = torch.tensor([1, 0])
    plain = retrieval_metrics(hub, t2v)
    dsl = retrieval_metrics(hub, t2v, RetrievalProtocol(dual_softmax=True,
                                                        dual_softmax_temperature=0.05))
    assert plain.t2v["R@1"] == pytest.approx(50.0)
    assert dsl.t2v["R@1"] == pytest.approx(100.0)
    assert "dual-softmax=on" in dsl.card()


def test_rerank_top_k_puts_rescored_candidates_first():
    calls = []

    def head(texts, videos):
        calls.append(len(texts))
        return (T2V[texts] == videos).double()  # a perfect matching head

    full = retrieval_metrics(SIM, T2V, RetrievalProtocol(rerank_top_k=3), rerank_fn=head)
    assert full.t2v["R@1"] == 100.0 and full.v2t["R@1"] == 100.0
    assert calls == [4 * 3, 3 * 3]
    top1 = retrieval_metrics(SIM, T2V, RetrievalProtocol(rerank_top_k=1), rerank_fn=head)
    # text 1: its top-1 (video 1, head score 0) stays ahead of its own video (score 0.2)
    assert top1.t2v_ranks.tolist() == [1.0, 2.0, 2.0, 1.0]
    with pytest.raises(ValueError, match="rerank_fn"):
        retrieval_metrics(SIM, T2V, RetrievalProtocol(rerank_top_k=2))


@pytest.mark.parametrize("policy", ["optimistic", "pessimistic", "average"])
def test_faiss_gives_the_same_ranks_with_many_ties(policy):
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(policy.__len__())
    # small integer embeddings: exact dot products in float32, and many exact ties
    videos = torch.randint(-1, 2, (300, 4), generator=gen).float()
    t2v = torch.cat([torch.arange(300), torch.randint(0, 300, (100,), generator=gen)])
    texts = videos[t2v] + torch.randint(-1, 2, (400, 4), generator=gen).float()
    proto = RetrievalProtocol(tie_policy=policy)
    dense = retrieval_metrics_from_embeddings(texts, videos, t2v, proto, backend="dense")
    fast = retrieval_metrics_from_embeddings(texts, videos, t2v, proto, backend="faiss",
                                             faiss_top_k=16)
    assert torch.equal(dense.t2v_ranks, fast.t2v_ranks)
    assert torch.equal(dense.v2t_ranks, fast.v2t_ranks)
    assert dense.as_dict() == pytest.approx(fast.as_dict())
    # both paths ran: ranks found by the top-16 search and ranks counted exactly beyond it
    assert (dense.t2v_ranks <= 16).any() and (dense.t2v_ranks > 16).any()


def test_faiss_rejects_full_matrix_protocols():
    pytest.importorskip("faiss")
    with pytest.raises(ValueError, match="faiss backend"):
        retrieval_metrics_from_embeddings(torch.randn(3, 2), torch.randn(3, 2),
                                          torch.arange(3), RetrievalProtocol(dual_softmax=True),
                                          backend="faiss")


def test_table_refuses_mixed_protocols_and_units():
    a = retrieval_metrics(SIM, T2V)
    b = retrieval_metrics(SIM * 2, T2V)
    table = retrieval_table({"model A": a, "model B": b})
    assert list(table.columns) == ["model A", "model B"]
    assert table.loc["t2v/R@1", "model A"] == pytest.approx(50.0)
    assert "ties=optimistic" in table.attrs["protocol"]
    c = retrieval_metrics(SIM, T2V, RetrievalProtocol(tie_policy="average"))
    with pytest.raises(ValueError, match="different evaluation protocols"):
        retrieval_table({"model A": a, "model C": c})
    with pytest.raises(ValueError, match="different evaluation protocols"):
        retrieval_table({"model A": a, "fractions": retrieval_metrics(SIM, T2V, units="fraction")})


def test_bad_inputs_raise_clear_errors_and_warn_on_uncaptioned_videos():
    with pytest.raises(ValueError, match="text_to_video must be"):
        retrieval_metrics(SIM, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"values must be in \[0, 3\)"):
        retrieval_metrics(SIM, torch.tensor([0, 1, 2, 3]))
    with pytest.raises(ValueError, match="sim must be"):
        retrieval_metrics(torch.randn(4), T2V)
    with pytest.raises(ValueError, match="tie_policy"):
        RetrievalProtocol(tie_policy="random")
    with pytest.warns(UserWarning, match="1 of 3 videos have no caption"):
        res = retrieval_metrics(SIM, torch.tensor([0, 0, 1, 1]))
    assert len(res.v2t_ranks) == 2
