"""SimVTP (vlbook.models.simvtp): sizes, masking, MSM/VTC/VTM, Table 4 options, heads, weights."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vlbook.losses import normalized_pixel_targets  # noqa: E402
from vlbook.models import create_model  # noqa: E402
from vlbook.models.simvtp import (  # noqa: E402
    SimVTP,
    SimVTPConfig,
    convert_timm_vit_state_dict,
    convert_videomae_state_dict,
    encoder_flops_ratio,
    load_bert_embeddings,
    load_videomae_encoder,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_config(**overrides) -> SimVTPConfig:
    base = dict(image_size=16, patch_size=8, num_frames=4, embed_dim=32, depth=2, num_heads=2,
                decoder_dim=16, decoder_heads=2, video_decoder_depth=1, vocab_size=40,
                max_text_len=12, mask_token_id=3, special_token_ids=(0, 1, 2, 3))
    return SimVTPConfig(**{**base, **overrides})


def make_batch(config: SimVTPConfig, batch_size: int = 4, seed: int = 0, text_len: int = 8):
    gen = torch.Generator().manual_seed(seed)
    batch = SimVTP(config).example_batch(batch_size, text_len=text_len, generator=gen)
    batch["attention_mask"][:, 6:] = 0  # two padding slots
    batch["input_ids"][:, 6:] = 0
    return batch


# ---------------------------------------------------------------- sizes and compute


def test_vit_b_variant_sizes_on_meta():
    """ViT-B encoder = VideoMAE's ViT-B (87 M in VideoMAE Table 1; SimVTP initialises from it);
    text embeddings = BERT-base's (23.8 M); decoder 384 wide, 4 blocks; 1568 tokens."""
    with torch.device("meta"):
        model = create_model("simvtp_base")
    encoder = model.encoder_parameter_count() / 1e6
    assert abs(encoder - 87.0) / 87.0 < 0.015, encoder
    text = sum(p.numel() for p in model.text_embeddings.parameters())
    assert text == (30522 + 512 + 2) * 768 + 2 * 768
    assert model.config.num_video_tokens == 1568
    assert model.video_embed.proj.weight.shape == (768, 3, 2, 16, 16)
    assert len(model.video_decoder.blocks.blocks) == 4
    assert model.video_decoder.head.weight.shape == (1536, 384)
    assert model.text_decoder.head.weight.shape == (30522, 768)  # one linear layer (Table 4b)
    assert model.text_decoder.blocks is None
    assert model.vtm_head.weight.shape == (2, 768)


def test_tube_mask_keeps_160_of_1568_tubes():
    """int(0.9 * 196) = 176 positions hidden on each of the 8 slices: 8 * 20 = 160 visible."""
    config = SimVTPConfig()
    assert config.num_visible_video_tokens == 160
    with torch.device("meta"):
        model = SimVTP(config)
    mask = model.mask_video(2, device="cpu")
    assert mask.shape == (2, 1568)
    per_slice = mask.view(2, 8, 196)
    assert torch.equal(per_slice, per_slice[:, :1].expand_as(per_slice))  # tubes
    assert int((~mask[0]).sum()) == 160


def test_visible_only_encoder_saves_about_ten_times_the_flops():
    """Sec. 3: the encoder sees ~10 % of the tubes; Table 4d: text w/ [M] costs 1.1x w/o."""
    with_mask = encoder_flops_ratio(SimVTPConfig(), text_len=18)
    without = encoder_flops_ratio(SimVTPConfig(), text_len=18, text_mask_token=False)
    assert 9.0 < with_mask["ratio"] < 12.0
    table4d = with_mask["visible_tokens_gflops"] / without["visible_tokens_gflops"]
    assert table4d == pytest.approx(1.1, abs=0.05)
    # 2 FLOPs per multiply-add: a ViT-B forward on 175 tokens is ~2 * 85 M * 175 = 30 GFLOPs
    assert 28 < with_mask["visible_tokens_gflops"] < 40


# ---------------------------------------------------------------- masking and losses


def test_text_masking_code_and_paper_replacements():
    ids = torch.randint(4, 40, (64, 10), generator=torch.Generator().manual_seed(1))
    attn = torch.ones_like(ids)
    code = SimVTP(tiny_config()).mask_text(ids, attn, generator=torch.Generator().manual_seed(0))
    assert torch.equal(code.replaced_by_mask, code.mask)  # 100 % [MASK] (released code)
    assert (code.input_ids[code.mask] == 3).all()
    assert code.mask.float().mean().item() == pytest.approx(0.75, abs=0.05)
    paper = SimVTP(tiny_config(text_replace="bert")).mask_text(
        ids, attn, generator=torch.Generator().manual_seed(0))
    share = paper.replaced_by_mask.sum() / paper.mask.sum()
    assert 0.7 < float(share) < 0.9  # 80 / 10 / 10
    assert bool(paper.replaced_by_random.any())


