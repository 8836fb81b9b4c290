"""Command line of the benchmarks: ``python -m vlbook.bench SUITE --help``."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import vlbook.bench as bench_pkg


def main(argv: list[str] | None = None) -> int:
    suites = sorted(
        m.name for m in pkgutil.iter_modules(bench_pkg.__path__) if not m.name.startswith("_")
    )
    parser = argparse.ArgumentParser(prog="python -m vlbook.bench", description=__doc__)
    sub = parser.add_subparsers(dest="suite", required=True, metavar="SUITE")
    modules = {}
    for name in suites:
        module = importlib.import_module(f"vlbook.bench.{name}")
        if not hasattr(module, "run"):
            continue
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        modules[name] = module
    args = parser.parse_args(argv)
    modules[args.suite].run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
