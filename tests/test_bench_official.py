"""vlbook against the authors' code (``vlbook.bench official``) and the faster UMT teacher.

The comparisons need checkouts of the official repositories, which are never part of vlbook:
set ``VLBOOK_ALLINONE_REPO`` (showlab/all-in-one) and ``VLBOOK_UMT_REPO``
(OpenGVLab/unmasked_teacher) to run them; without, they are skipped with that message.
"""

from __future__ import annotations

import os
import sys

import pytest
import torch

from vlbook.bench.official import ENV_ALLINONE, ENV_UMT, Variant, _rows, alternate

ALLINONE_REPO = os.environ.get(ENV_ALLINONE, "")
UMT_REPO = os.environ.get(ENV_UMT, "")
needs_allinone = pytest.mark.skipif(
    not ALLINONE_REPO, reason=f"set {ENV_ALLINONE} to a checkout of showlab/all-in-one to "
    "compare vlbook with the official All-in-one code")
needs_umt = pytest.mark.skipif(
    not UMT_REPO, reason=f"set {ENV_UMT} to a checkout of OpenGVLab/unmasked_teacher to "
    "compare vlbook with the official UMT code")


def _tiny_clip(intermediate: int = 64):
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPVisionConfig(
        hidden_size=32, intermediate_size=intermediate, num_hidden_layers=3, num_attention_heads=4,
        patch_size=8, image_size=32, projection_dim=16, attn_implementation="eager")
    torch.manual_seed(0)
    return transformers.CLIPVisionModelWithProjection(config)


def test_fast_teacher_gives_the_targets_of_the_transformers_forward():
    from vlbook.models.umt import HFCLIPTeacher

    model = _tiny_clip()
    fast, reference = HFCLIPTeacher(model), HFCLIPTeacher(model, fast=False)
    assert fast.fast and not reference.fast
    frames = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    for layers in (1, 3, 4):  # 4 = every layer plus the embeddings, as transformers counts
        a, b = fast.teacher_outputs(frames, layers), reference.teacher_outputs(frames, layers)
        assert a.tokens.shape == b.tokens.shape == (layers, 6, 16, 16)
        torch.testing.assert_close(a.tokens, b.tokens, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.cls_attention, b.cls_attention, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.pooled, b.pooled, atol=1e-5, rtol=0)
    # a resized input (the L/14 teacher at 196 px) interpolates positions the same way
    resized = HFCLIPTeacher(model, image_size=24)
    ref = HFCLIPTeacher(model, image_size=24, fast=False)
    torch.testing.assert_close(resized.teacher_outputs(frames, 2).tokens,
                               ref.teacher_outputs(frames, 2).tokens, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="layers"):
        fast.teacher_outputs(frames, 5)


def test_alternation_times_every_variant_and_ratios_are_against_the_official_row():
    calls: list[str] = []

    def step(name: str):
        def run() -> torch.Tensor:
            calls.append(name)
            return torch.zeros(())
        return run

    variants = [Variant("official", "official", step("o")), Variant("vlbook", "vlbook", step("v"))]
    times = alternate(variants, rounds=2, warmup=1)
    assert calls == ["o", "v", "o", "v", "v", "o"]  # warm-up, then order reversed every round
    times = {"official": [2.0, 4.0], "vlbook": [1.0, 2.0]}
    rows = _rows("x", variants, times, {"official": 6_000_000_000, "vlbook": 6_000_000_000},
                 {})
    assert rows[0].speedup_vs_official == 1.0
    assert rows[1].speedup_vs_official == pytest.approx(2.0)
    assert rows[1].paired_speedup_median == pytest.approx(2.0)
    assert rows[1].speedup_by_min == pytest.approx(2.0)
    assert rows[1].achieved_gflops == pytest.approx(6 / 1.0)  # at the fastest step


