"""Video reading and writing behind one interface.

Two decoders give the same frames for the same file (both wrap FFmpeg's H.264 decoder):

``decord``
    the papers' choice (SimVTP, UMT and All-in-one read with ``decord.VideoReader``); a
    ``py3-none`` wheel exists for x86-64 Linux/Windows only.
``pyav``
    the maintained fallback (PyAV, FFmpeg bindings) for every other platform and Python.

``backend="auto"`` uses decord when it can be imported and PyAV otherwise. Every failure —
missing, zero-byte, truncated, non-video, or unsupported-codec file, or a frame index past the
end — raises :class:`VideoDecodeError` naming the file and the reason, so a dataset can skip
the file with a warning instead of stopping training.

Seconds to frames
-----------------
A clip given in seconds (an annotation's ``start``/``end``) is mapped to frames with the
frames' own presentation timestamps, not with the average rate: in a variable-frame-rate file
(phone recordings, screen captures, re-muxed streams) ``second × average fps`` lands on the
wrong frames. :func:`read_video` ``(..., frame_times=True)`` and :func:`video_info` fill
:attr:`VideoInfo.frame_times` — each frame's start in seconds, counted from the first frame —
from ``decord.VideoReader.get_frame_timestamp`` or, with PyAV, from the packets' pts in
presentation order (demuxing only, nothing is decoded); both give the same times, so both give
the same frames. :func:`frame_span` then takes the frame whose interval contains ``start``
(the last one starting at or before it) through the last frame starting before ``end``. On a
constant-rate file the frame times are ``i / fps`` and this is the old
``floor(start·fps)`` … ``ceil(end·fps)`` (exclusive), so constant-rate clips read the same
frames as before — except where that float product rounded across a frame start (``end=0.28``
at 25 fps gave ``ceil(7.000000000000001) = 8``), where the exact time now decides (7).
Times within a microsecond (relative, ``1e-6·max(1, t)``) of a frame start count as that
frame's start, so decord's float32 timestamps and PyAV's exact ones give the same frames.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np

BACKENDS: tuple[str, ...] = ("auto", "decord", "pyav")


class VideoDecodeError(RuntimeError):
    """A video could not be opened or decoded; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot decode video {self.path}: {reason}")


@dataclass(frozen=True)
class VideoInfo:
    """Frame count, frame rate and size of a video as its container reports them.

    ``frame_times`` (only when asked for, see :func:`read_video`): float64 ``(num_frames,)``,
    each frame's presentation time in seconds from the first frame, non-decreasing. It is not
    part of equality (decord reports float32 times, PyAV exact ones).
    """

    num_frames: int
    fps: float
    height: int
    width: int
    frame_times: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def duration(self) -> float:
        """Length in seconds (``num_frames / fps``)."""
        return self.num_frames / self.fps if self.fps > 0 else 0.0


def decord_available() -> bool:
    """Whether the ``decord`` module can be imported here."""
    try:
        import decord  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def resolve_backend(backend: str = "auto") -> str:
    """``"decord"`` or ``"pyav"`` for ``backend`` (``"auto"`` prefers decord)."""
    if backend not in BACKENDS:
        raise ValueError(f"video backend {backend!r} is not known; choose one of {BACKENDS}")
    if backend == "auto":
        return "decord" if decord_available() else "pyav"
    if backend == "decord" and not decord_available():
        raise ImportError(
            "video backend 'decord' was requested but `import decord` fails here "
            "(decord has wheels for x86-64 Linux/Windows only); use backend='pyav'"
        )
    return backend


def _check_file(path: Path) -> None:
    if not path.exists():
        raise VideoDecodeError(path, "file does not exist")
    if not path.is_file():
        raise VideoDecodeError(path, "not a regular file")
    if path.stat().st_size == 0:
        raise VideoDecodeError(path, "zero-byte file")


class _DecordReader:
    def __init__(self, path: Path) -> None:
        import decord

        try:
            self._vr = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            n = len(self._vr)
            fps = float(self._vr.get_avg_fps())
            if n == 0:
                raise VideoDecodeError(path, "no decodable frames")
            h, w = self._vr[0].shape[:2]
        except VideoDecodeError:
            raise
        except Exception as err:  # noqa: BLE001 - DECORDError, RuntimeError, ...
            raise VideoDecodeError(path, f"decord could not open it ({_short(err)})") from err
        self.path = path
        self.info = VideoInfo(num_frames=n, fps=fps, height=int(h), width=int(w))

    def frame_times(self) -> np.ndarray:
        """Each frame's presentation time (s, from the first frame), from decord's index."""
        try:
            ts = self._vr.get_frame_timestamp(list(range(self.info.num_frames)))
            starts = np.asarray(ts, dtype=np.float64).reshape(-1, 2)[:, 0]
        except Exception as err:  # noqa: BLE001
            raise VideoDecodeError(
                self.path, f"decord could not read frame timestamps ({_short(err)})"
            ) from err
        return _relative_times(self.path, starts)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        try:
            return self._vr.get_batch(list(indices)).asnumpy()
        except Exception as err:  # noqa: BLE001
            raise VideoDecodeError(self.path, f"decord failed to decode ({_short(err)})") from err

    def close(self) -> None:
        del self._vr


