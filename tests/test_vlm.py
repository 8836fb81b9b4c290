"""VLM (vlbook.models.vlm): sizes, attention masks, MMM + masked token loss, heads, converter."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from vlbook.models import create_model  # noqa: E402
from vlbook.models.vlm import (  # noqa: E402
    VLM,
    ToyFrameEncoder,
    VLMConfig,
    attention_mask_for,
    convert_mmpt_state_dict,
    load_bert_weights,
    load_mmpt_checkpoint,
    mmpt_names,
    sliding_windows,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_config(**overrides) -> VLMConfig:
    base = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, vocab_size=40,
                max_position_embeddings=32, feature_dim=16, max_video_len=6, max_len=20,
                hidden_dropout=0.0, attention_dropout=0.0, pad_token_id=0, cls_token_id=1,
                sep_token_id=2, mask_token_id=3, special_token_ids=(0, 1, 2, 3))
    return VLMConfig(**{**base, **overrides})


def tiny_model(seed: int = 0, **overrides) -> VLM:
    torch.manual_seed(seed)
    return VLM(tiny_config(**overrides)).eval()


def tiny_batch(model: VLM, batch_size: int = 4, seed: int = 0) -> dict:
    return model.example_batch(batch_size, torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- Table 1 parameter count


def test_vlm_base_matches_table1_parameter_count():
    """Table 1: VLM has 110 M parameters = BERT-base (with its MLM head) + the video MLP."""
    with torch.device("meta"):
        model = create_model("vlm_base")
    total = model.table1_parameter_count()
    assert abs(total / 1e6 - 110) / 110 < 0.01, total
    mlp = sum(p.numel() for p in model.video_mlp.parameters())
    assert mlp == (512 * 768 + 768) + 2 * 768 + (768 * 768 + 768)
    # the decoder is tied to the word embeddings: counted once
    words = model.encoder.embeddings.word_embeddings.weight
    assert model.lm_head.predictions.decoder.weight is words
    c = model.config
    assert (c.num_layers, c.hidden_size, c.max_video_len, c.max_len, c.max_text_len) == (
        12, 768, 32, 96, 62)


def test_toy_variant_is_small_and_registered():
    model = create_model("vlm_toy")
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    with pytest.raises(ValueError, match="loss="):
        VLMConfig(loss="mse")
    with pytest.raises(ValueError, match="max_video_len"):
        VLMConfig(max_video_len=100, max_len=96)


# ---------------------------------------------------------------- attention masks (Fig. 3)


def test_attention_mask_layouts_hand_checked():
    video_valid = torch.tensor([[True, False]])
    text_valid = torch.tensor([[True, True]])
    # layout: CLS v0 v1(pad) SEP t0 t1
    iso = attention_mask_for("isolated", video_valid, text_valid)[0, 0].int()
    assert iso.tolist() == [
        [1, 1, 0, 1, 0, 0],
        [1, 1, 0, 1, 0, 0],
        [1, 1, 1, 1, 0, 0],  # a padding query: its group + itself (never a key)
        [1, 1, 0, 1, 0, 0],
        [0, 0, 0, 0, 1, 1],
        [0, 0, 0, 0, 1, 1],
    ]
    causal = attention_mask_for("causal_text", video_valid, text_valid)[0, 0].int()
    assert causal[4].tolist() == [1, 1, 0, 1, 1, 0]  # t0: video group + itself
    assert causal[5].tolist() == [1, 1, 0, 1, 1, 1]
    assert causal[1].tolist() == [1, 1, 0, 1, 0, 0]  # video never sees text
    joint = attention_mask_for("joint", video_valid, text_valid)[0, 0].int()
    assert joint[0].tolist() == [1, 1, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="attention mode"):
        attention_mask_for("cross", video_valid, text_valid)


def test_isolated_mask_separates_modalities_and_equals_separate_passes():
    """Sec. 4.1: training uses one isolated pass; evaluation encodes video and text apart.

    Both give the same pooled states because positions and token types do not depend on
    the other modality's presence."""
    model = tiny_model()
    batch = tiny_batch(model)
    feats, ids, att = batch["video_features"], batch["input_ids"], batch["attention_mask"]
    tokens = model.video_mlp(feats)
    valid = torch.ones(feats.shape[:2], dtype=torch.bool)
    text_ids, text_valid = model._text(ids, att)
    with torch.no_grad():
        enc = model.encode(tokens, valid, text_ids, text_valid, "isolated")
        other = model.encode(tokens, valid, text_ids.flip(0), text_valid, "isolated")
        joint = model.encode(tokens, valid, text_ids, text_valid, "joint")
        joint_other = model.encode(tokens, valid, text_ids.flip(0), text_valid, "joint")
        torch.testing.assert_close(model._pool_video(enc), model.encode_video(feats))
        torch.testing.assert_close(model._pool_text(enc), model.encode_text(ids, att))
    torch.testing.assert_close(enc.video_hidden, other.video_hidden)  # text cannot leak in
    assert not torch.allclose(joint.video_hidden, joint_other.video_hidden, atol=1e-4)


