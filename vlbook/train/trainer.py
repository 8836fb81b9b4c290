"""The training loop, on accelerate: one function for notebooks, the CLI and ``accelerate launch``.

Per optimiser step each process reads ``accumulation_steps`` micro-batches of
``per_device_batch`` samples (see :func:`vlbook.train.config.derive_batch`), calls
``model(batch)`` (through DDP's ``forward``, so gradients are synchronised; not
``model.module.pretrain_step``) and back-propagates ``out["loss"] / accumulation_steps``;
gradient synchronisation is skipped on all but the last micro-batch. Then: optional clipping
of the global gradient norm, AdamW step, scheduler step (not when fp16 skipped the step).

The data position is the optimiser step: an epoch is ``steps_per_epoch`` whole steps (samples
that do not fill a step are dropped), so step ``s`` sits in epoch ``s // steps_per_epoch`` at
sample ``(s % steps_per_epoch) * accumulation * per_device`` of this rank's shard.
Checkpoints hold model, optimiser, scheduler, scaler, every RNG and that position; a resumed
run on CPU with ``num_workers=0`` reaches bit-identical weights (``tests/test_train_resume.py``).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import re
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlbook.paths import runs_root
from vlbook.train import checkpoint as ckpt
from vlbook.train.config import BatchPlan, ConfigError, TrainConfig, derive_batch
from vlbook.train.data import (
    ResumableSampler,
    build_dataset,
    build_model,
    import_object,
    make_loader,
    move_to,
)
from vlbook.train.optim import build_optimizer
from vlbook.train.schedules import build_scheduler

EvalFn = Callable[[nn.Module, Any, int], dict[str, float]]


@dataclass
class TrainResult:
    """What a run did; also written to ``<run_dir>/result.json``.

    ``contrastive_batch_size`` is the number of candidates each contrastive query is scored
    against (``per_device_batch``, times ``num_processes`` when the model declares
    ``gathers_contrastive_features = True``); ``contrastive_negatives`` is that minus one.
    """

    run_dir: str
    steps: int
    total_steps: int
    finished: bool
    samples_seen: int
    epochs: float
    wall_time_s: float
    final_losses: dict[str, float]
    eval_metrics: dict[str, float]
    global_batch_size: int
    per_device_batch: int
    num_processes: int
    accumulation_steps: int
    contrastive_batch_size: int
    contrastive_negatives: int
    resumed_from: str | None = None
    last_checkpoint: str | None = None
    weights_sha256: list[str] = field(default_factory=list)
    # where an earlier run's metrics/checkpoints/result were moved when this one started afresh
    previous_run: str | None = None
    model: nn.Module | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("model")
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainResult:
        return cls(**values)

    @classmethod
    def load(cls, run_dir: str | Path) -> TrainResult:
        path = Path(run_dir) / "result.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the run wrote no result (did it fail?)")
        return cls.from_dict(json.loads(path.read_text()))


class ResumeError(RuntimeError):
    """The output folder holds an earlier run that cannot be resumed (nothing is changed)."""


class WriteError(RuntimeError):
    """A checkpoint, ``metrics.csv`` or ``result.json`` could not be written (disk full?)."""


def _mount_point(path: Path) -> Path:
    path = path.resolve()
    while not os.path.ismount(path) and path != path.parent:
        path = path.parent
    return path


def _write_error(what: str, path: Path, err: BaseException, hint: str = "") -> WriteError:
    """A :class:`WriteError` naming ``path``, its filesystem and the free space there."""
    folder = Path(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        usage = shutil.disk_usage(folder)
        disk = (f"the filesystem at {_mount_point(folder)} (holding {folder}) has "
                f"{usage.free / 1e6:.1f} MB free of {usage.total / 1e6:.1f} MB")
    except OSError as usage_err:
        disk = f"the free space of {folder} is unknown ({usage_err})"
    return WriteError(
        f"writing {what} to {path} failed ({type(err).__name__}: {err}); {disk}. "
        + (hint or "Free some space (or write to another output_dir) and rerun.")
    )


def _scan_checkpoints(ckpt_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that verifies, and the newer ones refused (with the reason)."""
    refused: list[tuple[Path, str]] = []
    for path in reversed(ckpt.list_checkpoints(ckpt_dir)):
        try:
            ckpt.verify_checkpoint(path)
        except ckpt.CheckpointError as err:
            refused.append((path, str(err)))
            continue
        return path, refused
    return None, refused


