"""Training-step and inference benchmark of a registered model or a factory.

``python -m vlbook.bench train --model debug_tiny --batch-size 8 --steps 10`` times full
optimiser steps (forward, backward, AdamW) and/or no-grad forwards of ``model(batch)`` and
reports: median/mean step time, clips/s, peak memory (CUDA: ``max_memory_allocated``; CPU: peak
resident set size of the whole process during the timed steps, from ``/proc/self/status``
VmHWM after resetting it; ``baseline_memory_mb`` is the level before the timed steps),
parameters, FLOPs per step (counted on the meta device, see :mod:`vlbook.analysis`) and, on GPU,
model FLOPs utilisation (MFU: counted FLOPs per second over the device's dense peak for the
precision used). Results go to
``results_root()/bench/train-<name>.json`` and ``.md``.

The batch is ``model.example_batch(batch_size)`` when the model offers one, else the first batch
of ``--data NAME`` (``vlbook.data.build_dataset``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlbook.analysis import count_flops, count_parameters
from vlbook.paths import results_root

# Dense peak TFLOP/s by device-name fragment: (bf16/fp16 tensor cores, tf32, fp32).
PEAK_TFLOPS: dict[str, tuple[float, float, float]] = {
    "H200": (989.5, 494.7, 66.9),
    "H100": (989.5, 494.7, 66.9),
    "A100": (312.0, 156.0, 19.5),
    "L40S": (362.1, 181.0, 91.6),
    "L4": (121.0, 60.0, 30.3),
    "A10": (125.0, 62.5, 31.2),
    "V100": (125.0, 15.7, 15.7),
    "T4": (65.0, 8.1, 8.1),
}


@dataclass
class BenchResult:
    """One benchmark measurement (see the module docstring for each field's meaning)."""

    name: str
    model: str
    mode: str
    device: str
    device_name: str
    precision: str
    batch_size: int
    steps: int
    warmup: int
    step_time_s_median: float
    step_time_s_mean: float
    clips_per_s: float
    peak_memory_mb: float | None
    baseline_memory_mb: float | None
    memory_kind: str
    parameters: int
    flops_per_step: int | None
    flops_counted_on: str | None
    mfu: float | None
    peak_tflops: float | None
    threads: int
    #: resident memory of the (fresh) benchmark process before the model was built, when the
    #: variant was measured in a process of its own (``vlbook.bench models``); peak minus this
    #: is what the model, its data and its step cost on the CPU
    process_idle_mb: float | None = None

    def markdown(self) -> str:
        rows = [(k, v) for k, v in asdict(self).items()]
        lines = ["| field | value |", "|---|---|"]
        for key, value in rows:
            if isinstance(value, float):
                value = f"{value:.4g}"
            lines.append(f"| {key} | {value} |")
        return "\n".join(lines) + "\n"


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "no":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_mb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_tflops(device_name: str, precision: str) -> float | None:
    for fragment, (half, tf32, fp32) in PEAK_TFLOPS.items():
        if fragment in device_name:
            if precision in ("bf16", "fp16"):
                return half
            return tf32 if torch.backends.cuda.matmul.allow_tf32 else fp32
    return None


def _move(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _move(v, device) for k, v in batch.items()}
    return batch


def _loss(out: Any) -> torch.Tensor:
    if isinstance(out, dict):
        if "loss" not in out:
            raise TypeError(f"model output has no 'loss' (keys {sorted(out)})")
        return out["loss"]
    return out.float().mean()


def benchmark(
    factory: Callable[[], nn.Module],
    batch: dict[str, Any],
    *,
    name: str,
    model_name: str = "",
    mode: str = "train",
    steps: int = 10,
    warmup: int = 3,
    precision: str = "no",
    device: str = "auto",
    peak_tflops: float | None = None,
    count_model_flops: bool = True,
) -> BenchResult:
    """Time ``steps`` training steps (``mode="train"``) or no-grad forwards (``"infer"``)."""
    if mode not in ("train", "infer"):
        raise ValueError(f"mode={mode!r}; accepted: 'train', 'infer'")
    if precision not in ("no", "bf16", "fp16"):
        raise ValueError(f"precision={precision!r}; accepted: 'no', 'bf16', 'fp16'")
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps}, warmup={warmup}: expected steps >= 1, warmup >= 0")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    batch_size = int(batch["video"].shape[0]) if "video" in batch else 0
    flops, flops_device = None, None
    if count_model_flops:
        try:
            flops = count_flops(factory, batch, backward=mode == "train").total
            flops_device = "meta"
        except Exception as err:  # noqa: BLE001 - a model that cannot run on meta
            warnings.warn(
                f"FLOPs not countable on the meta device ({err}); counting on CPU",
                stacklevel=2,
            )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                flops = count_flops(factory, batch, backward=mode == "train", device="cpu").total
            flops_device = "cpu"
    model = factory().to(dev)
    params = count_parameters(model, by="total").total
    batch = _move(batch, dev)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if mode == "train" else None
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" else None
    model.train(mode == "train")

    def one_step() -> None:
        if optimizer is None:
            with torch.no_grad(), _autocast(dev, precision):
                model(batch)
            return
        optimizer.zero_grad(set_to_none=True)
        with _autocast(dev, precision):
            loss = _loss(model(batch))
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()

    for _ in range(warmup):
        one_step()
    _sync(dev)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        baseline = torch.cuda.memory_allocated(dev) / 2**20
        memory_kind = "cuda max_memory_allocated"
    else:
        baseline = _rss_mb("VmRSS")
        memory_kind = (
            "cpu peak RSS (VmHWM)" if _reset_peak_rss() else "cpu peak RSS since process start"
        )
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        one_step()
        _sync(dev)
        times.append(time.perf_counter() - start)
    if dev.type == "cuda":
        peak_memory = torch.cuda.max_memory_allocated(dev) / 2**20
        device_name = torch.cuda.get_device_name(dev)
    else:
        peak_memory = _rss_mb("VmHWM")
        device_name = "cpu"
    median = statistics.median(times)
    peak = peak_tflops if peak_tflops is not None else None
    if peak is None and dev.type == "cuda":
        peak = _peak_tflops(device_name, precision)
    mfu = flops / median / (peak * 1e12) if (flops and peak and dev.type == "cuda") else None
    return BenchResult(
        name=name,
        model=model_name,
        mode=mode,
        device=str(dev),
        device_name=device_name,
        precision=precision,
        batch_size=batch_size,
        steps=steps,
        warmup=warmup,
        step_time_s_median=median,
        step_time_s_mean=statistics.fmean(times),
        clips_per_s=batch_size / median if median > 0 else float("nan"),
        peak_memory_mb=peak_memory,
        baseline_memory_mb=baseline,
        memory_kind=memory_kind,
        parameters=params,
        flops_per_step=flops,
        flops_counted_on=flops_device,
        mfu=mfu,
        peak_tflops=peak,
        threads=torch.get_num_threads(),
    )


