"""The pool engine that local and ssh share: slots, GPU assignment, cancel requests,
Ctrl-C, the progress line, and the pool file that tells `list` a pool still runs.

`Pool` runs `wrapper.sh ID` as processes of this machine (the local backend); the ssh
dispatcher (onager.backends.ssh.dispatch) fills remote slots through the same pieces:
`CancelWatch`, `progress_line`, `stop_on_signals`, the pool file and `spawn_detached`.
GPU assignment (onager.backends.gpus) is shared the same way.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, Callable

from onager.layout import CANCEL_REQUESTED, LaunchPaths, ProjectPaths, project_root
from onager.state import KILLED, POOL_ANSWER, mark, read_states, record_end
from onager.wrapper import INDEX_WIDTH

CANCEL_FLAG = CANCEL_REQUESTED  # kept for importers; the path is LaunchPaths.cancel_flag
NOT_STARTED_MARKS = 100_000  # after Ctrl-C, tasks never started beyond this many stay "lost"


class _AllUnfinished(dict):
    """Query answer for a live pool: every task it has not finished is still its own."""

    def get(self, key, default=None):  # type: ignore[override]
        return POOL_ANSWER


def request_cancel(launch_dir: str, task_ids: Sequence[int]) -> None:
    """Mark tasks cancelled, then touch the flag that a running pool's CancelWatch sees."""
    for task_id in task_ids:
        mark(launch_dir, task_id, "cancel")
    with open(LaunchPaths(launch_dir).cancel_flag, "w") as handle:
        handle.write(str(time.time()))


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        pass
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


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
    sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
    sys.stderr.flush()


