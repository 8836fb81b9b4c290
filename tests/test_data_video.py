"""Video readers (decord and PyAV agree), bad files, frame sampling and transforms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from data_fixtures import (
    VFR_TIMES_MS,
    moving_square_frames,
    vfr_frame_ids,
    write_bad_files,
    write_test_video,
    write_vfr_test_video,
)

from vlbook.data import sampling, transforms
from vlbook.data.video import (
    VideoDecodeError,
    decord_available,
    frame_span,
    read_frames,
    read_video,
    resolve_backend,
    video_info,
)

needs_decord = pytest.mark.skipif(not decord_available(), reason="decord has no wheel here")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("video") / "clip.mp4", num_frames=12)


def test_pyav_round_trip_keeps_frames(video):
    frames = read_frames(video, range(12), backend="pyav")
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == np.uint8
    # lossy H.264, but the moving square must sit where it was written
    original = moving_square_frames(12, 32)
    bright = frames[..., 0] > 170
    assert np.array_equal(bright[:, 12:16], original[:, 12:16, :, 0] > 170)
    info = video_info(video, backend="pyav")
    assert (info.num_frames, info.fps, info.height, info.width) == (12, 8.0, 32, 32)


@needs_decord
def test_decord_and_pyav_return_the_same_frames(video):
    idx = [0, 11, 5, 5, 3]
    a = read_frames(video, idx, backend="decord")
    b = read_frames(video, idx, backend="pyav")
    assert a.shape == b.shape == (5, 32, 32, 3)
    assert np.array_equal(a, b)
    assert video_info(video, "decord") == video_info(video, "pyav")


def test_out_of_range_index_raises(video):
    with pytest.raises(VideoDecodeError, match="outside"):
        read_frames(video, [12])


@pytest.mark.parametrize("backend", ["pyav", pytest.param("decord", marks=needs_decord)])
def test_bad_files_raise_video_decode_error(tmp_path, video, backend):
    bad = write_bad_files(tmp_path, video)
    reasons = {}
    for kind, path in bad.items():
        with pytest.raises(VideoDecodeError) as err:
            read_frames(path, [0, 1], backend=backend)
        assert err.value.path == str(path)
        reasons[kind] = err.value.reason
    assert reasons["zero_byte"] == "zero-byte file"
    with pytest.raises(VideoDecodeError, match="does not exist"):
        read_frames(tmp_path / "absent.mp4", [0], backend=backend)


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="pyav"):
        resolve_backend("opencv")


# -- seconds to frames: variable frame rate ----------------------------------------------

BACKEND_PARAMS = ["pyav", pytest.param("decord", marks=needs_decord)]

# (start, end) seconds -> frames [first, last) of the VFR clip, by hand from VFR_TIMES_MS:
# frames 0-3 at 0, 0.5, 1.0, 1.5 s, then frame k >= 4 at 2.0 + 0.125 (k - 4) s
VFR_SPANS = [
    ((1.0, 2.0), (2, 4)),  # 1.0 and 1.5 s
    ((1.2, 2.3), (2, 7)),  # frame 2 shows at 1.2 s; 2.25 s is the last start before 2.3
    ((2.9, 3.3), (11, 15)),  # 2.875 s shows at 2.9 s; 3.25 s is the last start before 3.3
    ((2.5, 2.5), (8, 9)),  # an empty span still gives the frame showing at its start
    ((3.9, 9.0), (19, 20)),  # clamped to the video
]


@pytest.fixture(scope="module")
def vfr_video(tmp_path_factory):
    return write_vfr_test_video(tmp_path_factory.mktemp("vfr") / "vfr.mp4")


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_frame_times_are_the_presentation_timestamps(vfr_video, backend):
    assert video_info(vfr_video, backend).frame_times is None  # only when asked for
    info = video_info(vfr_video, backend, frame_times=True)
    assert info.num_frames == 20 and info.frame_times.shape == (20,)
    assert np.allclose(info.frame_times, np.array(VFR_TIMES_MS) / 1000, rtol=0, atol=1e-6)
    # the average rate is no frame's rate: frames are 0.5 s, then 0.125 s apart
    assert 2 < info.fps < 8


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
@pytest.mark.parametrize(("span", "expected"), VFR_SPANS)
def test_vfr_clip_reads_the_frames_at_its_seconds(vfr_video, backend, span, expected):
    frames, idx, info = read_video(
        vfr_video, lambda info: list(range(*frame_span(info, *span))), backend, frame_times=True
    )
    assert (idx[0], idx[-1] + 1) == expected
    assert vfr_frame_ids(frames) == idx  # the pixels say these are the frames asked for


def test_average_rate_mapping_was_wrong_on_the_vfr_file(vfr_video):
    # what seconds x average fps gives (the behaviour before frame_times): other frames
    info = video_info(vfr_video, "pyav", frame_times=True)
    (start, end), right = VFR_SPANS[0]
    old = (int(np.floor(start * info.fps)), int(np.ceil(end * info.fps)))
    assert frame_span(video_info(vfr_video, "pyav"), start, end) == old
    assert old[0] > right[0] and old != right  # 1-2 s used to start at frame 4 (2.0 s) or later


@needs_decord
def test_decord_and_pyav_map_seconds_to_the_same_frames(vfr_video):
    a = video_info(vfr_video, "decord", frame_times=True)
    b = video_info(vfr_video, "pyav", frame_times=True)
    # every 1/16 s from -0.25 to 4.5 s: frame starts (ties) and points between them
    points = np.arange(-4, 73) / 16
    for start in points:
        for end in points[::3]:
            assert frame_span(a, start, end) == frame_span(b, start, end), (start, end)


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_constant_rate_spans_are_unchanged(video, backend):
    # 12 frames at 8 fps: the timestamps give the old floor(start*fps) .. ceil(end*fps)
    info = video_info(video, backend, frame_times=True)
    assert np.allclose(info.frame_times, np.arange(12) / 8, rtol=0, atol=1e-6)
    assert frame_span(info, 0.3, 0.9) == (2, 8)  # floor 2.4, ceil 7.2
    assert frame_span(info, 0.5, 1.0) == (4, 8)  # exactly on frame starts 4 and 8
    assert frame_span(info, 1.4, 5.0) == (11, 12)  # clamped
    assert frame_span(info, None, 0.2) == (0, 2) and frame_span(info, 0.7) == (5, 12)
    no_times = video_info(video, backend)
    for start in np.arange(0, 25) / 16:  # exact binary fractions: start*fps has no rounding
        for end in np.arange(0, 25) / 16:
            first = min(int(np.floor(start * 8)), 11)
            old = (first, min(max(int(np.ceil(end * 8)), first + 1), 12))
            assert frame_span(info, start, end) == frame_span(no_times, start, end) == old


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_decimal_seconds_on_frame_starts_at_30_fps(tmp_path, backend):
    # 1/30 s is no binary fraction (decord stores float32 times): a clip starting at 0.1 s
    # starts on frame 3, one ending at 0.2 s stops before frame 6, as exact arithmetic says
    from fractions import Fraction

    path = write_test_video(tmp_path / "30fps.mp4", num_frames=12, fps=30.0)
    info = video_info(path, backend, frame_times=True)
    assert frame_span(info, 0.1, 0.2) == (3, 6)
    for k in range(0, 41):
        seconds = k / 100  # decimal seconds, as annotations write them
        exact = Fraction(str(seconds)) * 30  # in frames
        first = min(math.floor(exact), 11)
        last = min(max(math.ceil(exact), 1), 12)
        assert frame_span(info, seconds, None)[0] == first, seconds
        assert frame_span(info, None, seconds)[1] == last, seconds


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_dataset_clip_uses_the_timestamps(tmp_path, vfr_video, backend):
    from vlbook.data import build_dataset, write_jsonl

    (tmp_path / "v.mp4").write_bytes(vfr_video.read_bytes())
    base = {"video": "v.mp4", "video_id": "v", "captions": ["grey"]}
    write_jsonl(tmp_path / "clips.jsonl", [{**base, "start": 1.2, "end": 2.3}, base])
    ds = build_dataset(
        "video_text",
        annotation=tmp_path / "clips.jsonl",
        split="test",
        num_frames=5,
        size=32,
        sampling="uniform",
        backend=backend,
    )
    video = ds[0]["video"]
    assert ds._last_indices == [2, 3, 4, 5, 6]  # before: [5, 6, 7, 8, 9] (1.2 s x 80/19 fps)
    pixels = (transforms.denormalize(video).permute(0, 2, 3, 1) * 255).round().numpy()
    assert vfr_frame_ids(pixels) == [2, 3, 4, 5, 6]
    assert ds[1]["video"].shape == (5, 3, 32, 32)  # no start/end: the whole video
    assert ds._last_indices == [0, 5, 10, 14, 19] and ds._last_info.frame_times is None


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_steps_are_placed_on_frames_by_their_timestamps(tmp_path, vfr_video, backend):
    from vlbook.data import build_dataset, write_jsonl

    (tmp_path / "v.mp4").write_bytes(vfr_video.read_bytes())
    steps = [{"text": "first", "start": 0.0, "end": 1.2}, {"text": "then", "start": 2.0,
                                                           "end": 3.0}]
    write_jsonl(tmp_path / "steps.jsonl", [{"video": "v.mp4", "video_id": "v",
                                            "steps": steps}])
    ds = build_dataset("video_steps", annotation=tmp_path / "steps.jsonl", split="test",
                       num_frames=5, size=32, sampling="uniform", backend=backend)
    sample = ds[0]
    assert ds._last_indices == [0, 5, 10, 14, 19]
    # frames 0, 5, 10, 14, 19 start at 0, 2.125, 2.75, 3.25, 3.875 s (VFR_TIMES_MS); at the
    # average rate (80/19 fps) they would sit at 0, 1.19, 2.38, 3.33, 4.51 s -> [0, 0, 1, -1, -1]
    assert sample["frame_step"].tolist() == [0, 1, 1, -1, -1]


@pytest.mark.parametrize("backend", BACKEND_PARAMS)
def test_frame_times_of_bad_files_raise_video_decode_error(tmp_path, video, backend):
    for path in write_bad_files(tmp_path, video).values():
        with pytest.raises(VideoDecodeError) as err:
            read_video(path, lambda info: [0], backend, frame_times=True)
        assert err.value.path == str(path)


# -- sampling ---------------------------------------------------------------------------


@pytest.mark.parametrize("num", [1, 3, 4, 8, 12, 16])
def test_segment_sampling_one_frame_per_segment(num):
    total = 64
    rng = np.random.default_rng(0)
    edges = np.floor(np.linspace(0, total, num + 1)).astype(int)
    for _ in range(20):
        idx = sampling.segment_indices(total, num, train=True, rng=rng)
        assert len(idx) == num
        assert all(lo <= i < hi for i, lo, hi in zip(idx, edges[:-1], edges[1:]))
    middle = sampling.segment_indices(total, num, train=False)
    assert middle == [int((lo + hi - 1) // 2) for lo, hi in zip(edges[:-1], edges[1:])]


def test_segment_sampling_hand_computed_and_short_videos():
    assert sampling.segment_indices(16, 4, train=False) == [1, 5, 9, 13]
    assert sampling.segment_indices(3, 8, train=False) == [0, 0, 0, 1, 1, 1, 2, 2]


def test_dense_sampling_with_stride():
    # span (16 - 1) * 4 + 1 = 61 frames, slack 3, centred start 3 // 2 = 1
    assert sampling.dense_indices(64, 16, stride=4, train=False) == range2(1, 16, 4)
    rng = np.random.default_rng(1)
    starts = {sampling.dense_indices(64, 16, stride=4, train=True, rng=rng)[0] for _ in range(50)}
    assert starts <= set(range(0, 4)) and len(starts) > 1
    assert sampling.dense_indices(10, 4, stride=4, train=False) == [0, 4, 8, 9]


def range2(start, num, stride):
    return [start + i * stride for i in range(num)]


def test_uniform_and_unknown_strategy():
    assert sampling.uniform_indices(9, 3) == [0, 4, 8]
    with pytest.raises(ValueError, match="segment"):
        sampling.sample_indices("tsn", 10, 2, train=False)


# -- transforms -------------------------------------------------------------------------


def test_video_transform_normalises_with_imagenet_statistics():
    frames = np.zeros((2, 40, 60, 3), dtype=np.uint8)
    frames[..., 0] = 255
    transform = transforms.VideoTransform(32, train=False, crop="center")
    out = transform(frames, np.random.default_rng(0))
    assert out.shape == (2, 3, 32, 32)
    mean, std = transforms.IMAGENET_MEAN, transforms.IMAGENET_STD
    expected = torch.tensor([(1 - mean[0]) / std[0], -mean[1] / std[1], -mean[2] / std[2]])
    assert torch.allclose(out[0, :, 16, 16], expected, atol=1e-4)
    back = transforms.denormalize(out[0])
    assert torch.allclose(back[:, 5, 5], torch.tensor([1.0, 0.0, 0.0]), atol=1e-4)


@pytest.mark.parametrize("crop", ["random_resized", "multiscale"])
def test_random_crops_are_shared_by_all_frames(crop):
    rng = np.random.default_rng(0)
    frame = (np.random.default_rng(1).random((48, 64, 3)) * 255).astype(np.uint8)
    frames = np.stack([frame, frame, frame])
    t = transforms.VideoTransform(24, train=True, crop=crop, flip=True)
    outs = [t(frames, rng) for _ in range(5)]
    for out in outs:
        assert out.shape == (3, 3, 24, 24)
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert any(not torch.equal(outs[0], o) for o in outs[1:])  # crops vary between calls


def test_flip_mirrors_the_clip():
    frames = np.zeros((1, 8, 8, 3), dtype=np.uint8)
    frames[0, :, 0] = 255  # left column bright
    t = transforms.VideoTransform(8, train=True, crop="resize", flip=True)
    flipped = [t(frames, np.random.default_rng(s)) for s in range(10)]
    sides = {int(o[0, 0, 4].argmax()) for o in flipped}
    assert sides == {0, 7}
