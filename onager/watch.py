"""`onager list --watch`: a live view of a launch until every task has ended.

On a terminal the view is redrawn in place (counts, running tasks, latest failures); into
a pipe or a file it is one plain line per interval, so a log or CI stays readable.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any, Callable, TextIO

from onager.errors import UsageError
from onager.state import STATUSES
from onager.status import ACTIVE, TaskRow
from onager.tasklist import Tasklist

MAX_RUNNING = 10
MAX_FAILURES = 5
CLEAR = "\033[H\033[2J"
HIDE_CURSOR, SHOW_CURSOR = "\033[?25l", "\033[?25h"


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def counts_line(rows: Sequence[TaskRow]) -> str:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    return ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s)) or "no tasks"


def unsuccessful(rows: Sequence[TaskRow]) -> list[TaskRow]:
    return [r for r in rows if r.status not in ACTIVE and r.status != "done"]


def frame(rows: Sequence[TaskRow], title: str, width: int = 100, now: float | None = None) -> str:
    """The terminal view: a title, the counts, running tasks, the latest failures."""
    now = time.time() if now is None else now
    lines = [f"{title}  {time.strftime('%H:%M:%S', time.localtime(now))}  (Ctrl-C to stop watching)",
             f"{len(rows)} tasks: {counts_line(rows)}", ""]
    running = [r for r in rows if r.status == "running"]
    if running:
        lines.append(f"running ({len(running)}):")
        for r in sorted(running, key=lambda r: r.start or 0)[:MAX_RUNNING]:
            lines.append(f"  {r.task_id:>6}  {_elapsed(r.elapsed):>9}  {r.tag}")
        if len(running) > MAX_RUNNING:
            lines.append(f"  ... and {len(running) - MAX_RUNNING} more")
    failed = unsuccessful(rows)
    if failed:
        lines.append(f"latest failures ({len(failed)}: {Tasklist.from_ids(r.task_id for r in failed)}):")
        from onager.state import describe_exit
        for r in sorted(failed, key=lambda r: r.end or 0, reverse=True)[:MAX_FAILURES]:
            reason = getattr(r, "reason", "") or ""
            what = f"{r.status} exit {describe_exit(r.exit_code)}" if r.exit_code is not None else r.status
            lines.append(f"  {r.task_id:>6}  {what}{'  ' + reason if reason else ''}  {r.tag}")
    return "\n".join(line[:width] for line in lines) + "\n"


def plain_line(rows: Sequence[TaskRow], now: float | None = None) -> str:
    """One snapshot as one line, for a pipe or a file."""
    now = time.time() if now is None else now
    parts = [time.strftime("%H:%M:%S", time.localtime(now)), f"{len(rows)} tasks: {counts_line(rows)}"]
    running = [r.task_id for r in rows if r.status == "running"]
    if running:
        parts.append(f"running {Tasklist.from_ids(running)}")
    failed = unsuccessful(rows)
    if failed:
        parts.append(f"not done {Tasklist.from_ids(r.task_id for r in failed)}")
    return " | ".join(parts) + "\n"


def watch(load: Callable[[], list[TaskRow]], title: str, interval: float, out: TextIO,
          tty: bool, sleep: Callable[[float], Any] = time.sleep) -> int:
    """Show `load()` every `interval` seconds until no task is active: 0 all done, 1 some not,
    130 on Ctrl-C."""
    if interval <= 0:
        raise UsageError(f"--interval {interval:g} is not a positive number of seconds: give e.g. --interval 2")
    if tty:
        out.write(HIDE_CURSOR)
    try:
        while True:
            rows = load()
            if tty:
                width = shutil.get_terminal_size((100, 24)).columns
                out.write(CLEAR + frame(rows, title, width))
            else:
                out.write(plain_line(rows))
            out.flush()
            if not any(r.status in ACTIVE for r in rows):
                return 1 if unsuccessful(rows) else 0
            sleep(interval)
    except KeyboardInterrupt:
        out.write("\n")
        return 130
    finally:
        if tty:
            out.write(SHOW_CURSOR)
            out.flush()


def run_watch(args: argparse.Namespace) -> int:
    """`onager list --watch`: each job's latest launch unless a launch or job id is given."""
    from onager.index import JobIndex
    from onager.listing import _rows

    if not args.watch:
        raise UsageError("--interval goes with --watch: onager list --watch --interval 5")
    if args.interval is None:
        args.interval = 2.0
    if args.json or args.csv or args.summary:
        raise UsageError("--watch draws a live view: leave out --json, --csv and --summary")
    if args.interval <= 0:
        raise UsageError(f"--interval {args.interval:g} is not a positive number of seconds: give e.g. --interval 2")
    index = JobIndex()
    if not index.records():
        raise UsageError("no launches yet to watch: onager launch records them in .onager/index.jsonl")
    if not args.launch and not args.jobid:
        args.latest = True
    _rows(args, index)  # a bad job, launch or tasklist is one line now, not a blank view
    title = f"onager list {args.jobname}" if args.jobname else "onager list"
    tty = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
    return watch(lambda: _rows(args, index), title, args.interval, sys.stdout, tty)
