"""Result files the chapters write and the book's reproduction ledger reads.

A chapter run at some scale writes JSON files under ``results_root()/<chapter>/<scale>/``.
Rows for the reproduction ledger go to ``ledger.json`` there: each row pairs the paper's number
with ours, the scale it was measured at and an honest status. The ledger page is generated
from these files, never typed by hand.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlbook.ledger import expected_rows
from vlbook.paths import results_root

STATUSES = ("matches", "direction reproduced", "differs", "not run")
SCALE_ORDER = ("full", "toy", "smoke", "exact")


@dataclass
class LedgerRow:
    """One paper table row as the book touches it."""

    paper: str
    table: str
    row: str
    metric: str
    paper_value: float | str | None
    ours: float | str | None
    scale: str
    status: str
    note: str = ""

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status {self.status!r} is not one of {STATUSES}")


# --------------------------------------------------------------------------------------------
# verdicts: is a toy-scale difference larger than its noise?
# --------------------------------------------------------------------------------------------

#: How many standard errors a difference must exceed before a ledger row claims a direction
#: (about a one-sided 2 % test under the normal approximation).
Z_THRESHOLD = 2.0


def binomial_se(percent: float, n: int) -> float:
    """Standard error, in percentage points, of an accuracy (or recall) in percent measured on
    ``n`` independent items: ``100 * sqrt(p (1 - p) / n)``."""
    if n <= 0:
        raise ValueError(f"binomial_se: n={n}; expected the number of evaluated items (> 0)")
    p = min(max(percent / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def above_chance(ours: float, chance: float, n: int, z: float = Z_THRESHOLD) -> bool:
    """``ours`` (%) exceeds ``chance`` (%) by more than ``z`` standard errors of an accuracy at
    chance on ``n`` items (the one-sided binomial test, normal approximation)."""
    return ours - chance > z * max(binomial_se(chance, n), 1e-9)


def _difference_se(a: float, b: float, n_a: int | None, n_b: int | None,
                   se_a: float | None, se_b: float | None) -> float:
    if se_a is None:
        if n_a is None:
            raise ValueError("give the item count n_a (accuracies) or the standard error se_a")
        se_a = binomial_se(a, n_a)
    if se_b is None:
        n_b = n_b or n_a
        if n_b is None:
            raise ValueError("give the item count n_b (accuracies) or the standard error se_b")
        se_b = binomial_se(b, n_b)
    return math.hypot(se_a, se_b)


def paired_difference(a: Any, b: Any, scale: float = 1.0) -> tuple[float, float]:
    """Mean of the per-item differences ``a_i - b_i`` of two systems scored on the same items,
    and its paired standard error ``std(a - b) / sqrt(n)`` (times ``scale``, e.g. 100 for
    per-item hits in percentage points). Scoring both on the same items removes what the
    items share (a hard clip is hard for both), so this error is far below that of either
    mean when the two agree on most items; infinite for a single item (no estimate)."""
    import torch

    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    if a.shape != b.shape or a.dim() != 1 or len(a) == 0:
        raise ValueError(f"paired_difference: two score vectors over the same items expected, "
                         f"got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    d = scale * (a - b)
    se = float(d.std() / math.sqrt(len(d))) if len(d) > 1 else math.inf
    return float(d.mean()), se


def clearly_greater(a: float, b: float, n_a: int | None = None, n_b: int | None = None, *,
                    se_a: float | None = None, se_b: float | None = None,
                    z: float = Z_THRESHOLD) -> bool:
    """``a`` exceeds ``b`` by more than ``z`` standard errors of their difference.

    For accuracies in percent give the item counts ``n_a`` and ``n_b`` (default ``n_a``); for
    other means (CIDEr, cosine similarity) give their standard errors ``se_a`` and ``se_b``.
    The errors are combined as if the two were independent; two models scored on the same
    items are positively correlated, so this is the conservative (harder to pass) choice.
    """
    return a - b > z * max(_difference_se(a, b, n_a, n_b, se_a, se_b), 1e-9)


def difference_note(a: float, b: float, n_a: int | None = None, n_b: int | None = None, *,
                    se_a: float | None = None, se_b: float | None = None) -> str:
    """``"+3.1 ± 1.4 (1 s.e.)"``: a difference with its standard error, for a ledger note."""
    se = _difference_se(a, b, n_a, n_b, se_a, se_b)
    return f"{a - b:+.3g} ± {se:.2g} (1 s.e.)"


def trend_status(holds: bool, scale: str) -> str:
    """Ledger status of a trend check: ``not run`` at ``smoke`` scale (nothing is trained
    there), else ``direction reproduced`` when the paper's claimed direction ``holds`` — which
    callers decide with :func:`above_chance` / :func:`clearly_greater`, so a difference inside
    the noise reads ``differs`` — and ``differs`` otherwise."""
    if scale == "smoke":
        return "not run"
    return "direction reproduced" if holds else "differs"


def verdict_markdown(rows: list[LedgerRow]) -> str:
    """A chapter's trained ledger rows as a Markdown summary for its "what to take away"
    section: which of the paper's directions this run reproduced and which it did not, each
    with our value beside the paper's — computed from the rows, so the text cannot say what
    the run did not show. Exact rows (counts) and rows not run are summarised by number."""
    trained = [r for r in rows if r.scale not in ("exact", "full") and r.status != "not run"]
    exact = [r for r in rows if r.scale == "exact"]
    skipped = [r for r in rows if r.status == "not run"]

    def item(r: LedgerRow) -> str:
        return (f"- **{r.table}, {r.row}** ({r.metric}): ours {_fmt(r.ours)}, paper "
                f"{_fmt(r.paper_value)}")

    out = []
    if trained:
        scale = trained[0].scale
        good = [r for r in trained if r.status in ("direction reproduced", "matches")]
        bad = [r for r in trained if r.status == "differs"]
        out.append(f"At `{scale}` scale this run reproduces the paper's direction in "
                   f"{len(good)} of {len(trained)} trained rows, beyond two standard errors:")
        out += [item(r) for r in good] or ["- none"]
        if bad:
            out.append("")
            out.append("It does not in these (each row's note in the table above gives the "
                       "measured difference and its error):")
            out += [item(r) for r in bad]
    if exact:
        n_ok = sum(r.status == "matches" for r in exact)
        out.append("")
        out.append(f"Exact rows (counts of parameters and operations): {n_ok} of {len(exact)} "
                   "match the paper.")
    if skipped:
        out.append("")
        out.append(f"{len(skipped)} rows need the paper's data or scale and were not run here.")
    return "\n".join(out)


def results_dir(chapter: str, scale: str) -> Path:
    """``results_root()/<chapter>/<scale>``, created if needed."""
    path = results_root() / chapter / scale
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_results(chapter: str, scale: str, name: str, data: Any) -> Path:
    """Write ``data`` as ``<name>.json`` for the chapter and scale, with a timestamp."""
    path = results_dir(chapter, scale) / f"{name}.json"
    payload = {"chapter": chapter, "scale": scale, "written": time.strftime("%Y-%m-%d %H:%M:%S"),
               "data": data}
    path.write_text(json.dumps(payload, indent=2, default=_jsonable))
    return path


def load_results(chapter: str, scale: str, name: str) -> Any:
    """Read back what :func:`save_results` wrote; a clear error if it is missing."""
    path = results_root() / chapter / scale / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run notebooks/{chapter}.ipynb at scale={scale!r} first"
        )
    return json.loads(path.read_text())["data"]


def save_ledger_rows(chapter: str, scale: str, rows: list[LedgerRow]) -> Path:
    """Write the ledger rows of a chapter run."""
    return save_results(chapter, scale, "ledger", [asdict(r) for r in rows])


@dataclass
class Ledger:
    rows: list[LedgerRow] = field(default_factory=list)


def _read_rows(root: Path, scales: tuple[str, ...] | None) -> list[tuple[str, LedgerRow]]:
    """``(chapter, row)`` of every ledger file under ``root`` (larger scales first; only
    ``scales`` when given); an ``exact`` row written by several runs is kept once."""
    order = {s: i for i, s in enumerate(SCALE_ORDER)}
    out: list[tuple[str, LedgerRow]] = []
    seen_exact: set[tuple[str, str, str, str]] = set()
    for path in sorted(root.glob("*/*/ledger.json"),
                       key=lambda p: (order.get(p.parent.name, 9), str(p))):
        if scales is not None and path.parent.name not in scales:
            continue
        for r in json.loads(path.read_text())["data"]:
            row = LedgerRow(**r)
            key = (row.paper, row.table, row.row, row.metric)
            if row.scale == "exact":
                if key in seen_exact:
                    continue
                seen_exact.add(key)
            out.append((path.parent.parent.name, row))
    return out


def collect_ledger(root: Path | None = None, scales: tuple[str, ...] | None = None
                   ) -> list[LedgerRow]:
    """All ledger rows under the results root, larger scales first.

    ``scales``: read only the runs of those scales (``results/<chapter>/<scale>/``; default
    every run). An ``exact`` row (parameter counts, FLOPs) written by several runs is kept once.
    """
    rows = [row for _, row in _read_rows(root or results_root(), scales)]
    order = {s: i for i, s in enumerate(SCALE_ORDER)}
    rows.sort(key=lambda r: (r.paper, r.table, r.row, order.get(r.scale, 99)))
    return rows


def _expected_but_absent(rows: list[LedgerRow], root: Path, scales: tuple[str, ...] | None
                         ) -> list[LedgerRow]:
    """"not run" rows for every expected row no run wrote (chapters never executed too)."""
    have = {(r.paper, r.table, r.row, r.metric) for r in rows}
    absent = []
    for chapter, keys in expected_rows().items():
        ran = [p.parent.name for p in root.glob(f"{chapter}/*/ledger.json")
               if scales is None or p.parent.name in scales]
        note = (f"not written by the {'/'.join(sorted(ran))} run of notebooks/{chapter}.ipynb"
                if ran else f"notebooks/{chapter}.ipynb has not been run")
        absent += [LedgerRow(*key, None, None, "—", "not run", note)
                   for key in keys if key not in have]
    return absent


def _fmt(value: float | str | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        if math.isnan(value):
            return "—"
        return f"{value:,.2f}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


#: Status markers of the ledger page (a colour-blind-safe symbol with each word).
STATUS_MARKS: dict[str, str] = {"matches": "🟢", "direction reproduced": "🔵",
                                "differs": "🟠", "not run": "⚪"}


def _rows_by_chapter(root: Path, scales: tuple[str, ...] | None) -> dict[str, list[LedgerRow]]:
    """The rows each chapter wrote (``results/<chapter>/<scale>/ledger.json``) plus its expected
    rows no run wrote, chapters in book order; an ``exact`` row written twice is kept once."""
    from vlbook.chapters import chapters

    written: dict[str, list[LedgerRow]] = {}
    for chapter, row in _read_rows(root, scales):
        written.setdefault(chapter, []).append(row)
    order = {s: i for i, s in enumerate(SCALE_ORDER)}
    every = list(written.values())
    absent = _expected_but_absent([r for rows in every for r in rows], root, scales)
    spec = expected_rows()
    for row in absent:
        owner = next((c for c, keys in spec.items()
                      if (row.paper, row.table, row.row, row.metric) in keys), row.paper)
        written.setdefault(owner, []).append(row)
    names = [c.name for c in chapters()]
    ordered = {n: written[n] for n in names if n in written}
    ordered.update({n: rows for n, rows in sorted(written.items()) if n not in ordered})
    for rows in ordered.values():
        rows.sort(key=lambda r: (r.paper, r.table, r.row, order.get(r.scale, 99)))
    return ordered


def _chapter_spec(name: str) -> Any:
    from vlbook.chapters import chapters

    return next((c for c in chapters() if c.name == name), None)


def _chapter_title(name: str, short: bool = False) -> str:
    """The chapter's title (``short``: the part before its colon, e.g. "VLM")."""
    spec = _chapter_spec(name)
    title = spec.title if spec is not None else name
    return title.split(":")[0].strip() if short else title


