"""Figures of the book: attention maps, mask overlays, reconstructions, example clips.

Every function returns a :class:`matplotlib.figure.Figure` (shown inline in notebooks) and saves
it as PNG when given ``path``. Call :func:`set_style` once per notebook for the book's seaborn
theme. Frames are accepted as uint8 arrays ``(T, H, W, 3)`` or as vlbook video tensors
``(T, C, H, W)`` normalised with the ImageNet mean and std (see :func:`denormalize`).

Token layouts follow :class:`vlbook.nn.TubeletEmbed`: ``N = T/t * H/p * W/p`` tokens in
(t, h, w) raster order; a token mask is ``True`` where the token is masked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure

from vlbook.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from vlbook.data.transforms import denormalize as _denormalize
from vlbook.losses import unpatchify_video

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "apply_mask",
    "colour_coverage",
    "denormalize",
    "foreground_patches",
    "mask_to_pixels",
    "metric_table",
    "plot_attention_grid",
    "plot_clip_grid",
    "plot_code_grid",
    "plot_mask_overlay",
    "plot_reconstruction",
    "plot_text_to_patch_attention",
    "same_code_share",
    "save_figure",
    "set_style",
    "short_layer_names",
    "tidy_table",
    "to_uint8_frames",
    "unpatchify",
]


ATTENTION_CMAP = "magma"
MASK_COLOR = (0.15, 0.15, 0.15)


def set_style(font_scale: float = 0.9) -> None:
    """The book's figure style: seaborn ``white`` theme, readable fonts, tight PNGs."""
    import seaborn as sns

    sns.set_theme(context="notebook", style="white", font_scale=font_scale)
    plt.rcParams.update({
        "figure.dpi": 100,
        "savefig.dpi": 150,
        "savefig.bbox": "tight",
        "axes.titlesize": "medium",
        "image.cmap": ATTENTION_CMAP,
    })