def test_causal_text_mask_hides_future_words():
    model = tiny_model()
    batch = tiny_batch(model, batch_size=2)
    tokens = model.video_mlp(batch["video_features"])
    valid = torch.ones(tokens.shape[:2], dtype=torch.bool)
    ids, text_valid = model._text(batch["input_ids"], batch["attention_mask"])
    changed = ids.clone()
    changed[:, 5:] = 7
    with torch.no_grad():
        a = model.encode(tokens, valid, ids, text_valid, "causal_text")
        b = model.encode(tokens, valid, changed, text_valid, "causal_text")
        c = model.encode(tokens * 2, valid, ids, text_valid, "causal_text")
    torch.testing.assert_close(a.text_hidden[:, :5], b.text_hidden[:, :5])
    torch.testing.assert_close(a.video_hidden, b.video_hidden)
    assert not torch.allclose(a.text_hidden[:, :5], c.text_hidden[:, :5], atol=1e-4)


# ---------------------------------------------------------------- MMM + masked token loss


def test_masked_modality_plan_masks_whole_modalities():
    """Sec. 3.3: whole-video examples mask every valid video token and no word, and back."""
    model = tiny_model(mmm_probability=1.0, whole_video_share=1.0)
    batch = tiny_batch(model, batch_size=3)
    batch["video_mask"][0, 4:] = False
    n_words = int(batch["attention_mask"][:, 1:-1].sum())  # text tokens without CLS / SEP
    out = model.pretrain_losses(batch)
    assert out.num_masked_video == int(batch["video_mask"].sum()) and out.num_masked_text == 0
    assert bool(out.whole_video.all())
    model.config.whole_video_share = 0.0
    out = model.pretrain_losses(batch)
    assert out.num_masked_video == 0 and out.num_masked_text == n_words
    model.config.mmm_probability = 0.0
    counts = [model.pretrain_losses(batch, torch.Generator().manual_seed(s)).num_masked_text
              for s in range(40)]
    share = sum(counts) / (40 * n_words)
    assert 0.08 < share < 0.24, share  # MFM-MLM at 15 %


def test_masked_video_tokens_are_zero_vectors():
    """The encoder never sees a masked video token's feature (Sec. 3.2: set to zeros)."""
    model = tiny_model(mmm_probability=1.0, whole_video_share=1.0)
    batch = tiny_batch(model, batch_size=2)
    seen = {}

    def grab(module, args, kwargs, output):
        seen.setdefault("embeds", kwargs["inputs_embeds"].detach().clone())

    handle = model.encoder.register_forward_hook(grab, with_kwargs=True)
    model.pretrain_losses(batch)
    handle.remove()
    t = model.config.max_video_len
    assert torch.count_nonzero(seen["embeds"][:, 1: t + 1]) == 0


