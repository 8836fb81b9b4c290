"""Notebook plumbing: parameter validation, set-up, papermill execution.

Every chapter notebook starts with one cell tagged ``parameters``::

    scale = "toy"   # smoke | toy | full
    seed = 0

followed by ``ctx = vlbook.notebook.setup("vlm")``. :func:`setup` reads the parameter
cells that ran (the ``parameters`` cell and papermill's ``injected-parameters`` cell), rejects
unknown names or values with a message that lists what is accepted, seeds every generator and
returns a :class:`NotebookContext` holding the scale preset.
"""

from __future__ import annotations

import ast
import json
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlbook.config import ParameterError, ensure_registered, get_preset, validate_parameters

__all__ = [
    "NotebookContext",
    "ParameterError",
    "check_no_outputs",
    "display_path",
    "execute_notebook",
    "finish_notebook",
    "parameters_from_history",
    "quiet_progress_bars",
    "seed_everything",
    "setup",
    "tidy_executed_notebook",
]

#: Set (to "1") in the kernel's environment by :func:`execute_notebook`: a notebook executed
#: for a page has no one watching its progress bars, so :func:`setup` silences them.
QUIET_PROGRESS_ENV = "VLBOOK_QUIET_PROGRESS"


@dataclass
class NotebookContext:
    """What a chapter notebook needs after its parameters cell."""

    chapter: str
    params: dict[str, Any]
    preset: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)

    @property
    def scale(self) -> str:
        return self.params["scale"]

    @property
    def seed(self) -> int:
        return self.params["seed"]

    def elapsed(self) -> float:
        """Seconds since :func:`setup`."""
        return time.time() - self.started


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) generators."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


def _is_parameter_cell(source: str) -> dict[str, Any] | None:
    """Names and literal values if ``source`` holds only literal assignments, else None."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    if not tree.body:
        return None
    found: dict[str, Any] = {}
    for node in tree.body:
        if not isinstance(node, (ast.Assign, ast.AnnAssign)):
            return None
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        if len(targets) != 1 or not isinstance(targets[0], ast.Name) or node.value is None:
            return None
        try:
            found[targets[0].id] = ast.literal_eval(node.value)
        except ValueError:
            return None
    return found


def parameters_from_history(cells: list[str]) -> dict[str, Any]:
    """Parameters set by the leading run of literal-assignment cells of a notebook.

    The ``parameters`` cell is the first code cell and papermill inserts its
    ``injected-parameters`` cell right after it, so the parameters are the assignments of the
    first cells that contain nothing but ``name = literal`` lines; later values win.
    """
    params: dict[str, Any] = {}
    for source in cells:
        if not source.strip():
            continue
        found = _is_parameter_cell(source)
        if found is None:
            break
        params.update(found)
    return params


def _ipython_history() -> list[str] | None:
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    shell = get_ipython()
    if shell is None:
        return None
    return [c for c in shell.user_ns.get("In", [])[1:]]


def setup(chapter: str, params: Mapping[str, Any] | None = None) -> NotebookContext:
    """Validate a notebook's parameters, seed everything and load the chapter's preset.

    ``params`` defaults to the parameters read from the running notebook's history.
    """
    if params is None:
        history = _ipython_history()
        if history is None:
            raise RuntimeError(
                "vlbook.notebook.setup() called outside a notebook: pass params={...}"
            )
        params = parameters_from_history(history)
    has_preset = ensure_registered(chapter)  # also declares the chapter's extra parameters
    checked = validate_parameters(chapter, dict(params))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if checked.get("data_root"):
        os.environ["VLBOOK_DATA"] = str(Path(checked["data_root"]).expanduser().resolve())
    seed_everything(checked["seed"])
    if os.environ.get(QUIET_PROGRESS_ENV) == "1":
        quiet_progress_bars()
    try:
        from vlbook.viz import set_style

        set_style()
    except ImportError:
        pass
    preset = get_preset(chapter, checked["scale"]) if has_preset else {}
    ctx = NotebookContext(chapter=chapter, params=checked, preset=preset)
    print(_context_card(ctx))
    return ctx


def quiet_progress_bars() -> None:
    """Make every later ``tqdm.auto.tqdm`` bar a disabled text bar.

    ``tqdm.auto`` shows an ipywidgets bar in a notebook; in an executed page that is a widget
    the page can only draw with require.js from a CDN, and a text bar would be stderr noise.
    vlbook's bars import ``tqdm.auto.tqdm`` when they start, so replacing it here is enough.
    """
    import tqdm.auto
    import tqdm.std

    class QuietTqdm(tqdm.std.tqdm):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    tqdm.auto.tqdm = QuietTqdm  # type: ignore[misc]


def display_path(path: str | Path) -> str:
    """``path`` as a page may print it: relative to the repository, or to the data, runs or
    results root it lies under (``$VLBOOK_DATA/...``), never the machine's absolute path."""
    from vlbook.paths import REPO_ROOT, data_root, results_root, runs_root

    path = Path(path).expanduser()
    try:
        path = path.resolve()
    except OSError:
        pass
    roots = [(runs_root(), "$VLBOOK_RUNS"), (results_root(), "$VLBOOK_RESULTS"),
             (data_root(), "$VLBOOK_DATA")]
    for root, name in roots:  # the most specific root first (runs lie under results)
        try:
            rel = path.relative_to(root.resolve())
        except (ValueError, OSError):
            continue
        # under the repository the roots are plain folders of it: show them as such
        if root.resolve().is_relative_to(REPO_ROOT):
            return (path.relative_to(REPO_ROOT)).as_posix()
        return f"{name}/{rel.as_posix()}" if rel.parts else name
    if path.is_relative_to(REPO_ROOT):
        return path.relative_to(REPO_ROOT).as_posix() or "."
    home = Path.home()
    if path.is_relative_to(home) and home != Path(home.anchor):
        return "~/" + path.relative_to(home).as_posix()
    return path.name


