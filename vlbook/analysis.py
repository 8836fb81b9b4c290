"""Model analysis: parameter counts per module and FLOPs per forward.

FLOPs are counted with :class:`torch.utils.flop_counter.FlopCounterMode` on the **meta** device:
no memory is allocated (a ViT-L configuration costs nothing). On CPU tensors PyTorch's counter
has no formula for the CPU fused-attention kernel (``_scaled_dot_product_flash_attention_for_cpu``
and its backward) and would report ViT-B/16 at 33.70 GFLOPs instead of 35.13; :func:`count_flops`
adds both (:data:`CPU_ATTENTION_FLOPS`), counting the model's FLOPs as on meta: ``4 B h L S d``
forward (``Q K^T`` and ``A V``), twice that backward (the kernel's recomputation of the scores
is not model work and is not counted). Only matrix products and convolutions are counted, as
the counter does; element-wise operations, norms and softmax are not.

Units — two conventions, always named:

* **FLOPs** (:attr:`FlopCount.gflops`): a multiply-add is 2 floating-point operations; the unit
  of hardware throughput and of model-FLOP utilisation (``vlbook.bench``).
* **MACs** (:attr:`FlopCount.gmacs` = FLOPs / 2): multiply-adds, what fvcore and thop count.
  The "GFLOPs" columns of the video papers are in this unit (ViT-B/16 at 224 px: the "17.6
  GFLOPs" quoted since DeiT are 17.6 GMACs = 35.1 GFLOPs; UMT Table 5's 180 for ViT-B at
  8x224 are fvcore multiply-adds; E-ViLM Table 1 counts the same way). Compare a paper's figure
  with ``gmacs``, and say "GMACs" beside it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass
class ParameterCount:
    """Parameters of a model: totals and per-module counts (at the requested depth)."""

    total: int
    trainable: int
    per_module: dict[str, int] = field(default_factory=dict)

    def to_frame(self) -> Any:
        """A pandas DataFrame: module, parameters, millions, share of total."""
        import pandas as pd

        rows = [
            {
                "module": name,
                "parameters": count,
                "millions": count / 1e6,
                "share": count / self.total if self.total else 0.0,
            }
            for name, count in self.per_module.items()
        ]
        return pd.DataFrame(rows, columns=["module", "parameters", "millions", "share"])


def count_parameters(model: nn.Module, by: str = "module", depth: int = 1) -> ParameterCount:
    """Count parameters (shared/tied ones once), grouped by module name prefix.

    ``by="module"`` groups by the first ``depth`` components of the parameter name
    (``depth=1``: ``video_encoder``, ``text_encoder``, …); ``by="total"`` gives totals only.
    """
    if by not in ("module", "total"):
        raise ValueError(f"by={by!r}; accepted: 'module', 'total'")
    if depth < 1:
        raise ValueError(f"depth={depth}; expected >= 1")
    total = trainable = 0
    per_module: dict[str, int] = {}
    for name, param in model.named_parameters():  # deduplicates shared parameters
        n = param.numel()
        total += n
        trainable += n if param.requires_grad else 0
        if by == "module":
            key = ".".join(name.split(".")[:-1][:depth]) or "(root)"
            per_module[key] = per_module.get(key, 0) + n
    return ParameterCount(total=total, trainable=trainable, per_module=per_module)


@dataclass
class FlopCount:
    """FLOPs of one call: ``total`` and per module (at the requested depth), forward or fwd+bwd."""

    total: int
    per_module: dict[str, int] = field(default_factory=dict)
    per_operator: dict[str, int] = field(default_factory=dict)
    backward: bool = False
    device: str = "meta"

    @property
    def gflops(self) -> float:
        """Billions of FLOPs (a multiply-add counts 2)."""
        return self.total / 1e9

    @property
    def gmacs(self) -> float:
        """Billions of multiply-adds (FLOPs / 2): the unit of the papers' "GFLOPs" columns."""
        return self.total / 2e9

    def to_frame(self) -> Any:
        import pandas as pd

        rows = [
            {
                "module": m,
                "flops": f,
                "gflops": f / 1e9,
                "share": f / self.total if self.total else 0,
            }
            for m, f in self.per_module.items()
        ]
        return pd.DataFrame(rows, columns=["module", "flops", "gflops", "share"])


def _group_by_depth(counts: dict[str, Any], root: str, depth: int) -> dict[str, int]:
    """Per-module FLOPs at ``depth``; a container never called itself (``ModuleList``) gets the
    sum of its shallowest called descendants; a leaf shallower than ``depth`` counts as itself."""
    recorded = {
        tuple(name[len(root) + 1 :].split(".")): int(sum(ops.values()))
        for name, ops in counts.items()
        if name.startswith(root + ".")
    }
    out: dict[str, int] = {}
    for parts, flops in recorded.items():
        if len(parts) < depth and any(
            other[: len(parts)] == parts and len(other) > len(parts) for other in recorded
        ):
            continue  # shallower than depth and split further below: its children are counted
        key = parts[:depth]
        has_recorded_ancestor = any(parts[:k] in recorded for k in range(depth, len(parts)))
        if not has_recorded_ancestor:
            name = ".".join(key)
            out[name] = out.get(name, 0) + flops
    return out


