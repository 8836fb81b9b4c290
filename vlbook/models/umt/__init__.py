"""Unmasked Teacher (UMT, Li et al., ICCV 2023): CLIP-guided masked video modelling.

:mod:`~vlbook.models.umt.modeling` holds the student, the teachers and the stage-2 towers,
:mod:`~vlbook.models.umt.convert` the official-checkpoint and BERT loaders,
:mod:`~vlbook.models.umt.variants` the named variants (registered on import). The chapter
(presets, data, training runs, evaluations) is :mod:`vlbook.chapters.umt`.
"""

from __future__ import annotations

from vlbook.models.umt import convert, modeling, variants
from vlbook.models.umt.convert import *  # noqa: F403
from vlbook.models.umt.modeling import *  # noqa: F403
from vlbook.models.umt.variants import *  # noqa: F403  (importing it registers the variants)

__all__ = [*modeling.__all__, *convert.__all__, *variants.__all__]