def _checkpoint_step(path: Path) -> int:
    return int(path.name[len(ckpt.PREFIX):])


def _archive_previous_run(run_dir: Path, ckpt_dir: Path) -> Path | None:
    """Move an earlier run's metrics.csv, result.json and checkpoints into ``previous-<time>/``.

    Nothing is deleted; returns the folder, or ``None`` when there was nothing to move.
    """
    items = [run_dir / "metrics.csv", run_dir / "result.json", ckpt_dir]
    present = [p for p in items
               if (p.is_file() and p.stat().st_size > 0) or (p.is_dir() and any(p.iterdir()))]
    if not present:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target, n = run_dir / f"previous-{stamp}", 1
    while target.exists():
        n += 1
        target = run_dir / f"previous-{stamp}-{n}"
    target.mkdir()
    for item in present:
        os.replace(item, target / item.name)
    return target


def _last_logged_losses(rows: list[dict[str, Any]], step: int) -> dict[str, float]:
    """The training losses of the last metrics row at or before ``step`` (CSV strings)."""
    skip = {"step", "epoch", "samples_seen", "lr", "elapsed_s"}
    for row in reversed(rows):
        if int(row["step"]) <= step and row.get("loss") not in (None, ""):
            return {k: float(v) for k, v in row.items()
                    if k not in skip and not k.startswith("eval/") and v not in (None, "")}
    return {}


def _completed_result(run_dir: Path, checkpoint: Path, total_steps: int) -> TrainResult | None:
    """The run's ``result.json`` when it finished at ``checkpoint`` (>= ``total_steps``)."""
    step = _checkpoint_step(checkpoint)
    if step < total_steps:
        return None
    try:
        result = TrainResult.load(run_dir)
    except (OSError, ValueError, TypeError):
        return None
    if result.finished and result.steps == step:
        return result
    return None


def resolve_run_dir(config: TrainConfig) -> Path:
    """``config.output_dir``, or ``runs_root()/<model>-<data>-seed<seed>``."""
    if config.output_dir:
        return Path(config.output_dir).expanduser().resolve()
    name = f"{config.model.name}-{config.data.name}-seed{config.seed}"
    return runs_root() / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


