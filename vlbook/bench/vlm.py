"""VLM benchmark: pre-training step time and peak memory at toy and paper size.

``python -m vlbook.bench vlm`` times full pre-training steps of VLM (masked modality model +
masked token loss over ``[CLS] 32 video tokens [SEP] text [SEP]``, backward, AdamW) and no-grad
forwards of the same step, for ``vlm_toy`` and the paper's BERT-base model (Table 1, 110 M),
with :func:`vlbook.bench.train.benchmark`. Results go to
``results_root()/bench/vlm-<device>-<precision>.json`` and ``.md``.

The masking is random, so a step's FLOPs depend on the draw and cannot be counted on the meta
device; the count falls back to the CPU (fused attention counted there too) or
is skipped with ``--no-flops``. Defaults are CPU-friendly (toy batch 64, paper batch 2); on a
GPU pass ``--paper-batch-size 32`` for the paper's per-GPU batch (256 on 8 GPUs).
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

TOY_VARIANTS: tuple[str, ...] = ("vlm_toy",)
PAPER_VARIANTS: tuple[str, ...] = ("vlm_base",)


def bench_variant(variant: str, *, batch_size: int, steps: int = 3, warmup: int = 1,
                  modes: tuple[str, ...] = ("train", "infer"), precision: str = "no",
                  device: str = "auto", count_flops: bool = True) -> list[BenchResult]:
    """Benchmark one VLM variant at its full sequence length (video + text tokens)."""
    from vlbook.models import create_model

    def factory() -> torch.nn.Module:
        return create_model(variant)

    example = factory().example_batch(batch_size, torch.Generator().manual_seed(0))
    # the shared benchmark reads the batch size from "video": VLM accepts features there
    example["video"] = example.pop("video_features")
    name = f"vlm-{variant}-b{batch_size}"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="FLOPs not countable")
        return [benchmark(factory, example, name=name, model_name=variant, mode=mode,
                          steps=steps, warmup=warmup, precision=precision, device=device,
                          count_model_flops=count_flops)
                for mode in modes]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", nargs="+", default=[*TOY_VARIANTS, *PAPER_VARIANTS],
                        help="registered VLM variants")
    parser.add_argument("--toy-batch-size", type=int, default=64)
    parser.add_argument("--paper-batch-size", type=int, default=2)
    add_step_arguments(parser)


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_threads(args)
    from vlbook.models import list_models

    check_variants(args.variants, [m for m in list_models() if m.startswith("vlm")], "VLM")
    modes = modes_of(args)
    device = resolve_device(args.device)
    results: list[BenchResult] = []
    for variant in args.variants:
        batch = args.toy_batch_size if variant in TOY_VARIANTS else args.paper_batch_size
        measured = bench_variant(variant, batch_size=batch, steps=args.steps,
                                 warmup=args.warmup, modes=modes, precision=args.precision,
                                 device=device, count_flops=not args.no_flops)
        for r in measured:
            report(r)
        results.extend(measured)
    return write_suite("vlm", f"vlm-{device.replace(':', '')}-{args.precision}", results)
