"""E-ViLM (vlbook.models.evilm, vlbook.chapters.evilm): Table 8 sizes, MVM masking and targets,
tokenizer, objectives."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vlbook.chapters.evilm import codebook_usage, pretrain, train_tokenizer  # noqa: E402
from vlbook.models import create_model  # noqa: E402
from vlbook.models.evilm import (  # noqa: E402
    PAPER_TABLE8,
    EViLM,
    EViLMConfig,
    SemanticVQTokenizer,
    TokenizerConfig,
    caption_word_targets,
    load_edgenext_weights,
    mask_video_regions,
    parameter_breakdown,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_config(**overrides) -> EViLMConfig:
    base = dict(image_size=32, video_backbone="conv", conv_dims=(8, 16), conv_stride=8,
                num_frames=2, vocab_size=40, max_text_len=8, text_hidden=16, text_layers=1,
                text_heads=2, text_intermediate=32, hidden=32, decoder_depth=1,
                decoder_heads=2, num_codes=12, mask_token_id=3, special_token_ids=(0, 1, 2, 3),
                video_token_norm=True, temporal_embedding=True)
    return EViLMConfig(**{**base, **overrides})


def tiny_tokenizer(**overrides) -> SemanticVQTokenizer:
    base = dict(encoder="vit", image_size=32, patch_size=8, encoder_dim=16, encoder_depth=1,
                encoder_heads=2, num_codes=12, code_dim=8, decoder_dim=16, decoder_depth=1,
                decoder_heads=2, vocab_size=40, max_frames=2, special_token_ids=(0, 1, 2, 3))
    return SemanticVQTokenizer(TokenizerConfig(**{**base, **overrides}))


def make_batch(model: EViLM, batch_size: int = 4, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    batch = model.example_batch(batch_size, generator=gen)
    batch["input_ids"][:, 0] = 1
    return batch


# ------------------------------------------------------------------ Table 8 parameter counts


def test_paper_model_matches_table8_breakdown_on_meta():
    """Every Table 8 row within rounding (5 %, the paper prints 2 digits) and 16.3 M total."""
    with torch.device("meta"):
        model = create_model("evilm")
    counts = parameter_breakdown(model)
    for row, value in counts.items():
        assert abs(value - PAPER_TABLE8[row]) / PAPER_TABLE8[row] < 0.05, (row, value)
    assert abs(sum(counts.values()) - 16.3e6) < 0.05e6
    assert model.paper_parameter_count() == sum(counts.values())
    # the 4-frame, 256 px grid: EdgeNeXt stride 32 -> 4 x 8 x 8 video tokens
    assert model.config.grid == (4, 8, 8)
    # pre-training heads (MVM over 9,420 codes, MLM) are outside Table 8
    total = sum(p.numel() for p in model.parameters())
    assert total - sum(counts.values()) > 9420 * 384


def test_paper_tokenizer_sizes_on_meta():
    """9,420 codes of dimension 32; 8-layer decoder; a CLIP ViT-B/32 encoder on a 8x8 grid."""
    with torch.device("meta"):
        tok = SemanticVQTokenizer(TokenizerConfig(), config_only=True)
    assert tuple(tok.quantizer.codebook.shape) == (9420, 32)
    assert len(tok.decoder.blocks) == 8
    assert tok.grid(4) == (4, 8, 8)
    assert 85e6 < sum(p.numel() for p in tok.encoder.parameters()) < 90e6


def test_bad_config_and_bad_video_raise_clear_errors():
    with pytest.raises(ValueError, match="video_backbone"):
        tiny_config(video_backbone="resnet")
    with pytest.raises(ValueError, match="mvm_ratio"):
        tiny_config(mvm_ratio=1.5)
    model = EViLM(tiny_config())
    with pytest.raises(ValueError, match=r"batch\['video'\]"):
        model.encode_video(torch.zeros(1, 3, 3, 32, 32))
    with pytest.raises(ValueError, match="target"):
        TokenizerConfig(target="depth")


def test_missing_edgenext_weight_file_names_the_path(tmp_path):
    model = create_model("evilm", vocab_size=50, max_text_len=8, text_layers=1)
    with pytest.raises(RuntimeError, match="nothing.pth"):
        load_edgenext_weights(model.video_encoder, tmp_path / "nothing.pth")


def test_edgenext_weights_round_trip_from_a_local_file(tmp_path):
    source = create_model("evilm", vocab_size=50, max_text_len=8, text_layers=1)
    path = tmp_path / "edgenext.pth"
    torch.save(source.video_encoder.net.state_dict(), path)
    target = create_model("evilm", vocab_size=50, max_text_len=8, text_layers=1)
    unused = load_edgenext_weights(target.video_encoder, path)
    assert unused == []
    for (name, a), (_, b) in zip(source.video_encoder.net.state_dict().items(),
                                 target.video_encoder.net.state_dict().items()):
        assert torch.equal(a, b), name


# ------------------------------------------------------------------ masking and targets


def test_mask_video_regions_zeroes_exactly_the_masked_regions():
    video = torch.ones(1, 2, 3, 8, 8)
    mask = torch.zeros(1, 2 * 2 * 2, dtype=torch.bool)
    mask[0, 1] = True  # frame 0, row 0, column 1
    mask[0, 6] = True  # frame 1, row 1, column 0
    out = mask_video_regions(video, mask, (2, 2, 2))
    assert out[0, 0, :, :4, 4:].abs().sum() == 0
    assert out[0, 1, :, 4:, :4].abs().sum() == 0
    assert out.sum() == video.sum() - 2 * 3 * 16
    with pytest.raises(ValueError, match="do not fit"):
        mask_video_regions(video, mask, (2, 3, 3))


def test_block_mask_hides_forty_percent_of_each_frame():
    model = EViLM(tiny_config(image_size=64))  # 8 x 8 regions per frame
    mask = model.mask_video(3, generator=torch.Generator().manual_seed(0))
    per_frame = mask.view(3, 2, 64).sum(-1)
    assert torch.all(per_frame == int(0.4 * 64))


def test_caption_word_targets_are_multi_hot_without_specials():
    ids = torch.tensor([[1, 7, 9, 7, 2, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0]])
    targets = caption_word_targets(ids, mask, 12, special_token_ids=(0, 1, 2))
    assert targets.sum() == 2 and targets[0, 7] == 1 and targets[0, 9] == 1


def test_mvm_loss_is_cross_entropy_on_masked_regions_against_tokenizer_codes():
    """Eq. 3 by hand: with a frozen tokenizer, L_MVM = CE(head(h_i), code_i) averaged over the
    masked regions of the joint pass."""
    torch.manual_seed(0)
    model = EViLM(tiny_config(use_vtm=False, use_mlm=False)).eval()
    tok = tiny_tokenizer()
    model.set_video_tokenizer(tok)
    batch = make_batch(model, 2)
    torch.manual_seed(5)
    losses = model.pretrain_step(batch)
    torch.manual_seed(5)
    region_mask = model.mask_video(2)
    codes = tok.encode(batch["video"]).codes
    masked_video = mask_video_regions(batch["video"], region_mask, model.config.grid)
    out = model.forward_joint(masked_video, batch["input_ids"], batch["attention_mask"])
    logits = model.mvm_head(out.video_hidden[region_mask])
    expected = torch.nn.functional.cross_entropy(logits, codes[region_mask])
    assert torch.allclose(losses["mvm"], expected, atol=1e-5)
    assert set(losses) == {"mvm", "loss"}


def test_separate_mvm_pass_leaves_vtm_on_the_unmasked_frames():
    """``mvm_separate_pass``: VTM reads a pass over the unmasked frames (the same loss as a
    model without MVM on the same pairs), MVM a second pass over the masked ones; the default
    single pass gives VTM the masked frames."""
    torch.manual_seed(0)
    separate = EViLM(tiny_config(use_mlm=False, mvm_separate_pass=True)).eval()
    tok = tiny_tokenizer()
    separate.set_video_tokenizer(tok)
    batch = make_batch(separate, 4)
    joint = EViLM(tiny_config(use_mlm=False)).eval()
    joint.load_state_dict(separate.state_dict())
    joint.set_video_tokenizer(tok)
    no_mvm = EViLM(tiny_config(use_mlm=False, use_mvm=False)).eval()
    no_mvm.load_state_dict(separate.state_dict())
    out = {}
    for name, model in (("separate", separate), ("joint", joint), ("no_mvm", no_mvm)):
        torch.manual_seed(5)  # the same VTM pairs (drawn first), the same region mask
        out[name] = model.pretrain_step(batch)
    torch.testing.assert_close(out["separate"]["vtm"], out["no_mvm"]["vtm"])
    assert not torch.allclose(out["joint"]["vtm"], out["no_mvm"]["vtm"])
    torch.testing.assert_close(out["separate"]["mvm"], out["joint"]["mvm"])  # same masked pass


def test_mvm_without_tokenizer_is_skipped_with_a_warning():
    model = EViLM(tiny_config())
    with pytest.warns(UserWarning, match="no video tokenizer"):
        losses = model.pretrain_step(make_batch(model))
    assert "mvm" not in losses and {"vtm", "mlm"} <= set(losses)


def test_tokenizer_grid_must_match_the_backbone_stride():
    model = EViLM(tiny_config())
    with pytest.raises(ValueError, match="stride"):
        model.set_video_tokenizer(tiny_tokenizer(patch_size=16))


def test_unimodal_encodings_are_normalised_and_ignore_the_other_modality():
    model = EViLM(tiny_config()).eval()
    batch = make_batch(model, 3)
    v = model.encode_video(batch["video"])
    t = model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert torch.allclose(v.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(t.norm(dim=-1), torch.ones(3), atol=1e-5)
    other = dict(batch, input_ids=batch["input_ids"].flip(0))
    assert torch.equal(model.encode_video(other["video"]), v)


def test_multiple_choice_scores_every_option():
    model = EViLM(tiny_config()).eval()
    batch = make_batch(model, 2)
    options = batch["input_ids"][:, None].repeat(1, 3, 1)
    out = model.score_options(batch["video"], options, torch.ones_like(options))
    assert out.scores.shape == (2, 3)
    assert torch.allclose(out.scores[:, 0], out.scores[:, 1], atol=1e-5)


# ------------------------------------------------------------------ learning


def test_tokenizer_focal_loss_decreases_and_uses_the_codebook():
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 40, (4, 6), generator=gen)
    batch = {"video": torch.randn(4, 2, 3, 32, 32, generator=gen), "input_ids": ids,
             "attention_mask": torch.ones_like(ids)}
    log = train_tokenizer(tok, None, steps=40, batch_size=4, lr=3e-3, cache=[batch])
    assert log[-1]["reconstruction"] < 0.5 * log[0]["reconstruction"]
    assert codebook_usage(tok, [batch]) > 25.0  # percent of 12 codes


def test_bce_and_pixel_tokenizers_compute_their_own_losses():
    gen = torch.Generator().manual_seed(0)
    video = torch.randn(2, 2, 3, 32, 32, generator=gen)
    targets = torch.zeros(2, 40)
    targets[:, 5] = 1
    focal = tiny_tokenizer()(video, targets)
    torch.manual_seed(0)
    bce_tok = tiny_tokenizer(word_loss="bce")
    bce = bce_tok(video, targets)
    assert bce.prediction.shape == (2, 40) and focal.prediction.shape == (2, 40)
    # BCE >= focal for the same logits (the focal factor p <= 1 down-weights negatives)
    torch.manual_seed(0)
    same = tiny_tokenizer()
    same.load_state_dict(bce_tok.state_dict())
    assert same(video, targets).reconstruction_loss < bce.reconstruction_loss
    pixels = tiny_tokenizer(target="pixels")(video)
    assert pixels.prediction.shape == (2, 2 * 16, 8 * 8 * 3)
    assert pixels.loss > 0


def test_pretraining_loss_decreases_on_a_fixed_batch():
    torch.manual_seed(0)
    model = EViLM(tiny_config())
    tok = tiny_tokenizer()
    model.set_video_tokenizer(tok)
    batch = make_batch(model, 4)
    preset = {"train": {"lr": 3e-3, "weight_decay": 0.0, "warmup_steps": 1}}

    def fixed_masks_loss() -> dict:
        torch.manual_seed(123)  # same VTM pairs, text and video masks before and after
        with torch.no_grad():
            return {k: float(v) for k, v in model.pretrain_step(batch).items()}

    before = fixed_masks_loss()
    log = pretrain(model, None, preset, steps=60, cache=[batch])
    after = fixed_masks_loss()
    assert {"vtm", "mlm", "mvm"} <= set(log[0])
    for term, factor in (("mlm", 0.9), ("mvm", 0.6), ("loss", 0.8)):
        assert after[term] < factor * before[term], (term, before, after)


@pytest.mark.slow
def test_paper_size_model_takes_one_optimiser_step_on_cpu():
    model = create_model("evilm")
    model.set_video_tokenizer(SemanticVQTokenizer(TokenizerConfig(
        encoder="vit", encoder_dim=64, encoder_depth=1, encoder_heads=2, decoder_depth=1,
        decoder_dim=64, decoder_heads=2)))
    batch = model.example_batch(2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    before = model.decoder.blocks[0].mlp.fc1.weight.detach().clone()
    losses = model(batch)
    losses["loss"].backward()
    opt.step()
    assert {"vtm", "mlm", "mvm"} <= set(losses)
    assert not torch.equal(before, model.decoder.blocks[0].mlp.fc1.weight)


# ------------------------------------------------------------------ toy fixes (second shift)


def test_toy_variant_uses_xavier_init_and_paper_variant_bert_init():
    """Xavier-uniform std = sqrt(2 / (fan_in + fan_out)); BERT's = 0.02; bad names raise."""
    toy = create_model("evilm_toy")
    assert toy.config.init == "xavier"
    weight = toy.decoder.blocks[0].mlp.fc1.weight  # (4 * 96, 96)
    expected = (2.0 / (weight.shape[0] + weight.shape[1])) ** 0.5
    assert abs(float(weight.std()) - expected) / expected < 0.05
    assert abs(float(toy.mlm_head[-1].weight.std()) - 0.02) < 0.003  # vocabulary stays BERT's
    bert = EViLM(tiny_config(init="bert"))
    assert float(bert.decoder.blocks[0].mlp.fc1.weight.std()) < 0.021
    with pytest.raises(ValueError, match="init='kaiming'"):
        tiny_config(init="kaiming")