class CancelWatch:
    """The tasks `onager cancel` marked: re-read only when its flag file changes (one stat)."""

    def __init__(self, launch_dir: str, on_change: Callable[[set[int]], None] | None = None):
        self.launch_dir = launch_dir
        self.flag = LaunchPaths(launch_dir).cancel_flag
        self.on_change = on_change
        self.ids: set[int] = set()
        self._mtime = 0.0

    def refresh(self) -> None:
        try:
            mtime = os.stat(self.flag).st_mtime
        except FileNotFoundError:
            return
        if mtime != self._mtime:
            self._mtime = mtime
            self.ids = {i for i, st in read_states(self.launch_dir).items() if st.cancelled}
            if self.on_change is not None:
                self.on_change(self.ids)

    def __contains__(self, task_id: object) -> bool:
        self.refresh()
        return task_id in self.ids


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """A closed terminal (SIGHUP) or a kill (SIGTERM) stops a foreground pool like Ctrl-C does:
    its tasks run in sessions of their own and would otherwise live on, unaccounted for."""
    previous = {sig: signal.signal(sig, raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def spawn_detached(module: str, launch_dir: str) -> int:
    """Start `python -m MODULE LAUNCH_DIR` in a session of its own (a --detach pool); its pid."""
    with open(LaunchPaths(launch_dir).pool_log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", module, launch_dir],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, close_fds=True,
                                env=dict(os.environ, PYTHONPATH=_package_parent()))
    return proc.pid


def detached_setup(launch_dir: str) -> dict[str, Any]:
    """In a --detach pool: its launch.json, SIGTERM as an interrupt, SIGHUP ignored."""
    with open(LaunchPaths(launch_dir).launch_json) as handle:
        meta: dict[str, Any] = json.load(handle)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    return meta


class Pool:
    """Runs `wrapper.sh ID` for each task id with at most `width` at once."""

    def __init__(self, launch_dir: str, ids: Sequence[int], max_tasks: int,
                 slots: list[str] | None = None, progress: bool = False,
                 label: str = ""):
        self.launch_dir = launch_dir
        self.paths = LaunchPaths(launch_dir)
        self.wrapper = self.paths.wrapper
        self.task_dirs = ProjectPaths(project_root(launch_dir)).task_dirs(os.path.basename(os.path.dirname(
            os.path.abspath(launch_dir))))
        self.ids = ids
        self.slots = slots
        self.width = max(1, min(max_tasks, len(slots)) if slots else max_tasks)
        self.progress = progress
        self.label = label
        self.running: dict[int, tuple] = {}  # pid -> (task id, slot, Popen)
        self.done = self.failed = self.cancelled = 0
        self.failures: list[tuple] = []
        self.cancels = CancelWatch(launch_dir)
        self._records: tuple | None = None
        self.write_errors: list[OSError] = []  # state names it could not write (disk full)
        #: --retries/--requeue (onager.recovery.PoolRetry): (task id, exit code) -> run it again?
        self.retry: Callable[[int, int], bool] | None = None
        self.again: collections.deque[int] = collections.deque()  # tasks to run again, in turn

    # -------------------------------------------------------------- cancel
    def _kill_all(self) -> None:
        groups = list(self.running)
        for pid in groups:
            with_suppressed(os.killpg, pid, signal.SIGTERM)
        deadline = time.time() + 5
        while time.time() < deadline and any(map(group_alive, groups)):
            self._reap(block=False)
            time.sleep(0.05)
        # reaped wrappers too: a task that ignores SIGTERM outlives its wrapper in the group
        kill_groups(groups, signal.SIGKILL)
        while self.running:
            self._reap(block=True)

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
        with contextlib.suppress(OSError):  # ONAGER_TASK_DIR, made here so the wrapper needs no mkdir
            os.makedirs(os.path.join(self.task_dirs, str(task_id)), exist_ok=True)
        started = f"{time.time():.6f}"
        env["ONAGER_POOL_T0"] = started
        proc = subprocess.Popen(["bash", self.wrapper, str(task_id)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env=env, close_fds=True)
        self.running[proc.pid] = (task_id, slot, proc, started)

    def _reap(self, block: bool) -> str | None:
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.running.clear()
            return None
        if pid == 0 or pid not in self.running:
            return None
        task_id, slot, proc, started = self.running.pop(pid)
        code = os.waitstatus_to_exitcode(status) if hasattr(os, "waitstatus_to_exitcode") else (status >> 8)
        proc.returncode = code
        # the wrapper records its own end; only a wrapper killed by a signal could not
        recorded = code if code >= 0 else 128 - code
        try:
            if code < 0:
                record_end(self.launch_dir, task_id, recorded, started, "-", KILLED, f"SIG{_signame(-code)}")
        except OSError as exc:
            # a full disk must not stop the pool: the other tasks still run and are counted,
            # and the launch reports this error after its summary
            if exc.filename is None:
                exc.filename = self.paths.state_dir
            self.write_errors.append(exc)
        if task_id in self.cancels.ids or task_id in self.cancels:
            self.cancelled += 1
        elif code == 0:
            self.done += 1
        elif self.retry is not None and self.retry(task_id, recorded):
            self.again.append(task_id)  # a new attempt of the task (the wrapper's claim numbers it)
        else:
            self.failed += 1
            if code < 0:
                code = 128 - code
            self.failures.append((task_id, code))
        return slot

    def _show(self, start: float, total: int, final: bool = False) -> None:
        finished = self.done + self.failed + self.cancelled
        pending = total - finished - len(self.running)
        eta = ""
        elapsed = time.time() - start
        if finished and pending + len(self.running):
            eta = " ETA " + fmt_duration(elapsed / finished * (pending + len(self.running)))
        show_progress(progress_line(self.label, self.done, self.failed, len(self.running), pending, elapsed,
                                    self.cancelled, tail=eta), final)

    def _order(self, free: list[str] | None) -> Iterator[int]:
        """The tasks in turn, then those to run again (retries) until none is left or running."""
        yield from self.ids
        while self.again or (self.retry is not None and self.running):
            if self.again:
                yield self.again.popleft()
                continue
            slot = self._reap(block=True)
            if free is not None and slot is not None:
                free.append(slot)

    def run(self) -> int:
        """Run every task; returns the number of tasks that failed."""
        start = time.time()
        free = list(self.slots) if self.slots else None
        total = len(self.ids)
        last_shown = 0.0
        self.cancels.refresh()
        position = 0
        try:
            for task_id in self._order(free):  # position: how many of them were started (or skipped)
                while len(self.running) >= self.width:
                    slot = self._reap(block=True)
                    if free is not None and slot is not None:
                        free.append(slot)
                if task_id in self.cancels:
                    self.cancelled += 1
                    position += 1
                    continue
                self._spawn(task_id, free.pop(0) if free is not None else None)
                position += 1
                if self.progress and time.time() - last_shown > 0.5:
                    self._show(start, total)
                    last_shown = time.time()
            while self.running:
                slot = self._reap(block=True)
                if free is not None and slot is not None:
                    free.append(slot)
                if self.progress and time.time() - last_shown > 0.5:
                    self._show(start, total)
                    last_shown = time.time()
        except KeyboardInterrupt:
            self.retry = None  # what is being killed is not run again
            running = [t for t, _, _, _ in self.running.values()]
            self._kill_all()
            for task_id in running:
                mark(self.launch_dir, task_id, "cancel", "interrupted")
            # the tasks it never started are cancelled too (up to a bound: a name each)
            for task_id in itertools.islice(self.ids, position, position + NOT_STARTED_MARKS):
                mark(self.launch_dir, task_id, "cancel", "interrupted")
            raise
        if self.progress:
            self._show(start, total, final=True)
        return self.failed


def _signame(number: int) -> str:
    try:
        return signal.Signals(number).name.removeprefix("SIG")
    except ValueError:
        return str(number)


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


def raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def query_pools(records) -> dict[str, dict[int, str] | None]:
    """Backends whose tasks are run by a process of ours (pool, dispatcher) recorded in
    pool.json: while it lives, every unfinished task is still its own."""
    out: dict[str, dict[int, str] | None] = {}
    host = socket.gethostname()
    for r in records:
        info = read_pool_file(LaunchPaths(r.launch_dir).pool_json)
        if info is None or info.get("pid") is None:
            out[r.key] = {}
        elif info.get("host") != host:
            out[r.key] = None  # run from another machine: cannot be checked from here
        else:
            out[r.key] = _AllUnfinished() if alive(int(info["pid"])) else {}
    return out



def _package_parent() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    existing = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + existing if existing else "")


def write_pool_file(path: str, pid: int | None) -> None:
    from onager.fsutil import atomic_write
    atomic_write(path, json.dumps({"pid": pid, "host": socket.gethostname(), "time": time.time()}))


def read_pool_file(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None

