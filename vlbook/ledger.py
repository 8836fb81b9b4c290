"""What each chapter must report to the reproduction ledger, and the check that it did.

The ledger page is generated from the ``ledger.json`` files the chapter notebooks write
(:func:`vlbook.results.save_ledger_rows`). This module is its specification: for every paper
chapter, the paper table rows the chapter touches, as ``(paper, table, row, metric)`` keys.
A chapter run must write every one of them at every scale — with status ``not run`` when the
scale does not measure it — so that the page never drops a row silently. The book build and the
test-suite call :func:`check_ledger`.
"""

from __future__ import annotations

import json
from pathlib import Path

from vlbook.paths import results_root

RowKey = tuple[str, str, str, str]  # (paper, table, row, metric)


def _rows(paper: str, table: str, metric: str, rows: tuple[str, ...]) -> tuple[RowKey, ...]:
    return tuple((paper, table, row, metric) for row in rows)


_VLM_TABLE8 = ("MMM 0%", "MMM 30%", "MMM 50%", "MMM 70%", "MFM-MLM loss")
_ALLINONE_VARIANTS = ("allinone_tiny", "allinone_small", "allinone_base")
_TABLE8A = ("single frame", "time average", "time average ‡", "channel shift", "flatten",
            "token rolling")
_SIMVTP_TABLE5 = ("MSM", "VTC", "VTM", "MSM + VTC", "MSM + VTM", "VTC + VTM",
                  "MSM + VTC + VTM")
_EVILM_TABLE8 = ("text_embeddings", "text_encoder", "text_projection", "token_type",
                 "video_encoder", "video_projection", "decoder", "pooler", "vtm_head")

#: The rows each paper chapter writes (the spec; values come from the runs).
EXPECTED_ROWS: dict[str, tuple[RowKey, ...]] = {
    "vlm": (
        ("VLM", "Table 1", "VLM", "params (M)"),
        ("VLM", "Table 3", "text-video retrieval (synthetic)", "R@1"),
        ("VLM", "Table 4", "segmentation (synthetic)", "frame accuracy"),
        ("VLM", "Table 5", "step localisation zero-shot (synthetic)", "recall"),
        ("VLM", "Table 5", "step localisation supervised (synthetic)", "recall"),
        ("VLM", "Table 6", "multiple choice (synthetic)", "accuracy"),
        ("VLM", "Table 7", "captioning (synthetic)", "CIDEr (x100)"),
        *_rows("VLM", "Table 8", "R@1", _VLM_TABLE8),
        *_rows("VLM", "Table 9", "CIDEr", _VLM_TABLE8),
    ),
    "simvtp": (
        ("SimVTP", "Sec. 4.1 (VideoMAE Table 1)", "ViT-B shared encoder", "params (M)"),
        ("SimVTP", "Table 4d", "text w/ [M] vs w/o [M]", "encoder FLOPs ratio"),
        ("SimVTP", "Sec. 3", "visible-only encoder", "FLOPs saving (x)"),
        *_rows("SimVTP", "Table 5", "MSR-VTT t2v R@1", _SIMVTP_TABLE5),
        ("SimVTP", "Figure 3 (top)", "best text mask ratio", "ratio"),
        ("SimVTP", "Table 5 (VTC)", "zero-shot t2v retrieval after pre-training", "R@1 (%)"),
        ("SimVTP", "Table 3 (MSR-VTT MC)",
         "zero-shot multiple choice, through the VTM head (paper)", "accuracy (%)"),
        ("SimVTP", "Table 3 (MSR-VTT MC)", "zero-shot multiple choice, through the VTC features",
         "accuracy (%)"),
        ("SimVTP", "Sec. 4.4", "held-out masked words", "accuracy (%)"),
    ),
    "umt": (
        ("UMT", "Table 5", "umt_base", "params (M)"),
        ("UMT", "Table 5", "umt_base", "GFLOPs 8x224"),
        ("UMT", "Table 5", "umt_large", "params (M)"),
        ("UMT", "Table 5", "umt_large", "GFLOPs 8x224"),
        ("UMT", "Table 1", "UTA vs MAE", "SSV2 (toy: motion probe)"),
        ("UMT", "Table 2", "semantic vs tube/random", "K400 (toy: teacher cosine)"),
        ("UMT", "Figure 4", "0.8 vs 0.95 masking", "K400 (toy: teacher cosine)"),
        ("UMT", "Table 3", "student vs fine-tuned CLIP-S", "SSV2 (toy: motion FT)"),
        ("UMT", "Table 7", "zero-shot t2v", "R@1 (toy: synthetic)"),
        ("UMT", "Sec. 4.1", "pre-training run", "stage 1 + 2 full schedules"),
    ),
    "allinone": (
        *_rows("All-in-one", "Table 1", "params (M)", _ALLINONE_VARIANTS),
        *_rows("E-ViLM", "Table 1", "GFLOPs", _ALLINONE_VARIANTS),
        ("All-in-one", "Table 4a", "zero-shot MC (synthetic)", "accuracy"),
        *_rows("All-in-one", "Table 8a", "zero-shot MC (LSMDC)", _TABLE8A),
    ),
    "evilm": (
        *_rows("E-ViLM", "Table 8", "params", _EVILM_TABLE8),
        ("E-ViLM", "Table 8", "total", "params (M)"),
        *_rows("E-ViLM", "Table 1", "GFLOPs (MACs)", ("evilm", *_ALLINONE_VARIANTS)),
        ("E-ViLM", "Table 5", "VTM+MLM+MVM vs VTM+MLM", "qa_probe"),
        ("E-ViLM", "Table 5", "VTM+MLM+MVM vs VTM+MLM", "mc_accuracy"),
        ("E-ViLM", "Table 5", "VTM vs no pre-training", "mc_accuracy"),
        ("E-ViLM", "Figure 2", "MVM gain, small vs large width", "qa_probe gain"),
        ("E-ViLM", "Table 6", "focal vs BCE tokenizer", "VOC. RATE"),
        ("E-ViLM", "Table 6", "semantic (focal) vs pixel tokenizer", "QA"),
        ("E-ViLM", "Table 1", "MSRVTT-QA", "accuracy / recall"),
        ("E-ViLM", "Table 2", "MSRVTT t2v R@1", "accuracy / recall"),
        ("E-ViLM", "Table 3", "HMDB51 linear probe", "accuracy / recall"),
    ),
}