@pytest.mark.parametrize("loss", ["masked_token", "mfm_mlm"])
def test_pretraining_loss_decreases_on_a_fixed_batch(loss):
    model = tiny_model(loss=loss).train()
    batch = tiny_batch(model, batch_size=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = model.pretrain_losses(batch, torch.Generator().manual_seed(1))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < 0.5 * losses[0], losses[::8]
    assert out.num_masked_video + out.num_masked_text > 0


def test_masked_token_loss_uses_the_shared_head_and_video_targets():
    """Masked token loss (Eq. 8-9) reaches the video MLP through the targets as well (MMPT
    does not detach them) and the prediction transform (the shared head, Eq. 4)."""
    model = tiny_model(mmm_probability=1.0, whole_video_share=1.0)
    batch = tiny_batch(model)
    model.pretrain_step(batch)["loss"].backward()
    assert model.video_mlp.input_proj.weight.grad.abs().sum() > 0
    assert model.lm_head.predictions.transform.dense.weight.grad.abs().sum() > 0


def test_bad_inputs_raise_clear_errors():
    model = tiny_model()
    batch = tiny_batch(model)
    with pytest.raises(ValueError, match="video_features must be"):
        model.pretrain_step({**batch, "video_features": batch["video_features"][..., :5]})
    with pytest.raises(ValueError, match="max_video_len"):
        model.pretrain_step({**batch, "video_features": torch.zeros(4, 9, 16),
                             "video_mask": torch.ones(4, 9, dtype=torch.bool)})
    with pytest.raises(ValueError, match="frame encoder"):
        model.encode_video(torch.zeros(1, 2, 3, 8, 8))
    with pytest.raises(KeyError, match="video_features"):
        model.pretrain_step({"input_ids": batch["input_ids"]})


# ---------------------------------------------------------------- fine-tuning heads (Sec. 4)


def test_retrieval_finetuning_learns_to_match_pairs():
    model = tiny_model().train()
    batch = tiny_batch(model, batch_size=6)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        loss = model.retrieval_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        sim = model.encode_text(batch["input_ids"], batch["attention_mask"]) @ \
            model.encode_video(batch["video_features"]).T
    assert (sim.argmax(1) == torch.arange(6)).float().mean() >= 5 / 6


def test_captioning_with_the_reused_lm_head_memorises_captions():
    """Causal text mask + LM head (Sec. 4.5): greedy and beam decoding return the caption."""
    model = tiny_model().train()
    batch = tiny_batch(model, batch_size=2)
    batch["input_ids"][:, 5] = model.config.sep_token_id
    batch["attention_mask"][:, 6:] = 0
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    for _ in range(80):
        loss = model.caption_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    expected = batch["input_ids"][:, 1:5].tolist()
    assert model.generate_caption(batch["video_features"], max_length=8) == expected
    assert model.generate_caption(batch["video_features"], max_length=8, num_beams=3) == expected


def test_sliding_windows_cover_every_step():
    assert sliding_windows(10, 32, 16) == [(0, 10)]
    assert sliding_windows(64, 32, 16) == [(0, 32), (16, 48), (32, 64)]
    assert sliding_windows(40, 32, 16) == [(0, 32), (8, 40)]


def test_segmentation_averages_overlapping_window_logits():
    """COIN protocol (Sec. 5.1.2): windows 32 / stride 16, overlapping logits averaged."""
    model = tiny_model(num_segment_classes=3, segment_window=4, segment_stride=2)
    calls = []

    def fake_logits(features, video_mask=None):
        calls.append(features.shape[1])
        return torch.full((1, features.shape[1], 3), float(len(calls)))

    model.segment_logits = fake_logits
    out = model.segment_long_video(torch.zeros(8, 16))
    # windows (0,4) -> 1, (2,6) -> 2, (4,8) -> 3
    assert out[:, 0].tolist() == [1, 1, 1.5, 1.5, 2.5, 2.5, 3, 3]
    assert calls == [4, 4, 4]


def test_step_scores_are_distributions_over_steps():
    model = tiny_model()
    batch = tiny_batch(model, batch_size=2)
    step_ids = batch["input_ids"][:, None].repeat(1, 3, 1)
    step_mask = batch["attention_mask"][:, None].repeat(1, 3, 1)
    with torch.no_grad():
        logp = model.step_scores(batch["video_features"], step_ids, step_mask)
    assert logp.shape == (2, 6, 3)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(2, 6))


