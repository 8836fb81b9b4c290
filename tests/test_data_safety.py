"""Data safety: nothing vlbook did not write is deleted or overwritten, bad input is named."""

from __future__ import annotations

import json

import pytest
from data_fixtures import write_test_video

from vlbook.data import prepare, synthetic
from vlbook.data.annotations import AnnotationEncodingError, AnnotationError, read_jsonl
from vlbook.data.cli import main as cli_main
from vlbook.data.synthetic import SyntheticExistsError, ensure_synthetic, read_manifest
from vlbook.data.verify import verify_dataset

TINY = dict(
    num_train=4, num_val=1, num_test=1, num_frames=4, size=16, fps=8.0, seed=3, captions_per_clip=2
)


def test_cli_synthetic_other_seed_refuses_and_keeps_user_files(tmp_path, capsys):
    root = ensure_synthetic("smoke", root=tmp_path / "smoke", workers=1)
    (root / "my_notes.txt").write_text("mine")
    before = read_manifest(root)["settings"]
    assert cli_main(["synthetic", "--root", str(root), "--seed", "1", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert str(root) in err and "seed=0 (requested 1)" in err
    assert "--overwrite" in err and "--root" in err
    assert (root / "my_notes.txt").read_text() == "mine"
    assert read_manifest(root)["settings"] == before
    # same settings: reused, exit 0
    assert cli_main(["synthetic", "--root", str(root), "--workers", "1"]) == 0


def test_overwrite_removes_only_generated_files(tmp_path):
    root = synthetic.generate(tmp_path / "b", **TINY)
    (root / "my_notes.txt").write_text("mine")
    (root / "videos" / "holiday.mp4").write_bytes(b"user video")
    with pytest.raises(SyntheticExistsError, match="seed=3 \\(requested 4\\)"):
        synthetic.generate(root, **(TINY | {"seed": 4}))
    assert read_manifest(root)["settings"]["seed"] == 3
    with pytest.warns(UserWarning, match="kept 2 file"):
        synthetic.generate(root, overwrite=True, **(TINY | {"seed": 4}))
    manifest = read_manifest(root)
    assert manifest["settings"]["seed"] == 4
    assert synthetic.is_complete(root, manifest["settings"])
    assert (root / "my_notes.txt").read_text() == "mine"
    assert (root / "videos" / "holiday.mp4").read_bytes() == b"user video"
    assert "my_notes.txt" not in manifest["files"]
    assert not list(tmp_path.glob(".b.tmp-*"))


def _dataset_with_one_bad_video(folder):
    write_test_video(folder / "v.mp4", num_frames=4)
    (folder / "bad.mp4").write_bytes(b"")
    (folder / "retrieval_test.jsonl").write_text(
        json.dumps({"video": "v.mp4", "video_id": "v", "captions": ["x"]})
        + "\n"
        + json.dumps({"video": "bad.mp4", "video_id": "b", "captions": ["y"]})
        + "\n"
    )


def test_verify_keeps_hand_added_quarantine_lines(tmp_path, capsys):
    ds = tmp_path / "ds"
    _dataset_with_one_bad_video(ds)
    hand = json.dumps({"path": "v.mp4", "reason": "wrong label, removed by hand"})
    (ds / "quarantine.jsonl").write_text(hand + "\n")
    assert cli_main(["verify", str(ds)]) == 0
    lines = (ds / "quarantine.jsonl").read_text().splitlines()
    assert lines[0] == hand
    assert [json.loads(x)["path"] for x in lines] == ["v.mp4", "bad.mp4"]
    # a second run adds nothing twice and drops nothing
    verify_dataset(ds)
    assert (ds / "quarantine.jsonl").read_text().splitlines() == lines
    assert not list(ds.glob(".quarantine.jsonl.*"))


def test_verify_writes_beside_an_unmergeable_quarantine_file(tmp_path, capsys):
    ds = tmp_path / "ds"
    _dataset_with_one_bad_video(ds)
    (ds / "quarantine.jsonl").write_text("# my notes: v.mp4 is fine\n")
    with pytest.warns(UserWarning, match="left unchanged"):
        assert cli_main(["verify", str(ds)]) == 1
    assert "quarantine.jsonl.new" in capsys.readouterr().err
    assert (ds / "quarantine.jsonl").read_text() == "# my notes: v.mp4 is fine\n"
    new = (ds / "quarantine.jsonl.new").read_text().splitlines()
    assert [json.loads(x)["path"] for x in new] == ["bad.mp4"]


def test_prepare_with_an_existing_second_target_writes_nothing(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for split in ("train", "val"):
        (raw / f"{split}.csv").write_text(
            "videoid,contentUrl,duration,page_dir,name\n1,u,d,p,A dog runs\n"
        )
    (tmp_path / "retrieval_val.jsonl").write_text("precious\n")
    files = {"train": raw / "train.csv", "val": raw / "val.csv"}
    with pytest.raises(FileExistsError, match="nothing was written") as info:
        prepare.convert_webvid(tmp_path, files, require_media=False)
    assert str(tmp_path / "retrieval_val.jsonl") in str(info.value)
    assert not (tmp_path / "retrieval_train.jsonl").exists()
    assert (tmp_path / "retrieval_val.jsonl").read_text() == "precious\n"
    prepare.convert_webvid(tmp_path, files, require_media=False, overwrite=True)
    assert read_jsonl(tmp_path / "retrieval_train.jsonl", "retrieval")[0]["captions"] == [
        "A dog runs"
    ]


def test_latin1_annotation_names_file_line_and_byte(tmp_path):
    path = tmp_path / "retrieval_train.jsonl"
    good = json.dumps({"video": "a.mp4", "video_id": "a", "captions": ["ok"]}) + "\n"
    bad = json.dumps({"video": "b.mp4", "video_id": "b", "captions": ["café"]}, ensure_ascii=False)
    path.write_bytes(good.encode() + (bad + "\n").encode("latin-1"))
    offset = len(good.encode()) + bad.encode("latin-1").index(b"\xe9")
    with pytest.raises(AnnotationEncodingError) as info:
        read_jsonl(path, "retrieval")
    msg = str(info.value)
    assert isinstance(info.value, AnnotationError) and isinstance(info.value, ValueError)
    assert f"{path}:2:" in msg and f"byte offset {offset}" in msg and "UTF-8" in msg
    # the CSV readers of the converters say the same
    csv = tmp_path / "val.csv"
    csv.write_bytes("videoid,page_dir,name\n1,p,café\n".encode("latin-1"))
    with pytest.raises(AnnotationEncodingError, match=f"{csv}:2: not valid UTF-8"):
        prepare.convert_webvid(tmp_path, {"val": csv}, require_media=False)


def test_null_and_empty_captions_are_skipped_and_counted(tmp_path):
    path = tmp_path / "retrieval_train.jsonl"
    rows = [
        {"video": "a.mp4", "video_id": "a", "captions": ["a dog"]},
        {"video": "b.mp4", "video_id": "b", "captions": [None]},
        {"video": "c.mp4", "video_id": "c", "captions": ["   "]},
        {"video": "d.mp4", "video_id": "d", "captions": [""]},
        {"video": "e.mp4", "video_id": "e", "captions": [None, "a cat", " "]},
        {"video": "f.mp4", "video_id": "f", "captions": []},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.warns(UserWarning) as rec:
        got = read_jsonl(path, "retrieval")
    msg = str(rec[0].message)
    assert str(path) in msg
    assert "skipped 4 record(s)" in msg and "line(s) 2, 3, 4, 6" in msg
    assert "from 1 record(s) (line(s) 5)" in msg
    assert [r["video_id"] for r in got] == ["a", "e"]
    assert got[1]["captions"] == ["a cat"]
    assert all("None" not in c for r in got for c in r["captions"])
    # feature_text keeps starts/ends aligned with the captions left
    ft = tmp_path / "feature_text_train.jsonl"
    ft.write_text(
        json.dumps(
            {
                "video_id": "v",
                "features": "v.npy",
                "captions": ["one", None, "three"],
                "starts": [0.0, 1.0, 2.0],
                "ends": [1.0, 2.0, 3.0],
            }
        )
        + "\n"
    )
    with pytest.warns(UserWarning, match="line\\(s\\) 1"):
        (r,) = read_jsonl(ft, "feature_text")
    assert r["captions"] == ["one", "three"] and r["starts"] == [0.0, 2.0]


def test_howto100m_null_caption_never_becomes_none_string(tmp_path):
    (tmp_path / "raw/features").mkdir(parents=True)
    cap = tmp_path / "raw/raw_caption.json"
    cap.write_text(json.dumps({"v": {"start": [0, 1], "end": [1, 2], "text": [None, "stir"]}}))
    prepare.convert_howto100m(tmp_path, cap, feature_dir="raw/features", require_media=False)
    (r,) = read_jsonl(tmp_path / "feature_text_train.jsonl", "feature_text")
    assert r["captions"] == ["stir"] and r["starts"] == [1.0]
