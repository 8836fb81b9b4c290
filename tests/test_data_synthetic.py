"""The synthetic benchmark: determinism, annotations of every task, temporal hardness."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vlbook.data import read_jsonl, synthetic
from vlbook.data.annotations import TASK_FIELDS
from vlbook.data.synthetic import (
    ANSWER_VOCAB,
    ATTRIBUTES,
    MOTIONS,
    OPPOSITE,
    Event,
    Scene,
    SceneObject,
    ensure_synthetic,
    render,
)
from vlbook.data.video import read_frames

SMALL = dict(
    num_train=12, num_val=2, num_test=4, num_frames=8, size=32, fps=8.0, seed=3, captions_per_clip=3
)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return ensure_synthetic("smoke", root=tmp_path_factory.mktemp("syn") / "smoke")


def test_generation_is_deterministic_for_a_seed(tmp_path):
    a = synthetic.generate(tmp_path / "a", **SMALL)
    b = synthetic.generate(tmp_path / "b", **SMALL)
    c = synthetic.generate(tmp_path / "c", **(SMALL | {"seed": 4}))
    for task in ("clips", "mc", "qa"):
        assert (a / f"{task}_train.jsonl").read_text() == (b / f"{task}_train.jsonl").read_text()
    assert (a / "clips_train.jsonl").read_text() != (c / "clips_train.jsonl").read_text()
    fa = read_frames(a / "videos/train_00003.mp4", range(8))
    fb = read_frames(b / "videos/train_00003.mp4", range(8))
    assert np.array_equal(fa, fb)


def test_parallel_generation_matches_serial(tmp_path):
    a = synthetic.generate(tmp_path / "serial", workers=1, **SMALL)
    b = synthetic.generate(tmp_path / "parallel", workers=2, **SMALL)
    assert (a / "retrieval_train.jsonl").read_text() == (b / "retrieval_train.jsonl").read_text()


def test_ensure_synthetic_reuses_a_complete_benchmark(bench):
    manifest = json.loads((bench / "manifest.json").read_text())
    assert manifest["settings"]["size"] == 32 and manifest["settings"]["num_frames"] == 8
    stamp = (bench / "manifest.json").stat().st_mtime_ns
    assert ensure_synthetic("smoke", root=bench) == bench
    assert (bench / "manifest.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="smoke"):
        ensure_synthetic("huge")


def test_ensure_synthetic_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(FileExistsError, match="refusing"):
        ensure_synthetic("smoke", root=tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "user data"


def test_generate_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="refusing"):
        synthetic.generate(tmp_path, **SMALL)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_examples_for_figures(bench):
    items = synthetic.examples(bench, "test", n=3)
    assert len(items) == 3
    assert items[0]["frames"].shape == (8, 32, 32, 3)
    assert items[0]["options"][items[0]["answer_index"]] == items[0]["captions"][0]


def test_videos_are_h264_mp4(bench):
    import av

    with av.open(str(bench / "videos/train_00000.mp4")) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height, stream.frames) == (32, 32, 8)


def test_every_task_file_validates(bench):
    task_of = {
        "clips": None,
        "retrieval": "retrieval",
        "caption": "caption",
        "mc": "mc",
        "qa": "qa",
        "frame_labels": "frame_labels",
        "steps": "steps",
        "classification": "classification",
        "image_text": "image_text",
    }
    for name, task in task_of.items():
        for split in ("train", "val", "test"):
            records = read_jsonl(bench / f"{name}_{split}.jsonl", task)
            if task in TASK_FIELDS and split == "train":
                assert records, name
            for rec in records:
                media = rec.get("video") or rec.get("image")
                assert (bench / media).is_file()


def test_captions_match_the_scene(bench):
    for clip, ret in zip(
        read_jsonl(bench / "clips_train.jsonl"), read_jsonl(bench / "retrieval_train.jsonl")
    ):
        assert len(ret["captions"]) == 3 and len(set(ret["captions"])) == 3
        first = ret["captions"][0]
        assert first == synthetic.caption(clip["objects"], clip["events"])
        for obj in clip["objects"]:
            assert all(obj["colour"] in c for c in ret["captions"])
        if clip["kind"] == "sequence":
            a = clip["objects"][clip["events"][0]["obj"]]["colour"]
            b = clip["objects"][clip["events"][1]["obj"]]["colour"]
            assert first.startswith("first") and first.index(a) < first.index(b)


def _attributes(objects, events):
    out = {}
    for k, o in enumerate(objects):
        for a in ("colour", "shape", "size"):
            out[f"{a}{k}"] = o[a]
    for k, e in enumerate(events):
        out[f"event{k}"] = (e["obj"], e["motion"])
    return out


def test_mc_distractors_change_exactly_one_attribute(bench):
    clips = read_jsonl(bench / "clips_train.jsonl")
    rng = np.random.default_rng(0)
    seen_temporal = set()
    for clip in clips:
        mc = synthetic.multiple_choice(clip["objects"], clip["events"], rng)
        assert len(mc["options"]) == 5 and len(set(mc["options"])) == 5
        assert mc["option_attributes"][mc["answer"]] is None
        true = mc["options"][mc["answer"]]
        assert true == synthetic.caption(clip["objects"], clip["events"])
        for option, attribute in zip(mc["options"], mc["option_attributes"]):
            if attribute is None:
                continue
            true_words, words = true.replace(",", "").split(), option.replace(",", "").split()
            if attribute == "order":
                assert sorted(true_words) == sorted(words) and words != true_words
            else:
                diff = [(a, b) for a, b in zip(true_words, words) if a != b]
                assert len(true_words) == len(words) and len(diff) >= 1
                vocab = set(ATTRIBUTES[attribute]) | {
                    w for m in MOTIONS for p in synthetic.MOTION_PHRASES[m][:1] for w in p.split()
                }
                assert all(b in vocab for _, b in diff), (attribute, diff)
            seen_temporal.add(attribute in ("motion", "order"))
        motions = [e["motion"] for e in clip["events"]]
        opposites = [OPPOSITE[m] for m in motions]
        assert any(a == "motion" for a in mc["option_attributes"])  # the opposite motion
        assert any(any(o in opt for o in opposites) for opt in mc["options"] if opt != true)
    assert seen_temporal == {True, False}


def test_qa_answers_come_from_the_fixed_vocabulary(bench):
    records = read_jsonl(bench / "qa_train.jsonl", "qa")
    assert json.loads((bench / "answers.json").read_text()) == list(ANSWER_VOCAB)
    assert all(r["answer"] in ANSWER_VOCAB for r in records)
    per_clip = {}
    for r in records:
        per_clip.setdefault(r["video_id"], []).append(r["temporal"])
    assert all(any(flags) for flags in per_clip.values())  # one temporal question per clip


def test_frame_labels_steps_and_classes_follow_the_events(bench):
    clips = {c["video_id"]: c for c in read_jsonl(bench / "clips_train.jsonl")}
    for rec in read_jsonl(bench / "frame_labels_train.jsonl", "frame_labels"):
        clip = clips[rec["video_id"]]
        labels = [MOTIONS[i] for i in rec["frame_labels"]]
        assert len(labels) == 8
        if clip["kind"] == "single":
            assert set(labels) == {clip["events"][0]["motion"]}
        else:  # frames 0-3 are in the first half (u < 0.5), 4-7 in the second
            assert labels[:4] == [clip["events"][0]["motion"]] * 4
            assert labels[4:] == [clip["events"][1]["motion"]] * 4
    for rec in read_jsonl(bench / "steps_train.jsonl", "steps"):
        assert clips[rec["video_id"]]["kind"] == "sequence"
        (s1, s2) = rec["steps"]
        assert s1["start"] == 0.0 and s1["end"] == s2["start"] == 0.5 and s2["end"] == 1.0
    for rec in read_jsonl(bench / "classification_train.jsonl", "classification"):
        assert MOTIONS[rec["label"]] == clips[rec["video_id"]]["events"][0]["motion"]


def test_rendered_motion_goes_the_captioned_way():
    obj = SceneObject("red", "circle", "large", x=32.0, y=32.0, radius=8.0)
    scene = Scene("single", [obj], [Event(0, "left", 0.0, 1.0)], (30, 30, 30), 64)
    frames = render(scene, 8).astype(float)
    red = frames[..., 0] - frames[..., 1]
    xs = (red * np.arange(64)[None, None, :]).sum((1, 2)) / red.sum((1, 2))
    assert np.all(np.diff(xs) < 0)  # moves left
    assert xs[0] - xs[-1] == pytest.approx(synthetic.TRAVEL * 64, abs=1.0)
    grow = Scene("single", [obj], [Event(0, "grow", 0.0, 1.0)], (30, 30, 30), 64)
    area = (render(grow, 8)[..., 0] > 120).sum((1, 2))
    assert np.all(np.diff(area) > 0)


# -- the temporal subset cannot be solved from one frame --------------------------------


def _probe_accuracy(x_train, y_train, x_test, y_test, ridge=1.0):
    """Ridge-regression linear probe on +-1 labels; test accuracy."""

    def bias(x):
        return np.hstack([x, np.ones((len(x), 1))])

    a, b = bias(x_train), bias(x_test)
    w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ (2 * y_train - 1))
    return float(((b @ w > 0) == y_test.astype(bool)).mean())


@pytest.mark.parametrize("pair", [("left", "right"), ("grow", "shrink"), ("appear", "disappear")])
def test_temporal_pairs_need_two_frames(pair):
    rng = np.random.default_rng(0)
    single, double, labels = [], [], []
    for _ in range(800):
        label = int(rng.integers(2))
        motion = pair[label]
        obj = synthetic._sample_object(rng, 32, motion)
        scene = Scene(
            "single",
            [obj],
            [Event(0, motion, 0.0, 1.0)],
            synthetic.BACKGROUNDS[int(rng.integers(5))],
            32,
        )
        feats = synthetic.foreground_features(render(scene, 8))
        single.append(feats[int(rng.integers(8))])  # one frame, at a random time
        double.append(np.concatenate([feats[0], feats[7]]))
        labels.append(label)
    y = np.array(labels)
    one = _probe_accuracy(np.array(single[:400]), y[:400], np.array(single[400:]), y[400:])
    two = _probe_accuracy(np.array(double[:400]), y[:400], np.array(double[400:]), y[400:])
    assert one < 0.62, f"{pair}: one frame should be near chance, got {one:.2f}"
    assert two > 0.85, f"{pair}: two frames should decide it, got {two:.2f}"
