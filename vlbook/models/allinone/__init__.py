"""All-in-one (Wang et al., 2022): one ViT for raw frames and text, with temporal token rolling.

:mod:`~vlbook.models.allinone.modeling` holds the model, :mod:`~vlbook.models.allinone.convert`
the timm and official-checkpoint loaders, :mod:`~vlbook.models.allinone.variants` the named
variants of Table 1 (registered on import). The chapter (presets, data, evaluations) is
:mod:`vlbook.chapters.allinone`.
"""

from __future__ import annotations

from vlbook.models.allinone import convert, modeling, variants
from vlbook.models.allinone.convert import *  # noqa: F403
from vlbook.models.allinone.modeling import *  # noqa: F403
from vlbook.models.allinone.variants import *  # noqa: F403  (importing it registers the variants)

__all__ = [*modeling.__all__, *convert.__all__, *variants.__all__]
