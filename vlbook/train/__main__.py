"""``python -m vlbook.train CONFIG.yaml [--override key=value ...]``: the training CLI.

The same :func:`vlbook.train.train` that notebooks call; under ``accelerate launch`` every
process runs this module.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from vlbook.train.config import TrainConfig
from vlbook.train.trainer import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlbook.train", description=__doc__)
    parser.add_argument("config", help="YAML file of a TrainConfig")
    parser.add_argument(
        "--override",
        "-o",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config entry (dotted keys, YAML values); repeatable",
    )
    args = parser.parse_args(argv)
    config = TrainConfig.load(args.config)
    if args.override:
        config = config.with_overrides(args.override)
    result = train(config)
    if _is_main():
        print(json.dumps(result.to_dict(), indent=1), flush=True)
    return 0


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


if __name__ == "__main__":
    sys.exit(main())
