"""Decode every video (or image) of a dataset once and write a quarantine list of bad files.

``vlbook-data verify ROOT`` reads every annotation file in ``ROOT`` (``*.jsonl``), opens each
distinct media file, decodes ``check_frames`` frames spread over the whole video (first and
last included; ``full=True`` decodes every frame) and writes ``ROOT/quarantine.jsonl``:
``{"path": <relative to ROOT>, "reason": ...}`` per bad file. Datasets read that list and drop
its files at load time, so a broken file costs one warning instead of a crash mid-epoch.
"""

from __future__ import annotations

import json
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
    """Check every media file of ``root``; write and return ``root/quarantine.jsonl``."""
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
    out = root / QUARANTINE_FILE
    with out.open("w", encoding="utf-8") as fh:
        for rec in bad:
            fh.write(json.dumps(rec) + "\n")
    return out
