"""The pool engine that local and ssh share: slots, GPU assignment, cancel requests,
Ctrl-C, the progress line, and the pool file that tells `list` a pool still runs.

`Pool` runs `wrapper.sh ID` as processes of this machine (the local backend): one bash per
slot (SLOT_SH) runs a wrapper of this onager as a function in a subshell per task, any
other wrapper as `bash wrapper.sh ID` started by the pool itself; the ssh
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
import select
import selectors
import signal
import subprocess
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
from onager.errors import OnagerError
from onager.layout import CANCEL_REQUESTED, LaunchPaths, ProjectPaths, project_root
from onager.state import KILLED, mark, record_end
from onager.wrapper import INDEX_WIDTH, OOM_FILE_SH

CANCEL_FLAG = CANCEL_REQUESTED  # kept for importers; the path is LaunchPaths.cancel_flag

#: the word in a wrapper.sh (onager.wrapper) that may run as a function in a slot's subshell
SLOT_READY = "POOL_SLOT_READY"
#: one long-lived bash per pool slot: it reads `ID GPUS T0 PRIOR\n RECORD\0` on stdin and runs
#: the wrapper's text as a function in a subshell per task (a fork, no bash start), each task in
#: a process group of its own (job control, `set -m`); on fd 9 it says `S ID PID` when the task
#: started and `E ID CODE` when it ended (the wrapper adds `L ID` once its end is recorded).
#: The cgroup file that counts OOM kills is found once, for all its tasks.
SLOT_SH = OOM_FILE_SH + r"""set -m
onager_oom_find
eval "onager_wrapper() { $(<"$1")
}" || exit 3
exec 9>&1 >/dev/null
while IFS=' ' read -r id gpu t0 prior && IFS= read -r -d '' rec; do
    ( set +m; ONAGER_SLOT=1; onager_slot_prior=$prior; export ONAGER_POOL_T0=$t0
      if [ -n "$rec" ]; then export ONAGER_RECORD=$rec; else unset ONAGER_RECORD; fi
      [ "$gpu" = - ] || export CUDA_VISIBLE_DEVICES=$gpu
      onager_wrapper "$id" ) </dev/null &
    echo "S $id $!" >&9
    wait $!; echo "E $id $?" >&9
done
"""


class _Slot:
    """One slot's bash (SLOT_SH), the task it runs and what it said of it."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.fd = proc.stdout.fileno() if proc.stdout is not None else -1
        os.set_blocking(self.fd, False)
        self.buf = b""
        self.task: tuple[int, str | None, str] | None = None  # (task id, GPUs, t0) handed over
        self.pid: int | None = None  # the running task's wrapper (its process group)
        self.left = False  # the wrapper said its end is recorded
        self.dead = False

    def lines(self, timeout: float | None) -> list[list[str]] | None:
        """The whole lines it wrote (waiting up to `timeout` for some); None at its end."""
        if (timeout is None or timeout > 0) and not select_one(self.fd, timeout):
            return []
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return []
        if not data:
            return None
        self.buf += data
        *done, self.buf = self.buf.split(b"\n")
        return [line.decode("ascii", "replace").split() for line in done]


