"""UMT (vlbook.models.umt, vlbook.chapters.umt): sizes, FLOPs, masking, UTA, targets, stage 2,
teachers, converter."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vlbook.analysis import count_flops  # noqa: E402
from vlbook.chapters.umt import activation_bytes  # noqa: E402
from vlbook.models import create_model  # noqa: E402
from vlbook.models.umt import (  # noqa: E402
    UMT,
    HFCLIPTeacher,
    ToyCLIP,
    ToyCLIPConfig,
    UMTConfig,
    convert_official_state_dict,
    load_official_checkpoint,
    student_parameter_count,
)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> UMTConfig:
    base = dict(embed_dim=32, depth=3, num_heads=2, image_size=16, patch_size=8, num_frames=4,
                teacher_dim=24, align_layers=2, drop_path_rate=0.0, decoder_dim=16,
                decoder_depth=1, decoder_heads=2, text_width=32, text_layers=1,
                fusion_layers=1, text_heads=2, text_intermediate=64, vocab_size=60,
                max_text_len=16, shared_dim=16, mask_token_id=3, special_token_ids=(0, 1))
    return UMTConfig(**{**base, **overrides})


def tiny_teacher(seed: int = 0) -> ToyCLIP:
    torch.manual_seed(seed)
    return ToyCLIP(ToyCLIPConfig(image_size=16, patch_size=8, width=32, depth=2, heads=2,
                                 text_width=32, text_depth=1, vocab_size=60, max_text_len=16,
                                 output_dim=24))


def tiny_model(**overrides) -> UMT:
    torch.manual_seed(0)
    model = UMT(tiny_config(**overrides))
    model.set_teacher(tiny_teacher())
    return model


def video(batch: int = 2, frames: int = 4, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, frames, 3, size, size, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- paper sizes (exact)


@pytest.mark.parametrize(("name", "millions", "gflops"),
                         [("umt_base", 87, 180), ("umt_large", 304, 596)])
def test_paper_variants_match_parameter_counts_and_flops(name, millions, gflops):
    """Table 5: ViT-B 87 M / 180 GFLOPs and ViT-L 304 M / 596 GFLOPs at 8x224 (fvcore counts
    multiply-adds: half of torch's FLOPs). The 87 M includes a K400 classifier."""
    with torch.device("meta"):
        model = create_model(name, num_classes=400)
    assert model.config.grid == (8, 14, 14)
    count = (student_parameter_count(model) + sum(p.numel() for p in model.head.parameters()))
    assert abs(count / 1e6 - millions) / millions < 0.02, count
    flops = count_flops(lambda: create_model(name), torch.zeros(1, 8, 3, 224, 224),
                        forward=lambda m, v: m.encode_video_tokens(v))
    assert abs(flops.total / 2e9 - gflops) / gflops < 0.01, flops.total


def test_stage2_text_side_is_bert_base_split_9_plus_3():
    with torch.device("meta"):
        model = create_model("umt_base", stage=2)
    assert len(model.text_encoder.encoder.layer) == 9 and len(model.fusion) == 3
    assert all(hasattr(layer, "crossattention") for layer in model.fusion)
    text = sum(p.numel() for n, p in model.named_parameters()
               if n.startswith(("text_encoder.", "fusion.")))
    # BERT-base without pooler (108.9 M) + 3 cross-attention blocks (3 x 2.36 M)
    assert abs(text / 1e6 - 116.0) < 0.5, text


# ---------------------------------------------------------------- masking and UTA


def test_semantic_mask_keeps_the_code_count_per_frame_and_follows_attention():
    model = tiny_model(mask_ratio=0.75)
    b, t, n = 64, 4, 4
    attention = torch.tensor([0.97, 0.01, 0.01, 0.01]).expand(b, t, n).contiguous()
    mask = model.make_mask(b, t, attention, generator=torch.Generator().manual_seed(0))
    per_frame = (~mask).view(b, t, n).sum(-1)
    assert torch.all(per_frame == n - int(0.75 * n))  # 1 visible token per frame
    # token 0 carries 97 % of the attention: it is the one kept nearly always
    assert (~mask).view(b, t, n)[..., 0].float().mean() > 0.9


@pytest.mark.parametrize("mask_type", ["tube", "random"])
def test_other_mask_types_hide_the_same_number_of_tokens(mask_type):
    model = tiny_model(mask_type=mask_type, mask_ratio=0.5)
    mask = model.make_mask(3, 4, None)
    assert mask.shape == (3, 16) and torch.all(mask.sum(1) == 8)
    if mask_type == "tube":
        frames = mask.view(3, 4, 4)
        assert torch.equal(frames, frames[:, :1].expand_as(frames))


def test_uta_equals_hand_computed_cosine_on_the_visible_tokens():
    model = tiny_model()
    clip = video()
    gen = torch.Generator().manual_seed(1)
    out = model.stage1_losses(clip, generator=gen)
    # recompute from the definition with the same mask
    targets = model.teacher_targets(clip, 2)
    _, hidden, positions = model.forward_student(clip, out.mask, return_layers=2)
    per_layer = []
    for k in range(2):
        head = model.uta_heads[k]
        s = head["norm"](head["head"](model.norm(hidden[k]) + model.pos_embed[positions]))
        t = targets.tokens[k][~out.mask].view(2, -1, 24)
        per_layer.append(((F.normalize(s, dim=-1) - t) ** 2).sum(-1).mean())
    assert torch.allclose(out.uta, torch.stack(per_layer).mean(), atol=1e-5)
    assert out.mask.sum(1).tolist() == [4 * (4 - 1), 4 * (4 - 1)]  # 80 % of 4 -> 3 masked


def test_spatial_attention_keeps_frames_apart():
    """Table 3 "ViT-S": with per-frame attention, changing frame 1 leaves frame 0 unchanged."""
    clip = video(1)
    changed = clip.clone()
    changed[:, 1] += 1.0
    for attention, same in (("spatial", True), ("joint", False)):
        model = tiny_model(student_attention=attention).eval()
        a = model.encode_video_tokens(clip)[:, :4]
        b = model.encode_video_tokens(changed)[:, :4]
        assert torch.allclose(a, b, atol=1e-5) is same


def test_toy_teacher_targets_are_unit_vectors_and_attention_is_a_distribution_share():
    teacher = tiny_teacher()
    out = teacher.teacher_outputs(torch.randn(5, 3, 16, 16), 2)
    assert out.tokens.shape == (2, 5, 4, 24)
    assert torch.allclose(out.tokens.norm(dim=-1), torch.ones(2, 5, 4), atol=1e-5)
    total = out.cls_attention.sum(-1)  # CLS->patches: less than 1 (the CLS column is dropped)
    assert torch.all(total < 1) and torch.all(total > 0)
    with pytest.raises(ValueError, match="teacher has 2 layers"):
        teacher.teacher_outputs(torch.randn(1, 3, 16, 16), 3)


def test_teacher_grid_mismatch_and_missing_teacher_raise():
    model = UMT(tiny_config())
    with pytest.raises(RuntimeError, match="needs a teacher"):
        model.stage1_losses(video())
    model.set_teacher(ToyCLIP(ToyCLIPConfig(image_size=16, patch_size=4, width=32, depth=2,
                                            heads=2, output_dim=24)))
    with pytest.raises(ValueError, match="16 tokens per frame"):
        model.stage1_losses(video())
    with pytest.raises(ValueError, match="mask_type"):
        tiny_config(mask_type="block")
    with pytest.raises(ValueError, match="UMT expects video"):
        tiny_model().encode_video_tokens(torch.randn(1, 5, 3, 16, 16))


# ---------------------------------------------------------------- targets, memory, learning


@pytest.mark.parametrize("targets", [dict(masked_recovery_weight=1.0), dict(pixel_weight=1.0)])
def test_table1_targets_add_their_loss(targets):
    model = tiny_model(**targets)
    out = model.stage1_losses(video())
    extra = out.masked_recovery if "masked_recovery_weight" in targets else out.pixel
    assert extra > 0 and torch.allclose(out.loss, out.uta + extra)
    out.loss.backward()
    assert model.decoder["embed"].weight.grad.abs().sum() > 0


def test_decoder_targets_cost_more_activation_memory_than_uta_alone():
    """Table 1's memory claim: UTA on visible tokens only is cheaper than a pixel decoder."""
    def measure(**targets) -> int:
        model = tiny_model(**targets)
        clip = video(2)
        return activation_bytes(model, lambda: model.stage1_losses(clip).loss)

    uta, mae = measure(), measure(pixel_weight=1.0, uta_weight=0.0)
    assert uta < mae


def test_uta_loss_decreases_on_a_fixed_batch():
    model = tiny_model()
    clip = video(4)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(40):
        out = model.stage1_losses(clip, generator=torch.Generator().manual_seed(step % 2))
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::8]


