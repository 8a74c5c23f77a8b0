"""The pool engine that local and ssh share: slots, GPU assignment, cancel requests,
Ctrl-C, the progress line, and the pool file that tells `list` a pool still runs.

`Pool` runs `wrapper.sh ID` as processes of this machine (the local backend); the ssh
dispatcher (onager.backends.ssh.dispatch) fills remote slots through the same pieces:
`CancelWatch`, `progress_line`, `stop_on_signals`, the pool file and `spawn_detached`.
GPU assignment (onager.backends.gpus) is shared the same way.

Killing is always the same escalation (`terminate_groups`): SIGTERM to every task's process
group, SIGKILL to what is left after `GRACE` seconds; a second Ctrl-C only cuts the grace
short. Liveness is a pid AND its start time (field 22 of /proc/PID/stat), so a reused pid
never passes for a task or a pool.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, NamedTuple

from onager.layout import CANCEL_REQUESTED, LaunchPaths
from onager.state import mark, read_states
from onager.tasklist import Tasklist
from onager.wrapper import INDEX_WIDTH

CANCEL_FLAG = CANCEL_REQUESTED  # kept for importers; the path is LaunchPaths.cancel_flag
NOT_STARTED_MARKS = 100_000  # after Ctrl-C, tasks never started beyond this many stay "lost"
GRACE = 5.0  # seconds between SIGTERM and SIGKILL
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: a cancel of at most this many not-started tasks also names each of them in state/ (the
#: wrapper sees `<id>.cancel` as it starts); larger ones rely on the launch-level mark alone
PER_TASK_CANCEL_MARKS = 1000
_CANCEL_WHY = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:+-")


class _AllUnfinished(dict):
    """Query answer for a live pool: every task it has not finished is still its own."""

    def get(self, key, default=None):  # type: ignore[override]
        return "pending"


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


# ------------------------------------------------------------------ liveness
def proc_start(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None when the
    process is gone or a zombie, "" where /proc cannot tell (another OS)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        return ""
    if not fields or fields[0] == b"Z" or len(fields) < 20:
        return None if fields and fields[0] == b"Z" else ""
    return fields[19].decode("ascii", "replace")


def alive(pid: int, pstart: str | None = None) -> bool:
    """Whether process `pid` lives and, when `pstart` is known (not None, "" or "-"), is the
    process that started at `pstart`: a reused pid is another process, not ours."""
    if pid <= 0:
        return False
    started = proc_start(pid)
    if started is None:
        return False
    if started and pstart not in (None, "", "-"):
        return started == str(pstart)
    if started:
        return True
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def live_group_members(pgids: Iterable[int]) -> dict[int, list[int]]:
    """The live (not zombie) processes of each process group, from one scan of /proc; a
    group without any is dead even where an unreaped zombie keeps `kill -0 -PGID` true."""
    wanted = {int(p) for p in pgids}
    found: dict[int, list[int]] = {}
    if not wanted:
        return found
    try:
        entries = os.listdir("/proc")
    except OSError:  # no /proc: ask the kernel per group
        return {p: [p] for p in wanted if group_alive(p)}
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) in wanted:
            found.setdefault(int(fields[2]), []).append(int(entry))
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_groups(pgids: Sequence[int], sig: int) -> None:
    for pgid in pgids:
        with_suppressed(os.killpg, pgid, sig)


def with_suppressed(fn, *args) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        fn(*args)


def terminate_groups(pgids: Sequence[int], grace: float = GRACE, hurry: Callable[[], bool] = lambda: False,
                     poll: Callable[[], object] | None = None) -> list[int]:
    """SIGTERM every group, SIGKILL what is left after `grace` seconds (at once when `hurry()`
    turns true: a second Ctrl-C), then check. Returns the groups with a live process left
    (normally none). `poll` runs while waiting (a pool reaps its wrappers there)."""
    groups = sorted({int(p) for p in pgids if int(p) > 1})
    if not groups:
        return []
    kill_groups(groups, signal.SIGTERM)
    deadline = time.monotonic() + grace
    left = groups
    while time.monotonic() < deadline and not hurry():
        if poll is not None:
            poll()
        left = sorted(live_group_members(left))
        if not left:
            return []
        time.sleep(0.05)
    # every group, not only those seen alive: a task that ignores SIGTERM outlives its wrapper
    kill_groups(groups, signal.SIGKILL)
    check_until = time.monotonic() + 3
    while True:
        if poll is not None:
            poll()
        left = sorted(live_group_members(groups))
        if not left or time.monotonic() > check_until:
            return left
        time.sleep(0.02)


# ------------------------------------------------------------------ signals
class Stop:
    """The signals that stop a pool: the first raises KeyboardInterrupt where the pool is;
    every later one only sets `hurry` (the cleanup skips the rest of its grace, it is never
    abandoned)."""

    def __init__(self) -> None:
        self.count = 0
        self.signal: int | None = None

    @property
    def hurry(self) -> bool:
        return self.count > 1

    def handler(self, signum: int, frame: object) -> None:
        self.count += 1
        if self.count == 1:
            self.signal = signum
            raise KeyboardInterrupt


_stops: list[Stop] = []


def current_stop() -> Stop:
    """The Stop of the innermost stop_on_signals (a fresh one, never hurried, outside any)."""
    return _stops[-1] if _stops else Stop()


@contextlib.contextmanager
def stop_on_signals(signals: Sequence[int] = STOP_SIGNALS) -> Iterator[Stop]:
    """Ctrl-C, a closed terminal (SIGHUP) and a kill (SIGTERM) stop a pool the same way: its
    tasks run in sessions of their own and would otherwise live on, unaccounted for. A signal
    that is ignored (nohup, a detached pool's SIGHUP) stays ignored."""
    stop = Stop()
    previous: dict[int, Any] = {}
    try:
        for sig in signals:
            try:
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue
                previous[sig] = signal.signal(sig, stop.handler)
            except ValueError:  # not the main thread: no handlers, the caller's ones stay
                break
        _stops.append(stop)
        yield stop
    finally:
        if stop in _stops:
            _stops.remove(stop)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


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
CANCEL_CHECK_SH = r"""onager_cancelled() {
    [ -f "$D/cancel.requested" ] || return 1
    local _t _w list b lo hi st
    while read -r _t _w list; do
        [ "$list" = all ] && return 0
        for b in ${list//,/ }; do
            st=1
            case $b in *:*) st=${b#*:}; b=${b%%:*};; esac
            lo=${b%%-*}; hi=${b#*-}
            case $lo$hi$st in ''|*[!0-9]*) continue;; esac
            if [ "$1" -ge "$lo" ] && [ "$1" -le "$hi" ] && [ $(( ($1 - lo) % st )) -eq 0 ]; then return 0; fi
        done
    done < "$D/cancel.requested"
    return 1
}
"""


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


# ------------------------------------------------------------------ starts
class StartInfo(NamedTuple):
    """What an attempt's start name holds: `host pid pstart jobid` (older: `host pid jobid`)."""

    host: str
    pid: int
    pstart: str | None
    started: float


def _start_content(fields: list[str]) -> tuple[str, int, str | None] | None:
    if len(fields) < 2 or not (fields[1].isascii() and fields[1].isdigit()):
        return None
    pstart = None
    if len(fields) >= 3 and (fields[2] == "-" or (fields[2].isascii() and fields[2].isdigit())):
        pstart = fields[2]  # a pool's start (no job id) or the lifecycle form with pstart
    return fields[0], int(fields[1]), pstart


def running_starts(launch_dir: str, wanted: Callable[[int], bool] | None = None) -> dict[int, StartInfo]:
    """The latest start of every task that has no end after it, with its content, from ONE
    listing of state/ (contents read only for those starts): who to kill, what may still run."""
    state_dir = LaunchPaths(launch_dir).state_dir
    try:
        names = os.listdir(state_dir)
    except OSError:
        return {}
    starts: dict[int, tuple[float, str]] = {}
    ends: dict[int, float] = {}
    for name in names:
        head, _, rest = name.partition("@")
        task, _, kind = head.partition(".")
        if not task.isdigit() or kind not in ("start", "end"):
            continue
        parts = rest.split("@")
        try:
            when = float(parts[0])
        except ValueError:
            continue
        task_id = int(task)
        if kind == "start":
            if task_id not in starts or when > starts[task_id][0]:
                starts[task_id] = (when, name)
        else:
            begun = when
            if len(parts) >= 3:  # the start this end closes (end@T@CODE@T0...)
                with contextlib.suppress(ValueError):
                    begun = float(parts[2])
            ends[task_id] = max(ends.get(task_id, 0.0), begun, when)
    out: dict[int, StartInfo] = {}
    for task_id, (when, name) in starts.items():
        if ends.get(task_id, -1.0) >= when or (wanted is not None and not wanted(task_id)):
            continue
        try:
            with open(os.path.join(state_dir, name), encoding="utf-8", errors="replace") as handle:
                content = _start_content(handle.read().split())
        except OSError:
            continue
        if content is not None:
            out[task_id] = StartInfo(content[0], content[1], content[2], when)
    return out


# ------------------------------------------------------------------ progress
def fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(label: str, done: int, failed: int, running: int, pending: int, elapsed: float,
                  cancelled: int = 0, lost: int = 0, tail: str = "") -> str:
    """The one progress line of a foreground pool (local and ssh alike)."""
    return (f"{label}{done} done, {failed} failed, {running} running, {max(pending, 0)} pending"
            f"{', ' + str(cancelled) + ' cancelled' if cancelled else ''}"
            f"{', ' + str(lost) + ' lost' if lost else ''}"
            f" [{fmt_duration(elapsed)}]{tail}")


def show_progress(line: str, final: bool = False) -> None:
    """Write the progress line; a terminal that went away (SIGHUP) must not stop the pool."""
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        sys.stderr.flush()


def interrupt_message(what: str, killed: int, survivors: Sequence[int], not_started: int, marked: int) -> str:
    """The true account of a stop: how many running tasks were killed (checked), which process
    groups outlived SIGKILL, how many never-started tasks were marked cancelled."""
    text = (f"{what}: killed {killed} running task{'' if killed == 1 else 's'} (SIGTERM, then SIGKILL after "
            f"{GRACE:g} s)")
    if not_started:
        text += f"; {not_started} not started"
    text += "; marked cancelled (reason interrupted)"
    if marked < not_started:
        text += f" except {not_started - marked} not-started ones beyond {NOT_STARTED_MARKS} (they show as lost)"
    if survivors:
        groups = " ".join(f"-{p}" for p in survivors)
        text += (f"; {len(survivors)} process group(s) still alive after SIGKILL: check them with "
                 f"ps -o pid,stat,cmd -g {','.join(map(str, survivors))} (kill -KILL -- {groups})")
    return text


def spawn_detached(module: str, launch_dir: str) -> int:
    """Start `python -m MODULE LAUNCH_DIR` in a session of its own (a --detach pool); its pid."""
    with open(LaunchPaths(launch_dir).pool_log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, launch_dir],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True,
                                env=dict(os.environ, PYTHONPATH=_package_parent()))
    return proc.pid