def save_figure(fig: Figure, path: str | Path, dpi: int = 150) -> Path:
    """Save ``fig`` as PNG at ``path`` (parent folders created); returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"save_figure writes PNG; got path {path} (use a .png suffix)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def _finish(fig: Figure, path: str | Path | None) -> Figure:
    if path is not None:
        save_figure(fig, path)
    return fig


def denormalize(video: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN,
                std: Sequence[float] = IMAGENET_STD) -> np.ndarray:
    """ImageNet-normalised frames ``(T, C, H, W)`` (or ``(C, H, W)``) -> uint8 ``(T, H, W, 3)``."""
    video = torch.as_tensor(video).detach().cpu().float()
    if video.dim() == 3:
        video = video[None]
    if video.dim() != 4 or video.shape[1] != len(mean):
        raise ValueError(f"denormalize expects (T, {len(mean)}, H, W) frames, got "
                         f"{tuple(video.shape)}")
    pixels = (_denormalize(video, tuple(mean), tuple(std)).clamp(0, 1) * 255).round()
    pixels = pixels.to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).numpy()


def to_uint8_frames(frames: Any) -> np.ndarray:
    """uint8 ``(T, H, W, 3)`` from uint8 frames or a normalised ``(T, C, H, W)`` tensor."""
    if isinstance(frames, torch.Tensor) and frames.is_floating_point():
        return denormalize(frames)
    arr = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) or a normalised tensor "
                         f"(T, 3, H, W); got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if np.issubdtype(arr.dtype, np.floating) and arr.max() <= 1.0:
            arr = (arr * 255).round()
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return arr


def _token_mask_grid(mask: Any, num_frames: int, height: int, width: int, patch_size: int,
                     tubelet_size: int) -> np.ndarray:
    gh, gw = height // patch_size, width // patch_size
    gt = num_frames // tubelet_size
    m = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask)
    if m.size != gt * gh * gw:
        raise ValueError(f"mask has {m.size} entries; frames {num_frames}x{height}x{width} with "
                         f"patch {patch_size} and tubelet {tubelet_size} have {gt}x{gh}x{gw} = "
                         f"{gt * gh * gw} tokens")
    return m.reshape(gt, gh, gw)


def mask_to_pixels(mask: Any, num_frames: int, height: int, width: int, patch_size: int,
                   tubelet_size: int = 1) -> np.ndarray:
    """Boolean token mask (``True`` = masked) -> boolean pixel mask ``(T, H, W)``."""
    grid = _token_mask_grid(mask, num_frames, height, width, patch_size, tubelet_size)
    pixels = grid.astype(bool).repeat(tubelet_size, 0).repeat(patch_size, 1).repeat(patch_size, 2)
    return pixels


def apply_mask(frames: Any, mask: Any, patch_size: int, tubelet_size: int = 1,
               fill: int = 127) -> np.ndarray:
    """Frames with the masked patches filled with grey ``fill`` (what the encoder does not see)."""
    out = to_uint8_frames(frames).copy()
    t, h, w, _ = out.shape
    out[mask_to_pixels(mask, t, h, w, patch_size, tubelet_size)] = fill
    return out


def unpatchify(patches: torch.Tensor, grid_size: tuple[int, int, int], patch_size: int,
               tubelet_size: int = 1, channels: int = 3) -> torch.Tensor:
    """Per-token pixel vectors ``(N, t*p*p*C)`` -> frames ``(T, C, H, W)``.

    Inverse of the VideoMAE/SimVTP target layout: tokens in (t, h, w) order, each vector ordered
    (frame-in-tubelet, row, column, channel) — SimVTP's 1536 = 2*16*16*3 outputs.
    """
    gt, gh, gw = grid_size
    p, t = patch_size, tubelet_size
    expected = (gt * gh * gw, t * p * p * channels)
    if tuple(patches.shape) != expected:
        raise ValueError(f"patches must be {expected} for grid {grid_size}, patch {p}, tubelet "
                         f"{t}; got {tuple(patches.shape)}")
    return unpatchify_video(patches[None], grid_size, t, p, channels)[0]


def _attention_layers(attn_by_layer: Any, batch_index: int) -> list[tuple[str, np.ndarray]]:
    if isinstance(attn_by_layer, Mapping):
        items = list(attn_by_layer.items())
    else:
        tensor = torch.as_tensor(attn_by_layer)
        items = [(f"layer {i}", tensor[i]) for i in range(tensor.shape[0])]
    layers = []
    for name, w in items:
        w = torch.as_tensor(w).detach().float().cpu()
        if w.dim() == 4:
            w = w[batch_index]
        if w.dim() != 3:
            raise ValueError(f"attention of {name!r} must be (B, heads, Lq, Lk) or (heads, Lq, Lk)"
                             f", got {tuple(w.shape)}")
        layers.append((str(name), w.numpy()))
    if not layers:
        raise ValueError("plot_attention_grid got no attention maps")
    return layers


def short_layer_names(names: Sequence[str]) -> list[str]:
    """Short row labels for module names: the parts all names share are dropped.

    ``["encoder.layer.0.attention.self", "encoder.layer.1.attention.self"]`` ->
    ``["layer 0", "layer 1"]``; a lone name keeps its last number (``"layer 0"``) or its last
    part. Names that differ in more than a number keep their differing dotted parts.
    """
    parts = [str(n).split(".") for n in names]
    if not parts:
        return []
    if len(parts) == 1:
        numbers = [p for p in parts[0] if p.isdigit()]
        return [f"layer {numbers[-1]}" if numbers else parts[0][-1]]
    head = 0
    while all(len(p) > head + 1 for p in parts) and len({p[head] for p in parts}) == 1:
        head += 1
    tail = 0
    while (all(len(p) > head + tail + 1 for p in parts)
           and len({p[-1 - tail] for p in parts}) == 1):
        tail += 1
    middle = [".".join(p[head: len(p) - tail]) for p in parts]
    short = [f"layer {m}" if m.isdigit() else m for m in middle]
    return short if len(set(short)) == len(short) else [str(n) for n in names]


def plot_attention_grid(attn_by_layer: Any, boundaries: Sequence[int] = (),
                        segment_names: Sequence[str] | None = None, batch_index: int = 0,
                        heads: Sequence[int] | None = None, cmap: str = ATTENTION_CMAP,
                        path: str | Path | None = None) -> Figure:
    """Layer x head grid of attention matrices (query rows, key columns).

    ``attn_by_layer``: an :class:`~vlbook.nn.AttentionStore`, a mapping name -> ``(B, heads, Lq,
    Lk)``/``(heads, Lq, Lk)``, or a tensor ``(layers, heads, Lq, Lk)``. ``boundaries``: token
    indices where a new modality starts (e.g. ``[num_text_tokens]`` for ``[text; video]``),
    drawn as white lines on both axes; ``segment_names`` labels the segments on the bottom
    row. Each row is labelled once, on its first panel, with a short layer name
    (:func:`short_layer_names`), written horizontally so rows of any height stay readable.
    """
    layers = _attention_layers(attn_by_layer, batch_index)
    labels = short_layer_names([name for name, _ in layers])
    num_heads = layers[0][1].shape[0]
    heads = list(heads) if heads is not None else list(range(num_heads))
    fig, axes = plt.subplots(len(layers), len(heads), squeeze=False,
                             figsize=(1.8 * len(heads) + 1.2, 1.8 * len(layers) + 0.6))
    for r, (_, w) in enumerate(layers):
        for c, h in enumerate(heads):
            ax = axes[r, c]
            ax.imshow(w[h], cmap=cmap, vmin=0.0, interpolation="nearest", aspect="auto")
            for b in boundaries:
                if 0 < b < w.shape[-1]:
                    ax.axvline(b - 0.5, color="white", lw=0.8)
                if 0 < b < w.shape[-2]:
                    ax.axhline(b - 0.5, color="white", lw=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"head {h}")
            if c == 0:
                ax.set_ylabel(labels[r], fontsize="small", rotation=0, ha="right", va="center")
    if segment_names:
        edges = [0, *boundaries, layers[0][1].shape[-1]]
        centers = [(a + b) / 2 - 0.5 for a, b in zip(edges[:-1], edges[1:])]
        for ax in axes[-1]:
            ax.set_xticks(centers, list(segment_names)[: len(centers)], fontsize="x-small")
    fig.supxlabel("keys", fontsize="small")
    fig.supylabel("queries", fontsize="small")
    fig.tight_layout()
    return _finish(fig, path)


def plot_text_to_patch_attention(frames: Any, attn: Any, grid_hw: tuple[int, int],
                                 token: str | None = None, alpha: float = 0.55,
                                 cmap: str = ATTENTION_CMAP,
                                 path: str | Path | None = None) -> Figure:
    """One text token's attention over video patches, as a heatmap on each frame.

    ``attn`` holds the weights over the video tokens: ``(T' * gh * gw,)`` in (t, h, w) order or
    ``(T', gh, gw)``; ``T'`` may be smaller than the number of frames (tubelets span several
    frames). One colour scale for all frames, so frames can be compared.
    """
    images = to_uint8_frames(frames)
    t, h, w, _ = images.shape
    gh, gw = grid_hw
    weights = np.asarray(torch.as_tensor(attn).detach().float().cpu())
    if weights.size % (gh * gw):
        raise ValueError(f"attn has {weights.size} entries, not a multiple of grid {gh}x{gw}")
    weights = weights.reshape(-1, gh, gw)
    if t % weights.shape[0]:
        raise ValueError(f"{weights.shape[0]} temporal token slices do not divide {t} frames")
    per = t // weights.shape[0]
    vmax = float(weights.max()) or 1.0
    fig, axes = plt.subplots(1, t, squeeze=False, figsize=(2.2 * t, 2.4))
    for i in range(t):
        ax = axes[0, i]
        ax.imshow(images[i])
        ax.imshow(weights[i // per], cmap=cmap, alpha=alpha, vmin=0.0, vmax=vmax,
                  extent=(-0.5, w - 0.5, h - 0.5, -0.5), interpolation="bilinear")
        ax.set_axis_off()
        ax.set_title(f"frame {i}", fontsize="small")
    if token:
        fig.suptitle(f"attention of {token!r} over video patches")
    fig.tight_layout()
    return _finish(fig, path)


def plot_mask_overlay(frames: Any, mask: Any, patch_size: int, tubelet_size: int = 1,
                      alpha: float = 0.75, title: str | None = None,
                      path: str | Path | None = None) -> Figure:
    """Frames with masked patches (``True`` in ``mask``) covered by a dark overlay.

    ``mask``: ``(N,)`` over tokens in (t, h, w) order or ``(T', gh, gw)``. Each axis holds the
    frame and an RGBA overlay whose alpha is ``alpha`` exactly on masked pixels and 0 elsewhere.
    """
    images = to_uint8_frames(frames)
    t, h, w, _ = images.shape
    pixels = mask_to_pixels(mask, t, h, w, patch_size, tubelet_size)
    fig, axes = plt.subplots(1, t, squeeze=False, figsize=(2.2 * t, 2.4))
    for i in range(t):
        overlay = np.zeros((h, w, 4), dtype=np.float32)
        overlay[..., :3] = MASK_COLOR
        overlay[..., 3] = pixels[i] * alpha
        ax = axes[0, i]
        ax.imshow(images[i])
        ax.imshow(overlay, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"frame {i}: {pixels[i].mean():.0%} masked", fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _finish(fig, path)


def plot_reconstruction(original: Any, masked: Any, reconstructed: Any,
                        row_titles: Sequence[str] = ("original", "masked", "reconstructed"),
                        path: str | Path | None = None, show_error: bool = False) -> Figure:
    """Rows of frames: original, masked input (see :func:`apply_mask`), reconstruction and,
    with ``show_error``, the per-pixel error ``|original - reconstruction|`` (mean over
    colours, on one shared scale, so a tube the model got wrong stands out)."""
    rows = [to_uint8_frames(x) for x in (original, masked, reconstructed)]
    t = rows[0].shape[0]
    if any(r.shape != rows[0].shape for r in rows):
        raise ValueError(f"original, masked and reconstructed frames must have the same shape; "
                         f"got {[r.shape for r in rows]}")
    titles = list(row_titles)
    error = None
    if show_error:
        error = np.abs(rows[0].astype(np.float32) - rows[2].astype(np.float32)).mean(-1) / 255
        titles.append("|error|")
    n_rows = len(titles)
    fig, axes = plt.subplots(n_rows, t, squeeze=False, figsize=(2.0 * t, 2.1 * n_rows))
    for r, name in enumerate(titles):
        for i in range(t):
            ax = axes[r, i]
            if r < 3:
                ax.imshow(rows[r][i])
            else:
                image = ax.imshow(error[i], cmap="magma", vmin=0, vmax=max(float(error.max()),
                                                                            1e-6))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_ylabel(name)
            if r == 0:
                ax.set_title(f"frame {i}", fontsize="small")
    fig.tight_layout()
    if error is not None:
        fig.colorbar(image, ax=list(axes[-1]), fraction=0.02, pad=0.01)
    return _finish(fig, path)


def plot_clip_grid(clips: Sequence[Any], captions: Sequence[str], max_frames: int = 4,
                   wrap: int = 60, path: str | Path | None = None) -> Figure:
    """Example clips, one row each (up to ``max_frames`` evenly spaced frames) with its caption."""
    import textwrap

    if len(clips) != len(captions):
        raise ValueError(f"{len(clips)} clips but {len(captions)} captions")
    if not clips:
        raise ValueError("plot_clip_grid needs at least one clip")
    videos = [to_uint8_frames(c) for c in clips]
    cols = min(max_frames, max(v.shape[0] for v in videos))
    fig, axes = plt.subplots(len(videos), cols, squeeze=False,
                             figsize=(2.0 * cols, 2.0 * len(videos) + 0.3 * len(videos)))
    for r, (video, caption) in enumerate(zip(videos, captions)):
        picks = np.linspace(0, video.shape[0] - 1, num=min(cols, video.shape[0])).round()
        for c in range(cols):
            ax = axes[r, c]
            ax.set_axis_off()
            if c < len(picks):
                ax.imshow(video[int(picks[c])])
        axes[r, 0].set_title("\n".join(textwrap.wrap(caption, wrap)), loc="left",
                             fontsize="small")
    fig.tight_layout()
    return _finish(fig, path)


def _patch_mean(pixels: np.ndarray, grid_hw: tuple[int, int]) -> np.ndarray:
    t, h, w = pixels.shape
    gh, gw = grid_hw
    if h % gh or w % gw:
        raise ValueError(f"frames of {h}x{w} pixels do not split into a {gh}x{gw} patch grid")
    return pixels.reshape(t, gh, h // gh, gw, w // gw).mean(axis=(2, 4))


def colour_coverage(frames: Any, rgb: Sequence[float], grid_hw: tuple[int, int],
                    tolerance: float = 60.0) -> np.ndarray:
    """Per frame and patch, the share of pixels within ``tolerance`` (RGB distance, 0-255)
    of the colour ``rgb``: ``(T, gh, gw)`` in [0, 1].

    On the synthetic clips, whose shapes are flat colours from
    :data:`vlbook.data.synthetic.COLOURS`, this says where the object of a colour is, which
    lets a figure's text say whether an attention map lands on the object a word names.
    """
    images = to_uint8_frames(frames).astype(np.float32)
    distance = np.linalg.norm(images - np.asarray(rgb, dtype=np.float32), axis=-1)
    return _patch_mean((distance < tolerance).astype(np.float32), grid_hw)


def foreground_patches(frames: Any, grid_hw: tuple[int, int],
                       threshold: float = 40.0) -> np.ndarray:
    """Boolean ``(T, gh, gw)``: ``True`` where a patch holds a pixel farther than
    ``threshold`` (RGB distance) from its frame's median colour, i.e. part of an object on a
    flat background (the synthetic clips); ``False`` patches are background only."""
    images = to_uint8_frames(frames).astype(np.float32)
    t = images.shape[0]
    median = np.median(images.reshape(t, -1, 3), axis=1)[:, None, None, :]
    far = np.linalg.norm(images - median, axis=-1) > threshold
    return _patch_mean(far.astype(np.float32), grid_hw) > 0


def same_code_share(codes: Any, where: Any | None = None) -> tuple[float, int]:
    """Share of patches whose code is the same in the next frame, and how many pairs.

    ``codes``: ``(T, gh, gw)`` code ids of one clip. ``where`` (boolean, same shape) restricts
    the count to patch pairs selected in *both* frames (e.g. background in both, from
    :func:`foreground_patches` negated). Returns ``(share, pairs)``; ``share`` is NaN when no
    pair is selected.
    """
    c = np.asarray(codes.cpu() if isinstance(codes, torch.Tensor) else codes)
    if c.ndim != 3 or c.shape[0] < 2:
        raise ValueError(f"codes must be (T >= 2, gh, gw), got shape {c.shape}")
    same = c[1:] == c[:-1]
    keep = np.ones_like(same, dtype=bool)
    if where is not None:
        w = np.asarray(where.cpu() if isinstance(where, torch.Tensor) else where).astype(bool)
        if w.shape != c.shape:
            raise ValueError(f"where has shape {w.shape}, codes {c.shape}")
        keep = w[1:] & w[:-1]
    pairs = int(keep.sum())
    return (float(same[keep].mean()) if pairs else float("nan")), pairs


def plot_code_grid(clips: Sequence[Any], codes: Sequence[Any], captions: Sequence[str],
                   wrap: int | None = None, show_numbers: bool = True, alpha: float = 0.3,
                   path: str | Path | None = None) -> Figure:
    """Tokenizer codes drawn on frames: one row per clip, one column per frame.

    ``codes[i]``: ``(T, gh, gw)`` code ids of clip ``i``. Each patch gets a light fill whose
    colour stands for its code (the same colour = the same code within a row) and, with
    ``show_numbers``, the code id in black with a white outline, readable on any fill.
    Captions are wrapped at ``wrap`` characters (by default what fits the row), never cut.
    """
    import textwrap

    from matplotlib import patheffects

    if not (len(clips) == len(codes) == len(captions)):
        raise ValueError(f"{len(clips)} clips, {len(codes)} code grids and {len(captions)} "
                         "captions: one of each per row")
    if not clips:
        raise ValueError("plot_code_grid needs at least one clip")
    videos = [to_uint8_frames(c) for c in clips]
    grids = [np.asarray(g.cpu() if isinstance(g, torch.Tensor) else g) for g in codes]
    for v, g in zip(videos, grids):
        if g.ndim != 3 or g.shape[0] != v.shape[0]:
            raise ValueError(f"codes of shape {g.shape} do not match {v.shape[0]} frames")
    cols = max(v.shape[0] for v in videos)
    palette = plt.get_cmap("tab20")
    fig = plt.figure(figsize=(2.3 * cols, 2.9 * len(videos)), layout="constrained")
    rows = fig.subfigures(len(videos), 1, squeeze=False)[:, 0]
    outline = [patheffects.withStroke(linewidth=2, foreground="white")]
    width_chars = wrap or max(20, int(2.3 * cols * 72 / 5.5))  # ~5.5 pt per character
    for row, video, grid, caption in zip(rows, videos, grids, captions):
        axes = row.subplots(1, cols, squeeze=False)[0]
        _, height, width, _ = video.shape
        gh, gw = grid.shape[1:]
        ch, cw = height / gh, width / gw
        colour_of = {c: palette(i % 20) for i, c in enumerate(np.unique(grid).tolist())}
        fontsize = max(4.0, min(8.0, 60.0 / max(gh, gw)))
        for c, ax in enumerate(axes):
            ax.set_axis_off()
            if c >= video.shape[0]:
                continue
            ax.imshow(video[c])
            fill = np.zeros((gh, gw, 4))
            for y in range(gh):
                for x in range(gw):
                    fill[y, x] = (*colour_of[int(grid[c, y, x])][:3], alpha)
                    if show_numbers:
                        ax.text((x + 0.5) * cw - 0.5, (y + 0.5) * ch - 0.5, str(grid[c, y, x]),
                                ha="center", va="center", fontsize=fontsize, color="black",
                                path_effects=outline)
            ax.imshow(fill, extent=(-0.5, width - 0.5, height - 0.5, -0.5),
                      interpolation="nearest")
            ax.set_title(f"frame {c}", fontsize="small")
        row.suptitle("\n".join(textwrap.wrap(caption, width_chars)), x=0.01, ha="left",
                     fontsize="small")
    return _finish(fig, path)


def _format_value(value: Any, digits: int, count: bool = False) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return "—"
        return f"{value:,.0f}" if count else f"{value:.{digits}f}"
    return str(value)


def metric_table(metrics: Mapping[str, Any], units: Mapping[str, str] | None = None,
                 percent: Sequence[str] = (), names: Mapping[str, str] | None = None,
                 digits: int = 2, column: str = "value", counts: Sequence[str] = ()) -> Any:
    """A small table for display: one row per metric, its value (formatted) and its unit.

    ``percent``: the metrics that are fractions in [0, 1] and are shown as % (x100), so a
    table never mixes the two. ``counts``: metrics written as whole numbers (items, steps)
    even when stored as floats; other numbers get ``digits`` decimals. ``units``: unit per
    metric (``"%"`` for the ``percent`` ones unless given). ``names``: display names per
    metric. Entries of ``percent``, ``counts``, ``units`` and ``names`` for absent metrics are
    ignored, so one description serves runs that report fewer metrics. Missing values
    (``None``, NaN) are shown as "—". Returns a :class:`pandas.DataFrame` indexed by metric
    (values as strings: this is for reading; keep the numbers in the results dict).
    """
    import pandas as pd

    units, names, percent, counts = dict(units or {}), dict(names or {}), set(percent), set(counts)
    rows = {}
    for key, value in metrics.items():
        if key in percent and value is not None:
            value = 100.0 * float(value)
        unit = units.get(key, "%" if key in percent else "")
        rows[names.get(key, key)] = {column: _format_value(value, digits, key in counts),
                                     "unit": unit}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "metric"
    return table


def tidy_table(frame: Any, digits: int | None = None, missing: str = "—") -> Any:
    """``frame`` (a :class:`pandas.DataFrame`) for display: numbers rounded to ``digits`` and
    missing values (``None``, NaN) written as ``missing``, so no table shows ``NaN``."""
    out = frame.round(digits) if digits is not None else frame.copy()
    return out.astype(object).where(out.notna(), missing)
