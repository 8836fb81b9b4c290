"""Atomic, checksummed checkpoints.

A checkpoint is a directory ``checkpoint-<step:08d>/`` holding

- ``state.pt``: model, optimiser, scheduler, grad-scaler state, step/epoch/position, config;
- ``rng-rank<r>.pt``: Python, NumPy and torch (CPU and CUDA) generator states of each process;
- ``manifest.json`` (written last): size and SHA-256 of every other file, and the step.

It is written into ``.tmp-checkpoint-<step>/`` and renamed into place, so a run killed while
saving leaves no directory that looks complete. :func:`verify_checkpoint` recomputes every
checksum; :func:`load_checkpoint` refuses (``CheckpointError``) anything that does not match,
and :func:`latest_checkpoint` skips, with a warning, newer checkpoints that are invalid.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlbook.serialization import NUMPY_ARRAY_TYPES, safe_load

MANIFEST = "manifest.json"
STATE = "state.pt"
PREFIX = "checkpoint-"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, partial or corrupt."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_name(step: int) -> str:
    return f"{PREFIX}{step:08d}"


def tmp_dir_for(root: Path, step: int) -> Path:
    return root / f".tmp-{checkpoint_name(step)}"


def rng_state() -> dict[str, Any]:
    """Every global generator state of this process (python, numpy, torch, cuda)."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def begin_checkpoint(root: str | Path, step: int) -> Path:
    """Create (empty) the temporary directory of the checkpoint of ``step``; main process only."""
    tmp = tmp_dir_for(Path(root), step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_rng(tmp: Path, rank: int) -> None:
    """Write this process's generator states into the temporary checkpoint directory."""
    torch.save(rng_state(), tmp / f"rng-rank{rank}.pt")


def write_state(tmp: Path, state: dict[str, Any]) -> None:
    torch.save(state, tmp / STATE)


def finish_checkpoint(root: str | Path, step: int, keep: int = 0) -> Path:
    """Write the manifest, rename the temporary directory into place, prune old checkpoints.

    ``keep`` > 0 keeps that many newest checkpoints (0 keeps all).
    """
    root = Path(root)
    tmp = tmp_dir_for(root, step)
    files = sorted(p for p in tmp.iterdir() if p.is_file())
    if not any(p.name == STATE for p in files):
        raise CheckpointError(f"{tmp}: no {STATE} was written")
    manifest = {
        "step": step,
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files},
    }
    with (tmp / MANIFEST).open("w") as handle:
        json.dump(manifest, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    final = root / checkpoint_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    if keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return final


def save_checkpoint(
    root: str | Path, step: int, state: dict[str, Any], *, rank: int = 0, keep: int = 0
) -> Path:
    """Single-process convenience: :func:`begin_checkpoint` + state + RNG + finish."""
    tmp = begin_checkpoint(root, step)
    write_state(tmp, state)
    write_rng(tmp, rank)
    return finish_checkpoint(root, step, keep)


def list_checkpoints(root: str | Path) -> list[Path]:
    """Checkpoint directories under ``root``, oldest first (temporary ones excluded)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def verify_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check a checkpoint's manifest and checksums; return the manifest or raise."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no {MANIFEST} (partial or foreign checkpoint)")
    try:
        manifest = json.loads(manifest_path.read_text())
        entries = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({err})") from err
    for name, entry in entries.items():
        file = path / name
        if not file.is_file():
            raise CheckpointError(f"{path}: file {name} listed in the manifest is missing")
        if file.stat().st_size != entry["bytes"]:
            raise CheckpointError(
                f"{file}: {file.stat().st_size} bytes, the manifest says {entry['bytes']}"
            )
        if _sha256(file) != entry["sha256"]:
            raise CheckpointError(f"{file}: SHA-256 does not match the manifest (corrupt)")
    if STATE not in entries:
        raise CheckpointError(f"{path}: the manifest lists no {STATE}")
    return manifest


def load_checkpoint(
    path: str | Path, *, rank: int = 0, trust: bool = False
) -> tuple[dict[str, Any], dict | None]:
    """Verify then load ``(state, rng_state_of_rank)``; raise :class:`CheckpointError` if bad.

    The RNG state is ``None`` when the checkpoint was written by fewer processes. Neither file
    may run pickled code: the state holds tensors and plain containers, the RNG file also numpy
    arrays (numpy's generator key); anything else raises
    :class:`~vlbook.serialization.UnsafeCheckpointError` unless ``trust=True``.
    """
    path = Path(path)
    verify_checkpoint(path)
    state = safe_load(path / STATE, trust=trust)
    rng_file = path / f"rng-rank{rank}.pt"
    rng = (safe_load(rng_file, allow=NUMPY_ARRAY_TYPES, trust=trust, map_location=None)
           if rng_file.is_file() else None)
    return state, rng


def latest_checkpoint(root: str | Path) -> Path | None:
    """The newest checkpoint under ``root`` that verifies; invalid newer ones are warned about."""
    for path in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping invalid checkpoint: {err}", stacklevel=2)
            continue
        return path
    return None
