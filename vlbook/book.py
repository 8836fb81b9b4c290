"""Build the book: synthetic data → papermill-executed notebooks → Jupyter Book HTML → check.

``python -m vlbook.book build --scale toy`` is what ``python3 tasks.py book`` runs. The sources
in ``book/`` and ``notebooks/`` are staged into ``build/book-<scale>/``, every notebook is
executed there once by papermill (the book build itself executes nothing), generated pages are
written, Jupyter Book 1 renders HTML, and :func:`check_html` opens the result in headless
Chromium.

Jupyter Book is pinned below 2: version 2 fetches its theme from a web service at build time
and so cannot build offline; 1.x is pure Python (Sphinx) and builds with no network.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html.parser
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from vlbook.chapters import chapters as paper_chapters
from vlbook.ledger import check_ledger
from vlbook.paths import REPO_ROOT

BOOK_SRC = REPO_ROOT / "book"
NOTEBOOKS = REPO_ROOT / "notebooks"

#: Chapters that are not one paper: the foundations before the papers, the comparison after.
FRONT_CHAPTERS: tuple[tuple[str, str], ...] = (("intro", "Foundations"),)
BACK_CHAPTERS: tuple[tuple[str, str], ...] = (("capstone", "Putting them side by side"),)


def chapter_order() -> list[tuple[str, str]]:
    """Every chapter in reading order as ``(notebook stem, part)``: the intro, the registered
    paper chapters in their :attr:`~vlbook.chapters.Chapter.order`, the capstone."""
    papers = [(c.name, c.part) for c in paper_chapters()]
    return [*FRONT_CHAPTERS, *papers, *BACK_CHAPTERS]


def existing_chapters(notebooks: Path = NOTEBOOKS) -> list[tuple[str, str]]:
    """The chapters of :func:`chapter_order` whose notebook exists, in order."""
    return [(stem, part) for stem, part in chapter_order()
            if (notebooks / f"{stem}.ipynb").exists()]


def write_toc(stage: Path, chapters: list[tuple[str, str]]) -> Path:
    """Write ``_toc.yml``: front page, chapters grouped by part, ledger, references."""
    lines = ["format: jb-book", "root: index", "parts:"]
    current = None
    for stem, part in chapters:
        if part != current:
            lines += [f"  - caption: {part}", "    chapters:"]
            current = part
        lines.append(f"      - file: chapters/{stem}")
    lines += [
        "  - caption: Reference",
        "    chapters:",
        "      - file: ledger",
        "      - file: paper_vs_code",
        "      - file: benchmarks",
        "      - file: references",
    ]
    path = stage / "_toc.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ledger(stage: Path, scale: str | None = None) -> Path:
    """The reproduction ledger page, generated from the result files chapters write: the runs
    at ``scale`` (and ``full`` runs, when a cluster has written them); every run when None.
    The page is :func:`vlbook.report.ledger_page`: a status chart and counts at the top, then
    each chapter's rows as its paper-vs-ours table."""
    from vlbook.report import ledger_page, plot_ledger_status
    from vlbook.results import ledger_counts

    scales = None if scale is None else (scale, "full")
    chart = None
    counts = ledger_counts(scales=scales)
    if counts:
        plot_ledger_status(counts, stage / "ledger_status.png")
        chart = "ledger_status.png"
    path = stage / "ledger.md"
    path.write_text(ledger_page(scales=scales, chart=chart))
    return path


def roofline_figure(md: Path, stage: Path) -> str | None:
    """The roofline figure of a ``roof`` benchmark result ``md`` (``roof-<device>.md``), copied
    into ``stage/bench/``, or drawn there from its JSON (:func:`vlbook.bench.roof.plot_roofline`)
    when the benchmark wrote no PNG; the path relative to ``stage``, None for another suite."""
    source = md.with_suffix(".json")
    if not source.exists():
        return None
    try:
        payload = json.loads(source.read_text())
    except json.JSONDecodeError:
        return None
    if payload.get("suite") != "roof" or not payload.get("roof"):
        return None
    target = stage / "bench" / md.with_suffix(".png").name
    target.parent.mkdir(parents=True, exist_ok=True)
    png = md.with_suffix(".png")
    if png.exists() and png.stat().st_size > 0:
        shutil.copy2(png, target)
    else:
        from vlbook.bench.roof import plot_roofline

        plot_roofline(payload, target)
    return target.relative_to(stage).as_posix()


