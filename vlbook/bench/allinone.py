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
import json
import warnings
from dataclasses import asdict
from typing import Any

import torch

from vlbook.bench.train import BenchResult, benchmark
from vlbook.paths import results_root

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
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    parser.add_argument("--precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--no-flops", action="store_true", help="skip the meta-device count")


def markdown_table(results: list[BenchResult]) -> str:
    """One row per measurement: variant, mode, batch, step time, clips/s, memory, GFLOPs."""
    lines = ["| variant | mode | device | batch | ms/step | clips/s | peak MB | params (M) | "
             "GFLOPs/step |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        memory = f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb is not None else "n/a"
        flops = f"{r.flops_per_step / 1e9:.1f}" if r.flops_per_step else "n/a"
        lines.append(f"| {r.name} | {r.mode} | {r.device_name} | {r.batch_size} | "
                     f"{1000 * r.step_time_s_median:.1f} | {r.clips_per_s:.2f} | {memory} | "
                     f"{r.parameters / 1e6:.1f} | {flops} |")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    from vlbook.models.allinone import VARIANTS

    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"--variants {unknown}: not All-in-one variants; known {sorted(VARIANTS)}")
    modes = ("train", "infer") if args.mode == "both" else (args.mode,)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
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
                memory = f"{r.peak_memory_mb:.0f} MB" if r.peak_memory_mb is not None else "n/a"
                print(f"{r.name} {r.mode}: {1000 * r.step_time_s_median:.1f} ms/step, "
                      f"peak {memory} ({r.memory_kind})", flush=True)
            results.extend(measured)
    out_dir = results_root() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    label = f"allinone-{device.replace(':', '')}-{args.precision}"
    payload = {"suite": "allinone", "results": [asdict(r) for r in results]}
    json_path = out_dir / f"{label}.json"
    json_path.write_text(json.dumps(payload, indent=1))
    (out_dir / f"{label}.md").write_text(markdown_table(results))
    print(markdown_table(results))
    print(f"wrote {json_path}")
    return payload
