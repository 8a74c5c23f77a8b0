"""Killing and liveness for the pools (local and ssh): a pid is a process only with its start
time (field 22 of /proc/PID/stat); `terminate_groups` is the one escalation (SIGTERM, SIGKILL
after GRACE s, at once when hurried); `Stop` turns the first Ctrl-C/SIGTERM/SIGHUP into
KeyboardInterrupt and later ones into a hurry; `running_starts` reads who may still run."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Callable, NamedTuple

from onager.layout import LaunchPaths

GRACE = 5.0  # seconds between SIGTERM and SIGKILL
NOT_STARTED_MARKS = 100_000  # after Ctrl-C, tasks never started beyond this many stay "lost"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


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


# ------------------------------------------------------------------ starts
class StartInfo(NamedTuple):
    """What an attempt's start name holds: `host pid jobid pstart` (older: `host pid [jobid]`)."""

    host: str
    pid: int
    pstart: str | None
    started: float


def _start_content(fields: list[str]) -> tuple[str, int, str | None] | None:
    if len(fields) < 2 or not (fields[1].isascii() and fields[1].isdigit()):
        return None
    pstart = None
    if len(fields) >= 4 and (fields[3] == "-" or (fields[3].isascii() and fields[3].isdigit())):
        pstart = fields[3]  # the wrapper's `host pid jobid pstart` (jobid `-` under a pool)
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


# ------------------------------------------------------------------ detached pools, messages
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
    import subprocess
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


def _package_parent() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    existing = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + existing if existing else "")
