"""Checkpoint loading never runs pickled code (vlbook.serialization.safe_load and every loader
built on it): crafted files are refused with UnsafeCheckpointError, real ones still load."""

from __future__ import annotations

import argparse
import os
import pathlib
import random

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from test_allinone import official_state_dict  # noqa: E402
from test_allinone import tiny_config as allinone_config  # noqa: E402
from test_evilm import tiny_tokenizer  # noqa: E402
from test_umt import official_stage1_state_dict  # noqa: E402
from test_umt import tiny_config as umt_config  # noqa: E402
from test_vlm import tiny_model as vlm_model  # noqa: E402

from vlbook.chapters.simvtp import _cache_clips  # noqa: E402
from vlbook.models.allinone import AllInOne  # noqa: E402
from vlbook.models.allinone import load_official_checkpoint as load_allinone  # noqa: E402
from vlbook.models.evilm import load_video_tokenizer, save_video_tokenizer  # noqa: E402
from vlbook.models.umt import UMT  # noqa: E402
from vlbook.models.umt import load_official_checkpoint as load_umt  # noqa: E402
from vlbook.models.vlm import load_mmpt_checkpoint, mmpt_names  # noqa: E402
from vlbook.serialization import UnsafeCheckpointError, safe_load  # noqa: E402
from vlbook.train.checkpoint import (  # noqa: E402
    begin_checkpoint,
    finish_checkpoint,
    load_checkpoint,
    save_checkpoint,
    write_state,
)


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: the stand-in for arbitrary code."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path) -> pathlib.Path:
    return tmp_path / "pwned"


def assert_refused(call, path, marker, hint="trust=True") -> UnsafeCheckpointError:
    with pytest.raises(UnsafeCheckpointError) as info:
        call()
    assert str(path) in str(info.value)
    assert hint in str(info.value)
    assert not marker.exists(), "the crafted pickle ran code"
    return info.value


# ---------------------------------------------------------------- the helper itself


def test_safe_load_refuses_a_payload_and_names_file_and_type(tmp_path, marker):
    path = tmp_path / "evil.pt"
    torch.save({"weights": torch.zeros(2), "extra": Payload(marker)}, path)
    err = assert_refused(lambda: safe_load(path), path, marker)
    assert "getattr" in str(err)  # how pickle reaches Path.touch
    assert isinstance(err, ValueError)


def test_safe_load_names_a_plain_unlisted_class(tmp_path, marker):
    path = tmp_path / "args.pt"
    torch.save({"args": argparse.Namespace(lr=1.0)}, path)
    err = assert_refused(lambda: safe_load(path), path, marker)
    assert "argparse.Namespace" in str(err)
    assert safe_load(path, allow=(argparse.Namespace,))["args"].lr == 1.0


def test_safe_load_trust_opts_in(tmp_path, marker):
    path = tmp_path / "evil.pt"
    torch.save({"extra": Payload(marker)}, path)
    safe_load(path, trust=True)
    assert marker.exists()  # trusted files load as torch.load(weights_only=False) would


# ---------------------------------------------------------------- All-in-one


def test_allinone_official_checkpoint(tmp_path, marker):
    config = allinone_config(vocab_size=60, max_text_len=8)
    official = official_state_dict(config)
    good = tmp_path / "allinone.ckpt"
    torch.save({"state_dict": official, "epoch": 3, "global_step": 10,
                "hyper_parameters": {"config": {"lr": 1e-4, "datasets": ["msrvtt"]},
                                     "args": argparse.Namespace(seed=0)}}, good)
    model = AllInOne(config)
    load_allinone(model, good)
    assert torch.equal(model.vtm_head.fc.weight, official["itm_score.fc.weight"])

    bad = tmp_path / "allinone_evil.ckpt"
    torch.save({"state_dict": official, "epoch": 3,
                "hyper_parameters": {"config": Payload(marker)}}, bad)
    assert_refused(lambda: load_allinone(AllInOne(config), bad), bad, marker)
    load_allinone(AllInOne(config), bad, trust=True)
    assert marker.exists()


# ---------------------------------------------------------------- VLM (fairseq MMPT)