def test_teacher_stays_frozen_and_outside_the_state_dict():
    model = tiny_model()
    before = [p.clone() for p in model.teacher.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.stage1_losses(video()).loss.backward()
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, model.teacher.parameters()))
    assert not any(k.startswith("teacher") for k in model.state_dict())


# ---------------------------------------------------------------- stage 2


def stage2_batch(batch: int = 4, frames: int = 4, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (batch, 8), generator=gen)
    ids[:, 0] = 1
    att = torch.ones(batch, 8, dtype=torch.long)
    att[0, 6:] = 0
    ids[0, 6:] = 0
    return {"video": video(batch, frames, seed=seed), "input_ids": ids, "attention_mask": att,
            "video_index": torch.arange(batch)}


def test_stage2_losses_images_and_videos_and_learning():
    model = tiny_model(stage=2)
    batch = stage2_batch()
    out = model.pretrain_step(batch)
    assert set(out) == {"loss", "vtc", "vtm", "mlm", "uta"}
    assert torch.allclose(out["loss"], out["vtc"] + out["vtm"] + out["mlm"] + out["uta"])
    image = model.stage1_losses(batch["video"][:, :1])  # images: one frame, 50 % masked
    assert image.mask.shape == (4, 4) and torch.all(image.mask.sum(1) == 2)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    first = None
    for _ in range(25):
        loss = model.pretrain_step(batch)["vtc"]
        step = model.pretrain_step(batch)["loss"]
        opt.zero_grad()
        step.backward()
        opt.step()
        first = float(loss) if first is None else first
    assert float(model.pretrain_step(batch)["vtc"]) < 0.5 * first


