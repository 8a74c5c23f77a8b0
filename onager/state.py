"""Per-task state: what the wrapper recorded, merged with what the scheduler says.

The wrapper writes facts as names in `<launch>/state/`: `<id>.start@<epoch>` (content:
host pid jobid) while it runs, renamed at the end to `<id>.end@<epoch>@<exit code>@<start>`
(others may write `<id>.end@<epoch>@<exit code>` beside a start name);
`onager cancel` adds `<id>.cancel@<epoch>`, a dispatcher that lost a host adds
`<id>.lost@<epoch>@<reason>`. One directory scan reads a whole launch.
"""
from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass

from onager.errors import OnagerError
from onager.layout import LaunchPaths

PENDING, RUNNING, DONE, FAILED, CANCELLED, LOST, ERROR, UNKNOWN = (
    "pending", "running", "done", "failed", "cancelled", "lost", "error", "unknown")
STATUSES = (PENDING, RUNNING, DONE, FAILED, CANCELLED, LOST, ERROR, UNKNOWN)
# what `--tasklist failed` and `--tasklist unfinished` select
RERUN_FAILED = {FAILED, LOST, ERROR}
RERUN_UNFINISHED = {FAILED, LOST, ERROR, CANCELLED, UNKNOWN}


@dataclass
class TaskState:
    """What the files say about one task (the latest attempt)."""

    start: float | None = None
    end: float | None = None
    exit_code: int | None = None
    cancelled: float | None = None
    lost: str | None = None
    attempts: int = 0


def mark(launch_dir: str, task_id: int, kind: str, *fields: object) -> None:
    """Create a state name such as `<id>.cancel@<epoch>` (atomic: only the name matters).

    A cancel also creates `<id>.cancel`, a fixed name the wrapper tests right after it
    records its start, so a task starting while it is being cancelled stops by itself.
    """
    name = "@".join([f"{task_id}.{kind}", f"{time.time():.6f}", *map(str, fields)])
    for each in ((name, f"{task_id}.cancel") if kind == "cancel" else (name,)):
        with open(LaunchPaths(launch_dir).state(each), "w"):
            pass


_NAME = re.compile(r"^(\d+)\.(start|end|cancel|lost)@(\d+(?:\.\d*)?)(?:@([^@\n]*))?(?:@(\d+(?:\.\d*)?))?$",
                   re.M | re.ASCII)


def read_states(launch_dir: str) -> dict[int, TaskState]:
    """Every task's recorded facts, from one listing of `state/` (names only, no file reads).

    One regular expression over all names at once keeps a 100k-task launch fast; a
    corrupted or foreign name simply does not match, and is never fatal.
    """
    try:
        names = os.listdir(LaunchPaths(launch_dir).state_dir)
    except FileNotFoundError:
        return {}
    except OSError as exc:  # a file where the directory should be, unreadable, ...
        raise OnagerError(f"cannot read the task states in {LaunchPaths(launch_dir).state_dir} "
                          f"({exc.strerror or exc}): fix or move it away, or launch the job again") from exc
    states: dict[int, TaskState] = {}
    get = states.get
    joined = "\n".join(names)
    if joined.count("\n") != len(names) - 1:  # a name holding a newline must not read as two names
        joined = "\n".join(name for name in names if "\n" not in name)
    for task, kind, when_text, field, started_text in _NAME.findall(joined):
        task_id = int(task)
        when = float(when_text)
        st = get(task_id)
        if st is None and kind == "end" and started_text and field.isascii() and field.isdigit():
            # the common case, a finished task whose only name is its end: one constructor call
            states[task_id] = TaskState(float(started_text), when, int(field), None, None, 1)
            continue
        if st is None:
            st = states[task_id] = TaskState()
        if kind == "end":
            if st.end is None or when > st.end:
                try:
                    st.exit_code = int(field)
                except ValueError:
                    continue
                st.end = when
            if started_text:  # the wrapper renamed its start name into this one
                st.attempts += 1
                started = float(started_text)
                if st.start is None or started > st.start:
                    st.start = started
        elif kind == "start":
            st.attempts += 1
            if st.start is None or when > st.start:
                st.start = when
        elif kind == "cancel":
            st.cancelled = max(when, st.cancelled or 0)
        elif kind == "lost":
            st.lost = field or "lost"
    return states


def start_fields(launch_dir: str, task_id: int) -> list[str] | None:
    """What the task's latest attempt wrote when it started (host pid jobid...), or None.

    That is the content of its start name while it runs, and of the end name the start
    name was renamed to once it finished.
    """
    state_dir = LaunchPaths(launch_dir).state_dir
    best, when = None, -1.0
    try:
        names = os.listdir(state_dir)
    except OSError:
        return None
    for name in names:
        parts = name.split("@")
        if parts[0] == f"{task_id}.start" and len(parts) == 2:
            stamp = parts[1]
        elif parts[0] == f"{task_id}.end" and len(parts) == 4:
            stamp = parts[3]
        else:
            continue
        try:
            started = float(stamp)
        except ValueError:
            continue
        if started > when:
            best, when = name, started
    if best is None:
        return None
    try:
        with open(os.path.join(state_dir, best), encoding="utf-8", errors="replace") as handle:
            return handle.read().split()
    except OSError:
        return None


def status_of(st: TaskState | None, scheduler: str | None, queried: bool) -> str:
    """One status from the task's files and the scheduler's word.

    `scheduler` is pending/running/error or None (the scheduler does not know the task);
    `queried` is False when the scheduler could not be asked at all.
    """
    if st is not None and st.end is not None and (st.start is None or st.end >= st.start):
        if st.cancelled is not None and st.exit_code != 0:
            return CANCELLED
        return DONE if st.exit_code == 0 else FAILED
    if st is not None and st.cancelled is not None:
        return CANCELLED
    if scheduler == "error":
        return ERROR
    if scheduler in (PENDING, RUNNING):
        return RUNNING if (scheduler == RUNNING or (st and st.start)) else PENDING
    if not queried:
        return UNKNOWN
    if st is not None and st.lost:
        return LOST
    # the scheduler no longer knows it, and it never wrote its end: killed or never ran
    return LOST


def describe_exit(code: int | None) -> str:
    if code is None:
        return ""
    if code > 128:
        try:
            return f"{code} ({signal.Signals(code - 128).name})"
        except ValueError:
            return str(code)
    return str(code)


def statuses(launch_dir: str, ids: Iterable[int], scheduler: dict[int, str],
             queried: bool) -> dict[int, str]:
    states = read_states(launch_dir)
    return {i: status_of(states.get(i), scheduler.get(i), queried) for i in ids}