def detached_setup(launch_dir: str) -> dict[str, Any]:
    """In a --detach pool: its launch.json; SIGHUP ignored (it outlives the terminal), while
    SIGTERM and SIGINT stop it like Ctrl-C stops a foreground pool."""
    with open(LaunchPaths(launch_dir).launch_json) as handle:
        meta: dict[str, Any] = json.load(handle)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return meta


# ------------------------------------------------------------------ the pool
class Pool:
    """Runs `wrapper.sh ID` for each task id with at most `width` at once."""

    def __init__(self, launch_dir: str, ids: Sequence[int], max_tasks: int,
                 slots: list[str] | None = None, progress: bool = False,
                 label: str = ""):
        self.launch_dir = launch_dir
        self.paths = LaunchPaths(launch_dir)
        self.wrapper = self.paths.wrapper
        self.ids = ids
        self.slots = slots
        self.free: list[str] | None = list(slots) if slots else None
        self.width = max(1, min(max_tasks, len(slots)) if slots else max_tasks)
        self.progress = progress
        self.label = label
        self.running: dict[int, tuple] = {}  # pid -> (task id, slot, Popen, started)
        self.done = self.failed = self.cancelled = 0
        self.failures: list[tuple] = []
        self.cancels = CancelWatch(launch_dir, lambda ids: self._kill_cancelled())
        self._records: tuple | None = None
        self.write_errors: list[OSError] = []  # state names it could not write (disk full)
        self.kill_at: dict[int, float] = {}  # process group -> when it gets SIGKILL (cancelled tasks)
        self.interrupted: str | None = None  # the account of a stop (Ctrl-C, SIGTERM, SIGHUP)
        self.survivors: list[int] = []
        try:
            self._selector: selectors.BaseSelector | None = selectors.DefaultSelector() \
                if hasattr(os, "pidfd_open") else None
        except OSError:
            self._selector = None
        self._pidfds: dict[int, int] = {}
        self._lifecycle: bool | None = None  # does the wrapper write its own ends (see _reap)

    # -------------------------------------------------------------- cancel
    def _kill_cancelled(self) -> None:
        """`onager cancel` marked some of our running tasks: SIGTERM now, SIGKILL after the
        grace (the loop wakes up for it); the command that cancelled kills them too."""
        now = time.monotonic()
        for pid, (task_id, _, _, _) in self.running.items():
            if pid not in self.kill_at and self.cancels.marked(task_id):
                with_suppressed(os.killpg, pid, signal.SIGTERM)
                self.kill_at[pid] = now + GRACE

    def _escalate(self, force: bool = False) -> None:
        now = time.monotonic()
        for pgid, when in list(self.kill_at.items()):
            if force or now >= when:
                with_suppressed(os.killpg, pgid, signal.SIGKILL)
                del self.kill_at[pgid]

    def _kill_all(self, stop: Stop) -> list[int]:
        """Every running task's group: SIGTERM, SIGKILL after the grace (at once on a second
        signal); returns the groups that still have a live process."""
        survivors = terminate_groups(list(self.running) + list(self.kill_at), GRACE,
                                     hurry=lambda: stop.hurry, poll=self._reap_all)
        self.kill_at.clear()
        deadline = time.monotonic() + 5
        while self.running and time.monotonic() < deadline:
            if not self._reap(block=False):
                time.sleep(0.02)
        return survivors

    def _interrupt(self, position: int, stop: Stop) -> None:
        """Ctrl-C, SIGTERM or SIGHUP: mark, then kill every running task (later signals only
        hurry this), mark the tasks never started; `self.interrupted` says what was done."""
        why = "interrupted"
        running = [t for t, _, _, _ in self.running.values()]
        not_started = list(itertools.islice(self.ids, position, None)) if position < len(self.ids) else []
        not_started = [t for t in not_started if not self.cancels.marked(t)]
        # marks first (a wrapper that records its end sees them), then the kill
        for task_id in running:
            with contextlib.suppress(OSError):
                mark(self.launch_dir, task_id, "cancel", why)
        with contextlib.suppress(OSError):
            request_cancel(self.launch_dir, not_started, why, per_task=())
        self.survivors = self._kill_all(stop)
        marked = 0
        with contextlib.suppress(OSError):
            marked = mark_skipped(self.launch_dir, not_started[:NOT_STARTED_MARKS], why)
        self.cancelled += len(not_started)
        self.interrupted = interrupt_message(f"{self.label.rstrip(': ') or 'pool'} stopped",
                                             len(running) - len(self.survivors), self.survivors,
                                             len(not_started), marked)

    # ---------------------------------------------------------------- run
    def _record(self, task_id: int) -> str | None:
        """The task's record, read here once so that the wrapper needs no lookup of its own."""
        if self._records is None:
            try:
                with open(self.paths.tasks_idx, "rb") as handle:
                    index = handle.read()
                with open(self.paths.tasks_sh, "rb") as handle:
                    self._records = (index, handle.read())
            except OSError:
                self._records = (b"", b"")
        index, records = self._records
        entry = index[(task_id - 1) * INDEX_WIDTH:task_id * INDEX_WIDTH].split()
        if len(entry) != 2 or not entry[1].isdigit() or int(entry[1]) == 0 or int(entry[1]) > 65536:
            return None  # missing, or too long for the environment: the wrapper looks it up
        start = int(entry[0])
        return records[start:start + int(entry[1])].decode("utf-8")

    def _spawn(self, task_id: int, slot: str | None) -> None:
        env = dict(os.environ)
        record = self._record(task_id)
        if record is not None:
            env["ONAGER_RECORD"] = record
        else:
            env.pop("ONAGER_RECORD", None)
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        started = f"{time.time():.6f}"
        env["ONAGER_POOL_T0"] = started
        proc = subprocess.Popen(["bash", self.wrapper, str(task_id)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=env, close_fds=True)
        self.running[proc.pid] = (task_id, slot, proc, started)
        if self._selector is not None:
            try:
                fd = os.pidfd_open(proc.pid)
                self._selector.register(fd, selectors.EVENT_READ, proc.pid)
                self._pidfds[proc.pid] = fd
            except OSError:  # no pidfd here (old kernel): wait the blocking way from now on
                self._selector = None

    def _forget_pidfd(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(Exception):
                if self._selector is not None:
                    self._selector.unregister(fd)
            with contextlib.suppress(OSError):
                os.close(fd)

    def _reap(self, block: bool) -> bool:
        """Reap one wrapper (waiting for one when `block`); True when one of ours ended."""
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            for pid in list(self._pidfds):
                self._forget_pidfd(pid)
            self.running.clear()
            return False
        if pid == 0 or pid not in self.running:
            return False
        self._forget_pidfd(pid)
        task_id, slot, proc, started = self.running.pop(pid)
        code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else (status >> 8)
        proc.returncode = code
        recorded = code if code >= 0 else 128 - code
        try:
            if self._wrapper_records_ends():
                if code < 0:  # it died by a signal before it could write its own end
                    self._record_killed(task_id, started, recorded, -code)
            else:
                try:  # the wrapper's start name becomes its end name (the wrapper leaves that to us)
                    os.rename(self.paths.state(f"{task_id}.start@{started}"),
                              self.paths.state(f"{task_id}.end@{time.time():.6f}@{recorded}@{started}"))
                except FileNotFoundError:  # it never started (e.g. not in the launch): still record the end
                    mark(self.launch_dir, task_id, "end", recorded)
        except OSError as exc:
            # a full disk must not stop the pool: the other tasks still run and are counted,
            # and the launch reports this error after its summary
            if exc.filename is None:
                exc.filename = self.paths.state_dir
            self.write_errors.append(exc)
        if self.cancels.marked(task_id) or task_id in self.cancels:
            self.cancelled += 1
        elif code == 0:
            self.done += 1
        else:
            self.failed += 1
            if code < 0:
                code = 128 - code
            self.failures.append((task_id, code))
        if self.free is not None and slot is not None:
            self.free.append(slot)
        return True

    def _wrapper_records_ends(self) -> bool:
        """Whether this launch's wrapper writes its own end names under a pool too (the
        lifecycle wrapper: it exports ONAGER_ATTEMPT); read once."""
        if self._lifecycle is None:
            try:
                with open(self.wrapper, encoding="utf-8", errors="replace") as handle:
                    self._lifecycle = "ONAGER_ATTEMPT" in handle.read()
            except OSError:
                self._lifecycle = False
        return self._lifecycle

    def _record_killed(self, task_id: int, started: str, code: int, signum: int) -> None:
        """The end a wrapper killed by a signal could not write: `killed`, reason SIG<NAME>, for
        the attempt its start name `<id>.start@<t0>@<attempt>` names."""
        try:
            reason = signal.Signals(signum).name
        except ValueError:
            reason = f"SIG{signum}"
        prefix = f"{task_id}.start@{started}@"
        attempts = [n[len(prefix):] for n in os.listdir(self.paths.state_dir) if n.startswith(prefix)]
        attempt = next((a for a in attempts if a.isdigit()), None)
        if attempt is None:
            mark(self.launch_dir, task_id, "end", code)
            return
        name = f"{task_id}.end@{time.time():.6f}@{code}@{started}@{attempt}@killed@{reason}"
        with open(self.paths.state(name), "w"):
            pass

    def _reap_all(self) -> None:
        while self.running and self._reap(block=False):
            pass

    def _wait(self) -> None:
        """Until a wrapper ends, at most half a second (a cancel request or a SIGKILL that is
        due is seen meanwhile); without pidfds, a blocking wait as before."""
        if self._selector is not None and not self.kill_at and not self.running:
            return
        if self._selector is None:
            if not self.kill_at:
                self._reap(block=True)
            else:
                time.sleep(0.05)
        elif not any(True for _ in self._selector.select(timeout=0.5)):
            pass
        self._reap_all()
        self.cancels.refresh()
        self._escalate()

    def _show(self, start: float, total: int, final: bool = False) -> None:
        finished = self.done + self.failed + self.cancelled
        pending = total - finished - len(self.running)
        eta = ""
        elapsed = time.time() - start
        if finished and pending + len(self.running):
            eta = " ETA " + fmt_duration(elapsed / finished * (pending + len(self.running)))
        show_progress(progress_line(self.label, self.done, self.failed, len(self.running), pending, elapsed,
                                    self.cancelled, tail=eta), final)

    def run(self) -> int:
        """Run every task; returns the number of tasks that failed. Ctrl-C, SIGTERM or SIGHUP
        kill every task (see `_interrupt`) and raise KeyboardInterrupt."""
        with stop_on_signals() as stop:
            return self._run(stop)

    def _run(self, stop: Stop) -> int:
        start = time.time()
        total = len(self.ids)
        last_shown = 0.0
        position = 0  # how many of self.ids were started (or skipped)
        skipped: list[int] = []
        try:
            self.cancels.refresh()
            for task_id in self.ids:
                while len(self.running) >= self.width:
                    self._wait()
                if task_id in self.cancels:
                    self.cancelled += 1
                    position += 1
                    if task_id not in self.cancels.ids:
                        skipped.append(task_id)  # cancelled by a launch-level mark only
                        if len(skipped) >= 512:
                            self._mark_skipped(skipped)
                    continue
                self._spawn(task_id, self.free.pop(0) if self.free is not None else None)
                position += 1
                if self.progress and time.time() - last_shown > 0.5:
                    self._show(start, total)
                    last_shown = time.time()
            self._mark_skipped(skipped)
            while self.running or self.kill_at:
                self._wait()
                if not self.running and self.kill_at:  # SIGKILL the rest of cancelled groups
                    time.sleep(min(0.1, max(0.0, min(self.kill_at.values()) - time.monotonic())))
                if self.progress and time.time() - last_shown > 0.5:
                    self._show(start, total)
                    last_shown = time.time()
        except KeyboardInterrupt:
            self._mark_skipped(skipped)
            self._interrupt(position, stop)
            raise
        finally:
            for pid in list(self._pidfds):
                self._forget_pidfd(pid)
            if self._selector is not None:
                self._selector.close()
                self._selector = None
        if self.progress:
            self._show(start, total, final=True)
        return self.failed

    def _mark_skipped(self, skipped: list[int]) -> None:
        try:
            mark_skipped(self.launch_dir, skipped, "cancel")
        except OSError as exc:
            self.write_errors.append(exc)
        skipped.clear()


def query_pools(records) -> dict[str, dict[int, str] | None]:
    """Backends whose tasks are run by a process of ours (pool, dispatcher) recorded in
    pool.json: while it lives (pid and start time), every unfinished task is still its own.
    A pool that died without clearing its file (kill -9) may have left tasks running by
    themselves: those whose start's pid and start time still match answer `running`."""
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


def _package_parent() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    existing = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + existing if existing else "")


def write_pool_file(path: str, pid: int | None) -> None:
    """pool.json: the pool's host, pid and the pid's start time (a reused pid is not the pool)."""
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
