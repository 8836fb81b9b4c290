"""Training configuration: one dataclass, saved and read as YAML.

A run is fully described by a :class:`TrainConfig`; ``python -m vlbook.train CONFIG.yaml``,
:func:`vlbook.train.train` and :func:`vlbook.train.launch` all read the same object, and every
run directory holds the ``config.yaml`` it ran with.

The user sets the *global* batch size (the papers quote it that way: VLM 256, SimVTP 1024,
All-in-one 4096); the per-device batch and the number of gradient-accumulation steps are derived
from the number of processes and the per-device memory cap ``max_per_device_batch`` by
:func:`derive_batch`, so that ``global = per_device * num_processes * accumulation`` exactly.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PRECISIONS: tuple[str, ...] = ("no", "bf16", "fp16")
SCHEDULES: tuple[str, ...] = ("cosine", "linear", "polynomial", "constant")
RESUME_MODES: tuple[str, ...] = ("auto", "never")


_NUMERIC_FIELDS = {"float": float, "float | None": float, "int": int, "int | None": int}


class ConfigError(ValueError):
    """A training configuration has an unknown key or an unaccepted value."""


@dataclass
class ComponentSpec:
    """A registered component and its keyword arguments.

    ``name`` is a registry name (``create_model(name)`` / ``vlbook.data.build_dataset(name)``)
    or an import path ``"package.module:function"`` that returns the component.
    """

    name: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    """Everything a training run needs (see the module docstring for batch derivation).

    Schedules (``schedule``): linear warm-up over ``warmup_steps`` and then ``cosine``,
    ``linear`` or ``polynomial`` (power ``poly_power``) decay to ``min_lr_ratio * lr`` at
    ``total_steps``; ``constant`` keeps the peak after warm-up.
    """

    model: ComponentSpec = field(default_factory=ComponentSpec)
    data: ComponentSpec = field(default_factory=ComponentSpec)
    # batch
    global_batch_size: int = 8
    max_per_device_batch: int | None = None
    drop_last: bool = True
    num_workers: int = 0
    # optimiser (AdamW)
    lr: float = 1e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    layer_decay: float = 1.0
    no_weight_decay: list[str] = field(default_factory=list)
    # schedule
    schedule: str = "cosine"
    warmup_steps: int = 0
    # warm-up given in epochs (the papers' unit), turned into steps once the dataset size is
    # known; set this or warmup_steps, not both
    warmup_epochs: float | None = None
    poly_power: float = 1.0
    min_lr_ratio: float = 0.0
    # length: total_steps wins over epochs when both are set
    total_steps: int | None = None
    epochs: float | None = None
    max_steps_this_run: int | None = None
    # numerics
    precision: str = "no"
    clip_grad_norm: float | None = None
    seed: int = 0
    # output
    output_dir: str = ""
    checkpoint_every: int = 0
    checkpoint_on_stop: bool = True
    keep_checkpoints: int = 2
    resume: str = "auto"
    # start again from step 0 although the output folder holds an earlier run: its
    # checkpoints, metrics.csv and result.json are moved into <output_dir>/previous-<time>/
    fresh_start: bool = False
    log_every: int = 10
    progress_bar: bool = True
    tensorboard: bool = True
    # evaluation hook: "module:function" called as fn(model, accelerator, step) -> dict
    eval_every: int = 0
    eval_fn: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = ComponentSpec(**self.model)
        if isinstance(self.data, dict):
            self.data = ComponentSpec(**self.data)
        if isinstance(self.model, str):
            self.model = ComponentSpec(self.model)
        if isinstance(self.data, str):
            self.data = ComponentSpec(self.data)
        self._coerce_numbers()
        self.validate()

    def _coerce_numbers(self) -> None:
        # YAML 1.1 (PyYAML) reads "1e-4" as a string: convert numeric fields, or name them.
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = _NUMERIC_FIELDS.get(str(f.type))
            if kind is None or value is None or isinstance(value, bool):
                continue
            try:
                if kind is float and isinstance(value, (str, int)):
                    setattr(self, f.name, float(value))
                elif kind is int and isinstance(value, str):
                    setattr(self, f.name, int(value))
            except ValueError as err:
                raise ConfigError(f"{f.name}={value!r}: expected a number") from err
        try:
            self.betas = tuple(float(b) for b in self.betas)  # type: ignore[assignment]
        except (TypeError, ValueError) as err:
            raise ConfigError(f"betas={self.betas!r}: expected two numbers") from err

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the field when a value is not accepted."""
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}; accepted: {PRECISIONS}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"schedule={self.schedule!r}; accepted: {SCHEDULES}")
        if self.resume not in RESUME_MODES and not Path(self.resume).exists():
            raise ConfigError(
                f"resume={self.resume!r}: expected one of {RESUME_MODES} or an existing "
                "checkpoint directory"
            )
        if self.fresh_start and self.resume not in RESUME_MODES:
            raise ConfigError(
                f"fresh_start=true and resume={self.resume!r}: set one of the two"
            )
        if self.global_batch_size < 1:
            raise ConfigError(f"global_batch_size={self.global_batch_size}; expected >= 1")
        if self.max_per_device_batch is not None and self.max_per_device_batch < 1:
            raise ConfigError(f"max_per_device_batch={self.max_per_device_batch}; expected >= 1")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"betas={self.betas}; expected two numbers in [0, 1)")
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"layer_decay={self.layer_decay}; expected a number in (0, 1]")
        if self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps={self.warmup_steps}; expected >= 0")
        if self.warmup_epochs is not None:
            if self.warmup_epochs < 0:
                raise ConfigError(f"warmup_epochs={self.warmup_epochs}; expected >= 0")
            if self.warmup_steps:
                raise ConfigError(f"warmup_steps={self.warmup_steps} and warmup_epochs="
                                  f"{self.warmup_epochs}: set one of the two")
        if self.total_steps is None and self.epochs is None:
            raise ConfigError("set total_steps or epochs (the run length)")
        if self.total_steps is not None and self.total_steps < 1:
            raise ConfigError(f"total_steps={self.total_steps}; expected >= 1")
        if self.clip_grad_norm is not None and self.clip_grad_norm <= 0:
            raise ConfigError(f"clip_grad_norm={self.clip_grad_norm}; expected > 0 or null")

    # ---------------------------------------------------------------- YAML round trip
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown training config key(s) {unknown}; known keys: {sorted(known)}"
            )
        return cls(**values)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def load(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        try:
            values = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of config keys, got {type(values)}")
        try:
            return cls.from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err

    def with_overrides(self, overrides: list[str] | dict[str, Any]) -> TrainConfig:
        """A copy with ``key=value`` overrides (dotted keys reach into ``model``/``data``).

        Values are parsed as YAML, so ``lr=3e-4``, ``betas=[0.9,0.98]`` and
        ``model.kwargs.dim=64`` do what they say.
        """
        values = self.to_dict()
        items = overrides.items() if isinstance(overrides, dict) else map(_split, overrides)
        for key, value in items:
            node = values
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise ConfigError(f"override {key!r}: {part!r} is not a section")
                node = node[part]
            top_level = len(parts) == 1
            if top_level and parts[0] not in values:
                raise ConfigError(f"override {key!r}: unknown key; known: {sorted(values)}")
            node[parts[-1]] = value
        return TrainConfig.from_dict(values)


def _split(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    return key.strip(), yaml.safe_load(raw)


@dataclass(frozen=True)
class BatchPlan:
    """How a global batch is split: ``global = per_device * num_processes * accumulation``."""

    global_batch_size: int
    per_device_batch: int
    num_processes: int
    accumulation_steps: int


def derive_batch(
    global_batch_size: int, num_processes: int, max_per_device_batch: int | None = None
) -> BatchPlan:
    """Split ``global_batch_size`` over processes and accumulation steps.

    Uses the fewest accumulation steps whose per-device batch fits ``max_per_device_batch``
    and divides the per-process share exactly (so the global batch is never silently changed).
    """
    if num_processes < 1:
        raise ConfigError(f"num_processes={num_processes}; expected >= 1")
    if global_batch_size % num_processes:
        raise ConfigError(
            f"global_batch_size={global_batch_size} is not divisible by "
            f"num_processes={num_processes}"
        )
    per_process = global_batch_size // num_processes
    cap = per_process if max_per_device_batch is None else max_per_device_batch
    accumulation = max(1, math.ceil(per_process / cap))
    while per_process % accumulation:
        accumulation += 1
    return BatchPlan(global_batch_size, per_process // accumulation, num_processes, accumulation)


#: ``train`` keys of the chapter presets -> :class:`TrainConfig` fields.
PRESET_KEYS: dict[str, str] = {
    "batch_size": "global_batch_size", "max_per_device_batch": "max_per_device_batch",
    "lr": "lr", "weight_decay": "weight_decay", "betas": "betas", "schedule": "schedule",
    "warmup_steps": "warmup_steps", "warmup_epochs": "warmup_epochs", "steps": "total_steps",
    "epochs": "epochs", "precision": "precision", "clip_grad_norm": "clip_grad_norm",
    "layer_decay": "layer_decay", "min_lr_ratio": "min_lr_ratio", "poly_power": "poly_power",
    "no_weight_decay": "no_weight_decay",
}


def config_from_preset(model: Mapping[str, Any] | ComponentSpec,
                       data: Mapping[str, Any] | ComponentSpec, train: Mapping[str, Any], *,
                       seed: int = 0, output_dir: str = "", ignore: tuple[str, ...] = (),
                       **fields: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a chapter preset's ``train`` block (``batch_size``,
    ``steps`` or ``epochs``, ``warmup_steps`` or ``warmup_epochs``, ``lr`` ...; see
    :data:`PRESET_KEYS`). A key that is neither mapped nor listed in ``ignore`` (keys the
    chapter uses elsewhere, e.g. masking ratios) is an error naming it, so that a typo in a
    preset cannot silently drop a hyper-parameter. ``fields`` set further fields directly."""
    values: dict[str, Any] = {}
    for key, value in train.items():
        if key in ignore:
            continue
        if key not in PRESET_KEYS:
            close = difflib.get_close_matches(key, list(PRESET_KEYS), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"train.{key}: not a training hyper-parameter vlbook knows "
                              f"(known: {sorted(PRESET_KEYS)}){hint}")
        if value is not None:
            values[PRESET_KEYS[key]] = tuple(value) if key == "betas" else value
    return TrainConfig(model=dict(model) if isinstance(model, Mapping) else model,
                       data=dict(data) if isinstance(data, Mapping) else data,
                       seed=seed, output_dir=str(output_dir), **values, **fields)
