"""Datasets, batches, bad-file skipping, annotation errors, loaders, tokenizers, features."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from data_fixtures import write_bad_files, write_test_video

from vlbook.data import (
    DATASETS,
    AnnotationError,
    build_dataset,
    build_loader,
    write_jsonl,
)
from vlbook.data.synthetic import ensure_synthetic
from vlbook.data.tokenizer import TokenizerNotFoundError, load_tokenizer, train_wordpiece
from vlbook.data.transforms import IMAGENET_MEAN, IMAGENET_STD


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return ensure_synthetic("smoke", root=tmp_path_factory.mktemp("ds") / "smoke")


@pytest.fixture(scope="module")
def tok(bench):
    return load_tokenizer(bench / "tokenizer")


def test_registry_names():
    assert {
        "video_text",
        "video_mc",
        "video_qa",
        "video_classification",
        "video_frame_labels",
        "video_steps",
        "image_text",
        "feature_text",
    } <= set(DATASETS.names())


def test_video_text_batch_follows_the_convention(bench, tok):
    ds = build_dataset(
        "video_text",
        annotation=bench / "retrieval_train.jsonl",
        split="train",
        num_frames=8,
        size=32,
        tokenizer=tok,
        max_len=20,
    )
    batch = next(iter(build_loader(ds, 4, shuffle=False, seed=0)))
    assert batch["video"].shape == (4, 8, 3, 32, 32) and batch["video"].dtype == torch.float32
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (4, 20)
    assert (
        batch["input_ids"].dtype == torch.long
        and batch["input_ids"][:, 0].eq(tok.cls_token_id).all()
    )
    assert batch["video_index"].tolist() == [0, 1, 2, 3]
    assert len(batch["text"]) == 4 and batch["skipped"] == []
    # ImageNet normalisation: undo it and values are back in [0, 1]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1)
    raw = batch["video"] * std + mean
    assert raw.min() >= -1e-4 and raw.max() <= 1 + 1e-4


def test_caption_modes(bench, tok):
    kw = dict(annotation=bench / "retrieval_test.jsonl", num_frames=2, size=32, tokenizer=tok)
    first = build_dataset("video_text", split="test", **kw)
    every = build_dataset("video_text", split="test", caption_mode="all", **kw)
    assert len(every) == 3 * len(first)
    assert first[0]["text"] == first.records[0]["captions"][0]
    assert [every[i]["video_index"] for i in range(3)] == [0, 0, 0]


def test_task_datasets(bench, tok):
    kw = dict(split="train", num_frames=8, size=32, tokenizer=tok, max_len=24)
    mc = build_dataset("video_mc", annotation=bench / "mc_train.jsonl", **kw)
    b = mc.collate([mc[0], mc[1]])
    assert b["option_ids"].shape == (2, 5, 24)
    assert b["label"].tolist() == [mc.records[0]["answer"], mc.records[1]["answer"]]
    qa = build_dataset("video_qa", annotation=bench / "qa_train.jsonl", **kw)
    s = qa[0]
    assert qa.answers[s["label"]] == s["answer"]
    fl = build_dataset(
        "video_frame_labels",
        annotation=bench / "frame_labels_train.jsonl",
        split="test",
        num_frames=4,
        size=32,
    )
    s = fl[0]
    labels = fl.records[0]["frame_labels"]
    assert s["frame_labels"].tolist() == [labels[i] for i in s["frame_indices"].tolist()]
    steps = build_dataset(
        "video_steps", annotation=bench / "steps_train.jsonl", split="test", num_frames=8, size=32
    )
    s = steps[0]
    assert s["frame_step"].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    img = build_dataset(
        "image_text", annotation=bench / "image_text_train.jsonl", **kw | {"num_frames": 1}
    )
    assert img[0]["video"].shape == (1, 3, 32, 32)


def test_oov_qa_answers_get_ignore_label(tmp_path, bench):
    rec = {
        "video": str(bench / "videos/train_00000.mp4"),
        "video_id": "x",
        "question": "what?",
        "answer": "banana",
    }
    write_jsonl(tmp_path / "qa.jsonl", [rec])
    ds = build_dataset(
        "video_qa",
        annotation=tmp_path / "qa.jsonl",
        split="test",
        num_frames=2,
        size=32,
        answers=["red", "blue"],
    )
    assert ds[0]["label"] == -100


def test_missing_field_fails_at_load_time_naming_file_line_field(tmp_path):
    path = tmp_path / "ann.jsonl"
    path.write_text(
        json.dumps({"video": "a.mp4", "video_id": "a", "captions": ["x"]})
        + "\n"
        + json.dumps({"video": "b.mp4", "video_id": "b"})
        + "\n"
    )
    with pytest.raises(AnnotationError, match=r"ann\.jsonl:2: .*'captions'"):
        build_dataset("video_text", annotation=path, size=32)
    path.write_text('{"video": "a.mp4", "video_id": "a", "captions": ["x"]}\n{oops\n')
    with pytest.raises(AnnotationError, match=r"ann\.jsonl:2: invalid JSON"):
        build_dataset("video_text", annotation=path, size=32)
    path.write_text(
        json.dumps({"video": "a", "video_id": "a", "options": ["x", "y"], "answer": 5}) + "\n"
    )
    with pytest.raises(AnnotationError, match="'answer'"):
        build_dataset("video_mc", annotation=path, size=32)


@pytest.fixture()
def corpus(tmp_path):
    """Four good clips and the four kinds of bad files, in one annotation file."""
    good = [write_test_video(tmp_path / f"good{i}.mp4", num_frames=8) for i in range(4)]
    bad = write_bad_files(tmp_path / "bad", good[0])
    records = [
        {"video": str(p.relative_to(tmp_path)), "video_id": p.stem, "captions": [f"clip {p.stem}"]}
        for p in good + list(bad.values())
    ]
    write_jsonl(tmp_path / "retrieval.jsonl", records)
    return tmp_path, bad


@pytest.mark.parametrize("workers", [0, 2])
def test_bad_files_are_skipped_with_a_warning_and_counted(corpus, workers):
    root, bad = corpus
    ds = build_dataset(
        "video_text", annotation=root / "retrieval.jsonl", split="test", num_frames=4, size=32
    )
    loader = build_loader(ds, 4, shuffle=False, seed=0, num_workers=workers)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(loader)
    ids = [vid for b in batches for vid in b["video_index"].tolist()]
    assert len(ids) == 8 and all(0 <= i < 4 for i in ids[4:])  # bad ones replaced by good
    summary = loader.skip_summary
    assert summary.num_files == 4
    assert {str(p.resolve()) for p in bad.values()} == set(summary.reasons)
    assert "zero-byte file" in summary.by_reason()
    assert "4 bad file(s) skipped" in summary.report()
    if workers == 0:
        assert sum("skipping" in str(w.message) for w in caught) == 4


def test_quarantine_list_drops_files_at_load_time(corpus):
    from vlbook.data.verify import verify_dataset

    root, bad = corpus
    out = verify_dataset(root, backend="pyav")
    listed = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["path"] for r in listed} == {str(p.relative_to(root)) for p in bad.values()}
    assert all(r["reason"] for r in listed)
    with pytest.warns(UserWarning, match="4 record"):
        ds = build_dataset(
            "video_text", annotation=root / "retrieval.jsonl", split="test", num_frames=4, size=32
        )
    assert len(ds) == 4


def _loader_videos(ds, workers, epochs=2):
    loader = build_loader(ds, 3, shuffle=True, seed=7, num_workers=workers)
    return [torch.cat([b["video"] for b in loader]) for _ in range(epochs)], loader


def test_loader_is_deterministic_across_worker_counts_and_varies_by_epoch(bench):
    ds = build_dataset(
        "video_text",
        annotation=bench / "retrieval_val.jsonl",
        split="train",
        num_frames=4,
        size=32,
        crop="random_resized",
    )
    (a0, a1), _ = _loader_videos(ds, 0)
    (b0, b1), _ = _loader_videos(ds, 2)
    assert torch.equal(a0, b0) and torch.equal(a1, b1)
    assert not torch.equal(a0, a1)


def test_tokenizer_specials_and_round_trip(tmp_path):
    tok = train_wordpiece(
        ["a red circle moves left", "a blue square grows"] * 5, tmp_path / "tok", vocab_size=200
    )
    assert [
        tok.convert_tokens_to_ids(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
    ] == [0, 1, 2, 3, 4]
    again = load_tokenizer(tmp_path / "tok")
    ids = again("a red circle")["input_ids"]
    assert ids[0] == 2 and ids[-1] == 3 and 1 not in ids
    assert again.decode(ids, skip_special_tokens=True) == "a red circle"


def test_missing_bert_tokenizer_says_what_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("VLBOOK_WEIGHTS", str(tmp_path / "weights"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(TokenizerNotFoundError) as err:
        load_tokenizer("bert-base-uncased")
    msg = str(err.value)
    assert "vocab.txt" in msg and str(tmp_path / "weights" / "bert-base-uncased") in msg


def test_feature_text_dataset(tmp_path):
    from vlbook.data.features import write_features

    feats = np.arange(10 * 512, dtype=np.float32).reshape(10, 512)
    write_features(tmp_path / "features/v1.npy", feats)
    (tmp_path / "features/broken.npy").write_bytes(b"")
    write_jsonl(
        tmp_path / "feature_text_train.jsonl",
        [
            {
                "video_id": "v1",
                "features": "features/v1.npy",
                "captions": ["cut", "stir"],
                "starts": [2.0, 5.5],
                "ends": [4.5, 9.0],
            },
            {
                "video_id": "b",
                "features": "features/broken.npy",
                "captions": ["x"],
                "starts": [0.0],
                "ends": [1.0],
            },
        ],
    )
    ds = build_dataset(
        "feature_text",
        annotation=tmp_path / "feature_text_train.jsonl",
        split="test",
        max_video_len=4,
    )
    s = ds[0]
    assert s["video_features"].shape == (4, 512)
    assert s["video_mask"].tolist() == [True, True, True, False]  # seconds 2, 3, 4
    assert torch.equal(s["video_features"][:3], torch.from_numpy(feats[2:5]))
    assert ds[1]["video_features"].shape == (4, 512)
    with pytest.warns(UserWarning, match="zero-byte"):
        s = ds[2]
    assert s["skipped"] and s["video_index"] == 0
