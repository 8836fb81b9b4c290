"""Scales, notebook parameters and presets.

Every notebook runs at one of three scales chosen in its ``parameters`` cell:

``smoke``
    seconds; used by the test-suite to prove that the notebook runs end to end.
``toy``
    minutes on a 2-core laptop; meaningful numbers and figures on the synthetic benchmark.
``full``
    the paper's own configuration, launched on GPUs with ``accelerate launch``.

The presets themselves live here (and in the model files that register them), never in the
notebooks, so the book, the tests and ``python -m vlbook.train`` read the same numbers.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vlbook.registry import Registry

SCALES: tuple[str, ...] = ("smoke", "toy", "full")


class ParameterError(ValueError):
    """A notebook or preset parameter has an unknown name or an unaccepted value."""


@dataclass(frozen=True)
class Param:
    """One notebook parameter: its default and what it accepts."""

    name: str
    default: Any
    choices: tuple[Any, ...] | None = None
    type: type | tuple[type, ...] | None = None
    help: str = ""

    def check(self, value: Any) -> Any:
        if self.choices is not None and value not in self.choices:
            accepted = ", ".join(repr(c) for c in self.choices)
            raise ParameterError(
                f"parameter {self.name}={value!r} is not accepted; accepted values: {accepted}"
            )
        if self.type is not None and not isinstance(value, self.type):
            kinds = self.type if isinstance(self.type, tuple) else (self.type,)
            names = " or ".join(k.__name__ for k in kinds)
            raise ParameterError(
                f"parameter {self.name}={value!r} should be of type {names}, "
                f"got {type(value).__name__}"
            )
        return value


#: Parameters every notebook accepts.
COMMON_PARAMS: tuple[Param, ...] = (
    Param("scale", "toy", choices=SCALES, help="smoke (seconds), toy (minutes, CPU), full (paper)"),
    Param("seed", 0, type=int, help="seed of every random generator"),
    Param("num_processes", 1, type=int, help="processes for training; >1 uses accelerate launch"),
    Param("data_root", "", type=str, help="override of $VLBOOK_DATA (empty: default)"),
)

_CHAPTER_PARAMS: dict[str, tuple[Param, ...]] = {}


def register_chapter_params(chapter: str, extra: tuple[Param, ...] = ()) -> None:
    """Declare the parameters of a chapter notebook (the common ones plus ``extra``)."""
    names = [p.name for p in COMMON_PARAMS + extra]
    if len(names) != len(set(names)):
        raise ValueError(f"duplicate parameter names for chapter {chapter!r}: {names}")
    _CHAPTER_PARAMS[chapter] = COMMON_PARAMS + extra


def chapter_params(chapter: str) -> tuple[Param, ...]:
    """The declared parameters of ``chapter`` (common ones if it declared none)."""
    return _CHAPTER_PARAMS.get(chapter, COMMON_PARAMS)


def validate_parameters(chapter: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check names and values of notebook parameters; return them with defaults filled in.

    Raises :class:`ParameterError` naming the offending parameter and listing what is
    accepted, so a mistyped ``papermill -p scal toy`` stops at once instead of silently
    running the default.
    """
    spec = {p.name: p for p in chapter_params(chapter)}
    unknown = sorted(set(params) - set(spec))
    if unknown:
        accepted = ", ".join(f"{p.name} (default {p.default!r})" for p in spec.values())
        raise ParameterError(
            f"unknown parameter(s) {', '.join(unknown)} for notebook {chapter!r}; "
            f"accepted parameters: {accepted}"
        )
    out = {name: p.default for name, p in spec.items()}
    for name, value in params.items():
        out[name] = spec[name].check(value)
    return out


# --------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------

PRESETS: Registry[Callable[[], dict[str, dict[str, Any]]]] = Registry("preset")


def register_preset(chapter: str, presets: Mapping[str, Mapping[str, Any]]) -> None:
    """Register the three scale presets of a chapter (a dict keyed by scale)."""
    missing = [s for s in SCALES if s not in presets]
    if missing:
        raise ValueError(f"preset {chapter!r} lacks scale(s) {missing}")
    frozen = copy.deepcopy(dict(presets))
    PRESETS.register(chapter)(lambda: copy.deepcopy(frozen))


def get_preset(chapter: str, scale: str, **overrides: Any) -> dict[str, Any]:
    """The preset of ``chapter`` at ``scale`` as a fresh dict, with ``overrides`` applied.

    Overrides use dotted keys for nested entries: ``get_preset("intro", "toy",
    **{"train.lr": 1e-3})``.
    """
    if scale not in SCALES:
        raise ParameterError(f"scale={scale!r} is not accepted; accepted values: {SCALES}")
    ensure_registered(chapter)
    cfg = PRESETS.create(chapter)[scale]
    for key, value in overrides.items():
        _set_dotted(cfg, key, value)
    return cfg


def ensure_registered(chapter: str) -> bool:
    """Import the module that registers ``chapter``'s preset; True if one is registered.

    Paper chapters register in ``vlbook.chapters.<chapter>``, the others in ``vlbook.presets``.
    Imported by name here because the chapter layer sits above this module (it imports
    :func:`register_preset`).
    """
    if chapter not in PRESETS:
        importlib.import_module("vlbook.presets")
    if chapter not in PRESETS:
        try:
            importlib.import_module(f"vlbook.chapters.{chapter}")
        except ModuleNotFoundError as err:
            if err.name != f"vlbook.chapters.{chapter}":
                raise
    return chapter in PRESETS


def _set_dotted(cfg: dict[str, Any], key: str, value: Any) -> None:
    node = cfg
    parts = key.split(".")
    for part in parts[:-1]:
        if part not in node or not isinstance(node[part], dict):
            raise ParameterError(f"override {key!r}: {part!r} is not a section of the preset")
        node = node[part]
    if parts[-1] not in node:
        known = ", ".join(sorted(node))
        raise ParameterError(f"override {key!r}: unknown key {parts[-1]!r}; known: {known}")
    node[parts[-1]] = value


@dataclass
class Scaled:
    """A value that differs by scale: ``Scaled(smoke=2, toy=200, full=200_000)[scale]``."""

    smoke: Any
    toy: Any
    full: Any
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, scale: str) -> Any:
        if scale not in SCALES:
            raise ParameterError(f"scale={scale!r} is not accepted; accepted values: {SCALES}")
        return getattr(self, scale)
