"""Parameters, scales and papermill execution of the chapter notebooks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NOTEBOOK_DIR, all_notebooks

from vlbook.config import ParameterError, get_preset, register_preset, validate_parameters
from vlbook.notebook import (
    check_no_outputs,
    declared_parameters,
    execute_notebook,
    parameters_from_history,
    strip_outputs,
)

NOTEBOOKS = all_notebooks()
#: Notebooks whose smoke-scale outputs must be identical from run to run (checked with nbval).
DETERMINISTIC = ["intro"]


def test_there_are_notebooks() -> None:
    assert any(nb.stem == "intro" for nb in NOTEBOOKS)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_committed_without_outputs(nb: Path) -> None:
    assert check_no_outputs(nb) == []


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_one_parameters_cell_defaulting_to_toy(nb: Path) -> None:
    cells = json.loads(nb.read_text())["cells"]
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1
    assert declared_parameters(nb)["scale"] == "toy"


def test_unknown_parameter_value_lists_accepted_values() -> None:
    with pytest.raises(ParameterError, match="accepted values: 'smoke', 'toy', 'full'"):
        validate_parameters("intro", {"scale": "huge"})
    with pytest.raises(ParameterError, match="unknown parameter"):
        validate_parameters("intro", {"scael": "toy"})
    with pytest.raises(ParameterError, match="should be of type int"):
        validate_parameters("intro", {"seed": "zero"})
    assert validate_parameters("intro", {"scale": "smoke"})["seed"] == 0


def test_parameters_are_read_from_the_leading_assignment_cells() -> None:
    history = ['scale = "toy"\nseed = 0', '# Parameters\nscale = "smoke"\n', "import vlbook"]
    assert parameters_from_history(history) == {"scale": "smoke", "seed": 0}
    # A later assignment-only cell is not a parameter cell once code has run.
    assert "lr" not in parameters_from_history(history + ["lr = 0.1"])


def test_presets_are_fresh_copies_with_dotted_overrides() -> None:
    register_preset(
        "unit-test-chapter",
        {s: {"train": {"lr": 1e-3, "steps": n}} for s, n in [("smoke", 2), ("toy", 200),
                                                            ("full", 9)]},
    )
    cfg = get_preset("unit-test-chapter", "toy", **{"train.lr": 5e-4})
    assert cfg == {"train": {"lr": 5e-4, "steps": 200}}
    cfg["train"]["steps"] = -1
    assert get_preset("unit-test-chapter", "toy")["train"]["steps"] == 200
    with pytest.raises(ParameterError, match="unknown key 'lrr'"):
        get_preset("unit-test-chapter", "toy", **{"train.lrr": 1})


def test_execute_rejects_unknown_parameter_before_starting_a_kernel(tmp_path: Path) -> None:
    with pytest.raises(ParameterError, match="unknown parameter.*scal"):
        execute_notebook(NOTEBOOK_DIR / "intro.ipynb", tmp_path / "x.ipynb", {"scal": "toy"})
    assert not (tmp_path / "x.ipynb").exists()


def test_bad_scale_stops_the_notebook_with_a_clear_message(tmp_path: Path) -> None:
    import papermill

    with pytest.raises(papermill.PapermillExecutionError, match="accepted values"):
        execute_notebook(NOTEBOOK_DIR / "intro.ipynb", tmp_path / "x.ipynb", {"scale": "huge"})


def test_finish_notebook_ends_a_run_without_an_error(tmp_path: Path) -> None:
    """A full-scale chapter stops after launching training: papermill must succeed and the
    later cells must not run (here they would fail)."""
    import nbformat
    import papermill

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in (
        "from vlbook.notebook import finish_notebook\nran = ['first']",
        "finish_notebook('full scale: training launched')",
        "raise AssertionError('this cell must not run')",
        "ran.append('last')\nprint(ran)",
    )]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    src, out = tmp_path / "stop.ipynb", tmp_path / "stop-out.ipynb"
    nbformat.write(nb, src)
    papermill.execute_notebook(str(src), str(out), progress_bar=False, kernel_name="python3")
    cells = nbformat.read(out, as_version=4).cells
    printed = ["".join(o.get("text", "")) for c in cells for o in c.get("outputs", [])]
    assert "full scale: training launched\n" in printed
    assert not any("['first', 'last']" in text for text in printed)
    assert all(o.get("output_type") != "error" for c in cells for o in c.get("outputs", []))
    with pytest.raises(SystemExit, match="outside"):  # no IPython: an ordinary exit
        from vlbook.notebook import finish_notebook

        finish_notebook("outside a notebook")


def test_strip_outputs_round_trip(tmp_path: Path, executed_smoke_notebooks) -> None:
    executed = executed_smoke_notebooks["intro"]
    if isinstance(executed, Exception):
        pytest.skip("intro failed; reported by test_notebook_runs_at_smoke_scale")
    copy = tmp_path / "intro.ipynb"
    copy.write_text(Path(executed).read_text())
    assert check_no_outputs(copy)
    assert strip_outputs(copy)
    assert check_no_outputs(copy) == []


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_at_smoke_scale(nb: Path, executed_smoke_notebooks) -> None:
    result = executed_smoke_notebooks[nb.stem]
    if isinstance(result, Exception):
        raise result
    cells = json.loads(Path(result).read_text())["cells"]
    errors = [
        o for c in cells if c["cell_type"] == "code" for o in c["outputs"]
        if o.get("output_type") == "error"
    ]
    assert not errors
    images = [
        o for c in cells if c["cell_type"] == "code" for o in c["outputs"]
        if "image/png" in o.get("data", {})
    ]
    assert images, "every chapter shows at least one figure"
    injected = [c for c in cells if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and 'scale = "smoke"' in "".join(injected[0]["source"])


@pytest.mark.parametrize("stem", DETERMINISTIC)
def test_smoke_outputs_are_deterministic_nbval(stem: str, executed_smoke_notebooks) -> None:
    """Re-run the executed notebook under nbval: cells marked NBVAL_CHECK_OUTPUT must match."""
    result = executed_smoke_notebooks[stem]
    if isinstance(result, Exception):
        raise result
    source = "".join(
        "".join(c["source"]) for c in json.loads(Path(result).read_text())["cells"]
    )
    assert "NBVAL_CHECK_OUTPUT" in source, "mark the deterministic cells to compare"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--nbval-lax", "-p", "no:cacheprovider", "-q",
         "--rootdir", str(Path(result).parent), str(result)],
        cwd=NOTEBOOK_DIR, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
