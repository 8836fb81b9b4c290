"""Pieces every benchmark suite shares: options, device choice, the results table, writing."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from vlbook.bench.train import BenchResult
from vlbook.paths import results_root


def add_step_arguments(parser: argparse.ArgumentParser, *, flops: bool = True) -> None:
    """``--steps --warmup --mode --precision --device --threads`` (and ``--no-flops``)."""
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    parser.add_argument("--precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    if flops:
        parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")


def check_variants(asked: list[str], known: Any, paper: str) -> None:
    """Stop with the known names when ``--variants`` holds one that is not ``paper``'s."""
    unknown = [v for v in asked if v not in known]
    if unknown:
        raise ValueError(f"--variants {unknown}: not {paper} variants; known {sorted(known)}")


def modes_of(args: argparse.Namespace) -> tuple[str, ...]:
    return ("train", "infer") if args.mode == "both" else (args.mode,)


def call_times(fn: Callable[[], Any], repeats: int, device: torch.device) -> list[float]:
    """Seconds of ``repeats`` calls of ``fn`` after one warm-up call, synchronising CUDA around
    each so that a call's time includes its kernels."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return times


def saved_for_backward_mb(fn: Callable[[], torch.Tensor], backward: bool = False) -> float:
    """Megabytes autograd keeps for the backward pass of ``fn()`` (activation memory), each
    storage counted once however many saved tensors view it; ``backward``: then run the
    backward of the (scalar) result, so that the graph is freed by use."""
    total = 0
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        key = t.untyped_storage().data_ptr() if t.device.type != "meta" else id(t)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    if backward:
        out.backward()
    return total / 2**20


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def setup_threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", 0):
        torch.set_num_threads(args.threads)


def markdown_table(results: list[BenchResult]) -> str:
    """One row per measurement: name, mode, device, batch, step time, clips/s, memory, params,
    GFLOPs per step and (on a GPU) model FLOP utilisation. Memory is the peak; when the
    variant ran in a process of its own, the peak above that process's idle level too."""
    isolated = any(r.process_idle_mb is not None for r in results)
    extra = " above idle MB |" if isolated else ""
    lines = ["| variant | mode | device | batch | ms/step | clips/s | peak MB |" + extra
             + " params (M) | GFLOPs/step | MFU |",
             "|---|---|---|---|---|---|---|" + ("---|" if isolated else "") + "---|---|---|"]
    for r in results:
        memory = f"{r.peak_memory_mb:.0f}" if r.peak_memory_mb is not None else "n/a"
        if isolated:
            above = (f"{r.peak_memory_mb - r.process_idle_mb:.0f}"
                     if r.peak_memory_mb is not None and r.process_idle_mb is not None else "n/a")
            memory += f" | {above}"
        flops = f"{r.flops_per_step / 1e9:.1f}" if r.flops_per_step else "n/a"
        mfu = f"{100 * r.mfu:.1f} %" if r.mfu is not None else "—"
        lines.append(f"| {r.name} | {r.mode} | {r.device_name} | {r.batch_size} | "
                     f"{1000 * r.step_time_s_median:.1f} | {r.clips_per_s:.2f} | {memory} | "
                     f"{r.parameters / 1e6:.1f} | {flops} | {mfu} |")
    return "\n".join(lines) + "\n"


def report(r: BenchResult) -> None:
    """One progress line per measurement."""
    memory = f"{r.peak_memory_mb:.0f} MB" if r.peak_memory_mb is not None else "n/a"
    print(f"{r.name} {r.mode}: {1000 * r.step_time_s_median:.1f} ms/step, "
          f"peak {memory} ({r.memory_kind})", flush=True)


def write_result(label: str, payload: dict[str, Any], text: str) -> Path:
    """Write ``results_root()/bench/<label>.json`` (``payload``) and ``.md`` (``text``), print
    the table and where it went; returns the folder. Every suite writes through here (the
    book's benchmarks page reads each ``.md``)."""
    out_dir = results_root() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{label}.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out_dir / f"{label}.md").write_text(text)
    print(text)
    print(f"wrote {out_dir / label}.json and .md")
    return out_dir


def write_suite(suite: str, label: str, results: list[BenchResult], *, header: str = "",
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``results_root()/bench/<label>.json`` and ``.md`` (``header`` above the table)."""
    payload = {"suite": suite, **(extra or {}), "results": [asdict(r) for r in results]}
    write_result(label, payload, (header + "\n\n" if header else "") + markdown_table(results))
    return payload


__all__ = ["add_step_arguments", "check_variants", "markdown_table", "modes_of", "report",
           "resolve_device", "setup_threads", "write_result", "write_suite"]