def _context_card(ctx: NotebookContext) -> str:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    parts = [f"{k}={v!r}" for k, v in ctx.params.items() if v not in ("", None)]
    return (
        f"vlbook · {ctx.chapter} · {' '.join(parts)}\n"
        f"torch {torch.__version__.split('+')[0]} on {device} · python {sys.version.split()[0]}"
    )


# --------------------------------------------------------------------------------------
# execution and hygiene
# --------------------------------------------------------------------------------------


def finish_notebook(message: str) -> None:
    """End the running notebook here, without an error.

    A ``full``-scale chapter launches the paper's training and has nothing more to run in the
    notebook; ``raise SystemExit`` would make papermill report a failed execution. Instead,
    every later cell's source is replaced by a comment (an IPython input transformer), so the
    rest of the notebook runs as no-ops and papermill finishes successfully. Outside IPython
    this raises ``SystemExit(message)``.
    """
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython comes with the kernel
        get_ipython = None  # type: ignore[assignment]
    shell = get_ipython() if get_ipython is not None else None
    if shell is None:
        raise SystemExit(message)
    note = f"# skipped: {' '.join(message.split())}\n"

    def skip_cell(lines: list[str]) -> list[str]:
        return [note]

    shell.input_transformers_cleanup.append(skip_cell)
    print(message)


