"""E-ViLM (Fang et al.): a small video-language model trained with a semantic VQ video tokenizer.

:mod:`~vlbook.models.evilm.modeling` holds the model and the tokenizer,
:mod:`~vlbook.models.evilm.convert` the EdgeNeXt weight loader,
:mod:`~vlbook.models.evilm.variants` the named variants (registered on import). The chapter
(presets, toy training, evaluations) is :mod:`vlbook.chapters.evilm`.
"""

from __future__ import annotations

from vlbook.models.evilm import convert, modeling, variants
from vlbook.models.evilm.convert import *  # noqa: F403
from vlbook.models.evilm.modeling import *  # noqa: F403
from vlbook.models.evilm.variants import *  # noqa: F403  (importing it registers the variants)

__all__ = [*modeling.__all__, *convert.__all__, *variants.__all__]
