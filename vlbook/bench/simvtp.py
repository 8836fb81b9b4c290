"""SimVTP pre-training step time and peak memory, toy and ViT-B (paper) sizes.

``python -m vlbook.bench simvtp --sizes toy base --batch-size 2``: one full step of Eq. 1
(joint pass on visible tubes, decoders, VTC unimodal passes, VTM negatives, backward, AdamW)
timed with :func:`vlbook.bench.train.benchmark`; results in ``results_root()/bench/``. FLOPs
are not counted by default: the tube masks select tokens by value, which the meta device cannot
do, so a count runs on the CPU (``count_flops=True``, used by ``vlbook.bench models``).
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from vlbook.bench.common import (
    add_step_arguments,
    modes_of,
    report,
    resolve_device,
    setup_threads,
    write_suite,
)
from vlbook.bench.train import BenchResult, benchmark

SIZES: dict[str, str] = {"toy": "simvtp_toy", "base": "simvtp_base"}


def bench_variant(variant: str, *, batch_size: int, steps: int = 3, warmup: int = 1,
                  modes: tuple[str, ...] = ("train",), precision: str = "no",
                  device: str = "auto", count_flops: bool = False) -> list[BenchResult]:
    """Benchmark one SimVTP variant's pre-training step (and/or its no-grad forward);
    ``count_flops`` counts on the CPU (see the module docstring)."""
    from vlbook.models import create_model

    def factory() -> torch.nn.Module:
        return create_model(variant)

    batch = factory().example_batch(batch_size, generator=torch.Generator().manual_seed(0))
    return [benchmark(factory, batch, name=f"simvtp-{variant}-b{batch_size}", model_name=variant,
                      mode=mode, steps=steps, warmup=warmup, precision=precision, device=device,
                      count_model_flops=count_flops)
            for mode in modes]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=["toy", "base"])
    parser.add_argument("--batch-size", type=int, default=2)
    add_step_arguments(parser, flops=False)
    parser.set_defaults(mode="train")


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_threads(args)
    device = resolve_device(args.device)
    results: list[BenchResult] = []
    for size in args.sizes:
        measured = bench_variant(SIZES[size], batch_size=args.batch_size, steps=args.steps,
                                 warmup=args.warmup, modes=modes_of(args),
                                 precision=args.precision, device=device)
        for r in measured:
            report(r)
        results += measured
    label = f"simvtp-{device.replace(':', '')}-b{args.batch_size}"
    return write_suite("simvtp", label, results)