def test_unimodal_vtc_learns_on_a_fixed_batch_at_the_toy_settings():
    """The toy recipe (Xavier, lr 3e-4) takes VTC well below log(B) within 40 steps; VTC is
    the unimodal contrastive loss (Sec. 4.4) added to the toy pre-training."""
    torch.manual_seed(0)
    model = EViLM(tiny_config(init="xavier", use_vtm=False, use_mlm=False, use_mvm=False,
                              vtc_weight=1.0))
    batch = make_batch(model, 8)
    log = pretrain(model, None, {"train": {"lr": 3e-4, "weight_decay": 0.0,
                                           "warmup_steps": 1}}, steps=40, cache=[batch])
    assert log[-1]["vtc"] < 0.5 * float(torch.log(torch.tensor(8.0))), (log[0], log[-1])
    assert log[-1]["vtc"] < 0.5 * log[0]["vtc"], (log[0], log[-1])


def test_video_tokenizer_round_trips_and_attaches_for_full_training(tmp_path):
    from vlbook.chapters.evilm import build_pretraining_model
    from vlbook.models.evilm import load_video_tokenizer, save_video_tokenizer

    tok = tiny_tokenizer()
    video = make_batch(EViLM(tiny_config()), 2)["video"]
    path = save_video_tokenizer(tok, tmp_path / "vt.pt")
    loaded = load_video_tokenizer(path)
    assert torch.equal(loaded.encode(video).codes, tok.eval().encode(video).codes)
    assert not any(p.requires_grad for p in loaded.parameters())
    model = build_pretraining_model("evilm_toy", tokenizer_checkpoint=None, use_mvm=False)
    assert model.video_tokenizer is None
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_video_tokenizer(tmp_path / "missing.pt")