def write_benchmarks(stage: Path) -> Path:
    """The benchmarks page: every ``results_root()/bench/*.md`` written by ``vlbook.bench``,
    with the roofline figure after each ``roof`` result (:func:`roofline_figure`)."""
    from vlbook.paths import results_root

    files = sorted((results_root() / "bench").glob("*.md"))
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m vlbook.bench SUITE` (see `python -m vlbook.bench --help`); each"
        " section states the machine it was measured on. Timings are measurements, not"
        " tests: rerun the command on your machine to compare.",
        "",
    ]
    if not files:
        lines.append("No benchmark has been run yet: `python -m vlbook.bench data` is a start.")
    for f in files:
        text = f.read_text().strip()
        # demote the file's headings one level below the page title
        text = "\n".join("#" + ln if ln.startswith("#") else ln for ln in text.splitlines())
        lines += [text, ""]
        figure = roofline_figure(f, stage)
        if figure:
            lines += [
                f"```{{figure}} {figure}",
                ":alt: Achieved GFLOP/s of each model's training step beside the measured "
                "matmul roofs",
                ":width: 90%",
                "",
                "Each bar is a model's training step (forward, backward and AdamW) at the "
                "GFLOP/s its matrix products reach; each line is a roof this machine's matmul "
                "probe measured (the best path at the best shape). A bar's distance below a line "
                "is time spent outside the matrix products, or in them below their peak.",
                "```",
                "",
            ]
    path = stage / "benchmarks.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_teaser(stage: Path) -> Path:
    """The front page's figure: the five architecture diagrams (:mod:`vlbook.diagrams`, drawn
    from the paper-size configs); fails if a diagram's labels overlap or overflow."""
    from vlbook import diagrams

    for paper in diagrams.PAPERS:
        problems = diagrams.check_layout(diagrams.draw_architecture(paper))
        if problems:
            raise diagrams.LayoutError(f"{paper} diagram: " + "; ".join(problems))
    return diagrams.save_teaser(stage / "architectures.png")


