"""Figures of vlbook.viz: right number of panels, masks drawn exactly, PNGs written."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from vlbook import viz  # noqa: E402
from vlbook.nn import Transformer, TubeletEmbed, capture_attention  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    viz.set_style()
    yield
    plt.close("all")


def _frames(t=4, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_denormalize_inverts_imagenet_normalisation():
    frames = _frames(2, 8, 8)
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(viz.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(viz.IMAGENET_STD).view(1, 3, 1, 1)
    back = viz.denormalize((x - mean) / std)
    assert back.dtype == np.uint8 and np.array_equal(back, frames)
    assert np.array_equal(viz.to_uint8_frames((x - mean) / std), frames)
    with pytest.raises(ValueError, match="denormalize expects"):
        viz.denormalize(torch.zeros(2, 4, 8, 8))


def test_mask_overlay_marks_exactly_the_masked_patches(tmp_path):
    frames = _frames(4, 32, 32)
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(2 * 4 * 4, generator=gen) > 0.5  # tubelet 2, patch 8: 2x4x4 tokens
    fig = viz.plot_mask_overlay(frames, mask, patch_size=8, tubelet_size=2,
                                path=tmp_path / "mask.png")
    assert len(fig.axes) == 4
    grid = mask.reshape(2, 4, 4).numpy()
    for i, ax in enumerate(fig.axes):
        assert len(ax.images) == 2
        assert np.array_equal(ax.images[0].get_array(), frames[i])
        alpha = np.asarray(ax.images[1].get_array())[..., 3]
        expected = np.kron(grid[i // 2], np.ones((8, 8))) > 0  # token (t, h, w) -> pixels
        assert np.array_equal(alpha > 0, expected)
    assert (tmp_path / "mask.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="2x4x4 = 32 tokens"):
        viz.plot_mask_overlay(frames, mask[:10], patch_size=8, tubelet_size=2)


def test_apply_mask_and_unpatchify_round_trip_with_tubelet_layout():
    frames = _frames(2, 8, 8)
    mask = torch.tensor([True, False, False, True])  # one tubelet of 2 frames, 2x2 patches
    masked = viz.apply_mask(frames, mask, patch_size=4, tubelet_size=2)
    assert np.all(masked[:, :4, :4] == 127) and np.all(masked[:, 4:, 4:] == 127)
    assert np.array_equal(masked[:, :4, 4:], frames[:, :4, 4:])
    # patchify in the VideoMAE layout 'c (t p0) (h p1) (w p2) -> (t h w) (p0 p1 p2 c)' and back
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float()  # (T, C, H, W)
    x = video.permute(1, 0, 2, 3).reshape(3, 1, 2, 2, 4, 2, 4)  # c, gt, t, gh, p, gw, p
    patches = x.permute(1, 3, 5, 2, 4, 6, 0).reshape(4, 2 * 4 * 4 * 3)
    assert torch.equal(viz.unpatchify(patches, (1, 2, 2), 4, 2), video)


def test_attention_grid_from_captured_store_draws_boundaries(tmp_path):
    torch.manual_seed(0)
    model = Transformer(16, depth=2, num_heads=4).eval()
    with capture_attention(model) as store:
        model(torch.randn(1, 7, 16))
    fig = viz.plot_attention_grid(store, boundaries=[3], segment_names=["text", "video"],
                                  path=tmp_path / "grid.png")
    assert len(fig.axes) == 2 * 4
    ax = fig.axes[0]
    assert np.allclose(ax.images[0].get_array(), store["blocks.0.attn"][0, 0].numpy())
    lines = {(tuple(line.get_xdata()), tuple(line.get_ydata())) for line in ax.lines}
    assert ((2.5, 2.5), (0, 1)) in lines and ((0, 1), (2.5, 2.5)) in lines
    assert (tmp_path / "grid.png").exists()
    fig2 = viz.plot_attention_grid(torch.rand(3, 2, 5, 5), heads=[1])
    assert len(fig2.axes) == 3


def test_text_to_patch_attention_one_panel_per_frame():
    frames = _frames(4, 32, 32)
    weights = torch.zeros(2 * 4 * 4)
    weights[5] = 1.0  # tubelet 0, row 1, column 1
    fig = viz.plot_text_to_patch_attention(frames, weights, grid_hw=(4, 4), token="dog")
    assert len(fig.axes) == 4
    heat = np.asarray(fig.axes[1].images[1].get_array())
    assert heat.shape == (4, 4) and heat[1, 1] == 1.0 and heat.sum() == 1.0
    assert np.asarray(fig.axes[2].images[1].get_array()).sum() == 0.0  # tubelet 1: no weight
    with pytest.raises(ValueError, match="do not divide 4 frames"):
        viz.plot_text_to_patch_attention(frames, torch.rand(3 * 16), grid_hw=(4, 4))


def test_reconstruction_and_clip_grid_layouts(tmp_path):
    frames = _frames(3, 16, 16)
    video = torch.randn(3, 3, 16, 16)  # a normalised tensor is accepted too
    fig = viz.plot_reconstruction(frames, frames, video, path=tmp_path / "rec.png")
    assert len(fig.axes) == 9 and all(len(ax.images) == 1 for ax in fig.axes)
    assert fig.axes[3].get_ylabel() == "masked"
    with pytest.raises(ValueError, match="same shape"):
        viz.plot_reconstruction(frames, frames[:2], frames)
    grid = viz.plot_clip_grid([_frames(8, 16, 16), _frames(2, 16, 16)],
                              ["a dog runs on the beach", "a man plays guitar"], max_frames=4)
    assert len(grid.axes) == 8
    assert sum(len(ax.images) for ax in grid.axes) == 4 + 2
    assert grid.axes[0].get_title(loc="left") == "a dog runs on the beach"
    with pytest.raises(ValueError, match="2 clips but 1 captions"):
        viz.plot_clip_grid([frames, frames], ["one"])
    with pytest.raises(ValueError, match="PNG"):
        viz.save_figure(grid, tmp_path / "grid.jpg")


def test_tubelet_tokens_and_overlay_agree():
    """A mask built from TubeletEmbed's token order lands on the patches those tokens cover."""
    emb = TubeletEmbed(img_size=16, patch_size=8, tubelet_size=2, in_chans=3, embed_dim=4,
                       num_frames=4)
    video = torch.zeros(1, 4, 3, 16, 16)
    video[0, 2:, :, 8:, :8] = 1.0  # tubelet 1, row 1, column 0
    tokens = emb(video)[0]
    lit = (tokens - emb(torch.zeros_like(video))[0]).abs().sum(-1) > 0
    pixels = viz.mask_to_pixels(lit, 4, 16, 16, patch_size=8, tubelet_size=2)
    expected = np.zeros((4, 16, 16), dtype=bool)
    expected[2:, 8:, :8] = True
    assert np.array_equal(pixels, expected)


