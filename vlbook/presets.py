"""Scale presets of the chapters that are not one paper: the intro and the capstone.

Paper chapters register theirs in their model file (``vlbook/models/<paper>.py``).
"""

from __future__ import annotations

from vlbook.config import register_preset

register_preset(
    "intro",
    {
        # smoke: seconds; toy: the figures of the book; full: the same (the intro trains
        # nothing; its paper-scale content is the token arithmetic, computed at every scale).
        "smoke": {"data": "smoke", "examples": 3, "probe_clips": None},
        "toy": {"data": "toy", "examples": 6, "probe_clips": None},
        "full": {"data": "toy", "examples": 6, "probe_clips": None},
    },
)