def _mathjax(stage: Path, cache: Path) -> str | None:
    """Install MathJax 3 from npm (once) and copy it into the staged book; None if impossible."""
    target = cache / "node_modules" / "mathjax" / "es5"
    if not target.exists():
        npm = shutil.which("npm")
        if npm is None:
            return None
        cache.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(
            [npm, "install", "--prefix", str(cache), "--no-audit", "--no-fund", "mathjax@3"],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0 or not target.exists():
            print(f"warning: npm could not install mathjax@3: {proc.stderr.strip()[-300:]}")
            return None
    # Sphinx copies the folders of html_static_path into _static/ and resolves a relative
    # mathjax_path against _static/. (The book's own _static/ is not used: Jupyter Book adds a
    # script tag for every .js file found there.)
    dest = stage / "_mathjax_static" / "mathjax"
    if not dest.exists():
        shutil.copytree(target, dest)
    return "mathjax/tex-chtml.js"


def stage_book(scale: str, stage: Path) -> Path:
    """Copy the book's sources into ``stage`` (fresh, but keeping a previous ``_build``)."""
    stage.mkdir(parents=True, exist_ok=True)
    for item in stage.iterdir():
        if item.name in ("_build", "_mathjax_static"):
            continue
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    for item in BOOK_SRC.iterdir():
        if item.name.startswith(("_build", ".")) or item.name == "_toc.yml":
            continue
        dest = stage / item.name
        shutil.copytree(item, dest) if item.is_dir() else shutil.copy2(item, dest)
    (stage / "chapters").mkdir(exist_ok=True)
    return stage


def execute_chapters(
    scale: str,
    stage: Path,
    chapters: list[tuple[str, str]],
    executed: dict[str, Path] | None = None,
    log_output: bool = False,
) -> dict[str, float]:
    """Run each chapter notebook with papermill at ``scale``; returns seconds per chapter.

    ``executed`` maps notebook stems to copies that already ran at this scale (the test-suite
    passes the notebooks it executed), which are used instead of running them again.
    Each executed copy is then tidied for its page (:func:`vlbook.notebook.tidy_executed_notebook`:
    the parameters shown once, no widget outputs).
    """
    from vlbook.notebook import execute_notebook, tidy_executed_notebook

    timings = {}
    for stem, _ in chapters:
        src = NOTEBOOKS / f"{stem}.ipynb"
        out = stage / "chapters" / f"{stem}.ipynb"
        if executed and stem in executed:
            shutil.copy2(executed[stem], out)
        else:
            print(f"[book] executing {src.name} at scale={scale} ...", flush=True)
            start = time.time()
            execute_notebook(src, out, {"scale": scale}, cwd=NOTEBOOKS, log_output=log_output)
            timings[stem] = time.time() - start
            print(f"[book]   done in {timings[stem]:.0f} s", flush=True)
        tidy_executed_notebook(out)
    return timings


def build(
    scale: str = "toy",
    stage: Path | None = None,
    check: bool = True,
    executed: dict[str, Path] | None = None,
) -> Path:
    """Build the book at ``scale``; returns the HTML folder."""
    stage = stage or REPO_ROOT / "build" / f"book-{scale}"
    chapters = existing_chapters()
    stage_book(scale, stage)
    timings = execute_chapters(scale, stage, chapters, executed)
    check_ledger([stem for stem, _ in chapters], scale)  # a chapter that dropped a row fails
    write_toc(stage, chapters)
    write_ledger(stage, scale)
    write_benchmarks(stage)
    write_teaser(stage)
    config = stage / "_config.yml"
    mathjax = _mathjax(stage, REPO_ROOT / "build" / "npm")
    text = config.read_text()
    if mathjax:
        text = text.replace(
            "# mathjax_path: set by vlbook.book",
            f"mathjax_path: {mathjax}\n    html_static_path: [_mathjax_static]",
        )
    else:
        print("warning: MathJax could not be installed from npm; equations need the CDN online")
    config.write_text(text)
    jb = Path(sys.executable).parent / "jupyter-book"
    cmd = [
        str(jb if jb.exists() else "jupyter-book"), "build", str(stage), "--builder", "html",
        "-W", "--keep-going",
    ]
    print("[book] " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    html_dir = stage / "_build" / "html"
    (stage / "_build" / "timings.json").write_text(json.dumps(timings, indent=2))
    if check:
        report = check_html(html_dir, [f"chapters/{c}.html" for c, _ in chapters])
        print(report.summary())
    print(f"[book] HTML: {html_dir / 'index.html'}")
    return html_dir


# --------------------------------------------------------------------------------------
# checking the HTML in a real browser
# --------------------------------------------------------------------------------------


class _ImgParser(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            src = dict(attrs).get("src")
            if src:
                self.srcs.append(src)


@dataclass
class HtmlReport:
    pages: dict[str, dict]
    screenshots: list[Path]
    browser: str | None
    #: :func:`chapter_page_problems` when they only warn (``STRICT_CHAPTER_PAGES`` false)
    warnings: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"[check] browser: {self.browser or 'none (static checks only)'}"]
        for page, found in self.warnings.items():
            lines += [f"[check] warning: {page}: {p}" for p in found]
        for page, info in self.pages.items():
            seen = (
                f", rendered {info['rendered_images']} images and {info['equations']} equations"
                if "rendered_images" in info else ""
            )
            lines.append(f"[check] {page}: {info['images']} <img> tags{seen}")
        for shot in self.screenshots:
            lines.append(f"[check] screenshot {shot}")
        return "\n".join(lines)


class HtmlCheckError(AssertionError):
    """The built book has missing pages or broken images."""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _static_check(html_dir: Path, page: str) -> dict:
    path = html_dir / page
    if not path.exists():
        raise HtmlCheckError(f"missing page {path}")
    parser = _ImgParser()
    parser.feed(path.read_text(errors="replace"))
    broken = []
    for src in parser.srcs:
        if src.startswith(("http://", "https://", "data:")):
            continue
        target = (path.parent / src.split("#")[0].split("?")[0]).resolve()
        if not target.exists() or target.stat().st_size == 0:
            broken.append(src)
    if broken:
        raise HtmlCheckError(f"{page}: broken image references {broken}")
    return {"images": len(parser.srcs)}


class _TextParser(html.parser.HTMLParser):
    """The text of a page outside code-cell inputs, scripts and styles."""

    SKIP = ("script", "style")

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._stack: list[bool] = []  # per open element: does it start a skipped region?
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "img", "meta", "link", "input", "hr", "source", "wbr"):
            return
        classes = (dict(attrs).get("class") or "").split()
        skip = tag in self.SKIP or "cell_input" in classes
        self._stack.append(skip)
        self._skipping += skip

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # ``<img ... />``: a void element opens nothing, so it must close nothing either
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if self._stack:
            self._skipping -= self._stack.pop()

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


#: Elements that have no end tag.
_VOID = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta",
                   "source", "track", "wbr"))


