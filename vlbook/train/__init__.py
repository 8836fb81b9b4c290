"""The trainer: accelerate-based, resumable, same entry point in-process and launched.

- :func:`train` (``TrainConfig -> TrainResult``) runs in the calling process (notebooks at
  smoke/toy scale) and in every process of ``accelerate launch``;
- ``python -m vlbook.train CONFIG.yaml --override key=value`` is its command line;
- :func:`launch` starts ``accelerate launch ... -m vlbook.train`` for multi-process and ``full``
  runs and streams the log back; :func:`run_training` picks one of the two.
"""

from vlbook.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    verify_checkpoint,
)
from vlbook.train.config import (
    BatchPlan,
    ComponentSpec,
    ConfigError,
    TrainConfig,
    config_from_preset,
    derive_batch,
)
from vlbook.train.launch import LaunchError, launch, launch_command, run_training
from vlbook.train.optim import build_optimizer, param_groups
from vlbook.train.schedules import build_scheduler, lr_multiplier
from vlbook.train.trainer import ResumeError, TrainResult, WriteError, resolve_run_dir, train

__all__ = [
    "BatchPlan",
    "CheckpointError",
    "ComponentSpec",
    "ConfigError",
    "LaunchError",
    "ResumeError",
    "TrainConfig",
    "TrainResult",
    "WriteError",
    "build_optimizer",
    "build_scheduler",
    "config_from_preset",
    "derive_batch",
    "latest_checkpoint",
    "launch",
    "launch_command",
    "list_checkpoints",
    "load_checkpoint",
    "lr_multiplier",
    "param_groups",
    "resolve_run_dir",
    "run_training",
    "train",
    "verify_checkpoint",
]
