"""GPU assignment for pool slots (local and every ssh host): each slot gets its own
CUDA_VISIBLE_DEVICES, groups of --gpus-per-task ids of --gpus or of the detected GPUs."""
from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from onager.errors import UsageError


def parse_gpus(text: str | None) -> list[str] | None:
    """`0,1,3` -> those GPU ids; `2` -> GPUs 0 and 1; None -> not given."""
    if text is None or str(text).strip() == "":
        return None
    text = str(text).strip()
    if "," in text:
        ids = [g.strip() for g in text.split(",") if g.strip()]
    elif text.isdigit():
        ids = [str(i) for i in range(int(text))]
    else:
        raise UsageError(f"bad --gpus {text!r}: give GPU ids like 0,1,2,3 or a count like 4")
    return ids


def detect_gpus() -> list[str]:
    import subprocess
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def gpu_slots(options: dict[str, Any]) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES value of each slot, or None when GPUs are not assigned."""
    gpus = parse_gpus(options.get("gpus"))
    per_task = options.get("gpus_per_task")
    if per_task is None and gpus is None:
        return None
    per_task = int(per_task or 1)
    if per_task < 1:
        raise UsageError("--gpus-per-task must be at least 1")
    if gpus is None:
        gpus = detect_gpus()
        if not gpus:
            raise UsageError("--gpus-per-task given but no GPU found (CUDA_VISIBLE_DEVICES unset, no nvidia-smi): "
                             "pass --gpus 0,1")
    if len(gpus) < per_task:
        raise UsageError(f"--gpus-per-task {per_task} needs at least {per_task} GPUs, only {len(gpus)} given: "
                         f"{','.join(gpus)}")
    return gpu_groups(gpus, per_task)


def gpu_groups(ids: Sequence[str], per_task: int) -> list[str]:
    """The CUDA_VISIBLE_DEVICES of each slot: consecutive groups of `per_task` GPU ids (local
    and every ssh host alike; a remainder too small for a task stays unused)."""
    return [",".join(ids[i:i + per_task]) for i in range(0, len(ids) - per_task + 1, per_task)]