def test_fusion_self_attention_is_bidirectional_and_mc_scores():
    model = tiny_model(stage=2).eval()
    batch = stage2_batch()
    tokens = model.encode_video_tokens(batch["video"])
    text = model.encode_text_tokens(batch["input_ids"], batch["attention_mask"])
    changed = text.clone()
    changed[:, -1] += 1.0
    first = model.fuse(text, batch["attention_mask"], tokens)[1:, 0]
    second = model.fuse(changed, batch["attention_mask"], tokens)[1:, 0]
    assert not torch.allclose(first, second)  # token 0 sees the last token: not causal
    options = batch["input_ids"][:, None].repeat(1, 3, 1)
    out = model.score_options(batch["video"], options, batch["attention_mask"][:, None]
                              .repeat(1, 3, 1))
    assert out.scores.shape == (4, 3) and torch.allclose(out.scores[:, 0], out.scores[:, 1])


# ---------------------------------------------------------------- transformers CLIP teacher


def test_hf_clip_teacher_matches_its_definition():
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    config = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                              num_attention_heads=2, image_size=32, patch_size=8,
                              projection_dim=24, attn_implementation="eager")
    torch.manual_seed(0)
    teacher = HFCLIPTeacher(CLIPVisionModelWithProjection(config))
    frames = torch.randn(3, 3, 16, 16)  # resized to 32 inside
    out = teacher.teacher_outputs(frames, 2)
    assert out.tokens.shape == (2, 3, 16, 24) and out.cls_attention.shape == (3, 16)
    pixels = F.interpolate(frames * teacher.scale + teacher.shift, size=(32, 32),
                           mode="bicubic", align_corners=False)
    ref = teacher.model(pixel_values=pixels).image_embeds  # projected post-LN CLS
    assert torch.allclose(out.pooled, F.normalize(ref, dim=-1), atol=1e-5)
    # ImageNet -> CLIP normalisation: a raw pixel value maps to CLIP's normalised value
    raw = torch.full((1, 3, 1, 1), 0.5)
    imagenet = (raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    clip = (raw - torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)) / \
        torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    assert torch.allclose(imagenet * teacher.scale + teacher.shift, clip, atol=1e-6)


def test_hf_clip_teacher_offline_error_is_clear():
    with pytest.raises(RuntimeError, match="could not load the CLIP teacher"):
        HFCLIPTeacher.from_pretrained("/nonexistent/clip-folder")


# ---------------------------------------------------------------- converter


def official_stage1_state_dict(model: UMT) -> dict[str, torch.Tensor]:
    """Official names/shapes of single_modality's PretrainVisionTransformer (UMT-B layout)."""
    c = model.config
    d, t = c.embed_dim, c.teacher_dim
    state = {"encoder.patch_embed.proj.weight": torch.randn(d, 3, 1, c.patch_size, c.patch_size),
             "encoder.patch_embed.proj.bias": torch.randn(d),
             "encoder.norm.weight": torch.randn(d), "encoder.norm.bias": torch.randn(d)}
    for i in range(c.depth):
        p = f"encoder.blocks.{i}."
        state.update({
            p + "norm1.weight": torch.randn(d), p + "norm1.bias": torch.randn(d),
            p + "attn.q_bias": torch.randn(d), p + "attn.v_bias": torch.randn(d),
            p + "attn.qkv.weight": torch.randn(3 * d, d),
            p + "attn.proj.weight": torch.randn(d, d), p + "attn.proj.bias": torch.randn(d),
            p + "norm2.weight": torch.randn(d), p + "norm2.bias": torch.randn(d),
            p + "mlp.fc1.weight": torch.randn(4 * d, d), p + "mlp.fc1.bias": torch.randn(4 * d),
            p + "mlp.fc2.weight": torch.randn(d, 4 * d), p + "mlp.fc2.bias": torch.randn(d),
        })
    for k in range(c.align_layers):
        p = f"clip_decoder.{k}."
        state.update({p + "head.weight": torch.randn(t, d), p + "head.bias": torch.randn(t),
                      p + "norm.weight": torch.randn(t), p + "norm.bias": torch.randn(t)})
    return state


