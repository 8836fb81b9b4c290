"""Contract tests run over every registered chapter and model (Hugging Face's ModelTesterMixin
is the model for this): what the book, the trainer and the benchmarks rely on, checked once for
all papers, so a new paper gets them by registering its chapter.
"""

from __future__ import annotations

import ast
import importlib
import math
from pathlib import Path
from typing import Any

import pytest
import torch

from vlbook.chapters import Chapter, chapters
from vlbook.models import create_model, list_models

PACKAGE = Path(__file__).resolve().parents[1] / "vlbook"
#: what a model package may import from vlbook (issue: models sit below data, train, chapters)
MODEL_IMPORTS = ("vlbook.nn", "vlbook.masking", "vlbook.losses", "vlbook.models",
                 "vlbook.constants", "vlbook.registry", "vlbook.analysis", "vlbook.serialization")



def toy_cases() -> list[tuple[str, str]]:
    """``(chapter, toy model)`` of every registered chapter: the contract's parameters."""
    return [(c.name, m) for c in chapters() for m in c.toy_models]


def paper_cases() -> list[tuple[str, str]]:
    return [(c.name, m) for c in chapters() for m in c.paper_models]


CHAPTERS = chapters()
TOY, PAPER = toy_cases(), paper_cases()


def check_toy_model(name: str, batch_size: int = 2, spec: Chapter | None = None
                    ) -> dict[str, Any]:
    """Build ``name`` (through ``spec.toy_model`` when given), run one pre-training step
    forward and backward, and check the surface every model offers
    (:class:`vlbook.models.base.VLModel`). Returns what it measured."""
    torch.manual_seed(0)
    model = spec.toy_model(name) if spec is not None else create_model(name)
    batch = model.example_batch(batch_size, generator=torch.Generator().manual_seed(0))
    out = model(batch)
    assert isinstance(out, dict) and "loss" in out, f"{name}: forward returns a dict with 'loss'"
    assert all(isinstance(v, torch.Tensor) for v in out.values()), name
    loss = out["loss"]
    assert loss.dim() == 0 and math.isfinite(loss.item()), f"{name}: loss {loss}"
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
    assert grads, f"{name}: no parameter received a gradient"
    assert all(torch.isfinite(g).all() for g in grads), f"{name}: non-finite gradient"
    assert any(g.abs().sum() > 0 for g in grads), f"{name}: every gradient is zero"
    model.eval()
    with torch.no_grad():
        # VLM's video input is per-second features, the others' frames
        video = model.encode_video(batch["video"] if "video" in batch
                                   else batch["video_features"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
    assert video.shape[0] == text.shape[0] == batch_size, name
    assert video.shape[-1] == text.shape[-1], f"{name}: video and text embeddings differ in width"
    return {"loss": loss.item(), "width": video.shape[-1]}


def check_paper_model_on_meta(name: str) -> int:
    """Build the paper-size variant ``name`` on the meta device (no weights, no memory)."""
    with torch.device("meta"):
        model = create_model(name)
    count = sum(p.numel() for p in model.parameters())
    assert all(p.is_meta for p in model.parameters()), name
    return count


def test_every_chapter_is_registered_in_book_order() -> None:
    assert [c.name for c in CHAPTERS][:5] == ["vlm", "simvtp", "umt", "allinone", "evilm"]
    for c in CHAPTERS:
        assert isinstance(c, Chapter) and c.ledger_rows, c.name
        assert importlib.import_module(c.module).CHAPTER is c


@pytest.mark.parametrize(("chapter", "name"), TOY)
def test_toy_model_trains_and_encodes(chapter: str, name: str) -> None:
    assert name in list_models()
    check_toy_model(name, spec=next(c for c in CHAPTERS if c.name == chapter))


@pytest.mark.parametrize(("chapter", "name"), PAPER)
def test_paper_size_model_builds_on_meta(chapter: str, name: str) -> None:
    count = check_paper_model_on_meta(name)
    spec = next(c for c in CHAPTERS if c.name == chapter)
    expected = spec.paper_params_m.get(name)
    if expected is not None:  # the paper's table, in millions, to the precision it prints
        assert abs(count / 1e6 - expected) <= max(0.05 * expected, 1.0), (name, count)
    else:
        assert count > 1e6, name


@pytest.mark.parametrize("chapter", [c.name for c in CHAPTERS])
def test_model_package_has_a_converter_module(chapter: str) -> None:
    convert = importlib.import_module(f"vlbook.models.{chapter}.convert")
    public = [n for n in dir(convert) if n.startswith(("convert_", "load_"))
              and callable(getattr(convert, n))]
    assert public, f"vlbook.models.{chapter}.convert offers no convert_* / load_* function"


def _module_imports(path: Path) -> list[tuple[str, int, bool]]:
    """``(module, line, at_top)`` of every vlbook import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found += [(n, node.lineno, id(node) in top) for n in names if n.startswith("vlbook")]
    return found


@pytest.mark.parametrize("chapter", [c.name for c in CHAPTERS])
def test_model_package_imports_nothing_above_it(chapter: str) -> None:
    for path in sorted((PACKAGE / "models" / chapter).glob("*.py")):
        for module, line, _ in _module_imports(path):
            assert module.startswith(MODEL_IMPORTS), (
                f"{path.relative_to(PACKAGE.parent)}:{line} imports {module}: a model package "
                f"imports only {MODEL_IMPORTS}")


def test_vlbook_has_no_import_cycle_at_module_level() -> None:
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        graph[name] = {m for m, _, top in _module_imports(path) if top}

    def resolve(module: str) -> str | None:
        while module and module not in graph:
            module = module.rpartition(".")[0]
        return module or None

    edges = {n: {r for m in deps if (r := resolve(m)) and r != n} for n, deps in graph.items()}
    # a package's __init__ importing its own submodules is not a cycle of layers
    edges = {n: {d for d in deps if not d.startswith(n + ".")} for n, deps in edges.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(edges.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep):] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)


def test_a_config_saved_before_the_chapter_layer_still_resolves() -> None:
    from vlbook.chapters.evilm import build_pretraining_model
    from vlbook.train.data import import_object

    assert import_object("vlbook.models.evilm:build_pretraining_model") is build_pretraining_model
