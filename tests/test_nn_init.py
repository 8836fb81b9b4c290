"""Tests of vlbook.nn.init: additive embedding initialisation and the norms diagnostic."""

from __future__ import annotations

import math

import pytest
import torch

from vlbook.nn.init import embedding_norms, init_additive_embedding_


def test_embedding_norms_hand_computed():
    # content vectors (3, 4) and (0, 5): norm 5 each; positions (0.3, 0.4) and (0, 0): mean 0.25
    content = torch.tensor([[[3.0, 4.0], [0.0, 5.0]]])
    position = torch.tensor([[0.3, 0.4], [0.0, 0.0]])
    time = torch.tensor([[[1.0, 0.0]]])
    norms = embedding_norms(content, position=position, time=time)
    assert norms["content"] == pytest.approx(5.0)
    assert norms["position"] == pytest.approx(0.25)
    assert norms["time"] == pytest.approx(1.0)
    assert norms["position/content"] == pytest.approx(0.05)
    assert norms["time/content"] == pytest.approx(0.2)


def test_embedding_norms_rejects_other_width():
    with pytest.raises(ValueError, match="position has width 3"):
        embedding_norms(torch.ones(2, 4), position=torch.ones(2, 3))


def test_init_additive_embedding_scale_and_truncation():
    torch.manual_seed(0)
    table = init_additive_embedding_(torch.empty(20_000, 64), 0.5)
    # truncation at 2 std: nothing beyond 1.0; std of N(0,1) truncated at +-2 is 0.8796
    assert float(table.abs().max()) <= 1.0
    assert float(table.std()) == pytest.approx(0.5 * 0.8796, rel=0.01)
    # the documented vector norm: ~0.88 std sqrt(D)
    assert float(table.norm(dim=-1).mean()) == pytest.approx(0.88 * 0.5 * math.sqrt(64), rel=0.02)


def test_init_additive_embedding_zero_and_negative():
    table = torch.ones(3, 4)
    assert init_additive_embedding_(table, 0.0) is table
    assert bool((table == 0).all())
    with pytest.raises(ValueError, match="std=-1"):
        init_additive_embedding_(table, -1.0)


def test_init_additive_embedding_fills_a_view_in_place():
    table = torch.zeros(1, 5, 8)
    init_additive_embedding_(table[:, 1:], 0.3)
    assert bool((table[:, 0] == 0).all())  # the prefix row untouched
    assert bool((table[:, 1:] != 0).all())