def test_converter_covers_every_stage1_tensor_and_loads_values():
    model = UMT(tiny_config())
    state = official_stage1_state_dict(model)
    result = convert_official_state_dict({"model": state})
    assert set(result.mapping) | set(result.dropped) == set(state)
    assert set(result.state_dict) == set(model.state_dict())  # every model tensor is covered
    load_official_checkpoint(model, {"model": state})
    assert torch.equal(model.blocks[1].attn.q_bias, state["encoder.blocks.1.attn.q_bias"])
    assert torch.equal(model.uta_heads[1]["head"].weight, state["clip_decoder.1.head.weight"])


def test_converter_stage2_names_split_bert_layers_and_reject_unknown():
    model = UMT(tiny_config(stage=2))
    own = model.state_dict()
    stage1 = official_stage1_state_dict(model)
    state = {f"vision_encoder.{k}": v for k, v in stage1.items()}
    for key, value in own.items():  # BERT side: text layer 0, fusion layer 0 == official 1
        if key.startswith("text_encoder."):
            state["text_encoder.bert." + key[len("text_encoder."):]] = torch.randn(value.shape)
        elif key.startswith("fusion.0."):
            state["text_encoder.bert.encoder.layer.1." + key[len("fusion.0."):]] = \
                torch.randn(value.shape)
        elif key.startswith("mlm_head.") and not key.startswith("mlm_head.decoder"):
            state["text_encoder.cls.predictions." + key[len("mlm_head."):]] = \
                torch.randn(value.shape)
    state.update({"vision_proj.weight": torch.randn(16, 32), "vision_proj.bias": torch.randn(16),
                  "text_proj.weight": torch.randn(16, 32), "text_proj.bias": torch.randn(16),
                  "itm_head.weight": torch.randn(2, 32), "itm_head.bias": torch.randn(2),
                  "temp": torch.tensor(0.05),
                  # multi_modality vit.py: PretrainVisionTransformer.pool_norm (add_pool_norm)
                  "vision_encoder.pool_norm.weight": torch.randn(32),
                  "vision_encoder.pool_norm.bias": torch.randn(32),
                  "clip_teacher.transformer.resblocks.0.ln_1.weight": torch.randn(8)})
    result = convert_official_state_dict(state, text_layers=1)
    assert set(result.mapping) | set(result.dropped) == set(state)
    assert "clip_teacher.transformer.resblocks.0.ln_1.weight" in result.dropped
    missing = {k for k in own if k not in result.state_dict  # the decoder is tied
               and not k.startswith("mlm_head.decoder.")}
    assert not missing, sorted(missing)[:5]
    load_official_checkpoint(model, state)
    assert torch.allclose(model.temp(), torch.tensor(0.05))
    assert result.mapping["vision_encoder.pool_norm.weight"] == "pool_norm.weight"
    assert torch.equal(model.pool_norm.bias, state["vision_encoder.pool_norm.bias"])
    assert torch.equal(model.fusion[0].crossattention.self.query.weight,
                       state["text_encoder.bert.encoder.layer.1.crossattention.self.query.weight"])
    with pytest.raises(KeyError, match="no vlbook counterpart"):
        convert_official_state_dict({"mystery.weight": torch.zeros(1)})
    bad = dict(stage1)
    bad["encoder.norm.weight"] = torch.zeros(7)
    with pytest.raises(ValueError, match="shape mismatches"):
        load_official_checkpoint(UMT(tiny_config()), bad)


def official_vision_stage2_state_dict(model: UMT) -> dict[str, torch.Tensor]:
    """``vision_encoder.*`` and ``vision_proj`` of a multi_modality checkpoint: the stage-1
    layout under ``vision_encoder.`` plus ``pool_norm`` (vit.py ``add_pool_norm``)."""
    c = model.config
    gen = torch.Generator().manual_seed(1)
    state = {f"vision_encoder.{k}": v for k, v in official_stage1_state_dict(model).items()}
    state.update({
        "vision_encoder.pool_norm.weight": 1 + torch.randn(c.embed_dim, generator=gen),
        "vision_encoder.pool_norm.bias": torch.randn(c.embed_dim, generator=gen),
        "vision_proj.weight": torch.randn(c.shared_dim, c.embed_dim, generator=gen) * 0.2,
        "vision_proj.bias": torch.randn(c.shared_dim, generator=gen),
    })
    return state


