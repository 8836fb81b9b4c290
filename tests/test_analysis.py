"""Parameter and FLOP counts against hand-computed cases and the ViT-B/16 reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vlbook.analysis import count_flops, count_parameters


class SelfAttention(nn.Module):
    """q/k/v/out projections around fused attention (the layout of the papers' ViTs)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def test_linear_flops_are_two_per_multiply_add():
    result = count_flops(lambda: nn.Linear(8, 16), torch.zeros(3, 8))
    assert result.total == 2 * 3 * 8 * 16
    assert result.device == "meta"
    # backward: the weight gradient is one more (16 x 3) @ (3 x 8) product; the input needs none
    both = count_flops(lambda: nn.Linear(8, 16), torch.zeros(3, 8), backward=True)
    assert both.total == 2 * (2 * 3 * 8 * 16)


def test_attention_flops_against_hand_count():
    b, n, d, h = 2, 10, 16, 2
    result = count_flops(lambda: SelfAttention(d, h), torch.zeros(b, n, d))
    projections = 2 * b * n * d * (3 * d) + 2 * b * n * d * d
    scores_and_mix = 2 * (2 * b * h * n * n * (d // h))  # Q K^T and A V
    assert result.total == projections + scores_and_mix
    assert result.per_module == {
        "qkv": 2 * b * n * d * 3 * d,
        "proj": 2 * b * n * d * d,
        "(root)": scores_and_mix,
    }


def test_vit_b16_forward_is_35_gflops_per_image_and_costs_no_memory():
    timm = pytest.importorskip("timm")
    result = count_flops(
        lambda: timm.create_model("vit_base_patch16_224"), torch.zeros(1, 3, 224, 224)
    )
    assert result.gflops == pytest.approx(35.13, abs=0.01)
    assert result.gmacs == pytest.approx(17.56, abs=0.01)  # the "17.6 GFLOPs" DeiT quotes
    assert set(result.per_module) >= {"patch_embed", "blocks", "head"}
    assert result.per_module["blocks"] / result.total > 0.99
    with torch.device("meta"):
        vit = timm.create_model("vit_base_patch16_224")
    params = count_parameters(vit)
    assert params.total == 86_567_656
    assert params.per_module["blocks"] == 12 * (
        4 * 768 * 768 + 4 * 768 + 2 * 768 * 3072 + 3072 + 768 + 4 * 768
    )


def test_count_flops_of_an_instance_leaves_it_untouched():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    before = model[0].weight.clone()
    batch = torch.randn(5, 4)
    result = count_flops(model, batch, depth=1)
    assert result.per_module == {"0": 2 * 5 * 4 * 4, "2": 2 * 5 * 4 * 2}
    assert model[0].weight.device.type == "cpu" and torch.equal(model[0].weight, before)


def test_count_flops_of_a_batch_dict_through_a_custom_forward():
    from vlbook.models import create_model

    model = create_model("debug_tiny", dim=32, num_frames=2, image_size=16, patch_size=8)
    batch = model.example_batch(2)
    video_only = count_flops(model, batch, forward=lambda m, b: m.encode_video(b["video"]))
    # patch embedding: 2 clips x 2 frames x 4 patches, each a (8*8*3) -> 32 product
    assert video_only.per_module["patch_embed"] == 2 * (2 * 2 * 4) * (8 * 8 * 3) * 32
    assert "text_tower" not in video_only.per_module
    full = count_flops(model, batch)
    assert full.per_module["text_tower"] == full.per_module["video_tower"] > 0


def test_count_parameters_groups_by_depth_and_counts_tied_weights_once():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(10, 4)
            self.encoder = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
            self.decoder = nn.Linear(4, 10, bias=False)
            self.decoder.weight = self.embed.weight  # tied, as MLM heads are
            self.scale = nn.Parameter(torch.ones(()))

    model = Tied()
    model.encoder[1].weight.requires_grad_(False)
    counts = count_parameters(model, depth=1)
    assert counts.total == 40 + (16 + 4) + (4 + 4) + 1
    assert counts.trainable == counts.total - 4
    assert counts.per_module == {"embed": 40, "encoder": 28, "(root)": 1}
    assert count_parameters(model, depth=2).per_module["encoder.0"] == 20
    frame = counts.to_frame()
    assert frame["share"].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="by='layers'"):
        count_parameters(model, by="layers")
