"""Real datasets: resumable verified downloads and converters to the unified format.

Every converter reads the official release files (see :mod:`vlbook.data.registry` for where
they come from), writes ``<task>_<split>.jsonl`` into the dataset root and returns the written
paths. Converters never overwrite an existing file unless ``overwrite=True``; a record whose
media file is absent is dropped (with a count in the returned summary) when ``require_media``
is true, so a partial YouTube copy still yields a consistent annotation file.

:func:`download` resumes a ``.part`` file with an HTTP ``Range`` request, checks the size and
SHA-256, and only then renames it into place. The network call is the ``opener`` argument, so
the resume/verify logic is tested with local files.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import tarfile
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlbook.data.annotations import decode_utf8, write_jsonl
from vlbook.data.registry import REAL_DATASETS, DatasetSpec, raw_file

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".webm", ".mkv", ".avi", ".mov")


class ChecksumError(ValueError):
    """A downloaded or local file does not match its recorded size or SHA-256."""


def sha256sum(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def _recorded_checksum(dest: Path) -> str | None:
    book = dest.parent / "checksums.json"
    if book.is_file():
        return json.loads(book.read_text()).get(dest.name)
    return None


def _record_checksum(dest: Path, digest: str) -> None:
    book = dest.parent / "checksums.json"
    data = json.loads(book.read_text()) if book.is_file() else {}
    data[dest.name] = digest
    book.write_text(json.dumps(data, indent=1, sort_keys=True))


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    opener: Callable[[urllib.request.Request], Any] = urllib.request.urlopen,
    chunk: int = 1 << 20,
) -> Path:
    """Fetch ``url`` to ``dest``, resuming ``dest.part``; verify size and SHA-256.

    An existing ``dest`` is never replaced: it is checked (against ``sha256`` or the hash
    recorded in ``checksums.json``) and returned, or :class:`ChecksumError` says it differs.
    Without a published ``sha256`` the first download's hash is recorded (trust on first use).
    """
    dest = Path(dest)
    expected = sha256 or _recorded_checksum(dest)
    if dest.exists():
        if expected and sha256sum(dest) != expected:
            raise ChecksumError(
                f"{dest} exists but its SHA-256 differs from {expected}; vlbook does not "
                "overwrite it — move it away to download again"
            )
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:
        request = urllib.request.Request(url)
        if have:
            request.add_header("Range", f"bytes={have}-")
        with opener(request) as response:
            status = getattr(response, "status", None) or response.getcode()
            mode = "ab" if have and status == 206 else "wb"
            with part.open(mode) as fh:
                while block := response.read(chunk):
                    fh.write(block)
    got = part.stat().st_size
    if size is not None and got != size:
        raise ChecksumError(f"{url}: downloaded {got} bytes, expected {size} (kept {part})")
    digest = sha256sum(part)
    if expected and digest != expected:
        part.unlink()
        raise ChecksumError(f"{url}: SHA-256 {digest} differs from {expected}; removed {part}")
    part.replace(dest)
    if not expected:
        _record_checksum(dest, digest)
    return dest


@dataclass
class ConversionSummary:
    """What a converter wrote and what it dropped."""

    written: dict[str, int] = field(default_factory=dict)  # file name -> records
    missing_media: int = 0
    dropped: dict[str, int] = field(default_factory=dict)  # file name -> missing-media records
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"  {name}: {n} records" for name, n in self.written.items()]
        if self.missing_media:
            lines.append(f"  dropped {self.missing_media} record(s) whose media file is absent")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


class _Writer:
    """Collects a converter's outputs; :meth:`finish` checks every target, then writes.

    So a conversion that would replace one existing file (without ``overwrite``) writes
    nothing at all, instead of stopping half-way with some targets already written.
    """

    def __init__(self, root: Path, overwrite: bool, require_media: bool) -> None:
        self.root, self.overwrite, self.require_media = root, overwrite, require_media
        self.summary = ConversionSummary()
        self._exists: dict[str, bool] = {}
        self._pending: dict[str, list[dict] | str] = {}

    def has_media(self, rel: str) -> bool:
        if not self.require_media:
            return True
        if rel not in self._exists:  # a tar member was listed from its shard: the shard
            shard, member, _ = rel.partition(".tar" + TAR_MEMBER)
            self._exists[rel] = (self.root / (shard + ".tar" if member else rel)).is_file()
        return self._exists[rel]

    def keep(self, records: list[dict], field_name: str = "video") -> list[dict]:
        kept = [r for r in records if self.has_media(r[field_name])]
        self.summary.missing_media += len(records) - len(kept)
        return kept

    def write(self, name: str, records: list[dict], field_name: str | None = "video") -> None:
        """Queue ``records`` for ``root/name`` (written by :meth:`finish`)."""
        if field_name:
            given = records
            records = self.keep(records, field_name)
            self.summary.dropped[name] = len(given) - len(records)
            if given and not records:
                self.summary.notes.append(
                    f"{name}: none of the {len(given)} {field_name} files was found (the first "
                    f"was looked for at {self.root / given[0][field_name]}); check the folder "
                    "layout against data_scripts/README.md")
        self._pending[name] = records
        self.summary.written[name] = len(records)

    def write_text(self, name: str, text: str) -> None:
        self._pending[name] = text

    def finish(self) -> ConversionSummary:
        """Write every queued target, after checking that none exists (unless overwrite)."""
        if not self.overwrite:
            existing = [str(self.root / n) for n in self._pending if (self.root / n).exists()]
            if existing:
                raise FileExistsError(
                    f"{', '.join(existing)} exist(s); nothing was written (of "
                    f"{len(self._pending)} target(s): {', '.join(self._pending)}). vlbook never "
                    "overwrites existing files: pass overwrite=True / --overwrite, or move them"
                )
        for name, content in self._pending.items():
            if isinstance(content, str):
                target = self.root / name
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                tmp.write_text(content, encoding="utf-8")
                tmp.replace(target)
            else:
                write_jsonl(self.root / name, content, overwrite=self.overwrite)
        self._pending.clear()
        return self.summary


def _text(value: Any) -> str:
    """A caption as a stripped string; ``None`` (a null caption) becomes ``""``, not "None"."""
    return "" if value is None else str(value).strip()


def _find_video(root: Path, stem: Path, *others: Path) -> str:
    """``stem`` (or one of the ``others`` places the same file may be) + the first extension
    that exists, relative to ``root``; ``stem.mp4`` when none exists."""
    for candidate in (stem, *others):
        for ext in VIDEO_EXTENSIONS:
            if (root / candidate.with_suffix(ext)).is_file():
                return str(candidate.with_suffix(ext))
    return str(stem.with_suffix(".mp4"))


def _read_csv(path: Path, required: tuple[str, ...], delimiter: str = ",") -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    text = decode_utf8(path.read_bytes(), path)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    missing = [c for c in required if c not in (reader.fieldnames or [])]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; found {reader.fieldnames}")
    return list(reader)


# --------------------------------------------------------------------------------------
# converters
# --------------------------------------------------------------------------------------


def convert_webvid(
    root: str | Path,
    csv_files: dict[str, str | Path],
    *,
    video_dir: str = "videos",
    overwrite: bool = False,
    require_media: bool = True,
) -> ConversionSummary:
    """WebVid CSV (``videoid, contentUrl, duration, page_dir, name``) → ``retrieval_<split>``.

    ``csv_files`` maps split → CSV (``results_2M_train.csv`` …). Videos are expected at
    ``<video_dir>/<page_dir>/<videoid>.mp4`` (the layout of the WebVid download scripts).
    """
    w = _Writer(Path(root), overwrite, require_media)
    for split, path in csv_files.items():
        rows = _read_csv(Path(path), ("videoid", "page_dir", "name"))
        records = [
            {
                "video": f"{video_dir}/{r['page_dir']}/{r['videoid']}.mp4",
                "video_id": str(r["videoid"]),
                "captions": [_text(r["name"])],
            }
            for r in rows
        ]
        w.write(f"retrieval_{split}.jsonl", records)
    w.summary.notes.append("WebVid is no longer distributed; converted from a local copy")
    return w.finish()


def convert_msrvtt(
    root: str | Path,
    raw: str | Path,
    *,
    video_dir: str = "videos/all",
    overwrite: bool = False,
    require_media: bool = True,
    num_answers: int = 1500,
) -> ConversionSummary:
    """MSR-VTT retrieval splits, MSRVTT-QA and MSR-VTT multiple choice.

    Reads from ``raw``: ``MSRVTT_data.json`` (``sentences`` [{video_id, caption}], ``videos``
    [{video_id, split}]), ``MSRVTT_train.9k.csv`` / ``MSRVTT_train.7k.csv`` (column
    ``video_id``), ``MSRVTT_JSFUSION_test.csv`` (``video_id, sentence``); optionally
    ``{train,val,test}_qa.json`` (MSRVTT-QA: [{video_id (int), question, answer}]) and
    ``msrvtt_mc_test.jsonl`` (ClipBERT's release, also ``mc_test.jsonl``: {clip_name, options,
    answer}); another ``*mc*`` file there is named in the summary, never ignored silently.

    Writes ``retrieval_train_9k``, ``retrieval_train_7k`` (all 20 captions per video),
    ``retrieval_test_1ka`` (JSFusion 1k-A: 1,000 videos × 1 caption — the papers' split),
    ``retrieval_test_full`` (2,990 official test videos × 20 captions), ``qa_<split>``,
    ``answers.json`` (the ``num_answers`` most frequent training answers) and ``mc_test``.
    """
    root, raw = Path(root), Path(raw)
    w = _Writer(root, overwrite, require_media)
    data_path = raw / "MSRVTT_data.json"
    if not data_path.is_file():
        raise FileNotFoundError(f"{data_path} does not exist (from msrvtt_data.zip)")
    data = json.loads(data_path.read_text())
    captions: dict[str, list[str]] = {}
    for s in data.get("sentences", []):
        if _text(s.get("caption")):
            captions.setdefault(s["video_id"], []).append(_text(s["caption"]))

    def video(vid: str) -> str:
        return _find_video(root, Path(video_dir) / vid)

    for tag, name in (("9k", "MSRVTT_train.9k.csv"), ("7k", "MSRVTT_train.7k.csv")):
        if (raw / name).is_file():
            ids = [r["video_id"] for r in _read_csv(raw / name, ("video_id",))]
            missing = [v for v in ids if v not in captions]
            if missing:
                raise ValueError(f"{raw / name}: video {missing[0]} has no caption in {data_path}")
            w.write(
                f"retrieval_train_{tag}.jsonl",
                [
                    {
                        "video": video(v),
                        "video_id": v,
                        "captions": captions[v],
                        "split_note": f"MSR-VTT train {tag}",
                    }
                    for v in ids
                ],
            )
    jsf = raw / "MSRVTT_JSFUSION_test.csv"
    if jsf.is_file():
        rows = _read_csv(jsf, ("video_id", "sentence"))
        w.write(
            "retrieval_test_1ka.jsonl",
            [
                {
                    "video": video(r["video_id"]),
                    "video_id": r["video_id"],
                    "captions": [_text(r["sentence"])],
                    "split_note": "MSR-VTT 1k-A (JSFusion)",
                }
                for r in rows
            ],
        )
    test_ids = [v["video_id"] for v in data.get("videos", []) if v.get("split") == "test"]
    if test_ids:
        w.write(
            "retrieval_test_full.jsonl",
            [
                {
                    "video": video(v),
                    "video_id": v,
                    "captions": captions.get(v, []),
                    "split_note": "MSR-VTT full test (2,990 videos)",
                }
                for v in test_ids
                if captions.get(v)
            ],
        )
    qa_files = {s: raw / f"{s}_qa.json" for s in ("train", "val", "test")}
    if qa_files["train"].is_file():
        counts = Counter(q["answer"] for q in json.loads(qa_files["train"].read_text()))
        vocab = [a for a, _ in counts.most_common(num_answers)]
        w.write_text("answers.json", json.dumps(vocab, indent=1))
        for split, path in qa_files.items():
            if not path.is_file():
                continue
            recs = []
            for q in json.loads(path.read_text()):
                vid = q["video_id"]
                vid = f"video{vid}" if isinstance(vid, int) else str(vid)
                recs.append(
                    {
                        "video": video(vid),
                        "video_id": vid,
                        "question": q["question"],
                        "answer": str(q["answer"]),
                        "answer_type": q.get("category_id"),
                    }
                )
            w.write(f"qa_{split}.jsonl", recs)
        w.summary.notes.append(
            f"QA answers outside the {len(vocab)} most frequent training answers get label -100;"
            " count them as wrong (All-in-one drops them, which inflates accuracy)"
        )
    mc_names = ("msrvtt_mc_test.jsonl", "mc_test.jsonl")  # ClipBERT's release name, ours
    mc = next((raw / n for n in mc_names if (raw / n).is_file()), None)
    others = sorted(f.name for f in raw.glob("*mc*") if f.is_file() and f.name not in mc_names)
    if others:
        w.summary.notes.append(
            f"{', '.join(others)} in {raw} not read: the multiple-choice file is read under "
            f"the names {' or '.join(mc_names)} (ClipBERT's JSON Lines: clip_name, options, "
            "answer); rename it if it is that file")
    if mc is not None:
        recs = []
        for line in mc.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                recs.append(
                    {
                        "video": video(r["clip_name"]),
                        "video_id": r["clip_name"],
                        "options": r["options"],
                        "answer": int(r["answer"]),
                    }
                )
        w.write("mc_test.jsonl", recs)
    return w.finish()


def convert_youcook2(
    root: str | Path,
    annotation_json: str | Path,
    *,
    video_dir: str = "raw_videos",
    overwrite: bool = False,
    require_media: bool = True,
) -> ConversionSummary:
    """YouCook2 ``youcookii_annotations_trainval.json`` → captioning, retrieval and steps.

    Videos at ``<video_dir>/<training|validation>/<recipe_type>/<id>.<ext>``. Each annotated
    segment is a clip (``start``/``end`` seconds) for ``caption_<split>`` and
    ``retrieval_<split>``; each video with its ordered segments is a ``steps_<split>`` record.
    """
    db = json.loads(Path(annotation_json).read_text())["database"]
    w = _Writer(Path(root), overwrite, require_media)
    splits = {"training": "train", "validation": "val"}
    clips: dict[str, list] = {"train": [], "val": []}
    steps: dict[str, list] = {"train": [], "val": []}
    for vid, entry in db.items():
        split = splits.get(entry.get("subset", ""))
        if split is None:
            continue
        rel = _find_video(
            Path(root), Path(video_dir) / entry["subset"] / entry["recipe_type"] / vid
        )
        segs = sorted(entry["annotations"], key=lambda a: a["segment"][0])
        for a in segs:
            clips[split].append(
                {
                    "video": rel,
                    "video_id": f"{vid}_{a['id']}",
                    "captions": [_text(a["sentence"])],
                    "start": float(a["segment"][0]),
                    "end": float(a["segment"][1]),
                }
            )
        steps[split].append(
            {
                "video": rel,
                "video_id": vid,
                "duration": entry.get("duration"),
                "steps": [
                    {
                        "text": _text(a["sentence"]),
                        "start": a["segment"][0],
                        "end": a["segment"][1],
                    }
                    for a in segs
                ],
            }
        )
    for split in ("train", "val"):
        w.write(f"caption_{split}.jsonl", clips[split])
        w.write(f"steps_{split}.jsonl", steps[split])
    w.write("retrieval_val.jsonl", clips["val"])
    return w.finish()


def convert_howto100m(
    root: str | Path,
    caption_json: str | Path,
    *,
    feature_dir: str = "features",
    overwrite: bool = False,
    require_media: bool = True,
) -> ConversionSummary:
    """HowTo100M ASR captions ``{video_id: {start, end, text}}`` + ``<feature_dir>/<id>.npy``
    (per-second 512-d S3D features) → ``feature_text_train.jsonl`` (VLM pre-training)."""
    data = json.loads(Path(caption_json).read_text())
    w = _Writer(Path(root), overwrite, require_media)
    recs = []
    for vid, cap in data.items():
        texts = [_text(t) for t in cap["text"]]
        if not (len(texts) == len(cap["start"]) == len(cap["end"])):
            raise ValueError(f"{caption_json}: video {vid}: start/end/text lengths differ")
        keep = [i for i, t in enumerate(texts) if t]
        if not keep:
            continue
        recs.append(
            {
                "video_id": vid,
                "features": f"{feature_dir}/{vid}.npy",
                "captions": [texts[i] for i in keep],
                "starts": [float(cap["start"][i]) for i in keep],
                "ends": [float(cap["end"][i]) for i in keep],
            }
        )
    w.write("feature_text_train.jsonl", w.keep(recs, "features"), field_name=None)
    return w.finish()


def convert_kinetics(
    root: str | Path,
    csv_files: dict[str, str | Path],
    *,
    video_dir: str = "videos",
    overwrite: bool = False,
    require_media: bool = True,
) -> ConversionSummary:
    """Kinetics CSV (``label, youtube_id, time_start, time_end, split``) → classification.

    Videos at ``<video_dir>/<split>/<youtube_id>_<start:06d>_<end:06d>.mp4`` (the CVDF
    layout) or in class folders ``<video_dir>/<split>/<label>/`` (the label as written or with
    spaces as underscores, as the public mirrors' scripts leave them). Class ids follow the
    sorted class names of the first CSV (``classes.json``).
    """
    root = Path(root)
    w = _Writer(root, overwrite, require_media)
    rows = {
        s: _read_csv(Path(p), ("label", "youtube_id", "time_start", "time_end"))
        for s, p in csv_files.items()
    }
    first = next(iter(rows.values()))
    classes = sorted({r["label"] for r in first})
    index = {c: i for i, c in enumerate(classes)}
    w.write_text("classes.json", json.dumps(classes, indent=1))
    for split, rs in rows.items():
        recs = []
        for r in rs:
            if r["label"] not in index:
                raise ValueError(
                    f"{csv_files[split]}: class {r['label']!r} is not in the "
                    f"{len(classes)} classes of the first CSV"
                )
            stem = (
                f"{r['youtube_id']}_{int(float(r['time_start'])):06d}_"
                f"{int(float(r['time_end'])):06d}"
            )
            folder = Path(video_dir) / split
            recs.append(
                {
                    "video": _find_video(root, folder / stem, folder / r["label"] / stem,
                                         folder / r["label"].replace(" ", "_") / stem),
                    "video_id": stem,
                    "label": index[r["label"]],
                    "label_name": r["label"],
                }
            )
        w.write(f"classification_{split}.jsonl", recs)
    return w.finish()


def convert_video_list(
    root: str | Path,
    list_files: dict[str, str | Path],
    *,
    video_dir: str = "videos",
    overwrite: bool = False,
    require_media: bool = True,
) -> ConversionSummary:
    """List files ``<relative video path> <label id>`` (UMT's Kinetics-710) → classification."""
    w = _Writer(Path(root), overwrite, require_media)
    for split, path in list_files.items():
        recs = []
        for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
            if not line.strip():
                continue
            parts = line.replace(",", " ").split()
            if len(parts) < 2 or not parts[-1].lstrip("-").isdigit():
                raise ValueError(f"{path}:{lineno}: expected '<video path> <label id>'")
            rel = " ".join(parts[:-1])
            recs.append(
                {"video": f"{video_dir}/{rel}", "video_id": Path(rel).stem, "label": int(parts[-1])}
            )
        w.write(f"classification_{split}.jsonl", recs)
    return w.finish()


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
#: the separator between a tar shard and a member in a media path (``00000.tar#000000012.jpg``)
TAR_MEMBER = "#"


def _cc3m_images(root: Path, folder: Path) -> dict[int, str]:
    """``{row: media path relative to root}`` for img2dataset's outputs in ``folder``: files
    named by their key (= row with the default 10,000 samples per shard) in any sub-folder,
    and members of ``.tar`` shards (its webdataset format; sidecar .txt/.json ignored)."""
    by_row: dict[int, str] = {}
    if not folder.is_dir():
        return by_row
    for f in sorted(folder.rglob("*")):
        suffix = f.suffix.lower()
        if suffix in IMAGE_EXTENSIONS and f.stem.isdigit():
            by_row[int(f.stem)] = str(f.relative_to(root))
        elif suffix == ".tar" and f.is_file():
            with tarfile.open(f) as shard:
                for member in shard.getmembers():
                    stem, ext = Path(member.name).stem, Path(member.name).suffix.lower()
                    if member.isfile() and ext in IMAGE_EXTENSIONS and stem.isdigit():
                        by_row[int(stem)] = f"{f.relative_to(root)}{TAR_MEMBER}{member.name}"
    return by_row


def _is_header(fields: list[str]) -> bool:
    return [f.strip().lower() for f in fields[:2]] == ["caption", "url"]


def convert_cc3m(
    root: str | Path,
    tsv_files: dict[str, str | Path],
    *,
    image_dir: str = "images",
    overwrite: bool = False,
    require_media: bool = True,
) -> ConversionSummary:
    """CC3M TSV (``caption<TAB>url``) → ``image_text_<split>``.

    The release has no header; a first line ``caption<TAB>url`` (which img2dataset's CC3M
    instructions add before downloading) is skipped, and rows are numbered after it as
    img2dataset numbers them. Images are found by row number under
    ``<image_dir>/<split>/`` (or ``raw/<image_dir>/<split>/``): a file whose stem is the
    zero-based row (img2dataset's ``files`` layout, e.g. ``00000/000000012.jpg`` beside its
    ``.txt``/``.json`` sidecars) or such a member of a ``.tar`` shard (its ``webdataset``
    layout, recorded as ``00000.tar#000000012.jpg``). Rows without an image are dropped and
    counted; a caption that is empty is skipped and counted by line.
    """
    root = Path(root)
    w = _Writer(root, overwrite, require_media)
    for split, path in tsv_files.items():
        folder = root / image_dir / split
        if not folder.is_dir() and (root / "raw" / image_dir / split).is_dir():
            folder = root / "raw" / image_dir / split
        by_row = _cc3m_images(root, folder)
        text = decode_utf8(Path(path).read_bytes(), Path(path))
        lines = text.splitlines()
        first = next((i for i, line in enumerate(lines) if line.strip()), None)
        skip_header = first is not None and _is_header(lines[first].split("\t"))
        recs, empty, row = [], [], -1
        for lineno, line in enumerate(lines, start=1):
            if not line.strip() or (skip_header and lineno == first + 1):
                continue
            row += 1
            caption = line.split("\t")[0].strip()
            if not caption:
                empty.append(lineno)
                continue
            default = f"{folder.relative_to(root)}/{row:09d}.jpg"
            recs.append({"image": by_row.get(row, default), "image_id": f"{split}_{row:09d}",
                         "captions": [caption]})
        if skip_header:
            w.summary.notes.append(f"{path}: header line 'caption<TAB>url' skipped")
        if empty:
            w.summary.notes.append(f"{path}: {len(empty)} row(s) with an empty caption skipped "
                                   f"(lines {', '.join(map(str, empty[:5]))}"
                                   f"{' ...' if len(empty) > 5 else ''})")
        w.write(f"image_text_{split}.jsonl", recs, field_name="image")
    return w.finish()


def prepare(
    name: str, root: str | Path, *, overwrite: bool = False, require_media: bool = True
) -> ConversionSummary:
    """Convert the raw files of dataset ``name`` found in ``root/raw`` (see the registry).

    Each written file is compared with the official release's record count
    (:attr:`DatasetSpec.split_sizes <vlbook.data.registry.DatasetSpec.split_sizes>`): a
    different count warns with both numbers (and is kept in the summary's notes).
    """
    if name not in REAL_DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(REAL_DATASETS)}")
    root = Path(root)
    raw = root / "raw"
    spec = REAL_DATASETS[name]
    needed = [f.replace("|", " or ") for f in spec.raw_files if raw_file(raw, f) is None]
    if name in ("msrvtt",):
        needed = [f for f in needed if f != "MSRVTT_train.7k.csv"]
    if needed:
        sources = "\n".join(f"  {s.url}  ({s.note})" for s in spec.sources) or (
            "  (no public source: " + spec.licence + ")"
        )
        raise FileNotFoundError(
            f"{name}: missing raw file(s) {needed} in {raw}/. Official sources:\n{sources}"
        )
    kw = {"overwrite": overwrite, "require_media": require_media}
    summary = _convert(name, root, raw, spec, kw)
    check_split_sizes(spec, summary)
    return summary


def check_split_sizes(spec: DatasetSpec, summary: ConversionSummary) -> list[str]:
    """Warn (and note in ``summary``) for each written file whose record count differs from the
    official release's; returns the messages."""
    messages = []
    for name, count in summary.written.items():
        expected = spec.split_sizes.get(name)
        if expected is not None and count != expected:
            dropped = summary.dropped.get(name, 0)
            why = (f"{dropped:,} record(s) were dropped for a missing media file" if dropped
                   else "check that the raw file is complete")
            messages.append(f"{spec.name}/{name}: wrote {count:,} records, the official release "
                            f"has {expected:,}; {why}")
    for message in messages:
        warnings.warn(message, stacklevel=3)
        summary.notes.append(message)
    return messages


def _convert(name: str, root: Path, raw: Path, spec: DatasetSpec, kw: dict[str, Any]
             ) -> ConversionSummary:
    if name == "webvid2m":
        return convert_webvid(
            root, {"train": raw / "results_2M_train.csv", "val": raw / "results_2M_val.csv"}, **kw
        )
    if name == "msrvtt":
        return convert_msrvtt(root, raw, **kw)
    if name == "youcook2":
        return convert_youcook2(root, raw / "youcookii_annotations_trainval.json", **kw)
    if name == "howto100m":
        return convert_howto100m(root, raw / "raw_caption.json", feature_dir="raw/features", **kw)
    if name == "kinetics400":
        return convert_kinetics(root, {"train": raw / "train.csv", "val": raw / "val.csv"}, **kw)
    if name == "kinetics710":
        lists = {split: raw_file(raw, entry) for split, entry in zip(("train", "val"),
                                                                     spec.raw_files)}
        return convert_video_list(root, lists, **kw)
    if name == "cc3m":
        return convert_cc3m(
            root,
            {
                "train": raw / "Train_GCC-training.tsv",
                "val": raw / "Validation_GCC-1.1.0-Validation.tsv",
            },
            **kw,
        )
    raise KeyError(name)
