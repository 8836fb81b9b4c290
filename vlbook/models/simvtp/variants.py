"""The named SimVTP variants, each registered under its function's name.

``create_model("simvtp_base", encoder_init="k400_videomae", bert_embeddings=True)`` starts the
shared encoder from a Table 4c initialisation (``encoder_init``: a key of
:data:`~vlbook.models.simvtp.convert.ENCODER_INITIALISATIONS`, ``encoder_source``: a state dict,
file or hub name instead of the default) and the text embeddings from BERT-base
(``bert_embeddings=True``, or a BERT name / folder). Other keyword arguments override
:class:`~vlbook.models.simvtp.SimVTPConfig` fields.
"""

from __future__ import annotations

from typing import Any

from vlbook.models.base import register_model
from vlbook.models.simvtp.convert import initialise_encoder, load_bert_embeddings
from vlbook.models.simvtp.modeling import SimVTP, SimVTPConfig

__all__ = [
    "REFERENCE_PARAMS_M",
    "simvtp_base",
    "simvtp_toy",
]

#: Reference counts (millions): VideoMAE's ViT-B (SimVTP initialises from it; VideoMAE
#: Table 1 lists 87 M) and BERT-base's embedding layer (23.8 M).
REFERENCE_PARAMS_M: dict[str, float] = {"encoder": 87.0, "text_embeddings": 23.8}


def _build(defaults: dict[str, Any], **kwargs: Any) -> SimVTP:
    """``SimVTP`` of ``defaults`` updated by ``kwargs``; ``encoder_init=`` (with
    ``encoder_source=``) and ``bert_embeddings=`` (``True``: ``bert-base-uncased``) load
    weights."""
    init = kwargs.pop("encoder_init", None)
    init_source = kwargs.pop("encoder_source", None)
    bert = kwargs.pop("bert_embeddings", None)
    model = SimVTP(SimVTPConfig(**{**defaults, **kwargs}))
    if init:
        initialise_encoder(model, init, init_source)
    if bert:
        load_bert_embeddings(model, "bert-base-uncased" if bert is True else bert)
    return model


@register_model
def simvtp_base(**kwargs: Any) -> SimVTP:
    """The released SimVTP (Sec. 4.1): ViT-B shared encoder (VideoMAE layout), BERT-base text
    embeddings, 4-block video decoder at 384 wide, 16 frames at 224 px."""
    return _build(dict(), **kwargs)


@register_model
def simvtp_toy(**kwargs: Any) -> SimVTP:
    """A CPU-sized SimVTP for the synthetic benchmark (not in the paper): 96-wide encoder of 3
    blocks on 8 frames at 32 px (2x8x8 tubes), 1-block decoder, 1000-word vocabulary."""
    return _build(dict(image_size=32, patch_size=8, num_frames=8, embed_dim=96, depth=3,
                       num_heads=3, decoder_dim=48, decoder_heads=3, video_decoder_depth=1,
                       vocab_size=1000, max_text_len=32), **kwargs)
