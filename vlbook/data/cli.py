"""``vlbook-data``: generate, check and prepare datasets.

vlbook-data synthetic --scale toy          # generate (or reuse) the synthetic benchmark
vlbook-data health                         # what you have, what is missing
vlbook-data verify DIR                     # decode every file, write DIR/quarantine.jsonl
vlbook-data prepare msrvtt                 # convert <data>/msrvtt/raw/* to annotations
vlbook-data download msrvtt                # fetch the public files (resumable, verified)
vlbook-data info msrvtt                    # sources, licence, counts, evaluation split
"""

from __future__ import annotations

import argparse
import json
import sys

from vlbook.paths import data_root


def _cmd_synthetic(args: argparse.Namespace) -> int:
    from vlbook.data.synthetic import ensure_synthetic, read_manifest

    overrides = {k: v for k, v in (("seed", args.seed), ("workers", args.workers)) if v is not None}
    root = ensure_synthetic(args.scale, root=args.root, overwrite=args.overwrite, **overrides)
    manifest = read_manifest(root) or {}
    print(
        f"synthetic {args.scale}: {root} ({manifest.get('generation_seconds', '?')} s to generate)"
    )
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    from vlbook.data.registry import health

    rows = health(args.root)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        print(f"{r['dataset']:<18} {r['status']}")
        if r["raw_missing"] and r["status"] == "missing":
            print(f"{'':<18} missing raw: {', '.join(r['raw_missing'])}")
        for name, n in r["annotations"].items():
            print(f"{'':<18} {name}: {n} records")
        if r["quarantined"]:
            print(f"{'':<18} quarantined files: {r['quarantined']}")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from vlbook.data.verify import verify_dataset

    out = verify_dataset(args.root, backend=args.backend, full=args.full)
    bad = sum(1 for line in out.read_text(encoding="utf-8").splitlines() if line.strip())
    if out.suffix == ".new":  # the existing list could not be merged (see verify_dataset)
        print(
            f"{bad} bad file(s); {out.with_suffix('')} could not be merged (edited "
            f"by hand?) and was left as it is; the new list is {out}: merge it by hand",
            file=sys.stderr,
        )
        return 1
    print(f"{bad} bad file(s) listed; quarantine list: {out}")
    return 0


def _cmd_prepare(args: argparse.Namespace) -> int:
    from vlbook.data.prepare import prepare
    from vlbook.data.registry import dataset_dir

    root = dataset_dir(args.dataset, args.root)
    summary = prepare(
        args.dataset, root, overwrite=args.overwrite, require_media=not args.keep_missing
    )
    print(f"{args.dataset} -> {root}\n{summary}")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from vlbook.data.prepare import download
    from vlbook.data.registry import REAL_DATASETS, dataset_dir

    spec = REAL_DATASETS[args.dataset]
    if not spec.public or not spec.sources:
        print(
            f"{args.dataset}: no public download — {spec.licence}. Put your copy's files "
            f"({', '.join(spec.raw_files)}) in {dataset_dir(args.dataset, args.root) / 'raw'}"
        )
        return 1
    raw = dataset_dir(args.dataset, args.root) / "raw"
    for src in spec.sources:
        print(f"fetching {src.url}")
        download(src.url, raw / src.filename, sha256=src.sha256, size=src.size)
    print(f"downloaded to {raw}; unpack archives there, then `vlbook-data prepare {args.dataset}`")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from vlbook.data.registry import REAL_DATASETS

    print(json.dumps(asdict(REAL_DATASETS[args.dataset]), indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    from vlbook.data.registry import REAL_DATASETS

    parser = argparse.ArgumentParser(
        prog="vlbook-data",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("synthetic", help="generate (or reuse) the synthetic benchmark")
    p.add_argument("--scale", default="smoke", choices=("smoke", "toy"))
    p.add_argument("--root", default=None, help="output folder (default <data>/synthetic/SCALE)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a benchmark made with other settings (only the files it wrote)",
    )
    p.set_defaults(fn=_cmd_synthetic)
    p = sub.add_parser("health", help="report available and missing datasets")
    p.add_argument("--root", default=None, help=f"data root (default {data_root()})")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=_cmd_health)
    p = sub.add_parser("verify", help="decode every media file, write quarantine.jsonl")
    p.add_argument("root", help="dataset folder holding the *.jsonl annotations")
    p.add_argument("--backend", default="auto", choices=("auto", "decord", "pyav"))
    p.add_argument("--full", action="store_true", help="decode every frame (slow)")
    p.set_defaults(fn=_cmd_verify)
    names = sorted(REAL_DATASETS)
    for cmd, fn, text in (
        ("prepare", _cmd_prepare, "convert raw files to annotations"),
        ("download", _cmd_download, "download the public raw files"),
        ("info", _cmd_info, "sources, licence, counts, evaluation split"),
    ):
        p = sub.add_parser(cmd, help=text)
        p.add_argument("dataset", choices=names)
        p.add_argument("--root", default=None, help="dataset folder (default <data>/DATASET)")
        if cmd == "prepare":
            p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
            p.add_argument(
                "--keep-missing",
                action="store_true",
                help="keep records whose media file is absent",
            )
        p.set_defaults(fn=fn)
    args = parser.parse_args(argv)
    try:
        return args.fn(args)
    except (FileNotFoundError, FileExistsError, ValueError, KeyError) as err:
        print(f"vlbook-data {args.command}: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