def test_video_loss_is_mse_to_normalised_pixels_of_masked_tubes():
    config = tiny_config(vtc_weight=0.0, vtm_weight=0.0)
    model = SimVTP(config)
    batch = make_batch(config)
    out = model.run_pretraining(batch, generator=torch.Generator().manual_seed(0))
    targets = normalized_pixel_targets(batch["video"], 2, 8)
    mask = out.video_mask
    masked_targets = targets[mask].view(4, -1, targets.shape[-1])
    expected = ((out.video_prediction.detach() - masked_targets) ** 2).mean()
    assert float(out.losses["loss_video"]) == pytest.approx(float(expected), rel=1e-5)
    # hand check of the text term: cross-entropy over the masked words only
    logits, labels = out.text_logits, out.text_masking.labels
    picked = labels != -100
    manual = -torch.log_softmax(logits[picked], -1).gather(1, labels[picked][:, None]).mean()
    assert float(out.losses["loss_text"]) == pytest.approx(float(manual), rel=1e-5)
    assert float(out.losses["loss"]) == pytest.approx(float(expected + manual), rel=1e-5)


def test_encoder_sees_only_visible_tubes_and_all_text():
    config = tiny_config()
    model = SimVTP(config).eval()
    batch = make_batch(config)
    mask = model.mask_video(4, generator=torch.Generator().manual_seed(0))
    out = model.forward_encoder(batch["video"], batch["input_ids"], batch["attention_mask"],
                                video_mask=mask)
    assert out.video_hidden.shape[1] == config.num_visible_video_tokens
    assert out.text_hidden.shape[1] == 8
    # changing a hidden tube's pixels does not change the encoder output
    video = batch["video"].clone()
    hidden_tube = int(mask[0].nonzero()[0])
    t, h, w = config.grid
    slice_, row, col = hidden_tube // (h * w), (hidden_tube // w) % h, hidden_tube % w
    video[0, 2 * slice_: 2 * slice_ + 2, :, 8 * row: 8 * row + 8, 8 * col: 8 * col + 8] += 5.0
    again = model.forward_encoder(video, batch["input_ids"], batch["attention_mask"],
                                  video_mask=mask)
    assert torch.allclose(out.pooled, again.pooled, atol=1e-6)
    # padding does not leak into real tokens
    ids = batch["input_ids"].clone()
    ids[:, 7] = 9
    third = model.forward_encoder(batch["video"], ids, batch["attention_mask"], video_mask=mask)
    assert torch.allclose(out.video_hidden, third.video_hidden, atol=1e-5)


def test_vtc_and_vtm_terms_and_table5_switches():
    config = tiny_config()
    batch = make_batch(config)
    torch.manual_seed(0)
    losses = SimVTP(config)(batch)
    assert {"loss_video", "loss_text", "loss_vtc", "loss_vtm", "acc_vtm"} <= set(losses)
    parts = losses["loss_video"] + losses["loss_text"] + losses["loss_vtc"] + losses["loss_vtm"]
    assert float(losses["loss"]) == pytest.approx(float(parts), rel=1e-5)  # Eq. 1, unit weights
    only_vtm = SimVTP(tiny_config(msm_weight=0.0, vtc_weight=0.0))(batch)
    assert set(only_vtm) == {"loss", "loss_vtm", "acc_vtm"}
    # VTM at initialisation is a 2-way guess: loss near log 2
    assert float(only_vtm["loss_vtm"]) == pytest.approx(0.693, abs=0.25)


