"""The contract every backend meets; everything schedulers share lives outside it.

A backend turns a launch directory (tasks, wrapper.sh, state/) into scheduler work
and asks the scheduler about it. It knows nothing of sweeps, tags or jobfiles.
"""
from __future__ import annotations

import argparse
import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from onager.errors import OnagerError, UsageError
from onager.layout import LOGS, LaunchPaths
from onager.tasklist import Tasklist

TYPE_CHECKING = False
if TYPE_CHECKING:  # subprocess loads when a command runs, not with every backend's options
    import subprocess


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
    options: dict[str, Any] = field(default_factory=dict)
    header: str = ""
    footer: str = ""

    @property
    def logs_dir(self) -> str:
        return self.launch_dir + "/" + LOGS

    @property
    def paths(self) -> LaunchPaths:
        """Every other path of the launch directory (onager.layout)."""
        return LaunchPaths(self.launch_dir)


#: launch options that only some backends honour: option -> (those backends, what the others
#: lack). A backend refuses the others' options with one line before anything is written,
#: rather than ignoring them (`--mem 4G` on local would otherwise promise a limit nobody sets).
OPTION_BACKENDS: dict[str, tuple[tuple[str, ...], str]] = {
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
    "warning_signal": (("slurm", "gridengine"), "time-limit warning signal"),
    "pe": (("gridengine",), "parallel environments"),
    "mem_resource": (("gridengine",), "memory resources"),
    "gpu_resource": (("gridengine",), "GPU resources"),
    "queue": (("gridengine",), "queues"),
    "detach": (("local", "ssh"), "pool of its own to detach"),
    "hosts": (("ssh",), "host list"),
    "ssh_config": (("ssh",), "ssh config"),
    "remote_dir": (("ssh",), "remote directories"),
    "ssh_no_host_key_check": (("ssh",), "host keys"),
    "fetch": (("ssh",), "remote hosts to fetch outputs from"),
    "workers": (("slurm", "gridengine"), "workers to pack tasks into (dynamic packing)"),
    "join": (("local",), "local workers to join a launch with"),
}


def refuse_foreign_options(backend: str, options: dict[str, Any], own: Sequence[str] = ()) -> None:
    """One line for the first option `backend` cannot honour, e.g. "local has no partitions;
    drop --partition or use --backend slurm". `own`: options it declares (a plugin that wraps
    local honours --detach)."""
    for key, (owners, lacks) in OPTION_BACKENDS.items():
        value = options.get(key)
        if backend in owners or key in own or not _given(value):
            continue
        where = " or ".join(owners)
        if key == "extra":
            words = " ".join(str(v) for v in value or ())
            raise UsageError(f"{backend} has no {lacks} ({words}); drop them or use --backend {where}")
        flag = "--" + key.replace("_", "-")
        raise UsageError(f"{backend} has no {lacks}; drop {flag} or use --backend {where}")


def _given(value: Any) -> bool:
    """An option set to something (0 counts: `--cpus 0` on local is refused, not ignored)."""
    if value is None or value is False:
        return False
    return not (isinstance(value, (str, list, tuple)) and len(value) == 0)


# scheduler states a query may report for a task; absent = not known to the scheduler.
# Each may carry a reason, `word (Reason)` (onager.state.parse_answer splits them):
# `pending (Priority)`, `blocked (PartitionConfig)` (pending for a reason that cannot clear
# by itself: `wait` stops), `running`, `error (Eqw)`, or how a task the scheduler still
# remembers ended (`timeout (TimeLimit)`, `cancelled (by 1000)`, `oom`, ...: onager.state's
# END_STATES), for tasks whose own files show no end or only `killed`.
QUEUED, STARTED, STUCK, BLOCKED = "pending", "running", "error", "blocked"


