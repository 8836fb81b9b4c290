"""E-ViLM weights: the ImageNet EdgeNeXt-small backbone.

E-ViLM has no public code, hence no official checkpoint to convert; the only external weights
it starts from are EdgeNeXt-small's ImageNet ones, which :func:`load_edgenext_weights` loads into
the video encoder from a local file or through timm. The model's own tokenizer checkpoints are
written and read by :func:`~vlbook.models.evilm.modeling.save_video_tokenizer` /
:func:`~vlbook.models.evilm.modeling.load_video_tokenizer`.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # the model imports this module (EdgeNeXtFrameEncoder(pretrained) loads)
    from vlbook.models.evilm.modeling import EdgeNeXtFrameEncoder

__all__ = ["default_weights_dir", "load_edgenext_weights"]

#: ``<repo>/weights``: where local copies of pretrained weights live unless ``$VLBOOK_WEIGHTS``
#: says otherwise (the same folder as :func:`vlbook.paths.weights_root`).
_REPO_WEIGHTS = Path(__file__).resolve().parents[3] / "weights"


def default_weights_dir() -> Path:
    """``$VLBOOK_WEIGHTS`` when set, else ``<repo>/weights`` (as ``vlbook.paths.weights_root``;
    a model package does not import the paths layer, so the rule is restated here)."""
    value = os.environ.get("VLBOOK_WEIGHTS")
    return Path(value).expanduser().resolve() if value else _REPO_WEIGHTS


def load_edgenext_weights(encoder: EdgeNeXtFrameEncoder, source: str | Path | bool) -> list[str]:
    """Load EdgeNeXt-small ImageNet weights from a local file (``.pth``/``.safetensors``,
    relative paths under :func:`default_weights_dir`, i.e. ``weights_root()``) or, with
    ``source=True`` or a hub name, through timm. Returns the checkpoint keys that were not used.
    Offline without a local file this raises a ``RuntimeError`` naming the file it looked for."""
    if source is True or (isinstance(source, str) and not str(source).endswith(
            (".pth", ".pt", ".bin", ".safetensors"))):
        name = "edgenext_small.usi_in1k" if source is True else str(source)
        local = default_weights_dir() / "evilm" / "edgenext_small.safetensors"
        if local.exists():
            source = local
        else:
            import timm  # heavy optional dependency

            try:
                state = timm.create_model(name, pretrained=True, num_classes=0).state_dict()
            except Exception as error:  # noqa: BLE001 - offline hub errors vary
                raise RuntimeError(
                    f"could not load EdgeNeXt weights {name!r} from the hub ({error}); place a "
                    f"state dict at {local} or pass a file path") from error
            return _load_state(encoder.net, state)
    path = Path(source)
    if not path.is_absolute() and not path.exists():
        path = default_weights_dir() / path
    if not path.exists():
        raise RuntimeError(f"EdgeNeXt weight file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file  # optional dependency

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model", state.get("state_dict", state))
    return _load_state(encoder.net, state)


def _load_state(module: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    own = module.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in usable]
    if missing:
        warnings.warn(f"{len(missing)} tensor(s) kept at their initial values: {missing[:5]}",
                      stacklevel=3)
    module.load_state_dict(usable, strict=False)
    return [k for k in state if k not in usable]

