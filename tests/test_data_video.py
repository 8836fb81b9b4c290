"""Video readers (decord and PyAV agree), bad files, frame sampling and transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from data_fixtures import moving_square_frames, write_bad_files, write_test_video

from vlbook.data import sampling, transforms
from vlbook.data.video import (
    VideoDecodeError,
    decord_available,
    read_frames,
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
