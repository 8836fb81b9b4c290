"""Helpers for the data tests: tiny videos and the bad files the loaders must survive."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlbook.data.video import write_video


def moving_square_frames(num_frames: int = 12, size: int = 32) -> np.ndarray:
    """A white square moving right on grey, distinct per frame (uint8 (T, H, W, 3))."""
    frames = np.full((num_frames, size, size, 3), 90, dtype=np.uint8)
    for t in range(num_frames):
        x = 2 + t * (size - 10) // max(num_frames - 1, 1)
        frames[t, 10:18, x : x + 8] = 250
        frames[t, 0, :] = (t * 20) % 256  # a per-frame stripe identifies the frame
    return frames


def write_test_video(path: Path, num_frames: int = 12, size: int = 32, fps: float = 8.0) -> Path:
    return write_video(path, moving_square_frames(num_frames, size), fps)


def write_bad_files(folder: Path, good: Path) -> dict[str, Path]:
    """Zero-byte, truncated, non-video and unsupported-codec files next to ``good``."""
    folder.mkdir(parents=True, exist_ok=True)
    data = good.read_bytes()
    files = {
        "zero_byte": folder / "zero.mp4",
        "truncated": folder / "truncated.mp4",
        "not_video": folder / "text.mp4",
        "bad_codec": folder / "codec.mp4",
    }
    files["zero_byte"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["not_video"].write_text("this is not a video\n" * 50)
    assert b"avc1" in data
    files["bad_codec"].write_bytes(data.replace(b"avc1", b"zzzz"))  # unknown codec tag
    return files
