"""Element-wise dropout whose random numbers are cheap on the CPU.

PyTorch's CPU dropout draws one Bernoulli number per element (``bernoulli_``, a float per
draw). In an All-in-one-Ti training step (batch 4, 3 frames at 224 px, dropout 0.1 after every
projection and MLP layer, the release config) those draws are about a third of the whole
step on a 2-core CPU: ``vlbook.bench official`` measures 2.8 s per step with dropout and
1.8 s without it.

:class:`FastDropout` draws the same distribution with fewer random numbers: one 64-bit word of
the default generator (``random_``, uniform over ``[0, 2^63)``) holds two independent 31-bit
uniform integers, and an element is kept when its integer is at least
``round(p * 2^31)``. The kept elements are scaled by ``1 / (1 - p')`` with
``p' = round(p * 2^31) / 2^31`` (``|p' - p| <= 2^-32``), so the output's expectation is the
input exactly, as in :func:`torch.nn.functional.dropout`. Seeding (:func:`torch.manual_seed`)
makes the masks reproducible; they differ from PyTorch's masks (another use of the random
stream), as the masks of any two implementations do. Off the CPU, and in evaluation mode,
it is :class:`torch.nn.Dropout`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

__all__ = ["FastDropout", "fast_dropout", "keep_mask", "keep_threshold", "torch_dropout",
           "use_fast_dropout"]

_BITS = 31
_LANE = (1 << _BITS) - 1
#: Off inside :func:`torch_dropout` (benchmarks compare the two draws on one model).
_ENABLED = [True]


@contextlib.contextmanager
def torch_dropout() -> Iterator[None]:
    """Inside this block :class:`FastDropout` draws with PyTorch's own dropout."""
    _ENABLED.append(False)
    try:
        yield
    finally:
        _ENABLED.pop()


def keep_threshold(p: float) -> int:
    """The integer below which a 31-bit uniform draw drops its element: ``round(p * 2^31)``."""
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return int(round(p * (1 << _BITS)))


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Boolean mask of ``shape``, each entry ``True`` with probability ``1 - p'`` independently
    (``p'`` of :func:`keep_threshold`), from ``ceil(n / 2)`` 64-bit random words."""
    n = 1
    for s in shape:
        n *= int(s)
    words = torch.empty((n + 1) // 2, dtype=torch.int64, device=device)
    words.random_(generator=generator)
    lanes = words.view(torch.int32)[:n].view(shape)
    return (lanes & _LANE) >= keep_threshold(p)


class _FastDropoutFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:  # type: ignore[override]
        keep = keep_mask(x.shape, p, x.device)
        scale = 1.0 / (1.0 - keep_threshold(p) / (1 << _BITS))
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None


def fast_dropout(x: torch.Tensor, p: float = 0.5, training: bool = True) -> torch.Tensor:
    """:func:`torch.nn.functional.dropout` with the cheap CPU masks of :class:`FastDropout`;
    PyTorch's own dropout on other devices (its CUDA kernel draws fast already)."""
    if not training or p == 0.0:
        return x
    if (p == 1.0 or x.device.type != "cpu" or not x.is_floating_point()
            or not _ENABLED[-1]):
        return nn.functional.dropout(x, p, training)
    return _FastDropoutFn.apply(x, p)


class FastDropout(nn.Dropout):
    """:class:`torch.nn.Dropout` (same ``p``, same ``train``/``eval`` behaviour, same state
    dict: none) drawing its CPU masks with :func:`keep_mask`; see the module docstring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inplace:
            return nn.functional.dropout(x, self.p, self.training, inplace=True)
        return fast_dropout(x, self.p, self.training)


def use_fast_dropout(model: nn.Module) -> int:
    """Replace every plain :class:`torch.nn.Dropout` in ``model`` (timm's blocks create their
    own) by a :class:`FastDropout` of the same ``p``, in place; returns how many."""
    swapped = 0
    for module in model.modules():
        for name, child in list(module.named_children()):
            if type(child) is nn.Dropout:
                fast = FastDropout(child.p)
                fast.train(child.training)
                setattr(module, name, fast)
                swapped += 1
    return swapped
