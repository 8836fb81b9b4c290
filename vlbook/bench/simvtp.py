"""SimVTP pre-training step time and peak memory, toy and ViT-B (paper) sizes.

``python -m vlbook.bench simvtp --sizes toy base --batch-size 2``: one full step of Eq. 1
(joint pass on visible tubes, decoders, VTC unimodal passes, VTM negatives, backward, AdamW)
timed with :func:`vlbook.bench.train.benchmark`; results in ``results_root()/bench/``.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

import torch

from vlbook.paths import results_root

SIZES: dict[str, str] = {"toy": "simvtp_toy", "base": "simvtp_base"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", nargs="+", choices=tuple(SIZES), default=["toy", "base"])
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    parser.add_argument("--precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from vlbook.bench.train import benchmark
    from vlbook.models import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = []
    for size in args.sizes:
        name = SIZES[size]

        def factory(name: str = name) -> torch.nn.Module:
            return create_model(name)

        batch = factory().example_batch(args.batch_size, generator=torch.Generator().manual_seed(0))
        result = benchmark(factory, batch, name=f"simvtp-{size}", model_name=name, mode="train",
                           steps=args.steps, warmup=args.warmup, precision=args.precision,
                           device=device, count_model_flops=False)
        rows.append(asdict(result))
        memory = f"{result.peak_memory_mb:.0f} MB" if result.peak_memory_mb else "n/a"
        print(f"{name} {result.device_name} batch {args.batch_size}: "
              f"{1000 * result.step_time_s_median:.1f} ms/step, peak {memory} "
              f"({result.memory_kind}), {result.parameters / 1e6:.1f} M params")
    out_dir = results_root() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    label = f"simvtp-{device.replace(':', '')}-b{args.batch_size}"
    payload = {"suite": "simvtp", "results": rows}
    (out_dir / f"{label}.json").write_text(json.dumps(payload, indent=1))
    lines = ["| model | device | batch | ms/step | peak MB | params (M) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        peak = f"{r['peak_memory_mb']:.0f}" if r["peak_memory_mb"] else "n/a"
        lines.append(f"| {r['name']} | {r['device_name']} | {r['batch_size']} | "
                     f"{1000 * r['step_time_s_median']:.1f} | {peak} | "
                     f"{r['parameters'] / 1e6:.1f} |")
    (out_dir / f"{label}.md").write_text("\n".join(lines) + "\n")
    return payload