def declared_parameters(path: str | Path) -> dict[str, Any]:
    """Names and defaults of the ``parameters`` cell of a notebook file."""
    nb = json.loads(Path(path).read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "parameters" in cell.get("metadata", {}).get("tags", []):
            found = _is_parameter_cell("".join(cell["source"]))
            if found is None:
                raise ParameterError(f"{path}: the parameters cell must hold only literals")
            return found
    raise ParameterError(f"{path}: no code cell is tagged 'parameters'")


def execute_notebook(
    path: str | Path,
    output: str | Path,
    parameters: Mapping[str, Any] | None = None,
    *,
    cwd: str | Path | None = None,
    timeout: int | None = None,
    log_output: bool = False,
) -> Path:
    """Run ``path`` with papermill into ``output`` after checking ``parameters``' names.

    Unknown names fail here, before any kernel starts, with the accepted names listed.
    """
    import papermill as pm

    path, output = Path(path), Path(output)
    params = dict(parameters or {})
    declared = declared_parameters(path)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ParameterError(
            f"{path.name}: unknown parameter(s) {unknown}; the notebook accepts {sorted(declared)}"
        )
    output.parent.mkdir(parents=True, exist_ok=True)
    # The kernel inherits this process's environment: keep hubs offline unless asked, and make
    # sure figures are displayed inline (MPLBACKEND=Agg, common in CI, would swallow them).
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "MPLBACKEND", QUIET_PROGRESS_ENV)}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
    os.environ[QUIET_PROGRESS_ENV] = "1"
    try:
        pm.execute_notebook(
            str(path),
            str(output),
            parameters=params,
            cwd=str(cwd or path.parent),
            kernel_name="python3",
            progress_bar=False,
            log_output=log_output,
            execution_timeout=timeout,
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return output


WIDGET_VIEW_MIME = "application/vnd.jupyter.widget-view+json"


def _with_injected_values(source: str, injected: dict[str, str]) -> str:
    """``source`` (a parameters cell) with the assignments of ``injected`` (name -> the
    injected line) replacing its own, comments after a value kept."""
    lines = source.splitlines()
    for i, line in enumerate(lines):
        try:
            node = ast.parse(line).body[0]
        except (SyntaxError, IndexError):
            continue
        if isinstance(node, ast.Assign) and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id in injected:
            rest = line[node.end_col_offset:]  # a trailing comment, if any
            lines[i] = injected[node.targets[0].id] + rest
    return "\n".join(lines) + ("\n" if source.endswith("\n") else "")


def tidy_executed_notebook(path: str | Path) -> Path:
    """Prepare an executed notebook for its page, in place; returns ``path``.

    * papermill's ``injected-parameters`` cell is tagged ``remove-cell`` (it stays in the file,
      so the notebook still reruns the same way) and its values are written into the
      ``parameters`` cell, so the page shows the parameters once, with the values that ran;
    * ipywidgets outputs (progress bars) and the notebook's widget state are removed: a page
      can only draw them with require.js and the widget bundle from a CDN.
    """
    path = Path(path)
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    injected_cell = next((c for c in cells if c["cell_type"] == "code" and "injected-parameters"
                          in c.get("metadata", {}).get("tags", [])), None)
    params_cell = next((c for c in cells if c["cell_type"] == "code" and "parameters"
                        in c.get("metadata", {}).get("tags", [])), None)
    if injected_cell is not None:
        tags = injected_cell.setdefault("metadata", {}).setdefault("tags", [])
        if "remove-cell" not in tags:
            tags.append("remove-cell")
        if params_cell is not None:
            injected: dict[str, str] = {}
            for line in "".join(injected_cell["source"]).splitlines():
                found = _is_parameter_cell(line) if line.strip() else None
                if found:
                    injected[next(iter(found))] = line.rstrip()
            source = _with_injected_values("".join(params_cell["source"]), injected)
            params_cell["source"] = source.splitlines(keepends=True)
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        cell["outputs"] = [o for o in cell.get("outputs", [])
                           if WIDGET_VIEW_MIME not in o.get("data", {})]
    nb.get("metadata", {}).pop("widgets", None)
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return path


def check_no_outputs(path: str | Path) -> list[str]:
    """Problems that stop ``path`` from being committed: outputs or execution counts."""
    nb = json.loads(Path(path).read_text())
    problems = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs"):
            problems.append(f"{path}: cell {i} has outputs")
        if cell.get("execution_count") is not None:
            problems.append(f"{path}: cell {i} has an execution count")
    return problems


def strip_outputs(path: str | Path) -> bool:
    """Remove outputs and execution counts from a notebook file; True if it changed."""
    path = Path(path)
    nb = json.loads(path.read_text())
    changed = False
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        if cell.get("outputs") or cell.get("execution_count") is not None:
            changed = True
        cell["outputs"] = []
        cell["execution_count"] = None
        for key in ("execution", "papermill"):
            if key in cell.get("metadata", {}):
                del cell["metadata"][key]
                changed = True
    if changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return changed


def main(argv: list[str] | None = None) -> int:
    """``python -m vlbook.notebook strip|check PATH...``: clean notebooks before committing."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m vlbook.notebook")
    parser.add_argument("command", choices=("strip", "check"))
    parser.add_argument("paths", nargs="+", type=Path)
    args = parser.parse_args(argv)
    files = [f for p in args.paths for f in (sorted(p.glob("*.ipynb")) if p.is_dir() else [p])]
    problems = []
    for f in files:
        if args.command == "strip":
            if strip_outputs(f):
                print(f"stripped {f}")
        else:
            problems += check_no_outputs(f)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