def test_cross_modal_masks_of_their_own():
    """Toy option: VTC / VTM draw their own (lighter) masks instead of reusing the MSM ones."""
    from vlbook.losses import vtc_loss

    torch.manual_seed(0)
    config = tiny_config(msm_weight=0.0, vtm_weight=0.0, cross_modal_video_mask_ratio=0.0,
                         cross_modal_text_mask_ratio=0.0)
    model = SimVTP(config).eval()
    batch = make_batch(config)
    # ratio 0: the VTC passes see every tube and every word, whatever the MSM masks are
    expected = vtc_loss(model.forward_encoder(batch["video"]).pooled,
                        model.forward_encoder(None, batch["input_ids"],
                                              batch["attention_mask"]).pooled,
                        temperature=config.vtc_temperature, combine="sum").loss
    got = model(batch)["loss_vtc"]
    assert float(got) == pytest.approx(float(expected), rel=1e-5)
    # the code's default reuses the 90 % / 75 % MSM masks: a different value
    reused = SimVTP(tiny_config(msm_weight=0.0, vtm_weight=0.0))
    reused.load_state_dict(model.state_dict())
    assert float(reused.eval()(batch)["loss_vtc"]) != pytest.approx(float(expected), rel=1e-3)
    # VTM with its own masks: a separate positive pass, still a 2-way loss on 2B pairs
    vtm = SimVTP(tiny_config(msm_weight=0.0, vtc_weight=0.0, cross_modal_video_mask_ratio=0.5,
                             cross_modal_text_mask_ratio=0.15))
    out = vtm(batch)
    assert set(out) == {"loss", "loss_vtm", "acc_vtm"}
    out["loss"].backward()
    assert vtm.vtm_head.weight.grad is not None
    with pytest.raises(ValueError, match="cross_modal_video_mask_ratio"):
        tiny_config(cross_modal_video_mask_ratio=1.0)


def test_vtm_warns_when_the_batch_has_one_clip():
    config = tiny_config(msm_weight=0.0, vtc_weight=0.0)
    batch = make_batch(config)
    batch["video_index"] = torch.zeros(4, dtype=torch.long)
    with pytest.warns(UserWarning, match="VTM"):
        out = SimVTP(config)(batch)
    assert "loss_vtm" not in out