def test_stage2_video_feature_is_vision_proj_of_pool_norm_of_the_token_mean():
    # vit.py PretrainVisionTransformer.forward: x_vis = encoder(x) (after encoder.norm); without
    # keep_temporal pool_norm(x_vis.mean(1)), with it pool_norm(x_vis.view(B, T, -1, C).mean(2))
    # (no CLS token anywhere); umt.py then applies vision_proj
    model = UMT(tiny_config(stage=2)).eval()
    state = official_vision_stage2_state_dict(model)
    with pytest.warns(UserWarning, match="lacks"):  # the BERT side is not in this fixture
        result = load_official_checkpoint(model, state)
    assert result.mapping["vision_encoder.pool_norm.weight"] == "pool_norm.weight"
    clip = video()
    with torch.no_grad():
        x_vis = model.encode_video_tokens(clip)  # (B, T*H'W', D)

        def official(pooled):
            normed = F.layer_norm(pooled, (32,), state["vision_encoder.pool_norm.weight"],
                                  state["vision_encoder.pool_norm.bias"], eps=1e-6)
            return normed @ state["vision_proj.weight"].T + state["vision_proj.bias"]

        expected = official(x_vis.mean(1))
        expected_frames = official(x_vis.view(2, 4, -1, 32).mean(2))
        torch.testing.assert_close(model.encode_video(clip), expected)
        torch.testing.assert_close(model.encode_video_frames(clip), expected_frames)
        plain = x_vis.mean(1) @ state["vision_proj.weight"].T + state["vision_proj.bias"]
        assert float((model.encode_video(clip) - plain).abs().max()) > 1e-2  # the old feature
    assert model.pool_norm.eps == 1e-6 and UMT(tiny_config()).pool_norm is None  # stage 1: none
    # the chapter starts stage 2 from the stage-1 student: pool_norm is new, at identity
    fresh = UMT(tiny_config(stage=2))
    loaded = fresh.load_state_dict(UMT(tiny_config()).state_dict(), strict=False)
    assert {"pool_norm.weight", "pool_norm.bias"} <= set(loaded.missing_keys)
    assert not loaded.unexpected_keys
    assert torch.equal(fresh.pool_norm.weight, torch.ones(32))
    assert torch.equal(fresh.pool_norm.bias, torch.zeros(32))


def test_alignment_head_layernorm_eps_is_1e5_in_stage2_and_1e6_in_stage1():
    # multi_modality vit.py Linear_Decoder: nn.LayerNorm(output_dim) (eps 1e-5); single_modality
    # modeling_pretrain_umt.py Linear_Decoder: norm_layer = LayerNorm(eps=1e-6)
    for stage, eps in ((1, 1e-6), (2, 1e-5)):
        torch.manual_seed(0)
        model = UMT(tiny_config(stage=stage))
        assert all(h["norm"].eps == eps for h in model.uta_heads)
        head, norm = model.uta_heads[0]["head"], model.uta_heads[0]["norm"]
        with torch.no_grad():  # head outputs of variance ~1e-6 and a LayerNorm bias (the L2
            # normalisation cancels a pure scale): the eps decides the result
            head.weight.mul_(1e-3)
            norm.bias.normal_()
            hidden = [torch.randn(2, 5, 32) for _ in range(2)]
            positions = torch.arange(5).expand(2, 5)
            got = model.uta_predictions(hidden, positions)[0]
            pre = head(model.norm(hidden[0]) + model.pos_embed[positions])
            for e in (1e-5, 1e-6):
                want = F.normalize(F.layer_norm(pre, (24,), norm.weight, norm.bias, eps=e), dim=-1)
                assert torch.allclose(got, want, atol=1e-4) == (e == eps), (stage, e)


