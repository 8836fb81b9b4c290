#!/usr/bin/env python3
"""Convert the official howto100m files in <data>/howto100m/raw/ to vlbook's unified annotations.

Same as ``vlbook-data prepare howto100m [--root DIR] [--overwrite] [--keep-missing]``; see
``vlbook-data info howto100m`` for sources, licence, expected counts and the evaluation split, and
data_scripts/README.md for the expected raw layout.
"""

from __future__ import annotations

import sys

from vlbook.data.cli import main

if __name__ == "__main__":
    sys.exit(main(["prepare", "howto100m", *sys.argv[1:]]))
