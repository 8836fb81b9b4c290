"""Data: synthetic generation time and loader throughput (clips/s) at toy and 224 px settings.

    python -m vlbook.bench data                 # toy preset generation + both loader settings
    python -m vlbook.bench data --quick         # smoke preset, fewer batches

Writes ``results_root()/bench/data.json`` and ``data.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from vlbook.paths import results_root


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true", help="smoke preset instead of toy")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts to measure"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=20, help="batches per measurement")
    parser.add_argument(
        "--gen-workers",
        type=int,
        default=None,
        help="processes for generation (default: 2, or 1 below 200 clips)",
    )
    parser.add_argument("--out", default=None, help="output folder (default results/bench)")


def _throughput(dataset, batch_size: int, batches: int, workers: int) -> float:
    from vlbook.data.loader import build_loader

    loader = build_loader(dataset, batch_size, shuffle=True, seed=0, num_workers=workers)
    it = iter(loader)
    next(it)  # start-up (worker spawn) is not throughput
    start, clips = time.perf_counter(), 0
    for _ in range(batches):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            batch = next(it)
        clips += len(batch["video"])
    return clips / (time.perf_counter() - start)


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from vlbook.data import build_dataset
    from vlbook.data.synthetic import PRESETS, generate
    from vlbook.data.tokenizer import load_tokenizer
    from vlbook.data.video import resolve_backend

    preset = "smoke" if args.quick else "toy"
    params = dict(PRESETS[preset])
    tmp = Path(tempfile.mkdtemp(prefix="vlbook-bench-data-"))
    results: dict[str, Any] = {
        "suite": "data",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "video_backend": resolve_backend("auto"),
        },
        "generation": {},
        "loader": [],
    }
    try:
        t0 = time.perf_counter()
        root = generate(tmp / preset, workers=args.gen_workers, **params)
        seconds = time.perf_counter() - t0
        clips = params["num_train"] + params["num_val"] + params["num_test"]
        results["generation"] = {
            "preset": preset,
            "clips": clips,
            "seconds": round(seconds, 2),
            "clips_per_s": round(clips / seconds, 1),
            "settings": {k: params[k] for k in ("num_frames", "size", "fps")},
            "workers": json.loads((root / "manifest.json").read_text())["workers"],
        }
        print(f"generation ({preset}, {clips} clips): {seconds:.1f} s", flush=True)
        tok = load_tokenizer(root / "tokenizer")
        big = generate(
            tmp / "big",
            num_train=96,
            num_val=0,
            num_test=0,
            num_frames=16,
            size=224,
            fps=8.0,
            seed=0,
            captions_per_clip=2,
            workers=1,
        )
        settings = [
            ("toy", root, dict(num_frames=8, size=params["size"], crop="resize")),
            ("224px", big, dict(num_frames=8, size=224, crop="random_resized")),
        ]
        for name, folder, kw in settings:
            ds = build_dataset(
                "video_text",
                annotation=folder / "retrieval_train.jsonl",
                split="train",
                tokenizer=tok,
                max_len=32,
                **kw,
            )
            for workers in args.workers:
                rate = _throughput(ds, args.batch_size, args.batches, workers)
                row = {
                    "setting": name,
                    "source_px": json.loads((folder / "manifest.json").read_text())["settings"][
                        "size"
                    ],
                    **{k: v for k, v in kw.items()},
                    "batch_size": args.batch_size,
                    "workers": workers,
                    "clips_per_s": round(rate, 1),
                }
                results["loader"].append(row)
                print(f"loader {name} workers={workers}: {rate:.1f} clips/s", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = Path(args.out) if args.out else results_root() / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "data.json").write_text(json.dumps(results, indent=1))
    g = results["generation"]
    lines = [
        "# Data benchmark",
        "",
        f"Machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}, "
        f"video backend {results['machine']['video_backend']}.",
        "",
        f"Generation of the {g['preset']} preset ({g['clips']} clips, {g['settings']['num_frames']}"
        f" frames at {g['settings']['size']} px, {g['workers']} process(es)): "
        f"**{g['seconds']} s** ({g['clips_per_s']} clips/s).",
        "",
        "| setting | source px | output px | frames | crop | workers | clips/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["loader"]:
        lines.append(
            f"| {r['setting']} | {r['source_px']} | {r['size']} | {r['num_frames']} | "
            f"{r['crop']} | {r['workers']} | {r['clips_per_s']} |"
        )
    (out / "data.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'data.json'} and {out / 'data.md'}")
    return results