class LedgerError(RuntimeError):
    """A chapter's ledger file lacks rows the ledger expects."""


def ledger_path(chapter: str, scale: str, root: Path | None = None) -> Path:
    return (root or results_root()) / chapter / scale / "ledger.json"


def written_rows(chapter: str, scale: str, root: Path | None = None) -> list[dict]:
    """The rows a chapter run wrote (``FileNotFoundError`` naming the notebook if none)."""
    path = ledger_path(chapter, scale, root)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run notebooks/{chapter}.ipynb at scale={scale!r} first")
    return json.loads(path.read_text())["data"]


def _key(row: dict) -> RowKey:
    return (row["paper"], row["table"], row["row"], row["metric"])


def missing_rows(chapter: str, scale: str, root: Path | None = None) -> list[RowKey]:
    """Expected rows of ``chapter`` its ``scale`` run did not write, in the spec's order."""
    have = {_key(r) for r in written_rows(chapter, scale, root)}
    return [key for key in EXPECTED_ROWS.get(chapter, ()) if key not in have]


def check_ledger(chapters: list[str], scale: str, root: Path | None = None) -> None:
    """Raise :class:`LedgerError` naming each executed paper chapter whose ledger file is
    missing or lacks expected rows; chapters without a spec (intro, capstone) are skipped."""
    problems = []
    for chapter in chapters:
        if chapter not in EXPECTED_ROWS:
            continue
        try:
            missing = missing_rows(chapter, scale, root)
        except FileNotFoundError as err:
            problems.append(f"{chapter}: {err}")
            continue
        if missing:
            listed = "; ".join(" / ".join(key) for key in missing)
            problems.append(f"{chapter} ({ledger_path(chapter, scale, root)}) lacks "
                            f"{len(missing)} expected row(s): {listed}")
    if problems:
        raise LedgerError("reproduction ledger incomplete:\n  " + "\n  ".join(problems))


__all__ = ["EXPECTED_ROWS", "LedgerError", "RowKey", "check_ledger", "ledger_path",
           "missing_rows", "written_rows"]