def ledger_counts(root: Path | None = None, scales: tuple[str, ...] | None = None
                  ) -> dict[str, dict[str, int]]:
    """``{chapter title: {status: rows}}`` in book order (the ledger page's summary)."""
    out = {}
    for name, rows in _rows_by_chapter(root or results_root(), scales).items():
        out[_chapter_title(name, short=True)] = {s: sum(r.status == s for r in rows)
                                                 for s in STATUSES}
    return out


def plot_ledger_counts(counts: dict[str, dict[str, int]], path: Path) -> Path:
    """Stacked horizontal bars of status per chapter, saved to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    colours = {"matches": "#1b9e77", "direction reproduced": "#377eb8", "differs": "#e6882e",
               "not run": "#bdbdbd"}
    titles = list(counts)[::-1]
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(titles) + 1.2))
    left = [0] * len(titles)
    for status in STATUSES:
        values = [counts[t][status] for t in titles]
        ax.barh(titles, values, left=left, color=colours[status], label=status)
        left = [a + b for a, b in zip(left, values)]
    ax.set_xlabel("ledger rows")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.35 if len(titles) < 4 else -0.12),
              ncol=4, frameon=False, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def ledger_intro(extra: str = "") -> list[str]:
    """The ledger page's title and opening paragraph (markdown lines), ``extra`` appended."""
    return [
        "# Reproduction ledger",
        "",
        "Every number below was written by a chapter notebook into `results/` when the book was"
        " built; this page is generated from those files. *Scale* says what was compared:"
        " `exact` rows (parameter counts, FLOPs) compare the same quantity; `toy` rows compare a"
        " trend on the synthetic benchmark with the paper's real-data number, so only the"
        " *direction* can match; `full` rows come from a run of the paper's configuration."
        " A row marked *not run* is one the chapter covers but this build did not measure."
        + (f" {extra}" if extra else ""),
        "",
    ]


