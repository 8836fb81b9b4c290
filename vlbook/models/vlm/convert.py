"""VLM weights: BERT initialisation and the official fairseq MMPT checkpoints.

:func:`load_bert_weights` starts the encoder and the LM head from a BERT MLM checkpoint (VLM
Sec. 5.2); :func:`convert_mmpt_state_dict` / :func:`load_mmpt_checkpoint` rename and load a
released MMPT VLM checkpoint (``MMBertForMTM`` / ``MMBertForJoint``), reporting every official
tensor it drops or cannot place.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from vlbook.serialization import FAIRSEQ_TYPES, safe_load

if TYPE_CHECKING:  # the model imports this module (VLMConfig.pretrained loads BERT)
    from vlbook.models.vlm.modeling import VLM

__all__ = [
    "VLMConversionResult",
    "convert_mmpt_state_dict",
    "default_weights_dir",
    "load_bert_weights",
    "load_mmpt_checkpoint",
    "mmpt_names",
]

#: ``<repo>/weights``: where local copies of pretrained weights live unless ``$VLBOOK_WEIGHTS``
#: says otherwise (the same folder as :func:`vlbook.paths.weights_root`).
_REPO_WEIGHTS = Path(__file__).resolve().parents[3] / "weights"


def default_weights_dir() -> Path:
    """``$VLBOOK_WEIGHTS`` when set, else ``<repo>/weights`` (as ``vlbook.paths.weights_root``;
    a model package does not import the paths layer, so the rule is restated here)."""
    value = os.environ.get("VLBOOK_WEIGHTS")
    return Path(value).expanduser().resolve() if value else _REPO_WEIGHTS


def load_bert_weights(model: VLM, source: str | Path,
                      weights_dir: str | Path | None = None) -> list[str]:
    """Initialise the encoder and LM head from a BERT MLM checkpoint (Sec. 5.2).

    ``source``: a local folder, a name looked up under ``weights_dir`` first (default
    :func:`default_weights_dir`, i.e. ``weights_root()``), or a hub name. Returns the model
    tensors left at their initial values (the video MLP, ...).
    """
    from transformers import BertForMaskedLM  # heavy optional dependency

    candidates = [Path(source)] if Path(source).exists() else []
    local = Path(weights_dir if weights_dir is not None else default_weights_dir()) / str(source)
    if local.exists():
        candidates.insert(0, local)
    target = str(candidates[0]) if candidates else str(source)
    try:
        bert = BertForMaskedLM.from_pretrained(target)
    except (OSError, ValueError) as err:
        raise RuntimeError(
            f"cannot load BERT weights {source!r}: not found at {local} nor on the hub "
            f"(offline? put a save_pretrained() copy of {source} in {local}): {err}"
        ) from err
    own = model.state_dict()
    loaded = {f"encoder.{k}": v for k, v in bert.bert.state_dict().items()}
    loaded.update({f"lm_head.{k}": v for k, v in bert.cls.state_dict().items()})
    loaded = {k: v for k, v in loaded.items() if k in own and own[k].shape == v.shape}
    model.load_state_dict(loaded, strict=False)
    return sorted(k for k in own if k not in loaded)


@dataclass
class VLMConversionResult:
    """A state dict in vlbook names plus what the mapping dropped or could not place."""

    state_dict: dict[str, torch.Tensor]
    mapping: dict[str, str] = field(default_factory=dict)  # official name -> vlbook name
    dropped: list[str] = field(default_factory=list)  # official tensors vlbook does not use
    unmapped: list[str] = field(default_factory=list)  # official tensors with no rule


_MMPT_COMPONENT = re.compile(r"^(?:[\w]+\.)*?(videomlp|bert|cls)\.(.+)$")
_MMPT_RENAMES: tuple[tuple[str, str], ...] = (
    ("videomlp.linear1.", "video_mlp.input_proj."),
    ("videomlp.LayerNorm.", "video_mlp.norm."),
    ("videomlp.linear2.", "video_mlp.output_proj."),
    ("bert.embeddings.", "encoder.embeddings."),
    ("bert.encoder.", "encoder.encoder."),
    ("cls.predictions.", "lm_head.predictions."),
)
_MMPT_DROPPED = ("bert.pooler.", "bert.embeddings.position_ids")


def convert_mmpt_state_dict(state_dict: Mapping[str, torch.Tensor]) -> VLMConversionResult:
    """Rename a fairseq MMPT VLM checkpoint (``MMBertForMTM`` / ``MMBertForJoint``) to vlbook.

    Any wrapper prefix (``mmmodel.``, ``model.``, ``mm_encoder.``, ``video_encoder.``) is
    stripped up to the first ``videomlp.`` / ``bert.`` / ``cls.``. BERT's sub-module names
    (``encoder.layer.N.attention.self.query`` ...) are the same in MMPT's transformers 3 and
    in vlbook's ``BertModel``. The pooler is dropped (VLM never uses it); the decoder weight
    maps to the tied word embeddings.
    """
    result = VLMConversionResult(state_dict={})
    for name, tensor in state_dict.items():
        match = _MMPT_COMPONENT.match(name)
        if match is None:
            result.unmapped.append(name)
            continue
        local = f"{match.group(1)}.{match.group(2)}"
        if local.startswith(_MMPT_DROPPED):
            result.dropped.append(name)
            continue
        if local == "cls.predictions.decoder.weight":
            new = "encoder.embeddings.word_embeddings.weight"
            if new in result.state_dict or any(
                    k.endswith("bert.embeddings.word_embeddings.weight") for k in state_dict):
                result.dropped.append(name)  # tied: the word embeddings are authoritative
                continue
        else:
            for old, replacement in _MMPT_RENAMES:
                if local.startswith(old):
                    new = replacement + local[len(old):]
                    break
            else:
                result.unmapped.append(name)
                continue
        result.mapping[name] = new
        result.state_dict[new] = tensor
    return result


def load_mmpt_checkpoint(
    model: VLM, path: str | Path, *, trust: bool = False
) -> VLMConversionResult:
    """Load an MMPT ``checkpoint_best.pt`` (fairseq: weights under ``"model"``) into ``model``.

    The file is read without running pickled code: tensors, containers and the
    ``argparse.Namespace`` fairseq keeps under ``"args"`` are accepted; anything else (e.g. an
    omegaconf ``"cfg"``) raises :class:`~vlbook.serialization.UnsafeCheckpointError` unless
    ``trust=True`` says the file comes from a trusted source.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MMPT checkpoint {path} does not exist")
    raw = safe_load(path, allow=FAIRSEQ_TYPES, trust=trust)
    state = raw.get("model", raw) if isinstance(raw, dict) else raw
    result = convert_mmpt_state_dict(state)
    own = model.state_dict()
    bad = [k for k, v in result.state_dict.items() if k not in own or own[k].shape != v.shape]
    if bad:
        raise ValueError(f"{path}: {len(bad)} converted tensor(s) do not fit the model "
                         f"(name or shape): {bad[:5]}")
    missing = [k for k in own if k not in result.state_dict
               and k != "lm_head.predictions.decoder.weight" and not k.startswith("segment_head")]
    if missing:
        warnings.warn(f"{path} lacks {len(missing)} model tensor(s), kept at initial values: "
                      f"{missing[:6]}", stacklevel=2)
    model.load_state_dict(result.state_dict, strict=False)
    return result


def mmpt_names(model: VLM) -> dict[str, str]:
    """vlbook name -> MMPT name of every tensor (for checks of the converter)."""
    names = {}
    for name in model.state_dict():
        if name == "lm_head.predictions.decoder.weight" or name.startswith("segment_head"):
            continue
        for old, replacement in _MMPT_RENAMES:
            if name.startswith(replacement):
                names[name] = "mmmodel.mm_encoder." + old + name[len(replacement):]
                break
    return names
