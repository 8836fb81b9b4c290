#!/usr/bin/env python3
"""Convert the official cc3m files in <data>/cc3m/raw/ to vlbook's unified annotations.

Same as ``vlbook-data prepare cc3m [--root DIR] [--overwrite] [--keep-missing]``; see
``vlbook-data info cc3m`` for sources, licence, expected counts and the evaluation split, and
data_scripts/README.md for the expected raw layout.
"""

from __future__ import annotations

import sys

from vlbook.data.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "cc3m", *sys.argv[1:]]))
