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


#: Presentation times (ms) of :func:`write_vfr_test_video`'s frames: four frames 0.5 s apart,
#: then sixteen 0.125 s apart (2 fps, then 8 fps; the container's average rate is 5 fps).
VFR_TIMES_MS: tuple[int, ...] = (0, 500, 1000, 1500) + tuple(2000 + 125 * k for k in range(16))


def vfr_level(t: int) -> int:
    """Grey level of frame ``t`` of :func:`write_vfr_test_video` (12 levels apart)."""
    return 10 + 12 * t


def vfr_frame_ids(frames: np.ndarray) -> list[int]:
    """Which frames of :func:`write_vfr_test_video` decoded ``frames`` (T, H, W, 3) are."""
    return [int(round((float(f[:8].mean()) - 10) / 12)) for f in frames]


def write_vfr_test_video(path: Path, times_ms=VFR_TIMES_MS, size: int = 32) -> Path:
    """A variable-frame-rate H.264 mp4, made the way real VFR files are: every frame's pts is
    set on a 1 ms time base (the mp4 muxer stores it on 1/16000), with B-frames, so packets
    come in decode order. Frame ``t`` has grey level :func:`vfr_level` (the top 8 rows stay
    flat; read it back with :func:`vfr_frame_ids`) and a moving square below."""
    import warnings
    from fractions import Fraction

    import av

    n = len(times_ms)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream("libx264", rate=8)
            stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
            stream.codec_context.time_base = Fraction(1, 1000)
            stream.options = {"crf": "18", "preset": "veryfast", "bf": "2"}
            stream.thread_count = 1
            for t, ms in enumerate(times_ms):
                image = np.full((size, size, 3), vfr_level(t), dtype=np.uint8)
                x = 2 + t * (size - 10) // max(n - 1, 1)
                image[12:20, x : x + 8] = 255 - vfr_level(t)
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts, frame.time_base = int(ms), Fraction(1, 1000)
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path
