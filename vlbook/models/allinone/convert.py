"""All-in-one weights: timm ViT/DeiT backbones and the official checkpoints.

:func:`load_timm_backbone` initialises the backbone from ImageNet weights (Table 1
"Initialization"); :func:`convert_official_state_dict` / :func:`load_official_checkpoint` read
the released ``showlab/all-in-one`` checkpoints into :class:`~vlbook.models.allinone.AllInOne`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from vlbook.models.allinone.modeling import AllInOne
from vlbook.serialization import FAIRSEQ_TYPES, safe_load

__all__ = [
    "ConversionResult",
    "convert_official_state_dict",
    "load_official_checkpoint",
    "load_timm_backbone",
]


def _backbone_key(timm_key: str) -> str | None:
    """The model's name for a timm ViT/DeiT parameter (``None``: not used)."""
    if timm_key.startswith(("head", "fc_norm", "pre_logits")):
        return None
    if timm_key.startswith(("blocks.", "patch_embed.", "norm.")) or timm_key in (
        "cls_token", "dist_token", "pos_embed",
    ):
        return f"transformer.{timm_key}"
    return None


def load_timm_backbone(model: AllInOne, source: str | Path) -> list[str]:
    """Initialise the backbone from timm ViT/DeiT weights (Table 1 "Initialization").

    ``source``: a local ``.pth``/``.safetensors`` state dict in timm's naming, or a timm model
    name fetched through timm's hub (set ``HF_HUB_OFFLINE=0`` and have network). Returns the
    model keys loaded; the position table is resized if the grid differs.
    """
    path = Path(str(source)).expanduser()
    if path.is_file():
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file  # optional dependency

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            state = state.get("model", state) if isinstance(state, dict) else state
    else:
        import timm  # heavy optional dependency

        try:
            state = timm.create_model(str(source), pretrained=True, num_classes=0).state_dict()
        except Exception as err:  # no network / unknown name: say what to do
            raise RuntimeError(
                f"could not load timm weights {source!r} ({type(err).__name__}: {err}); pass a "
                "local state-dict file or allow hub downloads (HF_HUB_OFFLINE=0)"
            ) from err
    own = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = _backbone_key(key)
        if target is None or target not in own:
            continue
        if key == "pos_embed" and value.shape != own[target].shape:
            value = _resize_positions(value, own[target].shape, model.config.num_prefix_tokens)
        if value.shape != own[target].shape:
            raise ValueError(f"timm weight {key} has shape {tuple(value.shape)}; the model's "
                             f"{target} has {tuple(own[target].shape)}")
        loaded[target] = value
    missing = [k for k in own if k.startswith("transformer.") and k not in loaded
               and not k.endswith("temporal_embed")]
    if missing:
        raise ValueError(f"timm weights {source!r} lack backbone tensors: {missing[:5]}...")
    model.load_state_dict(loaded, strict=False)
    return sorted(loaded)


def _resize_positions(table: torch.Tensor, shape: torch.Size, prefix: int) -> torch.Tensor:
    grid_old = int(math.isqrt(table.shape[1] - prefix))
    grid_new = int(math.isqrt(shape[1] - prefix))
    grid = table[:, prefix:].reshape(1, grid_old, grid_old, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(grid_new, grid_new), mode="bicubic", align_corners=False)
    return torch.cat([table[:, :prefix], grid.permute(0, 2, 3, 1).reshape(1, -1, shape[2])], 1)


@dataclass
class ConversionResult:
    """Official checkpoint → vlbook: converted ``state_dict``, ``mapping`` source → target,
    ``dropped`` source → reason (tensors vlbook does not use)."""

    state_dict: dict[str, torch.Tensor]
    mapping: dict[str, str] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)


#: Official prefixes renamed in vlbook (the rest keeps the official name).
_RENAMES: tuple[tuple[str, str], ...] = (
    ("itm_score.fc.", "vtm_head.fc."),
    ("mlm_score.", "mlm_head."),
    ("txt_proj.", "text_proj."),
    ("vid_proj.", "video_proj."),
)
#: Official tensors with no counterpart, and why.
_DROPPED: tuple[tuple[str, str], ...] = (
    ("text_embeddings.position_ids", "buffer (positions are computed)"),
    ("text_embeddings.token_type_ids", "buffer (token types are constant)"),
    ("transformer.head.", "ImageNet classifier of the initial ViT, unused"),
    ("transformer.head_dist.", "DeiT distillation classifier, unused"),
    ("transformer.mask_token", "masked patch prediction, unused"),
    ("mpp_score.", "masked patch prediction head, unused"),
    ("rank_output.", "copy of VTM row 1 (vlbook scores with the VTM head)"),
    ("rank_output_2.", "copy of VTM row 1 (VCR), unused"),
    ("mc_vqa_classifier.", "TVQA head, not reproduced"),
    ("vcop_classifier.", "clip-order head, not reproduced"),
    ("nlvr2_classifier.", "NLVR2 head, not reproduced"),
)