@pytest.mark.parametrize("overrides", [
    {"decoder_type": "shared"},
    {"text_mask_token": False},
    {"text_decoder_depth": 2},
    {"vtm_negative": "text", "pool_padding": False, "vtc_on_masked": False},
])
def test_table4_alternatives_train(overrides):
    config = tiny_config(**overrides)
    model = SimVTP(config)
    out = model(make_batch(config))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    grads = [p.grad for p in model.encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_text_without_mask_token_drops_masked_words_from_the_encoder():
    config = tiny_config(text_mask_token=False, vtc_weight=0.0, vtm_weight=0.0)
    model = SimVTP(config)
    batch = make_batch(config)
    masking = model.mask_text(batch["input_ids"], batch["attention_mask"],
                              generator=torch.Generator().manual_seed(0))
    out = model.forward_encoder(None, masking.input_ids, batch["attention_mask"],
                                text_keep=~masking.mask)
    kept = (batch["attention_mask"].bool() & ~masking.mask).sum(dim=1)
    assert out.text_hidden.shape[1] == int(kept.max())
    assert torch.equal(out.text_keep.sum(dim=1), kept)


def test_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    config = tiny_config()
    model = SimVTP(config)
    batch = make_batch(config, batch_size=6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = last = None
    for step in range(40):
        torch.manual_seed(step % 2)  # two fixed masks
        loss = model(batch)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        first = float(loss) if first is None else first
        last = float(loss)
    assert last < 0.7 * first, (first, last)


def test_bad_inputs_raise_clear_errors():
    model = SimVTP(tiny_config())
    batch = make_batch(tiny_config())
    with pytest.raises(ValueError, match="video: expected"):
        model.forward_encoder(batch["video"][:, :2])
    with pytest.raises(ValueError, match="vocab_size"):
        model.forward_encoder(None, batch["input_ids"] + 100, batch["attention_mask"])
    with pytest.raises(KeyError, match="input_ids"):
        model.pretrain_step({"video": batch["video"]})
    with pytest.raises(ValueError, match="decoder_type"):
        tiny_config(decoder_type="triple")
    with pytest.raises(ValueError, match="video_mask_ratio"):
        tiny_config(video_mask_ratio=1.0)


# ---------------------------------------------------------------- downstream heads


def test_downstream_heads_shapes_and_consistency():
    config = tiny_config()
    model = SimVTP(config).eval()
    batch = make_batch(config)
    v = model.encode_video(batch["video"])
    t = model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert v.shape == t.shape == (4, 32)
    assert torch.allclose(v.norm(dim=-1), torch.ones(4), atol=1e-5)
    options = batch["input_ids"][:, None].expand(4, 3, 8).clone()
    options[:, 1:, 1] = 7
    mc = model.score_options(batch["video"], options, batch["attention_mask"][:, None]
                             .expand(4, 3, 8))
    logits = model.match_logits(batch["video"], options[:, 0], batch["attention_mask"])
    assert mc.scores.shape == (4, 3)
    assert torch.allclose(mc.scores[:, 0], logits[:, 1] - logits[:, 0], atol=1e-5)
    with pytest.raises(RuntimeError, match="QA head"):
        model.answer_logits(batch["video"], batch["input_ids"], batch["attention_mask"])
    model.build_qa_head(11)
    assert model.answer_logits(batch["video"], batch["input_ids"],
                               batch["attention_mask"]).shape == (4, 11)
    loss = model.retrieval_loss(batch)["loss"]
    assert torch.isfinite(loss) and loss.requires_grad


# ---------------------------------------------------------------- weights (Table 4c)


def videomae_state_dict(config: SimVTPConfig, prefix: str = "videomae.") -> dict:
    """transformers' VideoMAEForPreTraining names and shapes for ``config``."""
    d, dd = config.embed_dim, config.decoder_dim
    state = {
        f"{prefix}embeddings.patch_embeddings.projection.weight":
            torch.randn(d, 3, config.tubelet_size, config.patch_size, config.patch_size),
        f"{prefix}embeddings.patch_embeddings.projection.bias": torch.randn(d),
        "encoder_to_decoder.weight": torch.randn(dd, d),
        "mask_token": torch.randn(1, 1, dd),
        "decoder.norm.weight": torch.randn(dd),
        "decoder.norm.bias": torch.randn(dd),
        "decoder.head.weight": torch.randn(config.pixels_per_token, dd),
        "decoder.head.bias": torch.randn(config.pixels_per_token),
    }

    def layer(p: str, w: int) -> None:
        for name in ("query", "key", "value"):
            state[f"{p}attention.attention.{name}.weight"] = torch.randn(w, w)
        state[f"{p}attention.attention.query.bias"] = torch.randn(w)
        state[f"{p}attention.attention.value.bias"] = torch.randn(w)
        state[f"{p}attention.output.dense.weight"] = torch.randn(w, w)
        state[f"{p}attention.output.dense.bias"] = torch.randn(w)
        state[f"{p}intermediate.dense.weight"] = torch.randn(4 * w, w)
        state[f"{p}intermediate.dense.bias"] = torch.randn(4 * w)
        state[f"{p}output.dense.weight"] = torch.randn(w, 4 * w)
        state[f"{p}output.dense.bias"] = torch.randn(w)
        for norm in ("layernorm_before", "layernorm_after"):
            state[f"{p}{norm}.weight"] = torch.randn(w)
            state[f"{p}{norm}.bias"] = torch.randn(w)

    for i in range(config.depth):
        layer(f"{prefix}encoder.layer.{i}.", d)
    for i in range(config.video_decoder_depth):
        layer(f"decoder.decoder_layers.{i}.", dd)
    return state


def test_videomae_conversion_covers_every_tensor_and_matches_hf_attention():
    config = tiny_config()
    state = videomae_state_dict(config)
    converted = convert_videomae_state_dict(state)
    assert set(converted.mapping) | set(converted.dropped) == set(state)
    model = SimVTP(config)
    load_videomae_encoder(model, state)
    layer = "videomae.encoder.layer.0.attention.attention."
    x = torch.randn(2, 5, config.embed_dim)
    q, k, v = model.encoder.blocks[0].attn.qkv_projection(x)
    expected_q = x @ state[layer + "query.weight"].T + state[layer + "query.bias"]
    expected_k = x @ state[layer + "key.weight"].T  # no key bias
    assert torch.allclose(q.transpose(1, 2).reshape(2, 5, -1), expected_q, atol=1e-5)
    assert torch.allclose(k.transpose(1, 2).reshape(2, 5, -1), expected_k, atol=1e-5)
    assert torch.equal(model.video_decoder.head.weight, state["decoder.head.weight"])
    with pytest.raises(KeyError, match="no SimVTP counterpart"):
        convert_videomae_state_dict({**state, "videomae.surprise": torch.zeros(1)})


def test_videomae_loading_against_transformers_model():
    """A real (randomly initialised) transformers VideoMAE gives the same encoder output."""
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.VideoMAEConfig(
        image_size=16, patch_size=8, num_channels=3, num_frames=4, tubelet_size=2,
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
        qkv_bias=True, use_mean_pooling=False, layer_norm_eps=1e-6, hidden_act="gelu",
    )
    hf = transformers.VideoMAEModel(hf_config).eval()
    model = SimVTP(tiny_config()).eval()
    load_videomae_encoder(model, hf.state_dict())
    video = torch.randn(2, 4, 3, 16, 16)
    with torch.no_grad():
        ours = model.forward_encoder(video).video_hidden
        theirs = hf(pixel_values=video).last_hidden_state
    assert torch.allclose(ours, theirs, atol=1e-4)


def test_timm_vit_inflation_and_offline_errors():
    config = tiny_config()
    timm_state = {"patch_embed.proj.weight": torch.randn(32, 3, 8, 8),
                  "patch_embed.proj.bias": torch.randn(32), "cls_token": torch.randn(1, 1, 32)}
    converted = convert_timm_vit_state_dict(timm_state, tubelet_size=2)
    inflated = converted.state_dict["video_embed.proj.weight"]
    assert inflated.shape == (32, 3, 2, 8, 8)
    # a static clip gives the same response as the 2-D filter on one frame
    assert torch.allclose(inflated.sum(dim=2), timm_state["patch_embed.proj.weight"], atol=1e-6)
    assert "cls_token" in converted.dropped
    model = SimVTP(config)
    with pytest.raises(RuntimeError, match="VideoMAE weights"):
        load_videomae_encoder(model, "/nonexistent/videomae-base")
    with pytest.raises(RuntimeError, match="BERT weights"):
        load_bert_embeddings(model, "/nonexistent/bert")


def test_bert_embeddings_loading():
    config = tiny_config()
    model = SimVTP(config)
    state = {f"bert.embeddings.{k}": torch.randn_like(v)
             for k, v in model.text_embeddings.state_dict().items()}
    loaded = load_bert_embeddings(model, state)
    assert len(loaded) == 5
    assert torch.equal(model.text_embeddings.word_embeddings.weight,
                       state["bert.embeddings.word_embeddings.weight"])


# ---------------------------------------------------------------- paper size, one step


@pytest.mark.slow
def test_vit_b_one_optimiser_step_on_cpu():
    torch.manual_seed(0)
    model = create_model("simvtp_base")
    batch = model.example_batch(2, text_len=18)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = model.encoder.blocks[0].attn.qkv.weight.detach().clone()
    losses = model(batch)
    losses["loss"].backward()
    optimizer.step()
    assert torch.isfinite(losses["loss"])
    assert not torch.equal(before, model.encoder.blocks[0].attn.qkv.weight)


# ---------------------------------------------------------------- chapter: ablation scoring


class _FixedEncoder:
    """Stands in for a model: video i -> row i of ``video``, caption id j -> row j of ``text``."""

    def __init__(self, video: torch.Tensor, text: torch.Tensor) -> None:
        self.video, self.text = video, text

    def eval(self):
        return self

    def encode_video(self, clips: torch.Tensor) -> torch.Tensor:
        return self.video[clips[:, 0, 0, 0, 0].long()]

    def encode_text(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.text[ids[:, 0]]


def test_retrieval_ranks_every_caption_with_averaged_ties():
    from vlbook.chapters.simvtp import StackedClips, recall_at, retrieval_ranks

    # 3 clips, 2 captions each; clip i's video is the unit vector e_i
    video = torch.eye(3)
    text = torch.tensor([[1.0, 0.0, 0.0],   # caption id 0: clip 0 best -> rank 1
                         [0.0, 1.0, 0.0],   # id 1: clip 1 best
                         [1.0, 1.0, 0.0],   # id 2: clips 0 and 1 tie on top -> rank 1.5
                         [1.0, 0.0, 0.5]])  # id 3: clip 0 (1.0) > clip 2 (0.5) -> rank 2
    clips = torch.arange(3, dtype=torch.float16).view(3, 1, 1, 1, 1).expand(3, 1, 1, 1, 1)
    ids = torch.tensor([[[0], [2]],    # clip 0: ranks 1, 1.5
                        [[1], [2]],    # clip 1: ranks 1, 1.5
                        [[3], [1]]])   # clip 2: rank 2; id 1: clip 1 above, ties clip 0 -> 2.5
    data = StackedClips({"video": clips.contiguous(), "input_ids": ids,
                         "attention_mask": torch.ones_like(ids)}, random_choice=False)
    ranks = retrieval_ranks(_FixedEncoder(video, text), data)
    assert ranks.tolist() == [[1.0, 1.5], [1.0, 1.5], [2.0, 2.5]]
    assert recall_at(ranks, 1) == pytest.approx(100 * 2 / 6)
    assert recall_at(ranks, 2) == pytest.approx(100 * 5 / 6)


def test_paired_difference_uses_the_clip_as_unit():
    from vlbook.chapters.simvtp import paired_difference

    a = torch.tensor([[1.0, 1.0], [1.0, 3.0], [2.0, 2.0], [1.0, 1.0]])
    b = torch.tensor([[1.0, 2.0], [4.0, 4.0], [2.0, 2.0], [1.0, 1.0]])
    # per-clip mean of hit_a - hit_b (R@1): 0.5, 0.5, 0, 0  (x 100)
    diff, se = paired_difference(a, b, k=1)
    d = torch.tensor([50.0, 50.0, 0.0, 0.0])
    assert diff == pytest.approx(25.0)
    assert se == pytest.approx(float(d.std()) / 2)  # std (n-1) over sqrt(4) clips
    assert paired_difference(a, a) == (0.0, 0.0)
    with pytest.raises(ValueError, match="equal"):
        paired_difference(a, b[:3])


def test_table5_verdict_needs_the_full_objective_above_each_single_one():
    from vlbook.chapters.simvtp import table5_verdict

    n = 50
    hit, miss = torch.ones(n, 5), torch.full((n, 5), 10.0)
    half = torch.cat([hit[: n // 2], miss[n // 2:]])
    ranks = {"MSM + VTC + VTM": hit, "MSM": miss, "VTC": half, "VTM": miss}
    holds, note = table5_verdict(ranks)
    assert holds is True and "vs VTC +50.0" in note
    ranks["VTC"] = hit  # a single objective as good as the full one: not reproduced
    assert table5_verdict(ranks)[0] is False
    assert table5_verdict({"MSM": hit})[0] is None


def test_mean_rank_chance_and_ablation_jobs():
    from vlbook.chapters.simvtp import (
        TABLE5_WEIGHTS,
        ablation_jobs,
        figure3_label,
        mean_rank_chance,
        table5_label_run,
    )

    # ranks uniform on 1..3: mean 2, variance (9 - 1) / 12, over 3 clips
    assert mean_rank_chance(3) == pytest.approx((2.0, (8 / 12 / 3) ** 0.5))
    jobs = ablation_jobs({"text_ratios": [0.15, 0.75], "video_ratios": [0.75, 0.9]})
    shared = figure3_label(0.9, 0.75)
    assert list(jobs).count(shared) == 1 and table5_label_run("MSM") == shared
    assert jobs[shared] == {"video_mask_ratio": 0.9, "text_mask_ratio": 0.75,
                            "msm_weight": 1.0, "vtc_weight": 0.0, "vtm_weight": 0.0}
    assert jobs["VTC + VTM"] == {"msm_weight": 0.0, "vtc_weight": 1.0, "vtm_weight": 1.0}
    assert len(jobs) == 3 + len(TABLE5_WEIGHTS) - 1


def test_table5_rows_one_paired_verdict_per_row():
    """Hand-built ranks over 100 clips x 2 captions: the full objective hits 40 clips (both
    captions), MSM 20 of those, VTC the same 40 as the full one; so full - MSM = +20 points
    with paired s.e. 100 * sqrt(0.2 * 0.8 / 99 / 100) and MSM's row reproduces the paper's
    direction, VTC's (identical to the full objective) does not, nor the full row."""
    import math

    from vlbook.chapters.simvtp import PAPER_TABLE5, table5_rows

    def ranks(hit_clips):
        r = torch.full((100, 2), 50.0)
        r[:hit_clips] = 1.0
        return r

    table = {"MSM": ranks(20), "VTC": ranks(40), "VTM": ranks(0), "MSM + VTC + VTM": ranks(40)}
    rows = {r.row: r for r in table5_rows(table, "toy")}
    assert list(rows) == ["MSM", "VTC", "VTM", "MSM + VTC + VTM"]
    se = 100 * math.sqrt(0.2 * 0.8 * 100 / 99 / 100)
    gap = PAPER_TABLE5["MSM + VTC + VTM"] - PAPER_TABLE5["MSM"]
    assert f"paper {gap:+.1f}, ours +20.0 ± {se:.1f}" in rows["MSM"].note
    assert rows["MSM"].status == "direction reproduced"
    assert rows["VTM"].status == "direction reproduced"
    assert rows["VTC"].status == "differs"
    assert rows["MSM + VTC + VTM"].status == "differs"   # not above VTC
    assert rows["MSM"].ours == 20.0 and rows["MSM + VTC + VTM"].ours == 40.0
    assert {r.status for r in table5_rows(table, "smoke")} == {"not run"}
