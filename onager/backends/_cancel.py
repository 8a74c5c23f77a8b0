"""Cancel marks of a pool launch (local and ssh) and what `list` learns about it: the
launch-level mark (`cancel.requested`, one line `EPOCH WHY TASKLIST` per cancel) next to the
per-task names, the watch a running pool keeps on it, the pool file and `query_pools`."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Sequence
from typing import Any, Callable, NamedTuple

from onager import wrapper
from onager.backends._kill import alive, proc_start, running_starts
from onager.layout import LaunchPaths
from onager.state import POOL_ANSWER, mark, read_states
from onager.tasklist import Tasklist

#: a cancel of at most this many not-started tasks also names each of them in state/ (the
#: wrapper sees `<id>.cancel` as it starts); larger ones rely on the launch-level mark alone
PER_TASK_CANCEL_MARKS = 1000
_CANCEL_WHY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:+-")


class _AllUnfinished(dict):
    """Query answer for a live pool: every task it has not finished is still its own."""

    def get(self, key, default=None):  # type: ignore[override]
        return POOL_ANSWER


class _Answers(dict):
    """Query answer for a launch whose pool is gone: tasks still running by themselves
    (explicit entries), and `cancelled (WHY)` for the tasks a launch-level cancel covers."""

    def __init__(self, entries: dict[int, str], requests: Sequence[CancelRequest]):
        super().__init__(entries)
        self.requests = requests

    def get(self, key, default=None):  # type: ignore[override]
        found = dict.get(self, key)
        if found is not None:
            return found
        for request in self.requests:
            if request.covers(key):
                return f"cancelled ({request.why})"
        return default


# ------------------------------------------------------------------ cancel marks
class CancelRequest(NamedTuple):
    """One launch-level cancel: a line `EPOCH WHY TASKLIST` of the launch's cancel flag."""

    when: float
    why: str
    tasks: Tasklist | None  # None: every task of the launch

    def covers(self, task_id: object) -> bool:
        return self.tasks is None or task_id in self.tasks


