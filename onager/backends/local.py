"""Local backend: a pool on this machine running wrapper.sh for each task.

Blocks with a progress line by default (exit non-zero if a task failed); `--detach`
runs the same pool in the background, in its own session, so it survives the
terminal. Each task runs in its own process group, so Ctrl-C or `onager cancel`
kills the whole tree of a task and nothing is left behind.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

from onager.backends.base import Backend, LaunchInfo, Option, add_options
from onager.errors import UsageError
from onager.state import mark, read_states, start_fields
from onager.tasklist import Tasklist
from onager.wrapper import INDEX_WIDTH

CANCEL_FLAG = "cancel.requested"
NOT_STARTED_MARKS = 100_000  # after Ctrl-C, tasks never started beyond this many stay "lost"


class _AllUnfinished(dict):
    """Query answer for a live pool: every task it has not finished is still its own."""

    def get(self, key, default=None):  # type: ignore[override]
        return "pending"


def parse_gpus(text: Optional[str]) -> Optional[List[str]]:
    """`0,1,3` -> those GPU ids; `2` -> GPUs 0 and 1; None -> not given."""
    if text is None or str(text).strip() == "":
        return None
    text = str(text).strip()
    if "," in text:
        ids = [g.strip() for g in text.split(",") if g.strip()]
    elif text.isdigit():
        ids = [str(i) for i in range(int(text))]
    else:
        raise UsageError(f"bad --gpus {text!r}: give GPU ids like 0,1,2,3 or a count like 4")
    return ids


def detect_gpus() -> List[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip() and g.strip() != "-1"]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [str(i) for i, line in enumerate(out.stdout.splitlines()) if line.startswith("GPU ")]


def gpu_slots(options: Dict[str, Any]) -> Optional[List[str]]:
    """CUDA_VISIBLE_DEVICES value of each slot, or None when GPUs are not assigned."""
    gpus = parse_gpus(options.get("gpus"))
    per_task = options.get("gpus_per_task")
    if per_task is None and gpus is None:
        return None
    per_task = int(per_task or 1)
    if per_task < 1:
        raise UsageError("--gpus-per-task must be at least 1")
    if gpus is None:
        gpus = detect_gpus()
        if not gpus:
            raise UsageError("--gpus-per-task given but no GPU found (CUDA_VISIBLE_DEVICES unset, no nvidia-smi): pass --gpus 0,1")
    if len(gpus) < per_task:
        raise UsageError(f"--gpus-per-task {per_task} needs at least {per_task} GPUs, only {len(gpus)} given: {','.join(gpus)}")
    return [",".join(gpus[i:i + per_task]) for i in range(0, len(gpus) - per_task + 1, per_task)]


def _alive(pid: int) -> bool:
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


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Pool:
    """Runs `wrapper.sh ID` for each task id with at most `width` at once."""

    def __init__(self, launch_dir: str, ids: Sequence[int], max_tasks: int,
                 slots: Optional[List[str]] = None, progress: bool = False,
                 label: str = ""):
        self.launch_dir = launch_dir
        self.wrapper = os.path.join(launch_dir, "wrapper.sh")
        self.ids = ids
        self.slots = slots
        self.width = max(1, min(max_tasks, len(slots)) if slots else max_tasks)
        self.progress = progress
        self.label = label
        self.running: Dict[int, tuple] = {}  # pid -> (task id, slot, Popen)
        self.done = self.failed = self.cancelled = 0
        self.failures: List[tuple] = []
        self._cancel_mtime = 0.0
        self._cancelled_ids: set = set()
        self._records: Optional[tuple] = None
        self.write_errors: List[OSError] = []  # state names it could not write (disk full)

    # -------------------------------------------------------------- cancel
    def _refresh_cancels(self) -> None:
        try:
            mtime = os.stat(os.path.join(self.launch_dir, CANCEL_FLAG)).st_mtime
        except FileNotFoundError:
            return
        if mtime != self._cancel_mtime:
            self._cancel_mtime = mtime
            self._cancelled_ids = {i for i, st in read_states(self.launch_dir).items() if st.cancelled}

    def _kill_all(self) -> None:
        groups = list(self.running)
        for pid in groups:
            with_suppressed(os.killpg, pid, signal.SIGTERM)
        deadline = time.time() + 5
        while time.time() < deadline and any(map(_group_alive, groups)):
            self._reap(block=False)
            time.sleep(0.05)
        # reaped wrappers too: a task that ignores SIGTERM outlives its wrapper in the group
        kill_groups(groups, signal.SIGKILL)
        while self.running:
            self._reap(block=True)

    # ---------------------------------------------------------------- run
    def _record(self, task_id: int) -> Optional[str]:
        """The task's record, read here once so that the wrapper needs no lookup of its own."""
        if self._records is None:
            try:
                with open(os.path.join(self.launch_dir, "tasks.idx"), "rb") as handle:
                    index = handle.read()
                with open(os.path.join(self.launch_dir, "tasks.sh"), "rb") as handle:
                    self._records = (index, handle.read())
            except OSError:
                self._records = (b"", b"")
        index, records = self._records
        entry = index[(task_id - 1) * INDEX_WIDTH:task_id * INDEX_WIDTH].split()
        if len(entry) != 2 or not entry[1].isdigit() or int(entry[1]) == 0 or int(entry[1]) > 65536:
            return None  # missing, or too long for the environment: the wrapper looks it up
        start = int(entry[0])
        return records[start:start + int(entry[1])].decode("utf-8")

    def _spawn(self, task_id: int, slot: Optional[str]) -> None:
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

    def _reap(self, block: bool) -> Optional[str]:
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
        # the wrapper's start name becomes its end name (the wrapper leaves that to us)
        recorded = code if code >= 0 else 128 - code
        state = os.path.join(self.launch_dir, "state")
        try:
            try:
                os.rename(os.path.join(state, f"{task_id}.start@{started}"),
                          os.path.join(state, f"{task_id}.end@{time.time():.6f}@{recorded}@{started}"))
            except FileNotFoundError:  # it never started (e.g. not in the launch): still record the end
                mark(self.launch_dir, task_id, "end", recorded)
        except OSError as exc:
            # a full disk must not stop the pool: the other tasks still run and are counted,
            # and the launch reports this error after its summary
            if exc.filename is None:
                exc.filename = state
            self.write_errors.append(exc)
        if task_id in self._cancelled_ids or self._is_cancelled(task_id):
            self.cancelled += 1
        elif code == 0:
            self.done += 1
        else:
            self.failed += 1
            if code < 0:
                code = 128 - code
            self.failures.append((task_id, code))
        return slot

    def _is_cancelled(self, task_id: int) -> bool:
        self._refresh_cancels()
        return task_id in self._cancelled_ids

    def _show(self, start: float, total: int, final: bool = False) -> None:
        finished = self.done + self.failed + self.cancelled
        pending = total - finished - len(self.running)
        eta = ""
        elapsed = time.time() - start
        if finished and pending + len(self.running):
            eta = " ETA " + _fmt_duration(elapsed / finished * (pending + len(self.running)))
        line = (f"{self.label}{self.done} done, {self.failed} failed, {len(self.running)} running, "
                f"{max(pending, 0)} pending{', ' + str(self.cancelled) + ' cancelled' if self.cancelled else ''}"
                f" [{_fmt_duration(elapsed)}]{eta}")
        sys.stderr.write("\r\033[K" + line + ("\n" if final else ""))
        sys.stderr.flush()

    def run(self) -> int:
        """Run every task; returns the number of tasks that failed."""
        start = time.time()
        free = list(self.slots) if self.slots else None
        total = len(self.ids)
        last_shown = 0.0
        self._refresh_cancels()
        position = 0
        try:
            for task_id in self.ids:  # position: how many of them were started (or skipped)
                while len(self.running) >= self.width:
                    slot = self._reap(block=True)
                    if free is not None and slot is not None:
                        free.append(slot)
                if self._is_cancelled(task_id):
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


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def kill_groups(pgids: Sequence[int], sig: int) -> None:
    for pgid in pgids:
        with_suppressed(os.killpg, pgid, sig)