def test_frame_averaged_similarity_is_the_mean_of_per_frame_cosines():
    from vlbook.models.umt import frame_averaged_similarity

    # video 0: frames (1, 0) and (0, 10); video 1: frames (1, 3) twice; texts (1, 0), (0, 1).
    # Per frame: cos((1,0),(1,0)) = 1, cos((0,10),(1,0)) = 0 -> 0.5; video 1: 1/sqrt(10) ...
    videos = torch.tensor([[[1.0, 0.0], [0.0, 10.0]], [[1.0, 3.0], [1.0, 3.0]]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    got = frame_averaged_similarity(videos, texts)  # (texts, videos)
    want = torch.tensor([[0.5, 1 / 10 ** 0.5], [0.5, 3 / 10 ** 0.5]])
    torch.testing.assert_close(got, want)
    # pool first: mean (0.5, 5) -> cos 0.5 / sqrt(25.25) = 0.0995 with text 0: the order flips
    pooled = F.normalize(texts, dim=-1) @ F.normalize(videos.mean(1), dim=-1).T
    assert pooled[0, 0] < pooled[0, 1] and got[0, 0] > got[0, 1]
    assert torch.allclose(frame_averaged_similarity(videos[:, 0], texts),
                          F.normalize(texts, dim=-1) @ F.normalize(videos[:, 0], dim=-1).T)


def test_keep_temporal_retrieval_and_choices_average_per_frame_cosines():
    # evaluation (retrieval_utils.py): get_sim(vision_proj(pooled per frame), text_proj(CLS))
    model = tiny_model(stage=2, keep_temporal=True).eval()
    with torch.no_grad():
        model.pool_norm.weight.normal_()
    batch = stage2_batch()
    ids, att, clip = batch["input_ids"], batch["attention_mask"], batch["video"]
    with torch.no_grad():
        frames = model.vision_proj(model.pool_norm(
            model.encode_video_tokens(clip).view(4, 4, -1, 32).mean(2)))  # (B, T, D)
        text = model.text_proj(model.encode_text_tokens(ids, att)[:, 0])
        want = torch.einsum("nd,vtd->nvt", F.normalize(text, dim=-1),
                            F.normalize(frames, dim=-1)).mean(-1)
        got = model.retrieval_scores(clip, ids, att)
        pool_first = model.retrieval_scores(clip, ids, att, keep_temporal=False)
    torch.testing.assert_close(got, want)
    assert float((got - pool_first).abs().max()) > 1e-3
    options = ids[:, None].repeat(1, 3, 1)
    scores = model.score_options(clip, options, att[:, None].repeat(1, 3, 1)).scores
    torch.testing.assert_close(scores[:, 0], torch.diagonal(want))
    # the released configs keep frames apart: the paper variants do, the toy pools first
    with torch.device("meta"):
        assert create_model("umt_base").config.keep_temporal
        assert create_model("umt_large").config.keep_temporal
    assert not UMTConfig().keep_temporal


def test_stage2_vtc_with_tube_masks_and_keep_temporal_uses_per_frame_logits():
    # umt.py encode_vision keeps the frames apart in training only with tube masks; the VTC
    # logits are then get_sim(...) / temp = mean_t cos(v_t, t) / temp, soft targets = diagonal
    model = tiny_model(stage=2, keep_temporal=True, mask_type="tube", mask_ratio=0.5).eval()
    batch = stage2_batch()
    with torch.no_grad():
        out = model.stage2_losses(batch, generator=torch.Generator().manual_seed(3))
        visible = model.stage1_losses(batch["video"],
                                      generator=torch.Generator().manual_seed(3)).tokens
        frames = model.vision_proj(model.pool_norm(visible.view(4, 4, -1, 32).mean(2)))
        text = model.text_proj(model.encode_text_tokens(batch["input_ids"],
                                                        batch["attention_mask"])[:, 0])
        logits = torch.einsum("vtd,nd->vnt", F.normalize(frames, dim=-1),
                              F.normalize(text, dim=-1)).mean(-1) / model.temp()
        target = torch.arange(4)
        want = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        torch.testing.assert_close(out.vtc, want)
        pooled_logits = (F.normalize(model.vision_proj(model.pool_norm(visible.mean(1))), dim=-1)
                         @ F.normalize(text, dim=-1).T / model.temp())
        pooled = (F.cross_entropy(pooled_logits, target)
                  + F.cross_entropy(pooled_logits.T, target)) / 2
        assert abs(float(pooled - want)) > 1e-4
        # semantic masks: the code pools over all visible tokens whatever keep_temporal says
        semantic = tiny_model(stage=2, keep_temporal=True).eval()
        plain = tiny_model(stage=2, keep_temporal=False).eval()
        a = semantic.stage2_losses(batch, generator=torch.Generator().manual_seed(3)).vtc
        b = plain.stage2_losses(batch, generator=torch.Generator().manual_seed(3)).vtc
        torch.testing.assert_close(a, b)


# ---------------------------------------------------------------- paper-size step (slow)


@pytest.mark.slow
def test_one_optimiser_step_of_umt_base_at_batch_1():
    model = create_model("umt_base", drop_path_rate=0.0)
    model.set_teacher(ToyCLIP(ToyCLIPConfig(image_size=224, patch_size=16, width=64, depth=6,
                                            heads=2, output_dim=512)))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clip = torch.randn(1, 8, 3, 224, 224)
    loss = model.pretrain_step({"video": clip})["loss"]
    loss.backward()
    before = model.blocks[0].attn.qkv.weight.detach().clone()
    opt.step()
    assert torch.isfinite(loss) and not torch.equal(before, model.blocks[0].attn.qkv.weight)


# ---------------------------------------------------------------- chapter helpers


def test_probe_labels_and_target_rows():
    from vlbook.chapters.umt import shape_labels, target_variant

    labels = shape_labels(["first a red disc moves left, then a blue block rises",
                           "a big rhombus grows", "a tiny three-sided shape appears"])
    assert labels.tolist() == [0, 3, 2]  # circle, diamond, triangle (SHAPE_WORDS order)
    with pytest.raises(ValueError, match="names no synthetic shape"):
        shape_labels(["an empty scene"])
    assert UMTConfig(**target_variant("mae")).uta_weight == 0.0
    with pytest.raises(ValueError, match="unknown target"):
        target_variant("pixels")


def test_heldout_alignment_is_the_mean_of_per_clip_cosines_with_its_error():
    import torch.nn.functional as F

    from vlbook.chapters.umt import heldout_alignment

    model = tiny_model()
    clips = video(batch=5, seed=3)
    mean, se = heldout_alignment(model, clips, batch_size=2, with_error=True)
    assert heldout_alignment(model, clips, batch_size=5) == pytest.approx(mean, abs=1e-6)
    # by hand, one clip at a time: the teacher's last layer against the last aligned head
    per_clip = []
    for i in range(5):
        clip = clips[i:i + 1]
        target = model.teacher_targets(clip, 1).tokens[-1]
        _, hidden, positions = model.forward_student(clip, return_layers=1)
        head = model.uta_heads[-1]
        predicted = F.normalize(head["norm"](head["head"](
            model.norm(hidden[-1]) + model.pos_embed[positions])), dim=-1)
        per_clip.append(float((predicted * target).sum(-1).mean()))
    values = torch.tensor(per_clip)
    assert mean == pytest.approx(float(values.mean()), abs=1e-5)
    assert se == pytest.approx(float(values.std() / 5 ** 0.5), abs=1e-5)
    assert -1.0 <= mean <= 1.0 and se > 0


# ---------------------------------------------------------------- paired comparisons, ledger


def test_paired_difference_is_the_mean_and_error_of_per_item_differences():
    from vlbook.results import paired_difference

    # items 1..4: a right on 1, 2, 4; b right on 1 only -> differences 0, 1, 0, 1
    mean, se = paired_difference(torch.tensor([1.0, 1, 0, 1]), torch.tensor([1.0, 0, 0, 0]))
    assert mean == pytest.approx(0.5)
    assert se == pytest.approx((1 / 3) ** 0.5 / 2)  # std (n-1) of 0,1,0,1 is sqrt(1/3)
    # two systems that agree everywhere differ by exactly 0 with no error, although each
    # score alone has a binomial error
    assert paired_difference(torch.tensor([1.0, 0, 1]), torch.tensor([1.0, 0, 1])) == (0.0, 0.0)
    with pytest.raises(ValueError, match="same items"):
        paired_difference(torch.ones(3), torch.ones(4))


def test_compare_counts_both_the_items_and_the_spread_between_seeds():
    from vlbook.chapters.umt import compare

    a = [torch.tensor([0.6, 0.5, 0.7]), torch.tensor([0.8, 0.5, 0.5])]
    b = [torch.tensor([0.5, 0.5, 0.5]), torch.tensor([0.5, 0.5, 0.5])]
    c = compare(a, b)
    # per seed: mean(0.1, 0, 0.2) = 0.1 and mean(0.3, 0, 0) = 0.1; per item over seeds:
    # 0.2, 0, 0.1 -> mean 0.1, std 0.1, item error 0.1 / sqrt(3); seed error 0
    assert c.per_seed == pytest.approx([0.1, 0.1])
    assert c.difference == pytest.approx(0.1)
    assert c.se_items == pytest.approx(0.1 / 3 ** 0.5)
    assert c.se_seeds == pytest.approx(0.0, abs=1e-12)
    assert c.se == pytest.approx(0.1 / 3 ** 0.5)
    # seeds that disagree: per-seed 0.3 and -0.1 -> seed error std(0.3, -0.1) / sqrt(2) = 0.2
    d = compare([torch.tensor([0.8, 0.8]), torch.tensor([0.4, 0.4])], [torch.full((2,), 0.5)] * 2)
    assert d.se_seeds == pytest.approx(0.2)
    assert d.se == pytest.approx(0.2)  # items: per-item mean differences 0.1, 0.1 -> 0
    assert not d.clearly_above() and compare(a, b, scale=100).a == pytest.approx(60.0)
    assert "2 seeds: +0.3 -0.1" in d.note()


def test_ablation_jobs_train_each_variant_once_and_the_headline_ones_per_seed():
    from vlbook.chapters.umt import ablation_jobs

    ab = {"mask_types": ["semantic", "tube"], "ratios": [0.8, 0.95], "layers": [2, 4],
          "targets": ["uta", "uta+mae", "mae"], "seeds": 3}
    jobs = ablation_jobs(ab, seed=10)
    keys = [key for key, _, _ in jobs]
    # the default (semantic, 0.8, K=2, uta) is one run shared by every group
    assert keys.count(()) == 3 and [s for k, _, s in jobs if k == ()] == [10, 11, 12]
    assert keys.count((("mask_type", "tube"),)) == 3
    assert keys.count((("mask_ratio", 0.95),)) == 3
    assert keys.count((("pixel_weight", 1.0), ("uta_weight", 0.0))) == 3  # mae
    assert keys.count((("align_layers", 4),)) == 1  # not a headline row: one seed
    assert keys.count((("pixel_weight", 1.0),)) == 1  # uta+mae
    assert len(jobs) == 4 * 3 + 2


def _results(uta_mae: tuple[float, float], tube: tuple[float, float]) -> dict:
    from vlbook.chapters.umt import Comparison

    def comparison(diff: float, se: float) -> dict:
        return {"a": 50 + diff, "b": 50.0, "difference": diff, "se": se, "se_items": se,
                "se_seeds": 0.0, "per_seed": [diff]}

    sizes = [{"variant": v, "params (M)": 1.0, "paper params (M)": 1.0, "GMACs 8x224": 1.0,
              "paper GFLOPs": 1.0} for v in ("umt_base", "umt_large")]
    return {
        "sizes": sizes,
        "memory_vit_b": [{"target": "uta", "activation GB (ViT-B, batch 1)": 1.0},
                         {"target": "mae", "activation GB (ViT-B, batch 1)": 4.0}],
        "comparisons": {"uta - mae (motion probe)": comparison(*uta_mae),
                        "semantic - tube (teacher cosine)": comparison(*tube),
                        "semantic - random (teacher cosine)": comparison(0.05, 0.01),
                        "0.8 - 0.95 (teacher cosine)": Comparison(**comparison(0.01, 0.001))},
        "fine_tuned": {"student - CLIP-S": comparison(10.0, 2.0),
                       "uta - mae": comparison(-10.0, 2.0)},
        "stage2": {"t2v": {"R@1": 30.0}, "retrieval_chance_R@1": 0.5, "num_texts": 200},
    }


def test_ledger_rows_cover_the_chapter_spec_exactly_with_computed_verdicts():
    from vlbook.chapters.umt import LEDGER_ROWS, ledger_rows

    rows = ledger_rows(_results(uta_mae=(5.0, 2.0), tube=(0.01, 0.01)), "toy")
    assert [(r.paper, r.table, r.row, r.metric) for r in rows] == list(LEDGER_ROWS)
    status = {(r.table, r.metric): r.status for r in rows}
    assert status[("Table 1", "memory ratio")] == "direction reproduced"  # 1 / 4 < 1
    assert [r.ours for r in rows if r.metric == "memory ratio"] == [0.25]
    assert status[("Table 1", "SSV2 (toy: motion probe)")] == "direction reproduced"  # 5 > 2*2
    assert status[("Table 1", "SSV2 (toy: motion FT)")] == "differs"  # -10: the other way
    assert status[("Table 2", "K400 (toy: teacher cosine)")] == "differs"  # 0.01 < 2 * 0.01
    assert status[("Figure 4", "K400 (toy: teacher cosine)")] == "direction reproduced"
    assert status[("Table 3", "SSV2 (toy: motion FT)")] == "direction reproduced"
    assert status[("Table 7", "R@1 (toy: synthetic)")] == "direction reproduced"
    assert status[("Sec. 4.1", "stage 1 + 2 full schedules")] == "not run"
    # a difference just inside two standard errors is not claimed
    rows = ledger_rows(_results(uta_mae=(3.9, 2.0), tube=(0.03, 0.01)), "toy")
    status = {(r.table, r.metric): r.status for r in rows}
    assert status[("Table 1", "SSV2 (toy: motion probe)")] == "differs"
    assert status[("Table 2", "K400 (toy: teacher cosine)")] == "direction reproduced"
    # smoke trains nothing worth a verdict; without the ablation every row is still written
    assert {r.status for r in ledger_rows(_results((5.0, 2.0), (0.03, 0.01)), "smoke")
            if r.scale != "exact"} == {"not run"}
    bare = ledger_rows({"sizes": _results((0, 1), (0, 1))["sizes"]}, "toy")
    assert [(r.paper, r.table, r.row, r.metric) for r in bare] == list(LEDGER_ROWS)
    assert all(r.status == "not run" for r in bare if r.scale != "exact")
    with pytest.raises(ValueError, match="umt_base and umt_large"):
        ledger_rows({}, "toy")
