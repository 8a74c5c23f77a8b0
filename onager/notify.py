"""`--notify CMD`: run the user's command once a launch has ended, its summary in ONAGER_* variables.

CMD is the user's own command line (like a config header): it runs through the shell as
written, and every value reaches it only through the environment, never pasted into its
text. It runs once per launch chain (a marker made with O_EXCL says it ran): at the end of
a local or ssh pool (foreground or --detach), or in the last follow-up job of a Slurm or
Grid Engine launch (onager.after). Its output goes to `notify.log` in the launch directory.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from onager.errors import OnagerError
from onager.index import JobIndex, LaunchRecord
from onager.layout import LaunchPaths, project_root
from onager.state import DONE, STATUSES
from onager.tasklist import Tasklist

NOTIFIED = "notified"     # in the first launch of a chain: the notification ran (O_EXCL)
NOTIFY_LOG = "notify.log"
TIMEOUT = 300


def summary(records: Sequence[LaunchRecord]) -> dict[str, str]:
    """ONAGER_* variables for the launches of one chain (the first, then its relaunches): each
    task counts with its status in the latest launch that ran it."""
    from onager.status import task_rows

    latest: dict[int, str] = {}
    attempts: dict[int, int] = {}
    for row in task_rows(records):
        latest[row.task_id] = row.status
        attempts[row.task_id] = max(attempts.get(row.task_id, 0), row.attempt)
    counts: dict[str, int] = {}
    for status in latest.values():
        counts[status] = counts.get(status, 0) + 1
    order = {s: k for k, s in enumerate(STATUSES)}
    counted = ",".join(f"{s}={n}" for s, n in sorted(counts.items(), key=lambda kv: order.get(kv[0], 99)))
    failed = Tasklist.from_ids(sorted(i for i, s in latest.items() if s != DONE)) if len(latest) > counts.get(
        DONE, 0) else None
    first, last = records[0], records[-1]
    ok = bool(latest) and failed is None
    text = f"{first.jobname}/{first.launch_id}: " + ", ".join(f"{n} {s}" for s, n in sorted(
        counts.items(), key=lambda kv: order.get(kv[0], 99)))
    if failed is not None:
        text += f" (not done: {failed})"
    return {
        "ONAGER_JOB_NAME": first.jobname,
        "ONAGER_LAUNCH_ID": first.launch_id,
        "ONAGER_LAUNCH_IDS": ",".join(r.launch_id for r in records),
        "ONAGER_LAUNCH_DIR": last.launch_dir,
        "ONAGER_BACKEND": first.backend,
        "ONAGER_JOB_IDS": ",".join(j for r in records for j in r.job_ids),
        "ONAGER_TASKS": str(len(latest)),
        "ONAGER_COUNTS": counted,
        "ONAGER_FAILED": str(failed) if failed is not None else "",
        "ONAGER_RETRIED": str(Tasklist.from_ids(sorted(i for i, n in attempts.items() if n > 1)))
        if any(n > 1 for n in attempts.values()) else "",
        "ONAGER_STATUS": "ok" if ok else "failed",
        "ONAGER_SUMMARY": text,
    }


def chain_records(root: str, jobname: str, launch_ids: Sequence[str]) -> list[LaunchRecord]:
    """The index records of these launches of a job, in this order."""
    index = JobIndex(root)
    by_id = {r.launch_id: r for r in index.for_job(jobname)}
    return [by_id[i] for i in launch_ids if i in by_id]


def run_notify(command: str, origin_dir: str, records: Sequence[LaunchRecord],
               log: Any = None) -> int | None:
    """Run `command` once for this chain (None: it already ran); returns its exit code.

    A failing or hanging command is reported on stderr; it never changes the launch's
    own outcome."""
    import subprocess
    if not command or not records:
        return None
    marker = LaunchPaths(origin_dir).file(NOTIFIED)
    try:
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except FileExistsError:
        return None
    except OSError as exc:
        _say(log, f"--notify not run: cannot write {marker} ({exc.strerror or exc})")
        return None
    os.close(fd)
    try:
        env = dict(os.environ, **summary(records))
    except OnagerError as exc:
        _say(log, f"--notify not run: {exc}")
        return None
    workdir = records[0].launch_dir
    try:
        from onager.layout import load_meta
        workdir = str(load_meta(records[0].launch_dir).get("workdir") or workdir)
    except OnagerError:
        pass
    if not os.path.isdir(workdir):
        workdir = project_root(records[0].launch_dir)
    log_path = LaunchPaths(records[-1].launch_dir).file(NOTIFY_LOG)
    try:
        with open(log_path, "ab") as out:
            proc = subprocess.run(["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=out,
                                  stderr=subprocess.STDOUT, env=env, cwd=workdir, timeout=TIMEOUT,
                                  start_new_session=True)
    except subprocess.TimeoutExpired:
        _say(log, f"--notify command did not end within {TIMEOUT} s and was stopped (output in {log_path})")
        return None
    except OSError as exc:
        _say(log, f"--notify command could not run ({exc.strerror or exc}; output in {log_path})")
        return None
    if proc.returncode != 0:
        _say(log, f"--notify command exited with {proc.returncode} (output in {log_path})")
    return proc.returncode


def _say(log: Any, text: str) -> None:
    if log is not None:
        log(text)
    else:
        print(f"onager: {text}", file=sys.stderr, flush=True)


def notify_pool(record_or_dir: str, options: dict[str, Any]) -> int | None:
    """At the end of a local or ssh pool: notify for its launch (a pool relaunches nothing)."""
    command = options.get("notify")
    if not command:
        return None
    from onager.layout import load_meta
    try:
        meta = load_meta(record_or_dir)
        records = chain_records(project_root(record_or_dir), str(meta["jobname"]), [str(meta["launch_id"])])
        return run_notify(str(command), record_or_dir, records)
    except (OnagerError, OSError) as exc:
        _say(None, f"--notify not run: {exc}")
        return None
