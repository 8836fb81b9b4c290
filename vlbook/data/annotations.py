"""vlbook's unified annotation format: JSON Lines, one record per line, per task and split.

Media paths (``video``, ``image``, ``features``) are relative to the folder that holds the
annotation file (a dataset's root), so a toy run and a full run differ only in the annotation
file they read. :data:`TASK_FIELDS` lists what each task requires; reading checks every record
and fails at load time naming file, line and field.
"""

from __future__ import annotations

import json
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


def read_jsonl(path: str | Path, task: str | None = None) -> list[dict[str, Any]]:
    """Read a JSON Lines annotation file, checking the fields ``task`` requires.

    Blank lines are ignored. Raises :class:`AnnotationError` on the first invalid line.
    """
    path = Path(path)
    if task is not None and task not in TASK_FIELDS:
        raise ValueError(f"unknown annotation task {task!r}; known: {sorted(TASK_FIELDS)}")
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    required = TASK_FIELDS.get(task, {}) if task else {}
    records = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
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
            _check_task_values(path, lineno, task, rec)
            records.append(rec)
    return records


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