def read_cancel_requests(launch_dir: str) -> list[CancelRequest]:
    """The launch-level cancels (`onager cancel`, Ctrl-C) recorded in the cancel flag, oldest
    first; a line that does not read (an older onager wrote a bare time) is no request."""
    try:
        with open(LaunchPaths(launch_dir).cancel_flag, encoding="utf-8", errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        parts = line.split()
        if len(parts) != 3:
            continue
        try:
            when = float(parts[0])
            tasks = None if parts[2] == "all" else Tasklist.parse(parts[2])
        except Exception:  # noqa: BLE001 - a damaged line is skipped, never fatal
            continue
        out.append(CancelRequest(when, parts[1], tasks))
    return out


#: bash for the wrapper (issue 14: the lead's wrapper.sh is to include it): `onager_cancelled ID`
#: succeeds when a line `EPOCH WHY TASKLIST` of "$D/cancel.requested" covers task ID (blocks
#: `a`, `a-b`, `a-b:s`, or `all`), the launch-level twin of the fixed `<id>.cancel` name
CANCEL_CHECK_SH = wrapper.CANCEL_CHECK_SH  # the wrapper's reader of cancel.requested (its text lives there)


def cancel_reason(why: str) -> str:
    """A reason token as state names carry it ([A-Za-z0-9_.:+-], never empty)."""
    token = "".join(c if c in _CANCEL_WHY else "-" for c in why)
    return token or "cancel"


def request_cancel(launch_dir: str, task_ids: Sequence[int], why: str = "cancel",
                   per_task: Iterable[int] | None = None) -> None:
    """Record a cancel: the per-task names (`<id>.cancel@T@WHY` and the fixed `<id>.cancel` the
    wrapper tests as it starts) for `per_task` (default: every id), then ONE line for all of
    `task_ids` in the launch's cancel flag, whose change a running pool's CancelWatch sees."""
    from onager.fsutil import atomic_write, file_lock
    why = cancel_reason(why)
    for task_id in (task_ids if per_task is None else per_task):
        mark(launch_dir, task_id, "cancel", why)
    if not task_ids:
        return
    flag = LaunchPaths(launch_dir).cancel_flag
    line = f"{time.time():.6f} {why} {Tasklist.from_ids(task_ids)}\n"
    with file_lock(flag + ".lock"):
        try:
            with open(flag, encoding="utf-8", errors="replace") as handle:
                before = "".join(ln + "\n" for ln in handle.read().splitlines() if len(ln.split()) == 3)
        except OSError:
            before = ""
        atomic_write(flag, before + line)


def mark_skipped(launch_dir: str, task_ids: Iterable[int], why: str) -> int:
    """One name `<id>.cancel@T@WHY` per task that will never start (no fixed name: no wrapper
    will look): how `list` knows them without the launch-level mark. Returns how many."""
    state = LaunchPaths(launch_dir).state_dir
    count = 0
    for task_id in task_ids:
        with open(os.path.join(state, f"{task_id}.cancel@{time.time():.6f}@{why}"), "w"):
            pass
        count += 1
    return count


class CancelWatch:
    """The tasks `onager cancel` marked: re-read only when its flag file changes (one stat)."""

    def __init__(self, launch_dir: str, on_change: Callable[[set[int]], None] | None = None):
        self.launch_dir = launch_dir
        self.flag = LaunchPaths(launch_dir).cancel_flag
        self.on_change = on_change
        self.ids: set[int] = set()            # tasks with a cancel name of their own
        self.requests: list[CancelRequest] = []  # launch-level cancels
        self._mtime = 0.0

    def refresh(self) -> None:
        try:
            mtime = os.stat(self.flag).st_mtime
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            self._mtime = mtime
            self.ids = {i for i, st in read_states(self.launch_dir).items() if st.cancelled}
            self.requests = read_cancel_requests(self.launch_dir)
            if self.on_change is not None:
                self.on_change(self.ids)

    def marked(self, task_id: int) -> bool:
        """Cancelled as of the last refresh (no stat)."""
        return task_id in self.ids or any(r.covers(task_id) for r in self.requests)

    def __contains__(self, task_id: object) -> bool:
        self.refresh()
        return isinstance(task_id, int) and self.marked(task_id)


def query_pools(records) -> dict[str, dict[int, str] | None]:
    """Backends whose tasks are run by a process of ours (pool, dispatcher) recorded in
    pool.json: while it lives (pid and start time), every unfinished task is still its own.
    A pool that died without clearing its file (kill -9) may have left tasks running by
    themselves: those whose start's pid and start time still match answer `running`."""
    import socket
    out: dict[str, dict[int, str] | None] = {}
    host = socket.gethostname()
    for r in records:
        info = read_pool_file(LaunchPaths(r.launch_dir).pool_json)
        requests = read_cancel_requests(r.launch_dir)
        if info is None or info.get("pid") is None:
            out[r.key] = _Answers({}, requests)
            continue
        if info.get("host") != host:
            out[r.key] = None  # run from another machine: cannot be checked from here
            continue
        try:
            pid = int(info["pid"])
        except (TypeError, ValueError):
            out[r.key] = _Answers({}, requests)
            continue
        if alive(pid, info.get("pstart")):
            out[r.key] = _AllUnfinished()
            continue
        orphans = {task_id: "running" for task_id, s in running_starts(r.launch_dir).items()
                   if s.host == host and alive(s.pid, s.pstart)}
        out[r.key] = _Answers(orphans, requests)
    return out


def write_pool_file(path: str, pid: int | None) -> None:
    """pool.json: the pool's host, pid and the pid's start time (a reused pid is not the pool)."""
    import socket

    from onager.fsutil import atomic_write
    pstart = proc_start(pid) if pid is not None else None
    atomic_write(path, json.dumps({"pid": pid, "pstart": pstart or None, "host": socket.gethostname(),
                                   "time": time.time()}))


def read_pool_file(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None
