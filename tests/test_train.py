"""Trainer pieces: config, batch derivation, AdamW groups, schedules, sampler, a learning run."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from train_fixtures import debug_config, one_cpu_thread  # noqa: F401

from vlbook.models import create_model
from vlbook.models.debug import DebugPairs
from vlbook.train import (
    ConfigError,
    TrainConfig,
    TrainResult,
    derive_batch,
    lr_multiplier,
    param_groups,
    train,
)
from vlbook.train.data import ResumableSampler
from vlbook.train.schedules import build_scheduler


def small_config(tmp_path, **overrides) -> TrainConfig:
    values = {"lr": 3e-3, "warmup_steps": 2, "total_steps": 12, "log_every": 4,
              "tensorboard": True}  # one test reads the TensorBoard events
    return debug_config(tmp_path / "run", **{**values, **overrides})


# ---------------------------------------------------------------------------- config
def test_config_yaml_round_trip_and_overrides(tmp_path):
    config = small_config(tmp_path, betas=[0.9, 0.98], layer_decay=0.75)
    path = config.save(tmp_path / "c.yaml")
    loaded = TrainConfig.load(path)
    assert loaded == config
    assert loaded.betas == (0.9, 0.98)
    changed = loaded.with_overrides(["lr=1e-4", "model.kwargs.dim=16", "schedule=polynomial"])
    assert changed.lr == 1e-4 and changed.model.kwargs == {"dim": 16}
    assert changed.schedule == "polynomial" and config.lr == 3e-3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("precision=fp8", "precision"),
        ("schedule=step", "schedule"),
        ("lr_rate=1", "unknown key"),
        ("layer_decay=0", "layer_decay"),
        ("betas=[0.9]", "betas"),
        ("nonsense", "key=value"),
    ],
)
def test_config_rejects_bad_values_by_name(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        small_config(tmp_path).with_overrides([override])


def test_config_load_names_file_and_unknown_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("total_steps: 3\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*learning_rate"):
        TrainConfig.load(path)


@pytest.mark.parametrize(
    ("global_batch", "procs", "cap", "per_device", "accum"),
    [
        (256, 8, 32, 32, 1),  # VLM: 8 GPUs x 32
        (4096, 8, 64, 64, 8),  # All-in-one: accumulation = 4096 / (64 x 8)
        (96, 2, 20, 16, 3),  # 48 per process, cap 20 -> 3 x 16
        (10, 1, 4, 2, 5),  # 10 = 2 x 5 (3 does not divide 10)
        (8, 2, None, 4, 1),
    ],
)
def test_derive_batch_keeps_global_batch_exact(global_batch, procs, cap, per_device, accum):
    plan = derive_batch(global_batch, procs, cap)
    assert (plan.per_device_batch, plan.accumulation_steps) == (per_device, accum)
    assert plan.per_device_batch * plan.num_processes * plan.accumulation_steps == global_batch


def test_derive_batch_rejects_indivisible_global_batch():
    with pytest.raises(ConfigError, match="not divisible by num_processes=3"):
        derive_batch(8, 3)


# ---------------------------------------------------------------------------- optimiser
class _Blocks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch_embed = nn.Linear(4, 4)
        self.pos_embed = nn.Parameter(torch.zeros(1, 3, 4))
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)) for _ in range(3)
        )
        self.head = nn.Linear(4, 2)


def test_param_groups_weight_decay_exclusions_and_layer_decay():
    model = _Blocks()
    groups = param_groups(model, lr=1.0, weight_decay=0.05, layer_decay=0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["blocks.0.0.weight"]["weight_decay"] == 0.05
    for name in ("blocks.0.0.bias", "blocks.1.1.weight", "pos_embed", "head.bias"):
        assert by_name[name]["weight_decay"] == 0.0, name
    # BEiT layer-wise decay with L = 3: lr * 0.5 ** (L + 1 - layer_id)
    assert by_name["patch_embed.weight"]["lr"] == pytest.approx(0.5**4)
    assert by_name["pos_embed"]["lr"] == pytest.approx(0.5**4)
    assert by_name["blocks.0.0.weight"]["lr"] == pytest.approx(0.5**3)
    assert by_name["blocks.2.0.weight"]["lr"] == pytest.approx(0.5**1)
    assert by_name["head.weight"]["lr"] == pytest.approx(1.0)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_param_groups_honour_model_no_weight_decay_list():
    model = _Blocks()
    model.no_weight_decay = lambda: {"head.weight"}
    groups = param_groups(model, lr=1.0, weight_decay=0.1)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["head.weight"]["weight_decay"] == 0.0
    assert by_name["blocks.0.0.weight"]["weight_decay"] == 0.1


# ---------------------------------------------------------------------------- schedules
def test_schedules_against_their_formulas():
    kw = {"warmup_steps": 10, "total_steps": 110}
    assert lr_multiplier(0, **kw) == 0.0
    assert lr_multiplier(5, **kw) == pytest.approx(0.5)
    assert lr_multiplier(10, **kw, kind="cosine") == pytest.approx(1.0)
    assert lr_multiplier(60, **kw, kind="cosine") == pytest.approx(0.5)
    assert lr_multiplier(35, **kw, kind="cosine") == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.25))
    )
    assert lr_multiplier(60, **kw, kind="linear") == pytest.approx(0.5)
    assert lr_multiplier(60, **kw, kind="polynomial", power=2.0) == pytest.approx(0.25)
    assert lr_multiplier(110, **kw, kind="linear", min_ratio=0.1) == pytest.approx(0.1)
    assert lr_multiplier(500, **kw, kind="cosine") == pytest.approx(0.0)
    with pytest.raises(ValueError, match="schedule 'step'"):
        lr_multiplier(20, **kw, kind="step")


def test_scheduler_keeps_layer_scaled_group_lrs():
    model = _Blocks()
    opt = torch.optim.AdamW(param_groups(model, lr=2.0, weight_decay=0.0, layer_decay=0.5))
    sched = build_scheduler(opt, warmup_steps=2, total_steps=4, kind="linear")
    for _ in range(3):
        opt.step()
        sched.step()
    # step 3 of 4: linear decay 1 - (3 - 2) / 2 = 0.5
    for group in opt.param_groups:
        assert group["lr"] == pytest.approx(2.0 * group["lr_scale"] * 0.5)


# ---------------------------------------------------------------------------- sampler
def test_sampler_shards_are_disjoint_and_resume_mid_epoch():
    shards = [ResumableSampler(10, num_replicas=2, rank=r, seed=3) for r in (0, 1)]
    for s in shards:
        s.set_position(1)
    a, b = (list(s) for s in shards)
    assert len(a) == len(b) == 5 and not set(a) & set(b)
    assert sorted(a + b) == list(range(10))
    shards[0].set_position(1, start=2)
    assert list(shards[0]) == a[2:]
    shards[0].set_position(2)
    assert list(shards[0]) != a  # a new permutation each epoch
    torch.manual_seed(0)
    before = torch.get_rng_state()
    list(shards[0])
    assert torch.equal(before, torch.get_rng_state())  # never touches the global generator


# ---------------------------------------------------------------------------- runs
def test_debug_model_learns_and_logs_every_loss_key(tmp_path):
    config = small_config(tmp_path, total_steps=40, max_per_device_batch=4, log_every=10)
    result = train(config)
    assert isinstance(result, TrainResult) and result.finished and result.steps == 40
    assert (result.per_device_batch, result.accumulation_steps) == (4, 2)
    assert result.contrastive_batch_size == 4 and result.contrastive_negatives == 3
    assert result.samples_seen == 40 * 8
    import pandas as pd

    log = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert {"loss", "loss_t2v", "loss_v2t", "acc_t2v", "lr"} <= set(log.columns)
    assert list(log["step"]) == [10, 20, 30, 40]
    # chance level of a 4-way in-batch contrastive loss is log(4) = 1.386
    assert log["loss"].iloc[0] > 1.0 and log["loss"].iloc[-1] < 0.5 * log["loss"].iloc[0]
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    assert TrainResult.load(tmp_path / "run").final_losses == result.final_losses
    assert result.weights_sha256 and len(result.weights_sha256) == 1


def test_warmup_in_epochs_becomes_steps_once_the_dataset_size_is_known(tmp_path):
    # 32 clips / global batch 8 = 4 steps per epoch: 1.5 warm-up epochs = 6 steps, so the
    # learning rate climbs for 6 steps to its peak and then decays linearly towards 0
    config = small_config(tmp_path, warmup_steps=0, warmup_epochs=1.5, total_steps=None,
                          epochs=3, schedule="linear", log_every=1)
    result = train(config)
    assert result.total_steps == 12
    import pandas as pd

    lr = pd.read_csv(tmp_path / "run" / "metrics.csv").set_index("step")["lr"]
    peak = lr.max()
    assert peak == pytest.approx(3e-3)
    # the logged lr is the one step s used, lr(s - 1): 0, 1/6, ..., 5/6 of the peak, then it
    assert lr.loc[1] == 0.0 and int(lr.idxmax()) == 7
    assert lr.loc[4] == pytest.approx(peak * 3 / 6)
    assert lr.loc[10] == pytest.approx(peak * (12 - 9) / (12 - 6))
    with pytest.raises(ConfigError, match="set one of the two"):
        small_config(tmp_path, warmup_steps=2, warmup_epochs=1.0)
    with pytest.raises(ConfigError, match="warmup_epochs=-1"):
        small_config(tmp_path, warmup_steps=0, warmup_epochs=-1)


def test_config_from_preset_maps_a_chapter_train_block(tmp_path):
    from vlbook.train.config import config_from_preset

    train_block = {"epochs": 200, "warmup_epochs": 40, "batch_size": 1024, "lr": 6e-4,
                   "weight_decay": 0.05, "schedule": "cosine", "betas": (0.9, 0.95),
                   "precision": "bf16", "max_per_device_batch": 16, "num_frames": 4}
    config = config_from_preset({"name": "debug_tiny"}, {"name": "debug_pairs"}, train_block,
                                seed=3, output_dir=str(tmp_path), ignore=("num_frames",))
    assert (config.epochs, config.warmup_epochs, config.warmup_steps) == (200, 40, 0)
    assert (config.global_batch_size, config.max_per_device_batch) == (1024, 16)
    assert (config.lr, config.weight_decay, config.betas) == (6e-4, 0.05, (0.9, 0.95))
    assert (config.precision, config.seed, config.total_steps) == ("bf16", 3, None)
    assert config.model.name == "debug_tiny" and config.data.name == "debug_pairs"
    steps = config_from_preset({"name": "debug_tiny"}, {"name": "debug_pairs"},
                               {"steps": 50, "batch_size": 8, "lr": 1e-3, "warmup_steps": 5})
    assert (steps.total_steps, steps.warmup_steps, steps.epochs) == (50, 5, None)
    with pytest.raises(ConfigError, match="train.warmup_epoch.*warmup_epochs"):
        config_from_preset({"name": "debug_tiny"}, {"name": "debug_pairs"},
                           {"steps": 5, "batch_size": 8, "warmup_epoch": 1})


def test_global_batch_larger_than_dataset_is_refused(tmp_path):
    config = small_config(tmp_path, global_batch_size=64)
    with pytest.raises(ConfigError, match="smaller than one global batch of 64"):
        train(config)


def test_model_without_loss_dict_is_refused(tmp_path):
    class NoDict(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(1))

        def forward(self, batch):
            return self.w.sum()

    with pytest.raises(TypeError, match="dict of losses with the total under 'loss'"):
        train(small_config(tmp_path), model=NoDict())


def test_eval_hook_runs_and_is_logged(tmp_path):
    calls = []

    def evaluate(model, accelerator, step):
        calls.append((step, model.training))
        return {"score": float(step)}

    result = train(small_config(tmp_path, eval_every=6), eval_fn=evaluate)
    assert calls == [(6, False), (12, False)]
    assert result.eval_metrics == {"score": 12.0}


def test_debug_dataset_and_model_shapes():
    data = DebugPairs(num_clips=6, num_classes=3)
    item = data[4]
    assert item["video"].shape == (2, 3, 16, 16) and item["label"].item() == 1
    assert torch.equal(data[1]["input_ids"], data[4]["input_ids"])  # same class, same caption
    model = create_model("debug_tiny")
    batch = model.example_batch(3)
    out = model(batch)
    assert out["loss"].requires_grad and out["loss"].ndim == 0
    with pytest.raises(ValueError, match=r"video: expected \(B, T, C, H, W\)"):
        model.encode_video(torch.zeros(2, 3, 16, 16))


class _Regression(nn.Module):
    """Per-sample mean-squared error: its gradient does not depend on how a batch is split."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(3, 1)

    def forward(self, batch):
        return {"loss": ((self.linear(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()}


class _Points(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(16, 3, generator=g)
        self.y = self.x @ torch.tensor([1.0, -2.0, 0.5]) + 0.3

    def __len__(self) -> int:
        return 16

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    weights = []
    for cap, name in ((None, "whole"), (2, "accum")):
        config = small_config(
            tmp_path / name, max_per_device_batch=cap, total_steps=6, weight_decay=0.0
        )
        result = train(config, model=_Regression(), dataset=_Points())
        assert result.accumulation_steps == (1 if cap is None else 4)
        weights.append(result.model.linear.weight.detach().clone())
    torch.testing.assert_close(weights[0], weights[1], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(weights[0], _Regression().linear.weight)  # it did train


def test_bf16_runs_on_cpu_and_fp16_needs_a_gpu(tmp_path):
    from vlbook.train import load_checkpoint

    bf16 = train(small_config(tmp_path / "bf16", precision="bf16", total_steps=3))
    state, _ = load_checkpoint(tmp_path / "bf16" / "run" / "checkpoints" / "checkpoint-00000003")
    assert state["scaler"] is None and math.isfinite(bf16.final_losses["loss"])
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="precision='fp16' needs a GPU"):
            train(small_config(tmp_path / "fp16", precision="fp16", total_steps=3))
    else:
        train(small_config(tmp_path / "fp16", precision="fp16", total_steps=3))
        state, _ = load_checkpoint(
            tmp_path / "fp16" / "run" / "checkpoints" / "checkpoint-00000003"
        )
        assert state["scaler"]["scale"] > 0


def test_layer_decay_reaches_the_optimiser(tmp_path):
    result = train(small_config(tmp_path, layer_decay=0.5, total_steps=2))
    from vlbook.train import load_checkpoint

    state, _ = load_checkpoint(tmp_path / "run" / "checkpoints" / "checkpoint-00000002")
    scales = sorted({g["lr_scale"] for g in state["optimizer"]["param_groups"]})
    # debug_tiny: 2 layers per tower -> embeddings 0.5**3, layers 0.5**2 and 0.5, heads 1
    assert scales == [0.125, 0.25, 0.5, 1.0]
    assert result.steps == 2
