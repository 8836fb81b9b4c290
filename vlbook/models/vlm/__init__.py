"""VLM: task-agnostic video-language pre-training of one BERT (Xu et al., Findings of ACL 2021).

:mod:`~vlbook.models.vlm.modeling` holds the config, the video token MLP, the toy frame encoder,
the attention masks of Fig. 3 and the model, :mod:`~vlbook.models.vlm.convert` the BERT and
official MMPT checkpoint loaders, :mod:`~vlbook.models.vlm.variants` the named variants
(registered on import). The chapter (presets, toy data, fine-tuning and evaluations) is
:mod:`vlbook.chapters.vlm`.
"""

from __future__ import annotations

from vlbook.models.vlm import convert, modeling, variants
from vlbook.models.vlm.convert import *  # noqa: F403
from vlbook.models.vlm.modeling import *  # noqa: F403
from vlbook.models.vlm.variants import *  # noqa: F403  (importing it registers the variants)

__all__ = [*modeling.__all__, *convert.__all__, *variants.__all__]
