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
    "execute_notebook",
    "finish_notebook",
    "parameters_from_history",
    "seed_everything",
    "setup",
]


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
    try:
        from vlbook.viz import set_style

        set_style()
    except ImportError:
        pass
    preset = get_preset(chapter, checked["scale"]) if has_preset else {}
    ctx = NotebookContext(chapter=chapter, params=checked, preset=preset)
    print(_context_card(ctx))
    return ctx


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
    saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "MPLBACKEND")}
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
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
