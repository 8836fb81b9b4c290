"""Tests of vlbook.nn: blocks, embeddings, masks and attention capture."""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

from vlbook.nn import (
    Attention,
    Block,
    CrossAttention,
    CrossBlock,
    DropPath,
    PatchEmbed2d,
    Transformer,
    TransformerOutput,
    TubeletEmbed,
    capture_attention,
    sinusoid_position_table,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def reference_attention(attn: Attention, x: torch.Tensor, mask_keep: torch.Tensor | None = None):
    """Textbook attention with explicit softmax, for comparison (masked = excluded)."""
    q, k, v = attn.qkv_projection(x)
    scores = q @ k.transpose(-2, -1) / math.sqrt(attn.head_dim)
    if mask_keep is not None:
        scores = scores.masked_fill(~mask_keep, float("-inf"))
    w = scores.softmax(-1)
    out = (w @ v).transpose(1, 2).reshape(x.shape)
    return attn.proj(out), w


def test_attention_matches_textbook_formula_with_padding():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=4).eval()
    x = torch.randn(2, 5, 16)
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    out = attn(x, key_padding_mask=pad)
    ref, _ = reference_attention(attn, x, pad[:, None, None, :])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    # padded keys have no influence: change them, the output of the second sample is the same
    x2 = x.clone()
    x2[1, 3:] = torch.randn(2, 16)
    torch.testing.assert_close(attn(x2, key_padding_mask=pad)[1, :3], out[1, :3], atol=1e-5,
                               rtol=1e-5)


def test_bool_and_additive_masks_agree_and_combine():
    torch.manual_seed(1)
    attn = Attention(8, num_heads=2).eval()
    x = torch.randn(3, 4, 8)
    keep = torch.rand(3, 4) > 0.3
    keep[:, 0] = True
    additive = torch.zeros(3, 4).masked_fill(~keep, -1e4)
    torch.testing.assert_close(attn(x, key_padding_mask=keep), attn(x, key_padding_mask=additive),
                               atol=1e-5, rtol=1e-5)
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    combined = attn(x, key_padding_mask=keep, attn_mask=causal)
    ref, _ = reference_attention(attn, x, (keep[:, None, None, :] & causal))
    torch.testing.assert_close(combined, ref, atol=1e-5, rtol=1e-5)


def test_fully_masked_row_stays_finite():
    attn = Attention(8, num_heads=2)
    x = torch.randn(1, 3, 8)
    out = attn(x, key_padding_mask=torch.zeros(1, 3, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_bad_mask_shape_names_the_field():
    attn = Attention(8, num_heads=2)
    with pytest.raises(ValueError, match="key_padding_mask"):
        attn(torch.randn(2, 3, 8), key_padding_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask"):
        attn(torch.randn(2, 3, 8), attn_mask=torch.ones(3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        Attention(10, num_heads=3)


def test_qv_bias_has_zero_key_bias():
    torch.manual_seed(0)
    attn = Attention(8, num_heads=2, qkv_bias="qv")
    with torch.no_grad():
        attn.q_bias.fill_(1.0)
        attn.v_bias.fill_(2.0)
    q, k, v = attn.qkv_projection(torch.zeros(1, 2, 8))
    assert torch.all(q == 1.0) and torch.all(k == 0.0) and torch.all(v == 2.0)


def test_cross_attention_uses_context_and_its_mask():
    torch.manual_seed(0)
    xattn = CrossAttention(8, num_heads=2, context_dim=6).eval()
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 5, 6)
    keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]], dtype=torch.bool)
    out = xattn(x, ctx, key_padding_mask=keep)
    ctx2 = ctx.clone()
    ctx2[:, 2:] += 5.0  # only masked context of sample 1, unmasked context of sample 0
    out2 = xattn(x, ctx2, key_padding_mask=keep)
    torch.testing.assert_close(out2[1], out[1])
    assert not torch.allclose(out2[0], out[0])
    with pytest.raises(ValueError, match="context"):
        xattn(x, torch.randn(2, 5, 8))


def test_drop_path_drops_whole_samples_and_keeps_expectation():
    torch.manual_seed(0)
    dp = DropPath(0.5).train()
    y = dp(torch.ones(4000, 3))
    per_sample = y[:, 0]
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert torch.all(y == y[:, :1])  # whole rows
    assert abs(y.mean().item() - 1.0) < 0.06
    assert torch.equal(dp.eval()(torch.ones(3, 3)), torch.ones(3, 3))


def test_sinusoid_table_matches_definition():
    table = sinusoid_position_table(7, 6)
    assert table.shape == (7, 6)
    p, j = 5, 3  # odd j -> cos(p / 10000^(2*1/6))
    assert table[p, j].item() == pytest.approx(math.cos(p / 10000 ** (2 / 6)), abs=1e-6)
    assert table[p, 2].item() == pytest.approx(math.sin(p / 10000 ** (2 / 6)), abs=1e-6)
    assert torch.all(table[0, 0::2] == 0) and torch.all(table[0, 1::2] == 1)


def test_tubelet_embed_token_order_is_t_h_w():
    emb = TubeletEmbed(img_size=8, patch_size=4, tubelet_size=2, in_chans=1, embed_dim=1,
                       num_frames=4)
    with torch.no_grad():
        emb.proj.weight.fill_(1.0)
        emb.proj.bias.zero_()
    video = torch.zeros(1, 4, 1, 8, 8)
    # light one tubelet: time slice 1 (frames 2-3), row 1, column 0 -> token 1*4 + 1*2 + 0 = 6
    video[0, 2:4, 0, 4:8, 0:4] = 1.0
    tokens = emb(video)
    assert tokens.shape == (1, 8, 1) and emb.grid_size == (2, 2, 2)
    assert tokens[0, :, 0].argmax().item() == 6
    assert tokens[0, 6, 0].item() == pytest.approx(2 * 4 * 4)
    with pytest.raises(ValueError, match=r"\(B, T, C, H, W\)"):
        emb(torch.zeros(1, 1, 4, 8, 8))


def test_patch_embed_shapes_and_errors():
    emb = PatchEmbed2d(img_size=32, patch_size=8, embed_dim=12)
    assert emb(torch.randn(2, 3, 32, 32)).shape == (2, 16, 12)
    with pytest.raises(ValueError, match="PatchEmbed2d expects"):
        emb(torch.randn(2, 3, 16, 32))


def test_transformer_hidden_states_and_drop_path_schedule():
    model = Transformer(16, depth=3, num_heads=2, drop_path_rate=0.2).eval()
    x = torch.randn(2, 5, 16)
    out = model(x, return_hidden_states=True)
    assert isinstance(out, TransformerOutput) and len(out.hidden_states) == 3
    torch.testing.assert_close(out.last_hidden_state, model.norm(out.hidden_states[-1]))
    torch.testing.assert_close(model(x), out.last_hidden_state)
    rates = [b.drop_path1.drop_prob for b in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])


