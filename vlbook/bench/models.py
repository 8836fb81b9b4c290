"""Every model of the book at toy and paper size in one table.

``python -m vlbook.bench models`` runs the benchmark of every registered chapter
(:func:`vlbook.chapters.chapters`; :mod:`vlbook.bench.vlm` and so on, or the generic step on the
model's ``example_batch`` for a chapter with no suite) on its toy and paper-size variant(s)
with the same options and writes one table: training-step time (forward + backward + AdamW),
inference clips/s (no-grad forward of the same step), peak memory, parameters, FLOPs per step
and, on a GPU, the model FLOP utilisation. Results go to ``results_root()/bench/models-<device>
-<precision>.json`` and ``.md`` (the book's benchmarks page shows every table there).

CPU defaults keep the whole suite to a few minutes on 2 cores: toy batch 8, paper batch 1,
2 timed steps after 1 warm-up. On a GPU: ``--device cuda --precision bf16 --paper-batch-size
16 --steps 10``.

On the CPU each variant and mode is measured in a fresh process of its own (``--no-isolate`` turns
this off): the CPU has no allocator statistics, so memory is the process's peak resident set,
and in one long process that peak only grows (freed memory stays with the process), which
would give every small model the footprint of the largest one measured before it. The table
shows the peak and the peak above the fresh process's idle level (Python + torch).
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing
import platform
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
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
from vlbook.bench.train import BenchResult, _rss_mb, benchmark
from vlbook.chapters import chapters
from vlbook.models import create_model


def chapter_names() -> list[str]:
    """Every registered paper chapter, in book order (:func:`vlbook.chapters.chapters`)."""
    return [c.name for c in chapters()]


def variants(names: tuple[str, ...] | list[str], sizes: tuple[str, ...] | list[str]
             ) -> list[tuple[str, str, str]]:
    """``(chapter, size, variant)`` rows in book order, from each chapter's
    :attr:`~vlbook.chapters.Chapter.toy_models` / :attr:`~vlbook.chapters.Chapter.paper_models`."""
    known = {c.name: c for c in chapters()}
    rows = []
    for name in names:
        if name not in known:
            raise ValueError(f"unknown chapter {name!r}; known {sorted(known)}")
        for size in sizes:
            if size not in ("toy", "paper"):
                raise ValueError(f"unknown size {size!r}; expected 'toy' or 'paper'")
            spec = known[name]
            table = spec.toy_models if size == "toy" else spec.paper_models
            rows += [(name, size, v) for v in table]
    return rows


def _generic_bench_variant(variant: str, *, batch_size: int, steps: int, warmup: int,
                           modes: tuple[str, ...], precision: str, device: str,
                           count_flops: bool) -> list[BenchResult]:
    """A chapter without a suite of its own: its model's ``example_batch`` through
    :func:`vlbook.bench.train.benchmark`."""

    def factory() -> torch.nn.Module:
        return create_model(variant)

    example = factory().example_batch(batch_size, generator=torch.Generator().manual_seed(0))
    return [benchmark(factory, example, name=f"{variant}-b{batch_size}", model_name=variant,
                      mode=mode, steps=steps, warmup=warmup, precision=precision,
                      device=device, count_model_flops=count_flops) for mode in modes]


def bench_one(chapter: str, variant: str, *, batch_size: int, steps: int, warmup: int,
              modes: tuple[str, ...], precision: str, device: str, count_flops: bool
              ) -> list[BenchResult]:
    """The chapter suite's ``bench_variant`` (``vlbook.bench.<chapter>``) with the shared
    options; a chapter with no suite is timed on its model's ``example_batch``."""
    try:
        module = importlib.import_module(f"vlbook.bench.{chapter}")
    except ModuleNotFoundError as err:
        if err.name != f"vlbook.bench.{chapter}":
            raise
        bench: Callable[..., list[BenchResult]] = _generic_bench_variant
    else:
        bench = module.bench_variant
    kwargs: dict[str, Any] = dict(batch_size=batch_size, steps=steps, warmup=warmup,
                                  modes=modes, precision=precision, device=device,
                                  count_flops=count_flops)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FLOP-count fallbacks, VTM with one-item batches
        return bench(variant, **kwargs)


def _bench_isolated(kwargs: dict[str, Any]) -> list[BenchResult]:
    """:func:`bench_one` in a fresh process: records its idle memory first."""
    threads = kwargs.pop("threads", 0)
    if threads:
        torch.set_num_threads(threads)
    idle = _rss_mb("VmRSS")
    results = bench_one(**kwargs)
    for r in results:
        r.process_idle_mb = idle
    return results


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = chapter_names()
    parser.add_argument("--chapters", nargs="+", default=names, choices=names)
    parser.add_argument("--sizes", nargs="+", default=["toy", "paper"], choices=("toy", "paper"))
    parser.add_argument("--toy-batch-size", type=int, default=8)
    parser.add_argument("--paper-batch-size", type=int, default=1)
    parser.add_argument("--no-isolate", action="store_true",
                        help="measure every variant in this process (CPU memory then only grows)")
    add_step_arguments(parser)
    parser.set_defaults(steps=2)


def run(args: argparse.Namespace) -> dict[str, Any]:
    setup_threads(args)
    device = resolve_device(args.device)
    results: list[BenchResult] = []
    skipped: list[str] = []
    isolate = device == "cpu" and not args.no_isolate
    pool = None
    if isolate:
        # spawn: a fresh interpreter per variant and mode (max_tasks_per_child=1), so its peak
        # resident memory is its own
        pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"),
                                   max_tasks_per_child=1)
    try:
        for chapter, size, variant in variants(args.chapters, args.sizes):
            batch = args.toy_batch_size if size == "toy" else args.paper_batch_size
            kwargs: dict[str, Any] = dict(
                chapter=chapter, variant=variant, batch_size=batch, steps=args.steps,
                warmup=args.warmup, modes=modes_of(args), precision=args.precision,
                device=device, count_flops=not args.no_flops)
            try:
                if pool is not None:  # one process per variant and mode
                    measured = [r for mode in modes_of(args) for r in pool.submit(
                        _bench_isolated, {**kwargs, "modes": (mode,),
                                          "threads": args.threads}).result()]
                else:
                    measured = bench_one(**kwargs)
            except torch.OutOfMemoryError as err:  # a paper size on a small GPU: say so
                skipped.append(f"{variant} (batch {batch}): out of memory ({err})")
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
                continue
            for r in measured:
                report(r)
            results += measured
    finally:
        if pool is not None:
            pool.shutdown()
    name = "GPU " + torch.cuda.get_device_name(device) if device.startswith("cuda") else (
        f"CPU ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})")
    header = (f"# Models at toy and paper size ({name})\n\ntorch {torch.__version__}, "
              f"precision {args.precision}, toy batch {args.toy_batch_size}, paper batch "
              f"{args.paper_batch_size}, {args.steps} timed step(s) after {args.warmup} warm-up. "
              "`train`: forward + backward + AdamW of the pre-training objective; `infer`: the "
              "same objective without gradients. FLOPs of SimVTP and UMT are counted on the CPU "
              "(their masks select tokens by value; fused attention included). Peak memory "
              "on CPU is the resident set of the process"
              + (" that measured the variant alone; *above idle* subtracts that fresh "
                 "process's level before the model was built (Python + torch)." if isolate
                 else ", which only grows over the run."))
    if skipped:
        header += "\n\nSkipped: " + "; ".join(skipped)
    label = f"models-{device.replace(':', '')}-{args.precision}"
    return write_suite("models", label, results, header=header, extra={"skipped": skipped})
