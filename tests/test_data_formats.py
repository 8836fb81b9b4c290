"""Release formats as their sources write them: MSR-VTT QA/MC by name (ClipBERT's file name),
Kinetics in class folders, Kinetics-710 lists under UMT's names, CC3M with img2dataset's header
and shard layouts, split sizes compared with the official counts."""

from __future__ import annotations

import io
import json
import tarfile

import pytest
from data_fixtures import write_test_video

from vlbook.data import build_dataset, prepare, read_jsonl
from vlbook.data.registry import REAL_DATASETS


def _msrvtt_raw(raw, vids):
    raw.mkdir(parents=True)
    (raw / "MSRVTT_data.json").write_text(json.dumps({
        "sentences": [{"video_id": v, "caption": f"a clip {v}"} for v in vids],
        "videos": [{"video_id": v, "split": "train" if i < 2 else "test"}
                   for i, v in enumerate(vids)]}))
    (raw / "MSRVTT_train.9k.csv").write_text("video_id\n" + "\n".join(vids[:2]) + "\n")
    (raw / "MSRVTT_JSFUSION_test.csv").write_text(
        "key,vid_key,video_id,sentence\n" + f"ret0,msr2,{vids[2]},a man sings\n")
    # MSRVTT-QA (Xu et al. 2017): integer video ids
    (raw / "train_qa.json").write_text(json.dumps(
        [{"video_id": 0, "question": "who sings?", "answer": "man", "id": 0, "category_id": 2}]))
    (raw / "test_qa.json").write_text(json.dumps(
        [{"video_id": 2, "question": "what sings?", "answer": "man", "id": 1, "category_id": 1}]))
    # ClipBERT's multiple-choice release, under its own name
    (raw / "msrvtt_mc_test.jsonl").write_text(json.dumps(
        {"clip_name": vids[2], "options": ["a dog", "a man sings", "a car", "x", "y"],
         "answer": 1}) + "\n")


def test_msrvtt_qa_and_multiple_choice_load_by_dataset_name(tmp_path, monkeypatch):
    monkeypatch.setenv("VLBOOK_DATA", str(tmp_path))
    root = tmp_path / "msrvtt"
    vids = ["video0", "video1", "video2"]
    _msrvtt_raw(root / "raw", vids)
    for v in vids:
        write_test_video(root / "videos/all" / f"{v}.mp4", num_frames=4)
    with pytest.warns(UserWarning, match=r"mc_test\.jsonl: wrote 1 records, the official "
                                         r"release has 2,990"):
        summary = prepare.prepare("msrvtt", root)
    assert summary.written["mc_test.jsonl"] == 1 and summary.written["qa_test.jsonl"] == 1
    mc = build_dataset("video_mc", datasets=["msrvtt"], split="test", num_frames=2, size=32)
    assert len(mc) == 1 and mc.records[0]["options"][1] == "a man sings"
    qa = build_dataset("video_qa", datasets=["msrvtt"], split="test", num_frames=2, size=32,
                       answers=root / "answers.json")
    assert qa.records[0]["video_id"] == "video2" and qa.records[0]["answer"] == "man"
    # the warning names both numbers and stays in the summary
    assert any("qa_train.jsonl: wrote 1 records, the official release has 158,581" in n
               for n in summary.notes)


def test_msrvtt_optional_annotations_say_which_raw_file_gives_them(tmp_path, monkeypatch):
    monkeypatch.setenv("VLBOOK_DATA", str(tmp_path))
    (tmp_path / "msrvtt").mkdir()
    with pytest.raises(FileNotFoundError, match=r"qa_val\.jsonl does not exist.*val_qa\.json"):
        build_dataset("video_qa", datasets=["msrvtt"], split="val")
    with pytest.raises(ValueError, match="offers .*qa_train.jsonl"):
        build_dataset("video_steps", datasets=["msrvtt"], split="train")


def test_an_unrecognised_multiple_choice_file_is_named_not_ignored(tmp_path):
    root = tmp_path
    _msrvtt_raw(root / "raw", ["video0", "video1", "video2"])
    (root / "raw/msrvtt_mc_test.jsonl").rename(root / "raw/msrvtt_mc_test_v2.jsonl")
    summary = prepare.convert_msrvtt(root, root / "raw", require_media=False)
    assert "mc_test.jsonl" not in summary.written
    assert any("msrvtt_mc_test_v2.jsonl" in n and "not read" in n for n in summary.notes)