def test_transformer_learns_a_copy_task():
    """A 1-layer block stack fits a tiny token-copy-by-position task: loss drops."""
    torch.manual_seed(0)
    model = Transformer(16, depth=1, num_heads=2)
    head = nn.Linear(16, 4)
    emb = nn.Embedding(4, 16)
    pos = nn.Parameter(torch.randn(1, 6, 16) * 0.1)
    params = [*model.parameters(), *head.parameters(), *emb.parameters(), pos]
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(150):
        tokens = torch.randint(0, 4, (32, 6))
        target = tokens.flip(1)  # each position must read the mirrored position
        logits = head(model(emb(tokens) + pos))
        loss = nn.functional.cross_entropy(logits.reshape(-1, 4), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]


class _TwoStream(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = Transformer(16, depth=2, num_heads=4)
        self.fusion = CrossBlock(16, num_heads=2, context_dim=16)

    def forward(self, x, ctx, pad):
        h = self.encoder(x, key_padding_mask=pad)
        return self.fusion(ctx, h, context_padding_mask=pad)


def test_capture_vlbook_outputs_identical_rows_sum_to_one_masks_respected():
    torch.manual_seed(0)
    model = _TwoStream().eval()
    x, ctx = torch.randn(2, 6, 16), torch.randn(2, 3, 16)
    pad = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    plain = model(x, ctx, pad)
    with capture_attention(model) as store:
        captured = model(x, ctx, pad)
    assert torch.equal(plain, captured)  # capture leaves the fused output untouched
    assert list(store) == ["encoder.blocks.0.attn", "encoder.blocks.1.attn", "fusion.attn",
                           "fusion.cross_attn"]
    assert store["encoder.blocks.0.attn"].shape == (2, 4, 6, 6)
    assert store["fusion.cross_attn"].shape == (2, 2, 3, 6)
    with pytest.raises(ValueError, match="different shapes"):
        store.stacked()
    for w in store.values():
        torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-5, rtol=0)
    assert store["encoder.blocks.1.attn"][1, :, :, 4:].abs().max() < 1e-6
    assert store["fusion.cross_attn"][1, :, :, 4:].abs().max() < 1e-6
    # the weights are the ones the block used: recompute block 0 by hand
    blk = model.encoder.blocks[0]
    _, ref_w = reference_attention(blk.attn, blk.norm1(x), pad[:, None, None, :])
    torch.testing.assert_close(store["encoder.blocks.0.attn"], ref_w, atol=1e-5, rtol=1e-5)
    # hooks are gone after the block
    assert all(m.capture_hook is None for m in model.modules() if hasattr(m, "capture_hook"))


