#!/usr/bin/env python3
"""Generate the synthetic video-text benchmark (same as ``vlbook-data synthetic``).

python data_scripts/make_synthetic.py --scale toy
python data_scripts/make_synthetic.py --root /tmp/syn --num-train 100 --size 96 --frames 12
"""

from __future__ import annotations

import argparse
import sys

from vlbook.data.synthetic import PRESETS, ensure_synthetic, generate


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--scale", default="toy", choices=sorted(PRESETS))
    p.add_argument("--root", default=None, help="output folder (default <data>/synthetic/SCALE)")
    p.add_argument("--num-train", type=int)
    p.add_argument("--num-val", type=int)
    p.add_argument("--num-test", type=int)
    p.add_argument("--frames", type=int, dest="num_frames")
    p.add_argument("--size", type=int)
    p.add_argument("--fps", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--workers", type=int)
    args = p.parse_args(argv)
    custom = {k: v for k, v in vars(args).items() if k not in ("scale", "root") and v is not None}
    workers = custom.pop("workers", None)
    if custom:  # explicit settings: a custom benchmark in --root
        if not args.root:
            p.error("custom settings need --root (the presets live in <data>/synthetic/SCALE)")
        root = generate(args.root, workers=workers, **(PRESETS[args.scale] | custom))
    else:
        extra = {"workers": workers} if workers else {}
        root = ensure_synthetic(args.scale, root=args.root, **extra)
    print(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