def with_suppressed(fn, *args) -> None:
    try:
        fn(*args)
    except (ProcessLookupError, PermissionError):
        pass


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class LocalBackend(Backend):
    name = "local"
    runs_in_foreground = True

    OPTIONS: Sequence[Option] = (
        Option("detach", "flag", help="local: run the pool in the background and return at once"),
        Option("gpus_per_task", "int", default=1, units="GPUs", metavar="K",
               help="local/ssh: give each task K GPUs of --gpus (or of the detected ones) "
                    "in its own CUDA_VISIBLE_DEVICES; slurm/gridengine: K GPUs per task"),
    )

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        add_options(parser, cls.OPTIONS)

    def __init__(self, options=None):
        super().__init__(options)
        self.failed = 0
        self.end_error: Optional[OSError] = None  # a write that failed once the tasks had run
        if self.options.get("detach"):
            self.runs_in_foreground = True  # recorded before start, like a foreground pool

    def _width(self) -> int:
        value = self.options.get("max_tasks")
        if value in (None, "", -1, "-1"):
            return os.cpu_count() or 1
        width = int(value)
        if width < 1:
            raise UsageError("--max-tasks must be at least 1")
        return width

    def check_options(self) -> None:
        """--max-tasks, --gpus and --gpus-per-task, and no option a pool cannot honour."""
        super().check_options()
        self._width()
        gpu_slots(self.options)

    def submit_commands(self, launch: LaunchInfo) -> List[List[str]]:
        slots = gpu_slots(self.options)
        width = max(1, min(self._width(), len(slots)) if slots else self._width())
        return [["# local pool:", f"{launch.count} task{'' if launch.count == 1 else 's'} ({launch.tasklist}),", f"{width} at a time",
                 launch.wrapper, "ID"]]

    def submit(self, launch: LaunchInfo) -> List[str]:
        slots = gpu_slots(self.options)
        width = self._width()
        pool_file = os.path.join(launch.launch_dir, "pool.json")
        if self.options.get("detach"):
            log = open(os.path.join(launch.launch_dir, "pool.log"), "ab")
            proc = subprocess.Popen([sys.executable, "-m", "onager.backends.local", launch.launch_dir],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                    start_new_session=True, close_fds=True,
                                    env=dict(os.environ, PYTHONPATH=_package_parent()))
            log.close()
            _write_pool_file(pool_file, proc.pid)
            return []
        _write_pool_file(pool_file, os.getpid())
        pool = Pool(launch.launch_dir, list(launch.tasklist), width, slots,
                    progress=sys.stderr.isatty(), label=f"{launch.jobname}/{launch.launch_id}: ")
        # a closed terminal (SIGHUP) or a kill (SIGTERM) stops the tasks like Ctrl-C does:
        # they run in sessions of their own and would otherwise live on, unaccounted for
        previous = {sig: signal.signal(sig, _raise_interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
        try:
            self.failed = pool.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            # the summary is kept before the last write, which a full disk can refuse: the
            # CLI prints the failed tasks first and this error after them
            self.summary = pool
            self.failed = pool.failed
            self.end_error = pool.write_errors[0] if pool.write_errors else None
            try:
                _write_pool_file(pool_file, None)
            except OSError as exc:
                self.end_error = self.end_error or exc
        return []

    def query(self, records) -> Dict[str, Optional[Dict[int, str]]]:
        return query_pools(records)

    def cancel(self, record, tasks: Tasklist, dry_run: bool = False) -> List[List[str]]:
        states = read_states(record.launch_dir)
        host = socket.gethostname()
        # finished or already cancelled tasks are left alone: their process group id may be reused
        targets = [i for i in tasks if not (states.get(i) and (states[i].end is not None
                                                               or states[i].cancelled is not None))]
        if dry_run:
            commands = [["kill", "-TERM", f"-{pid}"] for pid in
                        (_start_pid(record.launch_dir, i, host) for i in targets) if pid]
            return commands or [["# nothing running to kill;", f"{len(targets)} tasks would be marked cancelled"]]
        # mark first, then look for started tasks: a wrapper that starts in between sees its
        # mark (it checks right after recording its start) and stops by itself
        for task_id in targets:
            mark(record.launch_dir, task_id, "cancel")
        with open(os.path.join(record.launch_dir, CANCEL_FLAG), "w") as handle:
            handle.write(str(time.time()))
        pids = [pid for pid in (_start_pid(record.launch_dir, i, host) for i in targets) if pid]
        kill_groups(pids, signal.SIGTERM)
        deadline = time.time() + 5
        while time.time() < deadline and any(map(_group_alive, pids)):
            time.sleep(0.1)
        kill_groups([p for p in pids if _group_alive(p)], signal.SIGKILL)
        return [["kill", "-TERM", f"-{pid}"] for pid in pids]


def query_pools(records) -> Dict[str, Optional[Dict[int, str]]]:
    """Backends whose tasks are run by a process of ours (pool, dispatcher) recorded in
    pool.json: while it lives, every unfinished task is still its own."""
    out: Dict[str, Optional[Dict[int, str]]] = {}
    host = socket.gethostname()
    for r in records:
        info = _read_pool_file(os.path.join(r.launch_dir, "pool.json"))
        if info is None or info.get("pid") is None:
            out[r.key] = {}
        elif info.get("host") != host:
            out[r.key] = None  # run from another machine: cannot be checked from here
        else:
            out[r.key] = _AllUnfinished() if _alive(int(info["pid"])) else {}
    return out


def _start_pid(launch_dir: str, task_id: int, host: str) -> Optional[int]:
    """The wrapper's pid (= its process group) from its latest start, if on this host."""
    fields = start_fields(launch_dir, task_id) or []
    if len(fields) >= 2 and fields[0] == host and fields[1].isascii() and fields[1].isdigit():
        return int(fields[1])
    return None


def _package_parent() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    existing = os.environ.get("PYTHONPATH")
    return here + (os.pathsep + existing if existing else "")


def _write_pool_file(path: str, pid: Optional[int]) -> None:
    from onager.fsutil import atomic_write
    atomic_write(path, json.dumps({"pid": pid, "host": socket.gethostname(), "time": time.time()}))


def _read_pool_file(path: str) -> Optional[Dict[str, Any]]:
    try:
        with open(path) as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def _detached_main(launch_dir: str) -> int:
    """Entry of a `--detach` pool: options come from the launch's own launch.json."""
    with open(os.path.join(launch_dir, "launch.json")) as handle:
        meta = json.load(handle)
    options = meta.get("options", {})
    backend = LocalBackend(options)
    slots = gpu_slots(options)
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pool = Pool(launch_dir, list(Tasklist.parse(meta["tasklist"])), backend._width(), slots)
    try:
        failed = pool.run()
    except KeyboardInterrupt:
        return 130
    finally:
        _write_pool_file(os.path.join(launch_dir, "pool.json"), None)
    return 1 if failed else 0


BACKEND = LocalBackend

if __name__ == "__main__":
    raise SystemExit(_detached_main(sys.argv[1]))
