#!/usr/bin/env python3
"""Convert the official youcook2 files in <data>/youcook2/raw/ to vlbook's unified annotations.

Same as ``vlbook-data prepare youcook2 [--root DIR] [--overwrite] [--keep-missing]``; see
``vlbook-data info youcook2`` for sources, licence, expected counts and the evaluation split, and
data_scripts/README.md for the expected raw layout.
"""

from __future__ import annotations

import sys

from vlbook.data.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "youcook2", *sys.argv[1:]]))
