"""The pool engine that local and ssh share: slots, GPU assignment, cancel requests,
Ctrl-C, the progress line, and the pool file that tells `list` a pool still runs.

`Pool` runs `wrapper.sh ID` as processes of this machine (the local backend; its slots:
onager.backends._slots); the ssh
dispatcher (onager.backends.ssh.dispatch) fills remote slots through the same pieces:
`CancelWatch`, `progress_line`, `stop_on_signals`, the pool file and `spawn_detached`.
GPU assignment (onager.backends.gpus) is shared the same way. Killing, liveness and signals
live in onager.backends._kill, cancel marks and the pool file in onager.backends._cancel
(both re-exported here).
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import os
import selectors
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Callable

from onager.backends._cancel import (  # noqa: F401 - re-exported
    CANCEL_CHECK_SH,
    PER_TASK_CANCEL_MARKS,
    CancelRequest,
    CancelWatch,
    cancel_reason,
    mark_skipped,
    query_pools,
    read_cancel_requests,
    read_pool_file,
    request_cancel,
    write_pool_file,
)
from onager.backends._kill import (  # noqa: F401 - re-exported
    GRACE,
    NOT_STARTED_MARKS,
    STOP_SIGNALS,
    StartInfo,
    Stop,
    alive,
    current_stop,
    detached_setup,
    group_alive,
    interrupt_message,
    kill_groups,
    live_group_members,
    proc_start,
    raise_interrupt,
    running_starts,
    spawn_detached,
    stop_on_signals,
    terminate_groups,
    with_suppressed,
)
from onager.backends._slots import SLOT_READY, SLOT_SH, SlotPool  # noqa: F401 - re-exported
from onager.layout import CANCEL_REQUESTED, LaunchPaths, ProjectPaths, project_root
from onager.state import KILLED, mark, record_end
from onager.wrapper import INDEX_WIDTH

CANCEL_FLAG = CANCEL_REQUESTED  # kept for importers; the path is LaunchPaths.cancel_flag


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


# ------------------------------------------------------------------ the pool
class Pool(SlotPool):
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
        #: --retries/--requeue (onager.recovery.PoolRetry): (task id, exit code) -> run it again?
        self.retry: Callable[[int, int], bool] | None = None
        self.again: collections.deque[int] = collections.deque()  # tasks to run again, in turn
        jobname = os.path.basename(os.path.dirname(os.path.abspath(launch_dir)))
        self.launch_id = os.path.basename(os.path.abspath(launch_dir))
        self.task_dirs = ProjectPaths(project_root(launch_dir)).task_dirs(jobname)
        self.claims_dir = ProjectPaths(project_root(launch_dir)).claims(jobname)

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
        while self._active() and time.monotonic() < deadline:
            if not self._reap(block=False):
                time.sleep(0.02)
        return survivors

    def _interrupt(self, position: int, stop: Stop) -> None:
        """Ctrl-C, SIGTERM or SIGHUP: mark, then kill every running task (later signals only
        hurry this), mark the tasks never started; `self.interrupted` says what was done."""
        why = "interrupted"
        self._settle_slots()
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
        if self._slots is not None:
            return self._spawn_in_slot(task_id, slot)
        import subprocess

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
        if self._slots is not None:
            return self._reap_slots(None if block else 0)
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
        self._ended(task_id, slot, started, code)
        return True

    def _ended(self, task_id: int, slot: str | None, started: str, code: int) -> None:
        """Count a wrapper's end (`code` < 0: killed by that signal, its end recorded here)."""
        recorded = code if code >= 0 else 128 - code
        try:
            if code < 0:  # the wrapper writes its own end; one killed by a signal could not
                signame = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
                record_end(self.launch_dir, task_id, recorded, started, "-", KILLED, signame)
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
        elif self.retry is not None and self.retry(task_id, recorded):
            self.again.append(task_id)  # a new attempt of the task (the wrapper's claim numbers it)
        else:
            self.failed += 1
            if code < 0:
                code = 128 - code
            self.failures.append((task_id, code))
        if self.free is not None and slot is not None:
            self.free.append(slot)

    def _reap_all(self) -> None:
        while self._active() and self._reap(block=False):
            pass

    def _wait(self) -> None:
        """Until a wrapper ends, at most half a second (a cancel request or a SIGKILL that is
        due is seen meanwhile); without pidfds, a blocking wait as before."""
        if self._slots is not None:
            if self._active():
                self._reap_slots(0.5)
            elif self.kill_at:
                time.sleep(0.05)
            self.cancels.refresh()
            self._escalate()
            return
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
        active = self._active()
        pending = total - finished - active
        eta = ""
        elapsed = time.time() - start
        if finished and pending + active:
            eta = " ETA " + fmt_duration(elapsed / finished * (pending + active))
        show_progress(progress_line(self.label, self.done, self.failed, active, pending, elapsed,
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
        if self._slot_ready():
            self._slots, self._slot_sel = [], selectors.DefaultSelector()
        try:
            self.cancels.refresh()
            for task_id in self._order():
                while self._active() >= self.width:
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
            while self._active() or self.kill_at:
                self._wait()
                if not self._active() and self.kill_at:  # SIGKILL the rest of cancelled groups
                    time.sleep(min(0.1, max(0.0, min(self.kill_at.values()) - time.monotonic())))
                if self.progress and time.time() - last_shown > 0.5:
                    self._show(start, total)
                    last_shown = time.time()
        except KeyboardInterrupt:
            self.retry = None  # what is being killed is not run again
            self._mark_skipped(skipped)
            self._interrupt(position, stop)
            raise
        finally:
            if self._slots is not None:
                self._close_slots()
            for pid in list(self._pidfds):
                self._forget_pidfd(pid)
            if self._selector is not None:
                self._selector.close()
                self._selector = None
        if self.progress:
            self._show(start, total, final=True)
        return self.failed

    def _order(self) -> Iterator[int]:
        """The tasks in turn, then those to run again (retries) until none is left or running."""
        yield from self.ids
        while self.again or (self.retry is not None and self._active()):
            if self.again:
                yield self.again.popleft()
                continue
            self._wait()

    def _mark_skipped(self, skipped: list[int]) -> None:
        try:
            mark_skipped(self.launch_dir, skipped, "cancel")
        except OSError as exc:
            self.write_errors.append(exc)
        skipped.clear()
