"""Independent toy runs side by side, one per CPU core.

A chapter's ablation trains many small models that do not depend on each other. A toy model
gains 1.2-1.6x from a second thread (``python -m vlbook.bench threads``; its matrices are
small to split), no more than a second run beside it adds (measured on 2 cores: two E-ViLM
runs at once each take ~1.25x their time alone, ~1.6x the throughput), so on a machine with
``C`` cores the fastest way through an ablation is ``C`` runs at once, each on one thread,
while a run alone (a chapter's main run) keeps every core. :func:`map_runs` does that with
forked worker processes:

- the workers are forked from the caller, so they inherit the data already in memory (decoded
  clips, features, tokenizers) and the functions a notebook defined, nothing is pickled on the
  way in; only the results (metrics: numbers, dicts, lists) travel back;
- each worker runs with one torch thread and no progress bars; before each run the global
  generators (Python, NumPy, torch) are seeded with ``seed + index``, in the pool and in the
  sequential fallback alike, so a run's result depends on its item alone, not on which worker
  ran it, what ran before it there, or how many workers there were
  (``tests/test_parallel.py`` checks that parallel and sequential results are equal);
- an exception in a run is raised in the caller with the run's item named;
- without ``fork`` (Windows; macOS, where forking a process that has used Apple's frameworks is
  unsafe), once CUDA is initialised (a forked child cannot use it), or with one worker, the
  runs go one after the other in the caller.

``VLBOOK_WORKERS`` overrides the number of workers (``1`` turns the pool off).

A free worker takes the next run not yet started. When the runs differ in length, ``cost``
(an estimate per item: seconds, steps, anything proportional) starts them longest first, the
classic LPT rule (Graham 1969): a long run left for last would keep one core busy while the
others idle. The order of starting changes nothing else: results come back in the order of
the items, each seeded by its own index.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["default_workers", "fork_available", "map_runs", "start_order"]

# (function, items, seed) of the pool being run: set before the workers are forked, which
# inherit it
_JOB: tuple[Callable[[Any], Any], list[Any], int] | None = None


def default_workers() -> int:
    """``VLBOOK_WORKERS`` if set, else the CPU cores this process may use."""
    value = os.environ.get("VLBOOK_WORKERS", "").strip()
    if value:
        try:
            workers = int(value)
        except ValueError:
            raise ValueError(f"VLBOOK_WORKERS={value!r}: expected a whole number >= 1") from None
        if workers < 1:
            raise ValueError(f"VLBOOK_WORKERS={value!r}: expected a whole number >= 1")
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def fork_available() -> bool:
    """Whether worker processes can be forked safely here: Linux and other POSIX systems, not
    macOS, and not after CUDA was initialised in this process."""
    return ("fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin"
            and not torch.cuda.is_initialized())


def _run_one(index: int) -> Any:
    """Body of a worker: one thread, no progress bars, quiet output, then the run."""
    assert _JOB is not None, "map_runs: worker forked without a job"
    torch.set_num_threads(1)
    os.environ["TQDM_DISABLE"] = "1"
    os.environ["VLBOOK_WORKERS"] = "1"  # a map_runs inside a run goes sequentially
    devnull = open(os.devnull, "w")  # noqa: SIM115 - lives as long as the worker
    sys.stdout = sys.stderr = devnull
    fn, items, seed = _JOB
    return _seeded_call(fn, items[index], seed + index)


def _seeded_call(fn: Callable[[T], R], item: T, seed: int) -> R:
    from vlbook.notebook import seed_everything

    seed_everything(seed)
    return fn(item)


def start_order(costs: Sequence[float]) -> list[int]:
    """Indices of the runs, longest first (ties in item order): the order the pool starts
    them in when :func:`map_runs` is given ``cost``."""
    bad = [i for i, c in enumerate(costs) if not (isinstance(c, int | float) and c >= 0)]
    if bad:
        raise ValueError(f"map_runs: cost of item {bad[0]} is {costs[bad[0]]!r}; expected a "
                         "number >= 0 (an estimate of the run's length)")
    return sorted(range(len(costs)), key=lambda i: (-costs[i], i))


def map_runs(fn: Callable[[T], R], items: Iterable[T], *, workers: int | None = None,
             seed: int = 0, desc: str | None = None, progress: bool = True,
             cost: Callable[[T], float] | None = None) -> list[R]:
    """``[fn(item) for item in items]``, the calls spread over worker processes.

    Run ``i`` starts with the global generators seeded with ``seed + i``; results come back in
    the order of ``items``. ``cost(item)`` estimates a run's length; with it the pool starts
    the longest runs first (:func:`start_order`). ``desc`` labels the progress bar shown in
    the caller (``progress`` turns it off).
    """
    global _JOB
    from tqdm.auto import tqdm

    items = list(items)
    order = start_order([cost(item) for item in items]) if cost else list(range(len(items)))
    workers = min(workers or default_workers(), len(items))
    if workers <= 1 or not fork_available():
        return [_seeded_call(fn, item, seed + i)
                for i, item in enumerate(tqdm(items, desc=desc, leave=False,
                                              disable=not progress))]
    if _JOB is not None:
        raise RuntimeError("map_runs: a run inside a parallel run cannot start another pool")
    _JOB = (fn, items, seed)
    results: dict[int, R] = {}
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(_run_one, i): i for i in order}
            bar = tqdm(total=len(items), desc=desc, leave=False, disable=not progress)
            for future in as_completed(futures):
                index = futures[future]
                try:
                    results[index] = future.result()
                except Exception as err:
                    for other in futures:
                        other.cancel()
                    raise RuntimeError(f"map_runs: the run for item {index} ({items[index]!r}) "
                                       f"failed: {err}") from err
                bar.update()
            bar.close()
    finally:
        _JOB = None
    return [results[i] for i in range(len(items))]