def test_reconstruction_error_row_is_the_absolute_pixel_difference():
    frames = _frames(3, 16, 16)
    wrong = frames.copy() if hasattr(frames, "copy") else frames.clone()
    wrong[1] = 255 - wrong[1]  # one frame reconstructed as its negative
    fig = viz.plot_reconstruction(frames, frames, wrong, show_error=True)
    error_axes = fig.axes[9:12]
    assert [ax.get_ylabel() for ax in fig.axes[9:10]] == ["|error|"]
    images = [ax.images[0].get_array() for ax in error_axes]
    assert float(abs(images[0]).max()) == 0.0 and float(abs(images[2]).max()) == 0.0
    expected = abs(frames[1].astype("float32") * 2 - 255).mean(-1) / 255
    assert abs(images[1] - expected).max() < 1e-5


def _label_boxes(fig, labels):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    return [label.get_window_extent(renderer) for label in labels]


def test_attention_grid_row_labels_are_short_and_do_not_overlap():
    names = [f"encoder.encoder.layer.{i}.attention.self" for i in range(4)]
    maps = {name: torch.rand(1, 3, 20, 20) for name in names}
    fig = viz.plot_attention_grid(maps, boundaries=[8], segment_names=["video", "text"])
    first_column = fig.axes[::3]
    labels = [ax.yaxis.label for ax in first_column]
    assert [label.get_text() for label in labels] == [f"layer {i}" for i in range(4)]
    assert all(not ax.yaxis.label.get_text() for ax in fig.axes if ax not in first_column)
    assert all(len(ax.get_yticks()) == 0 for ax in fig.axes)  # no per-token tick labels
    boxes = _label_boxes(fig, labels)
    for a, b in zip(boxes[:-1], boxes[1:]):
        assert a.y0 >= b.y1 or b.y0 >= a.y1, (a, b)  # stacked rows: no vertical overlap
    fig_width = fig.get_size_inches()[0] * fig.dpi
    assert all(box.x0 >= 0 and box.x1 <= fig_width for box in boxes)  # inside the figure
    assert viz.short_layer_names(["blocks.0.attn", "blocks.1.attn"]) == ["layer 0", "layer 1"]
    assert viz.short_layer_names(["encoder.layer.3.attention.self"]) == ["layer 3"]
    assert viz.short_layer_names(["video.attn", "text.attn"]) == ["video", "text"]


