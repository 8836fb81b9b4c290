"""All-in-one (vlbook.models.allinone, vlbook.chapters.allinone): sizes, token rolling,
objectives, heads, converter, chapter helpers."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vlbook.models import create_model  # noqa: E402
from vlbook.models.allinone import (  # noqa: E402
    AllInOne,
    AllInOneConfig,
    RollingPlan,
    channel_shift,
    convert_official_state_dict,
    load_official_checkpoint,
    load_timm_backbone,
    rolled_share,
    rolling_plan,
    temporal_roll,
    word_ids_from_continuations,
)


def tiny_config(**overrides) -> AllInOneConfig:
    base = dict(embed_dim=32, depth=2, num_heads=2, image_size=16, patch_size=8,
                vocab_size=50, max_text_len=8, drop_path_rate=0.0, shuffle_patches=False,
                mask_token_id=3, special_token_ids=(0, 1, 2, 3))
    return AllInOneConfig(**{**base, **overrides})


def make_batch(config: AllInOneConfig, batch_size: int = 4, frames: int = 3, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return AllInOne(config).example_batch(batch_size, frames=frames, text_len=6, generator=gen)


# ---------------------------------------------------------------- Table 1 parameter counts


@pytest.mark.parametrize(
    ("name", "paper_millions"),
    [("allinone_tiny", 12), ("allinone_small", 33), ("allinone_base", 110)],
)
def test_paper_variants_match_table1_parameter_counts(name, paper_millions):
    """Table 1 (12 M / 33 M / 110 M) counts backbone + text embeddings + pooler + VTM head.

    Tolerance 6 % (the paper rounds to whole millions: Ti is 11.4 M). The MLM head (untied
    decoder, ~V x D) and the VTC projections are excluded; with the MLM head B would be 134 M.
    """
    with torch.device("meta"):
        model = create_model(name)
    count = model.table1_parameter_count() / 1e6
    assert abs(count - paper_millions) / paper_millions < 0.06, count
    total = sum(p.numel() for p in model.parameters()) / 1e6
    assert total - count > 0.15 * count  # the excluded MLM head is a large share
    assert model.config.num_frames == 3 and model.config.num_patches == 196


def test_variant_shapes_follow_deit_and_vit():
    with torch.device("meta"):
        small = create_model("allinone_small")
        base = create_model("allinone_base")
    assert small.transformer.pos_embed.shape == (1, 198, 384)  # CLS + distillation + 196
    assert base.transformer.pos_embed.shape == (1, 197, 768)
    assert base.transformer.temporal_embed.shape == (1, 3, 768)
    assert len(base.transformer.blocks) == 12
    assert base.text_embeddings.position_embeddings.weight.shape == (40, 768)


def test_distilled_small_adds_no_temporal_embedding_as_the_code():
    # base_vision_transformer.py: VisionTransformer.visual_embed adds
    # temporal_embed.repeat_interleave(patches_per_frame) to the patch positions;
    # DistilledVisionTransformer.visual_embed (DeiT-S) does not: x = [cls, dist, patches] +
    # [pos[:2], pos[2:]]
    with torch.device("meta"):
        assert create_model("allinone_small").transformer.temporal_embed is None
        assert create_model("allinone_small").config.temporal_embedding is False
        assert create_model("allinone_tiny").transformer.temporal_embed.shape == (1, 3, 192)
    assert AllInOneConfig(distilled=True).temporal_embedding is False  # default follows it
    assert AllInOneConfig(distilled=True, temporal_embedding=True).temporal_embedding
    torch.manual_seed(0)
    small = AllInOne(tiny_config(distilled=True)).eval()
    assert not any("temporal" in name for name, _ in small.named_parameters())
    video = torch.randn(2, 1, 3, 16, 16).repeat(1, 3, 1, 1, 1)  # the same frame three times
    vt = small.transformer
    with torch.no_grad():
        tokens, _ = small.embed_frames(video, shuffle=False)
        patches = vt.patch_embed(video.flatten(0, 1)) + vt.pos_embed[:, 2:]
        prefix = torch.cat([vt.cls_token, vt.dist_token], 1) + vt.pos_embed[:, :2]
        want = torch.cat([prefix.expand(6, -1, -1), patches], 1) + \
            small.token_type_embeddings.weight[1]
    torch.testing.assert_close(tokens, want)
    frames = tokens.view(2, 3, *tokens.shape[1:])
    assert torch.equal(frames[:, 0], frames[:, 2])  # no frame index anywhere
    # a ViT variant (and S with the option on) tells the frames apart by their temporal rows
    for config in (tiny_config(), tiny_config(distilled=True, temporal_embedding=True)):
        other = AllInOne(config).eval()
        with torch.no_grad():
            other.transformer.temporal_embed.normal_()
            out, _ = other.embed_frames(video, shuffle=False)
        out = out.view(2, 3, *out.shape[1:])
        prefix_count = config.num_prefix_tokens
        torch.testing.assert_close(out[:, 2, prefix_count:] - out[:, 0, prefix_count:],
                                   (other.transformer.temporal_embed[0, 2]
                                    - other.transformer.temporal_embed[0, 0]).expand(2, 4, -1))
    # an official S checkpoint carries the (unused, zero) temporal_embed: listed as dropped
    official = official_state_dict(small.config)
    official["transformer.dist_token"] = torch.randn(1, 1, 32)
    official["transformer.pos_embed"] = torch.randn(1, small.config.num_patches + 2, 32)
    result = load_official_checkpoint(small, official)
    assert "transformer.temporal_embed" in result.dropped
    assert "transformer.temporal_embed" not in result.state_dict
    assert torch.equal(vt.dist_token, official["transformer.dist_token"])


# ---------------------------------------------------------------- token rolling


def coded_tokens(batch: int, frames: int, tokens: int) -> torch.Tensor:
    """Token value = 100 * frame + position (same in every channel), shape (B*S, N, 2)."""
    t = torch.arange(frames).view(1, frames, 1, 1) * 100
    n = torch.arange(tokens).view(1, 1, tokens, 1)
    return (t + n).expand(batch, frames, tokens, 2).reshape(batch * frames, tokens, 2).float()


def test_code_rolling_hand_computed_case():
    # 9 image tokens (CLS + 8 patches), ratio 0.5: fold = floor(9 * 0.5 / 2) = 2
    plan = rolling_plan(9, ratio=0.5, layout="code")
    assert plan.forward.tolist() == [1, 2] and plan.backward.tolist() == [7, 8]
    out = temporal_roll(coded_tokens(1, 3, 9), 3, plan)[..., 0].view(3, 9)
    expected = torch.tensor([
        # frame 0: tokens 1-2 come from frame 2 (circular), tokens 7-8 from frame 1
        [0, 201, 202, 3, 4, 5, 6, 107, 108],
        # frame 1: 1-2 from frame 0, 7-8 from frame 2
        [100, 1, 2, 103, 104, 105, 106, 207, 208],
        # frame 2: 1-2 from frame 1, 7-8 from frame 0
        [200, 101, 102, 203, 204, 205, 206, 7, 8],
    ]).float()
    assert torch.equal(out, expected)


def test_code_rolling_of_vit_b_moves_24_plus_24_of_197_tokens():
    plan = rolling_plan(197, ratio=0.25, layout="code")
    assert plan.forward.tolist() == list(range(1, 25))
    assert plan.backward.tolist() == list(range(173, 197))
    config = AllInOneConfig()
    assert rolled_share(config) == pytest.approx(48 / 197)


def test_paper_rolling_moves_one_block_forward():
    plan = rolling_plan(197, ratio=0.25, layout="paper")
    assert plan.forward.tolist() == list(range(1, 50))  # 49 = 25 % of 196 patches
    assert plan.backward.numel() == 0
    out = temporal_roll(coded_tokens(2, 3, 197), 3, plan)[..., 0].view(2, 3, 197)
    assert torch.equal(out[:, 1, 1:50], torch.arange(1, 50).float().expand(2, 49))
    assert torch.equal(out[:, 1, 50:], 100 + torch.arange(50, 197).float().expand(2, 147))
    assert torch.equal(out[:, :, 0], torch.tensor([0.0, 100, 200]).expand(2, 3))  # CLS stays


def test_rolling_off_is_identity():
    x = torch.randn(6, 9, 4)
    assert rolling_plan(9, ratio=0.0).moved == 0
    assert torch.equal(temporal_roll(x, 3, rolling_plan(9, ratio=0.0)), x)
    config = tiny_config(roll_ratio=0.0)
    model = AllInOne(config).eval()
    batch = make_batch(config)
    rolled_off = model.forward_joint(batch["video"], batch["input_ids"], batch["attention_mask"])
    model.config.temporal = "time_average"
    plain = model.forward_joint(batch["video"], batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(rolled_off.hidden, plain.hidden, atol=1e-6)
    model.config.temporal, model.config.roll_ratio = "rolling", 0.5
    rolled = model.forward_joint(batch["video"], batch["input_ids"], batch["attention_mask"])
    assert not torch.allclose(rolled.hidden, plain.hidden, atol=1e-4)


def test_rolling_start_layer_skips_early_blocks():
    config = tiny_config(roll_ratio=0.5, depth=2, roll_start_layer=2)  # no block rolls
    model = AllInOne(config).eval()
    batch = make_batch(config)
    late = model.forward_joint(batch["video"], batch["input_ids"], batch["attention_mask"])
    model.config.temporal = "time_average"
    plain = model.forward_joint(batch["video"], batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(late.hidden, plain.hidden, atol=1e-6)


def test_random_and_varying_selection():
    gen = torch.Generator().manual_seed(0)
    a = rolling_plan(65, ratio=0.25, selection="random", generator=gen)
    b = rolling_plan(65, ratio=0.25, selection="random", generator=gen)
    block = rolling_plan(65, ratio=0.25)
    for plan in (a, b):
        assert plan.moved == block.moved == 16
        chosen = torch.cat([plan.forward, plan.backward])
        assert chosen.unique().numel() == 16 and int(chosen.min()) >= 1  # CLS never moves
    assert not torch.equal(torch.cat([a.forward, a.backward]), torch.cat([b.forward, b.backward]))
    layers = [rolling_plan(65, ratio=0.25, selection="varying", layer=i) for i in range(5)]
    groups = [torch.cat([p.forward, p.backward]).tolist() for p in layers]
    assert groups[0] == list(range(1, 17)) and groups[1] == list(range(17, 33))
    assert groups[4] == groups[0]  # 64 patches / 16 per group: cycles after 4 layers


def test_rolling_plan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="ratio"):
        rolling_plan(197, ratio=1.5)
    with pytest.raises(ValueError, match="selection"):
        rolling_plan(197, selection="diagonal")
    with pytest.raises(ValueError, match="B\\*S"):
        temporal_roll(torch.zeros(5, 9, 2), 3, RollingPlan(torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match="temporal"):
        AllInOneConfig(temporal="timesformer")


def test_channel_shift_hand_computed_case():
    # 2 clips x 3 frames, 2 tokens (CLS + 1 patch), 8 channels; ratio 0.5: 2 + 2 channels move
    x = torch.arange(3).float().view(1, 3, 1, 1).expand(2, 3, 2, 8).reshape(6, 2, 8) + 1
    out = channel_shift(x, 3, ratio=0.5).view(2, 3, 2, 8)
    patch = out[0, :, 1]
    assert patch[:, :2].tolist() == [[0, 0], [1, 1], [2, 2]]  # from t-1, zero at t=0
    assert patch[:, 2:4].tolist() == [[2, 2], [3, 3], [0, 0]]  # from t+1, zero at the end
    assert patch[:, 4:].tolist() == [[1] * 4, [2] * 4, [3] * 4]
    assert torch.equal(out[:, :, 0], x.view(2, 3, 2, 8)[:, :, 0])  # CLS unchanged


@pytest.mark.parametrize("temporal", ["rolling", "time_average", "channel_shift", "flatten",
                                      "single_frame"])
def test_temporal_alternatives_shapes(temporal):
    config = tiny_config(temporal=temporal)
    model = AllInOne(config).eval()
    batch = make_batch(config, batch_size=2)
    out = model.forward_joint(batch["video"], batch["input_ids"], batch["attention_mask"])
    n = config.num_image_tokens  # 1 + 4
    video_tokens = 3 * n if temporal == "flatten" else n
    assert out.hidden.shape == (2, 6 + video_tokens, 32)
    assert out.text_hidden.shape == (2, 6, 32) and out.pooled.shape == (2, 32)
    assert out.frames == (1 if temporal == "single_frame" else 3)


def test_flatten_attends_across_frames_and_per_frame_mode_does_not():
    """Flatten: one sequence, so the text CLS sees every frame in one attention."""
    from vlbook.nn import capture_attention

    config = tiny_config(temporal="flatten")
    model = AllInOne(config).eval()
    batch = make_batch(config, batch_size=2)
    with capture_attention(model) as store:
        model.forward_joint(batch["video"], batch["input_ids"], batch["attention_mask"])
    weights = store["transformer.blocks.0.attn"]
    assert weights.shape == (2, 2, 6 + 15, 6 + 15)
    model.config.temporal = "rolling"
    with capture_attention(model) as store:
        model.forward_joint(batch["video"], batch["input_ids"], batch["attention_mask"])
    weights = store["transformer.blocks.1.attn"]
    assert weights.shape == (6, 2, 11, 11)  # B*S sequences of text + one frame
    assert torch.allclose(weights.sum(-1), torch.ones(6, 2, 11), atol=1e-5)


def test_padding_is_not_attended():
    from vlbook.nn import capture_attention

    config = tiny_config()
    model = AllInOne(config).eval()
    batch = make_batch(config, batch_size=2)
    batch["attention_mask"][:, 4:] = 0
    with capture_attention(model) as store:
        model.forward_joint(batch["video"], batch["input_ids"], batch["attention_mask"])
    assert float(store["transformer.blocks.0.attn"][..., 4:6].abs().max()) < 1e-6


def test_shuffled_patches_report_their_order():
    config = tiny_config(shuffle_patches=True)
    model = AllInOne(config).eval()
    batch = make_batch(config, batch_size=2)
    out = model.forward_video(batch["video"])
    assert out.patch_order.shape == (6, 4)
    assert torch.equal(out.patch_order.sort(dim=1).values, torch.arange(4).expand(6, 4))
    # without rolling the order does not matter (attention is permutation-equivariant)
    raster = model.forward_video(batch["video"], shuffle=False)
    assert torch.allclose(out.hidden[:, 0], raster.hidden[:, 0], atol=1e-5)


# ---------------------------------------------------------------- objectives and heads


def test_word_ids_from_continuations():
    table = torch.tensor([False, False, False, True, False])  # id 3 is a "##" piece
    ids = torch.tensor([[1, 2, 3, 3, 4, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    assert word_ids_from_continuations(ids, table, mask).tolist() == [[0, 1, 1, 1, 2, -1]]


def test_pretrain_step_returns_vtm_and_mlm():
    config = tiny_config()
    model = AllInOne(config)
    torch.manual_seed(0)
    out = model(make_batch(config, batch_size=4))
    assert set(out) >= {"loss", "loss_mlm", "loss_vtm", "acc_vtm"}
    assert torch.allclose(out["loss"].detach(), out["loss_mlm"] + out["loss_vtm"])
    assert abs(float(out["loss_vtm"]) - 0.693) < 0.2  # 2-way CE at initialisation
    out["loss"].backward()
    assert model.vtm_head.fc.weight.grad is not None
    assert model.mlm_head.decoder.weight.grad is not None


def test_vtc_weight_adds_contrastive_loss():
    config = tiny_config(vtc_weight=1.0, mlm_weight=0.0, vtm_weight=0.0)
    model = AllInOne(config)
    out = model(make_batch(config))
    assert set(out) == {"loss", "loss_vtc"}
    assert float(out["loss_vtc"]) > 0


def test_toy_model_loss_decreases_on_a_fixed_batch():
    """8 clips of 4 classes: a class pattern for the video, class words for the caption."""
    torch.manual_seed(0)
    config = tiny_config(embed_dim=48, num_heads=3, mlm_probability=0.3)
    model = AllInOne(config)
    gen = torch.Generator().manual_seed(1)
    classes = torch.arange(8) % 4
    patterns = torch.randn(4, 3, 3, 16, 16, generator=gen)
    video = patterns[classes] + 0.1 * torch.randn(8, 3, 3, 16, 16, generator=gen)
    words = torch.randint(4, 50, (4, 4), generator=gen)
    ids = torch.cat([torch.ones(8, 1).long(), words[classes], torch.full((8, 1), 2)], dim=1)
    batch = {"video": video, "input_ids": ids, "attention_mask": torch.ones_like(ids),
             "video_index": classes}  # same class = same id: never drawn as a negative
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses, mlm = [], []
    for _ in range(50):
        out = model(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(float(out["loss"].detach()))
        mlm.append(float(out["loss_mlm"]))
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5, losses
    assert sum(mlm[-5:]) / 5 < 0.5 * sum(mlm[:5]) / 5, mlm


def test_multiple_choice_and_qa_heads():
    config = tiny_config(num_answers=7)
    model = AllInOne(config).eval()
    batch = make_batch(config, batch_size=2)
    options = torch.randint(4, 50, (2, 5, 6))
    mc = model.score_options(batch["video"], options, torch.ones_like(options))
    assert mc.scores.shape == (2, 5) and torch.equal(mc.prediction, mc.scores.argmax(1))
    # the score of option k is the VTM match logit of (video, option k)
    single = model.match_logits(batch["video"][:1], options[0, 2:3], torch.ones(1, 6).long())
    assert torch.allclose(mc.scores[0, 2], single[0, 1], atol=1e-5)
    logits = model.answer_logits(batch["video"], batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (2, 7)
    model.build_classifier(4)
    assert model.classify(batch["video"]).shape == (2, 4)
    assert model.linear_probe_features(batch["video"]).shape == (2, 32)
    v = model.encode_video(batch["video"])
    t = model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert v.shape == t.shape == (2, 512)
    assert torch.allclose(v.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_bad_inputs_raise_clear_errors():
    config = tiny_config()
    model = AllInOne(config)
    batch = make_batch(config)
    with pytest.raises(ValueError, match="frames"):
        model.encode_video(torch.zeros(2, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="num_frames"):
        model.encode_video(torch.zeros(2, 4, 3, 16, 16))
    with pytest.raises(ValueError, match="vocab_size"):
        model.encode_text(torch.full((2, 4), 50), torch.ones(2, 4).long())
    with pytest.raises(ValueError, match="max_text_len"):
        model.encode_text(torch.ones(2, 9).long(), torch.ones(2, 9).long())
    with pytest.raises(KeyError, match="input_ids"):
        model({"video": batch["video"]})


# ---------------------------------------------------------------- weights


def official_state_dict(config: AllInOneConfig) -> dict[str, torch.Tensor]:
    """A fake official All-in-one checkpoint: the released code's names and shapes.

    From ``allinone_module.py`` (BertEmbeddings ``text_embeddings``, ``token_type_embeddings``,
    ``pooler``, ``itm_score``, ``mlm_score``, ``rank_output``, ``vqa_classifier``),
    ``heads.py`` and ``base_vision_transformer.py`` (``transformer.*``, ``temporal_embed``).
    """
    d, v, h = config.embed_dim, config.vocab_size, int(config.embed_dim * config.mlp_ratio)
    shapes = {
        "text_embeddings.position_ids": (1, config.max_text_len),
        "text_embeddings.word_embeddings.weight": (v, d),
        "text_embeddings.position_embeddings.weight": (config.max_text_len, d),
        "text_embeddings.token_type_embeddings.weight": (2, d),
        "text_embeddings.LayerNorm.weight": (d,),
        "text_embeddings.LayerNorm.bias": (d,),
        "token_type_embeddings.weight": (2, d),
        "transformer.cls_token": (1, 1, d),
        "transformer.pos_embed": (1, config.num_patches + 1, d),
        "transformer.temporal_embed": (1, 3, d),
        "transformer.patch_embed.proj.weight": (d, 3, config.patch_size, config.patch_size),
        "transformer.patch_embed.proj.bias": (d,),
        "transformer.norm.weight": (d,),
        "transformer.norm.bias": (d,),
        "transformer.head.weight": (1000, d),
        "transformer.head.bias": (1000,),
        "pooler.dense.weight": (d, d),
        "pooler.dense.bias": (d,),
        "itm_score.fc.weight": (2, d),
        "itm_score.fc.bias": (2,),
        "rank_output.weight": (1, d),
        "rank_output.bias": (1,),
        "mlm_score.bias": (v,),
        "mlm_score.transform.dense.weight": (d, d),
        "mlm_score.transform.dense.bias": (d,),
        "mlm_score.transform.LayerNorm.weight": (d,),
        "mlm_score.transform.LayerNorm.bias": (d,),
        "mlm_score.decoder.weight": (v, d),
        "txt_proj.weight": (512, d),
        "txt_proj.bias": (512,),
        "vid_proj.weight": (512, d),
        "vid_proj.bias": (512,),
        "vqa_classifier.1.weight": (d // 2, d),
        "vqa_classifier.1.bias": (d // 2,),
        "vqa_classifier.2.weight": (d // 2,),
        "vqa_classifier.2.bias": (d // 2,),
        "vqa_classifier.4.weight": (11, d // 2),
        "vqa_classifier.4.bias": (11,),
    }
    for i in range(config.depth):
        p = f"transformer.blocks.{i}."
        shapes.update({
            p + "norm1.weight": (d,), p + "norm1.bias": (d,),
            p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,),
            p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
            p + "norm2.weight": (d,), p + "norm2.bias": (d,),
            p + "mlp.fc1.weight": (h, d), p + "mlp.fc1.bias": (h,),
            p + "mlp.fc2.weight": (d, h), p + "mlp.fc2.bias": (d,),
        })
    gen = torch.Generator().manual_seed(0)
    return {k: torch.randn(s, generator=gen) for k, s in shapes.items()}


def test_converter_covers_every_official_tensor():
    with torch.device("meta"):
        model = create_model("allinone_tiny", num_frames=4)
    official = official_state_dict(model.config)
    result = convert_official_state_dict({"state_dict": official}, num_frames=4)
    assert set(result.mapping) | set(result.dropped) == set(official)
    assert not set(result.mapping) & set(result.dropped)
    assert set(result.dropped) == {"text_embeddings.position_ids", "transformer.head.weight",
                                   "transformer.head.bias", "rank_output.weight",
                                   "rank_output.bias"}
    own = model.state_dict()
    model.build_qa_head(11)
    own = model.state_dict()
    # every model tensor comes from the checkpoint, with the same shape
    assert set(result.state_dict) == set(own)
    for key, value in result.state_dict.items():
        assert value.shape == own[key].shape, key
    assert result.mapping["itm_score.fc.weight"] == "vtm_head.fc.weight"
    assert result.mapping["vqa_classifier.4.bias"] == "qa_head.4.bias"
    # 3 frames in the checkpoint, 4 in the model: zero-filled as the code's inflation
    temporal = result.state_dict["transformer.temporal_embed"]
    assert torch.equal(temporal[:, :3], official["transformer.temporal_embed"])
    assert torch.equal(temporal[:, 3], torch.zeros_like(temporal[:, 3]))


def test_official_checkpoint_loads_values():
    config = tiny_config(vocab_size=60, max_text_len=8)
    official = official_state_dict(config)
    official["module.mpp_score.decoder.weight"] = torch.zeros(768, config.embed_dim)
    model = AllInOne(config)
    load_official_checkpoint(model, official)
    assert torch.equal(model.vtm_head.fc.weight, official["itm_score.fc.weight"])
    assert torch.equal(model.transformer.blocks[1].mlp.fc2.bias,
                       official["transformer.blocks.1.mlp.fc2.bias"])
    assert model.qa_head is not None and model.qa_head[4].out_features == 11
    with pytest.raises(KeyError, match="no vlbook counterpart"):
        convert_official_state_dict({"mystery_head.weight": torch.zeros(2)})
    official["pooler.dense.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="pooler.dense.weight"):
        load_official_checkpoint(AllInOne(config), official)


def test_timm_backbone_loads_from_local_state_dict(tmp_path):
    timm = pytest.importorskip("timm")
    vit = timm.create_model("deit_tiny_patch16_224", pretrained=False, num_classes=0)
    path = tmp_path / "deit_tiny.pth"
    torch.save(vit.state_dict(), path)
    model = create_model("allinone_tiny", vocab_size=100)
    loaded = load_timm_backbone(model, path)
    assert "transformer.blocks.11.mlp.fc2.weight" in loaded
    assert torch.equal(model.transformer.blocks[3].attn.qkv.weight, vit.blocks[3].attn.qkv.weight)
    assert torch.equal(model.transformer.pos_embed, vit.pos_embed)


@pytest.mark.slow
def test_paper_size_optimiser_step_on_cpu():
    torch.manual_seed(0)
    model = create_model("allinone_base")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01,
                                  betas=(0.9, 0.98))
    batch = model.example_batch(1, text_len=40)
    before = model.vtm_head.fc.weight.detach().clone()
    with pytest.warns(UserWarning, match="no negative"):  # one clip: VTM positives only
        out = model(batch)
    assert torch.isfinite(out["loss"])
    optimizer.zero_grad()
    out["loss"].backward()
    optimizer.step()
    assert not torch.equal(before, model.vtm_head.fc.weight)


# ---------------------------------------------------------------- toy training signal (issue 8)


def _video_spread_of_pooled(model: AllInOne) -> float:
    """Spread of the pooled CLS over 16 clips with one fixed caption, relative to its size."""
    gen = torch.Generator().manual_seed(0)
    batch = model.example_batch(16, text_len=8, generator=gen)
    ids = batch["input_ids"][:1].expand(16, -1)
    with torch.no_grad():
        pooled = model.eval().forward_joint(batch["video"], ids, torch.ones_like(ids)).pooled
    return float((pooled.std(0).pow(2).mean() / pooled.pow(2).mean()).sqrt())


def test_bert_init_at_toy_width_makes_the_pooled_cls_blind_to_the_video():
    """Why VTM sat at log 2: N(0, 0.02) at width 64 gives a gain of 0.16 per linear layer."""
    torch.manual_seed(0)
    bert = create_model("allinone_toy", init="bert", vocab_size=60)
    torch.manual_seed(0)
    xavier = create_model("allinone_toy", vocab_size=60)
    assert xavier.config.init == "xavier"  # the toy variant's default
    assert _video_spread_of_pooled(bert) < 0.02
    assert _video_spread_of_pooled(xavier) > 0.1
    # the vocabulary decoder keeps BERT's scale under either init
    assert abs(float(xavier.mlm_head.decoder.weight.detach().std()) - 0.02) < 0.005
    with pytest.raises(ValueError, match="init="):
        AllInOneConfig(init="kaiming")


def _vtm_curve(init: str, vtc_weight: float, steps: int = 60) -> list[float]:
    torch.manual_seed(0)
    config = tiny_config(embed_dim=48, num_heads=3, init=init, mlm_weight=0.0,
                         vtc_weight=vtc_weight)
    model = AllInOne(config)
    gen = torch.Generator().manual_seed(1)
    classes = torch.arange(8) % 4
    patterns = torch.randn(4, 3, 3, 16, 16, generator=gen)
    video = patterns[classes] + 0.1 * torch.randn(8, 3, 3, 16, 16, generator=gen)
    words = torch.randint(4, 50, (4, 4), generator=gen)
    ids = torch.cat([torch.ones(8, 1).long(), words[classes], torch.full((8, 1), 2)], dim=1)
    batch = {"video": video, "input_ids": ids, "attention_mask": torch.ones_like(ids),
             "video_index": classes}
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    vtm = []
    for _ in range(steps):
        out = model(batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        vtm.append(float(out["loss_vtm"]))
    return vtm


def test_vtm_leaves_log2_within_60_steps_with_xavier_init_and_vtc():
    """The toy recipe (Xavier init + VTC) learns VTM on a fixed batch; BERT init stays at log 2.

    The batch: 8 clips of 4 classes, a class pattern for the video, class words for the caption.
    """
    learned = _vtm_curve("xavier", 1.0)
    assert sum(learned[-10:]) / 10 < 0.3, learned
    stuck = _vtm_curve("bert", 1.0)
    assert abs(sum(stuck[-10:]) / 10 - 0.693) < 0.03, stuck


def test_hard_vtm_negatives_come_from_other_clips_and_need_vtc():
    config = tiny_config(vtc_weight=1.0, vtm_negatives="hard", mlm_weight=0.0)
    model = AllInOne(config)
    out = model(make_batch(config, batch_size=6))
    assert {"loss_vtm", "loss_vtc"} <= set(out)
    out["loss"].backward()
    with pytest.raises(ValueError, match="vtc_weight"):
        AllInOne(tiny_config(vtm_negatives="hard"))(make_batch(config, batch_size=4))
    with pytest.raises(ValueError, match="vtm_negatives"):
        AllInOneConfig(vtm_negatives="hardest")


def test_model_variant_copies_weights_and_rejects_shape_changes():
    from vlbook.chapters.allinone import model_variant

    model = AllInOne(tiny_config(temporal="single_frame"))
    rolled = model_variant(model, temporal="rolling", roll_ratio=0.5)
    assert rolled.config.temporal == "rolling" and model.config.temporal == "single_frame"
    assert torch.equal(rolled.vtm_head.fc.weight, model.vtm_head.fc.weight)
    assert rolled.vtm_head.fc.weight.data_ptr() != model.vtm_head.fc.weight.data_ptr()
    with pytest.raises(ValueError, match="embed_dim"):
        model_variant(model, embed_dim=64)
    with pytest.raises(ValueError, match="temporal="):
        model_variant(model, temporal="sideways")


def test_cached_clips_decode_once_and_redraw_captions():
    from vlbook.data.cache import ClipCache

    class FakeClips:
        items = [(0, 0), (1, 0)]
        records = [{"captions": ["a", "b", "c"]}, {"captions": ["d", "e", "f"]}]
        reads = 0
        epoch = 0

        def __len__(self):
            return 2

        def set_epoch(self, epoch):
            self.epoch = epoch

        def _rng(self, index):
            import numpy as np

            return np.random.default_rng([self.epoch, index])

        def _fields(self, rec, sub, rng):
            return {"text": rec["captions"][int(rng.integers(3))]}

        def sample_fields(self, index):
            return {"video_index": index, **self._fields(self.records[index], 0,
                                                         self._rng(index))}

        def __getitem__(self, index):
            self.reads += 1
            return {"video": torch.full((1,), float(index)), "video_index": index,
                    **self._fields(self.records[index], 0, self._rng(index)), "skipped": []}

    fake = FakeClips()
    cached = ClipCache(fake)
    first = cached[1]
    texts = set()
    for epoch in range(8):
        cached.set_epoch(epoch)
        again = cached[1]
        texts.add(again["text"])
        assert torch.equal(again["video"], first["video"]) and again["video_index"] == 1
    assert fake.reads == 1  # decoded once
    assert len(texts) > 1 and texts <= {"d", "e", "f"}


def test_allinone_benchmark_times_the_toy_model(tmp_path, monkeypatch):
    import argparse

    from vlbook.bench import allinone as bench

    monkeypatch.setenv("VLBOOK_RESULTS", str(tmp_path))
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--variants", "allinone_toy", "--toy-batch-size", "2", "--steps",
                              "1", "--warmup", "0", "--temporal", "rolling", "flatten",
                              "--text-len", "8", "--threads", "1"])
    payload = bench.run(args)
    rows = payload["results"]
    assert [(r["mode"], r["name"].split("-")[2]) for r in rows] == [
        ("train", "rolling"), ("infer", "rolling"), ("train", "flatten"), ("infer", "flatten")]
    assert all(r["step_time_s_median"] > 0 and r["batch_size"] == 2 for r in rows)
    assert all(r["flops_per_step"] > 0 and r["peak_memory_mb"] > 0 for r in rows)
    assert (tmp_path / "bench" / "allinone-cpu-no.json").is_file()
    with pytest.raises(ValueError, match="not All-in-one variants"):
        bench.run(parser.parse_args(["--variants", "vit_b"]))


def test_multiple_choice_evaluation_hand_computed_case():
    """5-way, temporal subset and per-attribute pairwise accuracies on fixed option scores."""
    from vlbook.chapters.allinone import evaluate_multiple_choice
    from vlbook.models.allinone import MultipleChoiceOutput

    attributes = [[None, "colour", "motion", "order", "shape"],
                  ["colour", None, "motion", "size", "order"]]
    fixed_scores = torch.tensor([[2.0, 1.0, 3.0, 0.0, 1.5],   # truth 0: loses to motion only
                                 [5.0, 4.0, 1.0, 2.0, 3.0]])  # truth 1: loses to colour only

    class Items(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"video": torch.zeros(1), "option_ids": torch.zeros(5, 2, dtype=torch.long),
                    "option_mask": torch.ones(5, 2, dtype=torch.long), "label": i,
                    "option_attributes": attributes[i], "row": i}

        @staticmethod
        def collate(samples):
            return {"video": torch.stack([s["video"] for s in samples]),
                    "option_ids": torch.stack([s["option_ids"] for s in samples]),
                    "option_mask": torch.stack([s["option_mask"] for s in samples]),
                    "label": torch.tensor([s["label"] for s in samples]),
                    "option_attributes": [s["option_attributes"] for s in samples],
                    "row": torch.tensor([s["row"] for s in samples])}

    class FixedScores:
        def eval(self):
            return self

        def score_options(self, video, option_ids, option_mask):
            scores = fixed_scores[: video.shape[0]]
            return MultipleChoiceOutput(scores, scores.argmax(1))

    out = evaluate_multiple_choice(FixedScores(), Items(), batch_size=2)
    assert out["mc_accuracy"] == 0.0  # both truths lose one pair
    # temporal subset: item 0 {truth, motion, order} -> motion wins; item 1 {truth, motion,
    # order} -> truth (4.0) wins
    assert out["mc_temporal_accuracy"] == 0.5
    assert out["mc_temporal_chance"] == pytest.approx(1 / 3)
    assert out["pair_colour"] == 0.5 and out["pair_motion"] == 0.5
    assert out["pair_order"] == 1.0 and out["pair_shape"] == 1.0 and out["pair_size"] == 1.0
    assert out["pair_temporal"] == pytest.approx(3 / 4)


# ---- Table 8 toy protocol: position/time init, order blindness, the probe's statistics ------


def test_position_init_std_draws_patch_positions_and_time_only():
    torch.manual_seed(0)
    default = AllInOne(tiny_config(image_size=64))
    assert bool((default.transformer.temporal_embed == 0).all())  # the code: zeros
    torch.manual_seed(0)
    model = AllInOne(tiny_config(image_size=64, position_init_std=0.5))
    vt = model.transformer
    # truncated at 2 std: |x| <= 1, std of N(0, 1) truncated at +-2 = 0.88
    patch_positions = vt.pos_embed.detach()[:, 1:]
    assert float(patch_positions.abs().max()) <= 1.0
    assert float(patch_positions.std()) == pytest.approx(0.44, abs=0.05)
    time = vt.temporal_embed.detach()
    assert float(time.abs().max()) <= 1.0 and float(time.std()) > 0.3
    assert float(vt.pos_embed.detach()[0, 0].std()) < 0.04  # the CLS keeps N(0, 0.02)
    with pytest.raises(ValueError, match="position_init_std"):
        tiny_config(position_init_std=-0.1)


def test_embedding_norms_of_the_frame_tokens():
    torch.manual_seed(0)
    model = AllInOne(tiny_config(position_init_std=0.5))
    video = make_batch(model.config, batch_size=2)["video"]
    norms = model.embedding_norms(video)
    vt = model.transformer
    content = vt.patch_embed(video.flatten(0, 1)).detach()
    assert norms["content"] == pytest.approx(float(content.norm(dim=-1).mean()), rel=1e-5)
    position, time = vt.pos_embed.detach()[0, 1:], vt.temporal_embed.detach()[0]
    assert norms["position"] == pytest.approx(float(position.norm(dim=-1).mean()), rel=1e-5)
    assert norms["time"] == pytest.approx(float(time.norm(dim=-1).mean()), rel=1e-5)
    assert norms["time/content"] == pytest.approx(norms["time"] / norms["content"])


def test_time_average_without_temporal_embedding_cannot_tell_a_clip_from_its_reverse():
    # the "time average" row: a single-frame model never trains the other frames' temporal
    # rows (zero in the code), so averaging its frames is blind to their order; rolling and
    # flatten (given temporal embeddings) are not
    torch.manual_seed(0)
    sizes = dict(image_size=64, init="xavier")  # 65 image tokens: 8 + 8 rolled per layer
    model = AllInOne(tiny_config(temporal="time_average", **sizes)).eval()
    batch = make_batch(model.config, batch_size=2)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    forward = model.forward_joint(batch["video"], ids, mask).pooled
    reverse = model.forward_joint(batch["video"].flip(1), ids, mask).pooled
    torch.testing.assert_close(forward, reverse)
    for mode, std in (("rolling", None), ("flatten", 0.5)):
        torch.manual_seed(0)
        other = AllInOne(tiny_config(temporal=mode, position_init_std=std, **sizes)).eval()
        a = other.forward_joint(batch["video"], ids, mask).pooled
        b = other.forward_joint(batch["video"].flip(1), ids, mask).pooled
        assert float((a - b).abs().max()) > 1e-4, mode


def test_paired_difference_hand_computed():
    from vlbook.results import paired_difference

    # d = [1, 0, 0, -1]: mean 0; sample std sqrt(2/3); s.e. sqrt(2/3)/2 = 0.408 (x 100 points)
    diff, se = paired_difference([1, 1, 0, 0], [0, 1, 0, 1], scale=100)
    assert diff == pytest.approx(0.0)
    assert se == pytest.approx(100 * (2 / 3) ** 0.5 / 2)
    with pytest.raises(ValueError, match="same items"):
        paired_difference([1, 0], [1, 0, 1])


def test_evaluate_probe_scores_truth_against_its_opposite():
    from vlbook.chapters.allinone import evaluate_probe

    # MOTIONS = left right up down grow shrink appear disappear
    table = torch.zeros(4, 8)
    table[0, :2] = torch.tensor([1.0, 2.0])  # left clip: right above left -> wrong both ways
    table[1, [0, 1, 2]] = torch.tensor([1.0, 2.0, 3.0])  # right clip: says up, right > left
    table[2, [2, 3, 4]] = torch.tensor([1.0, 0.0, 5.0])  # up clip: says grow, up > down
    table[3, 4] = 4.0  # grow clip: right, grow > shrink

    class Fixed(torch.nn.Module):  # returns row i of the table for clip i
        config = tiny_config()

        def answer_logits(self, video, ids, mask):
            return table[video[:, 0, 0, 0, 0].long()]

    labels = torch.tensor([0, 1, 2, 4])
    video = torch.arange(4.0).view(4, 1, 1, 1, 1).expand(4, 1, 1, 2, 2).clone()
    data = {"test": {"video": video, "label": labels}, "chance": 1 / 8,
            "question": (torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))}
    out = evaluate_probe(Fixed(), data)
    assert out["probe_accuracy"] == pytest.approx(0.25)
    assert out["direction_accuracy"] == pytest.approx(0.75)
    assert out["hits"] == [False, True, True, True]


def _probe_row(method, hits):
    return {"method": method, "direction_accuracy": sum(hits) / len(hits), "items": len(hits),
            "hits": hits}


def test_table8_ledger_rows_need_rolling_and_flatten_beyond_paired_noise():
    from vlbook.chapters.allinone import table8_ledger_rows

    n = 100
    blind = [i % 2 == 0 for i in range(n)]  # 50 %
    # 90 %: against blind, d = +1 on the 50 odd items, -1 on the 10 multiples of 10, else 0:
    # mean 0.4, sample variance (0.6 - 0.16) * 100 / 99 = 0.444, s.e. 0.0667
    strong = [i % 10 != 0 for i in range(n)]
    table8a = [_probe_row("single frame", blind), _probe_row("time average", blind),
               _probe_row("flatten", strong), _probe_row("token rolling", strong)]
    table8b = [{"ratio": 0.0, **_probe_row("", blind)}, {"ratio": 0.25, **_probe_row("", strong)}]
    rows = {(r.table, r.row): r for r in table8_ledger_rows(table8a, table8b, "toy")}
    assert rows[("Table 8a", "single frame")].status == "direction reproduced"
    assert rows[("Table 8a", "time average")].status == "direction reproduced"
    assert rows[("Table 8a", "token rolling")].status == "direction reproduced"
    assert rows[("Table 8a", "flatten")].status == "differs"  # rolling not above flatten
    assert rows[("Table 8b", "ratio 0.25")].status == "direction reproduced"
    assert rows[("Table 8a", "single frame")].ours == 50.0
    assert "token rolling - single frame: +40 ± 6.7 (paired 1 s.e.)" in rows[
        ("Table 8a", "token rolling")].note
    # flatten at the single frame's level: the single-frame row needs both, so it differs
    table8a[2] = _probe_row("flatten", blind)
    rows = {(r.table, r.row): r for r in table8_ledger_rows(table8a, table8b, "toy")}
    assert rows[("Table 8a", "single frame")].status == "differs"
    assert all(r.status == "not run" for r in table8_ledger_rows(table8a, table8b, "smoke"))


def test_table8b_row_is_written_as_not_run_when_the_probe_skips_the_ratios():
    from vlbook.chapters.allinone import table8_ledger_rows

    rows = table8_ledger_rows([], [{"ratio": 0.5, "hits": [1, 0], "direction_accuracy": 0.5}],
                              "smoke")
    (row,) = [r for r in rows if r.table == "Table 8b"]
    assert (row.row, row.status, row.ours) == ("ratio 0.25", "not run", None)
    assert "[0.5]" in row.note
