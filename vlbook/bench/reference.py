"""Library kernels against straightforward reference implementations, in the same run.

``python -m vlbook.bench reference`` checks, then times, three computations both ways:

- ``attention``: :class:`vlbook.nn.Attention` (one fused QKV projection, PyTorch's
  ``scaled_dot_product_attention``) against explicit ``softmax(Q K^T / sqrt(d)) V`` with the
  same weights, forward + backward, at the toy and the ViT-B video sizes;
- ``token rolling``: All-in-one's :func:`~vlbook.models.allinone.temporal_roll` (two indexed
  rolls) against a loop over frames and token positions;
- ``patchify``: :func:`vlbook.losses.patchify_video` (one reshape/permute) against a loop
  over tubelets cutting each token out of the clip.

Each case first asserts that both give the same values (``allclose``), so a speed-up can never
come from computing something else, then reports the median time of each and the ratio
reference / library, and the bytes each saves for the backward pass (attention; measured with
autograd's saved-tensor hooks). Results go to ``results_root()/bench/reference-<device>.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

from vlbook.bench.common import call_times, resolve_device, saved_for_backward_mb, setup_threads
from vlbook.paths import results_root


@dataclass
class Comparison:
    """One computation done both ways."""

    case: str
    shape: str
    device: str
    library_ms: float
    reference_ms: float
    speedup: float  # reference / library time
    library_saved_mb: float | None
    reference_saved_mb: float | None
    max_abs_diff: float


def explicit_attention(attention: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The textbook computation of :class:`vlbook.nn.Attention` (no masks, no dropout)."""
    q, k, v = attention.qkv_projection(x)
    weights = ((q @ k.transpose(-2, -1)) * attention.scale).softmax(dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(x.shape[0], x.shape[1], attention.dim)
    return attention.proj(out)


def looped_roll(tokens: torch.Tensor, num_frames: int, forward: list[int], backward: list[int]
                ) -> torch.Tensor:
    """Temporal token rolling one frame and one position at a time."""
    bt, n, d = tokens.shape
    x = tokens.view(bt // num_frames, num_frames, n, d)
    out = x.clone()
    for t in range(num_frames):
        for p in forward:
            out[:, t, p] = x[:, (t - 1) % num_frames, p]
        for p in backward:
            out[:, t, p] = x[:, (t + 1) % num_frames, p]
    return out.view(bt, n, d)


def looped_patchify(video: torch.Tensor, tubelet: int, patch: int) -> torch.Tensor:
    """Tubelet tokens cut out one at a time, pixels in ``(dt, dy, dx, c)`` order."""
    b, t, c, h, w = video.shape
    tokens = []
    for ti in range(0, t, tubelet):
        for yi in range(0, h, patch):
            for xi in range(0, w, patch):
                cube = video[:, ti:ti + tubelet, :, yi:yi + patch, xi:xi + patch]
                tokens.append(cube.permute(0, 1, 3, 4, 2).reshape(b, -1))
    return torch.stack(tokens, dim=1)


def _median_ms(fn: Callable[[], Any], repeats: int, device: torch.device) -> float:
    return 1000 * statistics.median(call_times(fn, repeats, device))


def compare_attention(batch: int, tokens: int, dim: int, heads: int, device: str,
                      repeats: int = 3, dtype: torch.dtype = torch.float32) -> Comparison:
    """Our attention block vs the explicit formula, forward + backward."""
    from vlbook.nn import Attention

    dev = torch.device(device)
    torch.manual_seed(0)
    attention = Attention(dim, heads).to(dev, dtype)
    x = torch.randn(batch, tokens, dim, device=dev, dtype=dtype, requires_grad=True)
    ours, ref = attention(x), explicit_attention(attention, x)
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    diff = float((ours - ref).detach().abs().max())
    if not torch.allclose(ours, ref, atol=tol, rtol=tol):
        raise AssertionError(f"attention outputs differ by {diff}")

    def step(forward: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def run() -> None:
            forward().sum().backward()
            x.grad = None
            attention.zero_grad(set_to_none=True)
        return run

    lib = _median_ms(step(lambda: attention(x)), repeats, dev)
    naive = _median_ms(step(lambda: explicit_attention(attention, x)), repeats, dev)
    return Comparison("attention fwd+bwd", f"B={batch} L={tokens} D={dim} h={heads}",
                      str(dev), lib, naive, naive / lib,
                      saved_for_backward_mb(lambda: attention(x)),
                      saved_for_backward_mb(lambda: explicit_attention(attention, x)), diff)


def compare_rolling(batch: int, frames: int, tokens: int, dim: int, device: str,
                    repeats: int = 3) -> Comparison:
    """All-in-one's temporal token rolling vs a loop over frames and positions."""
    from vlbook.models.allinone import rolling_plan, temporal_roll

    dev = torch.device(device)
    plan = rolling_plan(tokens, ratio=0.25, layout="code")
    x = torch.randn(batch * frames, tokens, dim, device=dev)
    fwd, bwd = plan.forward.tolist(), plan.backward.tolist()
    ours, ref = temporal_roll(x, frames, plan), looped_roll(x, frames, fwd, bwd)
    if not torch.equal(ours, ref):
        raise AssertionError("token rolling differs from the loop")
    lib = _median_ms(lambda: temporal_roll(x, frames, plan), repeats, dev)
    naive = _median_ms(lambda: looped_roll(x, frames, fwd, bwd), repeats, dev)
    return Comparison("token rolling", f"B={batch} S={frames} N={tokens} D={dim}", str(dev),
                      lib, naive, naive / lib, None, None, 0.0)


def compare_patchify(batch: int, frames: int, size: int, tubelet: int, patch: int, device: str,
                     repeats: int = 3) -> Comparison:
    """``patchify_video`` vs cutting tubelets one at a time."""
    from vlbook.losses import patchify_video

    dev = torch.device(device)
    video = torch.randn(batch, frames, 3, size, size, device=dev)
    ours, ref = patchify_video(video, tubelet, patch), looped_patchify(video, tubelet, patch)
    if not torch.equal(ours, ref):
        raise AssertionError("patchify differs from the loop")
    lib = _median_ms(lambda: patchify_video(video, tubelet, patch).contiguous(), repeats, dev)
    naive = _median_ms(lambda: looped_patchify(video, tubelet, patch), repeats, dev)
    return Comparison("patchify", f"B={batch} T={frames} {size}px {tubelet}x{patch}x{patch}",
                      str(dev), lib, naive, naive / lib, None, None, 0.0)


def markdown(rows: list[Comparison], header: str) -> str:
    lines = [header, "", "| case | shape | device | library ms | reference ms | reference / "
             "library | saved for backward MB (library / reference) | max abs diff |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        saved = (f"{r.library_saved_mb:.1f} / {r.reference_saved_mb:.1f}"
                 if r.library_saved_mb is not None else "—")
        lines.append(f"| {r.case} | {r.shape} | {r.device} | {r.library_ms:.2f} | "
                     f"{r.reference_ms:.2f} | {r.speedup:.1f}x | {saved} | "
                     f"{r.max_abs_diff:.1e} |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--small", action="store_true",
                        help="toy sizes only (seconds; used by the tests)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_threads(args)
    device = resolve_device(args.device)
    r = args.repeats
    rows = [compare_attention(32, 128, 64, 4, device, r),  # toy: 8 frames x 16 patches
            compare_rolling(16, 3, 17, 64, device, r),  # All-in-one toy: 3 frames, 4x4 + CLS
            compare_patchify(8, 8, 32, 2, 8, device, r)]  # SimVTP toy clip
    if not args.small:
        rows += [compare_attention(1, 197, 768, 12, device, r),  # ViT-B image
                 compare_attention(1, 1568, 768, 12, device, r),  # ViT-B video, 8x14x14
                 compare_rolling(2, 3, 197, 768, device, r),  # All-in-one base
                 compare_patchify(1, 16, 224, 2, 16, device, r)]  # SimVTP paper clip
    if device.startswith("cuda"):
        rows.append(compare_attention(1, 1568, 768, 12, device, r, dtype=torch.bfloat16))
    for row in rows:
        print(f"{row.case} {row.shape}: library {row.library_ms:.2f} ms, reference "
              f"{row.reference_ms:.2f} ms ({row.speedup:.1f}x)", flush=True)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    header = (f"# Library vs reference implementations ({name}, {torch.get_num_threads()} "
              f"threads, torch {torch.__version__})\n\nEach pair was checked equal before timing"
              " (last column). Times are medians of the repeats; the ratio > 1 means the "
              "library is faster.")
    out_dir = results_root() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    label = f"reference-{device.replace(':', '')}{'-small' if args.small else ''}"
    payload = {"suite": "reference", "results": [asdict(x) for x in rows]}
    (out_dir / f"{label}.json").write_text(json.dumps(payload, indent=1))
    (out_dir / f"{label}.md").write_text(markdown(rows, header))
    print(markdown(rows, header))
    return payload


__all__ = ["Comparison", "compare_attention", "compare_patchify", "compare_rolling",
           "explicit_attention", "looped_patchify", "looped_roll", "saved_for_backward_mb"]
