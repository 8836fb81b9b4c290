"""The chapter layer: one module per paper above the models, the data and the trainer.

A paper chapter module (``vlbook/chapters/<name>.py``) holds what the paper's chapter of the
book runs and reports, and nothing a model needs: the scale presets, the toy recipe, the data
the chapter reads, the ablation specs, the evaluations it prints and the ledger rows it must
write. It registers one :class:`Chapter` with :func:`register_chapter`; the book builder, the
capstone, the benchmarks, the ledger check and the contract tests iterate over
:func:`chapters` instead of lists of their own. Adding a paper is four files: a model package
``vlbook/models/<name>/``, a chapter module here, ``notebooks/<name>.ipynb`` and
``tests/test_<name>.py`` (see ``CONTRIBUTING.md``).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vlbook.registry import Registry

__all__ = ["CHAPTERS", "NON_PAPER_CHAPTERS", "Chapter", "RowKey", "chapter", "chapters",
           "register_chapter"]

RowKey = tuple[str, str, str, str]  # (paper, table, row, metric)

#: Notebooks of the book that are not one paper (no model, no ledger rows of their own).
NON_PAPER_CHAPTERS: tuple[str, ...] = ("intro", "capstone")


@dataclass(frozen=True)
class Chapter:
    """What the rest of vlbook needs to know about one paper chapter.

    ``name`` is the notebook stem, the preset name and the results folder; ``order`` places it
    in the book; ``toy_models`` / ``paper_models`` name registered model variants (the
    benchmarks build them, the contract tests run them); ``ledger_rows`` is the ledger spec:
    every ``(paper, table, row, metric)`` the chapter's notebook must write at every scale.
    """

    name: str
    title: str
    order: int
    toy_models: tuple[str, ...]
    paper_models: tuple[str, ...]
    ledger_rows: tuple[RowKey, ...]
    part: str = "The papers"
    module: str = field(default="", compare=False)
    #: the paper's parameter counts (millions) of ``paper_models``, where it prints them
    paper_params_m: Mapping[str, float] = field(default_factory=dict, compare=False)
    #: how the contract tests and the generic benchmark build a toy variant that needs more
    #: than its name (UMT: a teacher and the stage-2 towers); ``None``: ``create_model(name)``
    build_toy_model: Callable[[str], Any] | None = field(default=None, compare=False)

    def toy_model(self, name: str) -> Any:
        """The toy variant ``name`` ready for one pre-training step."""
        if self.build_toy_model is not None:
            return self.build_toy_model(name)
        return importlib.import_module("vlbook.models").create_model(name)

    def __post_init__(self) -> None:
        if not self.ledger_rows:
            raise ValueError(f"chapter {self.name!r} has no ledger rows: every paper chapter "
                             "states which paper rows it reproduces")
        if not self.toy_models:
            raise ValueError(f"chapter {self.name!r} names no toy model variant")


CHAPTERS: Registry = Registry("chapter")


def register_chapter(spec: Chapter) -> Chapter:
    """Register ``spec`` under its name (once) and return it."""
    CHAPTERS.register(spec.name)(lambda: spec)
    return spec


def _import_chapter_modules() -> None:
    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


def chapters() -> list[Chapter]:
    """Every registered paper chapter, in book order."""
    _import_chapter_modules()
    return sorted((CHAPTERS.create(name) for name in CHAPTERS.names()),
                  key=lambda c: (c.order, c.name))


def chapter(name: str) -> Chapter:
    """The registered chapter ``name`` (a clear error listing the known ones otherwise)."""
    _import_chapter_modules()
    return CHAPTERS.create(name)
