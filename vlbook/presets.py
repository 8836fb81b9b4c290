"""Scale presets of the chapters that are not one paper: the intro and the capstone.

Paper chapters register theirs in their chapter module (``vlbook/chapters/<paper>.py``).
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

register_preset(
    "capstone",
    {
        # one Budget (vlbook.capstone.Budget) per scale: every method gets the same width,
        # depth, steps, batch and clips. smoke: two seeds so that the spread is computed.
        "smoke": {"data": "smoke", "budget": {
            "width": 32, "depth": 2, "heads": 4, "steps": 3, "batch_size": 8, "aux_steps": 2,
            "train_clips": 32, "eval_videos": 16, "qa_train": 64, "seeds": [0, 1]}},
        "toy": {"data": "toy", "budget": {
            "width": 64, "depth": 4, "heads": 4, "steps": 150, "batch_size": 32,
            "aux_steps": 150, "train_clips": 1000, "eval_videos": 200, "qa_train": 3000,
            "seeds": [0, 1, 2]}},
        # full: the same protocol at a GPU-sized budget on the synthetic benchmark (the five
        # papers' own full configurations are each chapter's `full` scale, not this chapter's)
        "full": {"data": "toy", "budget": {
            "width": 256, "depth": 8, "heads": 8, "steps": 5000, "batch_size": 128,
            "aux_steps": 2000, "train_clips": 2000, "eval_videos": 500, "qa_train": 6000,
            "num_frames": 16, "size": 64, "patch_size": 16, "seeds": [0, 1, 2, 3, 4]}},
    },
)