class MetricsLog:
    """Wide CSV of logged metrics (one row per logged step), rewritten when keys appear."""

    def __init__(self, path: Path, resume_step: int | None) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        if resume_step is not None and path.is_file():
            with path.open() as handle:
                self.rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= resume_step]
        self.columns: list[str] = list(self.rows[0]) if self.rows else []
        self._rewrite()

    def _rewrite(self) -> None:
        try:
            with self.path.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.columns)
                if self.columns:
                    writer.writeheader()
                    writer.writerows(self.rows)
        except OSError as err:
            raise _write_error("the metrics log", self.path, err) from err

    def append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        if new:
            self.columns += new
            self._rewrite()
            return
        try:
            with self.path.open("a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.columns).writerow(row)
        except OSError as err:
            raise _write_error("the metrics log", self.path, err) from err


def weights_checksum(model: nn.Module) -> str:
    """SHA-256 of every parameter and buffer's bytes, in ``state_dict`` order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        data = tensor.detach().cpu().contiguous()
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _make_accelerator(precision: str) -> Any:
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        # In-process runs (notebooks) may change precision between calls: start afresh.
        AcceleratorState._reset_state(reset_partial_state=True)
        GradientState._reset_state()
    accelerator = Accelerator(mixed_precision=precision)
    if precision == "fp16" and accelerator.scaler is None:
        raise ConfigError(
            f"precision='fp16' needs a GPU (accelerate runs fp16 on {accelerator.device.type} "
            "as plain fp32, without a grad scaler); use precision='bf16' or 'no' there"
        )
    return accelerator


def _scalar_dict(out: dict[str, Any]) -> dict[str, torch.Tensor]:
    if not isinstance(out, dict) or "loss" not in out:
        raise TypeError(
            "the model's forward(batch) must return a dict of losses with the total under "
            f"'loss'; got {type(out).__name__}"
            + (f" with keys {sorted(out)}" if isinstance(out, dict) else "")
        )
    return {
        k: v.detach().float()
        for k, v in out.items()
        if isinstance(v, torch.Tensor) and v.numel() == 1
    }


#: About how many ``step ...`` lines a run prints inside a notebook (see ``train``).
NOTEBOOK_LOG_LINES = 5


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (the chapter notebooks run the trainer in process)."""
    if "ipykernel" not in sys.modules:
        return False
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell is not None and "IPKernelApp" in shell.config
    except Exception:  # noqa: BLE001 - any failure means: not a notebook
        return False


def _shown(path: str | Path | None) -> str:
    """A path for a log line: in a notebook (whose output becomes a page) relative to the
    repository or the runs root (:func:`vlbook.notebook.display_path`), else as it is."""
    if path is not None and _in_notebook():
        from vlbook.notebook import display_path

        return display_path(path)
    return str(path)


def train(
    config: TrainConfig,
    *,
    model: nn.Module | None = None,
    dataset: Any | None = None,
    eval_fn: EvalFn | None = None,
) -> TrainResult:
    """Train as ``config`` says and return a :class:`TrainResult` (also ``result.json``).

    ``model``/``dataset``/``eval_fn`` given here replace the ones the config names (handy in
    notebooks; a launched run can only use what the config names). Works unchanged under
    ``accelerate launch`` (each process runs this function).

    Nothing of an earlier run in the same output folder is lost: with ``resume="auto"`` it is
    resumed from its newest valid checkpoint; a finished run is returned as it is (its
    ``result.json``, nothing trained or written); when it has checkpoints but none is valid
    :class:`ResumeError` is raised. Starting again from step 0 (``fresh_start=True``,
    ``resume="never"``, or no checkpoint yet) moves the earlier ``metrics.csv``,
    ``result.json`` and checkpoints into ``<run_dir>/previous-<time>/``. A failed write
    (disk full) raises :class:`WriteError` naming the file and the free space.
    """
    from accelerate.utils import set_seed

    started = time.time()
    accelerator = _make_accelerator(config.precision)
    main = accelerator.is_main_process
    run_dir = resolve_run_dir(config)
    ckpt_dir = run_dir / "checkpoints"

    # ------------------------------------------------------------------ what to resume
    refused: list[tuple[Path, str]] = []
    if config.fresh_start or config.resume == "never":
        resume_path = None
    elif config.resume == "auto":
        resume_path, refused = _scan_checkpoints(ckpt_dir)
        if resume_path is None and refused:
            found = "\n".join(f"  - {p.name}: {why}" for p, why in refused)
            raise ResumeError(
                f"cannot resume the run in {run_dir}: none of its {len(refused)} checkpoint(s) "
                f"in {ckpt_dir} is valid:\n{found}\nNothing was changed. To start again from "
                "step 0 (the earlier metrics.csv, result.json and checkpoints are moved into "
                f"{run_dir}/previous-<time>/), set fresh_start=true (CLI: -o fresh_start=true; "
                "Python: config.with_overrides({'fresh_start': True})), or use another "
                "output_dir."
            )
        for path, why in refused:
            warnings.warn(f"skipping invalid checkpoint {path.name}: {why}", stacklevel=2)
    else:
        resume_path = Path(config.resume)
    accelerator.wait_for_everyone()
    previous_run = None
    if main:
        if resume_path is None:
            previous_run = _archive_previous_run(run_dir, ckpt_dir)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        config.save(run_dir / "config.yaml")
        if previous_run is not None:
            moved = ", ".join(sorted(p.name for p in previous_run.iterdir()))
            print(f"[vlbook.train] starting {_shown(run_dir)} from step 0: the earlier run's "
                  f"{moved} moved to {_shown(previous_run)}", flush=True)
    accelerator.wait_for_everyone()

    set_seed(config.seed)
    model = model if model is not None else build_model(config.model)
    dataset = dataset if dataset is not None else build_dataset(config.data)
    if eval_fn is None and config.eval_fn:
        eval_fn = import_object(config.eval_fn)

    plan = derive_batch(
        config.global_batch_size, accelerator.num_processes, config.max_per_device_batch
    )
    sampler = ResumableSampler(
        len(dataset),
        num_replicas=accelerator.num_processes,
        rank=accelerator.process_index,
        shuffle=True,
        seed=config.seed,
        drop_last=True,
    )
    micro_per_epoch = sampler.shard_size // plan.per_device_batch
    steps_per_epoch = micro_per_epoch // plan.accumulation_steps
    if steps_per_epoch < 1:
        raise ConfigError(
            f"dataset of {len(dataset)} samples is smaller than one global batch of "
            f"{config.global_batch_size}"
        )
    if config.total_steps is not None:
        total_steps = config.total_steps
    else:
        total_steps = max(1, math.ceil(float(config.epochs) * steps_per_epoch))
    if config.resume == "auto" and resume_path is not None:
        done = _completed_result(run_dir, resume_path, total_steps)
        if done is not None:
            if main:
                print(f"[vlbook.train] run complete at step {done.steps}: "
                      f"{_shown(resume_path)}; nothing to do", flush=True)
            state, _ = ckpt.load_checkpoint(resume_path, rank=accelerator.process_index)
            model.load_state_dict(state["model"])
            done.model = model
            accelerator.end_training()
            return done
    warmup_steps = (config.warmup_steps if config.warmup_epochs is None
                    else math.ceil(float(config.warmup_epochs) * steps_per_epoch))

    optimizer = build_optimizer(
        model,
        lr=config.lr,
        weight_decay=config.weight_decay,
        betas=config.betas,
        eps=config.eps,
        layer_decay=config.layer_decay,
        no_weight_decay=config.no_weight_decay,
    )
    scheduler = build_scheduler(
        optimizer,
        warmup_steps=warmup_steps,
        total_steps=total_steps,
        kind=config.schedule,
        power=config.poly_power,
        min_ratio=config.min_lr_ratio,
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    unwrapped = accelerator.unwrap_model(model)
    gathers = bool(getattr(unwrapped, "gathers_contrastive_features", False))
    contrastive_batch = plan.per_device_batch * (plan.num_processes if gathers else 1)

    # ------------------------------------------------------------------ resume
    start_step, resumed_from = 0, None
    rng_to_restore = None
    if resume_path is not None:
        state, rng_to_restore = ckpt.load_checkpoint(resume_path, rank=accelerator.process_index)
        unwrapped.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler") is not None and accelerator.scaler is not None:
            accelerator.scaler.load_state_dict(state["scaler"])
        start_step = int(state["step"])
        resumed_from = str(resume_path)
        saved_plan = state.get("batch_plan", {})
        if saved_plan and saved_plan != asdict(plan):
            warnings.warn(
                f"resuming {resume_path} with batch plan {asdict(plan)} instead of {saved_plan}:"
                " the data order and the result will differ from an uninterrupted run",
                stacklevel=2,
            )
        if rng_to_restore is None:
            warnings.warn(f"{resume_path} has no RNG state for this rank", stacklevel=2)

    # ------------------------------------------------------------------ logging
    metrics_log = MetricsLog(run_dir / "metrics.csv", start_step) if main else None
    writer = None
    if main and config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)
    if main:
        print(
            f"[vlbook.train] run {_shown(run_dir)} | {total_steps} steps "
            f"({steps_per_epoch}/epoch) | "
            f"global batch {plan.global_batch_size} = {plan.per_device_batch} per device x "
            f"{plan.num_processes} processes x {plan.accumulation_steps} accumulation | "
            f"contrastive candidates per query {contrastive_batch}"
            + (f" | resumed from {resume_path.name} (step {start_step})" if resume_path else ""),
            flush=True,
        )
    # in a notebook the step lines end up on the page: print about NOTEBOOK_LOG_LINES of them
    # (every step's losses still go to metrics.csv)
    print_every = max(1, config.log_every)
    if main and _in_notebook():
        print_every *= max(1, math.ceil(total_steps / (NOTEBOOK_LOG_LINES * print_every)))
    progress = None
    if main and config.progress_bar:
        from tqdm.auto import tqdm

        progress = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def write_failed(step: int, tmp: Path, file: Path, err: BaseException) -> WriteError:
        shutil.rmtree(tmp, ignore_errors=True)  # give the space of the partial copy back
        kept = [p.name for p in ckpt.list_checkpoints(ckpt_dir)]
        return _write_error(
            f"checkpoint {ckpt.checkpoint_name(step)}", file, err,
            f"The partial copy was removed; the earlier checkpoints are untouched "
            f"({', '.join(kept) or 'none'}). Free some space (or lower keep_checkpoints, or "
            "use another output_dir) and rerun: the run resumes from the newest one.",
        )

    def save(step: int, epoch: int) -> Path:
        tmp = ckpt.tmp_dir_for(ckpt_dir, step)
        if main:
            try:
                ckpt.begin_checkpoint(ckpt_dir, step)
            except OSError as err:
                raise write_failed(step, tmp, tmp, err) from err
        accelerator.wait_for_everyone()
        try:
            ckpt.write_rng(tmp, accelerator.process_index)
        except (OSError, RuntimeError) as err:
            raise write_failed(step, tmp, tmp / f"rng-rank{accelerator.process_index}.pt",
                               err) from err
        accelerator.wait_for_everyone()
        if main:
            state = {
                "model": unwrapped.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler else None,
                "step": step,
                "epoch": epoch,
                "position_in_epoch": (step % steps_per_epoch)
                * plan.accumulation_steps
                * plan.per_device_batch,
                "batch_plan": asdict(plan),
                "config": config.to_dict(),
            }
            try:
                ckpt.write_state(tmp, state)
            except (OSError, RuntimeError) as err:
                raise write_failed(step, tmp, tmp / ckpt.STATE, err) from err
            try:
                ckpt.finish_checkpoint(ckpt_dir, step, keep=config.keep_checkpoints)
            except (OSError, RuntimeError) as err:
                raise write_failed(step, tmp, tmp / ckpt.MANIFEST, err) from err
        accelerator.wait_for_everyone()
        return ckpt_dir / ckpt.checkpoint_name(step)

    # ------------------------------------------------------------------ loop
    model.train()
    step, steps_this_run = start_step, 0
    iterator, loaded_epoch = None, -1
    window: dict[str, list[float]] = {}
    final_losses: dict[str, float] = {}
    eval_metrics: dict[str, float] = {}
    last_checkpoint = None
    if rng_to_restore is not None:
        ckpt.set_rng_state(rng_to_restore)

    while step < total_steps:
        if config.max_steps_this_run is not None and steps_this_run >= config.max_steps_this_run:
            break
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        if epoch != loaded_epoch:
            start = step_in_epoch * plan.accumulation_steps * plan.per_device_batch
            sampler.set_position(epoch, start=start)
            loader = make_loader(
                dataset,
                sampler,
                plan.per_device_batch,
                num_workers=config.num_workers,
                seed=config.seed,
            )
            iterator, loaded_epoch = iter(loader), epoch

        step_sums: dict[str, torch.Tensor] = {}
        for micro in range(plan.accumulation_steps):
            batch = move_to(next(iterator), accelerator.device)
            last = micro == plan.accumulation_steps - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(model)
            with sync:
                with accelerator.autocast():
                    out = model(batch)
                scalars = _scalar_dict(out)
                accelerator.backward(out["loss"] / plan.accumulation_steps)
            for key, value in scalars.items():
                step_sums[key] = step_sums.get(key, 0.0) + value / plan.accumulation_steps
        grad_norm = None
        if config.clip_grad_norm is not None:
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), config.clip_grad_norm)
        lr_used = scheduler.get_last_lr()[-1]
        optimizer.step()
        if not accelerator.optimizer_step_was_skipped:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        steps_this_run += 1

        for key, value in step_sums.items():
            window.setdefault(key, []).append(float(value))
        if grad_norm is not None:
            window.setdefault("grad_norm", []).append(float(grad_norm))
        if progress is not None:
            progress.update(1)
            progress.set_postfix(loss=f"{float(step_sums['loss']):.4f}", refresh=False)

        is_last = step == total_steps
        stopping = (
            config.max_steps_this_run is not None and steps_this_run >= config.max_steps_this_run
        )
        if step % max(1, config.log_every) == 0 or is_last or stopping:
            keys = sorted(window)
            means = torch.tensor(
                [sum(window[k]) / len(window[k]) for k in keys], device=accelerator.device
            )
            means = accelerator.reduce(means, reduction="mean")
            final_losses = {k: float(v) for k, v in zip(keys, means.tolist())}
            window = {}
            row = {
                "step": step,
                "epoch": round(step / steps_per_epoch, 4),
                "samples_seen": step * plan.global_batch_size,
                "lr": lr_used,
                "elapsed_s": round(time.time() - started, 3),
                **final_losses,
            }
            if main:
                metrics_log.append(row)
                if writer is not None:
                    for key, value in row.items():
                        if key not in ("step", "epoch"):
                            writer.add_scalar(f"train/{key}", value, step)
                if progress is None and (step % print_every == 0 or is_last or stopping):
                    shown = " ".join(f"{k}={v:.4g}" for k, v in final_losses.items())
                    print(f"[vlbook.train] step {step}/{total_steps} {shown}", flush=True)

        if eval_fn is not None and (
            (config.eval_every and step % config.eval_every == 0) or is_last
        ):
            model.eval()
            with torch.no_grad():
                eval_metrics = {k: float(v) for k, v in eval_fn(model, accelerator, step).items()}
            model.train()
            if main:
                metrics_log.append(
                    {"step": step, **{f"eval/{k}": v for k, v in eval_metrics.items()}}
                )
                if writer is not None:
                    for key, value in eval_metrics.items():
                        writer.add_scalar(f"eval/{key}", value, step)

        periodic = config.checkpoint_every and step % config.checkpoint_every == 0
        if periodic or is_last or (stopping and config.checkpoint_on_stop):
            last_checkpoint = save(step, step // steps_per_epoch)

    if progress is not None:
        progress.close()
    if writer is not None:
        writer.close()
    accelerator.wait_for_everyone()
    from accelerate.utils import gather_object

    checksums = gather_object([weights_checksum(unwrapped)])
    if steps_this_run == 0 and resume_path is not None:
        # resumed at the end (e.g. killed after the final checkpoint, before result.json)
        last_checkpoint = last_checkpoint or resume_path
        if main and not final_losses:
            final_losses = _last_logged_losses(metrics_log.rows, step)
    result = TrainResult(
        run_dir=str(run_dir),
        steps=step,
        total_steps=total_steps,
        finished=step >= total_steps,
        samples_seen=step * plan.global_batch_size,
        epochs=step / steps_per_epoch,
        wall_time_s=time.time() - started,
        final_losses=final_losses,
        eval_metrics=eval_metrics,
        global_batch_size=plan.global_batch_size,
        per_device_batch=plan.per_device_batch,
        num_processes=plan.num_processes,
        accumulation_steps=plan.accumulation_steps,
        contrastive_batch_size=contrastive_batch,
        contrastive_negatives=contrastive_batch - 1,
        resumed_from=resumed_from,
        last_checkpoint=str(last_checkpoint) if last_checkpoint else None,
        weights_sha256=list(checksums),
        previous_run=str(previous_run) if previous_run else None,
    )
    if main:
        tmp = run_dir / "result.json.tmp"
        try:
            tmp.write_text(json.dumps(result.to_dict(), indent=1))
            os.replace(tmp, run_dir / "result.json")
        except OSError as err:
            raise _write_error("the run's result", run_dir / "result.json", err) from err
    result.model = unwrapped
    accelerator.end_training()
    return result


__all__ = [
    "BatchPlan",
    "EvalFn",
    "MetricsLog",
    "ResumeError",
    "TrainResult",
    "WriteError",
    "resolve_run_dir",
    "train",
    "weights_checksum",
]