def test_toy_frame_encoder_is_frozen_and_deterministic():
    enc = ToyFrameEncoder(feature_dim=512, grid=4, seed=3)
    enc.train()
    assert not enc.training and not any(p.requires_grad for p in enc.parameters())
    video = torch.randn(2, 5, 3, 32, 32)
    out = enc(video)
    assert out.shape == (2, 5, 512)
    torch.testing.assert_close(out, ToyFrameEncoder(seed=3)(video))
    moved = video.roll(8, dims=-1)  # the grid keeps position: a shifted frame differs
    assert not torch.allclose(enc(moved), out)
    model = tiny_model(feature_dim=512)
    model.attach_frame_encoder(enc)
    assert model.encode_video(video).shape == (2, 32)


# ---------------------------------------------------------------- weights


def test_mmpt_converter_covers_every_tensor_and_reproduces_outputs():
    source = tiny_model(seed=1)
    official = {mmpt: source.state_dict()[ours].clone()
                for ours, mmpt in mmpt_names(source).items()}
    official["mmmodel.mm_encoder.cls.predictions.decoder.weight"] = \
        source.encoder.embeddings.word_embeddings.weight.detach().clone()
    official["mmmodel.mm_encoder.bert.pooler.dense.weight"] = torch.zeros(32, 32)
    official["mmmodel.mm_encoder.bert.embeddings.position_ids"] = torch.arange(32)[None]
    official["mmmodel.some_other_head.weight"] = torch.zeros(2)
    assert any(k.endswith("videomlp.LayerNorm.weight") for k in official)
    assert any(".attention.self.query.weight" in k for k in official)
    result = convert_mmpt_state_dict(official)
    target = tiny_model(seed=2)
    own = {k for k in target.state_dict() if k != "lm_head.predictions.decoder.weight"}
    assert set(result.state_dict) == own
    assert result.unmapped == ["mmmodel.some_other_head.weight"]
    assert len(result.dropped) == 3
    # other wrapper prefixes are accepted too
    assert set(convert_mmpt_state_dict(
        {k.replace("mmmodel.mm_encoder.", "model."): v for k, v in official.items()}
    ).state_dict) == own


def test_load_mmpt_checkpoint_from_a_fairseq_file(tmp_path):
    source = tiny_model(seed=1)
    official = {mmpt: source.state_dict()[ours] for ours, mmpt in mmpt_names(source).items()}
    torch.save({"model": official, "args": None}, tmp_path / "checkpoint_best.pt")
    target = tiny_model(seed=2)
    load_mmpt_checkpoint(target, tmp_path / "checkpoint_best.pt")
    batch = tiny_batch(source)
    with torch.no_grad():
        torch.testing.assert_close(target.encode_video(batch["video_features"]),
                                   source.encode_video(batch["video_features"]))
    wrong = tiny_model(seed=2, hidden_size=64)
    with pytest.raises(ValueError, match="do not fit"):
        load_mmpt_checkpoint(wrong, tmp_path / "checkpoint_best.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_mmpt_checkpoint(target, tmp_path / "missing.pt")


def test_bert_weights_load_from_a_local_folder_and_fail_clearly_offline(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    config = tiny_config()
    torch.manual_seed(5)
    bert = BertForMaskedLM(BertConfig(
        vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=32))
    bert.save_pretrained(tmp_path / "tiny-bert")
    model = VLM(config)
    left = load_bert_weights(model, tmp_path / "tiny-bert")
    torch.testing.assert_close(model.encoder.encoder.layer[1].output.dense.weight,
                               bert.bert.encoder.layer[1].output.dense.weight)
    torch.testing.assert_close(model.lm_head.predictions.bias, bert.cls.predictions.bias)
    assert all(k.startswith("video_mlp.") for k in left)
    with pytest.raises(RuntimeError, match="cannot load BERT weights"):
        load_bert_weights(model, "no-such-bert-anywhere")


@pytest.mark.slow
def test_paper_size_model_takes_one_optimiser_step_on_cpu():
    torch.manual_seed(0)
    model = create_model("vlm_base").train()
    batch = model.example_batch(1, torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, betas=(0.9, 0.98))
    before = model.video_mlp.input_proj.weight.detach().clone()
    loss = model(batch)["loss"]
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
    optimizer.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, model.video_mlp.input_proj.weight)


# ---------------------------------------------------------------- synthetic features


def test_toy_features_feed_the_feature_text_dataset(tmp_path):
    from vlbook.chapters.vlm import build_chapter_model, synthetic_datasets
    from vlbook.config import get_preset
    from vlbook.data.synthetic import ensure_synthetic

    root = ensure_synthetic("smoke", root=tmp_path / "smoke")
    preset = get_preset("vlm", "smoke")
    data = synthetic_datasets(preset, root)
    sample = data["train"][0]
    assert sample["video_features"].shape == (data["num_frames"], 512)
    assert bool(sample["video_mask"].all())
    assert (root / "vlm_features" / "features").is_dir()
    model = build_chapter_model(preset, data)
    batch = data["train"].collate([data["train"][i] for i in range(4)])
    assert torch.isfinite(model(batch)["loss"])


def test_benchmark_suite_writes_step_time_and_memory():
    import argparse

    from vlbook.bench import vlm as bench
    from vlbook.paths import results_root

    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--variants", "vlm_toy", "--toy-batch-size", "2", "--steps", "1",
                              "--warmup", "0", "--mode", "train", "--no-flops", "--device", "cpu"])
    payload = bench.run(args)
    (row,) = payload["results"]
    assert row["batch_size"] == 2 and row["step_time_s_median"] > 0
    assert (results_root() / "bench" / "vlm-cpu-no.json").is_file()
    with pytest.raises(ValueError, match="not VLM variants"):
        bench.run(parser.parse_args(["--variants", "allinone_toy"]))