def _cpu_attention_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any,
                         out_shape: Any = None, **kwargs: Any) -> int:
    """``Q K^T`` and ``A V`` of the CPU fused kernel: ``2 * (2 B h L S d)``."""
    b, h, length, d = query_shape
    return 2 * (2 * b * h * length * key_shape[2] * d) if value_shape[-1] == d else (
        2 * b * h * length * key_shape[2] * d + 2 * b * h * length * key_shape[2] * value_shape[-1])


def _cpu_attention_backward_flops(grad_out_shape: Any, query_shape: Any, key_shape: Any,
                                  value_shape: Any, *args: Any, out_shape: Any = None,
                                  **kwargs: Any) -> int:
    """Gradients of the two products (four of the same size): twice the forward. The kernel
    also recomputes the scores; that is not model work and is not counted (as on meta)."""
    return 2 * _cpu_attention_flops(query_shape, key_shape, value_shape)


#: Formulas for the CPU fused-attention kernels that ``FlopCounterMode`` lacks.
CPU_ATTENTION_FLOPS: dict[Any, Callable[..., int]] = {}
for _name, _formula in (("_scaled_dot_product_flash_attention_for_cpu", _cpu_attention_flops),
                        ("_scaled_dot_product_flash_attention_for_cpu_backward",
                         _cpu_attention_backward_flops)):
    _op = getattr(torch.ops.aten, _name, None)
    if _op is not None:
        CPU_ATTENTION_FLOPS[_op] = _formula


def _to_device(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        if device.type == "meta":
            return torch.empty_like(value, device="meta").requires_grad_(value.requires_grad)
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value


class _Call(nn.Module):
    def __init__(self, model: nn.Module, fn: Callable[[nn.Module, Any], Any]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, inputs: Any) -> Any:
        return self.fn(self.model, inputs)


def _default_forward(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def _scalar_for_backward(out: Any) -> torch.Tensor:
    if isinstance(out, dict):
        out = out["loss"] if "loss" in out else next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        out = out[0]
    return out.float().sum()


def count_flops(
    model: nn.Module | Callable[[], nn.Module],
    inputs: Any,
    *,
    forward: Callable[[nn.Module, Any], Any] | None = None,
    backward: bool = False,
    depth: int = 1,
    device: str = "meta",
) -> FlopCount:
    """FLOPs of one forward (``backward=True``: forward + backward) of ``model`` on ``inputs``.

    ``model`` is a module or a zero-argument factory; a factory is built directly on the meta
    device (no memory), a module is deep-copied to it. ``inputs`` (a tensor, tuple of tensors
    or a batch dict) are replaced by meta tensors of the same shapes. ``forward(model, inputs)``
    overrides the call (default ``model(inputs)``, or ``model(*inputs)`` for a tuple), e.g.
    ``lambda m, b: m.encode_video(b["video"])``. Models whose forward needs real values
    (``.item()``, data-dependent shapes) fail on meta: pass ``device="cpu"`` for those (fused
    attention is counted there too, :data:`CPU_ATTENTION_FLOPS`; other fused kernels without a
    formula, e.g. CUDA's on another device, are not).
    """
    target = torch.device(device)
    if callable(model) and not isinstance(model, nn.Module):
        with target:
            module = model()
    elif target.type == "meta":
        module = copy.deepcopy(model).to("meta")
    else:
        module = model.to(target)
    inputs = _to_device(inputs, target)
    # Called through a wrapper so that the counter names submodules from the model's root even
    # when ``forward`` calls a method (``encode_video``) instead of the module itself.
    wrapper = _Call(module, forward or _default_forward)
    counter = FlopCounterMode(display=False, depth=None, custom_mapping=CPU_ATTENTION_FLOPS)
    with counter:
        if backward:
            _scalar_for_backward(wrapper(inputs)).backward()
        else:
            with torch.no_grad():
                wrapper(inputs)
    counts = counter.get_flop_counts()
    total = counter.get_total_flops()
    per_module = _group_by_depth(counts, f"{_Call.__name__}.model", depth)
    attributed = sum(per_module.values())
    if total - attributed > 0:
        per_module["(root)"] = int(total - attributed)
    per_operator = {str(op).split(".")[-1]: int(n) for op, n in counts.get("Global", {}).items()}
    return FlopCount(
        total=int(total),
        per_module=per_module,
        per_operator=per_operator,
        backward=backward,
        device=str(target),
    )


__all__ = ["CPU_ATTENTION_FLOPS", "FlopCount", "ParameterCount", "count_flops", "count_parameters"]