class Backend:
    name = ""
    #: local-style backends run the tasks from this process unless detached
    runs_in_foreground = False
    #: config keys this backend reads besides its typed OPTIONS (those are config keys already)
    config_keys: Sequence[str] = ()
    #: environment variables holding a task's array index and the job id on a compute node,
    #: written into wrapper.sh; empty for pools, which pass the task id as the argument
    index_variable = ""
    job_id_variable = ""

    def __init__(self, options: dict[str, Any] | None = None):
        self.options: dict[str, Any] = dict(options or {})

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Register this backend's own launch options (shared ones live in the CLI): its typed
        OPTIONS; a backend that declares none may override this to add argparse options."""
        add_options(parser, getattr(cls, "OPTIONS", ()))

    def check_options(self) -> None:
        """Refuse bad backend options with one line, before a launch writes anything or
        takes a launch id; checks only this machine (no scheduler is asked)."""
        refuse_foreign_options(self.name, self.options, [o.name for o in getattr(self, "OPTIONS", ())])

    def preflight(self, launch: LaunchInfo) -> None:
        """Checks that need the outside world (e.g. hosts answering), before a launch is recorded."""

    # ------------------------------------------------------------ submit
    def submit_commands(self, launch: LaunchInfo) -> list[list[str]]:
        """The scheduler commands a launch runs, for --dry-run and golden tests."""
        return []

    def submit(self, launch: LaunchInfo) -> list[str]:
        """Submit the launch; return scheduler job ids (none for local pools)."""
        raise NotImplementedError

    # ------------------------------------------------------------- query
    def query(self, records: Sequence[Any]) -> dict[str, dict[int, str] | None]:
        """Scheduler states for many launches in as few scheduler calls as possible.

        Returns record.key -> {task id: answer} for tasks the scheduler still knows, or None
        when it could not be asked. An answer is `pending`, `running`, `blocked`, `error` or
        an end state, each with an optional ` (reason)` (see QUEUED above); an adapter that
        gets an end state from accounting caches it with `state.record_accounting`, so that
        a task's accounting is asked once.
        """
        return {r.key: None for r in records}

    # ------------------------------------------------------------ cancel
    def cancel(self, record: Any, tasks: Tasklist, dry_run: bool = False) -> list[list[str]]:
        """Cancel tasks of one launch; return the commands run (or that would run)."""
        raise NotImplementedError

    def cancel_job_commands(self, job_id: str, tasks: Tasklist | None) -> list[list[str]]:
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
        timeout: float | None = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run a scheduler command; retry on transient errors; raise with its own message."""
    import subprocess
    delay = 1.0
    for attempt in range(retries + 1):
        try:
            proc = subprocess.run(list(argv), stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, timeout=timeout, env=env)
        except FileNotFoundError:
            raise OnagerError(f"{argv[0]} not found: is this a machine where {argv[0]} is installed?") from None
        except subprocess.TimeoutExpired:
            raise OnagerError(f"{argv[0]} did not answer within {timeout:.0f} s") from None
        if proc.returncode == 0:
            return proc
        message = (proc.stderr.strip() or proc.stdout.strip() or f"exit code {proc.returncode}")
        if attempt < retries and any(t in message for t in transient):
            time.sleep(delay)
            delay *= 2
            continue
        # one line, but every line of the reason, in order: sbatch says what is wrong before
        # 'Try "sbatch --help"', qsub says why before "Exiting."; stderr and stdout both
        reason = "; ".join(line.strip() for line in _all_lines(proc, message) if line.strip())
        raise OnagerError(f"{shlex.join(argv[:1])} failed: {reason} (command: {shlex.join(argv)})")
    raise AssertionError("unreachable")


def _all_lines(proc: subprocess.CompletedProcess[str], message: str) -> list[str]:
    """Every line a failed scheduler command printed: stderr, then stdout when it said more."""
    lines = message.splitlines()
    err, out = proc.stderr.strip(), proc.stdout.strip()
    if err and out and out not in err:
        lines += out.splitlines()
    return lines


