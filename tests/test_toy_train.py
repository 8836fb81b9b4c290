"""The one toy loop (vlbook.train.toy) and the one clip cache (vlbook.data.cache)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vlbook.data.cache import ClipCache, StackedClips, cache_dataset, cached_batch
from vlbook.train import toy


class _Pair(nn.Module):
    """A weight that gets weight decay and a 'pos_embed' that the shared rule exempts."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full((2, 2), 2.0))
        self.pos_embed = nn.Parameter(torch.full((2, 2), 2.0))
        self.extra = nn.Parameter(torch.full((2, 2), 2.0))

    def forward(self, batch: dict) -> dict:
        # zero gradients: AdamW's update is 0, only decoupled weight decay moves a weight
        return {"loss": 0.0 * (self.weight.sum() + self.pos_embed.sum() + self.extra.sum())}


def test_fit_applies_the_shared_weight_decay_rule_and_the_chapter_extra_names():
    model = _Pair()
    lr, wd = 0.1, 0.5
    toy.fit(model, [{"x": torch.zeros(1)}], steps=1, lr=lr, weight_decay=wd, warmup_steps=0,
            schedule="constant", clip_grad_norm=None, no_weight_decay=["extra"])
    # one AdamW step with zero gradient: p <- p * (1 - lr * wd) for decayed parameters only
    torch.testing.assert_close(model.weight.data, torch.full((2, 2), 2.0 * (1 - lr * wd)))
    torch.testing.assert_close(model.pos_embed.data, torch.full((2, 2), 2.0))
    torch.testing.assert_close(model.extra.data, torch.full((2, 2), 2.0))


def test_fit_warms_up_from_zero_like_the_full_trainer():
    model = _Pair()
    toy.fit(model, [{"x": torch.zeros(1)}], steps=1, lr=0.1, weight_decay=0.5, warmup_steps=1,
            schedule="constant", clip_grad_norm=None)
    # lr_multiplier(0) = 0 / warmup: the first step does nothing, as in vlbook.train.train
    torch.testing.assert_close(model.weight.data, torch.full((2, 2), 2.0))


def test_fit_cycles_a_list_of_batches_in_order_and_logs_every_scalar_term():
    seen = []
    weight = nn.Parameter(torch.ones(()))
    model = nn.Module()
    model.w = weight

    def step(m, batch, gen):
        seen.append(int(batch["i"]))
        loss = (m.w - batch["i"]) ** 2
        return {"loss": loss, "half": loss / 2, "vector": torch.ones(3)}

    run = toy.fit(model, [{"i": torch.tensor(0)}, {"i": torch.tensor(1)}], steps=5, lr=0.01,
                  step_fn=step)
    assert seen == [0, 1, 0, 1, 0]
    assert len(run.history) == 5 and set(run.history[0]) == {"loss", "half"}
    assert run.history[0]["half"] == pytest.approx(run.history[0]["loss"] / 2)
    assert run.losses == [h["loss"] for h in run.history]


def test_fit_is_reproducible_and_seeds_the_batches():
    data = {"video": torch.randn(20, 3), "input_ids": torch.arange(20)}

    def run(seed):
        torch.manual_seed(7)  # the same initial weights for every run
        model = nn.Linear(3, 1)
        picked = []

        def step(m, batch, gen):
            picked.append(batch["input_ids"].tolist())
            return m(batch["video"]).pow(2).mean()

        toy.train_on_cache(model, data, steps=3, batch_size=4, lr=1e-2, seed=seed,
                           keys=("video", "input_ids"), step_fn=step)
        return picked, model.weight.detach().clone()

    a, wa = run(0)
    b, wb = run(0)
    c, _ = run(1)
    assert a == b and torch.equal(wa, wb) and a != c


def test_fit_rejects_a_step_without_a_loss():
    model = nn.Linear(1, 1)
    with pytest.raises(TypeError, match="expected a loss tensor"):
        toy.fit(model, [{}], steps=1, lr=1e-3, step_fn=lambda m, b, g: {"total": 1.0})


def test_toy_optim_reads_the_preset_and_caps_warm_up_at_a_tenth():
    kw = toy.toy_optim({"lr": 1e-3, "warmup_steps": 50, "betas": [0.9, 0.98],
                        "clip_grad_norm": 5.0, "no_weight_decay": ["token_type"]}, steps=100)
    assert kw == {"lr": 1e-3, "weight_decay": 0.05, "betas": (0.9, 0.98),
                  "schedule": "cosine", "clip_grad_norm": 5.0,
                  "no_weight_decay": ("token_type",), "warmup_steps": 10}
    assert toy.toy_optim({"lr": 1.0}, steps=4)["warmup_steps"] == 1