@dataclass(eq=False)
class _Node:
    """An element of a parsed page: its tag, attributes, children (elements and text) and its
    position in document order."""

    tag: str
    attrs: dict[str, str]
    index: int
    children: list[_Node | str]

    @property
    def classes(self) -> list[str]:
        return self.attrs.get("class", "").split()

    def iter(self, skip_inputs: bool = False) -> Iterator[_Node]:
        """This element and every element below it, in document order (``skip_inputs``:
        not into code-cell inputs)."""
        if skip_inputs and "cell_input" in self.classes:
            return
        yield self
        for child in self.children:
            if isinstance(child, _Node):
                yield from child.iter(skip_inputs)

    def text(self, skip_inputs: bool = False) -> str:
        """The text below this element, without scripts and styles (``skip_inputs``: nor
        code-cell inputs)."""
        if self.tag in ("script", "style") or (skip_inputs and "cell_input" in self.classes):
            return ""
        return "".join(c if isinstance(c, str) else c.text(skip_inputs) for c in self.children)


class _TreeParser(html.parser.HTMLParser):
    """A forgiving HTML tree: void elements open nothing, a stray end tag is ignored and an
    end tag closes the elements left open inside it."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Node("#document", {}, 0, [])
        self._open = [self.root]
        self._count = 0

    def _add(self, tag: str, attrs: list[tuple[str, str | None]]) -> _Node:
        self._count += 1
        node = _Node(tag, {k: v or "" for k, v in attrs}, self._count, [])
        self._open[-1].children.append(node)
        return node

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = self._add(tag, attrs)
        if tag not in _VOID:
            self._open.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        for depth in range(len(self._open) - 1, 0, -1):
            if self._open[depth].tag == tag:
                del self._open[depth:]
                return

    def handle_data(self, data: str) -> None:
        self._open[-1].children.append(data)


def _parse(raw: str) -> _Node:
    parser = _TreeParser()
    parser.feed(raw)
    parser.close()
    return parser.root


#: A table cell that shows a missing value the way pandas or Python print it.
_MISSING_CELL = re.compile(r"(?:NaN|nan|None|NaT|<NA>)(?:\s+(?:NaN|nan|None|NaT|<NA>))*")
_TRACEBACK = "Traceback (most recent call last)"


def _short(text: str, limit: int = 120) -> str:
    return " ".join(text.split())[:limit]


def _output_problems(tree: _Node) -> list[str]:
    """Tracebacks, stderr outputs and missing values shown as table cells."""
    problems = []
    for node in tree.iter(skip_inputs=True):
        classes = node.classes
        if any(c.endswith("stderr") and not c.startswith("tag_") for c in classes):
            problems.append(f"stderr output: {_short(node.text())!r}")
        elif "traceback" in classes:
            problems.append(f"traceback output: {_short(node.text())!r}")
    text = tree.text(skip_inputs=True)
    if _TRACEBACK in text and not any(p.startswith("traceback") for p in problems):
        at = text.index(_TRACEBACK)
        problems.append(f"a traceback in the text: {_short(text[at:at + 200])!r}")
    missing = []
    for node in tree.iter(skip_inputs=True):
        if node.tag in ("td", "th"):
            cell = node.text().strip()
            if _MISSING_CELL.fullmatch(cell):
                missing.append(cell)
    if missing:
        shown = ", ".join(repr(c) for c in sorted(set(missing)))
        problems.append(f"{len(missing)} table cells show a missing value as {shown}")
    return problems


#: Raw markdown table text (a header rule) in a page's rendered text: a markdown output shown
#: as CommonMark, which has no tables.
_RAW_TABLE = re.compile(r"\|\s*:?-{3,}:?\s*\|")


def _machine_paths() -> list[str]:
    """Absolute folders of this machine that a page must not print."""
    from vlbook.paths import data_root, results_root, runs_root, weights_root

    paths = {str(REPO_ROOT)}
    for root in (data_root(), results_root(), runs_root(), weights_root()):
        paths.add(str(root))
    home = str(Path.home())
    if home not in ("/", ""):
        paths.add(home)
    return sorted(p for p in paths if len(Path(p).parts) > 1)


def page_problems(html_dir: Path, pages: list[str]) -> dict[str, list[str]]:
    """What a reader should not see on the built ``pages``: papermill's ``# Parameters`` cell
    shown twice, absolute paths of the machine, raw markdown tables, thebe's configuration
    declared twice, require.js (ipywidgets) fetched from a CDN, tracebacks and stderr outputs
    (myst-nb's ``output stderr`` / ``output traceback`` blocks, or a traceback's first line in
    the text), and ``NaN`` / ``None`` shown as the cell of a table. Code-cell inputs are not
    read. Pages without problems are left out."""
    html_dir = Path(html_dir)
    machine = _machine_paths()
    found: dict[str, list[str]] = {}
    for page in pages:
        raw = (html_dir / page).read_text(errors="replace")
        parser = _TextParser()
        parser.feed(raw)
        text = "".join(parser.parts)
        problems = []
        if raw.count("# Parameters") > 1:
            problems.append(f"'# Parameters' appears {raw.count('# Parameters')} times")
        for path in machine:
            if path in text:
                line = next(ln for ln in text.splitlines() if path in ln)
                problems.append(f"absolute path {path!r} in the text: {line.strip()[:120]!r}")
        if _RAW_TABLE.search(text):
            line = next(ln for ln in text.splitlines() if _RAW_TABLE.search(ln))
            problems.append(f"raw markdown table text: {line.strip()[:120]!r}")
        if raw.count("THEBE_JS_URL") > 1:
            problems.append(f"THEBE_JS_URL declared {raw.count('THEBE_JS_URL')} times")
        if re.search(r"<script[^>]+require(\.min)?\.js", raw):
            problems.append("loads require.js from a CDN")
        problems += _output_problems(_parse(raw))
        if problems:
            found[page] = problems
    return found


#: Whether :func:`check_html` fails on :func:`chapter_page_problems` (True) or only warns
#: (False, while chapters are still gaining their paper-vs-ours tables).
STRICT_CHAPTER_PAGES = True

#: A heading of a chapter's "what to take away" section.
_TAKE_AWAY = re.compile(r"take[\s-]*aways?\b", re.IGNORECASE)


def _architecture_diagram(tree: _Node) -> _Node | None:
    """The first architecture diagram of a page: an element marked ``vlbook-architecture``
    (class or id), an image whose alt text names an architecture, or the image output of a
    code cell that calls ``show_architecture(`` (:func:`vlbook.diagrams.show_architecture`)."""
    for node in tree.iter():
        marks = [*node.classes, node.attrs.get("id", "")]
        if any("vlbook-architecture" in m for m in marks):
            return node
        if node.tag == "img" and "architecture" in node.attrs.get("alt", "").lower():
            return node
        if "cell" in node.classes:
            inputs = [n for n in node.iter() if "cell_input" in n.classes]
            outputs = [n for n in node.iter() if "cell_output" in n.classes]
            if (any("show_architecture(" in n.text() for n in inputs)
                    and any(m.tag == "img" for n in outputs for m in n.iter())):
                return node
    return None


def chapter_pages(pages: list[str]) -> list[str]:
    """The pages of ``pages`` that are a paper's chapter (``chapters/<paper>.html``; not the
    intro or the capstone)."""
    papers = {c.name for c in paper_chapters()}
    return [p for p in pages if re.fullmatch(r"chapters/([\w-]+)\.html", p)
            and p.split("/")[1][: -len(".html")] in papers]


def chapter_page_problems(html_dir: Path, pages: list[str]) -> dict[str, list[str]]:
    """What a paper chapter's page must have and lacks: an architecture diagram, a
    paper-vs-ours table (:func:`vlbook.report.paper_vs_ours`, found by its marker class
    :data:`vlbook.report.MARKER`) and a "what to take away" section (a heading with "take
    away" in it) after that table. Only the paper chapters among ``pages`` are read
    (:func:`chapter_pages`); pages without problems are left out.

    :func:`check_html` fails on these when :data:`STRICT_CHAPTER_PAGES` (or its
    ``strict_chapters``) is true and only warns otherwise."""
    from vlbook.report import MARKER

    html_dir = Path(html_dir)
    found: dict[str, list[str]] = {}
    for page in chapter_pages(pages):
        tree = _parse((html_dir / page).read_text(errors="replace"))
        problems = []
        if _architecture_diagram(tree) is None:
            problems.append("no architecture diagram (vlbook.diagrams.show_architecture)")
        table = next((n for n in tree.iter()
                      if MARKER in n.classes or n.attrs.get("id") == MARKER), None)
        if table is None:
            problems.append(f"no paper-vs-ours table (vlbook.report.paper_vs_ours, class "
                            f"{MARKER!r})")
        headings = [n for n in tree.iter() if re.fullmatch(r"h[1-6]", n.tag)
                    and _TAKE_AWAY.search(n.text())]
        if not headings:
            problems.append("no take-away section (a heading with 'take away')")
        elif table is not None and headings[-1].index < table.index:
            problems.append(f"the take-away section ({_short(headings[-1].text(), 60)!r}) comes "
                            "before the paper-vs-ours table")
        if problems:
            found[page] = problems
    return found


async def _cdp_pages(ws_url: str, urls: list[str], shots: list[Path]) -> list[dict]:
    from tornado.websocket import websocket_connect

    conn = await websocket_connect(ws_url, max_message_size=256 * 2**20)
    counter = 0

    async def call(method: str, **params: object) -> dict:
        nonlocal counter
        counter += 1
        await conn.write_message(json.dumps({"id": counter, "method": method, "params": params}))
        while True:
            msg = json.loads(await conn.read_message())
            if msg.get("id") == counter:
                if "error" in msg:
                    raise HtmlCheckError(f"{method}: {msg['error']}")
                return msg["result"]

    results = []
    await call("Page.enable")
    for url, shot in zip(urls, shots):
        await call("Page.navigate", url=url)
        for _ in range(100):
            ready = await call("Runtime.evaluate", expression="document.readyState")
            if ready["result"].get("value") == "complete":
                break
            await asyncio.sleep(0.1)
        probe = (
            "Promise.all(Array.from(document.images).map(i => {i.loading = 'eager';"
            " return i.decode().then(() => i.naturalWidth > 0 ? null : i.src,"
            " () => i.src);})).then(r => JSON.stringify({title: document.title,"
            " images: r.length, broken: r.filter(x => x), text: document.body.innerText.length}))"
        )
        res = await call("Runtime.evaluate", expression=probe, awaitPromise=True)
        info = json.loads(res["result"]["value"])
        # Equations: every MathJax-marked element must have been typeset (MathJax is async).
        count = (
            "JSON.stringify([document.querySelectorAll('.math').length,"
            " document.querySelectorAll('mjx-container').length])"
        )
        for _ in range(100):
            res = await call("Runtime.evaluate", expression=count)
            info["math"], info["typeset"] = json.loads(res["result"]["value"])
            if info["typeset"] >= info["math"]:
                break
            await asyncio.sleep(0.1)
        png = await call("Page.captureScreenshot", format="png")
        shot.write_bytes(base64.b64decode(png["data"]))
        results.append(info)
    conn.close()
    return results


def _end_process_group(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group ``proc`` leads (started with ``start_new_session``), wait,
    then SIGKILL whatever is left."""
    import signal

    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:  # helpers that ignored SIGTERM, or a browser that did not exit in time
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def check_html(
    html_dir: Path, chapter_pages: list[str], screenshot_dir: Path | None = None,
    strict_chapters: bool | None = None,
) -> HtmlReport:
    """Check the built book: pages exist, every image resolves and decodes in Chromium, no
    page shows what a reader should not see (:func:`page_problems`), and each paper chapter
    has its diagram, paper-vs-ours table and take-away (:func:`chapter_page_problems`: a
    failure when ``strict_chapters``, default :data:`STRICT_CHAPTER_PAGES`, else warnings in
    the report).

    Screenshots of the front page and the first chapter are written to ``screenshot_dir``
    (default: ``<html_dir>/../screenshots``). Without Chromium only the static checks run and
    the report says so.
    """
    html_dir = Path(html_dir)
    pages = ["index.html", *chapter_pages, "ledger.html"]
    info = {p: _static_check(html_dir, p) for p in pages}
    others = [p for p in ("paper_vs_code.html", "benchmarks.html", "references.html")
              if (html_dir / p).exists()]
    problems = page_problems(html_dir, pages + others)
    strict = STRICT_CHAPTER_PAGES if strict_chapters is None else strict_chapters
    lacking = chapter_page_problems(html_dir, chapter_pages)
    warnings: dict[str, list[str]] = {}
    if strict:
        for page, found in lacking.items():
            problems.setdefault(page, []).extend(found)
    else:  # listed in the report's summary
        warnings = lacking
    if problems:
        raise HtmlCheckError("pages show what a reader should not see:\n" + "\n".join(
            f"  {page}: {p}" for page, found in problems.items() for p in found))
    chromium = find_chromium()
    if chromium is None:
        print("warning: Chromium not found; install Debian's 'chromium' for the browser check")
        return HtmlReport(info, [], None, warnings)
    screenshot_dir = Path(screenshot_dir or html_dir.parent / "screenshots")
    screenshot_dir.mkdir(parents=True, exist_ok=True)
    # The front page and the first chapter.
    browse = pages[:2]
    shots = [screenshot_dir / (Path(p).stem + ".png") for p in browse]
    port = _free_port()
    # Chromium's helper processes can outlive the browser for a moment and keep writing to the
    # profile: run it in its own process group, end the whole group, and never fail the check
    # on removing the temporary profile
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen(
            [
                chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--allow-file-access-from-files", "--window-size=1280,1400",
                f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                "--remote-allow-origins=*", "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            ws_url = None
            for _ in range(150):
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list") as r:
                        targets = json.load(r)
                    pages_ = [t for t in targets if t.get("type") == "page"]
                    if pages_:
                        ws_url = pages_[0]["webSocketDebuggerUrl"]
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            if ws_url is None:
                raise HtmlCheckError("Chromium did not open its debugging port")
            urls = [(html_dir / p).resolve().as_uri() for p in browse]
            seen = asyncio.run(_cdp_pages(ws_url, urls, shots))
        finally:
            _end_process_group(proc)
    for page, result in zip(browse, seen):
        if result["broken"]:
            raise HtmlCheckError(f"{page}: images failed to load in Chromium: {result['broken']}")
        if result["typeset"] < result["math"]:
            raise HtmlCheckError(
                f"{page}: {result['math'] - result['typeset']} of {result['math']} equations were "
                "not typeset (MathJax did not load)"
            )
        if result["text"] < 200:
            raise HtmlCheckError(f"{page}: the page rendered almost no text ({result['text']})")
        info[page].update(
            title=result["title"], rendered_images=result["images"], equations=result["typeset"]
        )
    return HtmlReport(info, shots, chromium, warnings)


# --------------------------------------------------------------------------------------
# a Sphinx extension (``sphinx: extra_extensions: [vlbook.book]`` in book/_config.yml)
# --------------------------------------------------------------------------------------

#: Scripts no page needs: the book has no live code (thebe), and executed pages carry no
#: widgets (their require.js and widget bundle would come from a CDN).
_UNWANTED_SCRIPTS = ("sphinx-thebe.js", "require.min.js", "require.js", "embed-amd.js")


def _drop_unwanted_scripts(app, pagename, templatename, context, doctree) -> None:  # noqa: ANN001
    """``html-page-context``: remove thebe's configuration (``const THEBE_JS_URL``, which
    sphinx-thebe adds more than once, an uncaught error on every page) and widget scripts."""
    scripts = context.get("script_files")
    if not scripts:
        return

    def unwanted(js: object) -> bool:
        name = str(getattr(js, "filename", "") or "")
        body = str(getattr(js, "attributes", {}).get("body", ""))
        return "THEBE_JS_URL" in body or name.split("?")[0].endswith(_UNWANTED_SCRIPTS)

    context["script_files"] = [js for js in scripts if not unwanted(js)]


def setup(app) -> dict:  # noqa: ANN001 - sphinx.application.Sphinx
    """Sphinx entry point: registers :func:`_drop_unwanted_scripts` (after the themes)."""
    app.connect("html-page-context", _drop_unwanted_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlbook.book", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="execute the notebooks and build the HTML book")
    b.add_argument("--scale", default="toy", choices=("smoke", "toy", "full"))
    b.add_argument("--stage", type=Path, default=None, help="build folder")
    b.add_argument("--no-check", action="store_true", help="skip the Chromium check")
    c = sub.add_parser("check", help="check a built book in headless Chromium")
    c.add_argument("html_dir", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cmd == "build":
        build(args.scale, args.stage, check=not args.no_check)
    else:
        chapters = [f"chapters/{c}.html" for c, _ in existing_chapters()]
        print(check_html(args.html_dir, chapters).summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
