"""SimVTP (Ma et al., 2022): a video-text masked autoencoder with one shared encoder.

:mod:`~vlbook.models.simvtp.modeling` holds the config, the blocks and the model,
:mod:`~vlbook.models.simvtp.convert` the VideoMAE / timm / BERT weight loaders (Table 4c),
:mod:`~vlbook.models.simvtp.variants` the named variants (registered on import). The chapter
(presets, data, toy runs, evaluations) is :mod:`vlbook.chapters.simvtp`.
"""

from __future__ import annotations

from vlbook.models.simvtp import convert, modeling, variants
from vlbook.models.simvtp.convert import *  # noqa: F403
from vlbook.models.simvtp.modeling import *  # noqa: F403
from vlbook.models.simvtp.variants import *  # noqa: F403  (importing it registers the variants)

__all__ = [*modeling.__all__, *convert.__all__, *variants.__all__]
