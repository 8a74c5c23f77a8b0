"""Recovery without a daemon: retries, requeue, resource escalation, and the follow-up job.

A task whose attempt ended in one of `--retry-on` (default `state.RETRY_ON_DEFAULT`) runs
again as a NEW attempt of the same task (the wrapper's claim numbers it: ONAGER_ATTEMPT),
up to `--retries N` times; with `--requeue`, a `timeout` or `preempted` attempt runs again
without spending a retry (its checkpoint in ONAGER_TASK_DIR lets it resume).

Who does it, so that nothing has to stay logged in:

- local and ssh: the pool itself, when it reaps the attempt (`PoolRetry`, a hook in
  `Pool._reap` and the ssh dispatcher's `_finish`);
- Slurm and Grid Engine: a one-core follow-up job that depends on the launch's array jobs
  (`--dependency=afterany:IDS`, SGE `-hold_jid IDS`) and runs `python -m onager.after
  LAUNCH_DIR` (same interpreter and PYTHONPATH as the launch): it relaunches the eligible
  tasks as the NEXT launch of the job with the same options (escalated by `--mem-factor`
  and `--time-factor`), which gets a follow-up of its own while retries remain; the last
  one runs `--notify`. docs/lifecycle.md explains the choice.

`recovery.json` in a relaunch's directory says which launch started the chain and how many
retries and requeues each of its tasks has spent.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from onager.backends.base import Option, run
from onager.errors import OnagerError, UsageError
from onager.fsutil import atomic_write, executable_mode
from onager.layout import LaunchPaths
from onager.state import (
    DONE,
    END_STATES,
    FAILED,
    KILLED,
    LOST,
    OOM,
    PREEMPTED,
    RETRY_ON_DEFAULT,
    TIMEOUT,
    ended_state,
)

#: the end states --retry-on accepts
RETRY_WORDS = (FAILED, TIMEOUT, OOM, PREEMPTED, LOST, KILLED)
#: what --requeue runs again (without spending a retry)
REQUEUE_STATES = frozenset({TIMEOUT, PREEMPTED})
#: at most this many requeues of one task: one that never gets further must not loop forever
REQUEUE_LIMIT = 10
#: schedulers whose recovery is a follow-up job (the others' pools do it themselves)
FOLLOW_UP_BACKENDS = ("slurm", "gridengine")
#: seconds before the time limit that Slurm (--signal=B:USR1@N) and SGE (s_rt) warn the task
WARN_SECONDS = 60
#: the follow-up job's own limits: it relaunches, or runs --notify, and ends
FOLLOW_UP_TIME = "0:15:00"
FOLLOW_UP_MEM = "1G"
NOTIFY_TIMEOUT = 300
RECOVERY_JSON = "recovery.json"  # in a relaunch: the chain it belongs to, retries spent per task
AFTER_SH = "after.sh"            # the follow-up job's script
AFTER_JSON = "after.json"        # the follow-up job's scheduler id
DEFAULT_DURATION = "0-01:00:00"
DEFAULT_MEM = "2G"

LAUNCH_OPTIONS: tuple[Option, ...] = (
    Option("retries", "int", metavar="N",
           help="run a task whose attempt ended in one of --retry-on again, up to N more times, each a new "
                "attempt (default 0; ssh: a task lost with its host runs again once unless N says otherwise)"),
    Option("retry_on", metavar="STATES",
           help="end states that --retries retries, comma-separated from failed,timeout,oom,preempted,lost,killed "
                "(default: all of them)"),
    Option("requeue", "flag",
           help="run a task that ended in timeout or preemption again (the warning signal reaches it first, so it "
                f"can checkpoint into ONAGER_TASK_DIR); spends no retry; at most {REQUEUE_LIMIT} times"),
    Option("mem_factor", metavar="F",
           help="slurm/gridengine: a retry after oom asks for F times the memory (e.g. 2), up to --max-mem"),
    Option("time_factor", metavar="F",
           help="slurm/gridengine: a retry after timeout asks for F times the time (e.g. 1.5), up to --max-time"),
    Option("max_mem", "size", metavar="MEM", help="slurm/gridengine: the most memory --mem-factor grows to"),
    Option("max_time", "duration", metavar="DURATION", help="slurm/gridengine: the most time --time-factor grows to"),
    Option("notify", metavar="CMD",
           help="run CMD through the shell once the launch has ended (retries included), with its summary in "
                "ONAGER_* variables (ONAGER_STATUS ok|failed, ONAGER_COUNTS, ONAGER_FAILED, ...)"),
)
OPTION_NAMES = tuple(o.name for o in LAUNCH_OPTIONS)
_ESCALATION = ("mem_factor", "time_factor", "max_mem", "max_time")


def add_launch_arguments(parser: Any) -> None:
    """`onager launch` options shared by every backend (onager.cli adds them)."""
    group = parser.add_argument_group("retries, requeue and notifications (docs/lifecycle.md)")
    for option in LAUNCH_OPTIONS:
        option.add_to(group)


# ------------------------------------------------------------------ the policy
@dataclass(frozen=True)
class Recovery:
    """What a launch asks of recovery, checked."""

    retries: int = 0
    retry_on: frozenset[str] = RETRY_ON_DEFAULT
    requeue: bool = False
    mem_factor: float = 1.0
    time_factor: float = 1.0
    max_mem: int | None = None   # MB
    max_time: int | None = None  # seconds
    notify: str = ""
    retries_given: bool = False

    @property
    def active(self) -> bool:
        """Whether any attempt may be run again."""
        return self.retries > 0 or self.requeue

    def wants(self, state: str | None, retried: int, requeued: int) -> str | None:
        """'requeue', 'retry' or None for an attempt that ended in `state`, given what the task spent."""
        if state is None or state == DONE:
            return None
        if self.requeue and state in REQUEUE_STATES and requeued < REQUEUE_LIMIT:
            return "requeue"
        if state in self.retry_on and retried < self.retries:
            return "retry"
        return None


def _factor(options: dict[str, Any], key: str) -> float:
    import math
    value = options.get(key)
    if value in (None, ""):
        return 1.0
    flag = "--" + key.replace("_", "-")
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 1:
        raise UsageError(f"bad {flag} {value!r}: give a number of at least 1, like 1.5 or 2")
    return number


def parse_retry_on(value: Any) -> frozenset[str]:
    """`failed,timeout` (or a list) as end states; a word that is not one is one line."""
    if value in (None, ""):
        return RETRY_ON_DEFAULT
    words = value if isinstance(value, (list, tuple)) else re.split(r"[,\s]+", str(value))
    out = set()
    for word in (str(w).strip().lower() for w in words):
        if not word:
            continue
        if word not in RETRY_WORDS:
            raise UsageError(f"bad --retry-on {word!r}: give end states from {','.join(RETRY_WORDS)}, "
                             "comma-separated")
        out.add(word)
    if not out:
        raise UsageError(f"--retry-on is empty: give end states from {','.join(RETRY_WORDS)}")
    return frozenset(out)


def from_options(options: dict[str, Any], backend: str = "") -> Recovery:
    """The recovery a launch's options ask for; bad values raise UsageError (one line, before any write)."""
    from onager.backends.array import duration_seconds, mem_megabytes

    retries_value = options.get("retries")
    retries = 0
    if retries_value not in (None, ""):
        try:
            retries = int(str(retries_value).strip())
        except ValueError:
            raise UsageError(f"bad --retries {retries_value!r}: give a whole number") from None
        if retries < 0:
            raise UsageError("--retries must be 0 or more")
    retry_on = parse_retry_on(options.get("retry_on"))
    mem_factor, time_factor = _factor(options, "mem_factor"), _factor(options, "time_factor")
    max_mem = max_time = None
    if options.get("max_mem") not in (None, ""):
        try:
            max_mem = mem_megabytes(options["max_mem"])
        except UsageError:
            raise UsageError(f"bad --max-mem {options['max_mem']!r}: give a size like 64G or 500M") from None
    if options.get("max_time") not in (None, ""):
        try:
            max_time = duration_seconds(options["max_time"])
        except UsageError:
            raise UsageError(f"bad --max-time {options['max_time']!r}: give minutes (30), H:MM:SS (48:00:00) "
                             "or D-HH:MM:SS (2-00:00:00)") from None
    notify = options.get("notify")
    if notify is not None and not isinstance(notify, str):
        raise UsageError(f"bad --notify {notify!r}: give a command line as one string")
    notify = notify or ""
    if options.get("notify") is not None and not notify.strip():
        raise UsageError("--notify is empty: give a command, e.g. --notify 'mail -s \"$ONAGER_SUMMARY\" me@lab.org'")
    if notify:
        from onager.scrub import scrub_text
        if scrub_text(notify) != notify:
            raise UsageError("--notify holds what looks like a secret (a token, password or key), and onager never "
                             "writes secrets to disk: put it in an environment variable and write \"$NAME\" in "
                             "the command")
    if backend and backend not in FOLLOW_UP_BACKENDS:
        for key in _ESCALATION:
            if options.get(key) not in (None, ""):
                raise UsageError(f"{backend} has no memory or time limits to escalate; drop "
                                 f"--{key.replace('_', '-')} or use --backend slurm or gridengine")
    return Recovery(retries, retry_on, bool(options.get("requeue")), mem_factor, time_factor, max_mem, max_time,
                    notify, retries_value not in (None, ""))


