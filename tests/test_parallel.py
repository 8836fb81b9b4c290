"""Parallel toy runs: the same results as one after the other, errors named, a switch to turn
the pool off."""

from __future__ import annotations

import os

import pytest
import torch

from vlbook.parallel import default_workers, fork_available, map_runs

needs_fork = pytest.mark.skipif(not fork_available(), reason="no safe fork on this platform")


def tiny_run(seed: int) -> dict:
    """A seeded regression fit: its result depends on the seed alone."""
    torch.manual_seed(seed)
    x = torch.randn(64, 8)
    y = x @ torch.randn(8, 1) + 0.1 * torch.randn(64, 1)
    model = torch.nn.Linear(8, 1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {"seed": seed, "loss": float(loss.detach()), "weight": model.weight.detach().clone(),
            "pid": os.getpid(), "threads": torch.get_num_threads()}


@needs_fork
def test_parallel_runs_equal_sequential_runs_in_order() -> None:
    seeds = [3, 1, 4, 1, 5]
    parallel = map_runs(tiny_run, seeds, workers=2)
    sequential = map_runs(tiny_run, seeds, workers=1)
    assert [r["seed"] for r in parallel] == seeds  # the order of the items
    for a, b in zip(parallel, sequential):
        assert a["loss"] == b["loss"]
        assert torch.equal(a["weight"], b["weight"])
    # the parallel runs happened in other processes, one thread each; the sequential here
    assert all(r["pid"] != os.getpid() and r["threads"] == 1 for r in parallel)
    assert all(r["pid"] == os.getpid() for r in sequential)
    # and the fit learned something (a seed-dependent result, not a constant)
    assert parallel[0]["loss"] < 0.5 and parallel[0]["loss"] != parallel[1]["loss"]


def fails_on_two(item: int) -> int:
    if item == 2:
        raise ValueError("bad item")
    return item * 10


@needs_fork
def test_a_failing_run_is_named_in_the_error() -> None:
    with pytest.raises(RuntimeError, match=r"item 2 \(2\) failed: bad item"):
        map_runs(fails_on_two, [0, 1, 2, 3], workers=2)
    assert map_runs(fails_on_two, [0, 1, 3], workers=2) == [0, 10, 30]


def test_vlbook_workers_turns_the_pool_off_and_is_checked(monkeypatch) -> None:
    monkeypatch.setenv("VLBOOK_WORKERS", "1")
    assert default_workers() == 1
    assert [r["pid"] for r in map_runs(tiny_run, [0, 1])] == [os.getpid()] * 2
    monkeypatch.setenv("VLBOOK_WORKERS", "two")
    with pytest.raises(ValueError, match="VLBOOK_WORKERS='two'"):
        default_workers()
    monkeypatch.setenv("VLBOOK_WORKERS", "0")
    with pytest.raises(ValueError, match="whole number >= 1"):
        default_workers()


def unseeded_draw(_: int) -> float:
    """Uses the global generator without seeding it: map_runs seeds it per run."""
    return float(torch.rand(()))


@needs_fork
def test_each_run_is_seeded_by_its_index_whatever_the_schedule() -> None:
    parallel = map_runs(unseeded_draw, range(6), workers=3, seed=7)
    assert parallel == map_runs(unseeded_draw, range(6), workers=1, seed=7)
    torch.manual_seed(7 + 4)
    assert parallel[4] == float(torch.rand(()))
    assert len(set(parallel)) == 6


def test_start_order_is_longest_first_with_ties_in_item_order() -> None:
    from vlbook.parallel import start_order

    assert start_order([1.0, 5.0, 1.0, 3, 5.0]) == [1, 4, 3, 0, 2]
    assert start_order([]) == []
    with pytest.raises(ValueError, match="cost of item 1 is -2"):
        start_order([1.0, -2.0])


def started_at(item: tuple[int, float]) -> tuple[int, float, int]:
    """Sleeps ``item[1]`` seconds; returns the item's index, when it started and the seed the
    run was given (the first draw of Python's generator identifies it)."""
    import random
    import time

    start = time.monotonic()
    first_draw = random.randrange(10**9)
    time.sleep(item[1])
    return item[0], start, first_draw


@needs_fork
def test_cost_starts_the_longest_runs_first_and_changes_no_result() -> None:
    items = [(0, 0.05), (1, 0.05), (2, 0.05), (3, 0.4)]
    plain = map_runs(started_at, items, workers=2, seed=7)
    ordered = map_runs(started_at, items, workers=2, seed=7, cost=lambda item: item[1])
    # results in item order, each run seeded by its index whatever the start order
    assert [r[0] for r in ordered] == [0, 1, 2, 3]
    assert [r[2] for r in ordered] == [r[2] for r in plain]
    # the long run started before the short runs queued behind the first two workers
    starts = {index: start for index, start, _ in ordered}
    assert starts[3] < starts[1] and starts[3] < starts[2]
    plain_starts = {index: start for index, start, _ in plain}
    # without cost it waited until a first run had finished
    assert plain_starts[3] > max(plain_starts[0], plain_starts[1])
