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
    "denormalize",
    "mask_to_pixels",
    "plot_attention_grid",
    "plot_clip_grid",
    "plot_mask_overlay",
    "plot_reconstruction",
    "plot_text_to_patch_attention",
    "save_figure",
    "set_style",
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


def plot_attention_grid(attn_by_layer: Any, boundaries: Sequence[int] = (),
                        segment_names: Sequence[str] | None = None, batch_index: int = 0,
                        heads: Sequence[int] | None = None, cmap: str = ATTENTION_CMAP,
                        path: str | Path | None = None) -> Figure:
    """Layer x head grid of attention matrices (query rows, key columns).

    ``attn_by_layer``: an :class:`~vlbook.nn.AttentionStore`, a mapping name -> ``(B, heads, Lq,
    Lk)``/``(heads, Lq, Lk)``, or a tensor ``(layers, heads, Lq, Lk)``. ``boundaries``: token
    indices where a new modality starts (e.g. ``[num_text_tokens]`` for ``[text; video]``),
    drawn as white lines on both axes; ``segment_names`` labels the segments on the first panel.
    """
    layers = _attention_layers(attn_by_layer, batch_index)
    num_heads = layers[0][1].shape[0]
    heads = list(heads) if heads is not None else list(range(num_heads))
    fig, axes = plt.subplots(len(layers), len(heads), squeeze=False,
                             figsize=(1.8 * len(heads) + 0.6, 1.8 * len(layers) + 0.4))
    for r, (name, w) in enumerate(layers):
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
                ax.set_ylabel(name, fontsize="small")
    if segment_names:
        edges = [0, *boundaries, layers[0][1].shape[-1]]
        centers = [(a + b) / 2 - 0.5 for a, b in zip(edges[:-1], edges[1:])]
        ax = axes[-1, 0]
        ax.set_xticks(centers, list(segment_names)[: len(centers)], fontsize="x-small")
    fig.supxlabel("keys", fontsize="small")
    fig.supylabel("queries (per layer)", fontsize="small")
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
