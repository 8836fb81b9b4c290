"""vlbook.distributed: two CPU processes (gloo) give the same VTC as one process.

The global batch (8 pairs, with a clip shared across the two ranks) is split 5 + 3, so the
gather also covers unequal per-rank batches.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vlbook import distributed as D
from vlbook.losses import vtc_loss

WORLD = 2
SPLIT = (5, 3)


def global_batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "video": torch.randn(8, 6, generator=g),
        "text": torch.randn(8, 6, generator=g),
        "ids": torch.tensor([0, 1, 2, 3, 4, 5, 3, 6]),  # clip 3 has a caption on each rank
        "weight": torch.randn(6, 4, generator=g),
    }


def vtc_on(video_in, text_in, ids, weight, *, gather: bool):
    """Projection (shared parameter) then UMT-style VTC; returns loss and features."""
    video = video_in @ weight
    text = text_in @ weight
    video.retain_grad()
    text.retain_grad()
    loss = vtc_loss(video, text, temperature=0.1, ids=ids, combine="mean", gather=gather).loss
    return loss, video, text


def _worker(rank: int, rendezvous: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=WORLD)
    try:
        batch = global_batch()
        start = sum(SPLIT[:rank])
        local = slice(start, start + SPLIT[rank])
        weight = batch["weight"].clone().requires_grad_()
        loss, video, text = vtc_on(
            batch["video"][local], batch["text"][local], batch["ids"][local], weight, gather=True
        )
        loss.backward()
        gathered_ids = D.all_gather_no_grad(batch["ids"][local])
        torch.save(
            {
                "rank": D.get_rank(),
                "world": D.get_world_size(),
                "main": D.is_main_process(),
                "loss": loss.detach(),
                "video_grad": video.grad,
                "text_grad": text.grad,
                "weight_grad": weight.grad,
                "ids": gathered_ids,
            },
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(120)
def test_two_process_vtc_equals_one_process_on_the_whole_batch(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    batch = global_batch()
    weight = batch["weight"].clone().requires_grad_()
    loss, video, text = vtc_on(batch["video"], batch["text"], batch["ids"], weight, gather=False)
    loss.backward()

    for r, result in enumerate(ranks):
        assert (result["rank"], result["world"], result["main"]) == (r, WORLD, r == 0)
        assert torch.equal(result["ids"], batch["ids"])
        # every rank sees the global batch: the same loss as one process
        assert torch.allclose(result["loss"], loss.detach(), atol=1e-6)
        # local features receive world_size x the full-batch gradient (DDP then averages)
        local = slice(sum(SPLIT[:r]), sum(SPLIT[: r + 1]))
        assert torch.allclose(result["video_grad"], WORLD * video.grad[local], atol=1e-6)
        assert torch.allclose(result["text_grad"], WORLD * text.grad[local], atol=1e-6)
    # DDP's gradient averaging over ranks gives exactly the one-process parameter gradient
    averaged = sum(result["weight_grad"] for result in ranks) / WORLD
    assert torch.allclose(averaged, weight.grad, atol=1e-6)


def test_single_process_helpers_are_identities():
    x = torch.randn(3, 2, requires_grad=True)
    assert not D.is_distributed()
    assert (D.get_rank(), D.get_world_size(), D.is_main_process()) == (0, 1, True)
    assert D.all_gather_with_grad(x) is x
    assert D.all_gather_no_grad(x) is x