def _example_batch(model: nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    if args.data:
        from vlbook.train.config import ComponentSpec
        from vlbook.train.data import build_dataset

        dataset = build_dataset(ComponentSpec(args.data, json.loads(args.data_kwargs)))
        collate = getattr(dataset, "collate", None) or torch.utils.data.default_collate
        return collate([dataset[i % len(dataset)] for i in range(args.batch_size)])
    if hasattr(model, "example_batch"):
        return model.example_batch(args.batch_size, generator=torch.Generator().manual_seed(0))
    raise ValueError(
        f"{type(model).__name__} has no example_batch(batch_size); pass --data NAME to read one"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="debug_tiny", help="registered model name")
    parser.add_argument("--model-kwargs", default="{}", help="JSON keyword arguments")
    parser.add_argument("--factory", default="", help="'module:function' building the model")
    parser.add_argument("--data", default="", help="dataset name for the batch (optional)")
    parser.add_argument("--data-kwargs", default="{}", help="JSON keyword arguments")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--mode", choices=("train", "infer", "both"), default="both")
    parser.add_argument("--precision", choices=("no", "bf16", "fp16"), default="no")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 ...")
    parser.add_argument("--peak-tflops", type=float, default=None, help="override for MFU")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--name", default="", help="output name (default from the settings)")
    parser.add_argument("--no-flops", action="store_true", help="skip the meta-device count")


def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    kwargs = json.loads(args.model_kwargs)
    if args.factory:
        from vlbook.train.data import import_object

        build = import_object(args.factory)
        model_name = args.factory
    else:
        from vlbook.models import create_model

        def build() -> nn.Module:
            return create_model(args.model, **kwargs)

        model_name = args.model

    def factory() -> nn.Module:
        return build(**kwargs) if args.factory else build()

    batch = _example_batch(factory(), args)
    modes = ("train", "infer") if args.mode == "both" else (args.mode,)
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    label = args.name or (
        f"{model_name.replace(':', '.')}-{device.replace(':', '')}-{args.precision}"
        f"-b{args.batch_size}"
    )
    results = [
        benchmark(
            factory,
            batch,
            name=label,
            model_name=model_name,
            mode=mode,
            steps=args.steps,
            warmup=args.warmup,
            precision=args.precision,
            device=device,
            peak_tflops=args.peak_tflops,
            count_model_flops=not args.no_flops,
        )
        for mode in modes
    ]
    out_dir = results_root() / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {"suite": "train", "results": [asdict(r) for r in results]}
    json_path = out_dir / f"train-{label}.json"
    json_path.write_text(json.dumps(payload, indent=1))
    (out_dir / f"train-{label}.md").write_text(
        "\n".join(f"### {r.mode}\n\n{r.markdown()}" for r in results)
    )
    for r in results:
        memory = f"{r.peak_memory_mb:.0f} MB" if r.peak_memory_mb is not None else "n/a"
        flops = f"{r.flops_per_step / 1e9:.3g} GFLOPs" if r.flops_per_step else "n/a"
        mfu = f" MFU {100 * r.mfu:.1f}%" if r.mfu is not None else ""
        print(
            f"{r.mode:5s} {r.device_name} {r.precision} batch {r.batch_size}: "
            f"{1000 * r.step_time_s_median:.2f} ms/step, {r.clips_per_s:.1f} clips/s, "
            f"peak {memory} ({r.memory_kind}), {r.parameters / 1e6:.3g} M params, "
            f"{flops}/step{mfu}"
        )
    print(f"wrote {json_path}")
    return payload