class _PyAVReader:
    def __init__(self, path: Path) -> None:
        import av

        self.path = path
        try:
            self._container = av.open(str(path))
        except Exception as err:  # noqa: BLE001 - av.error.InvalidDataError and friends
            raise VideoDecodeError(path, f"not a readable media file ({_short(err)})") from err
        if not self._container.streams.video:
            self._container.close()
            raise VideoDecodeError(path, "the file has no video stream")
        stream = self._container.streams.video[0]
        if stream.codec_context is None or stream.codec_context.codec is None:
            self._container.close()
            raise VideoDecodeError(path, "unsupported codec")
        rate = stream.average_rate or stream.guessed_rate or Fraction(0)
        fps = float(rate)
        n = int(stream.frames or 0)
        if n == 0 and stream.duration is not None and stream.time_base is not None and fps > 0:
            n = int(round(float(stream.duration * stream.time_base) * fps))
        if n == 0:
            n = self._count_frames()
        self.info = VideoInfo(num_frames=n, fps=fps, height=stream.height, width=stream.width)
        if n == 0:
            self.close()
            raise VideoDecodeError(path, "no decodable frames")

    def _count_frames(self) -> int:
        count = 0
        try:
            for _ in self._container.decode(video=0):
                count += 1
        except Exception:  # noqa: BLE001 - count what decodes
            pass
        self._container.seek(0)
        return count

    def frame_times(self) -> np.ndarray:
        """Each frame's presentation time (s, from the first frame): the video packets' pts
        sorted into presentation order (frames decode in that order); nothing is decoded."""
        import av

        stream = self._container.streams.video[0]
        stamps: list[int] = []
        try:
            self._container.seek(0)
            for packet in self._container.demux(stream):
                stamp = packet.pts if packet.pts is not None else packet.dts
                if stamp is None or packet.size == 0 or packet.is_discard:
                    continue  # the flush packet, or one the decoder drops
                stamps.append(int(stamp))
            self._container.seek(0)
        except (av.error.FFmpegError, ValueError, RuntimeError) as err:
            raise VideoDecodeError(
                self.path, f"could not read frame timestamps ({_short(err)})"
            ) from err
        if not stamps or stream.time_base is None:
            raise VideoDecodeError(self.path, "the video packets carry no timestamps")
        ticks = np.sort(np.asarray(stamps, dtype=np.int64))
        tb = stream.time_base
        return _relative_times(self.path, (ticks - ticks[0]) * tb.numerator / tb.denominator)

    def get(self, indices: Sequence[int]) -> np.ndarray:
        import av

        wanted = sorted(set(indices))
        last = wanted[-1]
        found: dict[int, np.ndarray] = {}
        decoded = 0
        try:
            self._container.seek(0)
            for i, frame in enumerate(self._container.decode(video=0)):
                decoded = i + 1
                if i in wanted:
                    found[i] = frame.to_ndarray(format="rgb24")
                if i >= last:
                    break
        except (av.error.FFmpegError, ValueError, RuntimeError) as err:
            raise VideoDecodeError(
                self.path, f"decoding stopped after {decoded} frames ({_short(err)})"
            ) from err
        missing = [i for i in wanted if i not in found]
        if missing:
            raise VideoDecodeError(
                self.path,
                f"frame {missing[0]} requested but only {decoded} frames decode "
                f"(container says {self.info.num_frames}; truncated file?)",
            )
        return np.stack([found[i] for i in indices])

    def close(self) -> None:
        self._container.close()


def _relative_times(path: Path, starts: np.ndarray) -> np.ndarray:
    if starts.size == 0:
        raise VideoDecodeError(path, "no frame timestamps")
    times = starts - starts[0]
    if np.any(np.diff(times) < 0):
        k = int(np.argmax(np.diff(times) < 0)) + 1
        raise VideoDecodeError(
            path,
            f"frame timestamps go backwards at frame {k} ({times[k - 1]:.6f} s, "
            f"then {times[k]:.6f} s)",
        )
    times.flags.writeable = False
    return times


def _tolerance(seconds: float) -> float:
    return 1e-6 * max(1.0, abs(seconds))


