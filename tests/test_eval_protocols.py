"""The three repositories' retrieval conventions, on tied similarity matrices.

Frozen-in-Time (SimVTP, All-in-one): optimistic text-to-video ties, averaged video-to-text
ties, percent. MMPT (VLM): every tied position is an entry of the metric. UMT (BLIP lineage):
positions in numpy.argsort(scores)[::-1]. Hand-computed on a 4x4 example, and checked against
independent per-query loops on random quantised matrices with several captions per video."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlbook.eval.retrieval import (
    OFFICIAL_PROTOCOLS,
    official_protocol,
    protocol_comparison,
    retrieval_metrics,
    retrieval_metrics_from_embeddings,
    tied_example,
)


def _metrics(name, sim, t2v, **kw):
    protocol, units = official_protocol(name, **kw)
    return retrieval_metrics(sim, t2v, protocol, units=units, ks=(1, 5))


def test_tied_example_by_hand():
    sim, t2v = tied_example()
    # Frozen-in-Time t2v, optimistic: every text has its video among the top score -> rank 1
    frozen = _metrics("frozen-in-time", sim, t2v)
    assert frozen.t2v["R@1"] == 100.0 and frozen.units == "percent"
    # v2t, averaged: video 1's caption (0.5) has 0.9 and 0.7 above it -> rank 3; others 1
    assert frozen.v2t_ranks.tolist() == [1.0, 3.0, 1.0, 1.0]
    # MMPT: ranks {1,2}, {1,2,3,4}, {1,2}, {1}: 9 entries, 4 at rank 1; median 2
    mmpt = _metrics("mmpt", sim, t2v)
    assert mmpt.t2v_ranks.tolist() == [1, 2, 1, 2, 3, 4, 1, 2, 1]
    assert mmpt.t2v["R@1"] == pytest.approx(4 / 9) and mmpt.t2v["MdR"] == 2.0
    assert mmpt.units == "fraction"
    table = protocol_comparison()
    assert list(table.index) == list(OFFICIAL_PROTOCOLS)
    assert table.loc["mmpt", "t2v R@1 (%)"] == pytest.approx(400 / 9)
    assert table.loc["frozen-in-time", "t2v R@1 (%)"] == 100.0


def test_card_names_both_tie_policies_and_the_convention():
    protocol, _ = official_protocol("frozen-in-time", split="1k-A")
    card = protocol.card()
    assert "convention=frozen-in-time" in card and "ties=optimistic t2v / average v2t" in card
    assert "split=1k-A" in card
    with pytest.raises(ValueError, match="known: "):
        official_protocol("clip4clip")


def _quantised(seed, texts=12, videos=6):
    g = torch.Generator().manual_seed(seed)
    sim = (torch.rand(texts, videos, generator=g) * 4).round() / 4  # 5 levels: many ties
    t2v = torch.arange(texts) % videos  # two captions per video
    return sim.float(), t2v


@pytest.mark.parametrize("seed", range(5))
def test_umt_convention_is_the_position_in_numpy_argsort(seed):
    sim, t2v = _quantised(seed)
    result = _metrics("umt", sim, t2v)
    s = sim.numpy()
    t2v_ref, v2t_ref = [], []
    for i, row in enumerate(s):  # UMT: position of the video in argsort(row)[::-1]
        order = list(np.argsort(row)[::-1])
        t2v_ref.append(order.index(int(t2v[i])) + 1)
    for v, col in enumerate(s.T):  # best position among the video's captions
        order = list(np.argsort(col)[::-1])
        v2t_ref.append(min(order.index(i) for i in range(len(t2v)) if int(t2v[i]) == v) + 1)
    assert result.t2v_ranks.tolist() == t2v_ref and result.v2t_ranks.tolist() == v2t_ref
    assert result.t2v["R@1"] == pytest.approx(100 * np.mean(np.array(t2v_ref) == 1))


@pytest.mark.parametrize("seed", range(5))
def test_mmpt_convention_counts_every_tied_position(seed):
    sim, _ = _quantised(seed, texts=8, videos=8)
    t2v = torch.arange(8)  # MMPT: one caption per video, the diagonal
    result = _metrics("mmpt", sim, t2v)
    entries = []
    for i, row in enumerate(sim.numpy()):
        ordered = sorted(row, reverse=True)
        entries += [p + 1 for p, value in enumerate(ordered) if value == row[i]]
    entries = np.array(entries)
    assert sorted(result.t2v_ranks.tolist()) == sorted(entries.tolist())
    assert result.t2v["R@1"] == pytest.approx(np.mean(entries == 1))
    assert result.t2v["R@5"] == pytest.approx(np.mean(entries <= 5))
    assert result.t2v["MdR"] == pytest.approx(np.median(entries))


@pytest.mark.parametrize("seed", range(5))
def test_frozen_in_time_averages_each_captions_tied_positions(seed):
    sim, t2v = _quantised(seed)
    result = _metrics("frozen-in-time", sim, t2v)
    s = sim.numpy()
    ref = []
    for v, col in enumerate(s.T):  # each caption's mean tied position, best caption kept
        ordered = np.sort(col)[::-1]
        ranks = [np.mean(np.nonzero(ordered == col[i])[0]) + 1
                 for i in range(len(t2v)) if int(t2v[i]) == v]
        ref.append(min(ranks))
    np.testing.assert_allclose(result.v2t_ranks.numpy(), ref)
    optimistic = [int((row > row[int(t2v[i])]).sum()) + 1 for i, row in enumerate(s)]
    assert result.t2v_ranks.tolist() == optimistic


def test_faiss_backend_refuses_the_conventions_it_cannot_reproduce():
    protocol, _ = official_protocol("mmpt")
    with pytest.raises(ValueError, match="use backend='dense'"):
        retrieval_metrics_from_embeddings(torch.eye(3), torch.eye(3), torch.arange(3), protocol,
                                          backend="faiss")