def test_vlm_mmpt_checkpoint(tmp_path, marker):
    source = vlm_model(seed=1)
    official = {mmpt: source.state_dict()[ours] for ours, mmpt in mmpt_names(source).items()}
    good = tmp_path / "checkpoint_best.pt"
    torch.save({"model": official, "args": argparse.Namespace(arch="mmfusion", lr=[5e-5]),
                "optimizer_history": [{"optimizer_name": "FairseqAdam", "num_updates": 7}],
                "extra_state": {"epoch": 2}}, good)
    target = vlm_model(seed=2)
    load_mmpt_checkpoint(target, good)
    key = next(iter(mmpt_names(source)))
    assert torch.equal(target.state_dict()[key], source.state_dict()[key])

    bad = tmp_path / "checkpoint_evil.pt"
    torch.save({"model": official, "args": argparse.Namespace(arch=Payload(marker))}, bad)
    assert_refused(lambda: load_mmpt_checkpoint(vlm_model(seed=2), bad), bad, marker)


# ---------------------------------------------------------------- UMT


def test_umt_official_checkpoint(tmp_path, marker):
    model = UMT(umt_config())
    state = official_stage1_state_dict(model)
    good = tmp_path / "umt.pth"
    torch.save({"model": state, "epoch": 199, "args": argparse.Namespace(batch_size=32)}, good)
    load_umt(model, good)
    assert torch.equal(model.blocks[1].attn.q_bias, state["encoder.blocks.1.attn.q_bias"])

    bad = tmp_path / "umt_evil.pth"
    torch.save({"model": state, "epoch": 199, "args": Payload(marker)}, bad)
    assert_refused(lambda: load_umt(UMT(umt_config()), bad), bad, marker)


# ---------------------------------------------------------------- E-ViLM video tokenizer


def test_evilm_video_tokenizer(tmp_path, marker):
    tok = tiny_tokenizer()
    good = save_video_tokenizer(tok, tmp_path / "vt.pt")
    loaded = load_video_tokenizer(good)
    assert torch.equal(next(iter(loaded.state_dict().values())),
                       next(iter(tok.state_dict().values())))

    bad = tmp_path / "vt_evil.pt"
    torch.save({"config": {"payload": Payload(marker)}, "state_dict": tok.state_dict()}, bad)
    assert_refused(lambda: load_video_tokenizer(bad), bad, marker)


# ---------------------------------------------------------------- trainer checkpoints


def _trainer_state() -> dict:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 4))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "scaler": None, "step": 1, "epoch": 0,
            "position_in_epoch": 8, "batch_plan": {"per_device_batch": 4},
            "config": {"lr": 1e-3, "model": {"name": "debug_tiny"}}}


def test_trainer_checkpoint_state_and_rng(tmp_path, marker):
    random.seed(3)
    np.random.seed(3)
    path = save_checkpoint(tmp_path / "run", 1, _trainer_state())
    state, rng = load_checkpoint(path)
    assert state["step"] == 1 and state["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.98)
    assert rng["python"] == random.getstate()
    assert rng["numpy"][0] == "MT19937"
    assert np.array_equal(rng["numpy"][1], np.random.get_state()[1])

    bad_state = save_checkpoint(tmp_path / "evil_state", 1, {"step": 1, "x": Payload(marker)})
    assert_refused(lambda: load_checkpoint(bad_state), bad_state / "state.pt", marker)
    load_checkpoint(bad_state, trust=True)
    assert marker.exists()
    marker.unlink()

    root = tmp_path / "evil_rng"
    tmp = begin_checkpoint(root, 2)
    write_state(tmp, {"step": 2})
    torch.save({"python": random.getstate(), "numpy": Payload(marker)}, tmp / "rng-rank0.pt")
    bad_rng = finish_checkpoint(root, 2)
    assert_refused(lambda: load_checkpoint(bad_rng), bad_rng / "rng-rank0.pt", marker)


# ---------------------------------------------------------------- SimVTP clip cache


def test_simvtp_clip_cache(tmp_path, marker):
    ids = torch.randint(0, 40, (2, 2, 6))
    data = {"video": torch.zeros(2, 3, 2, 8, 8).half(), "input_ids": ids,
            "attention_mask": torch.ones_like(ids), "captions": [["a b", "c d"], ["e", "f"]],
            "video_ids": ["v0", "v1"]}
    good = tmp_path / "cache.pt"
    torch.save(data, good)
    loaded = _cache_clips(tmp_path / "unused.jsonl", None, 2, 8, 6, None, good)
    assert loaded["captions"] == data["captions"] and torch.equal(loaded["input_ids"], ids)

    bad = tmp_path / "cache_evil.pt"
    torch.save({**data, "video_ids": [Payload(marker)]}, bad)
    err = assert_refused(lambda: _cache_clips(tmp_path / "unused.jsonl", None, 2, 8, 6, None,
                                              bad), bad, marker, hint="Delete it")
    assert "pathlib" in str(err) or "getattr" in str(err)