def test_table8_9_rows_decide_by_paired_differences():
    """Hand-built rows: MMM 50 % ranks 20 more of 200 queries first than MMM 30 % and agrees
    with it elsewhere, so the paired error is sqrt(p(1-p)/n) of the +/-1 differences; a row
    equal to MMM 50 % is not 'clearly below' it, and MMM 0 % far below makes 50 % the best."""
    import math

    from vlbook.chapters.vlm import PAPER_ABLATION, table8_9_rows

    n = 200
    best = [1.0] * 60 + [0.0] * 140
    thirty = [1.0] * 40 + [0.0] * 160        # 20 fewer hits, never a hit where 50 % misses
    zero = [0.0] * n
    cider = [100.0] * 10

    def row(label, hits, cider_items):
        return {"variant": label, "R@1": 100 * sum(hits) / n, "CIDEr": sum(cider_items) / 10,
                "hits@1": hits, "CIDEr per item": cider_items}

    records = [row("MMM 0%", zero, [0.0] * 10), row("MMM 30%", thirty, cider),
               row("MMM 50%", best, cider), row("MMM 70%", list(best), cider)]
    rows = {(r.table, r.row): r for r in table8_9_rows(records, "toy")}
    assert len(rows) == 8
    # 30 %: d = 10 points; per-query differences: 20 ones, 180 zeros
    d = [1.0] * 20 + [0.0] * 180
    mean = sum(d) / n
    se = 100 * math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n)
    assert f"ours +10.00 ± {se:.2f}" in rows[("Table 8", "MMM 30%")].note
    gap = PAPER_ABLATION["MMM 50%"]["R@1"] - PAPER_ABLATION["MMM 30%"]["R@1"]
    assert f"paper {gap:+.2f}" in rows[("Table 8", "MMM 30%")].note
    assert rows[("Table 8", "MMM 30%")].status == "direction reproduced"   # 10 / 2.1 s.e.
    assert rows[("Table 8", "MMM 70%")].status == "differs"               # identical to 50 %
    assert rows[("Table 8", "MMM 50%")].status == "direction reproduced"
    assert rows[("Table 9", "MMM 30%")].status == "differs"               # equal CIDEr
    assert rows[("Table 9", "MMM 0%")].status == "direction reproduced"
    assert {r.status for r in table8_9_rows(records, "smoke")} == {"not run"}
