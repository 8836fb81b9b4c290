"""vlbook: video-language pre-training, five papers reproduced at three scales.

The library behind the vlbook Jupyter Book. Sub-packages:

- :mod:`vlbook.data` — synthetic benchmark, real dataset readers, video decoding.
- :mod:`vlbook.masking` — random / tube / block / semantic video masks, BERT text masking.
- :mod:`vlbook.losses` — VTC, VTM, MLM and the papers' own objectives.
- :mod:`vlbook.eval` — retrieval and downstream metrics with explicit protocols.
- :mod:`vlbook.nn` — transformer blocks with fused attention and on-demand capture.
- :mod:`vlbook.viz` — attention maps, mask overlays, reconstruction grids.
- :mod:`vlbook.train` — the accelerate-based trainer and ``python -m vlbook.train``.
- :mod:`vlbook.models` — one file per paper and a registry of named variants.
"""

__version__ = "0.1.0"
