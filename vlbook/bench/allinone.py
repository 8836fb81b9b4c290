"""All-in-one benchmark: training-step time and peak memory at toy and paper sizes.

``python -m vlbook.bench allinone`` times full pre-training steps (VTM + MLM, two joint passes,
backward, AdamW) and no-grad joint forwards of ``allinone_toy`` and the paper's Ti / S / B
(Table 1) with :func:`vlbook.bench.train.benchmark` ("infer" = the same loss computation
without gradients), and optionally compares temporal token
rolling with flattening all frames into one attention (``--temporal rolling flatten``): the
paper's claim is that rolling costs about ``1/S`` of flatten's attention. Results go to
``results_root()/bench/allinone-<device>.json`` and ``.md``.

Defaults are CPU-friendly (batch 16 for the toy model, 1 for the paper sizes, 3 frames at the
variant's resolution); on a GPU pass ``--paper-batch-size 16`` for the paper's per-GPU batch.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import torch

from vlbook.bench.common import (
    add_step_arguments,
    check_variants,
    modes_of,
    report,
    resolve_device,
    setup_threads,
    write_suite,
)
from vlbook.bench.train import BenchResult, benchmark

TOY_VARIANTS: tuple[str, ...] = ("allinone_toy",)
PAPER_VARIANTS: tuple[str, ...] = ("allinone_tiny", "allinone_small", "allinone_base")


def _factory(variant: str, temporal: str, frames: int) -> Any:
    from vlbook.models import create_model

    def build() -> torch.nn.Module:
        return create_model(variant, temporal=temporal, num_frames=frames)

    return build


def bench_variant(
    variant: str,
    *,
    batch_size: int,
    frames: int = 3,
    temporal: str = "rolling",
    text_len: int = 40,
    steps: int = 3,
    warmup: int = 1,
    modes: tuple[str, ...] = ("train", "infer"),
    precision: str = "no",
    device: str = "auto",
    count_flops: bool = True,
) -> list[BenchResult]:
    """Benchmark one All-in-one variant: pre-training steps and/or their no-grad forwards."""
    if batch_size < 2 and "train" in modes:
        # VTM draws a negative video from another clip of the batch; with one clip it falls
        # back to positives only (and warns), which still times both joint passes.
        warnings.filterwarnings("ignore", message="VTM: every item")
    factory = _factory(variant, temporal, frames)
    example = factory().example_batch(batch_size, frames=frames, text_len=text_len,
                                      generator=torch.Generator().manual_seed(0))
    name = f"allinone-{variant}-{temporal}-S{frames}-b{batch_size}"
    return [
        benchmark(factory, example, name=name, model_name=variant, mode=mode, steps=steps,
                  warmup=warmup, precision=precision, device=device,
                  count_model_flops=count_flops)
        for mode in modes
    ]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", nargs="+", default=[*TOY_VARIANTS, *PAPER_VARIANTS],
                        help="registered All-in-one variants")
    parser.add_argument("--toy-batch-size", type=int, default=16)
    parser.add_argument("--paper-batch-size", type=int, default=1)
    parser.add_argument("--frames", type=int, default=3, help="frames per clip (paper: 3)")
    parser.add_argument("--text-len", type=int, default=40, help="text tokens (paper: 40)")
    parser.add_argument("--temporal", nargs="+", default=["rolling"],
                        help="temporal modes to compare, e.g. rolling flatten")
    add_step_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_threads(args)
    check_variants(args.variants, (*TOY_VARIANTS, *PAPER_VARIANTS), "All-in-one")
    modes = modes_of(args)
    device = resolve_device(args.device)
    results: list[BenchResult] = []
    for variant in args.variants:
        batch = args.toy_batch_size if variant in TOY_VARIANTS else args.paper_batch_size
        for temporal in args.temporal:
            measured = bench_variant(
                variant, batch_size=batch, frames=args.frames, temporal=temporal,
                text_len=args.text_len, steps=args.steps, warmup=args.warmup, modes=modes,
                precision=args.precision, device=device, count_flops=not args.no_flops,
            )
            for r in measured:
                report(r)
            results.extend(measured)
    return write_suite("allinone", f"allinone-{device.replace(':', '')}-{args.precision}", results)