def select_one(fd: int, timeout: float | None) -> bool:
    """Whether `fd` is readable (or at its end) within `timeout` seconds (None: wait)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else int(timeout * 1000)))


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
        #: slot mode (a wrapper that says SLOT_READY): the slots' bashes, started as needed
        self._slots: list[_Slot] | None = None
        self._slot_sel: selectors.BaseSelector | None = None
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

    def _slot_ready(self) -> bool:
        """Whether the launch's wrapper may run in a slot (a wrapper of this onager)."""
        try:
            with open(self.wrapper, encoding="utf-8", errors="replace") as handle:
                return SLOT_READY in handle.read(4096)
        except OSError:
            return False

    def _task_dir(self, task_id: int) -> None:
        """ONAGER_TASK_DIR, made here so that the wrapper needs no mkdir."""
        path = os.path.join(self.task_dirs, str(task_id))
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        except OSError:
            with contextlib.suppress(OSError):
                os.makedirs(path, exist_ok=True)

    def _new_slot(self) -> _Slot:
        env = dict(os.environ)
        env.pop("ONAGER_RECORD", None)
        proc = subprocess.Popen(["bash", "-c", SLOT_SH, "onager-slot", self.wrapper], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True,
                                env=env, close_fds=True)
        slot = _Slot(proc)
        assert self._slots is not None and self._slot_sel is not None
        self._slots.append(slot)
        self._slot_sel.register(slot.fd, selectors.EVENT_READ, slot)
        return slot

    def _spawn_in_slot(self, task_id: int, gpus: str | None) -> None:
        """Hand the task to an idle slot (one more slot while under the width); it is in
        `running` (killable) once the slot said its pid (`_slot_said`, `_settle_slots`)."""
        assert self._slots is not None
        record = self._record(task_id)
        if record is None or "\0" in record:
            record = ""  # the wrapper looks it up
        self._task_dir(task_id)
        started = f"{time.time():.6f}"
        prior = self._free_claim(task_id)
        words = f"{task_id} {gpus or '-'} {started} {prior}\n{record}\0".encode()
        for _ in range(3):
            slot = next((s for s in self._slots if s.task is None and not s.dead), None) or self._new_slot()
            slot.left, slot.pid, slot.task = False, None, (task_id, gpus, started)
            try:
                assert slot.proc.stdin is not None
                slot.proc.stdin.write(words)
                slot.proc.stdin.flush()
                return
            except OSError:  # the slot's bash died: another one runs the task
                slot.task = None
                self._drop_slot(slot)
        raise OnagerError(f"the local pool's bash exits at once (bash -c on {self.wrapper}): cannot run tasks")

    def _active(self) -> int:
        """Tasks handed over and not ended (a slot's task is in `running` once it said its pid)."""
        if self._slots is None:
            return len(self.running)
        return sum(1 for slot in self._slots if slot.task is not None)

    def _settle_slots(self, wait: float = 5.0) -> None:
        """Read every busy slot's pid (before a kill of all): a task handed over is started."""
        deadline = time.monotonic() + wait
        for slot in list(self._slots or ()):
            while slot.task is not None and slot.pid is None and time.monotonic() < deadline:
                lines = slot.lines(timeout=max(0.0, deadline - time.monotonic()))
                if lines is None:
                    self._slot_task_gone(slot)
                    self._drop_slot(slot)
                    break
                self._slot_said(slot, lines)

    def _slot_said(self, slot: _Slot, lines: list[list[str]]) -> bool:
        """Act on a slot's words in order; True when its task ended."""
        ended = False
        for words in lines:
            if slot.task is None or len(words) < 2:
                continue
            task_id, gpus, started = slot.task
            if words[0] == "S" and len(words) == 3 and words[2].isdigit():
                slot.pid = int(words[2])
                self.running[slot.pid] = (task_id, gpus, slot, started)
            elif words[0] == "L":
                slot.left = True
            elif words[0] == "E" and len(words) == 3 and slot.pid is not None:
                code = int(words[2]) if words[2].isdigit() else 255
                self.running.pop(slot.pid, None)
                killed = code > 128 and not slot.left  # its wrapper died before it recorded an end
                slot.pid = slot.task = None
                self._ended(task_id, gpus, started, -(code - 128) if killed else code)
                ended = True
        return ended

    def _free_claim(self, task_id: int) -> int:
        """The wrapper's takeover of a free claim (one an earlier attempt left, not `held`, not
        `done` in this launch), done here with a rename where bash needs `mv` and `rm`: set
        aside, checked, removed. Returns the attempt it counted to (0: none taken; the wrapper
        decides as ever, held and contended claims included)."""
        path = os.path.join(self.claims_dir, str(task_id))
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                seen = handle.read().split()
        except OSError:
            return 0
        if len(seen) < 5 or seen[0] == "held" or (seen[0] == "done" and seen[2] == self.launch_id) \
                or not seen[1].isdigit():
            return 0
        aside = f"{path}.{os.getpid()}"
        try:
            os.rename(path, aside)
        except OSError:
            return 0
        try:
            with open(aside, encoding="utf-8", errors="replace") as handle:
                now = handle.read().split()
        except OSError:
            now = []
        if now[:3] + now[4:5] != seen[:3] + seen[4:5] and now:
            with contextlib.suppress(OSError):  # another attempt's fresh claim: put it back
                os.link(aside, path)
            with contextlib.suppress(OSError):
                os.unlink(aside)
            return 0
        with contextlib.suppress(OSError):
            os.unlink(aside)
        return int(seen[1])

    def _drop_slot(self, slot: _Slot) -> None:
        """A slot whose bash ended: forget it (and close its pipes)."""
        slot.dead = True
        if self._slots is not None and slot in self._slots:
            self._slots.remove(slot)
        if self._slot_sel is not None:
            with contextlib.suppress(Exception):
                self._slot_sel.unregister(slot.fd)
        for stream in (slot.proc.stdin, slot.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        with contextlib.suppress(Exception):
            slot.proc.wait(timeout=5)

    def _reap_slots(self, timeout: float | None) -> bool:
        """Read what the slots said (waiting up to `timeout` for a word); True when a task ended."""
        assert self._slot_sel is not None
        ended = False
        ready = self._slot_sel.select(timeout) if timeout != 0 else [
            (key, 0) for key in self._slot_sel.get_map().values()]
        for key, _ in ready:
            slot: _Slot = key.data
            lines = slot.lines(timeout=0)
            if lines is None:  # its bash is gone (killed from outside)
                ended = self._slot_task_gone(slot) or ended
                self._drop_slot(slot)
                continue
            ended = self._slot_said(slot, lines) or ended
        return ended

    def _slot_task_gone(self, slot: _Slot) -> bool:
        """The slot's bash died with a task: one it had not started runs again; a wrapper that
        lives on records its own end. True when a task ended."""
        if slot.task is None:
            return False
        task_id, gpus, started = slot.task
        pid, slot.pid, slot.task = slot.pid, None, None
        if pid is None:
            self.again.append(task_id)
            if self.free is not None and gpus is not None:
                self.free.append(gpus)
            return False
        self.running.pop(pid, None)
        if group_alive(pid) or slot.left:
            self.failed += 1
            self.failures.append((task_id, 255))
            if self.free is not None and gpus is not None:
                self.free.append(gpus)
        else:
            self._ended(task_id, gpus, started, -int(signal.SIGKILL))
        return True

    def _close_slots(self) -> None:
        """No more tasks: each slot's bash reads the end of its input and exits."""
        for slot in list(self._slots or ()):
            with contextlib.suppress(OSError):
                if slot.proc.stdin is not None:
                    slot.proc.stdin.close()
        for slot in list(self._slots or ()):
            try:
                slot.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with_suppressed(os.killpg, slot.proc.pid, signal.SIGKILL)
            self._drop_slot(slot)
        if self._slot_sel is not None:
            self._slot_sel.close()
            self._slot_sel = None

    def _spawn(self, task_id: int, slot: str | None) -> None:
        if self._slots is not None:
            return self._spawn_in_slot(task_id, slot)
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