def frame_span(
    info: VideoInfo, start: float | None = None, end: float | None = None
) -> tuple[int, int]:
    """Frames ``[first, last)`` of the clip from ``start`` to ``end`` seconds.

    ``first`` is the frame showing at ``start`` (the last one starting at or before it) and
    ``last`` is one past the last frame starting before ``end``; ``None`` means the video's
    start or end. Uses ``info.frame_times`` when present (see the module docstring) and the
    constant-rate grid ``i / fps`` otherwise (no clipping when ``fps`` is unknown). The span
    is clamped to the video and holds at least one frame.
    """
    n = info.num_frames
    if info.frame_times is not None:
        times = np.asarray(info.frame_times, dtype=np.float64)[:n]
    elif info.fps > 0:
        times = np.arange(n, dtype=np.float64) / info.fps
    else:
        return 0, n
    n = len(times)
    first, last = 0, n
    if start is not None:
        start = float(start)
        first = int(np.searchsorted(times, start + _tolerance(start), side="right")) - 1
        first = min(max(first, 0), n - 1)
    if end is not None:
        end = float(end)
        last = int(np.searchsorted(times, end - _tolerance(end), side="left"))
        last = min(max(last, first + 1), n)
    return first, last


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    first = text[0] if text else type(err).__name__
    return f"{type(err).__name__}: {first[:200]}"


def open_video(path: str | Path, backend: str = "auto") -> _DecordReader | _PyAVReader:
    """An open reader with ``.info`` (:class:`VideoInfo`), ``.get(indices)`` and ``.close()``."""
    path = Path(path)
    _check_file(path)
    name = resolve_backend(backend)
    return _DecordReader(path) if name == "decord" else _PyAVReader(path)


def video_info(path: str | Path, backend: str = "auto", *, frame_times: bool = False) -> VideoInfo:
    """Frame count, fps and size of the video at ``path`` (and ``frame_times`` if asked)."""
    reader = open_video(path, backend)
    try:
        return _info(reader, frame_times)
    finally:
        reader.close()


def _info(reader: _DecordReader | _PyAVReader, frame_times: bool) -> VideoInfo:
    if not frame_times:
        return reader.info
    return replace(reader.info, frame_times=reader.frame_times())


def read_frames(path: str | Path, indices: Sequence[int], backend: str = "auto") -> np.ndarray:
    """Frames ``indices`` of the video at ``path`` as uint8 RGB ``(T, H, W, 3)``.

    Indices may repeat and need not be sorted. Raises :class:`VideoDecodeError` when the file
    cannot be decoded or an index is outside ``[0, num_frames)``.
    """
    indices = [int(i) for i in indices]
    if not indices:
        raise ValueError("read_frames needs at least one frame index")
    reader = open_video(path, backend)
    try:
        n = reader.info.num_frames
        bad = [i for i in indices if i < 0 or i >= n]
        if bad:
            raise VideoDecodeError(path, f"frame index {bad[0]} outside [0, {n})")
        frames = reader.get(indices)
    finally:
        reader.close()
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise VideoDecodeError(path, f"decoder returned frames of shape {frames.shape}")
    return frames


def read_video(
    path: str | Path,
    choose_indices,
    backend: str = "auto",
    *,
    frame_times: bool = False,
) -> tuple[np.ndarray, list[int], VideoInfo]:
    """Open once, pick frame indices with ``choose_indices(info) -> list[int]``, decode them.

    Returns ``(frames, indices, info)``. Used by datasets, which need the frame count before
    they can sample. With ``frame_times=True`` the info carries each frame's presentation
    time (:attr:`VideoInfo.frame_times`), which :func:`frame_span` uses to turn seconds into
    frames.
    """
    reader = open_video(path, backend)
    try:
        info = _info(reader, frame_times)
        indices = [int(i) for i in choose_indices(info)]
        n = info.num_frames
        bad = [i for i in indices if i < 0 or i >= n]
        if bad:
            raise VideoDecodeError(path, f"frame index {bad[0]} outside [0, {n})")
        frames = reader.get(indices)
        return frames, indices, info
    finally:
        reader.close()


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: float,
    *,
    codec: str = "libx264",
    crf: int = 18,
    overwrite: bool = True,
) -> Path:
    """Write uint8 RGB frames ``(T, H, W, 3)`` as an H.264 mp4 (yuv420p) with PyAV.

    Height and width must be even (a yuv420p requirement). ``crf`` sets the quality
    (0 lossless .. 51 worst; 18 is visually lossless).
    """
    import av

    path = Path(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"write_video expects uint8 frames (T, H, W, 3), got {frames.shape}")
    t, h, w, _ = frames.shape
    if h % 2 or w % 2:
        raise ValueError(f"write_video: H.264 yuv420p needs even height/width, got {h}x{w}")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists and overwrite=False")
    path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with av.open(str(path), mode="w") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
            stream.options = {"crf": str(crf), "preset": "veryfast", "tune": "zerolatency"}
            stream.thread_count = 1
            for i in range(t):
                frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    return path