# ------------------------------------------------------------------ typed options
#: value types an Option may have; each converts a config string or a command-line value
OPTION_TYPES = ("str", "int", "flag", "bool", "size", "duration", "list")
_TRUE_WORDS = ("1", "true", "yes", "on")
_FALSE_WORDS = ("0", "false", "no", "off")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", re.IGNORECASE | re.ASCII)
_DURATION = re.compile(r"(\d+-)?\d+(:\d+){0,2}", re.ASCII)
_TYPE_HINTS = {
    "int": "give a whole number",
    "flag": "give true or false",
    "bool": "give true or false",
    "size": "give a size like 4G, 500M or a number of GB like 2",
    "duration": "give minutes (30), H:MM:SS (48:00:00) or D-HH:MM:SS (2-00:00:00)",
    "list": "give words separated by spaces",
}


@dataclass(frozen=True)
class Option:
    """One launch option, declared once: the argument parser, `onager config --write`
    checks, the docs test and launch-time conversion of config defaults all read it, so a
    backend (built in or from another package) states each option in one place."""

    name: str                      # dest, and the config key under the backend's section
    type: str = "str"              # one of OPTION_TYPES
    help: str = ""
    default: Any = None            # what applies when unset (documentation; the parser keeps None
    #                                so that config defaults can fill in)
    units: str = ""                # e.g. "MB", "GPUs", shown as the metavar when none is given
    flags: tuple[str, ...] = ()    # command-line spellings; default --name-with-dashes
    metavar: str | None = None
    config: bool = True            # False: command line only (no config key)

    def __post_init__(self) -> None:
        if self.type not in OPTION_TYPES:
            raise ValueError(f"option {self.name}: type {self.type!r} is not one of {OPTION_TYPES}")

    @property
    def option_strings(self) -> tuple[str, ...]:
        return self.flags or ("--" + self.name.replace("_", "-"),)

    @property
    def flag(self) -> str:
        return self.option_strings[0]

    @property
    def config_key(self) -> str | None:
        return self.name if self.config else None

    def add_to(self, parser: Any) -> None:
        """Register the option on an argparse parser or argument group (default None)."""
        kwargs: dict[str, Any] = {"dest": self.name, "default": None, "help": self.help}
        if self.type == "flag":
            kwargs["action"] = "store_true"
        elif self.type == "bool":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if self.type == "list":  # repeatable: each use adds one word
                kwargs["action"] = "append"
            if self.type == "int":
                kwargs["type"] = int
            if self.metavar or self.units:
                kwargs["metavar"] = self.metavar or self.units
        parser.add_argument(*self.option_strings, **kwargs)

    def convert(self, value: Any, where: str = "") -> Any:
        """`value` (a config string, or what the parser gave) as this option's type; a bad one is
        one line naming `where` it came from (default: the flag) and what to give instead."""
        if value is None or (not isinstance(value, str) and self.type not in ("int",)):
            return value
        if self.type == "list":  # a config value: the words of one line
            return value.split()
        text = str(value).strip()
        ok = True
        converted: Any = value
        if self.type == "int":
            try:
                converted = int(text)
            except ValueError:
                ok = False
        elif self.type in ("flag", "bool"):
            ok = text.lower() in _TRUE_WORDS + _FALSE_WORDS
            converted = text.lower() in _TRUE_WORDS
        elif self.type == "size":
            ok = _SIZE.fullmatch(text) is not None
        elif self.type == "duration":
            ok = text.lower() in ("unlimited", "infinite") or _DURATION.fullmatch(text) is not None
        if not ok:
            raise UsageError(f"bad {where or self.flag} {value!r}: {_TYPE_HINTS[self.type]}")
        return converted


def add_options(parser: Any, options: Sequence[Option]) -> None:
    """Register declared options on a parser or argument group."""
    for option in options:
        option.add_to(parser)


def positive(options: dict[str, Any], key: str, default: int | None = None) -> int | None:
    """A whole-number option of at least 1 (`default` when unset); a bad value is a usage error."""
    value = options.get(key)
    if value in (None, ""):
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise UsageError(f"bad --{key.replace('_', '-')} {value!r}: give a whole number") from None
    if number < 1:
        raise UsageError(f"--{key.replace('_', '-')} must be at least 1 (got {number})")
    return number