def test_split_batches_cuts_every_field():
    from vlbook.chapters.evilm import split_batches

    model = EViLM(tiny_config())
    batch = make_batch(model, 5)
    parts = split_batches([batch], 2)
    assert [len(p["text"]) for p in parts] == [2, 2, 1]
    assert torch.equal(torch.cat([p["video"] for p in parts]), batch["video"])
    with pytest.raises(ValueError, match="size=0"):
        split_batches([batch], 0)


def test_table1_rows_split_the_count_and_check_the_encoder_per_frame():
    """The Sec. 4.2 row is the video encoder of the joint forward over 4 frames / 4, which must
    equal a count of the encoder alone on one 256 px frame (a second, independent path), and
    the E-ViLM total row is the whole joint forward in GMACs."""
    from vlbook.analysis import count_flops
    from vlbook.chapters.evilm import PAPER_FRAME_GMACS, table1_rows
    from vlbook.models import create_model

    rows, table = table1_rows()
    by = {r.row: r for r in rows}
    alone = count_flops(lambda: create_model("evilm").video_encoder,
                        torch.zeros(1, 3, 256, 256), forward=lambda m, x: m(x)).gmacs
    assert by["EdgeNeXt-S video encoder"].ours == pytest.approx(alone, abs=1e-3)
    assert by["EdgeNeXt-S video encoder"].status == (
        "matches" if abs(alone - PAPER_FRAME_GMACS) <= 0.05 * PAPER_FRAME_GMACS else "differs")
    assert by["evilm"].ours == pytest.approx(table["evilm"]["counted GFLOPs"] / 2, abs=0.01)
    assert "per frame" in by["evilm"].note