def check_launch(backend: str, options: dict[str, Any]) -> dict[str, Any]:
    """Check the recovery options of a launch (UsageError, before anything is written) and
    return its options, with the time-limit warning that lets the wrapper tell a timeout (and
    a task that checkpoints on it, with --requeue, the time to do so) where a scheduler's time
    limit may be retried or requeued. The adapter turns `warning_signal` into its arguments."""
    from onager.backends.array import duration_seconds

    policy = from_options(options, backend)
    if backend not in FOLLOW_UP_BACKENDS or not (policy.requeue or (policy.retries and TIMEOUT in policy.retry_on)):
        return options
    if options.get("warning_signal") not in (None, ""):
        return options  # the user's own (0: none)
    extra = [str(x) for x in options.get("extra") or []]
    if any(x.startswith("--signal") or "s_rt" in x for x in extra):
        return options  # given after `--`
    if options.get("duration") not in (None, "") and not policy.requeue:
        return options  # the adapter's default warning tells a timeout apart
    seconds = duration_seconds(options.get("duration") or DEFAULT_DURATION)
    if seconds is None:
        return options
    return dict(options, warning_signal=min(WARN_SECONDS, max(1, seconds // 2)))


# ------------------------------------------------------------------ pools
class PoolRetry:
    """The hook a pool calls when an attempt ended with a non-zero code: True = run the task again.

    The end state is the exit code's (failed, or killed for a signal) unless the code says a
    signal: then the wrapper's end name is read (timeout, oom, ...). Counts are per task and
    per pool run."""

    def __init__(self, launch_dir: str, policy: Recovery):
        self.launch_dir = launch_dir
        self.policy = policy
        self.spent: dict[int, list[int]] = {}  # task id -> [retries, requeues]
        self.retried = 0

    def __call__(self, task_id: int, code: int) -> bool:
        state = ended_state(code) if 0 <= code <= 128 else self.end_state(task_id, code)
        spent = self.spent.setdefault(task_id, [0, 0])
        how = self.policy.wants(state, spent[0], spent[1])
        if how is None:
            return False
        spent[0 if how == "retry" else 1] += 1
        self.retried += 1
        return True

    def end_state(self, task_id: int, code: int) -> str:
        """How the task's latest attempt ended, from its end names (written before the wrapper exited)."""
        state_dir = LaunchPaths(self.launch_dir).state_dir
        prefix = f"{task_id}.end@"
        best: tuple[float, str] | None = None
        try:
            names = [n for n in os.listdir(state_dir) if n.startswith(prefix)]
        except OSError:
            names = []
        for name in names:
            parts = name.split("@")
            try:
                when = float(parts[1])
            except (IndexError, ValueError):
                continue
            state = parts[5] if len(parts) > 5 and parts[5] in END_STATES else ended_state(code)
            if best is None or when > best[0]:
                best = (when, state)
        return best[1] if best is not None else ended_state(code if code >= 0 else 128 - code)


def pool_retry(launch_dir: str, options: dict[str, Any]) -> PoolRetry | None:
    """The pool's retry hook for a launch's options, or None when nothing is retried."""
    policy = from_options(options)
    return PoolRetry(launch_dir, policy) if policy.active else None


# ------------------------------------------------------------------ escalation
def _dhms(seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{days}-{rest // 3600:02d}:{rest % 3600 // 60:02d}:{rest % 60:02d}"


def escalate(options: dict[str, Any], ended: Iterable[str], policy: Recovery) -> dict[str, Any]:
    """The options of a relaunch: memory times --mem-factor if an attempt ran out of memory,
    time times --time-factor if one timed out, each capped by --max-mem / --max-time (never shrunk)."""
    import math

    from onager.backends.array import duration_seconds, megabytes_text, mem_megabytes

    states = set(ended)
    out = dict(options)
    if OOM in states and policy.mem_factor > 1:
        key = "mem_per_task" if options.get("mem_per_task") not in (None, "") else "mem"
        current = mem_megabytes(options.get(key) or DEFAULT_MEM)
        grown = math.ceil(current * policy.mem_factor)
        if policy.max_mem is not None:
            grown = min(grown, max(policy.max_mem, current))
        out[key] = megabytes_text(grown)
    if TIMEOUT in states and policy.time_factor > 1:
        seconds = duration_seconds(options.get("duration") or DEFAULT_DURATION)
        if seconds is not None:
            grown = math.ceil(seconds * policy.time_factor)
            if policy.max_time is not None:
                grown = min(grown, max(policy.max_time, seconds))
            out["duration"] = _dhms(grown)
            out = without_warning(out)  # made for the old limit: prepare makes it again for the new one
    return out


def without_warning(options: dict[str, Any]) -> dict[str, Any]:
    """`options` without warning-signal arguments given after `--` (`--signal=B:USR1@N`, `-l s_rt=`):
    a relaunch gets its warning from `--warning-signal`, which check_launch sets where recovery needs one."""
    words = [str(x) for x in options.get("extra") or []]
    out: list[str] = []
    skip = False
    for k, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word.startswith(("--signal=B:USR1@", "--signal=B@")):
            continue
        if word == "-l" and k + 1 < len(words) and words[k + 1].startswith("s_rt="):
            skip = True
            continue
        out.append(word)
    if out == words:
        return options
    trimmed = dict(options, extra=out)
    if not out:
        trimmed.pop("extra")
    return trimmed


# ------------------------------------------------------------------ the chain
@dataclass
class Chain:
    """The launches one user launch became: the first, each relaunch, and what each task spent."""

    origin: str
    launches: list[str]
    spent: dict[int, list[int]] = field(default_factory=dict)  # task id -> [retries, requeues]

    def to_json(self) -> str:
        return json.dumps({"origin": self.origin, "launches": self.launches,
                           "spent": {str(k): v for k, v in sorted(self.spent.items())}}, indent=1)


def read_chain(launch_dir: str, launch_id: str) -> Chain:
    """The chain a launch belongs to (a launch without recovery.json starts one)."""
    try:
        with open(LaunchPaths(launch_dir).file(RECOVERY_JSON), encoding="utf-8") as handle:
            data = json.load(handle)
        return Chain(str(data["origin"]), [str(x) for x in data["launches"]],
                     {int(k): [int(v[0]), int(v[1])] for k, v in data.get("spent", {}).items()})
    except FileNotFoundError:
        return Chain(launch_id, [launch_id])
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise OnagerError(f"{LaunchPaths(launch_dir).file(RECOVERY_JSON)} is damaged ({exc}); its retries "
                          "cannot be counted: relaunch the job by hand") from None


def write_chain(launch_dir: str, chain: Chain) -> None:
    atomic_write(LaunchPaths(launch_dir).file(RECOVERY_JSON), chain.to_json())


def needs_follow_up(policy: Recovery, chain: Chain | None = None) -> bool:
    """Whether a launch needs a follow-up job: something to notify, or an attempt that may run again."""
    if policy.notify:
        return True
    if not policy.active:
        return False
    if chain is None or not chain.spent:
        return True
    return any(policy.requeue and q < REQUEUE_LIMIT or r < policy.retries for r, q in chain.spent.values())


# ------------------------------------------------------------------ the follow-up job
def _package_parent() -> str:
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def after_script(launch_dir: str) -> str:
    """after.sh: this interpreter and this onager, wherever the follow-up job runs
    (a cluster shares them with its compute nodes, as it does the launch directory)."""
    q = shlex.quote
    return (f"#!/bin/bash\n# onager: the follow-up job of this launch: retries, requeue, --notify (docs/lifecycle.md)\n"
            f"export PYTHONPATH={q(_package_parent())}${{PYTHONPATH:+:$PYTHONPATH}}\n"
            f"exec {q(sys.executable)} -m onager.after {q(launch_dir)}\n")


def follow_up_command(backend: str, jobname: str, launch_dir: str, job_ids: Sequence[str],
                      options: dict[str, Any], root: str) -> list[str]:
    """sbatch/qsub for the one-core follow-up job of a launch, after every one of its array jobs."""
    paths = LaunchPaths(launch_dir)
    script = paths.file(AFTER_SH)
    logs = paths.scheduler_logs_dir
    if backend == "slurm":
        command = ["sbatch", "--parsable", "-J", f"{jobname}-after", f"--dependency=afterany:{':'.join(job_ids)}",
                   "-t", FOLLOW_UP_TIME, "--cpus-per-task=1", f"--mem={FOLLOW_UP_MEM}", f"--chdir={root}",
                   "-o", logs.replace("%", "%%") + "/after_%j.out", "-e", logs.replace("%", "%%") + "/after_%j.err"]
        for key, flag in (("partition", "-p"), ("account", "-A"), ("qos", "--qos")):
            if options.get(key) not in (None, ""):
                command += [flag, str(options[key])]
        return [*command, script]
    from onager.backends.gridengine import sge_name
    command = ["qsub", "-terse", "-N", sge_name(jobname) + "_after", "-hold_jid", ",".join(job_ids), "-V",
               "-b", "n", "-S", "/bin/bash", "-wd", root, "-o", logs + "/", "-e", logs + "/",
               "-l", f"h_rt={FOLLOW_UP_TIME}"]
    for key, flag in (("queue", "-q"), ("account", "-A")):
        if options.get(key) not in (None, ""):
            command += [flag, str(options[key])]
    return [*command, script]


def submit_follow_up(backend: str, jobname: str, launch_dir: str, job_ids: Sequence[str],
                     options: dict[str, Any]) -> str | None:
    """Submit the follow-up job of an array launch when its options ask for recovery or a
    notification; its job id (None: not needed). A failure raises OnagerError naming the
    command to run by hand."""
    if backend not in FOLLOW_UP_BACKENDS or not job_ids:
        return None
    policy = from_options(options)
    launch_id = os.path.basename(launch_dir.rstrip("/"))
    if not needs_follow_up(policy, read_chain(launch_dir, launch_id)):
        return None
    from onager.layout import project_root
    paths = LaunchPaths(launch_dir)
    script = paths.file(AFTER_SH)
    by_hand = f"{shlex.quote(sys.executable)} -m onager.after {shlex.quote(launch_dir)}"
    try:
        os.makedirs(paths.scheduler_logs_dir, exist_ok=True)
        atomic_write(script, after_script(launch_dir))
        os.chmod(script, executable_mode())
        command = follow_up_command(backend, jobname, launch_dir, job_ids, options, project_root(launch_dir))
        out = run(command, retries=2).stdout.strip()
        job_id = out.splitlines()[-1].split(";")[0].split(".")[0].strip() if out else ""
        atomic_write(paths.file(AFTER_JSON), json.dumps({"job_id": job_id, "after": list(job_ids)}))
    except (OnagerError, OSError) as exc:
        raise OnagerError(f"the follow-up job (retries, --notify) of {jobname}/{launch_id} was not submitted "
                          f"({exc}); when the launch has ended, run: {by_hand}") from None
    return job_id
