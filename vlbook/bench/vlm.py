"""VLM benchmark: pre-training step time and peak memory at toy and paper size.

``python -m vlbook.bench vlm`` times full pre-training steps of VLM (masked modality model +
masked token loss over ``[CLS] 32 video tokens [SEP] text [SEP]``, backward, AdamW) and no-grad
forwards of the same step, for ``vlm_toy`` and the paper's BERT-base model (Table 1, 110 M),
with :func:`vlbook.bench.train.benchmark`. Results go to
``results_root()/bench/vlm-<device>-<precision>.json`` and ``.md``.

The masking is random, so a step's FLOPs depend on the draw and cannot be counted on the meta
device; the count falls back to the CPU (which misses fused attention: a small undercount) or
is skipped with ``--no-flops``. Defaults are CPU-friendly (toy batch 64, paper batch 2); on a
GPU pass ``--paper-batch-size 32`` for the paper's per-GPU batch (256 on 8 GPUs).
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
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    parser.add_argument("--precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")


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
    from vlbook.models import list_models

    unknown = [v for v in args.variants if v not in list_models() or not v.startswith("vlm")]
    if unknown:
        raise ValueError(f"--variants {unknown}: not VLM variants; known "
                         f"{[m for m in list_models() if m.startswith('vlm')]}")
    modes = ("train", "infer") if args.mode == "both" else (args.mode,)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    results: list[BenchResult] = []
    for variant in args.variants:
        batch = args.toy_batch_size if variant in TOY_VARIANTS else args.paper_batch_size
        measured = bench_variant(variant, batch_size=batch, steps=args.steps,
                                 warmup=args.warmup, modes=modes, precision=args.precision,
                                 device=device, count_flops=not args.no_flops)
        for r in measured:
            memory = f"{r.peak_memory_mb:.0f} MB" if r.peak_memory_mb is not None else "n/a"
            print(f"{r.name} {r.mode}: {1000 * r.step_time_s_median:.1f} ms/step, "
                  f"peak {memory} ({r.memory_kind})", flush=True)
        results.extend(measured)
    out_dir = results_root() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    label = f"vlm-{device.replace(':', '')}-{args.precision}"
    payload = {"suite": "vlm", "results": [asdict(r) for r in results]}
    json_path = out_dir / f"{label}.json"
    json_path.write_text(json.dumps(payload, indent=1))
    (out_dir / f"{label}.md").write_text(markdown_table(results))
    print(markdown_table(results))
    print(f"wrote {json_path}")
    return payload
