"""The contract every backend meets; everything schedulers share lives outside it.

A backend turns a launch directory (tasks, wrapper.sh, state/) into scheduler work
and asks the scheduler about it. It knows nothing of sweeps, tags or jobfiles.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from onager.errors import OnagerError, UsageError
from onager.tasklist import Tasklist


@dataclass
class LaunchInfo:
    """What a backend needs to submit one launch."""

    jobname: str
    launch_id: str
    launch_dir: str       # absolute
    wrapper: str          # absolute path of wrapper.sh
    tasklist: Tasklist    # the task ids of this launch
    count: int
    workdir: str          # where tasks run
    options: Dict[str, Any] = field(default_factory=dict)
    header: str = ""
    footer: str = ""

    @property
    def logs_dir(self) -> str:
        return self.launch_dir + "/logs"


#: launch options that only some backends honour: option -> (those backends, what the others
#: lack). A backend refuses the others' options with one line before anything is written,
#: rather than ignoring them (`--mem 4G` on local would otherwise promise a limit nobody sets).
OPTION_BACKENDS: Dict[str, Tuple[Tuple[str, ...], str]] = {
    "cpus": (("slurm", "gridengine"), "CPU limits"),
    "cpus_per_task": (("slurm", "gridengine"), "CPU limits"),
    "mem": (("slurm", "gridengine"), "memory limits"),
    "mem_per_task": (("slurm", "gridengine"), "memory limits"),
    "debug": (("slurm", "gridengine"), "debug partition or test queue"),
    "duration": (("slurm", "gridengine"), "time limits"),
    "tasks_per_node": (("slurm", "gridengine"), "allocations to share between tasks"),
    "max_tasks_per_node": (("slurm", "gridengine"), "allocations to share between tasks"),
    "account": (("slurm", "gridengine"), "accounts"),
    "dependency": (("slurm", "gridengine"), "job dependencies"),
    "hold_jid": (("slurm", "gridengine"), "job dependencies"),
    "extra": (("slurm", "gridengine"), "scheduler command to pass the words after -- to"),
    "partition": (("slurm",), "partitions"),
    "qos": (("slurm",), "qualities of service"),
    "constraint": (("slurm",), "node features"),
    "max_array_size": (("slurm",), "MaxArraySize"),
    "pe": (("gridengine",), "parallel environments"),
    "mem_resource": (("gridengine",), "memory resources"),
    "gpu_resource": (("gridengine",), "GPU resources"),
    "queue": (("gridengine",), "queues"),
    "detach": (("local", "ssh"), "pool of its own to detach"),
    "hosts": (("ssh",), "host list"),
    "ssh_config": (("ssh",), "ssh config"),
    "retries": (("ssh",), "lost hosts to retry on"),
    "remote_dir": (("ssh",), "remote directories"),
    "ssh_no_host_key_check": (("ssh",), "host keys"),
    "fetch": (("ssh",), "remote hosts to fetch outputs from"),
}


def refuse_foreign_options(backend: str, options: Dict[str, Any]) -> None:
    """One line for the first option `backend` cannot honour, e.g. "local has no partitions;
    drop --partition or use --backend slurm"."""
    for key, (owners, lacks) in OPTION_BACKENDS.items():
        value = options.get(key)
        if backend in owners or not _given(value):
            continue
        where = " or ".join(owners)
        if key == "extra":
            words = " ".join(str(v) for v in value)
            raise UsageError(f"{backend} has no {lacks} ({words}); drop them or use --backend {where}")
        flag = "--" + key.replace("_", "-")
        raise UsageError(f"{backend} has no {lacks}; drop {flag} or use --backend {where}")


def _given(value: Any) -> bool:
    """An option set to something (0 counts: `--cpus 0` on local is refused, not ignored)."""
    if value is None or value is False:
        return False
    return not (isinstance(value, (str, list, tuple)) and len(value) == 0)


# scheduler states a query may report for a task; absent = not known to the scheduler
QUEUED, STARTED, STUCK = "pending", "running", "error"


class Backend:
    name = ""
    #: local-style backends run the tasks from this process unless detached
    runs_in_foreground = False
    #: config keys this backend reads besides its launch options (e.g. gridengine's `pe`)
    config_keys: Sequence[str] = ()

    def __init__(self, options: Optional[Dict[str, Any]] = None):
        self.options: Dict[str, Any] = dict(options or {})

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Register this backend's own launch options (shared ones live in the CLI)."""

    def check_options(self) -> None:
        """Refuse bad backend options with one line, before a launch writes anything or
        takes a launch id; checks only this machine (no scheduler is asked)."""
        refuse_foreign_options(self.name, self.options)

    def preflight(self, launch: "LaunchInfo") -> None:
        """Checks that need the outside world (e.g. hosts answering), before a launch is recorded."""

    # ------------------------------------------------------------ submit
    def submit_commands(self, launch: LaunchInfo) -> List[List[str]]:
        """The scheduler commands a launch runs, for --dry-run and golden tests."""
        return []

    def submit(self, launch: LaunchInfo) -> List[str]:
        """Submit the launch; return scheduler job ids (none for local pools)."""
        raise NotImplementedError

    # ------------------------------------------------------------- query
    def query(self, records: Sequence[Any]) -> Dict[str, Optional[Dict[int, str]]]:
        """Scheduler states for many launches in as few scheduler calls as possible.

        Returns record.key -> {task id: pending|running|error} for tasks the scheduler
        still knows, or None when it could not be asked.
        """
        return {r.key: None for r in records}

    # ------------------------------------------------------------ cancel
    def cancel(self, record: Any, tasks: Tasklist, dry_run: bool = False) -> List[List[str]]:
        """Cancel tasks of one launch; return the commands run (or that would run)."""
        raise NotImplementedError

    def cancel_job_commands(self, job_id: str, tasks: Optional[Tasklist]) -> List[List[str]]:
        """0.1.3's `cancel --backend B --jobid J --tasklist L`, for jobs not in our index."""
        raise OnagerError(f"the {self.name} backend cannot cancel by scheduler job id")


def cluster_setting(argv: Sequence[str], pattern: str, default: int, retries: int = 1,
                    transient: Sequence[str] = ()) -> int:
    """An integer the scheduler's configuration states (e.g. Slurm's MaxArraySize), or
    `default` when the command fails or does not say."""
    import re
    try:
        out = run(argv, retries=retries, transient=transient, timeout=60).stdout
    except OnagerError:
        return default
    match = re.search(pattern, out, re.MULTILINE)
    return int(match.group(1)) if match else default


def run(argv: Sequence[str], retries: int = 0, transient: Sequence[str] = (),
        timeout: Optional[float] = 120, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """Run a scheduler command; retry on transient errors; raise with its own message."""
    delay = 1.0
    for attempt in range(retries + 1):
        try:
            proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout, env=env)
        except FileNotFoundError:
            raise OnagerError(f"{argv[0]} not found: is this a machine where {argv[0]} is installed?")
        except subprocess.TimeoutExpired:
            raise OnagerError(f"{argv[0]} did not answer within {timeout:.0f} s")
        if proc.returncode == 0:
            return proc
        message = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}")
        if attempt < retries and any(t in message for t in transient):
            time.sleep(delay)
            delay *= 2
            continue
        # one line, but every line of the reason: qsub says why, then "Exiting."
        reason = "; ".join(line.strip() for line in message.splitlines()[-5:] if line.strip())
        raise OnagerError(f"{shlex.join(argv[:1])} failed: {reason} (command: {shlex.join(argv)})")
    raise AssertionError("unreachable")
