"""Local backend: a pool on this machine running wrapper.sh for each task.

Blocks with a progress line by default (exit non-zero if a task failed); `--detach`
runs the same pool in the background, in its own session, so it survives the
terminal. Each task runs in its own process group, so Ctrl-C or `onager cancel`
kills the whole tree of a task and nothing is left behind. The pool engine itself
(slots, GPUs, cancel requests, Ctrl-C, progress) is onager.backends.pool, shared with ssh.
"""
from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Sequence

from onager.backends.base import Backend, LaunchInfo, Option
from onager.backends.gpus import detect_gpus, gpu_slots, parse_gpus
from onager.backends.pool import (
    CANCEL_FLAG,
    NOT_STARTED_MARKS,
    Pool,
    alive,
    detached_setup,
    fmt_duration,
    group_alive,
    kill_groups,
    query_pools,
    raise_interrupt,
    read_pool_file,
    request_cancel,
    spawn_detached,
    stop_on_signals,
    with_suppressed,
    write_pool_file,
)
from onager.errors import UsageError
from onager.layout import LaunchPaths
from onager.notify import notify_pool
from onager.recovery import pool_retry
from onager.state import read_states, start_fields
from onager.tasklist import Tasklist

# the names these had when the pool lived here (kept for code that imports them from local)
_alive, _group_alive, _fmt_duration, _raise_interrupt = alive, group_alive, fmt_duration, raise_interrupt
_read_pool_file, _write_pool_file = read_pool_file, write_pool_file
__all__ = ["CANCEL_FLAG", "NOT_STARTED_MARKS", "LocalBackend", "Pool", "detect_gpus", "gpu_slots", "kill_groups",
           "parse_gpus", "query_pools", "with_suppressed"]


class LocalBackend(Backend):
    name = "local"
    runs_in_foreground = True

    OPTIONS: Sequence[Option] = (
        Option("detach", "flag", help="local: run the pool in the background and return at once"),
        Option("gpus_per_task", "int", default=1, units="GPUs", metavar="K",
               help="local/ssh: give each task K GPUs of --gpus (or of the detected ones) "
                    "in its own CUDA_VISIBLE_DEVICES; slurm/gridengine: K GPUs per task"),
    )

    def __init__(self, options=None):
        super().__init__(options)
        self.failed = 0
        self.end_error: OSError | None = None  # a write that failed once the tasks had run
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

    def submit_commands(self, launch: LaunchInfo) -> list[list[str]]:
        slots = gpu_slots(self.options)
        width = max(1, min(self._width(), len(slots)) if slots else self._width())
        tasks = f"{launch.count} task{'' if launch.count == 1 else 's'} ({launch.tasklist}),"
        return [["# local pool:", tasks, f"{width} at a time", launch.wrapper, "ID"]]

    def submit(self, launch: LaunchInfo) -> list[str]:
        slots = gpu_slots(self.options)
        width = self._width()
        pool_file = launch.paths.pool_json
        if self.options.get("detach"):
            _write_pool_file(pool_file, spawn_detached("onager.backends.local", launch.launch_dir))
            return []
        _write_pool_file(pool_file, os.getpid())
        pool = Pool(launch.launch_dir, list(launch.tasklist), width, slots,
                    progress=sys.stderr.isatty(), label=f"{launch.jobname}/{launch.launch_id}: ")
        pool.retry = pool_retry(launch.launch_dir, self.options)
        try:
            with stop_on_signals():
                self.failed = pool.run()
        finally:
            # the summary is kept before the last write, which a full disk can refuse: the
            # CLI prints the failed tasks first and this error after them
            self.summary = pool
            self.failed = pool.failed
            self.end_error = pool.write_errors[0] if pool.write_errors else None
            try:
                _write_pool_file(pool_file, None)
            except OSError as exc:
                self.end_error = self.end_error or exc
            notify_pool(launch.launch_dir, self.options)  # --notify: the launch has ended (Ctrl-C too)
        return []

    def query(self, records) -> dict[str, dict[int, str] | None]:
        return query_pools(records)

    def cancel(self, record, tasks: Tasklist, dry_run: bool = False) -> list[list[str]]:
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
        request_cancel(record.launch_dir, targets)
        pids = [pid for pid in (_start_pid(record.launch_dir, i, host) for i in targets) if pid]
        kill_groups(pids, signal.SIGTERM)
        deadline = time.time() + 5
        while time.time() < deadline and any(map(_group_alive, pids)):
            time.sleep(0.1)
        kill_groups([p for p in pids if _group_alive(p)], signal.SIGKILL)
        return [["kill", "-TERM", f"-{pid}"] for pid in pids]


def _start_pid(launch_dir: str, task_id: int, host: str) -> int | None:
    """The wrapper's pid (= its process group) from its latest start, if on this host."""
    fields = start_fields(launch_dir, task_id) or []
    if len(fields) >= 2 and fields[0] == host and fields[1].isascii() and fields[1].isdigit():
        return int(fields[1])
    return None


def _detached_main(launch_dir: str) -> int:
    """Entry of a `--detach` pool: options come from the launch's own launch.json."""
    meta = detached_setup(launch_dir)
    options = meta.get("options", {})
    backend = LocalBackend(options)
    slots = gpu_slots(options)
    pool = Pool(launch_dir, list(Tasklist.parse(meta["tasklist"])), backend._width(), slots)
    pool.retry = pool_retry(launch_dir, options)
    try:
        failed = pool.run()
    except KeyboardInterrupt:
        return 130
    finally:
        _write_pool_file(LaunchPaths(launch_dir).pool_json, None)
        notify_pool(launch_dir, options)
    return 1 if failed else 0


BACKEND = LocalBackend

if __name__ == "__main__":
    raise SystemExit(_detached_main(sys.argv[1]))