def _hits(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_multiple_choice_hits_score_each_item_against_static_and_temporal_distractors():
    from vlbook.chapters.evilm import multiple_choice_hits

    # item 0: answer 0 beats the static distractor (colour), loses to one temporal (motion)
    # and beats the other (order); item 1: answer 2 is top, no temporal distractor
    scores = torch.tensor([[3.0, 1.0, 4.0, 2.0], [0.0, 1.0, 5.0, 2.0]])
    labels = torch.tensor([0, 2])
    attrs = [[None, "colour", "motion", "order"], ["size", "shape", None, "colour"]]
    out = multiple_choice_hits(scores, labels, attrs)
    torch.testing.assert_close(out["mc_accuracy"], _hits(0, 1))
    torch.testing.assert_close(out["mc_vs_static"], _hits(1, 1))
    torch.testing.assert_close(out["mc_vs_temporal"], _hits(0.5))  # item 1 has none


def test_table5_rows_decide_on_the_paired_difference_and_name_the_other_direction():
    from vlbook.chapters.evilm import table5_rows

    n = 100
    base = torch.zeros(n, dtype=torch.float64)
    base[:30] = 1  # 30 %
    better = base.clone()
    better[30:45] = 1  # +15 points on the same items: paired s.e. sqrt(.15 * .85 / 99) * 100
    worse = base.clone()
    worse[:10] = 0  # -10 points
    hits = {"none": {"qa_probe": base, "mc_accuracy": base},
            "vtm": {"qa_probe": better, "mc_accuracy": base},
            "vtm+mlm": {"qa_probe": base, "mc_accuracy": base},
            "vtm+mlm+mvm": {"qa_probe": worse, "mc_accuracy": base}}
    metrics = {k: {m: 100 * float(v[m].mean()) for m in v} for k, v in hits.items()}
    rows = {(r.row, r.metric): r for r in table5_rows(metrics, hits, "toy")}
    assert rows[("VTM vs no pre-training", "qa_probe")].status == "direction reproduced"
    assert rows[("VTM vs no pre-training", "qa_probe")].ours == "45.0 vs 30.0"
    se = 100 * float((better - base).std() / n ** 0.5)
    assert f"ours +15.0 ± {se:.1f}" in rows[("VTM vs no pre-training", "qa_probe")].note
    assert rows[("VTM vs no pre-training", "mc_accuracy")].status == "differs"  # +0 ± 0
    mvm = rows[("VTM+MLM+MVM vs VTM+MLM", "qa_probe")]
    assert mvm.status == "differs" and "clearly the other way" in mvm.note
    assert "paper +3.7" in mvm.note  # 39.3 - 35.6


def test_figure2_row_compares_the_gains_of_the_two_widths_pairwise():
    from vlbook.chapters.evilm import figure2_row

    n = 50
    zero = torch.zeros(n, dtype=torch.float64)
    gain_small = zero.clone()
    gain_small[:20] = 1  # MVM right on 20 more questions at the small width
    hits = {(48, False): zero, (48, True): gain_small, (96, False): zero, (96, True): zero}
    row = figure2_row([48, 96], hits, "toy")
    assert row.ours == "40.0 vs 0.0" and row.status == "direction reproduced"
    row = figure2_row([48, 96], {**hits, (96, True): gain_small}, "toy")
    assert row.status == "differs"  # equal gains


def test_ablation_jobs_reuse_the_main_run_and_the_default_width():
    from vlbook.chapters.evilm import TABLE6_TOKENIZERS, ablation_jobs
    from vlbook.config import get_preset

    preset = get_preset("evilm", "toy")
    jobs = ablation_jobs(preset)
    names = [(kind, name) for kind, name, _ in jobs]
    assert ("table5", "vtm+mlm+mvm") not in names  # the chapter's main run
    assert {n for k, n in names if k == "table5"} == {"none", "vtm", "vtm+mlm"}
    short = {n: o for k, n, o in jobs if k == "short"}
    assert short["96/True"] == {"use_mvm": True}  # default width: no override
    assert short["48/False"] == {"use_mvm": False, "hidden": 48}
    assert {n for k, n in names if k == "tokenizer"} == {
        n for n, o in TABLE6_TOKENIZERS.items() if o}


def test_ablation_cost_puts_the_long_runs_first():
    from vlbook.chapters.evilm import MAIN_JOB, ablation_cost, ablation_jobs
    from vlbook.config import get_preset
    from vlbook.parallel import start_order

    preset = get_preset("evilm", "toy")  # main 300 x 32, short 100 x 16, tokenizer 150 x 32
    jobs = [MAIN_JOB, *ablation_jobs(preset)]
    cost = {(k, n): ablation_cost((k, n, o), preset) for k, n, o in jobs}
    assert cost[("main", "vtm+mlm+mvm")] == cost[("table5", "vtm")] == 300 * 32 + 1500
    assert cost[("table5", "none")] == 1500  # evaluation only
    assert cost[("short", "48/True")] == 100 * 16 + 500
    assert cost[("tokenizer", "semantic, BCE")] == 100 * 16 + 500 + 0.25 * 150 * 32
    first = [jobs[i][:2] for i in start_order([cost[j[:2]] for j in jobs])][:3]
    assert first == [("main", "vtm+mlm+mvm"), ("table5", "vtm"), ("table5", "vtm+mlm")]


def test_multiple_choice_metrics_from_one_scoring_pass():
    from vlbook.chapters.evilm import multiple_choice_hits, multiple_choice_metrics

    scores = torch.tensor([[3.0, 1.0, 4.0, 2.0], [0.0, 1.0, 5.0, 2.0]])
    labels = torch.tensor([0, 2])
    attrs = [[None, "colour", "motion", "order"], ["size", "shape", None, "colour"]]
    metrics = multiple_choice_metrics(scores, labels, attrs)
    assert metrics["mc_accuracy"] == 50.0 and metrics["mc_chance"] == 25.0
    assert metrics["items"] == 2
    hits = multiple_choice_hits(scores, labels, attrs)  # the same outcomes, per item
    assert metrics["mc_accuracy"] == 100 * float(hits["mc_accuracy"].mean())
    assert metrics["mc_vs_temporal"] == pytest.approx(50.0)  # one win, one loss