def test_capture_include_filter_repeated_calls_and_errors():
    model = Transformer(8, depth=2, num_heads=2).eval()
    with capture_attention(model, include="blocks.1") as store:
        model(torch.randn(1, 3, 8))
        model(torch.randn(1, 4, 8))
    assert list(store) == ["blocks.1.attn"]
    assert [c.shape[-1] for c in store.calls("blocks.1.attn")] == [3, 4]
    assert store["blocks.1.attn"].shape[-1] == 4
    with pytest.raises(ValueError, match="no attention module"):
        with capture_attention(nn.Linear(2, 2)):
            pass


def test_capture_timm_vit_matches_timm_manual_path():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32,
                              num_classes=0, depth=2).eval()
    x = torch.randn(2, 3, 32, 32)
    plain = model(x)
    with capture_attention(model) as store:
        captured = model(x)
    assert torch.equal(plain, captured)
    assert list(store) == ["blocks.0.attn", "blocks.1.attn"]
    w = store["blocks.1.attn"]
    assert w.shape == (2, 3, 5, 5)  # 4 patches + CLS, 3 heads
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 5), atol=1e-5, rtol=0)
    # timm's own non-fused path exposes the probabilities as the input of attn_drop
    seen = {}
    attn = model.blocks[1].attn
    attn.fused_attn = False
    handle = attn.attn_drop.register_forward_pre_hook(lambda m, a: seen.setdefault("w", a[0]))
    model(x)
    handle.remove()
    torch.testing.assert_close(w, seen["w"], atol=1e-5, rtol=1e-5)


def test_capture_bert_matches_eager_output_attentions():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16)
    ids = torch.randint(0, 50, (2, 6))
    mask = torch.tensor([[1] * 6, [1, 1, 1, 1, 0, 0]])
    cfg._attn_implementation = "eager"
    eager = transformers.BertModel(cfg).eval()
    reference = eager(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    cfg_sdpa = transformers.BertConfig(**cfg.to_dict())
    cfg_sdpa._attn_implementation = "sdpa"
    sdpa = transformers.BertModel(cfg_sdpa).eval()
    assert sdpa.config._attn_implementation == "sdpa"
    sdpa.load_state_dict(eager.state_dict())
    plain = sdpa(input_ids=ids, attention_mask=mask).last_hidden_state
    with capture_attention(sdpa) as store:
        captured = sdpa(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(plain, captured)
    names = list(store)
    assert names == ["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]
    for name, ref in zip(names, reference):
        torch.testing.assert_close(store[name], ref, atol=1e-5, rtol=1e-5)
        assert store[name][1, :, :, 4:].abs().max() < 1e-6


def test_capture_bert_cross_attention_matches_eager():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32,
                                  max_position_embeddings=16, add_cross_attention=True,
                                  is_decoder=True)  # transformers 5 requires it for cross-attn
    cfg._attn_implementation = "eager"
    model = transformers.BertModel(cfg, add_pooling_layer=False).eval()
    ids = torch.randint(0, 50, (2, 4))
    video = torch.randn(2, 7, 16)
    video_mask = torch.tensor([[1] * 7, [1] * 5 + [0, 0]])
    kwargs = dict(input_ids=ids, encoder_hidden_states=video, encoder_attention_mask=video_mask,
                  use_cache=False)  # cached decoding is not captured (skipped with a warning)
    ref = model(**kwargs, output_attentions=True)
    with capture_attention(model) as store:
        model(**kwargs)
    assert list(store) == ["encoder.layer.0.attention.self", "encoder.layer.0.crossattention.self"]
    cross = store["encoder.layer.0.crossattention.self"]
    assert cross.shape == (2, 2, 4, 7)
    torch.testing.assert_close(cross, ref.cross_attentions[0], atol=1e-5, rtol=1e-5)
    assert cross[1, :, :, 5:].abs().max() < 1e-6
    causal_self = store["encoder.layer.0.attention.self"]
    torch.testing.assert_close(causal_self, ref.attentions[0], atol=1e-5, rtol=1e-5)
    assert causal_self[:, :, 0, 1:].abs().max() < 1e-6  # decoder self-attention is causal


def test_block_and_crossblock_shapes():
    blk = Block(8, 2, init_values=0.1)
    assert blk(torch.randn(2, 3, 8)).shape == (2, 3, 8)
    cb = CrossBlock(8, 2, context_dim=4)
    assert cb(torch.randn(2, 3, 8), torch.randn(2, 7, 4)).shape == (2, 3, 8)


def test_transformer_builds_on_the_meta_device_with_linear_drop_path() -> None:
    with torch.device("meta"):
        model = Transformer(64, 3, 4, drop_path_rate=0.2)
    assert all(p.is_meta for p in model.parameters())
    rates = [block.drop_path1.drop_prob for block in model.blocks]
    assert rates == pytest.approx([0.0, 0.1, 0.2])
