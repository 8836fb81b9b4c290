"""Process-group helpers: rank, world size and an all-gather that keeps gradients.

Everything here also works without ``torch.distributed`` being initialised (a single process,
a notebook): rank 0, world size 1, gathers return their input.

Why a gather *with gradient*: UMT's VTC (and CLIP-style losses in general) contrast every video
with every caption of the *global* batch, so the features of the other ranks must enter the
local loss, and the gradient that the other ranks compute with respect to *our* features must
come back to us. :func:`all_gather_with_grad` does both; see its docstring for the scaling
convention with DDP.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = [
    "all_gather_no_grad",
    "all_gather_with_grad",
    "get_rank",
    "get_world_size",
    "is_distributed",
    "is_main_process",
]


def is_distributed() -> bool:
    """True when a default process group is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    """Rank of this process in the default group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the default group (1 when not distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process)."""
    return get_rank() == 0


def _gathered_sizes(tensor: torch.Tensor) -> list[int]:
    size = torch.tensor([tensor.shape[0]], dtype=torch.long, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(get_world_size())]
    dist.all_gather(sizes, size)
    return [int(s) for s in sizes]


def _all_gather_padded(tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Concatenate every rank's ``tensor`` along dim 0; ranks may hold different lengths."""
    longest = max(sizes)
    padded = tensor
    if tensor.shape[0] < longest:
        pad = tensor.new_zeros((longest - tensor.shape[0], *tensor.shape[1:]))
        padded = torch.cat([tensor, pad], dim=0)
    buffers = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(buffers, padded.contiguous())
    return torch.cat([buf[:n] for buf, n in zip(buffers, sizes)], dim=0)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        sizes = _gathered_sizes(tensor)
        rank = get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return _all_gather_padded(tensor, sizes)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` ``(B_r, ...)`` from all ranks along dim 0, keeping autograd.

    Rank order; ranks may hold different ``B_r`` (a last, smaller batch). Backward sums the
    gradient that every rank computed for the gathered tensor (all-reduce) and returns this
    rank's slice, as UMT's ``GatherLayer`` does.

    Scaling convention: when every rank computes the same global loss ``L`` from the gathered
    features, the gradient reaching this rank's features is ``world_size * dL/dx_r``; DDP then
    *averages* parameter gradients over ranks, so the parameter update equals that of one
    process on the whole batch. Without a process group (or world size 1) the input is returned
    unchanged.
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)


@torch.no_grad()
def all_gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0 without gradient (ids, labels)."""
    if not is_distributed():
        return tensor
    return _all_gather_padded(tensor, _gathered_sizes(tensor))