def test_colour_coverage_and_foreground_find_a_flat_object():
    frames = np.full((2, 16, 16, 3), 30, dtype=np.uint8)
    frames[0, :8, :8] = (40, 190, 70)  # green square in the top-left patch of frame 0
    frames[1, 8:, 8:] = (40, 190, 70)  # ... and in the bottom-right one of frame 1
    frames[1, 0, 0] = (240, 215, 40)  # one yellow pixel
    green = viz.colour_coverage(frames, (40, 190, 70), (2, 2))
    assert green.shape == (2, 2, 2)
    assert green[0, 0, 0] == 1.0 and green[1, 1, 1] == 1.0 and green.sum() == 2.0
    fg = viz.foreground_patches(frames, (2, 2))
    assert fg[0].tolist() == [[True, False], [False, False]]
    assert fg[1].tolist() == [[True, False], [False, True]]
    with pytest.raises(ValueError, match="3x3 patch grid"):
        viz.colour_coverage(frames, (0, 0, 0), (3, 3))


def test_same_code_share_counts_pairs_selected_in_both_frames():
    codes = np.array([[[1, 2], [3, 4]], [[1, 2], [5, 4]], [[1, 7], [5, 4]]])
    share, pairs = viz.same_code_share(codes)
    assert pairs == 8 and share == 6 / 8
    where = np.ones_like(codes, dtype=bool)
    where[:, 0, 1] = False  # the patch whose code changes 2 -> 7 is excluded
    where[2, 1, 0] = False  # this patch keeps only its first pair (3 -> 5: changed)
    share, pairs = viz.same_code_share(codes, where)
    assert pairs == 5 and share == 4 / 5
    assert np.isnan(viz.same_code_share(codes, np.zeros_like(where))[0])


def test_code_grid_wraps_captions_and_outlines_numbers(tmp_path):
    frames = [_frames(3, 16, 16), _frames(2, 16, 16, seed=1)]
    codes = [np.arange(12).reshape(3, 2, 2) % 5, np.zeros((2, 2, 2), dtype=int)]
    caption = "first a small red circle shrinks, then a large yellow triangle moves up " * 2
    fig = viz.plot_code_grid(frames, codes, [caption, "short"], wrap=40,
                             path=tmp_path / "codes.png")
    axes = np.array(fig.axes).reshape(2, 3)
    title = fig.subfigs[0].texts[0].get_text()  # the row's caption, above its frames
    assert title.replace("\n", " ") == caption.strip()  # wrapped, not cut
    assert max(len(line) for line in title.split("\n")) <= 40
    numbers = [t for t in axes[0, 1].texts if t.get_text().isdigit()]
    assert [t.get_text() for t in numbers] == [str(c) for c in codes[0][1].ravel()]
    assert all(t.get_path_effects() for t in numbers)  # white outline
    fill = np.asarray(axes[0, 1].images[1].get_array())
    assert fill.shape == (2, 2, 4) and np.allclose(fill[..., 3], 0.3)  # light fills
    assert len(axes[1, 2].images) == 0  # the 2-frame clip leaves its third panel empty
    assert (tmp_path / "codes.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="do not match 3 frames"):
        viz.plot_code_grid(frames[:1], [codes[1]], ["x"])


def test_metric_table_converts_fractions_and_fills_missing_values():
    table = viz.metric_table({"accuracy": 0.25, "R@1": 12.5, "items": 400, "skipped": None,
                              "loss": float("nan"), "pairs": 16.0, "MdR": 100.0},
                             percent=["accuracy"], units={"R@1": "%", "loss": "nats"},
                             names={"items": "test items"}, counts=["pairs"])
    assert table.loc["pairs", "value"] == "16" and table.loc["MdR", "value"] == "100.00"
    assert table.index.name == "metric" and list(table.columns) == ["value", "unit"]
    assert table.loc["accuracy"].tolist() == ["25.00", "%"]
    assert table.loc["R@1"].tolist() == ["12.50", "%"]
    assert table.loc["test items", "value"] == "400"
    assert table.loc["skipped", "value"] == "—" and table.loc["loss", "value"] == "—"
    assert "nan" not in table.to_html().lower() and "none" not in table.to_html().lower()
    assert viz.metric_table({"a": 1}, percent=["b"], units={"b": "s"}).index.tolist() == ["a"]


def test_tidy_table_rounds_and_writes_missing_values_as_a_dash():
    import pandas as pd

    frame = pd.DataFrame({"VOC. RATE": [92.04, None], "QA": [39.26, 38.1]}, index=["a", "b"])
    tidy = viz.tidy_table(frame, digits=1)
    assert tidy.loc["b", "VOC. RATE"] == "—" and tidy.loc["a", "VOC. RATE"] == 92.0
    assert tidy.loc["a", "QA"] == 39.3
    assert "NaN" not in tidy.to_html() and "None" not in tidy.to_html()
