"""The project's own files: pinned environment, README quick start, lint."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent


def _pyproject_requirements() -> dict[str, Requirement]:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for group in data["project"]["optional-dependencies"].values():
        reqs += group
    return {Requirement(r).name.lower(): Requirement(r) for r in reqs}


def _environment_requirements() -> dict[str, Requirement]:
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    return {Requirement(r).name.lower(): Requirement(r) for r in pip}


def test_environment_yml_agrees_with_pyproject() -> None:
    py, conda = _pyproject_requirements(), _environment_requirements()
    assert sorted(py) == sorted(conda), (
        f"only in pyproject: {sorted(set(py) - set(conda))}; "
        f"only in environment.yml: {sorted(set(conda) - set(py))}"
    )
    for name, req in py.items():
        other = conda[name]
        assert str(req.specifier) == str(other.specifier), f"{name}: {req} vs {other}"
        assert str(req.marker) == str(other.marker), f"{name} markers: {req} vs {other}"


def test_torch_pin_matches_the_tested_build() -> None:
    import torch

    pinned = _pyproject_requirements()["torch"]
    assert torch.__version__.split("+")[0] in pinned.specifier


def test_jupyter_book_is_pinned_below_2() -> None:
    # jupyter-book 2 fetches its theme over the network at build time (see README).
    spec = _pyproject_requirements()["jupyter-book"].specifier
    assert spec.contains("1.0.4.post1") and not spec.contains("2.0.0")


def test_readme_quick_start_is_two_commands() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S)
    assert block, "the quick start has no command block"
    commands = [
        ln for ln in block.group(1).splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    commands = [c for c in commands if not c.startswith(("git clone", "cd "))]
    assert [c.split("#")[0].strip() for c in commands] == [
        "python3 tasks.py book",
        "python3 tasks.py test",
    ]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 tasks.py test" in ci


def test_ruff_is_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "vlbook", "tests", "data_scripts", "tasks.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
