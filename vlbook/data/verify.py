"""Decode every video (or image) of a dataset once and write a quarantine list of bad files.

``vlbook-data verify ROOT`` reads every annotation file in ``ROOT`` (``*.jsonl``), opens each
distinct media file, decodes ``check_frames`` frames spread over the whole video (first and
last included; ``full=True`` decodes every frame) and writes ``ROOT/quarantine.jsonl``:
``{"path": <relative to ROOT>, "reason": ...}`` per bad file. Datasets read that list and drop
its files at load time, so a broken file costs one warning instead of a crash mid-epoch.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from vlbook.data.annotations import read_jsonl
from vlbook.data.datasets import QUARANTINE_FILE
from vlbook.data.sampling import uniform_indices
from vlbook.data.video import VideoDecodeError, open_video

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def check_media(
    path: str | Path, *, backend: str = "auto", check_frames: int = 8, full: bool = False
) -> str | None:
    """``None`` when ``path`` decodes, else the reason it does not."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        from PIL import Image

        try:
            if path.stat().st_size == 0:
                return "zero-byte file"
            with Image.open(path) as img:
                img.convert("RGB").load()
        except FileNotFoundError:
            return "file does not exist"
        except Exception as err:  # noqa: BLE001 - PIL raises many kinds
            return f"not a readable image ({type(err).__name__}: {err})"
        return None
    try:
        reader = open_video(path, backend)
        try:
            n = reader.info.num_frames
            indices = list(range(n)) if full else uniform_indices(n, min(check_frames, n))
            frames = reader.get(indices)
            if len(frames) != len(indices):
                return f"decoded {len(frames)} of {len(indices)} frames"
        finally:
            reader.close()
    except VideoDecodeError as err:
        return err.reason
    return None


def media_files(root: str | Path) -> list[Path]:
    """Distinct media files named by the annotation files of ``root``."""
    root = Path(root)
    seen: dict[str, Path] = {}
    for ann in sorted(root.glob("*.jsonl")):
        if ann.name == QUARANTINE_FILE:
            continue
        for rec in read_jsonl(ann):
            for key in ("video", "image"):
                if isinstance(rec.get(key), str):
                    p = (ann.parent / rec[key]).resolve()
                    seen.setdefault(str(p), p)
    return list(seen.values())


def verify_dataset(
    root: str | Path,
    *,
    backend: str = "auto",
    check_frames: int = 8,
    full: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Check every media file of ``root``; merge the bad ones into ``root/quarantine.jsonl``.

    Entries already in the list are never dropped (see :func:`write_quarantine`).
    """
    root = Path(root).resolve()
    files = media_files(root)
    bad = []
    for i, path in enumerate(files):
        reason = check_media(path, backend=backend, check_frames=check_frames, full=full)
        if reason is not None:
            try:
                rel = str(path.relative_to(root))
            except ValueError:
                rel = str(path)
            bad.append({"path": rel, "reason": reason})
        if progress:
            progress(i + 1, len(files))
    return write_quarantine(root, bad)


def _read_existing(path: Path) -> tuple[list[str], set[str]] | None:
    """The lines of an existing quarantine list and the paths they name; ``None`` when a
    line is not a ``{"path": ...}`` object (a hand edit that cannot be merged safely)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        return None
    paths: set[str] = set()
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            return None
        if not isinstance(rec, dict) or not isinstance(rec.get("path"), str):
            return None
        paths.add(rec["path"])
    return lines, paths


def _write_atomic(path: Path, lines: list[str]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.writelines(line + "\n" for line in lines)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_quarantine(root: str | Path, bad: list[dict]) -> Path:
    """Merge ``bad`` into ``root/quarantine.jsonl`` and return the file written.

    Every line already in the file is kept as it is (hand-added entries and entries for
    files that now decode included); findings whose path is not listed yet are appended.
    When the file holds a line that is not a ``{"path": ...}`` JSON object it is left
    untouched and this run's findings go to ``quarantine.jsonl.new`` beside it (returned,
    with a warning). Writes go to a temporary file renamed into place.
    """
    out = Path(root) / QUARANTINE_FILE
    new = [json.dumps(rec) for rec in bad]
    if not out.exists():
        _write_atomic(out, new)
        return out
    existing = _read_existing(out)
    if existing is None:
        side = out.with_name(out.name + ".new")
        _write_atomic(side, new)
        warnings.warn(
            f'{out} holds lines that are not {{"path": ...}} JSON objects (edited by hand?);'
            f" it was left unchanged and this run's {len(new)} finding(s) were written to "
            f"{side}: merge them by hand",
            stacklevel=2,
        )
        return side
    lines, paths = existing
    added = [json.dumps(rec) for rec in bad if rec["path"] not in paths]
    _write_atomic(out, lines + added)
    return out
