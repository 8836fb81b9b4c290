"""Token embeddings of images and videos, and the fixed sinusoidal position table."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["PatchEmbed2d", "TubeletEmbed", "sinusoid_position_table"]


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def sinusoid_position_table(n: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal positions ``(n, dim)`` (Vaswani et al. 2017, Sec. 3.5).

    ``PE[p, j] = sin(p / 10000^(2*(j//2)/dim))`` for even ``j`` and ``cos`` of the same angle
    for odd ``j``: the table SimVTP and UMT add to their video tokens (both inherit it from
    VideoMAE; positions count tokens in (t, h, w) raster order). Computed in float64, returned
    as float32.
    """
    if n < 0 or dim <= 0:
        raise ValueError(f"sinusoid_position_table needs n >= 0 and dim > 0, got n={n}, dim={dim}")
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    j = torch.arange(dim, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / dim)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.float()


class PatchEmbed2d(nn.Module):
    """Non-overlapping image patches to tokens (ViT Sec. 3.1): ``(B, C, H, W) -> (B, N, D)``."""

    def __init__(self, img_size: int | tuple[int, int] = 224,
                 patch_size: int | tuple[int, int] = 16, in_chans: int = 3,
                 embed_dim: int = 768) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        if any(s % p for s, p in zip(self.img_size, self.patch_size)):
            raise ValueError(f"img_size {self.img_size} not divisible by patch {self.patch_size}")
        self.grid_size = (self.img_size[0] // self.patch_size[0],
                          self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.in_chans = in_chans
        self.proj = nn.Conv2d(in_chans, embed_dim, self.patch_size, self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (self.in_chans, *self.img_size):
            raise ValueError(
                f"PatchEmbed2d expects (B, {self.in_chans}, {self.img_size[0]}, "
                f"{self.img_size[1]}), got {tuple(x.shape)}"
            )
        return self.proj(x).flatten(2).transpose(1, 2)


class TubeletEmbed(nn.Module):
    """Video tubelets to tokens with a Conv3d (ViViT/VideoMAE; SimVTP 2x16x16, UMT 1x16x16).

    Input is a vlbook video batch ``(B, T, C, H, W)``; output ``(B, N, D)`` with
    ``N = T/t * H/p * W/p`` tokens in (t, h, w) raster order: token ``i`` covers time slice
    ``i // (gh*gw)``, row ``(i // gw) % gh`` and column ``i % gw``.
    """

    def __init__(self, img_size: int | tuple[int, int] = 224,
                 patch_size: int | tuple[int, int] = 16, tubelet_size: int = 2,
                 in_chans: int = 3, embed_dim: int = 768, num_frames: int = 16) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        if num_frames % tubelet_size:
            raise ValueError(f"num_frames={num_frames} not divisible by tubelet {tubelet_size}")
        if any(s % p for s, p in zip(self.img_size, self.patch_size)):
            raise ValueError(f"img_size {self.img_size} not divisible by patch {self.patch_size}")
        self.tubelet_size = tubelet_size
        self.num_frames = num_frames
        self.in_chans = in_chans
        self.grid_size = (num_frames // tubelet_size, self.img_size[0] // self.patch_size[0],
                          self.img_size[1] // self.patch_size[1])
        self.num_patches = math.prod(self.grid_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, (tubelet_size, *self.patch_size),
                              (tubelet_size, *self.patch_size))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        expected = (self.num_frames, self.in_chans, *self.img_size)
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(
                f"TubeletEmbed expects video (B, T, C, H, W) = (B, {', '.join(map(str, expected))})"
                f", got {tuple(video.shape)}"
            )
        x = self.proj(video.transpose(1, 2))  # (B, D, T', H', W')
        return x.flatten(2).transpose(1, 2)
