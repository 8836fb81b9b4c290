"""vlbook's unified annotation format: JSON Lines, one record per line, per task and split.

Media paths (``video``, ``image``, ``features``) are relative to the folder that holds the
annotation file (a dataset's root), so a toy run and a full run differ only in the annotation
file they read. :data:`TASK_FIELDS` lists what each task requires; reading checks every record
and fails at load time naming file, line and field.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Required fields (name → accepted Python types) of the records of each task.
TASK_FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "retrieval": {"video": (str,), "video_id": (str,), "captions": (list,)},
    "caption": {"video": (str,), "video_id": (str,), "captions": (list,)},
    "mc": {"video": (str,), "video_id": (str,), "options": (list,), "answer": (int,)},
    "qa": {"video": (str,), "video_id": (str,), "question": (str,), "answer": (str,)},
    "frame_labels": {"video": (str,), "video_id": (str,), "frame_labels": (list,)},
    "steps": {"video": (str,), "video_id": (str,), "steps": (list,)},
    "classification": {"video": (str,), "video_id": (str,), "label": (int,)},
    "image_text": {"image": (str,), "image_id": (str,), "captions": (list,)},
    "feature_text": {
        "video_id": (str,),
        "features": (str,),
        "captions": (list,),
        "starts": (list,),
        "ends": (list,),
    },
}

#: Optional fields understood by the datasets.
OPTIONAL_FIELDS: dict[str, str] = {
    "start": "seconds: the clip starts here inside a longer video (YouCook2 segments, Kinetics)",
    "end": "seconds: the clip ends here",
    "label_name": "classification: the class name",
    "answer_type": "qa: colour, shape, size, motion, order, count (synthetic) or the source's",
    "temporal": "qa: true when one frame cannot answer it",
    "option_attributes": "mc: per option, the attribute it changes (null for the answer)",
    "split_note": "free text: which official split the record comes from",
}


class AnnotationError(ValueError):
    """An annotation file is malformed; the message names file, line and field."""


class AnnotationEncodingError(AnnotationError):
    """An annotation file is not UTF-8; the message names file, line and byte offset."""


#: Tasks whose records carry ``captions`` (text paired with a video, image or features).
CAPTION_TASKS: tuple[str, ...] = ("retrieval", "caption", "image_text", "feature_text")


def decode_utf8(data: bytes, path: str | Path) -> str:
    """``data`` decoded as UTF-8, or :class:`AnnotationEncodingError` naming where it fails."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        lineno = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1)
        raise AnnotationEncodingError(
            f"{path}:{lineno}: not valid UTF-8 at byte offset {err.start} (byte {column} of "
            f"line {lineno}: {data[err.start : err.start + 1]!r}); annotation files must be "
            "UTF-8 encoded — re-encode it, e.g. `iconv -f latin1 -t utf-8`"
        ) from None


def _format_lines(lines: list[int], limit: int = 20) -> str:
    shown = ", ".join(str(n) for n in lines[:limit])
    return shown + (f", … ({len(lines) - limit} more)" if len(lines) > limit else "")