def test_epochs_reshuffles_and_calls_set_epoch():
    class Rows(torch.utils.data.Dataset):
        epochs: list[int] = []

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"i": torch.tensor(i)}

        def set_epoch(self, e):
            self.epochs.append(e)

    rows = Rows()
    stream = toy.epochs(rows, batch_size=2, seed=0)
    got = [next(stream)["i"].tolist() for _ in range(6)]
    assert rows.epochs == [0, 1, 2]
    for e in range(3):  # each epoch is a permutation of the four rows
        assert sorted(got[2 * e] + got[2 * e + 1]) == [0, 1, 2, 3]


def test_stacked_clips_pick_one_caption_per_batch_and_return_float32():
    video = torch.arange(3 * 2, dtype=torch.float16).view(3, 2)
    ids = torch.arange(3 * 2 * 4).view(3, 2, 4)
    clips = StackedClips({"video": video, "input_ids": ids,
                          "text": [["a0", "a1"], ["b0", "b1"], ["c0", "c1"]]})
    batch = clips.batch([2, 0], choice=1)
    assert batch["video"].dtype == torch.float32
    torch.testing.assert_close(batch["video"], video[[2, 0]].float())
    assert torch.equal(batch["input_ids"], ids[[2, 0], 1]) and batch["text"] == ["c1", "a1"]
    assert batch["video_index"].tolist() == [2, 0]
    assert clips.num_choices == 2 and torch.equal(clips.video, video)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert clips.sample(2, g1)["text"] == clips.sample(2, g2)["text"]
    one = StackedClips(clips.data, random_choice=False)[1]
    assert one["text"] == "b0" and torch.equal(one["input_ids"], ids[1, 0])
    assert StackedClips.collate([one, one])["input_ids"].shape == (2, 4)
    with pytest.raises(ValueError, match="one row per clip"):
        StackedClips({"video": video, "input_ids": ids[:2]})


class _Counting(torch.utils.data.Dataset):
    def __init__(self):
        self.reads = 0

    def __len__(self):
        return 3

    def __getitem__(self, i):
        self.reads += 1
        return {"video": torch.full((2,), float(i)), "text": f"t{i}", "skipped": []}

    collate = staticmethod(lambda samples: {
        "video": torch.stack([s["video"] for s in samples]),
        "text": [s["text"] for s in samples]})


def test_clip_cache_keeps_whole_samples_when_asked_and_refuses_what_it_cannot_redraw():
    data = _Counting()
    cached = ClipCache(data, keep=None, eager=True)
    assert data.reads == 3
    assert cached[2]["text"] == "t2" and data.reads == 3
    assert cached.items == [0, 1, 2] and len(cached) == 3
    with pytest.raises(TypeError, match="sample_fields"):
        ClipCache(data)  # keep=("video",) needs the dataset to redraw the other fields


def test_cache_dataset_stacks_and_cached_batch_picks_rows():
    stacked = cache_dataset(_Counting(), max_items=2, batch_size=1)
    assert torch.equal(stacked["video"], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    assert stacked["text"] == ["t0", "t1"]
    assert torch.equal(cached_batch(stacked, torch.tensor([1]))["video"],
                       torch.tensor([[1.0, 1.0]]))


class _TwoBlocks(nn.Module):
    """Two blocks and a head, each a scalar with gradient 1 (a loss that is their sum)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(1, 1, bias=False) for _ in range(2)])
        self.head = nn.Linear(1, 1, bias=False)
        for p in self.parameters():
            nn.init.constant_(p, 1.0)

    def forward(self, batch: dict) -> dict:
        return {"loss": sum(p.sum() for p in self.parameters())}


def test_fit_layer_decay_scales_each_block_learning_rate():
    """Adam's first step moves a parameter by lr (times its group's scale) whatever its
    gradient's size; with layer decay d over L = 2 blocks, block i gets d ** (L + 1 - (i + 1))
    and the head (layer L + 1) the full rate: 0.25, 0.5 and 1 for d = 0.5."""
    model = _TwoBlocks()
    lr = 0.1
    toy.fit(model, [{"x": torch.zeros(1)}], steps=1, lr=lr, weight_decay=0.0, warmup_steps=0,
            schedule="constant", clip_grad_norm=None, layer_decay=0.5)
    moved = [1.0 - float(b.weight) for b in model.blocks] + [1.0 - float(model.head.weight)]
    assert moved == pytest.approx([lr * 0.25, lr * 0.5, lr * 1.0], rel=1e-4)