def test_shims_leave_no_stub_behind():
    from vlbook.bench.official import install_shims

    before = set(sys.modules)
    with install_shims() as stubbed:
        assert isinstance(stubbed, list)
    left = {m for m in set(sys.modules) - before
            if m.split(".")[0] in ("pytorch_lightning", "einops", "ipdb", "scipy", "sklearn",
                                   "cv2", "skimage")}
    stubs = [m for m in left if type(sys.modules[m]).__name__ == "_ImportOnly"]
    assert not stubs


def test_cli_skips_configs_without_a_checkout(tmp_path, monkeypatch):
    from vlbook.bench.__main__ import main

    monkeypatch.setenv("VLBOOK_RESULTS", str(tmp_path))
    monkeypatch.delenv(ENV_ALLINONE, raising=False)
    monkeypatch.delenv(ENV_UMT, raising=False)
    assert main(["official", "--allinone-repo", "", "--umt-repo", ""]) == 0
    text = (tmp_path / "bench" / "official-cpu.md").read_text()
    assert "no --allinone-repo" in text and "no --umt-repo" in text


@pytest.mark.slow
@needs_allinone
def test_allinone_matches_the_official_code():
    from vlbook.bench.official import (
        _allinone_batches,
        allinone_config,
        check_allinone,
        import_allinone,
    )
    from vlbook.models import create_model
    from vlbook.models.allinone import load_official_checkpoint

    modules = import_allinone(ALLINONE_REPO)
    torch.manual_seed(0)
    official = modules.module.AllinoneTransformerSS(allinone_config("allinone_tiny", 2, 12, 0.1))
    ours = create_model("allinone_tiny", num_frames=2, max_text_len=12, drop_rate=0.1)
    with pytest.warns(UserWarning):
        conversion = load_official_checkpoint(ours, official.state_dict())
    batch, off_batch, ids, labels = _allinone_batches(ours, 2, 2, 12, seed=0)
    checks = check_allinone(official, ours, conversion.mapping, batch, off_batch, ids, labels)
    for key in ("joint text features", "joint video features", "pooled CLS", "MLM logits",
                "VTM logits", "loss"):
        assert checks[key] < 1e-4, (key, checks[key])
    assert checks["gradients (max abs diff)"] < 1e-5 and checks["parameters compared"] > 100


@pytest.mark.slow
@needs_umt
def test_umt_matches_the_official_code():
    from vlbook.bench.official import check_umt, hf_clip_to_official, import_umt
    from vlbook.models import create_model
    from vlbook.models.umt import HFCLIPTeacher
    from vlbook.models.umt.convert import convert_official_state_dict

    models = import_umt(UMT_REPO)
    hf = _tiny_clip(intermediate=128)  # the code's CLIP blocks have a 4x MLP
    # the code's CLIP at the tiny width: its VisionTransformer class with the hf shapes
    teacher = models.clip.VisionTransformer(input_resolution=32, patch_size=8, width=32,
                                            layers=3, heads=4, output_dim=16,
                                            return_attn=True, clip_return_layer=2)
    teacher.load_state_dict(hf_clip_to_official(hf))
    student = models.modeling_pretrain_umt.PretrainVisionTransformer(
        img_size=32, patch_size=8, encoder_embed_dim=48, encoder_depth=3, encoder_num_heads=4,
        qkv_bias=True, num_frames=2, tubelet_size=1, clip_decoder_embed_dim=48,
        clip_output_dim=16, clip_return_layer=2,
        norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6))
    ours = create_model("umt_base", embed_dim=48, depth=3, num_heads=4, image_size=32,
                        patch_size=8, num_frames=2, teacher_dim=16, align_layers=2,
                        mask_ratio=0.5, drop_path_rate=0.0)
    conversion = convert_official_state_dict(student.state_dict())
    ours.load_state_dict(conversion.state_dict, strict=False)
    ours.set_teacher(HFCLIPTeacher(hf))
    video = torch.randn(1, 2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    checks = check_umt(student.eval(), teacher.eval(), ours, conversion.mapping, video)
    for key in ("teacher tokens (K layers)", "teacher CLS attention",
                "student aligned predictions", "gradients (max abs diff)"):
        assert checks[key] < 1e-5, (key, checks[key])