def read_jsonl(path: str | Path, task: str | None = None) -> list[dict[str, Any]]:
    """Read a JSON Lines annotation file, checking the fields ``task`` requires.

    Blank lines are ignored. Raises :class:`AnnotationError` on the first invalid line
    (:class:`AnnotationEncodingError`, naming line and byte offset, when the file is not
    UTF-8). For the caption tasks (:data:`CAPTION_TASKS`) null, empty and whitespace-only
    captions are removed and a record left without any is skipped; one warning names the
    file and counts them with their line numbers.
    """
    path = Path(path)
    if task is not None and task not in TASK_FIELDS:
        raise ValueError(f"unknown annotation task {task!r}; known: {sorted(TASK_FIELDS)}")
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    required = TASK_FIELDS.get(task, {}) if task else {}
    records = []
    skipped: list[int] = []  # lines of records left without any caption
    trimmed: list[int] = []  # lines of records that lost some null/empty captions
    text = decode_utf8(path.read_bytes(), path)
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise AnnotationError(f"{path}:{lineno}: invalid JSON ({err.msg})") from err
        if not isinstance(rec, dict):
            raise AnnotationError(
                f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}"
            )
        for field, types in required.items():
            if field not in rec:
                raise AnnotationError(
                    f"{path}:{lineno}: record lacks required field {field!r} "
                    f"(task {task!r} needs {', '.join(required)})"
                )
            if not isinstance(rec[field], types) or isinstance(rec[field], bool):
                raise AnnotationError(
                    f"{path}:{lineno}: field {field!r} should be "
                    f"{' or '.join(t.__name__ for t in types)}, got "
                    f"{type(rec[field]).__name__}"
                )
        if task in CAPTION_TASKS:
            outcome = _drop_blank_captions(rec, task)
            if outcome == "skip":
                skipped.append(lineno)
                continue
            if outcome == "trimmed":
                trimmed.append(lineno)
        _check_task_values(path, lineno, task, rec)
        records.append(rec)
    if skipped or trimmed:
        parts = []
        if skipped:
            parts.append(
                f"skipped {len(skipped)} record(s) whose captions are all null or empty "
                f"(line(s) {_format_lines(skipped)})"
            )
        if trimmed:
            parts.append(
                f"dropped null or empty captions from {len(trimmed)} record(s) "
                f"(line(s) {_format_lines(trimmed)})"
            )
        warnings.warn(f"{path}: {'; '.join(parts)}", stacklevel=2)
    return records


def _blank(caption: Any) -> bool:
    return caption is None or (isinstance(caption, str) and not caption.strip())


def _drop_blank_captions(rec: dict, task: str) -> str | None:
    """Remove null / empty / whitespace-only captions from ``rec`` (with their ``starts`` /
    ``ends`` for feature_text): ``"skip"`` when none is left, ``"trimmed"`` when some were
    removed, ``None`` when all were kept. A null never becomes the string "None"."""
    captions = rec["captions"]
    keep = [i for i, c in enumerate(captions) if not _blank(c)]
    if len(keep) == len(captions):
        return None if captions else "skip"
    if not keep:
        return "skip"
    rec["captions"] = [captions[i] for i in keep]
    if task == "feature_text" and len(rec["starts"]) == len(rec["ends"]) == len(captions):
        rec["starts"] = [rec["starts"][i] for i in keep]
        rec["ends"] = [rec["ends"][i] for i in keep]
    return "trimmed"


def _check_task_values(path: Path, lineno: int, task: str | None, rec: dict) -> None:
    where = f"{path}:{lineno}"
    if task in ("retrieval", "caption", "image_text", "feature_text"):
        if not rec["captions"] or not all(isinstance(c, str) for c in rec["captions"]):
            raise AnnotationError(f"{where}: field 'captions' should be a non-empty list of str")
    if task == "mc":
        n = len(rec["options"])
        if n < 2 or not 0 <= rec["answer"] < n:
            raise AnnotationError(
                f"{where}: field 'answer' should index the {n} options, got {rec['answer']}"
            )
    if task == "feature_text":
        if not len(rec["captions"]) == len(rec["starts"]) == len(rec["ends"]):
            raise AnnotationError(
                f"{where}: fields 'captions', 'starts', 'ends' should have equal lengths"
            )
    if task == "steps":
        for step in rec["steps"]:
            if not isinstance(step, dict) or not {"text", "start", "end"} <= set(step):
                raise AnnotationError(
                    f"{where}: field 'steps' should hold objects with text, start, end"
                )


def write_jsonl(
    path: str | Path, records: Iterable[dict[str, Any]], *, overwrite: bool = False
) -> Path:
    """Write ``records`` as JSON Lines; refuses to replace an existing file unless asked."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{path} exists; vlbook never overwrites existing files (pass overwrite=True / "
            "--overwrite, or delete it)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def media_root(annotation: str | Path) -> Path:
    """The folder media paths in ``annotation`` are relative to (the file's folder)."""
    return Path(annotation).resolve().parent
