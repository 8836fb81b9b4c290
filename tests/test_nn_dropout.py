"""FastDropout (vlbook.nn.dropout): the distribution of torch.nn.Dropout from fewer draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from vlbook.nn.dropout import (
    FastDropout,
    fast_dropout,
    keep_mask,
    keep_threshold,
    torch_dropout,
    use_fast_dropout,
)


def test_eval_mode_and_p0_return_the_input_unchanged():
    x = torch.randn(3, 5)
    layer = FastDropout(0.3).eval()
    assert layer(x) is x
    assert fast_dropout(x, 0.0, training=True) is x


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_kept_values_are_scaled_by_one_over_one_minus_p(p):
    torch.manual_seed(0)
    x = torch.rand(1000, 100) + 0.5  # no zero inputs, so a zero output is a dropped element
    y = fast_dropout(x, p)
    p_eff = keep_threshold(p) / 2**31
    assert abs(p_eff - p) <= 2**-32
    kept = y != 0
    torch.testing.assert_close(y[kept], x[kept] / (1 - p_eff))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_and_pairs_from_one_word_are_independent(p):
    """Over 4M draws the dropped share is p within 5 standard errors, and the two elements
    that share one 64-bit word are dropped together with probability p^2 (independent)."""
    torch.manual_seed(1)
    n = 4_000_000
    keep = keep_mask((n,), p)
    se = math.sqrt(p * (1 - p) / n)
    assert abs((~keep).float().mean().item() - p) < 5 * se
    pairs = ~keep.view(-1, 2)
    both = (pairs[:, 0] & pairs[:, 1]).float().mean().item()
    se_pair = math.sqrt(p * p * (1 - p * p) / (n // 2))
    assert abs(both - p * p) < 5 * se_pair


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(2)
    x = torch.randn(64, 33, requires_grad=True)
    y = fast_dropout(x, 0.2)
    y.sum().backward()
    scale = 1 / (1 - keep_threshold(0.2) / 2**31)
    torch.testing.assert_close(x.grad, (y != 0).float() * scale)


def test_seeded_masks_repeat_and_other_seeds_differ():
    x = torch.ones(10_000)
    torch.manual_seed(3)
    a = fast_dropout(x, 0.5)
    torch.manual_seed(3)
    b = fast_dropout(x, 0.5)
    torch.manual_seed(4)
    c = fast_dropout(x, 0.5)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_torch_dropout_block_uses_pytorchs_draws():
    x = torch.randn(200, 7)
    layer = FastDropout(0.25).train()
    torch.manual_seed(5)
    with torch_dropout():
        ours = layer(x)
    torch.manual_seed(5)
    torch.testing.assert_close(ours, nn.functional.dropout(x, 0.25, True))


def test_use_fast_dropout_swaps_timm_blocks_and_keeps_p_and_mode():
    from timm.models.vision_transformer import Block

    block = Block(dim=16, num_heads=2, proj_drop=0.1)
    before = [m.p for m in block.modules() if type(m) is nn.Dropout]
    block.eval()
    assert use_fast_dropout(block) == len(before) > 0
    after = [m for m in block.modules() if isinstance(m, nn.Dropout)]
    assert all(type(m) is FastDropout for m in after)
    assert [m.p for m in after] == before
    assert not any(m.training for m in after)


def test_bad_probability_is_named():
    with pytest.raises(ValueError, match="between 0 and 1"):
        keep_threshold(1.5)


def test_models_train_with_fast_dropout():
    """Every dropout of the All-in-one and VLM models (timm and transformers build their own)
    is a FastDropout."""
    from vlbook.models import create_model

    for name, kw in (("allinone_toy", {"drop_rate": 0.1}), ("vlm_toy", {"hidden_dropout": 0.1})):
        model = create_model(name, **kw)
        drops = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        assert drops and all(type(m) is FastDropout for m in drops), name