def _kinetics_csv(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("label,youtube_id,time_start,time_end,split\n"
                    + "".join(f"{lab},{yid},{a},{b},x\n" for lab, yid, a, b in rows))


def test_kinetics_in_class_folders_is_found(tmp_path):
    rows = [("abseiling", "aaa", 10, 20), ("playing guitar", "bbb", 0, 10)]
    _kinetics_csv(tmp_path / "raw/train.csv", rows)
    _kinetics_csv(tmp_path / "raw/val.csv", rows[:1])
    # the public mirror's script: videos/<split>/<label>/<id>_<start>_<end>.mp4, spaces kept or
    # replaced by underscores
    write_test_video(tmp_path / "videos/train/abseiling/aaa_000010_000020.mp4", num_frames=4)
    write_test_video(tmp_path / "videos/train/playing_guitar/bbb_000000_000010.mp4",
                     num_frames=4)
    write_test_video(tmp_path / "videos/val/abseiling/aaa_000010_000020.mp4", num_frames=4)
    summary = prepare.prepare("kinetics400", tmp_path)
    train = read_jsonl(tmp_path / "classification_train.jsonl", "classification")
    assert [r["video"] for r in train] == [
        "videos/train/abseiling/aaa_000010_000020.mp4",
        "videos/train/playing_guitar/bbb_000000_000010.mp4"]
    assert summary.missing_media == 0


def test_a_layout_that_drops_every_record_says_where_it_looked(tmp_path):
    _kinetics_csv(tmp_path / "raw/train.csv", [("zumba", "ccc", 5, 15)])
    _kinetics_csv(tmp_path / "raw/val.csv", [("zumba", "ccc", 5, 15)])
    summary = prepare.prepare("kinetics400", tmp_path)
    assert summary.missing_media == 2
    assert any("classification_train.jsonl: none of the 1 video files was found" in n
               and "videos/train/ccc_000005_000015.mp4" in n for n in summary.notes)


def test_kinetics710_lists_under_their_released_names(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    # UMT / UniFormerV2 release k710/train.csv and val.csv: "<path> <label id>", no header
    (raw / "train.csv").write_text("k400/abseiling/a.mp4 0\nk700/zumba/b.mp4 709\n")
    (raw / "val.csv").write_text("k400/abseiling/c.mp4 0\n")
    prepare.prepare("kinetics710", tmp_path, require_media=False)
    recs = read_jsonl(tmp_path / "classification_train.jsonl", "classification")
    assert [(r["video"], r["label"]) for r in recs] == [("videos/k400/abseiling/a.mp4", 0),
                                                        ("videos/k700/zumba/b.mp4", 709)]
    assert "train.csv|train_list.txt" in REAL_DATASETS["kinetics710"].raw_files


def _jpeg(color) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(out, format="JPEG")
    return out.getvalue()


def test_cc3m_header_line_is_skipped_so_captions_stay_on_their_images(tmp_path):
    from PIL import Image

    raw = tmp_path / "raw"
    raw.mkdir()
    # img2dataset's CC3M instructions add this header before downloading; its keys then count
    # data rows from 0
    (raw / "Train_GCC-training.tsv").write_text(
        "caption\turl\na dog on grass\thttp://a/0.jpg\na red car\thttp://a/1.jpg\n")
    (raw / "Validation_GCC-1.1.0-Validation.tsv").write_text("a cat\thttp://a/v0.jpg\n")
    (tmp_path / "images/train/00000").mkdir(parents=True)
    for key in range(2):
        Image.new("RGB", (8, 8)).save(tmp_path / f"images/train/00000/{key:09d}.jpg")
        (tmp_path / f"images/train/00000/{key:09d}.txt").write_text("sidecar caption")
    summary = prepare.prepare("cc3m", tmp_path)
    recs = read_jsonl(tmp_path / "image_text_train.jsonl", "image_text")
    assert [(r["image"], r["captions"]) for r in recs] == [
        ("images/train/00000/000000000.jpg", ["a dog on grass"]),
        ("images/train/00000/000000001.jpg", ["a red car"])]
    assert any("header line" in n for n in summary.notes)
    assert summary.missing_media == 1  # the validation image was not downloaded


def test_cc3m_webdataset_shards_are_read_from_the_tar(tmp_path):
    raw = tmp_path / "raw"
    (raw / "images/val").mkdir(parents=True)
    (raw / "Validation_GCC-1.1.0-Validation.tsv").write_text(
        "a cat\thttp://a/0.jpg\n\thttp://a/1.jpg\na blue sky\thttp://a/2.jpg\n")
    (raw / "Train_GCC-training.tsv").write_text("")
    # img2dataset --output_format webdataset: 00000.tar with <key>.jpg/.txt/.json members
    with tarfile.open(raw / "images/val/00000.tar", "w") as shard:
        for key, color in ((0, (255, 0, 0)), (2, (0, 0, 255))):
            for suffix, data in ((".jpg", _jpeg(color)), (".txt", b"x"), (".json", b"{}")):
                info = tarfile.TarInfo(f"{key:09d}{suffix}")
                info.size = len(data)
                shard.addfile(info, io.BytesIO(data))
    summary = prepare.prepare("cc3m", tmp_path)
    recs = read_jsonl(tmp_path / "image_text_val.jsonl", "image_text")
    assert [(r["image"], r["captions"]) for r in recs] == [
        ("raw/images/val/00000.tar#000000000.jpg", ["a cat"]),
        ("raw/images/val/00000.tar#000000002.jpg", ["a blue sky"])]
    assert any("empty caption" in n and "lines 2" in n for n in summary.notes)
    data = build_dataset("image_text", annotation=tmp_path / "image_text_val.jsonl",
                         split="test", size=8)
    first, second = data[0]["video"], data[1]["video"]
    assert first.shape[0] == 1  # one frame per image
    # red vs blue after ImageNet normalisation: the red channel is higher in the first
    assert float(first[0, 0].mean()) > float(second[0, 0].mean())
    assert float(first[0, 2].mean()) < float(second[0, 2].mean())
