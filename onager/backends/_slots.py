"""A local pool's slots: one long-lived bash per slot runs the launch's wrapper as a function
in a forked subshell per task (no bash start and no Popen per task), each task in a process
group of its own. `SlotPool` is the part of `onager.backends.pool.Pool` that drives them; a
wrapper that does not say SLOT_READY (one of an older onager, a test's own) runs the old way,
one `bash wrapper.sh ID` per task.
"""
from __future__ import annotations

import collections
import contextlib
import os
import select
import selectors
import signal
import time

from onager.backends._kill import group_alive, with_suppressed
from onager.errors import OnagerError
from onager.wrapper import OOM_FILE_SH

TYPE_CHECKING = False
if TYPE_CHECKING:  # subprocess loads when a slot starts, not with `launch --help`
    import subprocess

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
    set +m  # a wait under job control would return when the task is stopped (kill -STOP), not ended
    echo "S $id $!" >&9
    wait $!; echo "E $id $?" >&9
    set -m
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


class SlotPool:
    """The slot half of `Pool` (its attributes are the pool's own)."""

    wrapper: str
    running: dict[int, tuple]
    again: collections.deque[int]
    free: list[str] | None
    failed: int
    failures: list[tuple]
    claims_dir: str
    launch_id: str
    task_dirs: str
    #: slot mode (a wrapper that says SLOT_READY): the slots' bashes, started as needed
    _slots: list[_Slot] | None = None
    _slot_sel: selectors.BaseSelector | None = None

    def _record(self, task_id: int) -> str | None:
        raise NotImplementedError

    def _ended(self, task_id: int, slot: str | None, started: str, code: int) -> None:
        raise NotImplementedError

    def _slot_ready(self) -> bool:
        """Whether the launch's wrapper may run in a slot (a wrapper of this onager, and a bash
        with $BASHPID: 4.0 or later; macOS's /bin/bash 3.2 runs one bash per task)."""
        try:
            with open(self.wrapper, encoding="utf-8", errors="replace") as handle:
                if SLOT_READY not in handle.read(4096):
                    return False
        except OSError:
            return False
        return bash_major() >= 4


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
        import subprocess

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
        import subprocess

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


def bash_major() -> int:
    """The major version of `bash` on PATH (0: none that answers), asked once per process."""
    if not _BASH_MAJOR:
        import subprocess

        try:
            out = subprocess.run(["bash", "-c", "echo ${BASH_VERSINFO[0]}"], capture_output=True, text=True,
                                 timeout=30, stdin=subprocess.DEVNULL).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        _BASH_MAJOR.append(int(out) if out.isdigit() else 0)
    return _BASH_MAJOR[0]


_BASH_MAJOR: list[int] = []