def convert_official_state_dict(
    state_dict: Mapping[str, torch.Tensor], num_frames: int | None = None
) -> ConversionResult:
    """Rename an official All-in-one checkpoint (``showlab/all-in-one``) to vlbook's names.

    Accepts a Lightning checkpoint (``{"state_dict": ...}``) or a plain state dict, with or
    without a ``module.`` prefix. Every tensor is either mapped or listed in ``dropped`` with
    its reason; an unknown name raises ``KeyError`` (a checkpoint this converter was not written
    for). ``vqa_classifier`` (open-ended QA) becomes ``qa_head``; the ``temporal_embed`` is
    truncated or zero-padded to ``num_frames`` as the code's ``_inflate_positional_embeds``.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]
    result = ConversionResult(state_dict={})
    vqa_keys = sorted(k for k in state_dict if k.startswith("vqa_classifier."))
    vqa_layers = sorted({int(k.split(".")[1]) for k in vqa_keys})
    # the QA head is Sequential(Dropout, Linear, LayerNorm, GELU, Linear): indices 1, 2, 4
    vqa_index = dict(zip(vqa_layers, (1, 2, 4))) if len(vqa_layers) == 3 else {}
    for raw_key, value in state_dict.items():
        key = raw_key[len("module."):] if raw_key.startswith("module.") else raw_key
        reason = next((why for prefix, why in _DROPPED if key.startswith(prefix)), None)
        if reason is not None:
            result.dropped[raw_key] = reason
            continue
        target = key
        for old, new in _RENAMES:
            if key.startswith(old):
                target = new + key[len(old):]
                break
        if key.startswith("vqa_classifier."):
            parts = key.split(".")
            if not vqa_index:
                raise KeyError(f"{raw_key}: unexpected layout of vqa_classifier "
                               f"(layers {vqa_layers})")
            target = ".".join(["qa_head", str(vqa_index[int(parts[1])]), *parts[2:]])
        known = (
            "text_embeddings.", "token_type_embeddings.", "transformer.", "pooler.",
            "vtm_head.", "mlm_head.", "text_proj.", "video_proj.", "qa_head.",
        )
        if not target.startswith(known):
            raise KeyError(f"official checkpoint tensor {raw_key!r} has no vlbook counterpart "
                           "and is not a known unused tensor")
        if target == "transformer.temporal_embed" and num_frames is not None:
            value = _fit_frames(value, num_frames)
        result.state_dict[target] = value
        result.mapping[raw_key] = target
    return result


def _fit_frames(table: torch.Tensor, num_frames: int) -> torch.Tensor:
    if table.shape[1] >= num_frames:
        return table[:, :num_frames]
    padded = table.new_zeros(table.shape[0], num_frames, table.shape[2])
    padded[:, : table.shape[1]] = table
    return padded


def load_official_checkpoint(
    model: AllInOne, source: str | Path | Mapping[str, torch.Tensor], *, trust: bool = False
) -> ConversionResult:
    """Load an official All-in-one checkpoint (path or state dict) into ``model``.

    Raises ``ValueError`` naming the tensors whose shapes differ or that the model lacks, and
    warns about model tensors the checkpoint did not provide (e.g. heads it was not trained
    with). A model without a temporal embedding (All-in-one-S, as the code's distilled
    backbone) lists the checkpoint's unused ``transformer.temporal_embed`` in ``dropped``.
    A file is read without running pickled code (tensors, containers and
    ``argparse.Namespace`` hyper-parameters only); anything else raises
    :class:`~vlbook.serialization.UnsafeCheckpointError` unless ``trust=True``.
    """
    if isinstance(source, Mapping):
        state = source
    else:
        state = safe_load(source, allow=FAIRSEQ_TYPES, trust=trust)
    result = convert_official_state_dict(state, num_frames=model.config.num_frames)
    if model.transformer.temporal_embed is None:  # DeiT-S: the code never adds it
        for raw_key, target in list(result.mapping.items()):
            if target == "transformer.temporal_embed":
                del result.mapping[raw_key], result.state_dict[target]
                result.dropped[raw_key] = ("unused: the distilled backbone's visual_embed adds no "
                                           "temporal embedding")
    if "qa_head.4.weight" in result.state_dict and model.qa_head is None:
        model.build_qa_head(int(result.state_dict["qa_head.4.weight"].shape[0]))
    own = model.state_dict()
    unknown = [k for k in result.state_dict if k not in own]
    wrong = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in result.state_dict.items() if k in own and v.shape != own[k].shape
    ]
    if unknown or wrong:
        raise ValueError(f"official checkpoint does not fit {type(model).__name__}: unknown "
                         f"{unknown[:5]}, shape mismatches {wrong[:5]}")
    absent = [k for k in own if k not in result.state_dict]
    if absent:
        warnings.warn(f"official checkpoint lacks {len(absent)} model tensor(s) (kept at their "
                      f"initial values): {absent[:6]}", stacklevel=2)
    model.load_state_dict(result.state_dict, strict=False)
    return result
