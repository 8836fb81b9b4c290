"""UMT benchmark: stage-1 training-step time and peak memory at toy and paper sizes.

``python -m vlbook.bench umt`` times full stage-1 steps (frozen teacher forward on every frame,
semantic mask, student on the visible tokens, UTA, backward, AdamW) and no-grad student
forwards of ``umt_toy`` (with the toy CLIP teacher) and the paper's ViT-B/16 and ViT-L/16
(with CLIP ViT-B/16 and ViT-L/14 at 196 px teachers built from their transformers configs,
randomly initialised: same cost as the real weights, no download) via
:func:`vlbook.bench.train.benchmark`. ``--targets`` adds the Table 1 target designs (e.g.
``uta mae``) so the memory of UTA vs pixel reconstruction can be compared. Results go to
``results_root()/bench/umt-<device>-<precision>.json`` and ``.md``.

Defaults are CPU-friendly (batch 8 for the toy model, 1 for the paper sizes); on a GPU pass
``--paper-batch-size 64`` for the paper's per-GPU batch.
"""

from __future__ import annotations

import argparse
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
from vlbook.chapters.umt import target_variant
from vlbook.models import create_model
from vlbook.models.umt import HFCLIPTeacher, ToyCLIP, ToyCLIPConfig

TOY_VARIANTS: tuple[str, ...] = ("umt_toy",)
PAPER_VARIANTS: tuple[str, ...] = ("umt_base", "umt_large")
#: CLIP teachers of the paper sizes: (hidden, layers, heads, patch, input size, projection).
TEACHER_SHAPES: dict[str, tuple[int, int, int, int, int, int]] = {
    "umt_base": (768, 12, 12, 16, 224, 512),
    "umt_large": (1024, 24, 16, 14, 196, 768),
}


def build_teacher(variant: str) -> Any:
    """A randomly initialised teacher with the cost of the variant's real CLIP teacher."""
    if variant not in TEACHER_SHAPES:
        return ToyCLIP(ToyCLIPConfig()).requires_grad_(False).eval()
    # transformers: heavy optional dependency, only for the paper-size teachers
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    hidden, layers, heads, patch, size, projection = TEACHER_SHAPES[variant]
    config = CLIPVisionConfig(hidden_size=hidden, intermediate_size=4 * hidden,
                              num_hidden_layers=layers, num_attention_heads=heads,
                              patch_size=patch, image_size=224,
                              projection_dim=projection, attn_implementation="eager")
    return HFCLIPTeacher(CLIPVisionModelWithProjection(config), image_size=size)


def _factory(variant: str, target: str) -> Any:
    def build() -> torch.nn.Module:
        model = create_model(variant, **target_variant(target))
        model.set_teacher(build_teacher(variant))
        return model

    return build


def bench_variant(variant: str, *, batch_size: int, target: str = "uta", steps: int = 3,
                  warmup: int = 1, modes: tuple[str, ...] = ("train", "infer"),
                  precision: str = "no", device: str = "auto", count_flops: bool = False
                  ) -> list[BenchResult]:
    """Benchmark one UMT variant and target design (Table 1 row). ``count_flops``: count on
    the CPU (the masks select tokens by value, which the meta device cannot do; fused
    attention is counted there by :data:`vlbook.analysis.CPU_ATTENTION_FLOPS`)."""
    factory = _factory(variant, target)
    example = {"video": factory().example_batch(batch_size,
                                                torch.Generator().manual_seed(0))["video"]}
    name = f"umt-{variant}-{target}-b{batch_size}"
    return [benchmark(factory, example, name=name, model_name=variant, mode=mode, steps=steps,
                      warmup=warmup, precision=precision, device=device,
                      count_model_flops=count_flops)
            for mode in modes]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--variants", nargs="+", default=[*TOY_VARIANTS, *PAPER_VARIANTS])
    parser.add_argument("--targets", nargs="+", default=["uta"],
                        help="Table 1 designs: uta, uta+masked, uta+mae, mae")
    parser.add_argument("--toy-batch-size", type=int, default=8)
    parser.add_argument("--paper-batch-size", type=int, default=1)
    add_step_arguments(parser, flops=False)


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_threads(args)
    check_variants(args.variants, (*TOY_VARIANTS, *PAPER_VARIANTS), "UMT")
    modes = modes_of(args)
    device = resolve_device(args.device)
    results: list[BenchResult] = []
    for variant in args.variants:
        batch = args.toy_batch_size if variant in TOY_VARIANTS else args.paper_batch_size
        for target in args.targets:
            measured = bench_variant(variant, batch_size=batch, target=target, steps=args.steps,
                                     warmup=args.warmup, modes=modes,
                                     precision=args.precision, device=device)
            for r in measured:
                report(r)
            results.extend(measured)
    return write_suite("umt", f"umt-{device.replace(':', '')}-{args.precision}", results)
