"""One thread or every core for a chapter's toy training step, side by side.

``python -m vlbook.bench threads`` times the toy variants of every chapter (the same steps as
``vlbook.bench models``: forward + backward + AdamW of the pre-training objective) with one
torch thread and with ``--threads`` (default: every core this process may use), alternating
the two settings round by round in one process, and writes ``results/bench/threads-cpu.md``
/ ``.json``. The fastest round of each setting is compared: on a shared machine noise only
adds time.

The notebooks read it: a chapter's main run goes alone in the notebook's process and may use
every core, while the ablation runs of :func:`vlbook.parallel.map_runs` take one core each.
Whether a toy model gains from a second thread depends on its matrix sizes and the CPU; this
benchmark measures it instead of assuming it.
"""

from __future__ import annotations

import argparse
import platform
from typing import Any

import torch

from vlbook.bench.common import write_result
from vlbook.bench.models import bench_one, variants
from vlbook.chapters import chapters
from vlbook.parallel import default_workers


def time_variant(chapter: str, variant: str, *, batch_size: int, threads: int, rounds: int,
                 steps: int) -> dict[str, Any]:
    """Fastest median step time (s) of ``variant`` with 1 and ``threads`` torch threads,
    ``rounds`` rounds alternating the two settings."""
    before = torch.get_num_threads()
    best = {1: float("inf"), threads: float("inf")}
    try:
        for _ in range(rounds):
            for n in (1, threads):
                torch.set_num_threads(n)
                (r,) = bench_one(chapter, variant, batch_size=batch_size, steps=steps, warmup=1,
                                 modes=("train",), precision="no", device="cpu",
                                 count_flops=False)
                best[n] = min(best[n], r.step_time_s_median)
    finally:
        torch.set_num_threads(before)
    return {"chapter": chapter, "variant": variant, "batch_size": batch_size,
            "threads": threads, "one_thread_s": best[1], "threads_s": best[threads],
            "speedup": best[1] / best[threads]}


def markdown(rows: list[dict[str, Any]], header: str) -> str:
    lines = [header, "", "| chapter | variant | batch | ms/step, 1 thread | ms/step, "
             f"{rows[0]['threads'] if rows else 'N'} threads | speed-up |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['chapter']} | {r['variant']} | {r['batch_size']} | "
                     f"{1000 * r['one_thread_s']:.0f} | {1000 * r['threads_s']:.0f} | "
                     f"{r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = [c.name for c in chapters()]
    parser.add_argument("--chapters", nargs="+", default=names, choices=names)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=0,
                        help="the second setting (0: every core this process may use)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--name", default="threads-cpu")


def run(args: argparse.Namespace) -> dict[str, Any]:
    threads = args.threads or default_workers()
    if threads < 2:
        raise SystemExit(f"vlbook.bench threads: only {threads} core here; nothing to compare")
    rows = []
    for chapter, _, variant in variants(args.chapters, ["toy"]):
        row = time_variant(chapter, variant, batch_size=args.batch_size, threads=threads,
                           rounds=args.rounds, steps=args.steps)
        print(f"{variant}: 1 thread {1000 * row['one_thread_s']:.0f} ms, {threads} threads "
              f"{1000 * row['threads_s']:.0f} ms ({row['speedup']:.2f}x)", flush=True)
        rows.append(row)
    header = (f"# Toy training steps: one thread or {threads} (CPU, "
              f"{platform.processor() or platform.machine()}, torch {torch.__version__})\n\n"
              f"Forward + backward + AdamW of each chapter's toy variant, batch "
              f"{args.batch_size}; {args.rounds} rounds alternating the two settings, "
              f"{args.steps} timed steps each, the fastest round's median step shown.")
    payload = {"suite": "threads", "threads": threads, "rows": rows}
    write_result(args.name, payload, markdown(rows, header))
    return payload