def ledger_markdown(root: Path | None = None, scales: tuple[str, ...] | None = None,
                    chart: str | None = None) -> str:
    """The reproduction ledger page as MyST markdown: a status count per chapter (and the
    ``chart`` image when given), then one section per chapter in book order with the rows it
    wrote — paper value and ours side by side, status marked, each note numbered below the
    table so it is readable. A row about another paper's table (E-ViLM's FLOPs of All-in-one)
    stays with the chapter that measured it and names that paper. Expected rows no run wrote
    (:func:`vlbook.ledger.expected_rows`) are listed as ``not run``, never dropped."""
    root = root or results_root()
    by_chapter = _rows_by_chapter(root, scales)
    lines = ledger_intro()
    if not by_chapter:
        lines.append("No chapter has written ledger rows yet.")
        return "\n".join(lines) + "\n"
    if chart:
        lines += [f"![Ledger rows per chapter by status]({chart})", ""]
    lines += ["| chapter | " + " | ".join(f"{STATUS_MARKS[s]} {s}" for s in STATUSES)
              + " | rows |",
              "| --- | " + " | ".join("---:" for _ in STATUSES) + " | ---: |"]
    titles = {n: _chapter_title(n) for n in by_chapter}
    for name, rows in by_chapter.items():
        counts = [sum(r.status == s for r in rows) for s in STATUSES]
        lines.append(f"| {_chapter_title(name, short=True)} | " + " | ".join(map(str, counts))
                     + f" | {len(rows)} |")
    for name, rows in by_chapter.items():
        spec = _chapter_spec(name)
        own = spec.ledger_rows[0][0] if spec is not None else None
        lines += ["", f"## {titles[name]}", "",
                  "| table | row | metric | paper | ours | scale | status | note |",
                  "| --- | --- | --- | ---: | ---: | --- | --- | ---: |"]
        notes: list[str] = []
        for r in rows:
            table = r.table if own is None or r.paper == own else f"{r.paper} {r.table}"
            ref = ""
            if r.note:
                notes.append(r.note)
                ref = f"[{len(notes)}]"
            cells = [table, r.row, r.metric, _fmt(r.paper_value), _fmt(r.ours), r.scale,
                     f"{STATUS_MARKS.get(r.status, '')} {r.status}", ref]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
        if notes:
            lines += ["", "Notes:", ""]
            lines += [f"{i}. {n}" for i, n in enumerate(notes, start=1)]
    return "\n".join(lines) + "\n"


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")
