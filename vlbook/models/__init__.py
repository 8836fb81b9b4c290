"""Models: one file per paper, named variants in :data:`MODELS` (timm style).

``vlbook.models.create_model("allinone_tiny")`` builds a registered variant; the paper modules
register themselves when imported (see :func:`_import_model_modules`).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

from vlbook.models.base import MODELS, VLModel

__all__ = ["MODELS", "VLModel", "create_model", "list_models"]


def _import_model_modules() -> None:
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def create_model(name: str, **kwargs: Any) -> VLModel:
    """Build the registered model variant ``name`` with keyword overrides."""
    _import_model_modules()
    return MODELS.create(name, **kwargs)


def list_models() -> list[str]:
    """Names of every registered model variant."""
    _import_model_modules()
    return MODELS.names()
