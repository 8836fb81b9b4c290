"""Video transforms: resize, random resized / multi-scale crop, flip, normalisation.

All transforms act on a whole clip at once (the same crop and flip for every frame) and work
on float tensors ``(T, C, H, W)``. :class:`VideoTransform` takes the uint8 ``(T, H, W, 3)``
frames a reader returns and produces the normalised ``(T, C, H, W)`` float tensor of vlbook's
batch convention. Images are single-frame videos (``T = 1``).

Crops used by the papers: ``random_resized`` (UMT, All-in-one pre-training: area scale
0.5-1), ``multiscale`` (TSN's MultiScaleCrop, SimVTP: scales 1, .875, .75, .66 of the short
side, corner or centre positions), ``center`` (evaluation), ``resize`` (whole frame squashed to
``size``; the synthetic benchmark, whose objects may sit near the border).

Horizontal flip is off by default: it swaps "left" and "right", so on captions that name a
direction (the synthetic benchmark's) it turns a true caption into a false one.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from vlbook.constants import IMAGENET_MEAN, IMAGENET_STD

CROPS: tuple[str, ...] = ("resize", "center", "random_resized", "multiscale")


def to_float_tensor(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` → float ``(T, 3, H, W)`` in ``[0, 1]``."""
    x = torch.as_tensor(np.asarray(frames))
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got shape {tuple(x.shape)}")
    return x.permute(0, 3, 1, 2).float().div_(255.0)


def resize(video: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of ``(T, C, H, W)`` to ``size`` (int: square)."""
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(video.shape[-2:]) == hw:
        return video
    return F.interpolate(video, size=hw, mode="bilinear", align_corners=False, antialias=True)


def resize_short_side(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize so that the shorter side is ``size``, keeping the aspect ratio."""
    h, w = video.shape[-2:]
    scale = size / min(h, w)
    return resize(video, (max(size, round(h * scale)), max(size, round(w * scale))))


def crop(video: torch.Tensor, top: int, left: int, height: int, width: int) -> torch.Tensor:
    return video[..., top : top + height, left : left + width]


def center_crop(video: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to ``size`` and take the central ``size``×``size`` square."""
    video = resize_short_side(video, size)
    h, w = video.shape[-2:]
    return crop(video, (h - size) // 2, (w - size) // 2, size, size)


def random_resized_crop(
    video: torch.Tensor,
    size: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> torch.Tensor:
    """Inception-style crop: random area fraction in ``scale``, aspect ratio in ``ratio``."""
    h, w = video.shape[-2:]
    area = h * w
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        cw = int(round(math.sqrt(target * aspect)))
        ch = int(round(math.sqrt(target / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(rng.integers(0, h - ch + 1))
            left = int(rng.integers(0, w - cw + 1))
            return resize(crop(video, top, left, ch, cw), size)
    return center_crop(video, size)


def multi_scale_crop(
    video: torch.Tensor,
    size: int,
    rng: np.random.Generator,
    scales: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66),
    max_distort: int = 1,
) -> torch.Tensor:
    """TSN MultiScaleCrop: crop sides from ``scales`` × short side, at a corner or the centre.

    Height and width scales are chosen independently but at most ``max_distort`` steps apart;
    the crop sits at one of five fixed positions (four corners, centre), then is resized.
    """
    h, w = video.shape[-2:]
    base = min(h, w)
    sides = [int(base * s) for s in scales]
    pairs = [
        (sh, sw)
        for i, sh in enumerate(sides)
        for j, sw in enumerate(sides)
        if abs(i - j) <= max_distort
    ]
    ch, cw = pairs[int(rng.integers(0, len(pairs)))]
    dy, dx = h - ch, w - cw
    positions = [(0, 0), (0, dx), (dy, 0), (dy, dx), (dy // 2, dx // 2)]
    top, left = positions[int(rng.integers(0, len(positions)))]
    return resize(crop(video, top, left, ch, cw), size)


def horizontal_flip(video: torch.Tensor) -> torch.Tensor:
    return video.flip(-1)


def normalize(
    video: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Per-channel ``(x - mean) / std`` of ``(T, C, H, W)`` (values in ``[0, 1]``)."""
    m = torch.tensor(mean, dtype=video.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=video.dtype).view(1, -1, 1, 1)
    return (video - m) / s


def denormalize(
    video: torch.Tensor,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> torch.Tensor:
    """Inverse of :func:`normalize` (works on ``(..., C, H, W)``), for plots and pixel targets."""
    m = torch.tensor(mean, dtype=video.dtype).view(-1, 1, 1)
    s = torch.tensor(std, dtype=video.dtype).view(-1, 1, 1)
    return video * s + m


class VideoTransform:
    """uint8 frames ``(T, H, W, 3)`` → normalised float ``(T, 3, size, size)``.

    ``crop`` is one of :data:`CROPS`; random crops (and ``flip``) apply only when
    ``train=True``, evaluation always uses ``center`` (or ``resize`` when ``crop="resize"``).
    """

    def __init__(
        self,
        size: int,
        *,
        train: bool,
        crop: str = "resize",
        flip: bool = False,
        scale: tuple[float, float] = (0.5, 1.0),
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
    ) -> None:
        if crop not in CROPS:
            raise ValueError(f"crop {crop!r} is not known; choose one of {CROPS}")
        self.size, self.train, self.crop, self.flip = size, train, crop, flip
        self.scale, self.mean, self.std = scale, mean, std

    def __call__(self, frames: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        video = to_float_tensor(frames)
        if self.crop == "resize":
            video = resize(video, self.size)
        elif self.crop == "center" or not self.train:
            video = center_crop(video, self.size)
        elif self.crop == "random_resized":
            video = random_resized_crop(video, self.size, rng, scale=self.scale)
        else:
            video = multi_scale_crop(video, self.size, rng)
        if self.train and self.flip and rng.random() < 0.5:
            video = horizontal_flip(video)
        return normalize(video.clamp_(0, 1), self.mean, self.std).contiguous()

    def __repr__(self) -> str:
        return (
            f"VideoTransform(size={self.size}, train={self.train}, crop={self.crop!r}, "
            f"flip={self.flip})"
        )
