"""Start ``python -m vlbook.train`` under ``accelerate launch`` and follow it from a notebook.

:func:`launch` writes the config into the run directory, starts

    accelerate launch [--multi_gpu] --num_processes N ... -m vlbook.train <run>/config.yaml

streams its output line by line to ``log`` (``print`` by default), and reads the
``result.json`` the run wrote. On a machine without CUDA it sets ``ACCELERATE_USE_CPU=1`` and
passes ``--multi_gpu`` for N > 1, the only invocation seen to start N synchronised gloo
processes on CPU with accelerate 1.15 (``--cpu`` starts one; ``--multi_gpu`` alone starts N
unsynchronised ones).

:func:`run_training` is what notebooks call: in-process :func:`vlbook.train.train` for one
process at smoke/toy scale, :func:`launch` otherwise.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from vlbook.train.config import TrainConfig
from vlbook.train.trainer import TrainResult, resolve_run_dir, train


class LaunchError(RuntimeError):
    """The launched training run exited with an error."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_command(
    config_path: str | Path,
    *,
    num_processes: int,
    mixed_precision: str = "no",
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    use_cpu: bool | None = None,
    extra_args: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> tuple[list[str], dict[str, str]]:
    """The ``accelerate launch`` argument list and the extra environment for it."""
    use_cpu = (not torch.cuda.is_available()) if use_cpu is None else use_cpu
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    env: dict[str, str] = {}
    if num_processes > 1 or num_machines > 1:
        cmd.append("--multi_gpu")
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    cmd += [
        "--num_processes",
        str(num_processes),
        "--num_machines",
        str(num_machines),
        "--mixed_precision",
        mixed_precision,
        "--dynamo_backend",
        "no",
    ]
    if num_machines > 1:
        cmd += ["--machine_rank", str(machine_rank)]
        if main_process_ip:
            cmd += ["--main_process_ip", main_process_ip]
    cmd += ["--main_process_port", str(main_process_port or _free_port())]
    cmd += list(extra_args)
    cmd += ["-m", "vlbook.train", str(config_path)]
    for item in overrides:
        cmd += ["--override", item]
    return cmd, env


def launch(
    config: TrainConfig,
    num_processes: int = 1,
    *,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    use_cpu: bool | None = None,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log: Callable[[str], Any] | None = print,
    timeout_s: float | None = None,
) -> TrainResult:
    """Run ``config`` under ``accelerate launch`` with ``num_processes`` processes per machine.

    ``num_processes`` is the total over all machines, as ``accelerate launch`` counts it.
    Output lines go to ``log`` as they come; a non-zero exit raises :class:`LaunchError` with
    the last lines. Returns the :class:`TrainResult` read from ``<run_dir>/result.json``.
    """
    run_dir = resolve_run_dir(config)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The launched processes log plain lines (a progress bar does not stream through a pipe).
    launched = config.with_overrides({"output_dir": str(run_dir), "progress_bar": False})
    config_path = launched.save(run_dir / "config.yaml")
    # result.json is not removed beforehand: a run that exits 0 has either written it or, when
    # the run was already complete, left the existing one unchanged on purpose (the trainer
    # logs "run complete at step N ...; nothing to do"); a failed run raises below.
    cmd, launch_env = launch_command(
        config_path,
        num_processes=num_processes,
        mixed_precision=config.precision,
        num_machines=num_machines,
        machine_rank=machine_rank,
        main_process_ip=main_process_ip,
        main_process_port=main_process_port,
        use_cpu=use_cpu,
        extra_args=extra_args,
    )
    full_env = {**os.environ, **launch_env, **(env or {}), "PYTHONUNBUFFERED": "1"}
    full_env.setdefault("HF_HUB_OFFLINE", "1")
    if log is not None:
        log("[vlbook.train.launch] " + " ".join(cmd))
    tail: deque[str] = deque(maxlen=40)
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            if log is not None:
                log(line)
        try:
            returncode = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    if returncode != 0:
        raise LaunchError(
            f"accelerate launch exited with code {returncode}; last lines:\n" + "\n".join(tail)
        )
    return TrainResult.load(run_dir)


def run_training(
    config: TrainConfig, num_processes: int = 1, *, scale: str | None = None, **launch_kwargs: Any
) -> TrainResult:
    """In-process :func:`train` for one process (smoke/toy); :func:`launch` for more or ``full``."""
    if num_processes > 1 or scale == "full" or launch_kwargs.get("num_machines", 1) > 1:
        return launch(config, num_processes, **launch_kwargs)
    return train(config)
