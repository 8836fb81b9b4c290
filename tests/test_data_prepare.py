"""Real-dataset converters on tiny fixtures in the official formats; downloads; health; CLI."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
from data_fixtures import write_test_video

from vlbook.data import prepare, read_jsonl
from vlbook.data.cli import main as cli_main
from vlbook.data.registry import REAL_DATASETS, health


def _write_csv(path, header, rows, delimiter=","):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [delimiter.join(header)] + [delimiter.join(map(str, r)) for r in rows]
    path.write_text("\n".join(lines) + "\n")


def test_registry_states_sources_licences_and_eval_splits():
    assert {
        "webvid2m",
        "msrvtt",
        "youcook2",
        "howto100m",
        "kinetics400",
        "kinetics710",
        "cc3m",
    } <= set(REAL_DATASETS)
    assert REAL_DATASETS["webvid2m"].public is False and not REAL_DATASETS["webvid2m"].sources
    msr = REAL_DATASETS["msrvtt"]
    assert msr.expected["test_1ka"] == 1000 and msr.expected["train_9k"] == 9000
    assert "1k-A" in msr.eval_split
    assert all(spec.licence for spec in REAL_DATASETS.values())


def test_msrvtt_converter_writes_explicit_splits(tmp_path):
    raw, root = tmp_path / "raw", tmp_path
    vids = [f"video{i}" for i in range(6)]
    sentences = [
        {"video_id": v, "caption": f"caption {k} of {v}", "sen_id": k}
        for v in vids
        for k in range(3)
    ]
    splits = ["train", "train", "train", "validate", "test", "test"]
    raw.mkdir()
    (raw / "MSRVTT_data.json").write_text(
        json.dumps(
            {
                "sentences": sentences,
                "videos": [{"video_id": v, "split": s} for v, s in zip(vids, splits)],
            }
        )
    )
    _write_csv(raw / "MSRVTT_train.9k.csv", ["video_id"], [[v] for v in vids[:4]])
    _write_csv(raw / "MSRVTT_train.7k.csv", ["video_id"], [[v] for v in vids[:3]])
    _write_csv(
        raw / "MSRVTT_JSFUSION_test.csv",
        ["key", "vid_key", "video_id", "sentence"],
        [["ret0", "msr4", "video4", "a man sings"], ["ret1", "msr5", "video5", "a cat"]],
    )
    (raw / "train_qa.json").write_text(
        json.dumps(
            [
                {"video_id": 0, "question": "who sings?", "answer": "man", "id": 0},
                {"video_id": 1, "question": "what is it?", "answer": "cat", "id": 1},
                {"video_id": 1, "question": "who?", "answer": "man", "id": 2},
            ]
        )
    )
    (raw / "test_qa.json").write_text(
        json.dumps([{"video_id": 4, "question": "what?", "answer": "dog", "id": 3}])
    )
    (raw / "mc_test.jsonl").write_text(
        json.dumps({"clip_name": "video5", "options": ["a", "b", "c", "d", "e"], "answer": 2})
        + "\n"
    )
    for v in vids[:5]:  # video5 is missing from the user's copy
        write_test_video(root / "videos/all" / f"{v}.mp4", num_frames=4)
    summary = prepare.convert_msrvtt(root, raw, num_answers=1)
    train9k = read_jsonl(root / "retrieval_train_9k.jsonl", "retrieval")
    assert [r["video_id"] for r in train9k] == vids[:4]
    assert all(len(r["captions"]) == 3 for r in train9k)
    assert len(read_jsonl(root / "retrieval_train_7k.jsonl")) == 3
    onek = read_jsonl(root / "retrieval_test_1ka.jsonl", "retrieval")
    assert [(r["video_id"], r["captions"]) for r in onek] == [("video4", ["a man sings"])]
    assert "1k-A" in onek[0]["split_note"]
    full = read_jsonl(root / "retrieval_test_full.jsonl")
    assert [r["video_id"] for r in full] == ["video4"]  # video5's file is absent
    assert json.loads((root / "answers.json").read_text()) == ["man"]
    qa = read_jsonl(root / "qa_train.jsonl", "qa")
    assert qa[0]["video_id"] == "video0" and qa[0]["video"] == "videos/all/video0.mp4"
    assert summary.missing_media == 3  # video5 in 1k-A, the full test split and MC
    assert summary.written["mc_test.jsonl"] == 0
    with pytest.raises(FileExistsError, match="never overwrites"):
        prepare.convert_msrvtt(root, raw)


def test_webvid_converter_reads_the_csv(tmp_path):
    _write_csv(
        tmp_path / "raw/results_2M_val.csv",
        ["videoid", "contentUrl", "duration", "page_dir", "name"],
        [
            [31353427, "https://x/y.mp4", "PT00H00M15S", "1016_1030", "Aerial view"],
            [14781349, "https://x/z.mp4", "PT00H00M20S", "1016_1030", "A dog runs"],
        ],
    )
    write_test_video(tmp_path / "videos/1016_1030/31353427.mp4", num_frames=4)
    s = prepare.convert_webvid(tmp_path, {"val": tmp_path / "raw/results_2M_val.csv"})
    recs = read_jsonl(tmp_path / "retrieval_val.jsonl", "retrieval")
    assert recs == [
        {
            "video": "videos/1016_1030/31353427.mp4",
            "video_id": "31353427",
            "captions": ["Aerial view"],
        }
    ]
    assert s.missing_media == 1
    _write_csv(tmp_path / "bad.csv", ["videoid", "name"], [[1, "x"]])
    with pytest.raises(ValueError, match="page_dir"):
        prepare.convert_webvid(tmp_path, {"x": tmp_path / "bad.csv"})


def test_youcook2_converter_segments_and_steps(tmp_path):
    ann = {
        "database": {
            "abc": {
                "subset": "training",
                "recipe_type": "113",
                "duration": 40.0,
                "video_url": "https://youtube.com/abc",
                "annotations": [
                    {"id": 1, "segment": [20, 30], "sentence": "add salt"},
                    {"id": 0, "segment": [5, 12], "sentence": "cut onion"},
                ],
            },
            "def": {
                "subset": "validation",
                "recipe_type": "201",
                "duration": 30.0,
                "annotations": [{"id": 0, "segment": [1, 4], "sentence": "boil water"}],
            },
            "ghi": {"subset": "testing", "recipe_type": "201", "annotations": []},
        }
    }
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw/ann.json").write_text(json.dumps(ann))
    write_test_video(tmp_path / "raw_videos/training/113/abc.mp4", num_frames=4)
    (tmp_path / "raw_videos/validation/201").mkdir(parents=True)
    (tmp_path / "raw_videos/validation/201/def.webm").write_bytes(b"x")
    prepare.convert_youcook2(tmp_path, tmp_path / "raw/ann.json")
    caps = read_jsonl(tmp_path / "caption_train.jsonl", "caption")
    assert [(c["captions"][0], c["start"], c["end"]) for c in caps] == [
        ("cut onion", 5.0, 12.0),
        ("add salt", 20.0, 30.0),
    ]
    steps = read_jsonl(tmp_path / "steps_train.jsonl", "steps")
    assert [s["text"] for s in steps[0]["steps"]] == ["cut onion", "add salt"]
    val = read_jsonl(tmp_path / "retrieval_val.jsonl", "retrieval")
    assert val[0]["video"] == "raw_videos/validation/201/def.webm"


def test_howto100m_converter_and_features(tmp_path):
    from vlbook.data.features import write_features

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw/raw_caption.json").write_text(
        json.dumps(
            {
                "vidA": {"start": [0, 3.5], "end": [3.5, 8], "text": ["hello there", "now we cut"]},
                "vidB": {"start": [1], "end": [2], "text": ["no features for me"]},
            }
        )
    )
    write_features(tmp_path / "raw/features/vidA.npy", np.zeros((9, 512)))
    s = prepare.prepare("howto100m", tmp_path)
    recs = read_jsonl(tmp_path / "feature_text_train.jsonl", "feature_text")
    assert [r["video_id"] for r in recs] == ["vidA"] and recs[0]["starts"] == [0.0, 3.5]
    assert recs[0]["features"] == "raw/features/vidA.npy" and s.missing_media == 1


def test_kinetics_converters(tmp_path):
    _write_csv(
        tmp_path / "raw/train.csv",
        ["label", "youtube_id", "time_start", "time_end", "split"],
        [["abseiling", "aaa", 10, 20, "train"], ["zumba", "bbb", 0, 10, "train"]],
    )
    _write_csv(
        tmp_path / "raw/val.csv",
        ["label", "youtube_id", "time_start", "time_end", "split"],
        [["zumba", "ccc", 5, 15, "val"]],
    )
    write_test_video(tmp_path / "videos/train/aaa_000010_000020.mp4", num_frames=4)
    write_test_video(tmp_path / "videos/val/ccc_000005_000015.mp4", num_frames=4)
    s = prepare.prepare("kinetics400", tmp_path)
    train = read_jsonl(tmp_path / "classification_train.jsonl", "classification")
    assert train == [
        {
            "video": "videos/train/aaa_000010_000020.mp4",
            "video_id": "aaa_000010_000020",
            "label": 0,
            "label_name": "abseiling",
        }
    ]
    val = read_jsonl(tmp_path / "classification_val.jsonl")
    assert val[0]["label"] == 1 and s.missing_media == 1
    assert json.loads((tmp_path / "classes.json").read_text()) == ["abseiling", "zumba"]
    (tmp_path / "k710").mkdir()
    (tmp_path / "k710/train.txt").write_text("k400/a.mp4 3\nk600/b c.mp4 700\n")
    prepare.convert_video_list(
        tmp_path / "k710", {"train": tmp_path / "k710/train.txt"}, require_media=False
    )
    recs = read_jsonl(tmp_path / "k710/classification_train.jsonl", "classification")
    assert [(r["video"], r["label"]) for r in recs] == [
        ("videos/k400/a.mp4", 3),
        ("videos/k600/b c.mp4", 700),
    ]
    (tmp_path / "k710/bad.txt").write_text("k400/a.mp4 three\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1"):
        prepare.convert_video_list(tmp_path / "k710", {"x": tmp_path / "k710/bad.txt"})


def test_cc3m_converter_finds_images_by_row(tmp_path):
    from PIL import Image

    (tmp_path / "raw").mkdir()
    (tmp_path / "raw/val.tsv").write_text(
        "a dog on grass\thttp://a/1.jpg\na red car\thttp://a/2.jpg\n"
    )
    (tmp_path / "images/val/00000").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "images/val/00000/000000001.jpg")
    s = prepare.convert_cc3m(tmp_path, {"val": tmp_path / "raw/val.tsv"})
    recs = read_jsonl(tmp_path / "image_text_val.jsonl", "image_text")
    assert recs == [
        {
            "image": "images/val/00000/000000001.jpg",
            "image_id": "val_000000001",
            "captions": ["a red car"],
        }
    ]
    assert s.missing_media == 1


def test_prepare_names_missing_raw_files_and_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="msrvtt_data.zip"):
        prepare.prepare("msrvtt", tmp_path)
    with pytest.raises(FileNotFoundError, match="taken down"):
        prepare.prepare("webvid2m", tmp_path)


# -- downloads --------------------------------------------------------------------------


class FakeServer:
    """An ``opener`` serving ``data`` with Range support; can cut a response short."""

    def __init__(self, data: bytes, cut_after: int | None = None, ranges: bool = True):
        self.data, self.cut_after, self.ranges = data, cut_after, ranges
        self.requests = []

    def __call__(self, request):
        rng = request.get_header("Range")
        self.requests.append(rng)
        start = int(rng.split("=")[1].rstrip("-")) if rng and self.ranges else 0
        body = self.data[start:]
        if self.cut_after is not None:
            body, self.cut_after = body[: self.cut_after], None
            server = self

            class Broken(io.BytesIO):
                def read(self, n=-1):
                    out = super().read(n)
                    if not out:
                        raise ConnectionResetError("connection dropped")
                    return out

            resp = Broken(body)
            del server
        else:
            resp = io.BytesIO(body)
        resp.status = 206 if (rng and self.ranges) else 200
        resp.getcode = lambda: resp.status
        return resp


def test_download_resumes_and_verifies(tmp_path):
    data = bytes(range(256)) * 40
    digest = hashlib.sha256(data).hexdigest()
    server = FakeServer(data, cut_after=3000)
    dest = tmp_path / "file.bin"
    with pytest.raises(ConnectionResetError):
        prepare.download(
            "https://x/file.bin", dest, sha256=digest, size=len(data), opener=server, chunk=1000
        )
    assert (tmp_path / "file.bin.part").stat().st_size == 3000 and not dest.exists()
    prepare.download(
        "https://x/file.bin", dest, sha256=digest, size=len(data), opener=server, chunk=1000
    )
    assert server.requests == [None, "bytes=3000-"]
    assert dest.read_bytes() == data and not (tmp_path / "file.bin.part").exists()
    # present and correct: no request at all
    prepare.download("https://x/file.bin", dest, sha256=digest, opener=server)
    assert len(server.requests) == 2


def test_download_server_without_ranges_restarts(tmp_path):
    data = b"abcdefghij" * 100
    (tmp_path / "f.part").write_bytes(data[:300])
    server = FakeServer(data, ranges=False)
    prepare.download("https://x/u", tmp_path / "f", size=len(data), opener=server)
    assert (tmp_path / "f").read_bytes() == data


def test_download_bad_checksum_and_existing_files(tmp_path):
    data = b"payload" * 10
    with pytest.raises(prepare.ChecksumError, match="differs"):
        prepare.download("https://x/u", tmp_path / "a", sha256="0" * 64, opener=FakeServer(data))
    assert not (tmp_path / "a").exists() and not (tmp_path / "a.part").exists()
    # no published checksum: the first download's hash is recorded, later copies checked
    prepare.download("https://x/u", tmp_path / "b", opener=FakeServer(data))
    book = json.loads((tmp_path / "checksums.json").read_text())
    assert book["b"] == hashlib.sha256(data).hexdigest()
    (tmp_path / "b").write_bytes(b"user edited file")
    with pytest.raises(prepare.ChecksumError, match="does not overwrite"):
        prepare.download("https://x/u", tmp_path / "b", opener=FakeServer(data))
    assert (tmp_path / "b").read_bytes() == b"user edited file"


# -- health and CLI ---------------------------------------------------------------------


def test_health_reports_present_and_missing(tmp_path):
    (tmp_path / "msrvtt").mkdir()
    (tmp_path / "msrvtt/retrieval_test_1ka.jsonl").write_text('{"a": 1}\n{"a": 2}\n')
    rows = {r["dataset"]: r for r in health(tmp_path)}
    assert rows["msrvtt"]["status"] == "partial"
    assert rows["msrvtt"]["annotations"] == {"retrieval_test_1ka.jsonl": 2}
    assert rows["cc3m"]["status"] == "missing"
    assert "Train_GCC-training.tsv" in rows["cc3m"]["raw_missing"]
    assert rows["synthetic/smoke"]["status"].startswith("missing")


def test_cli_health_verify_and_download(tmp_path, capsys):
    assert cli_main(["health", "--root", str(tmp_path)]) == 0
    assert "webvid2m" in capsys.readouterr().out
    write_test_video(tmp_path / "ds/v.mp4", num_frames=4)
    (tmp_path / "ds/bad.mp4").write_bytes(b"")
    (tmp_path / "ds/retrieval_test.jsonl").write_text(
        json.dumps({"video": "v.mp4", "video_id": "v", "captions": ["x"]})
        + "\n"
        + json.dumps({"video": "bad.mp4", "video_id": "b", "captions": ["y"]})
        + "\n"
    )
    assert cli_main(["verify", str(tmp_path / "ds")]) == 0
    assert "1 bad file" in capsys.readouterr().out
    assert json.loads((tmp_path / "ds/quarantine.jsonl").read_text()) == {
        "path": "bad.mp4",
        "reason": "zero-byte file",
    }
    assert cli_main(["download", "webvid2m", "--root", str(tmp_path / "w")]) == 1
    assert "no public download" in capsys.readouterr().out
    assert cli_main(["prepare", "msrvtt", "--root", str(tmp_path / "m")]) == 2
    assert "missing raw file" in capsys.readouterr().err
