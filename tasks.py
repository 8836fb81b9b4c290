#!/usr/bin/env python3
"""vlbook's task runner. Needs nothing but Python 3.10+.

    python3 tasks.py book     # environment, synthetic data, notebooks at toy scale, HTML
    python3 tasks.py test     # the test-suite (unit tests + every notebook at smoke scale)

Other tasks: ``env`` (create/update the environment only), ``lint`` (ruff), ``clean-notebooks``
(strip outputs before committing), ``book --scale smoke``, ``test --slow`` (also slow tests).

The environment is a virtual environment in ``.venv`` built from ``pyproject.toml``; it is
rebuilt when ``pyproject.toml`` changes. Set ``VLBOOK_PYTHON=/path/to/python`` to use an
environment of your own instead (for example the conda one from ``environment.yml``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
STAMP = VENV / ".vlbook-installed"
# torch is pinned to 2.13.0 with its torchvision 0.28.0. `===` asks for exactly the registry's
# "2.13.0" build: a machine whose pip configuration offers a local "2.13.0+cpu" wheel would
# otherwise take it, and that build cannot load torchvision 0.28 (see README, Environment).
TORCH = ["torch===2.13.0", "torchvision==0.28.0"]


def run(cmd: list[str], **kw) -> None:
    print("+ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, cwd=ROOT, **kw)


def env_python() -> Path:
    """The Python of the project's environment, created or updated as needed."""
    custom = os.environ.get("VLBOOK_PYTHON")
    if custom:
        return Path(custom)
    py = BIN / ("python.exe" if os.name == "nt" else "python")
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if py.exists() and STAMP.exists() and STAMP.read_text().strip() == wanted:
        return py
    if not py.exists():
        print(f"creating the environment in {VENV} (a few minutes, ~6 GB) ...", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    run([py, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    run([py, "-m", "pip", "install", "--quiet", *TORCH])
    run([py, "-m", "pip", "install", "--quiet", "-e", ".[book,dev]"])
    STAMP.write_text(wanted + "\n")
    return py


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0
    task, rest = argv[0], argv[1:]
    if task == "env":
        print(env_python())
        return 0
    py = env_python()
    env = child_env()
    if task == "book":
        run([py, "-m", "vlbook.book", "build", *(rest or ["--scale", "toy"])], env=env)
    elif task == "test":
        marks = [] if "--slow" in rest else ["-m", "not slow"]
        extra = [a for a in rest if a != "--slow"]
        run([py, "-m", "pytest", *marks, *extra], env=env)
    elif task == "lint":
        run([py, "-m", "ruff", "check", "."], env=env)
    elif task == "clean-notebooks":
        run([py, "-m", "vlbook.notebook", "strip", *(rest or ["notebooks"])], env=env)
    else:
        print(f"unknown task {task!r}; tasks: book, test, env, lint, clean-notebooks")
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except subprocess.CalledProcessError as err:
        sys.exit(err.returncode)
