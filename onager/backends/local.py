"""Local backend: a pool on this machine running wrapper.sh for each task.

Blocks with a progress line by default (exit non-zero if a task failed); `--detach`
runs the same pool in the background, in its own session, so it survives the
terminal. Each task runs in its own process group, so Ctrl-C or `onager cancel`
kills the whole tree of a task and nothing is left behind. The pool engine itself
(slots, GPUs, cancel requests, Ctrl-C, progress) is onager.backends.pool, shared with ssh.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from onager.backends.base import Backend, LaunchInfo, Option
from onager.backends.gpus import detect_gpus, gpu_slots, parse_gpus
from onager.backends.pool import (
    CANCEL_FLAG,
    GRACE,
    NOT_STARTED_MARKS,
    PER_TASK_CANCEL_MARKS,
    Pool,
    alive,
    detached_setup,
    fmt_duration,
    group_alive,
    kill_groups,
    mark_skipped,
    query_pools,
    raise_interrupt,
    read_pool_file,
    request_cancel,
    running_starts,
    spawn_detached,
    terminate_groups,
    with_suppressed,
    write_pool_file,
)
from onager.errors import UsageError
from onager.layout import LaunchPaths
from onager.notify import notify_pool
from onager.packing import JOIN
from onager.recovery import pool_retry
from onager.state import read_states
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
        JOIN,
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
            self.failed = pool.run()  # Ctrl-C, SIGTERM, SIGHUP: every task killed, then KeyboardInterrupt
        finally:
            # the summary is kept before the last write, which a full disk can refuse: the
            # CLI prints the failed tasks first and this error after them
            self.summary = pool
            self.failed = pool.failed
            self.interrupted = pool.interrupted
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
        """Mark, then SIGTERM every running task's process group and SIGKILL what is left after
        the grace (SIGTERM-ignoring tasks included), whether the pool runs in the foreground,
        detached, or died (kill -9) leaving its tasks running. Two listings of state/ in all."""
        import socket
        launch_dir = record.launch_dir
        states = read_states(launch_dir)
        host = socket.gethostname()
        # finished or already cancelled tasks are left alone: their process group id may be reused
        targets = [i for i in tasks if not ((st := states.get(i)) is not None
                                            and (st.end is not None or st.cancelled is not None))]
        chosen = set(targets)
        starts = {i: s for i, s in running_starts(launch_dir, chosen.__contains__).items() if s.host == host}
        if dry_run:
            commands = [["kill", "-TERM", f"-{s.pid}"] for s in starts.values()]
            return commands or [["# nothing running to kill;", f"{len(targets)} tasks would be marked cancelled"]]
        not_started = [i for i in targets if i not in starts]
        pool_alive = _pool_alive(launch_dir)
        # marks first, then the kill: a wrapper that starts in between sees `<id>.cancel` (small
        # cancels) or the pool sees the launch-level mark and kills what it just started
        per_task = list(starts) + (not_started if len(not_started) <= PER_TASK_CANCEL_MARKS else [])
        request_cancel(launch_dir, targets, "cancel", per_task=per_task)
        if not pool_alive and len(not_started) > PER_TASK_CANCEL_MARKS:
            mark_skipped(launch_dir, not_started, "cancel")  # no pool will skip them
        pids = [s.pid for s in starts.values() if alive(s.pid, s.pstart)]
        survivors = terminate_groups(pids, GRACE)
        if pool_alive and len(not_started) > PER_TASK_CANCEL_MARKS:
            # started after the listing above, before the pool saw the mark: kill those too
            late = [s.pid for i, s in running_starts(launch_dir, chosen.__contains__).items()
                    if i not in starts and s.host == host and alive(s.pid, s.pstart)]
            survivors += terminate_groups(late, GRACE)
            pids += late
        if survivors:
            print(f"onager: warning: process group(s) {', '.join(map(str, survivors))} of {record.key} still "
                  f"have live processes after SIGKILL (uninterruptible?): check them with ps -g", file=sys.stderr)
        return [["kill", "-TERM", f"-{pid}"] for pid in pids]


def _pool_alive(launch_dir: str) -> bool:
    """Whether the launch's pool (pid and start time in pool.json) still runs on this host."""
    import socket
    info = read_pool_file(LaunchPaths(launch_dir).pool_json)
    if not info or info.get("pid") is None or info.get("host") != socket.gethostname():
        return False
    try:
        return alive(int(info["pid"]), info.get("pstart"))
    except (TypeError, ValueError):
        return False


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
        print(f"onager: {pool.interrupted or 'stopped'}", file=sys.stderr, flush=True)
        return 130
    finally:
        _write_pool_file(LaunchPaths(launch_dir).pool_json, None)
        notify_pool(launch_dir, options)
    return 1 if failed else 0


BACKEND = LocalBackend

if __name__ == "__main__":
    raise SystemExit(_detached_main(sys.argv[1]))
