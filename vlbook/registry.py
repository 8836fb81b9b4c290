"""Named registries (timm style) for models, datasets and training presets."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A mapping from names to factories, filled with the :meth:`register` decorator.

    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(): return 1
    >>> MODELS.create("tiny")
    1
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str | None = None) -> Callable[[T], T]:
        def deco(fn: T) -> T:
            key = name or fn.__name__
            if key in self._items and self._items[key] is not fn:
                raise KeyError(f"{self.kind} {key!r} is registered twice")
            self._items[key] = fn
            return fn

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            known = ", ".join(sorted(self._items)) or "(none registered)"
            raise KeyError(f"unknown {self.kind} {name!r}; known {self.kind}s: {known}")
        return self._items[name]

    def create(self, name: str, **kwargs: Any) -> Any:
        return self.get(name)(**kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
